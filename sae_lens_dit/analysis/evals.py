"""Evaluation of diffusion SAEs along the denoising trajectory.

Every metric is reported per timestep bucket, because a DiT's activations change character from
pure noise (t = 1000) to a clean image (t = 0) and an average over the trajectory hides where an
SAE fails. Timesteps follow the package convention: DDPM scale [0, 1000], 1000 = pure noise.

The protocol (`evaluate`, `sae-lens-dit eval`), diffusion's answer to "CE loss recovered":
held-out images are noised with the scheduler to one timestep per image in every bucket and run
once per CFG branch (`heldout_pass`); on those rows it measures reconstruction, the model's own
denoising loss with the SAE spliced in against zero- and mean-ablation (`spliced_denoising`),
latents scored against known factors next to raw neurons and a random rotation, and class probes
(`interpretability_by_bucket`), and per-latent timestep profiles (`latent_timestep_stats`). Samples
drawn with and without the SAE in the loop measure generation drift (`spliced_generation`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_lens_dit.conventions import (
    DEFAULT_BUCKET_EDGES,
    PROFILES,
    TIMESTEP_MAX,
    TimestepProfile,
    sae_display_name,
    timestep_scope,
)
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.image_sets import LabelledImages

DENSE_THRESHOLD = 0.1
"""A latent firing on more than this fraction of a bucket's tokens counts as dense."""


