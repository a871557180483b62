"""Ground-truth factors and probes: image-level features per timestep bucket, scored against the
known factors of the held-out images (class, and for the shapes backbone hue, size and position).

Why its own module: "are the latents interpretable" needs a reference, so the SAE's latents are
scored next to the raw neurons and a random rotation of the raw activations (a basis with no reason
to align with anything), by single-feature AUROC, by how many features it takes to separate a
factor value, and by a class probe.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sae_lens_dit.analysis.evals.denoising import HeldoutPass
from sae_lens_dit.analysis.evals.reconstruction import reconstruct

AUROC_TARGET = 0.9
"""The AUROC at which a feature (or a sum of features) counts as separating a factor value."""
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
