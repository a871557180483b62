"""Reconstruction quality of an SAE per timestep bucket, on rows of activations with their timesteps.

Why its own module: these are the numbers every other evaluation builds on (the runner's held-out
report, the protocol's per-branch table, the dashboard's encodings all go through `reconstruct`
and `bucket_masks`), and they need nothing but an SAE and rows: no backbone, no pipeline.
Every metric is split by timestep bucket because a DiT's activations change character from pure
noise (t = 1000) to a clean image (t = 0) and an average over the trajectory hides where an SAE
fails. Timesteps follow the package convention: DDPM scale [0, 1000], 1000 = pure noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from sae_lens_dit.conventions import DEFAULT_BUCKET_EDGES, timestep_scope

DENSE_THRESHOLD = 0.1
"""A latent firing on more than this fraction of a bucket's tokens counts as dense."""


@torch.no_grad()
def reconstruct(sae, x: torch.Tensor, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction [rows, d_out], latent activations [rows, d_sae]) of rows `x` at `timestep` [rows]: what the
    SAE writes when spliced in, so a skip transcoder's skip term is added: ours from `skip_output` (its skip may
    depend on the timestep), SAELens's `SkipTranscoder`'s as `x @ W_skip.T`."""
    with timestep_scope(sae, timestep):
        feature_acts = sae.encode(x)
        out = sae.decode(feature_acts)
        if hasattr(sae, "skip_output"):
            skip = sae.skip_output(x)
        elif getattr(sae, "W_skip", None) is not None:
            skip = x.to(sae.W_skip.dtype) @ sae.W_skip.T
        else:
            skip = None
    return (out if skip is None else out + skip), feature_acts


def bucket_masks(timestep: torch.Tensor, edges: Sequence[float] = DEFAULT_BUCKET_EDGES) -> list[torch.Tensor]:
    """One boolean row mask per bucket [edges[i], edges[i+1]); the last bucket also holds t == edges[-1].

    >>> [m.tolist() for m in bucket_masks(torch.tensor([0.0, 500.0, 1000.0]), (0.0, 500.0, 1000.0))]
    [[True, False, False], [False, True, True]]
    """
    last = len(edges) - 2
    return [
        (timestep >= lo) & (timestep <= hi if i == last else timestep < hi)
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True))
    ]


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


def format_frame_table(metrics: Sequence[tuple[int, BucketMetrics]]) -> str:
    """A markdown table of a video SAE's metrics per frame (every timestep), frames in token frames."""
    lines = ["| frame | rows | explained var | cosine | L0 | dead | dense |", "|" + "---|" * 7]
    for frame, m in metrics:
        lines.append(
            f"| {frame} | {m.rows} | {m.explained_variance:.4f} | {m.cosine:.4f} | {m.l0:.1f} | {m.dead_latents} | "
            f"{m.dense_latents} |"
        )
    return "\n".join(lines)
