"""Per-latent statistics the dashboard pages show, computed once per SAE from its encodings of every
recorded token of a sampling run: the evals' timestep statistics and profile, density, maxima per
image and step, the mean activation per factor value, the typical active value, and the nearest
latents by decoder direction.

Why its own module: these numbers are the dashboard's analysis, independent of how pages are
drawn; `summarize` is one pass over the recorded tokens so that a build encodes each token once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sae_lens_dit.analysis.dashboard.cache import Cache
from sae_lens_dit.analysis.dashboard.trajectories import Trajectories
from sae_lens_dit.analysis.evals import LatentTimestepStats, bucket_masks
from sae_lens_dit.conventions import timestep_scope


@dataclass
class LatentSummary:
    """Everything an SAE's pages show, computed once from its encodings of a `Trajectories`."""

    stats: LatentTimestepStats
    profile: list[str]
    density: np.ndarray  # [d_sae] firing frequency over all recorded tokens
    max_activation: np.ndarray  # [d_sae]
    image_step_max: Tensor  # [steps, images, d_sae] max over tokens
    breakdown: dict[str, np.ndarray]
    """Family -> [values, d_sae] mean activation over the images of each value (all steps and tokens)."""
    fired_share: dict[str, np.ndarray]
    """Family -> [values, d_sae] share of each value's images on which the latent fires at some step."""
    typical: np.ndarray
    """[d_sae] typical active value: the median of the latent's non-zero codes over all recorded tokens (0 if none)."""