@torch.no_grad()
def reconstruct(sae, x: torch.Tensor, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction [rows, d_in], latent activations [rows, d_sae]) of rows `x` at `timestep` [rows]."""
    with timestep_scope(sae, timestep):
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
        """One line for reports, e.g. "dead 12 of 1536 latents (0.8%), dense 0 (0.0%) on 102400 rows"."""
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


# ------------------------------------------------------------------------------------------------
# The held-out pass: images noised to every bucket, run through the model clean, spliced and ablated.

BRANCH_NAMES = ("cond", "uncond")


@dataclass
class HeldoutPass:
    """Held-out images noised (the scheduler's own `add_noise`) to one random timestep per image and
    bucket, run through the transformer once per CFG branch (cond = the image's class, uncond = the
    null class). Built once per backbone and hook; every SAE scored against it sees the same noise.

    Rows are (bucket, branch, image) in that order. `loss_*` is the model's own noise-prediction
    MSE per row: clean, with the hook zero-ablated, and with it mean-ablated (replaced by the
    per-token-position mean over the rows of the same bucket and branch).
    """

    hook_name: str
    edges: tuple[float, ...]
    images: LabelledImages
    noisy: torch.Tensor  # [rows, C, H, W]
    noise: torch.Tensor  # [rows, C, H, W]
    timestep: torch.Tensor  # [rows]
    class_labels: torch.Tensor  # [rows] (the null class on uncond rows)
    bucket: torch.Tensor  # [rows]
    branch: torch.Tensor  # [rows] 0 = cond, 1 = uncond
    image_index: torch.Tensor  # [rows] into `images`
    activation: torch.Tensor  # [rows, tokens, d]
    loss_clean: torch.Tensor  # [rows]
    loss_zero: torch.Tensor  # [rows]
    loss_mean: torch.Tensor  # [rows]

    def groups(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        """(bucket, branch, row mask) for every non-empty group."""
        for b in range(len(self.edges) - 1):
            for br in range(len(BRANCH_NAMES)):
                mask = (self.bucket == b) & (self.branch == br)
                if mask.any():
                    yield b, br, mask


def _noise_losses(pred: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    pred = pred[:, : noise.shape[1]]  # DiTs with learned sigma predict [noise, variance]
    return (pred.float() - noise).pow(2).flatten(1).mean(1)


@torch.no_grad()
def _losses_with(hooked: HookedDiT, hp: HeldoutPass, rows: torch.Tensor, fwd_hooks: list, batch_size: int):
    out = []
    for i in range(0, len(rows), batch_size):
        idx = rows[i : i + batch_size]
        with hooked.hooks(fwd_hooks=fwd_hooks):
            pred = hooked.transformer(hp.noisy[idx], timestep=hp.timestep[idx], class_labels=hp.class_labels[idx])
        out.append(_noise_losses(pred.sample, hp.noise[idx]))
    return torch.cat(out)


@torch.no_grad()
def heldout_pass(
    pipe,
    hooked: HookedDiT,
    hook_name: str,
    images: LabelledImages,
    edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
    seed: int = 0,
    batch_size: int = 256,
) -> HeldoutPass:
    """Noise `images` to one timestep per image in each bucket and record clean/ablated losses at `hook_name`."""
    hooked.check_hook_names([hook_name])
    if len(images) == 0:
        raise ValueError("no held-out images to evaluate on")
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.from_numpy(images.images).float()
    n = len(x0)
    null = getattr(hooked.transformer.config, "num_embeds_ada_norm", None)
    if type(hooked.transformer).__name__ != "DiTTransformer2DModel" or null is None:
        raise ValueError(
            f"the held-out evaluation needs a class-conditional DiT (DiTTransformer2DModel), not "
            f"{type(hooked.transformer).__name__}; text-conditioned backbones are evaluated on harvested rows "
            "with reconstruction_by_bucket"
        )
    noisy, noise, timestep, labels, bucket, branch, index = [], [], [], [], [], [], []
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        t = torch.randint(int(lo), max(int(hi), int(lo) + 1), (n,), generator=gen).clamp_max(int(TIMESTEP_MAX) - 1)
        eps = torch.randn(x0.shape, generator=gen)
        xt = pipe.scheduler.add_noise(x0, eps, t)
        for br in range(len(BRANCH_NAMES)):
            y = torch.from_numpy(images.labels).long() if br == 0 else torch.full((n,), null, dtype=torch.long)
            noisy.append(xt), noise.append(eps), timestep.append(t), labels.append(y)
            bucket.append(torch.full((n,), b)), branch.append(torch.full((n,), br)), index.append(torch.arange(n))
    device, dtype = hooked.transformer.device, hooked.transformer.dtype
    hp = HeldoutPass(
        hook_name,
        tuple(float(e) for e in edges),
        images,
        torch.cat(noisy).to(device, dtype),
        torch.cat(noise).to(device),
        torch.cat(timestep).to(device),
        torch.cat(labels).to(device),
        torch.cat(bucket),
        torch.cat(branch),
        torch.cat(index),
        torch.empty(0),
        torch.empty(0),
        torch.empty(0),
        torch.empty(0),
    )
    rows = torch.arange(len(hp.timestep))
    captured: list[torch.Tensor] = []
    hp.loss_clean = _losses_with(
        hooked, hp, rows, [(hook_name, lambda a, hook: captured.append(a.float().cpu()))], batch_size
    )
    hp.activation = torch.cat(captured)
    hp.loss_zero = _losses_with(hooked, hp, rows, [(hook_name, lambda a, hook: torch.zeros_like(a))], batch_size)
    hp.loss_mean = torch.empty_like(hp.loss_clean)
    for _, _, mask in hp.groups():
        mean = hp.activation[mask].mean(0).to(device, dtype)  # [tokens, d]
        hp.loss_mean[mask] = _losses_with(
            hooked, hp, mask.nonzero().squeeze(1), [(hook_name, lambda a, hook, m=mean: m.expand_as(a))], batch_size
        )
    return hp


def _recovered(ablated: float, spliced: float, clean: float) -> float:
    gap = ablated - clean
    return float("nan") if gap == 0 else (ablated - spliced) / gap


@torch.no_grad()
def spliced_denoising(sae, hooked: HookedDiT, hp: HeldoutPass, batch_size: int = 256) -> list[dict[str, Any]]:
    """Per bucket and branch: the model's loss with `sae` replacing the hook (no error term), and the
    denoising loss recovered against zero- and mean-ablation: (L_ablated - L_spliced) / (L_ablated - L_clean)."""
    with hooked.saes([sae], use_error_term=False):
        spliced = _losses_with(hooked, hp, torch.arange(len(hp.timestep)), [], batch_size)
    out = []
    for b, br, mask in hp.groups():
        clean, zero, mean, spl = (float(v[mask].mean()) for v in (hp.loss_clean, hp.loss_zero, hp.loss_mean, spliced))
        out.append(
            {
                "t_low": hp.edges[b],
                "t_high": hp.edges[b + 1],
                "branch": BRANCH_NAMES[br],
                "loss_clean": clean,
                "loss_spliced": spl,
                "loss_zero_ablated": zero,
                "loss_mean_ablated": mean,
                "recovered_vs_zero": _recovered(zero, spl, clean),
                "recovered_vs_mean": _recovered(mean, spl, clean),
            }
        )
    return out


@torch.no_grad()
def heldout_reconstruction(sae, hp: HeldoutPass) -> list[dict[str, Any]]:
    """`bucket_metrics` of `sae` on the held-out pass's activations, per bucket and CFG branch (all tokens)."""
    out = []
    for b, br, mask in hp.groups():
        x = hp.activation[mask]  # [images, tokens, d]
        t = hp.timestep[mask].cpu().repeat_interleave(x.shape[1]).float()
        x = x.flatten(0, 1).to(sae.device, sae.dtype)
        x_hat, acts = reconstruct(sae, x, t.to(sae.device))
        metrics = bucket_metrics(x.cpu(), x_hat.cpu(), acts.cpu(), hp.edges[b], hp.edges[b + 1])
        out.append({**metrics.to_dict(), "branch": BRANCH_NAMES[br]})
    return out


# ------------------------------------------------------------------------------------------------
# Spliced generation: samples of the same seeds with and without the SAE in the loop.


def sample_images(
    pipe,
    labels: Sequence[int],
    seed: int,
    num_inference_steps: int = 50,
    guidance_scale: float | None = None,
    batch_size: int = 100,
) -> np.ndarray:
    """Pipeline `np` output [n, H, W, C] in [0, 1]; image i always gets the noise of (seed, i // batch_size)."""
    parts = []
    for i in range(0, len(labels), batch_size):
        gen = torch.Generator().manual_seed(seed * 100_003 + i)
        kwargs = {} if guidance_scale is None else {"guidance_scale": guidance_scale}
        parts.append(
            pipe(
                class_labels=list(labels[i : i + batch_size]),
                num_inference_steps=num_inference_steps,
                generator=gen,
                output_type="np",
                **kwargs,
            ).images
        )
    return np.concatenate(parts)


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
    """Sample `labels` with `sae` spliced in and compare with `clean` (same seed) and `reference` (another seed)."""
    with hooked.saes([sae], use_error_term=False):
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


# ------------------------------------------------------------------------------------------------
# Ground-truth factors and probes: image-level features per bucket, scored against known values.

AUROC_TARGET = 0.9
MAX_COMBINED = 64
"""The largest number of latents combined when counting how many reach AUROC_TARGET."""


def auroc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUROC of every column of scores [n, f] for the boolean labels [n] (ties count one half)."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative examples")
    ranks = rankdata(scores, axis=0)
    return (ranks[positive].sum(0) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def factor_value_scores(
    features: np.ndarray, positive: np.ndarray, ids: np.ndarray | None = None
) -> dict[str, float | int | None]:
    """Best single feature's AUROC for one factor value (either sign), which feature, and how many of the
    best features (ranked by AUROC, standardised, summed with their signs) reach AUROC_TARGET (None: never)."""
    if features.shape[1] == 0:  # e.g. an SAE none of whose latents fires in this bucket
        return {"best_auroc": 0.5, "best_feature": None, "features_to_target": None}
    raw = auroc(features, positive)
    best_sign = np.where(raw >= 0.5, 1.0, -1.0)
    oriented = np.maximum(raw, 1.0 - raw)
    order = np.argsort(-oriented, kind="stable")[:MAX_COMBINED]
    z = (features[:, order] - features[:, order].mean(0)) / (features[:, order].std(0) + 1e-12)
    combined = np.cumsum(z * best_sign[order], axis=1)
    reach = np.nonzero(auroc(combined, positive) >= AUROC_TARGET)[0]
    best = int(order[0]) if ids is None else int(ids[order[0]])
    return {
        "best_auroc": float(oriented[order[0]]),
        "best_feature": best,
        "features_to_target": int(reach[0]) + 1 if len(reach) else None,
    }


def factor_scores(
    features: np.ndarray, factors: dict[str, np.ndarray], ids: np.ndarray | None = None
) -> dict[str, dict[str, dict]]:
    """`factor_value_scores` for every value of every factor family present with both outcomes; `ids` names
    the columns of `features` (default 0..f-1)."""
    out: dict[str, dict[str, dict]] = {}
    for family, values in factors.items():
        out[family] = {
            str(v): factor_value_scores(features, values == v, ids)
            for v in np.unique(values)
            if 0 < (values == v).sum() < len(values)
        }
    return out


def probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Held-out accuracy of a logistic-regression probe (half the images train it, stratified)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.unique(labels, return_counts=True)[1]
    if features.shape[1] == 0:  # no information: the best guess is the most common class
        return float(counts.max() / counts.sum())
    if counts.min() < 2:
        raise ValueError(f"a class probe needs at least 2 images per class, got {counts.min()}: raise num_images")
    x_tr, x_te, y_tr, y_te = train_test_split(features, labels, test_size=0.5, random_state=seed, stratify=labels)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    return float(probe.fit(x_tr, y_tr).score(x_te, y_te))


@torch.no_grad()
def interpretability_by_bucket(sae, hp: HeldoutPass, seed: int = 0) -> list[dict[str, Any]]:
    """Per bucket, on cond rows, image-level (token-mean) features of three kinds scored against every known
    factor: the SAE's latents, the raw neurons, and a random rotation of the raw activations (a basis with no
    reason to align with anything). Also the class probe accuracy from latents and from raw activations."""
    gen = torch.Generator().manual_seed(seed)
    d = hp.activation.shape[-1]
    rotation = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0]
    out = []
    for b, br, mask in hp.groups():
        if br != 0:
            continue
        x = hp.activation[mask]  # [images, tokens, d]
        images = hp.image_index[mask].numpy()
        t = hp.timestep[mask].cpu().repeat_interleave(x.shape[1]).float()
        latents = reconstruct(sae, x.flatten(0, 1).to(sae.device, sae.dtype), t.to(sae.device))[1]
        pooled = {
            "sae": latents.view(len(x), x.shape[1], -1).mean(1).double().cpu().numpy(),
            "neurons": x.mean(1).double().numpy(),
            "rotation": (x.mean(1).double() @ rotation).numpy(),
        }
        alive = np.nonzero(pooled["sae"].std(0) > 0)[0]  # latents silent on every image score 0.5: skip them
        factors = {k: v[images] for k, v in hp.images.factors.items()}
        labels = hp.images.labels[images]
        out.append(
            {
                "t_low": hp.edges[b],
                "t_high": hp.edges[b + 1],
                "factors": {
                    kind: factor_scores(f[:, alive], factors, alive) if kind == "sae" else factor_scores(f, factors)
                    for kind, f in pooled.items()
                },
                "probe_accuracy": {
                    "sae": probe_accuracy(pooled["sae"][:, alive], labels, seed),
                    "neurons": probe_accuracy(pooled["neurons"], labels, seed),
                },
            }
        )
    return out


