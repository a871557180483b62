"""Named, measured starting points for training runs: `preset_config("dit-tiny-digits", sae={"k": 8})`.

Why its own module: a preset is data (a nested dict of `DiTSAERunnerConfig` fields with the
settings that were measured to work), not runner code; the CLI's `train --preset`, the README's
examples, the benchmarks and the bundled releases all start from these. `dit-tiny-digits` is the
embedded default that `sae-lens-dit train` runs with no arguments.
"""

from __future__ import annotations

from typing import Any

from sae_lens_dit.conventions import DEFAULT_HOOK, TIDE_ARCHITECTURE, TIDE_TRANSCODER_ARCHITECTURE, sublayer_pair
from sae_lens_dit.training.runner_config import DiTSAERunnerConfig

_SUBJECTS = (
    "a cat",
    "a dog",
    "a red car",
    "a wooden house",
    "a bowl of fruit",
    "an old man",
    "a young woman",
    "a mountain lake",
    "a city street",
    "a sailing boat",
    "a bird on a branch",
    "a bicycle",
    "a cup of coffee",
    "a forest path",
    "a horse in a field",
    "a robot",
)
_STYLES = ("a photo of {}", "a painting of {}", "a pencil sketch of {}", "{} at night, cinematic lighting")
STARTER_PROMPTS: tuple[str, ...] = tuple(style.format(subject) for style in _STYLES for subject in _SUBJECTS)
"""64 generic prompts (16 subjects in 4 styles) that the text-to-image presets cycle through: a starting point
that covers objects, people, scenes and styles; pass your own (`--prompts`, or `harvest.prompts` in a config)
for the concepts you study."""

PRESETS: dict[str, dict[str, Any]] = {
    "dit-tiny-digits": {
        "model": "digits",
        "hook_name": DEFAULT_HOOK,
        "sae": {"architecture": TIDE_ARCHITECTURE, "d_in": 96, "d_sae": 1536, "k": 16},
        "harvest": {
            "hook_names": [DEFAULT_HOOK],
            "num_images": 640,
            "images_per_batch": 32,
            "num_inference_steps": 50,
            "branch": "both",
        },
        "eval_images": 256,  # 102,400 held-out rows (both branches): dead latents counted on >= 100k rows
        "training_tokens": 2_000_000,
        "data_mode": "cached",  # harvest once (sampling dominates on CPU), train several passes
        "output_dir": "runs/tide-digits",
    },
    # DiT-XL/2 at 256 px: 32x32x4 latents, patch 2 -> 256 tokens of width 1152, 28 blocks; the
    # paper's settings (16x dictionary, 1/16 of the tokens per image and step). Needs a GPU and
    # the Hub (or a cached copy of facebook/DiT-XL-2-256).
    "dit-xl-2-256": {
        "model": "facebook/DiT-XL-2-256",
        "hook_name": "blocks.13.hook_resid_post",
        "sae": {"architecture": TIDE_ARCHITECTURE, "d_in": 1152, "d_sae": 18432, "k": 64},
        "harvest": {
            "hook_names": ["blocks.13.hook_resid_post"],
            "num_images": 50_000,
            "images_per_batch": 64,
            "num_inference_steps": 50,
            "guidance_scale": 4.0,
            "branch": "both",
            "storage_dtype": "float16",
        },
        "training_tokens": 200_000_000,
        "batch_size": 4096,
        "dead_feature_window": 1000,  # 4M rows, as the 10M-token window of Gao et al. 2024 at this scale
        "data_mode": "cached",
        "device": "cuda",
        "output_dir": "runs/tide-dit-xl-2-256",
    },
}


