"""Steering previews on the dashboard pages: one sample before and after the latent is clamped at a
multiple of its typical active value, then zeroed, inside the latent's own timestep window.

Why its own module: it is the one part of a build that edits generation, through the interventions
package (`interventions.steering.steer`), and it needs the window logic that turns a latent's
per-bucket firing frequency into the timesteps where editing it means something. An edited preview is
its unedited sample until its window opens, so on a DiTPipeline with DDIM (`interventions.resume`) the
unedited sample of each class is sampled once with its latents at every step, and each edited preview
runs only from its window's first step, from those latents, in batches of `DashboardConfig.batch_size`
that each sample joins at its own step (`resume.steer_resumed`); tested equal to the stock pipeline from
step 0 within 1e-5. Other pipelines sample every preview from step 0 in batched pipeline calls (`steer`
with one spec per sample). Every sample starts from the noise of the same seed, so a preview is the
single-sample preview of its latent (within float32 rounding of another batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae_lens_dit.analysis.dashboard.cache import Cache
from sae_lens_dit.analysis.dashboard.config import DashboardConfig
from sae_lens_dit.analysis.dashboard.files import SiteFiles
from sae_lens_dit.analysis.dashboard.latent_summary import LatentSummary
from sae_lens_dit.analysis.dashboard.thumbnails import render_strip, render_thumbnail
from sae_lens_dit.analysis.dashboard.trajectories import Trajectories, to_uint8
from sae_lens_dit.analysis.evals import LatentTimestepStats
from sae_lens_dit.hooking.hooked import HookedDiT

if TYPE_CHECKING:
    from sae_lens_dit.analysis.interventions.spec import LatentEdit


def preview_window(stats: LatentTimestepStats, latent: int) -> tuple[float, float]:
    """The latent's own timestep window: the contiguous buckets around its peak firing frequency that reach half
    of it (`windows.auto_window` on the frequency profile). A bucket no denoising step fell in takes the lower
    of its nearest sampled neighbours' frequencies, so it neither splits a window nor ends one early."""
    from sae_lens_dit.analysis.interventions.windows import auto_window

    frequency = stats.frequency[:, latent].double()
    sampled = (stats.rows > 0).nonzero().squeeze(1)
    curve = []
    for b in range(len(frequency)):
        if stats.rows[b] > 0:
            curve.append(float(frequency[b]))
            continue
        near = [frequency[side].item() for side in (sampled[sampled < b][-1:], sampled[sampled > b][:1]) if len(side)]
        curve.append(min(near, default=0.0))
    return auto_window(curve, stats.edges)