def summarize_factors(bucket: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per feature kind and factor family: mean best AUROC over the family's values, and the share of
    values some combination of at most MAX_COMBINED features separates at AUROC_TARGET."""
    out: dict[str, dict[str, float]] = {}
    for kind, families in bucket["factors"].items():
        for family, values in families.items():
            scores = list(values.values())
            out.setdefault(family, {})[f"{kind}_best_auroc"] = float(np.mean([s["best_auroc"] for s in scores]))
            needed = [s["features_to_target"] for s in scores if s["features_to_target"] is not None]
            out[family][f"{kind}_median_features_to_target"] = float(np.median(needed)) if needed else float("nan")
    return out


# ------------------------------------------------------------------------------------------------
# The whole protocol for one or more SAEs, and its report.


@dataclass
class EvalConfig:
    """Settings of `evaluate` and `sae-lens-dit eval` (field docstrings are the CLI help)."""

    num_images: int = 128
    """Held-out images of the backbone's own held-out split (bundled backbones), noised into every bucket."""
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


def evaluate(
    saes: Sequence, cfg: EvalConfig | None = None, images: LabelledImages | None = None
) -> list[dict[str, Any]]:
    """The evaluation protocol for each SAE (see the module docstring), as JSON-ready dicts.

    SAEs name their backbone (`cfg.metadata.model_name`) and hook; SAEs of one backbone share its
    held-out pass and clean samples. `images` overrides the held-out images (needed for backbones
    that are not bundled).
    """
    from sae_lens_dit.toy.backbones import TINY_DIT_NAMES, load_pipeline, load_tiny_classifier
    from sae_lens_dit.toy.image_sets import training_split

    cfg = cfg or EvalConfig()
    reports: list[dict[str, Any]] = []
    by_model: dict[str, list] = {}
    for sae in saes:
        model = getattr(sae.cfg.metadata, "model_name", None)
        if not model or not sae.cfg.metadata.hook_name:
            raise ValueError(f"SAE {sae_display_name(sae)} does not name its model and hook in cfg.metadata; set them")
        by_model.setdefault(model, []).append(sae)
    for model, group in by_model.items():
        name = model.removeprefix("tiny-dit-")
        if images is None and name not in TINY_DIT_NAMES:
            raise ValueError(f"no held-out images known for model {model!r}: pass images= (LabelledImages)")
        held = (images or training_split(name, seed=0)[1]).take(cfg.num_images)
        pipe = load_pipeline(model, device=cfg.device)
        hooked = HookedDiT(pipe.transformer)
        hooked.check_hook_names([s.cfg.metadata.hook_name for s in group])
        for sae in group:  # the held-out evaluation runs DiTs, whose every hook is d_model wide
            if sae.cfg.d_in != hooked.d_model:
                raise ValueError(
                    f"SAE {sae_display_name(sae)} has d_in={sae.cfg.d_in} but {model!r}'s hooks are "
                    f"{hooked.d_model}-dimensional: it was not trained on this backbone"
                )
        passes = {
            h: heldout_pass(pipe, hooked, h, held, cfg.edges, cfg.seed, cfg.batch_size)
            for h in dict.fromkeys(s.cfg.metadata.hook_name for s in group)
        }
        labels = [int(c) for c in np.resize(np.unique(held.labels), cfg.num_samples)]
        if cfg.num_samples:
            classifier = load_tiny_classifier(name) if name in TINY_DIT_NAMES else None
            if classifier is None:
                raise ValueError(f"spliced generation needs a classifier for {model!r}; set num_samples=0")
            features = torchscript_features(cfg.fid_features) if cfg.fid_features else None
            sampling = (cfg.num_inference_steps, cfg.guidance_scale)
            clean = sample_images(pipe, labels, cfg.seed, *sampling)
            reference = sample_images(pipe, labels, cfg.seed + 1, *sampling)
        for sae in group:
            sae.to(cfg.device)
            hp = passes[sae.cfg.metadata.hook_name]
            cond = hp.branch == 0
            rows = hp.activation[cond].flatten(0, 1)
            stats = latent_timestep_stats(
                sae,
                rows.to(sae.device, sae.dtype),
                hp.timestep[cond].cpu().repeat_interleave(hp.activation.shape[1]).float(),
                cfg.edges,
            )
            report: dict[str, Any] = {
                "sae": sae_display_name(sae),
                "model": model,
                "hook": sae.cfg.metadata.hook_name,
                "architecture": sae.cfg.architecture(),
                "d_sae": sae.cfg.d_sae,
                "heldout_images": len(held),
                "seed": cfg.seed,
                "reconstruction": heldout_reconstruction(sae, hp),
                "denoising": spliced_denoising(sae, hooked, hp, cfg.batch_size),
                "timestep_profile": {p: stats.profile().count(p) for p in PROFILES},
                "latent_usage": latent_usage(
                    sae,
                    hp.activation.flatten(0, 1).to(sae.device, sae.dtype),
                    hp.timestep.cpu().repeat_interleave(hp.activation.shape[1]).float(),
                ).to_dict(),
                "latent_stats": stats.to_dict(),
            }
            if cfg.num_samples:
                report["generation"] = spliced_generation(
                    sae,
                    pipe,
                    hooked,
                    labels,
                    clean,
                    reference,
                    classifier,
                    features,
                    cfg.seed,
                    cfg.num_inference_steps,
                    cfg.guidance_scale,
                ).to_dict()
            if cfg.factors:
                report["interpretability"] = interpretability_by_bucket(sae, hp, cfg.seed)
            reports.append(report)
    return reports


def _bucket_label(row: dict[str, Any]) -> str:
    return f"{row['t_low']:.0f}-{row['t_high']:.0f}"


def format_report(report: dict[str, Any]) -> str:
    """Markdown (and terminal) tables of one `evaluate` report."""
    lines = [
        f"### {report['sae']} on {report['model']} ({report['heldout_images']} held-out images)",
        "",
        "| t bucket | branch | explained var | cosine | L0 | dead | dense | loss recovered (zero) | "
        "loss recovered (mean) |",
        "|" + "---|" * 9,
    ]
    for rec, den in zip(report["reconstruction"], report["denoising"], strict=True):
        lines.append(
            f"| {_bucket_label(rec)} | {rec['branch']} | {rec['explained_variance']:.4f} | {rec['cosine']:.4f} | "
            f"{rec['l0']:.1f} | {rec['dead_latents']} | {rec['dense_latents']} | {den['recovered_vs_zero']:.4f} | "
            f"{den['recovered_vs_mean']:.4f} |"
        )
    profile = report["timestep_profile"]
    lines += ["", "Latent timestep profiles: " + ", ".join(f"{k} {v}" for k, v in profile.items())]
    if "latent_usage" in report:
        u = report["latent_usage"]
        lines.append(
            f"Latents over every held-out row (all buckets, both CFG branches): "
            f"{LatentUsage(u['rows'], u['d_sae'], u['dead'], u['dense']).summary()}"
        )
    if "generation" in report:
        g = report["generation"]
        lines.append(
            f"Spliced generation ({g['samples']} samples): pixel MSE {g['pixel_mse']:.4g}, classifier agreement "
            f"{g['classifier_agreement']:.3f}, on-class {g['on_class_clean']:.3f} -> {g['on_class_spliced']:.3f}, "
            f"Frechet distance {g['frechet_distance']:.3f} (noise floor {g['frechet_floor']:.3f})"
        )
    if "interpretability" in report:
        lines += [
            "",
            "| t bucket | factor | best AUROC: SAE | neurons | rotation | latents to 0.9: SAE | neurons | "
            "rotation | class probe: SAE | neurons |",
            "|" + "---|" * 10,
        ]
        for bucket in report["interpretability"]:
            probe = bucket["probe_accuracy"]
            for family, s in summarize_factors(bucket).items():
                lines.append(
                    f"| {_bucket_label(bucket)} | {family} | {s['sae_best_auroc']:.3f} | {s['neurons_best_auroc']:.3f}"
                    f" | {s['rotation_best_auroc']:.3f} | {s['sae_median_features_to_target']:g} | "
                    f"{s['neurons_median_features_to_target']:g} | {s['rotation_median_features_to_target']:g} | "
                    f"{probe['sae']:.3f} | {probe['neurons']:.3f} |"
                )
    return "\n".join(lines)


def plot_reports(
    reports: Sequence[dict[str, Any]], out_dir: str | Path, labels: Sequence[str] | None = None
) -> list[Path]:
    """PNG plots of each metric against the timestep (cond branch), one line per report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = list(labels or [r["sae"] for r in reports])
    mid = lambda row: (row["t_low"] + row["t_high"]) / 2  # noqa: E731
    panels = [
        ("explained_variance", "reconstruction", "explained_variance", "explained variance"),
        ("cosine", "reconstruction", "cosine", "cosine similarity"),
        ("loss_recovered", "denoising", "recovered_vs_mean", "denoising loss recovered (vs mean ablation)"),
    ]
    paths = []
    for filename, section, key, ylabel in panels:
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        for report, label in zip(reports, labels, strict=True):
            rows = [r for r in report[section] if r["branch"] == "cond"]
            ax.plot([mid(r) for r in rows], [r[key] for r in rows], marker="o", label=label)
        ax.set_xlabel("timestep (1000 = noise)")
        ax.set_ylabel(ylabel)
        ax.invert_xaxis()
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out_dir / f"{filename}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths
