"""Settings of a dashboard build (`build_dashboard`, `sae-lens-dit dashboard`).

Why its own module: the sampling run, the steering previews and the page build all read these
settings, and the CLI generates its flags from the field docstrings; keeping the dataclass apart
lets each of those import it without importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sae_lens_dit.conventions import TIMESTEP_MAX


@dataclass(frozen=True)
class DashboardConfig:
    """Settings of `build_dashboard` and `sae-lens-dit dashboard` (field docstrings are the CLI help)."""

    num_images: int = 32
    """Images sampled with the backbone (classes cycled); every token of every step is encoded."""
    num_inference_steps: int = 20
    """Denoising steps per image (the timestep axis of every plot)."""
    guidance_scale: float | None = None
    """Classifier-free guidance of the samples; None: the pipeline's default."""
    prompts: tuple[str, ...] | None = None
    """Prompts of a text-conditioned pipeline (SD, SDXL, PixArt, ...), cycled over the images; pages name the
    prompt where they name a class. None: the pipeline's class labels (class-conditional backbones)."""
    pipeline_kwargs: dict[str, Any] | None = field(default=None, hash=False)
    """Extra keyword arguments of every pipeline call, e.g. a video pipeline's height, width and num_frames (video
    pages show each example at the frame where the latent fires most)."""
    max_latents: int = 64
    """Latents that get a page: the first alive ones by id (the index lists every latent)."""
    latents: tuple[int, ...] | None = None
    """Latent ids that get a page, instead of the first max_latents alive ones."""
    top_images: int = 8
    """Top-activating images per latent page."""
    strip_steps: int = 8
    """Timesteps in the strip that follows one image through denoising."""
    thumb_size: int = 96
    """Side of every thumbnail in pixels."""
    neighbours: int = 5
    """Nearest latents by decoder cosine listed per page."""
    edges: tuple[float, ...] = tuple(float(t) for t in range(0, int(TIMESTEP_MAX) + 1, 100))
    """Timestep bucket edges of the frequency and mean-activation plots (DDPM scale, 1000 = noise)."""
    steering: bool = True
    """Steering previews on each latent page: a sample before and after the latent is clamped in its own window."""
    steering_strength: float = 4.0
    """Steering previews clamp the latent at this many times its typical active value (the median of its non-zero
    codes over the sampled tokens), on every token, inside the latent's own timestep window (the buckets around
    its peak firing frequency that reach half of it); the second preview zeroes it there. At 4 the first previews of
    the bundled shapes SAE at block 1 move pixels by 0.16 on average (benchmarks/results/previews.md)."""
    seed: int = 0
    """Seed of the sampled images."""
    batch_size: int = 32
    """Images per pipeline call."""
    device: str = "cpu"
    """Device of the backbone and SAEs."""

    def __post_init__(self) -> None:
        for name in ("num_images", "num_inference_steps", "top_images", "strip_steps", "thumb_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DashboardConfig.{name} must be at least 1, received {getattr(self, name)}")
        if self.max_latents < 0 or self.neighbours < 0:
            raise ValueError("DashboardConfig.max_latents and neighbours must not be negative")
        if len(self.edges) < 2 or list(self.edges) != sorted(self.edges):
            raise ValueError(f"DashboardConfig.edges must be at least two increasing timesteps, received {self.edges}")
        if not 0 < self.steering_strength < float("inf"):
            raise ValueError(
                f"DashboardConfig.steering_strength must be a positive multiple of the typical value, "
                f"received {self.steering_strength}"
            )
