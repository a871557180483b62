"""How an SAE's latents are used: dead and dense latents over a whole set of rows, and per latent
when in denoising it fires (its firing frequency and mean activation per timestep bucket, and the
early / late / persistent / dead profile read from them).

Why its own module: the runner's report, the evaluation protocol and the dashboards all count
latents the same way, and the counts are about the dictionary, not about how well it reconstructs
(`reconstruction`) or what the model does with it (`denoising`, `generation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from sae_lens_dit.analysis.evals.reconstruction import DENSE_THRESHOLD, bucket_masks, reconstruct
from sae_lens_dit.conventions import DEFAULT_BUCKET_EDGES, TimestepProfile

EARLY_T = 600.0
"""Buckets starting at or above this timestep are "early" in denoising (mostly noise)."""
LATE_T = 400.0
"""Buckets ending at or below this timestep are "late" in denoising (mostly image)."""
PROFILE_SHARE = 0.75
"""A latent is early (late) when this share of its firing-rate mass lies in the early (late) buckets."""


@dataclass(frozen=True)
class LatentUsage:
    """How many of an SAE's latents are used, over all rows of a set (every timestep, both CFG branches)."""

    rows: int
    d_sae: int
    dead: int
    """Latents that never fire on any row."""
    dense: int
    """Latents firing on more than DENSE_THRESHOLD of the rows."""

    @property
    def dead_fraction(self) -> float:
        return self.dead / self.d_sae

    @property
    def dense_fraction(self) -> float:
        return self.dense / self.d_sae

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "dead_fraction": self.dead_fraction, "dense_fraction": self.dense_fraction}

    def summary(self) -> str:
        """One line for reports.

        >>> LatentUsage(rows=102400, d_sae=1536, dead=12, dense=0).summary()
        'dead 12 of 1536 latents (0.8%), dense (> 10% of rows) 0 (0.0%), on 102400 rows'
        """
        return (
            f"dead {self.dead} of {self.d_sae} latents ({self.dead_fraction:.1%}), dense (> {DENSE_THRESHOLD:.0%} "
            f"of rows) {self.dense} ({self.dense_fraction:.1%}), on {self.rows} rows"
        )


@torch.no_grad()
def latent_usage(sae, x: torch.Tensor, timestep: torch.Tensor, batch_size: int = 8192) -> LatentUsage:
    """Dead and dense latents of `sae` over rows `x` [rows, d_in] at `timestep` [rows]."""
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    for i in range(0, len(x), batch_size):
        acts = reconstruct(sae, x[i : i + batch_size], timestep[i : i + batch_size])[1]
        fired += (acts != 0).sum(0).double().cpu()
    rate = fired / max(len(x), 1)
    return LatentUsage(len(x), sae.cfg.d_sae, int((fired == 0).sum()), int((rate > DENSE_THRESHOLD).sum()))


@dataclass(frozen=True)
class LatentTimestepStats:
    """Per latent and timestep bucket: how often it fires and how strongly, over held-out rows."""

    edges: tuple[float, ...]
    rows: torch.Tensor
    """[buckets] rows per bucket."""
    frequency: torch.Tensor
    """[buckets, d_sae] fraction of the bucket's rows on which the latent is non-zero."""
    mean_activation: torch.Tensor
    """[buckets, d_sae] mean activation over the bucket's rows (zeros included)."""

    def profile(self) -> list[TimestepProfile]:
        """Per latent: "early" (fires mostly at noisy timesteps, t >= EARLY_T), "late" (mostly at t <= LATE_T),
        "persistent" (across the trajectory) or "dead" (never fires). Shares use bucket firing rates, so
        buckets with more rows do not count more."""
        lows, highs = torch.tensor(self.edges[:-1]), torch.tensor(self.edges[1:])
        rates = self.frequency.double()
        total = rates.sum(0)
        early = rates[lows >= EARLY_T].sum(0) / total.clamp_min(1e-12)
        late = rates[highs <= LATE_T].sum(0) / total.clamp_min(1e-12)
        out: list[TimestepProfile] = []
        for tot, e, la in zip(total.tolist(), early.tolist(), late.tolist(), strict=True):
            out.append(
                "dead"
                if tot == 0
                else "early"
                if e >= PROFILE_SHARE
                else "late"
                if la >= PROFILE_SHARE
                else "persistent"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": list(self.edges),
            "rows": self.rows.tolist(),
            "frequency": self.frequency.tolist(),
            "mean_activation": self.mean_activation.tolist(),
            "profile": self.profile(),
        }


@torch.no_grad()
def latent_timestep_stats(
    sae,
    x: torch.Tensor,
    timestep: torch.Tensor,
    edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
    batch_size: int = 8192,
) -> LatentTimestepStats:
    """Firing frequency and mean activation of every latent of `sae` per timestep bucket, from rows
    `x` [rows, d_in] at `timestep` [rows]. Empty buckets get zeros."""
    masks = bucket_masks(timestep, edges)
    counts = torch.zeros(len(masks), sae.cfg.d_sae, dtype=torch.float64)
    sums = torch.zeros_like(counts)
    for i in range(0, len(x), batch_size):
        acts = reconstruct(sae, x[i : i + batch_size], timestep[i : i + batch_size])[1].double()
        for b, mask in enumerate(masks):
            part = acts[mask[i : i + batch_size]]
            counts[b] += (part != 0).sum(0)
            sums[b] += part.sum(0)
    rows = torch.stack([m.sum() for m in masks]).double()
    denom = rows.clamp_min(1).unsqueeze(1)
    return LatentTimestepStats(tuple(float(e) for e in edges), rows.long(), counts / denom, sums / denom)