@torch.no_grad()
def summarize(sae: Any, traj: Trajectories, edges: Sequence[float], batch_rows: int = 8192) -> LatentSummary:
    """Encode every recorded token with `sae` (its encoder only, once) and summarize per latent; the timestep
    statistics are `evals.latent_timestep_stats`'s, accumulated from the same codes (every token of a step
    falls in the step's bucket)."""
    x = traj.activations[sae.cfg.metadata.hook_name]  # [steps, images, tokens, d]
    steps, n_images, tokens, _ = x.shape
    step_bucket = torch.stack(bucket_masks(traj.timesteps, edges)).double().argmax(0)  # [steps]
    in_bucket = torch.stack(bucket_masks(traj.timesteps, edges)).any(0)  # [steps] inside [edges[0], edges[-1]]
    counts = torch.zeros(len(edges) - 1, sae.cfg.d_sae, dtype=torch.float64)  # firing tokens per bucket
    sums = torch.zeros_like(counts)
    step_max = torch.zeros(steps, n_images, sae.cfg.d_sae)
    step_mean = torch.zeros_like(step_max)
    per_chunk = max(1, batch_rows // tokens)
    active_ids, active_codes = [], []  # every non-zero code (latent id, value): one pass gives exact medians
    for s in range(steps):
        for i in range(0, n_images, per_chunk):
            chunk = x[s, i : i + per_chunk].to(sae.device, sae.dtype)
            t = traj.timesteps[s].expand(chunk.shape[0] * tokens).to(sae.device)
            with timestep_scope(sae, t):
                latents = sae.encode(chunk.flatten(0, 1)).float().cpu().view(chunk.shape[0], tokens, -1)
            step_max[s, i : i + per_chunk] = latents.max(1).values
            step_mean[s, i : i + per_chunk] = latents.mean(1)
            fires = latents != 0
            if in_bucket[s]:
                counts[step_bucket[s]] += fires.sum((0, 1))
                sums[step_bucket[s]] += latents.double().sum((0, 1))
            active_ids.append(fires.nonzero()[:, 2].int())
            active_codes.append(latents[fires])
    rows = in_bucket.double() * n_images * tokens  # tokens per step, summed into buckets
    rows = torch.zeros(len(edges) - 1, dtype=torch.float64).index_add_(0, step_bucket, rows)
    denom = rows.clamp_min(1).unsqueeze(1)
    stats = LatentTimestepStats(tuple(float(e) for e in edges), rows.long(), counts / denom, sums / denom)
    density = (stats.frequency * rows[:, None]).sum(0) / rows.sum().clamp_min(1)
    image_mean = step_mean.mean(0).double().numpy()  # [images, d_sae]
    fired = (step_max.amax(0) > 0).double().numpy()
    breakdown, fired_share = {}, {}
    for family, values in traj.factors.items():
        n_values = len(traj.factor_names.get(family, [])) or int(values.max()) + 1
        breakdown[family] = np.stack(
            [
                image_mean[values == v].mean(0) if (values == v).any() else np.zeros(sae.cfg.d_sae)
                for v in range(n_values)
            ]
        )
        fired_share[family] = np.stack(
            [fired[values == v].mean(0) if (values == v).any() else np.zeros(sae.cfg.d_sae) for v in range(n_values)]
        )
    typical = _medians(torch.cat(active_ids), torch.cat(active_codes), sae.cfg.d_sae)
    return LatentSummary(
        stats,
        stats.profile(),
        density.numpy(),
        step_max.amax((0, 1)).numpy(),
        step_max,
        breakdown,
        fired_share,
        typical,
    )


def cached_summary(sae: Any, traj: Trajectories, edges: Sequence[float], cache: Cache, key: str) -> LatentSummary:
    """`summarize`, from the build's cache when it holds this summary (`key` must determine the sampling run, the
    SAE and `edges`: `build` hashes them), else computed and cached. The first build reads the cached tensors
    back too, so a rebuild shows exactly what the first build showed."""
    rel = f"summaries/{key[:24]}.safetensors"
    hit = cache.load(rel, key)
    if hit is None:
        s = summarize(sae, traj, edges)
        tensors = {
            "rows": s.stats.rows,
            "frequency": s.stats.frequency,
            "mean_activation": s.stats.mean_activation,
            "density": torch.from_numpy(np.asarray(s.density)),
            "max_activation": torch.from_numpy(np.asarray(s.max_activation)),
            "image_step_max": s.image_step_max,
            "typical": torch.from_numpy(np.asarray(s.typical)),
            **{f"breakdown.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in s.breakdown.items()},
            **{f"fired_share.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in s.fired_share.items()},
        }
        values = {"edges": list(s.stats.edges), "families": list(s.breakdown)}
        cache.save(rel, key, tensors, values)
        hit = ({k: v.clone() for k, v in tensors.items()}, values)
    tensors, values = hit
    stats = LatentTimestepStats(
        tuple(values["edges"]), tensors["rows"], tensors["frequency"], tensors["mean_activation"]
    )
    return LatentSummary(
        stats,
        stats.profile(),
        tensors["density"].numpy(),
        tensors["max_activation"].numpy(),
        tensors["image_step_max"],
        {k: tensors[f"breakdown.{k}"].numpy() for k in values["families"]},
        {k: tensors[f"fired_share.{k}"].numpy() for k in values["families"]},
        tensors["typical"].numpy(),
    )


def _medians(ids: Tensor, values: Tensor, n: int) -> np.ndarray:
    """[n] median of `values` grouped by `ids` (0..n-1), halfway between the middle two for even counts, as
    `torch.quantile(group, 0.5)` (and `selection.typical_values`) gives; 0 for ids without values."""
    values, order = values.double().sort(stable=True)
    ids = ids[order].long()
    ids, order = ids.sort(stable=True)
    values = values[order]  # grouped by id, ascending within each group
    counts = torch.bincount(ids, minlength=n)
    if not len(values):
        return np.zeros(n)
    middle = (counts.cumsum(0) - counts) + (counts - 1).clamp_min(0) / 2.0  # fractional index of each median
    last = len(values) - 1
    low, high = values[middle.floor().long().clamp_max(last)], values[middle.ceil().long().clamp_max(last)]
    return torch.where(counts > 0, (low + high) / 2, 0.0).numpy()


def selectivity(breakdown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top value [d_sae], its share of the summed mean activation [d_sae]): 1 = fires for one value only,
    1 / values = indifferent; 0 for latents that never fire."""
    total = breakdown.sum(0)
    share = np.where(total > 0, breakdown.max(0) / np.where(total > 0, total, 1.0), 0.0)
    return breakdown.argmax(0), share


def nearest_latents(w_dec: Tensor, latents: Sequence[int], k: int) -> dict[int, list[tuple[int, float]]]:
    """The k latents whose decoder directions [d_sae, d_in] are closest by cosine to each of `latents`."""
    unit = torch.nn.functional.normalize(w_dec.detach().float().cpu(), dim=1)
    out = {}
    for start in range(0, len(latents), 256):
        ids = list(latents[start : start + 256])
        cos = unit[ids] @ unit.T  # [len(ids), d_sae]
        cos[torch.arange(len(ids)), torch.tensor(ids)] = -2.0
        values, indices = cos.topk(min(k, unit.shape[0] - 1), dim=1)
        for i, vals, idx in zip(ids, values.tolist(), indices.tolist(), strict=True):
            out[i] = list(zip(idx, vals, strict=True))
    return out
