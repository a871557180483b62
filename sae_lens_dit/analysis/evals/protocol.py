"""The evaluation protocol (`evaluate`, `sae-lens-dit eval`) for one or more SAEs, and its settings.

Why its own module: the metrics live in topic modules (`reconstruction`, `latents`, `denoising`,
`generation`, `probes`); this one decides what runs on which data. SAEs of one backbone share its
held-out pass (one per hook) and its clean samples, so every SAE of a backbone is scored against
the same noise and the same reference images. The result is one JSON-ready report per SAE, in the
layout `results.write_eval_files` documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from sae_lens_dit.analysis.backbone_groups import Backbone, load_backbones, saes_by_backbone
from sae_lens_dit.analysis.evals.denoising import HeldoutPass, heldout_pass, heldout_reconstruction, spliced_denoising
from sae_lens_dit.analysis.evals.generation import FeatureFn, sample_images, spliced_generation, torchscript_features
from sae_lens_dit.analysis.evals.latents import latent_timestep_stats, latent_usage
from sae_lens_dit.analysis.evals.probes import interpretability_by_bucket
from sae_lens_dit.analysis.evals.prompted import check_prompted, prompted_heldout_pass
from sae_lens_dit.conventions import DEFAULT_BUCKET_EDGES, PROFILES, sae_display_name
from sae_lens_dit.hooking.splicing import hook_pair
from sae_lens_dit.toy.image_sets import LabelledImages


@dataclass
class EvalConfig:
    """Settings of `evaluate` and `sae-lens-dit eval` (field docstrings are the CLI help)."""

    num_images: int = 128
    """Held-out images of the backbone's own held-out split (bundled backbones), noised into every bucket."""
    prompts: tuple[str, ...] | None = None
    """Prompts of a text-conditioned pipeline (SD, SDXL, PixArt): its own samples for them, cycled over
    num_images, are the held-out images, and each prompt's conditioning is the pipeline's own (needs
    num_samples 0: there is no classifier to score spliced generation)."""
    num_samples: int = 100
    """Images sampled clean and with the SAE spliced in (0 skips spliced generation); classes cycle."""
    num_inference_steps: int = 50
    """Denoising steps per sample."""
    guidance_scale: float | None = None
    """Classifier-free guidance of the samples; None: the pipeline's default."""
    edges: tuple[float, ...] = DEFAULT_BUCKET_EDGES
    """Timestep bucket edges (DDPM scale, 1000 = pure noise)."""
    fid_features: str | None = None
    """TorchScript feature extractor for the Frechet distance (e.g. Inception pool3); None: the bundled classifier."""
    factors: bool = True
    """Score latents against known factors and probe the class (needs labelled held-out images)."""
    seed: int = 0
    """Seed of noise, timesteps, samples and probes."""
    batch_size: int = 256
    """Rows per transformer call."""
    device: str = "cpu"
    """Device of the backbone and SAEs."""


class _CleanSamples(NamedTuple):
    """What spliced generation compares against, sampled once per backbone."""

    labels: list[int]
    clean: np.ndarray  # [samples, H, W, C] the protocol's seed
    reference: np.ndarray  # [samples, H, W, C] another seed: the Frechet distance of noise alone
    classifier: Any
    features: FeatureFn | None


def evaluate(
    saes: Sequence, cfg: EvalConfig | None = None, images: LabelledImages | None = None
) -> list[dict[str, Any]]:
    """The evaluation protocol for each SAE (see `sae_lens_dit.analysis.evals`), as JSON-ready dicts.

    SAEs name their backbone (`cfg.metadata.model_name`) and hook; SAEs of one backbone share its
    held-out pass and clean samples. `images` overrides the held-out images (needed for backbones
    that are not bundled).
    """
    from sae_lens_dit.toy.backbones import TINY_DIT_NAMES

    cfg = cfg or EvalConfig()
    for model in saes_by_backbone(saes):
        if cfg.prompts is not None:
            if cfg.num_samples:
                raise ValueError(
                    "prompts: spliced generation needs a classifier of the backbone's images, which a text "
                    "pipeline has not; set num_samples to 0 (--num-samples 0)"
                )
            if cfg.factors and cfg.num_images < 2 * len(cfg.prompts):
                raise ValueError(
                    f"prompts: the prompt probe needs 2 images per prompt, and {cfg.num_images} images over "
                    f"{len(cfg.prompts)} prompts give fewer; raise num_images or set factors off (--no-factors)"
                )
        elif images is None and model.removeprefix("tiny-dit-") not in TINY_DIT_NAMES:
            raise ValueError(
                f"no held-out images known for model {model!r}: pass images= (LabelledImages), or prompts "
                f"(--prompts) for a text-conditioned pipeline"
            )
    reports: list[dict[str, Any]] = []
    for backbone in load_backbones(saes, cfg.device):
        reports += _evaluate_backbone(backbone, cfg, images)
    return reports


