"""Spliced generation: samples of the same seeds with and without the SAE in the loop, compared by
pixels, by the bundled classifier and by the Frechet distance of their features.

Why its own module: it is the only part of the protocol that runs the full sampler (every step,
with guidance), so it answers what the denoising loss cannot: whether errors the SAE makes at one
step compound over the trajectory. `sample_images` is also the seeded sampler the dashboards and
latent selection use, so that their images are the protocol's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_lens_dit.hooking.hooked import HookedDiT


def sample_images(
    pipe,
    labels: Sequence[int],
    seed: int,
    num_inference_steps: int = 50,
    guidance_scale: float | None = None,
    batch_size: int = 100,
    prompts: Sequence[str] | None = None,
    pipeline_kwargs: dict[str, Any] | None = None,
) -> np.ndarray:
    """Pipeline `np` output [n, H, W, C] in [0, 1] ([n, frames, H, W, C] from a video pipeline); image i always
    gets the noise of (seed, i // batch_size). `labels` are class ids, or indices into `prompts` for a
    text-conditioned pipeline; `pipeline_kwargs` go to every call (a video pipeline's height, width, num_frames)."""
    parts = []
    for i in range(0, len(labels), batch_size):
        gen = torch.Generator().manual_seed(seed * 100_003 + i)
        kwargs = dict(pipeline_kwargs or {})
        if guidance_scale is not None:
            kwargs["guidance_scale"] = guidance_scale
        kwargs |= condition_kwargs(labels[i : i + batch_size], prompts)
        parts.append(
            pipeline_pictures(pipe(num_inference_steps=num_inference_steps, generator=gen, output_type="np", **kwargs))
        )
    return np.concatenate(parts)


def pipeline_pictures(output: Any) -> np.ndarray:
    """The samples of a pipeline call with `output_type="np"`: `.images` [n, H, W, C], or a video pipeline's
    `.frames` [n, frames, H, W, C]."""
    frames = getattr(output, "frames", None)
    return np.asarray(frames if frames is not None else output.images)


def condition_kwargs(labels: Sequence[int], prompts: Sequence[str] | None) -> dict[str, list]:
    """The pipeline keyword that asks for `labels`: `class_labels`, or `prompt` (the labels index `prompts`)."""
    if prompts is None:
        return {"class_labels": [int(label) for label in labels]}
    return {"prompt": [prompts[int(label)] for label in labels]}


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a [n, f] and b [m, f] (FID's formula)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))


FeatureFn = Callable[[np.ndarray], np.ndarray]
"""Images [n, H, W, C] in [0, 1] -> features [n, f] for the Frechet distance."""


def torchscript_features(path: str | Path) -> FeatureFn:
    """A Frechet-distance feature extractor from a TorchScript file mapping [n, C, H, W] in [0, 1] to [n, f],
    e.g. an Inception-v3 pool3 export for the standard FID, when its weights are on disk."""
    module = torch.jit.load(str(path), map_location="cpu").eval()

    @torch.no_grad()
    def features(images: np.ndarray) -> np.ndarray:
        return module(torch.from_numpy(images).permute(0, 3, 1, 2).float()).flatten(1).double().numpy()

    return features


@dataclass(frozen=True)
class GenerationDrift:
    """How far samples move when the SAE replaces the hook (no error term) at every step."""

    samples: int
    pixel_mse: float
    """Mean squared pixel difference between clean and spliced samples of the same seeds ([0, 1] scale)."""
    classifier_agreement: float
    """Fraction of seeds where the bundled classifier decides the same for clean and spliced samples."""
    on_class_clean: float
    on_class_spliced: float
    frechet_distance: float
    """Between clean and spliced sample sets, on the feature extractor's features."""
    frechet_floor: float
    """Between clean samples of this seed and clean samples of another seed: the distance of noise alone."""

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def spliced_generation(
    sae,
    pipe,
    hooked: HookedDiT,
    labels: Sequence[int],
    clean: np.ndarray,
    reference: np.ndarray,
    classifier,
    features: FeatureFn | None = None,
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float | None = None,
) -> GenerationDrift:
    """Sample `labels` with `sae` (or a list of them, spliced at once) spliced in and compare with `clean` (same
    seed) and `reference` (another seed)."""
    with hooked.saes(sae if isinstance(sae, (list, tuple)) else [sae], use_error_term=False):
        spliced = sample_images(pipe, labels, seed, num_inference_steps, guidance_scale)
    features = features or classifier.embed
    labels_np = np.asarray(labels)
    pred_clean, pred_spliced = classifier.predict(clean), classifier.predict(spliced)
    f_clean = features(clean)
    return GenerationDrift(
        samples=len(labels_np),
        pixel_mse=float(((clean - spliced) ** 2).mean()),
        classifier_agreement=float((pred_clean == pred_spliced).mean()),
        on_class_clean=float((pred_clean == labels_np).mean()),
        on_class_spliced=float((pred_spliced == labels_np).mean()),
        frechet_distance=frechet_distance(f_clean, features(spliced)),
        frechet_floor=frechet_distance(f_clean, features(reference)),
    )
