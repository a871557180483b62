"""Steering previews on the dashboard pages: one sample before and after the latent is clamped at a
multiple of its typical active value, then zeroed, inside the latent's own timestep window.

Why its own module: it is the one part of a build that edits generation, through the interventions
package (`interventions.preview_latent`), and it needs the window logic that turns a latent's
per-bucket firing frequency into the timesteps where editing it means something.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sae_lens_dit.analysis.dashboard.cache import Cache
from sae_lens_dit.analysis.dashboard.config import DashboardConfig
from sae_lens_dit.analysis.dashboard.files import SiteFiles
from sae_lens_dit.analysis.dashboard.latent_summary import LatentSummary
from sae_lens_dit.analysis.dashboard.thumbnails import render_thumbnail
from sae_lens_dit.analysis.dashboard.trajectories import Trajectories, to_uint8
from sae_lens_dit.analysis.evals import LatentTimestepStats
from sae_lens_dit.hooking.hooked import HookedDiT


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


def steering_previews(
    pipe: Any,
    hooked: HookedDiT,
    sae: Any,
    traj: Trajectories,
    cfg: DashboardConfig,
    cache: Cache | None = None,
    key: str = "",
) -> Callable[..., list[dict[str, Any]]]:
    """A function (latent, class, summary, files, folder) -> before / after thumbnails of one sample of the class
    with the latent clamped at `steering_strength` x its typical active value, then zeroed, on every token inside
    its own timestep window (`preview_window`; the steering of `interventions.preview_latent`). The unedited
    sample of each class is generated once; with a `cache`, every sample is kept under `key` (which must
    determine the backbone, the SAE and the settings: `build` hashes them) and reused by the next build. Call
    `.save()` on the returned function once every page is built."""
    from sae_lens_dit.analysis.evals.generation import condition_kwargs
    from sae_lens_dit.analysis.interventions import steering
    from sae_lens_dit.analysis.interventions.editing import generate
    from sae_lens_dit.analysis.interventions.spec import LatentEdit, SteeringSpec

    names = traj.factor_names["class"]
    pipe_kwargs: dict[str, Any] = {"num_inference_steps": cfg.num_inference_steps}
    if cfg.guidance_scale is not None:
        pipe_kwargs["guidance_scale"] = cfg.guidance_scale
    rel = f"previews/{key[:24]}.safetensors"
    cached = (cache.load(rel, key) if cache is not None and key else None) or ({}, {})
    stored: dict[str, Tensor] = dict(cached[0])
    used: dict[str, Tensor] = {}
    computed: list[str] = []

    def sample(name: str, spec: SteeringSpec | None, label: int) -> np.ndarray:
        if name not in stored:
            computed.append(name)
            if spec is None:
                stored[name] = torch.from_numpy(
                    generate(pipe, cfg.seed, **condition_kwargs([label], cfg.prompts), **pipe_kwargs)
                )
            else:
                with steering.steer(hooked, [sae], spec):
                    stored[name] = torch.from_numpy(
                        generate(pipe, cfg.seed, **condition_kwargs([label], cfg.prompts), **pipe_kwargs)
                    )
        used[name] = stored[name]
        return used[name].numpy()

    def previews(latent: int, label: int, summary: LatentSummary, files_: SiteFiles, folder: str) -> list[dict]:
        typical, window = float(summary.typical[latent]), preview_window(summary.stats, latent)
        span = f"t {window[0]:g}-{window[1]:g}"
        hook = sae.cfg.metadata.hook_name
        out = []
        for op, caption in (
            ("clamp", f"clamp {cfg.steering_strength:g}x typical ({typical:.3g}), {span}"),
            ("zero", f"zero, {span}"),
        ):
            edit = LatentEdit(
                hook, (latent,), op, cfg.steering_strength, timesteps=window, unit="typical", typical=(typical,)
            )
            before = sample(f"before.{label}", None, label)
            after = sample(f"after.{op}.{latent}.{label}", SteeringSpec((edit,)), label)
            thumbs = [
                {
                    "src": "../../" + files_.image(render_thumbnail(to_uint8(im[0]), cfg.thumb_size), f"{folder}/img"),
                    "size": cfg.thumb_size,
                }
                for im in (before, after)
            ]
            out.append({"before": thumbs[0], "after": thumbs[1], "caption": f"{names[label]}, {caption}"})
        return out

    def save() -> None:
        if cache is not None and key and computed:  # else the loaded file is kept as it is (pages a rebuild
            cache.save(rel, key, {**cached[0], **used})  # keeps use no previews, so nothing cached is dropped)

    previews.save = save  # type: ignore[attr-defined]
    return previews