def _evaluate_backbone(backbone: Backbone, cfg: EvalConfig, images: LabelledImages | None) -> list[dict[str, Any]]:
    from sae_lens_dit.toy.image_sets import training_split

    if cfg.prompts is not None:
        check_prompted(backbone.pipe)
        sampling = {"num_inference_steps": cfg.num_inference_steps, "guidance_scale": cfg.guidance_scale}
        passes = {
            (read, write): prompted_heldout_pass(
                backbone.pipe,
                backbone.hooked,
                read,
                cfg.prompts,
                cfg.num_images,
                cfg.edges,
                cfg.seed,
                **sampling,
                hook_name_out=None if write == read else write,
            )
            for read, write in backbone.hook_pairs
        }
        held = next(iter(passes.values())).images
    else:
        name = backbone.model.removeprefix("tiny-dit-")
        held = (images or training_split(name, seed=0)[1]).take(cfg.num_images)
        passes = {
            (read, write): heldout_pass(
                backbone.pipe,
                backbone.hooked,
                read,
                held,
                cfg.edges,
                cfg.seed,
                cfg.batch_size,
                hook_name_out=None if write == read else write,
            )
            for read, write in backbone.hook_pairs
        }
    samples = _clean_samples(backbone, held, cfg) if cfg.num_samples else None
    return [_report(sae, backbone, len(held), passes[hook_pair(sae)], samples, cfg) for sae in backbone.saes]


def _clean_samples(backbone: Backbone, held: LabelledImages, cfg: EvalConfig) -> _CleanSamples:
    from sae_lens_dit.toy.backbones import TINY_DIT_NAMES, load_tiny_classifier

    name = backbone.model.removeprefix("tiny-dit-")
    classifier = load_tiny_classifier(name) if name in TINY_DIT_NAMES else None
    if classifier is None:
        raise ValueError(f"spliced generation needs a classifier for {backbone.model!r}; set num_samples=0")
    labels = [int(c) for c in np.resize(np.unique(held.labels), cfg.num_samples)]
    features = torchscript_features(cfg.fid_features) if cfg.fid_features else None
    sampling = (cfg.num_inference_steps, cfg.guidance_scale)
    clean = sample_images(backbone.pipe, labels, cfg.seed, *sampling)
    reference = sample_images(backbone.pipe, labels, cfg.seed + 1, *sampling)
    return _CleanSamples(labels, clean, reference, classifier, features)


def _report(
    sae, backbone: Backbone, heldout_images: int, hp: HeldoutPass, samples: _CleanSamples | None, cfg: EvalConfig
) -> dict[str, Any]:
    """One SAE's report: every metric of the protocol on its hook's held-out pass."""
    sae.to(cfg.device)
    cond = hp.branch == 0
    tokens = hp.activation.shape[1]
    stats = latent_timestep_stats(
        sae,
        hp.activation[cond].flatten(0, 1).to(sae.device, sae.dtype),
        hp.timestep[cond].cpu().repeat_interleave(tokens).float(),
        cfg.edges,
    )
    report: dict[str, Any] = {
        "sae": sae_display_name(sae),
        "model": backbone.model,
        "hook": sae.cfg.metadata.hook_name,
        **({"hook_out": hook_pair(sae)[1]} if hook_pair(sae)[1] != sae.cfg.metadata.hook_name else {}),
        "architecture": sae.cfg.architecture(),
        "d_sae": sae.cfg.d_sae,
        "heldout_images": heldout_images,
        "seed": cfg.seed,
        "reconstruction": heldout_reconstruction(sae, hp),
        "denoising": spliced_denoising(sae, backbone.hooked, hp, cfg.batch_size),
        "timestep_profile": {p: stats.profile().count(p) for p in PROFILES},
        "latent_usage": latent_usage(
            sae,
            hp.activation.flatten(0, 1).to(sae.device, sae.dtype),
            hp.timestep.cpu().repeat_interleave(tokens).float(),
        ).to_dict(),
        "latent_stats": stats.to_dict(),
    }
    if samples is not None:
        report["generation"] = spliced_generation(
            sae,
            backbone.pipe,
            backbone.hooked,
            samples.labels,
            samples.clean,
            samples.reference,
            samples.classifier,
            samples.features,
            cfg.seed,
            cfg.num_inference_steps,
            cfg.guidance_scale,
        ).to_dict()
    if cfg.factors:
        report["interpretability"] = interpretability_by_bucket(sae, hp, cfg.seed)
    return report
