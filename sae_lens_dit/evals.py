"""Evaluation of diffusion SAEs along the denoising trajectory.

Every metric is reported per timestep bucket, because a DiT's activations change character from
pure noise (t = 1000) to a clean image (t = 0) and an average over the trajectory hides where an
SAE fails. Timesteps follow the package convention: DDPM scale [0, 1000], 1000 = pure noise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

DEFAULT_BUCKET_EDGES: tuple[float, ...] = (0.0, 200.0, 400.0, 600.0, 800.0, 1000.0)
DENSE_THRESHOLD = 0.1
"""A latent firing on more than this fraction of a bucket's tokens counts as dense."""


def timestep_context(sae: torch.nn.Module, timestep: torch.Tensor) -> contextlib.AbstractContextManager:
    """`sae.at_timestep(t)` for timestep-aware SAEs, a no-op for SAELens's plain architectures."""
    at_timestep = getattr(sae, "at_timestep", None)
    return at_timestep(timestep) if at_timestep is not None else contextlib.nullcontext()


@torch.no_grad()
def reconstruct(sae, x: torch.Tensor, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction [rows, d_in], latent activations [rows, d_sae]) of rows `x` at `timestep` [rows]."""
    with timestep_context(sae, timestep):
        feature_acts = sae.encode(x)
        return sae.decode(feature_acts), feature_acts


@dataclass(frozen=True)
class BucketMetrics:
    """Reconstruction quality of one SAE on the rows whose timestep falls in [t_low, t_high)."""

    t_low: float
    t_high: float
    rows: int
    mse: float
    """Mean squared error per element."""
    normalized_mse: float
    """Summed squared error over the summed squared distance to the bucket mean."""
    cosine: float
    """Mean cosine similarity between each row and its reconstruction."""
    explained_variance: float
    """1 - normalized_mse, the number SAETrainer logs."""
    l0: float
    """Mean number of active latents per row."""
    dead_latents: int
    """Latents that never fire in this bucket."""
    dense_latents: int
    """Latents firing on more than DENSE_THRESHOLD of this bucket's rows."""

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def bucket_metrics(
    x: torch.Tensor, x_hat: torch.Tensor, feature_acts: torch.Tensor, t_low: float, t_high: float
) -> BucketMetrics:
    """Metrics of one bucket from its rows [rows, d_in], reconstructions and latents [rows, d_sae]."""
    x, x_hat = x.double(), x_hat.double()
    err = (x - x_hat).pow(2).sum(-1)
    var = (x - x.mean(0)).pow(2).sum(-1)
    nmse = float(err.sum() / var.sum())
    fires = feature_acts != 0
    freq = fires.float().mean(0)
    return BucketMetrics(
        t_low=t_low,
        t_high=t_high,
        rows=len(x),
        mse=float(err.mean() / x.shape[-1]),
        normalized_mse=nmse,
        cosine=float(torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).mean()),
        explained_variance=1.0 - nmse,
        l0=float(fires.sum(-1).float().mean()),
        dead_latents=int((freq == 0).sum()),
        dense_latents=int((freq > DENSE_THRESHOLD).sum()),
    )


def reconstruction_by_bucket(
    sae,
    x: torch.Tensor,
    timestep: torch.Tensor,
    edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
    batch_size: int = 8192,
) -> list[BucketMetrics]:
    """Per-bucket metrics of `sae` on held-out rows `x` [rows, d_in] with timesteps [rows].

    Buckets are half-open [edges[i], edges[i+1]); the last one also holds t == edges[-1].
    Empty buckets are left out.
    """
    parts = [
        reconstruct(sae, x[i : i + batch_size], timestep[i : i + batch_size]) for i in range(0, len(x), batch_size)
    ]
    x_hat = torch.cat([p[0] for p in parts])
    acts = torch.cat([p[1] for p in parts])
    return [
        bucket_metrics(x[mask], x_hat[mask], acts[mask], lo, hi)
        for lo, hi, mask in zip(edges[:-1], edges[1:], bucket_masks(timestep, edges), strict=True)
        if mask.any()
    ]


def format_bucket_table(metrics: Sequence[BucketMetrics], title: str = "") -> str:
    """A markdown table of per-bucket metrics (also readable in a terminal)."""
    header = "| t bucket | rows | explained var | MSE | cosine | L0 | dead | dense |"
    lines = ([f"**{title}**", ""] if title else []) + [header, "|" + "---|" * 8]
    for m in metrics:
        lines.append(
            f"| {m.t_low:.0f}-{m.t_high:.0f} | {m.rows} | {m.explained_variance:.4f} | {m.mse:.3e} | "
            f"{m.cosine:.4f} | {m.l0:.1f} | {m.dead_latents} | {m.dense_latents} |"
        )
    return "\n".join(lines)


def bucket_masks(timestep: torch.Tensor, edges: Sequence[float] = DEFAULT_BUCKET_EDGES) -> list[torch.Tensor]:
    """One boolean row mask per bucket [edges[i], edges[i+1]); the last bucket also holds t == edges[-1]."""
    last = len(edges) - 2
    return [
        (timestep >= lo) & (timestep <= hi if i == last else timestep < hi)
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True))
    ]


TimestepProfile = Literal["early", "late", "persistent", "dead"]
EARLY_T = 600.0
"""Buckets starting at or above this timestep are "early" in denoising (mostly noise)."""
LATE_T = 400.0
"""Buckets ending at or below this timestep are "late" in denoising (mostly image)."""
PROFILE_SHARE = 0.75
"""A latent is early (late) when this share of its firing-rate mass lies in the early (late) buckets."""


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
            out.append("dead" if tot == 0 else "early" if e >= PROFILE_SHARE else "late" if la >= PROFILE_SHARE
                       else "persistent")  # fmt: skip
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
