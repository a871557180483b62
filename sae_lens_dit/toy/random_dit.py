"""Tiny random DiTs for tests, benchmarks and examples: one factory instead of a config written out by hand.

Why: a `DiTTransformer2DModel` of a few thousand weights constructs in milliseconds on CPU and runs the
real diffusers block code, so tests of hooks, splicing and steering use it rather than mocks. Its
config was written out by hand in seven tests and benchmarks, each slightly different; this module
holds the one used everywhere (diffusers' own DiT model-test config) and DiT-XL/2's layout, so a
shrunk DiT-XL/2 can run the paper's preset end to end on CPU.
"""

from __future__ import annotations

from typing import Any

from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

from sae_lens_dit.toy.backbones import IdentityVAE, TinyDiTPipeline

TINY_DIT_CONFIG: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 8,
    "activation_fn": "gelu-approximate",
    "num_attention_heads": 2,
    "attention_head_dim": 4,
    "attention_bias": True,
    "num_layers": 2,
    "norm_type": "ada_norm_zero",
    "num_embeds_ada_norm": 1000,
    "patch_size": 2,
    "sample_size": 8,
}
"""diffusers' DiT model-test config: width 8, 2 blocks, an 8x8 latent in 2x2 patches (16 image tokens),
1000 class embeddings (so label 1000, the null class of CFG, is valid)."""

DIT_XL_2_LAYOUT: dict[str, Any] = {
    "num_attention_heads": 16,
    "attention_head_dim": 72,
    "in_channels": 4,
    "out_channels": 8,
    "patch_size": 2,
    "sample_size": 32,
    "num_embeds_ada_norm": 1000,
    "norm_type": "ada_norm_zero",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "norm_elementwise_affine": False,
}
"""facebook/DiT-XL-2-256's transformer config without its depth (28 blocks): pass `num_layers`."""


def random_dit(**overrides: Any) -> DiTTransformer2DModel:
    """A randomly initialised DiT in eval mode: `TINY_DIT_CONFIG` with `overrides` (any config field).

    >>> random_dit(num_layers=1).config.num_layers
    1
    """
    return DiTTransformer2DModel(**{**TINY_DIT_CONFIG, **overrides}).eval()


def random_dit_pipeline(
    transformer: DiTTransformer2DModel | None = None, vae: str = "identity", **overrides: Any
) -> DiTPipeline:
    """A stock-sampling DiT pipeline over `transformer` (default: `random_dit(**overrides)`) with DDIM.

    `vae="identity"` samples in pixel space through `TinyDiTPipeline` (the bundled backbones' pipeline);
    `vae="kl"` uses a default `AutoencoderKL` and diffusers' own `DiTPipeline`. Progress bars are off.
    """
    transformer = transformer if transformer is not None else random_dit(**overrides)
    if vae == "identity":
        pipe: DiTPipeline = TinyDiTPipeline(transformer=transformer, vae=IdentityVAE(), scheduler=DDIMScheduler())
    elif vae == "kl":
        pipe = DiTPipeline(transformer=transformer, vae=AutoencoderKL(), scheduler=DDIMScheduler())
    else:
        raise ValueError(f"vae must be 'identity' or 'kl', received {vae!r}")
    pipe.set_progress_bar_config(disable=True)
    return pipe