def _text_to_image_preset(name: str, model: str, hook: str, sae: dict[str, Any], **harvest: Any) -> dict[str, Any]:
    """A GPU preset for a text-to-image pipeline on the Hub: `STARTER_PROMPTS`, 20k images, float16 storage,
    100M training rows in batches of 4096 (the DiT-XL preset's scale), output in runs/tide-<name>."""
    return {
        "model": model,
        "hook_name": hook,
        "sae": {"architecture": TIDE_ARCHITECTURE, **sae},
        "harvest": {
            "hook_names": [hook],
            "prompts": list(STARTER_PROMPTS),
            "num_images": 20_000,
            "images_per_batch": 32,
            "storage_dtype": "float16",
            **harvest,
        },
        "training_tokens": 100_000_000,
        "batch_size": 4096,
        "dead_feature_window": 1000,
        "data_mode": "cached",
        "device": "cuda",
        "output_dir": f"runs/tide-{name}",
    }


# Stable Diffusion 1.5 at 512 px (64x64x4 latents): SAeUron's block, up_blocks.1.attentions.1 (16x16 tokens
# of width 1280), as its update (output minus input). Needs a GPU and the Hub (or a cached copy).
PRESETS["sd15"] = _text_to_image_preset(
    "sd15",
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "up.1.1.hook_update",
    {"d_in": 1280, "d_sae": 16 * 1280, "k": 64},
    num_inference_steps=50,
    guidance_scale=7.5,
    branch="both",
)
# SDXL-Turbo at 512 px: sdxl-unbox's block down_blocks.2.attentions.1 (16x16 tokens of width 1280) as its
# update, with sdxl-unbox's dictionary (5120 latents, k 10); 4 steps rather than 1, so TIDE has a timestep
# axis to condition on; no guidance (Turbo is distilled without it).
PRESETS["sdxl-turbo"] = _text_to_image_preset(
    "sdxl-turbo",
    "stabilityai/sdxl-turbo",
    "down.2.1.hook_update",
    {"d_in": 1280, "d_sae": 5120, "k": 10},
    num_inference_steps=4,
    guidance_scale=0.0,
    branch="cond",
)
PRESETS["dit-tiny-shapes"] = {**PRESETS["dit-tiny-digits"], "model": "shapes", "output_dir": "runs/tide-shapes"}


def _transcoder_preset(base: str, sublayer: str, output_dir: str) -> dict[str, Any]:
    """`base` with a TIDE transcoder on the MLP of `sublayer` (e.g. blocks.2.mlp: its hook_in -> hook_out pair)."""
    preset = PRESETS[base]
    width = preset["sae"]["d_in"]
    return {
        **preset,
        "hook_name": sublayer,
        "sae": {**preset["sae"], "architecture": TIDE_TRANSCODER_ARCHITECTURE, "d_out": width},
        "harvest": {**preset["harvest"], "hook_names": list(sublayer_pair(sublayer))},
        "output_dir": output_dir,
    }


# Timestep-aware transcoders of one block's MLP, with each backbone's SAE settings (width, k, data, budget).
PRESETS["transcoder-tiny-digits"] = _transcoder_preset("dit-tiny-digits", "blocks.2.mlp", "runs/tc-digits")
PRESETS["transcoder-tiny-shapes"] = _transcoder_preset("dit-tiny-shapes", "blocks.2.mlp", "runs/tc-shapes")
PRESETS["transcoder-dit-xl-2-256"] = _transcoder_preset("dit-xl-2-256", "blocks.13.mlp", "runs/tc-dit-xl-2-256")
"""Preset name -> `DiTSAERunnerConfig.from_dict` input (the fields it leaves out keep their defaults)."""
DEFAULT_PRESET = "dit-tiny-digits"
"""The preset `sae-lens-dit train` runs when given no arguments."""


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def preset_config(name: str = DEFAULT_PRESET, **overrides: Any) -> DiTSAERunnerConfig:
    """A preset's config with nested overrides: a dict merges into the preset's dict, anything else replaces.

    >>> cfg = preset_config("dit-tiny-digits", sae={"k": 8}, training_tokens=8192)
    >>> cfg.sae.k, cfg.sae.d_sae, cfg.training_tokens, cfg.model
    (8, 1536, 8192, 'digits')
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets are {sorted(PRESETS)}")
    return DiTSAERunnerConfig.from_dict(_merge(PRESETS[name], overrides))