class SteeringPreviews:
    """The previews of one SAE's pages: before / after thumbnails of one sample of a class with the latent clamped
    at `steering_strength` x its typical active value, then zeroed, on every token inside its own timestep window
    (`preview_window`). Call `.prepare(pages, summary)` with every (latent, class) the pages will show to sample
    them in batches; then `previews(latent, class, summary, files, folder)` per page. The unedited sample of each
    class is generated once (shared through `befores` by the SAEs of one backbone); with a `cache`, every sample
    is kept under `key` (which must determine the backbone, the SAE and the settings: `build` hashes them) and
    reused by the next build. Call `.save()` once every page is built."""

    OPS = ("clamp", "zero")

    def __init__(
        self,
        pipe: Any,
        hooked: HookedDiT,
        sae: Any,
        traj: Trajectories,
        cfg: DashboardConfig,
        cache: Cache | None = None,
        key: str = "",
        befores: dict[int, Tensor] | None = None,
        progress: bool = False,
    ):
        self.pipe, self.hooked, self.sae, self.traj, self.cfg = pipe, hooked, sae, traj, cfg
        self.cache, self.key, self.progress = cache, key, progress
        # label -> unedited sample (a one-sample `Unedited` where the pipeline resumes, else its image), shared
        # by the SAEs of one backbone
        self.befores = befores if befores is not None else {}
        self.rel = f"previews/{key[:24]}.safetensors"
        self.cached = (cache.load(self.rel, key) if cache is not None and key else None) or ({}, {})
        self.stored: dict[str, Tensor] = dict(self.cached[0])  # name -> [(frames,) H, W, C] float in [0, 1]
        self.used: dict[str, Tensor] = {}
        self.computed: list[str] = []

    def edits(self, latent: int, summary: LatentSummary) -> list[tuple[str, LatentEdit]]:
        """(op, edit) of the latent's two previews: clamp at strength x typical, then zero, in its own window."""
        from sae_lens_dit.analysis.interventions.spec import LatentEdit

        typical, window = float(summary.typical[latent]), preview_window(summary.stats, latent)
        hook = self.sae.cfg.metadata.hook_name
        return [
            (
                op,
                LatentEdit(
                    hook,
                    (latent,),
                    op,
                    self.cfg.steering_strength,
                    timesteps=window,
                    unit="typical",
                    typical=(typical,),
                ),
            )
            for op in self.OPS
        ]

    def prepare(self, pages: Sequence[tuple[int, int]], summary: LatentSummary) -> None:
        """Sample every preview of the (latent, class label) `pages` not stored yet: resumed at each edit's first
        step where the pipeline allows it (`interventions.resume`), else in batched pipeline calls from step 0."""
        from sae_lens_dit.analysis.interventions.resume import resumable
        from sae_lens_dit.analysis.interventions.spec import SteeringSpec

        wanted: dict[str, tuple[int, SteeringSpec]] = {}
        for latent, label in pages:
            wanted.setdefault(f"before.{label}", (label, SteeringSpec()))
            for op, edit in self.edits(latent, summary):
                wanted.setdefault(f"after.{op}.{latent}.{label}", (label, SteeringSpec((edit,))))
        missing = {name: job for name, job in wanted.items() if name not in self.stored}
        if not missing:
            return
        sample = self._resumed if resumable(self.pipe) is None else self._batched
        for name, image in sample(missing).items():
            self.stored[name] = image
            self.computed.append(name)

    def _resumed(self, jobs: dict[str, tuple[int, Any]]) -> dict[str, Tensor]:
        """name -> [H, W, C] image of each (label, spec) job, resumed from the unedited sample of its label."""
        from sae_lens_dit.analysis.interventions.resume import Unedited, guidance_of, sample_unedited, steer_resumed

        cfg, guidance = self.cfg, guidance_of(self.pipe, self.cfg.guidance_scale)
        labels = sorted({label for label, _ in jobs.values()})
        new = [label for label in labels if label not in self.befores]
        if new:
            unedited = sample_unedited(self.pipe, self.hooked, new, cfg.seed, cfg.num_inference_steps, guidance)
            self.befores.update({label: unedited.row(i) for i, label in enumerate(new)})
        base = Unedited.concat([self.befores[label] for label in labels])
        row = {label: i for i, label in enumerate(labels)}
        name = self.sae.cfg.metadata.hook_name
        with tqdm(desc=f"previews {name}", unit="batch", disable=not self.progress) as bar:
            images = steer_resumed(
                self.pipe,
                self.hooked,
                [self.sae],
                base,
                [(row[label], spec) for label, spec in jobs.values()],
                cfg.num_inference_steps,
                guidance,
                cfg.batch_size,
                bar.update,
            )
        return {name: torch.from_numpy(image) for name, image in zip(jobs, images, strict=True)}

    def _batched(self, jobs: dict[str, tuple[int, Any]]) -> dict[str, Tensor]:
        """name -> [(frames,) H, W, C] sample of each (label, spec) job, from step 0 in calls of `batch_size`."""
        out = {
            name: self.befores[label]
            for name, (label, spec) in jobs.items()
            if not spec.edits and label in self.befores
        }
        missing = [(name, *job) for name, job in jobs.items() if name not in out]
        size = self.cfg.batch_size
        batches = [missing[i : i + size] for i in range(0, len(missing), size)]
        name = self.sae.cfg.metadata.hook_name
        for batch in tqdm(batches, desc=f"previews {name}", unit="batch", disable=not self.progress or not batches):
            images = self._sample([label for _, label, _ in batch], [spec for *_, spec in batch])
            for (name, label, spec), image in zip(batch, images, strict=True):
                out[name] = image
                if not spec.edits:
                    self.befores.setdefault(label, image)
        return out

    def _sample(self, labels: list[int], specs: list[Any]) -> Tensor:
        """[n, H, W, C]: one pipeline call, sample i of class labels[i] steered by specs[i], each from cfg.seed."""
        from sae_lens_dit.analysis.evals.generation import condition_kwargs, pipeline_pictures
        from sae_lens_dit.analysis.interventions import steering

        kwargs: dict[str, Any] = dict(self.cfg.pipeline_kwargs or {})
        kwargs["num_inference_steps"] = self.cfg.num_inference_steps
        if self.cfg.guidance_scale is not None:
            kwargs["guidance_scale"] = self.cfg.guidance_scale
        generators = [torch.Generator(self.pipe.device).manual_seed(self.cfg.seed) for _ in labels]
        with torch.no_grad(), steering.steer(self.hooked, [self.sae], specs):
            out = self.pipe(
                generator=generators, output_type="np", **condition_kwargs(labels, self.cfg.prompts), **kwargs
            )
        return torch.from_numpy(np.ascontiguousarray(pipeline_pictures(out)))

    def __call__(self, latent: int, label: int, summary: LatentSummary, files_: SiteFiles, folder: str) -> list[dict]:
        """The page's two previews (before / after thumbnails and a caption), sampled now if not prepared."""
        names = self.traj.factor_names["class"]
        edits = self.edits(latent, summary)
        if any(f"after.{op}.{latent}.{label}" not in self.stored for op in self.OPS):
            self.prepare([(latent, label)], summary)
        typical, window = float(summary.typical[latent]), edits[0][1].timesteps
        span = f"t {window[0]:g}-{window[1]:g}"
        captions = {
            "clamp": f"clamp {self.cfg.steering_strength:g}x typical ({typical:.3g}), {span}",
            "zero": f"zero, {span}",
        }
        out = []
        for op, _ in edits:
            thumbs = []
            for name in (f"before.{label}", f"after.{op}.{latent}.{label}"):
                self.used[name] = self.stored[name]
                picture, size = to_uint8(self.stored[name].numpy()), self.cfg.thumb_size
                video = picture.ndim == 4  # [frames, H, W, C]: a strip of frames
                png, width = render_strip(picture, size) if video else (render_thumbnail(picture, size), size)
                thumbs.append({"src": "../../" + files_.image(png, f"{folder}/img"), "size": size, "width": width})
            out.append({"before": thumbs[0], "after": thumbs[1], "caption": f"{names[label]}, {captions[op]}"})
        return out

    def save(self) -> None:
        """Write the previews this build sampled into the cache (with those it reused); else the loaded file is kept
        as it is (pages a rebuild keeps use no previews, so nothing cached is dropped)."""
        if self.cache is not None and self.key and self.computed:
            self.cache.save(self.rel, self.key, {**self.cached[0], **self.used})


steering_previews = SteeringPreviews
"""The name `build` and earlier code construct previews by."""
