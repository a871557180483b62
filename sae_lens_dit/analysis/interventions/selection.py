"""Which latents carry a concept: selectivity against the rest, on the tokens where it lives, per timestep.

Why this module exists: latents chosen by how strongly they fire are the wrong ones to steer with.
A reference image's most active latents are largely those of its shape, or ones every image uses;
adding them moves little and destroys what should be kept. What moves a concept is the latents
*selective* for it: higher on the target set (images of hue bin 2, the tokens inside a box, a class)
than on the rest, measured on the tokens where the concept is (a gate), bucket by bucket along the
denoising trajectory, minus those more selective for a factor the edit must keep (`avoid`, e.g. the
shape). A `LatentSelection` also stores each latent's typical active value (a percentile of its
non-zero codes on the target), so strengths are given in units a user can reason about ("clamp at
1.5x typical") instead of raw code values that differ per latent and per SAE.

Rows come from `selection_rows` (re-exported here): `record_samples` (recorded generations, with an `image`
column), `record_contrast` (two user-given sets of class ids or prompts) or `record_noised` (labelled real
images noised by the scheduler to each timestep bucket); targets are
given per image (`target_images`) or per row (`target_rows`, e.g. a box). Scores: `mean_diff` (mean
code of the target groups minus the rest's) or `auroc` (how well a latent's mean code on a group
separates target groups from the rest, 0.5 = chance), both averaged over timestep buckets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from sae_lens import SAE
from torch import Tensor

from sae_lens_dit.analysis.evals import bucket_masks
from sae_lens_dit.analysis.interventions.selection_rows import (  # noqa: F401 (re-exported)
    record_contrast,
    record_noised,
    record_samples,
)
from sae_lens_dit.conventions import DEFAULT_BUCKET_EDGES, timestep_scope
from sae_lens_dit.guards.config import check_keys

Method = Literal["mean_diff", "auroc"]
METHODS: tuple[str, ...] = get_args(Method)
TYPICAL_PERCENTILE = 50.0
"""Default percentile of a latent's non-zero codes (on the target) that `typical` reports."""


def chance_score(method: Method) -> float:
    """The score of a latent that does not tell target from rest: 0 for mean_diff, 0.5 for auroc."""
    return 0.5 if method == "auroc" else 0.0


@dataclass(frozen=True)
class LatentSelection:
    """Latents selective for a target at one hook, most selective first, with what steering needs to use them."""

    hook: str
    latents: tuple[int, ...]
    typical: tuple[float, ...]
    """Per chosen latent: its typical active value (a percentile of its non-zero codes on target rows)."""
    score: tuple[float, ...]
    """Per chosen latent: the selectivity score it was ranked by (mean over the buckets used)."""
    bucket_score: tuple[tuple[float, ...], ...]
    """[buckets][chosen latents] score per timestep bucket of `edges` (nan where a bucket had no rows)."""
    edges: tuple[float, ...] = DEFAULT_BUCKET_EDGES
    method: Method = "mean_diff"
    excluded: tuple[int, ...] = ()
    """Latents that would have been chosen but are more selective for a factor to keep (`avoid`)."""
    window: tuple[float, float] | None = None
    """Timestep window where an edit with these latents takes hold (`windows.auto_window`), if measured."""
    commitment: tuple[float, ...] | None = None
    """Per bucket: the factor's measured response to an edit confined to that bucket (`windows.commitment_curve`)."""
    all_scores: Tensor | None = field(default=None, compare=False, repr=False)
    """[d_sae] score of every latent (not saved)."""

    def with_window(self, window: tuple[float, float], commitment: Sequence[float] | None = None) -> LatentSelection:
        measured = None if commitment is None else tuple(map(float, commitment))
        return LatentSelection(
            **{**self.__dict__, "window": (float(window[0]), float(window[1])), "commitment": measured}
        )

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "all_scores"}
        return json.loads(json.dumps(out, allow_nan=True))  # tuples -> lists

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatentSelection:
        allowed = {f for f in cls.__dataclass_fields__ if f != "all_scores"}
        check_keys(data, allowed, "latent selection")
        out = dict(data)
        for key in ("latents", "typical", "score", "edges", "excluded", "window", "commitment"):
            if out.get(key) is not None:
                out[key] = tuple(out[key])
        out["bucket_score"] = tuple(tuple(b) for b in out.get("bucket_score", ()))
        return cls(**out)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatentSelection:
        from sae_lens_dit.guards.config import read_config_file

        try:
            return cls.from_dict(read_config_file(Path(path), "latent selection"))
        except (TypeError, ValueError) as err:
            raise ValueError(f"latent selection {path}: {err}") from None


# ------------------------------------------------------------------------------------------------
# Scores.


@dataclass(frozen=True)
class _GroupStats:
    sums: Tensor  # [groups, buckets, d_sae] float64, sum of codes over gated rows
    rows: Tensor  # [groups, buckets] float64, gated rows


@torch.no_grad()
def encode_rows(sae: SAE, rows: Mapping[str, Tensor], batch_size: int = 8192) -> Iterator[tuple[slice, Tensor]]:
    """Yield (slice, codes [rows, d_sae]) over `rows` in batches; TIDE SAEs get each row's timestep."""
    x, t = rows["activation"], rows["timestep"]
    for i in range(0, len(x), batch_size):
        part = slice(i, i + batch_size)
        with timestep_scope(sae, t[part].to(sae.device)):
            yield part, sae.encode(x[part].to(sae.device, sae.dtype)).double().cpu()


def _group_stats(
    sae: SAE, rows: Mapping[str, Tensor], groups: Tensor, n_groups: int, gate: Tensor | None, edges: Sequence[float]
) -> _GroupStats:
    masks = torch.stack(bucket_masks(rows["timestep"], edges), 1)  # [R, buckets]
    bucket = masks.float().argmax(1)
    keep = masks.any(1) if gate is None else masks.any(1) & gate
    cell = groups * masks.shape[1] + bucket  # [R]
    sums = torch.zeros(n_groups * masks.shape[1], sae.cfg.d_sae, dtype=torch.float64)
    counts = torch.zeros(n_groups * masks.shape[1], dtype=torch.float64)
    for part, codes in encode_rows(sae, rows):
        k = keep[part]
        sums.index_add_(0, cell[part][k], codes[k])
        counts.index_add_(0, cell[part][k], torch.ones(int(k.sum()), dtype=torch.float64))
    return _GroupStats(sums.view(n_groups, masks.shape[1], -1), counts.view(n_groups, masks.shape[1]))


def _scores(stats: _GroupStats, target: Tensor, rest: Tensor, method: Method) -> Tensor:
    """[buckets, d_sae] score per bucket (nan where either side has no group with rows)."""
    means = stats.sums / stats.rows.clamp_min(1)[..., None]  # [groups, buckets, d_sae]
    present = stats.rows > 0  # [groups, buckets]
    out = torch.full(means.shape[1:], float("nan"), dtype=torch.float64)
    for b in range(means.shape[1]):
        pos, neg = means[target & present[:, b], b], means[rest & present[:, b], b]
        if not len(pos) or not len(neg):
            continue
        if method == "mean_diff":
            out[b] = pos.mean(0) - neg.mean(0)
        else:  # AUROC via the rank-sum (Mann-Whitney U) statistic, ties counted half
            both = torch.cat([pos, neg])
            ranks = _average_ranks(both)
            out[b] = (ranks[: len(pos)].sum(0) - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
    return out


def _average_ranks(values: Tensor) -> Tensor:
    """Ranks (1-based, ties averaged) of each column of [n, d]."""
    order = values.argsort(dim=0, stable=True)  # `stable` is keyword-only: argsort(0, stable=True) raises
    ranks = torch.empty_like(values)
    ranks.scatter_(0, order, torch.arange(1, len(values) + 1, dtype=values.dtype)[:, None].expand_as(values))
    for j in range(values.shape[1]):  # ties: only columns that have any
        column = values[:, j]
        unique, inverse, counts = torch.unique(column, return_inverse=True, return_counts=True)
        if len(unique) < len(column):
            sums = torch.zeros(len(unique), dtype=values.dtype).index_add_(0, inverse, ranks[:, j])
            ranks[:, j] = (sums / counts)[inverse]
    return ranks


def _top(score: Tensor, n: int, floor: float) -> list[int]:
    """Indices of the `n` highest scores, highest first, keeping only those above `floor`."""
    return [int(i) for i in torch.argsort(score, descending=True, stable=True)[:n] if score[i] > floor]


def _selection(
    sae: SAE,
    chosen: list[int],
    typical: tuple[float, ...],
    score: Tensor,
    per_bucket: Tensor,
    edges: Sequence[float],
    **extra: Any,
) -> LatentSelection:
    """The `LatentSelection` of `chosen` latents, with their scores taken from `score` [d_sae] and
    `per_bucket` [buckets, d_sae], plus `extra` fields."""
    return LatentSelection(
        hook=sae.cfg.metadata.hook_name,
        latents=tuple(chosen),
        typical=typical,
        score=tuple(float(score[i]) for i in chosen),
        bucket_score=tuple(tuple(float(per_bucket[b, i]) for i in chosen) for b in range(per_bucket.shape[0])),
        edges=tuple(float(e) for e in edges),
        all_scores=score,
        **extra,
    )


def select_latents(
    sae: SAE,
    rows: Mapping[str, Tensor],
    n: int,
    *,
    target_images: Any = None,
    target_rows: Any = None,
    rest_images: Any = None,
    gate: Tensor | None = None,
    avoid: Mapping[str, Any] | None = None,
    method: Method = "mean_diff",
    buckets: Sequence[int] | None = None,
    edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
    percentile: float = TYPICAL_PERCENTILE,
) -> LatentSelection:
    """The `n` latents of `sae` most selective for a target, excluding those more selective for factors to keep.

    Target: `target_images` (a bool per image of the rows' `image` column; the rest are the other
    images, or only `rest_images`) or `target_rows` (a bool per row, e.g. tokens inside a box; each
    image then contributes a target and a rest group). Only rows where `gate` (bool per row) holds
    count. Per timestep bucket of `edges`, each group's mean code is taken, then `method` contrasts
    target groups with the rest; the score is the mean over `buckets` (default all with rows).
    `avoid` maps a factor name to a label per image (e.g. {"shape": shape_of_image}): a latent whose
    best score for any value of such a factor (that value's images vs the others) reaches its target
    score is excluded. Only latents with a positive score (above 0.5 for auroc) are returned.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, received {method!r}")
    if (target_images is None) == (target_rows is None):
        raise ValueError("select_latents takes one of target_images (a bool per image) or target_rows (per row)")
    gate = None if gate is None else torch.as_tensor(gate, dtype=torch.bool)
    if target_rows is not None:
        flag = torch.as_tensor(np.asarray(target_rows), dtype=torch.bool)
        if len(flag) != len(rows["activation"]):
            raise ValueError(f"target_rows has {len(flag)} entries for {len(rows['activation'])} rows")
        image = rows["image"] if "image" in rows else torch.zeros(len(flag), dtype=torch.long)
        n_images = int(image.max()) + 1
        groups, n_groups = image * 2 + flag.long(), n_images * 2
        target = torch.arange(n_groups) % 2 == 1
        rest = ~target
        group_image = torch.arange(n_groups) // 2
    else:
        if "image" not in rows:
            raise ValueError("target_images needs rows with an `image` column (record_samples / record_noised)")
        target = torch.as_tensor(np.asarray(target_images), dtype=torch.bool)
        n_groups = len(target)
        if int(rows["image"].max()) >= n_groups:
            raise ValueError(
                f"target_images has {n_groups} entries but rows come from {int(rows['image'].max()) + 1} images"
            )
        rest = ~target if rest_images is None else torch.as_tensor(np.asarray(rest_images), dtype=torch.bool) & ~target
        groups, group_image = rows["image"], torch.arange(n_groups)
    if not target.any() or not rest.any():
        raise ValueError(
            f"select_latents needs target and rest groups, received {int(target.sum())} target and "
            f"{int(rest.sum())} rest"
        )
    stats = _group_stats(sae, rows, groups, n_groups, gate, edges)
    per_bucket = _scores(stats, target, rest, method)
    use = (
        torch.ones(per_bucket.shape[0], dtype=torch.bool)
        if buckets is None
        else torch.zeros(per_bucket.shape[0], dtype=torch.bool).index_fill_(0, torch.tensor(list(buckets)), True)
    )
    use &= ~per_bucket.isnan().all(1)
    if not use.any():
        raise ValueError(
            f"no timestep bucket holds both target and rest rows; rows per bucket: {stats.rows.sum(0).tolist()}"
        )
    score = per_bucket[use].nanmean(0)
    floor = chance_score(method)
    excluded: list[int] = []
    if avoid:
        kept_best = torch.full_like(score, -float("inf"))
        for labels in avoid.values():
            codes = np.unique(np.asarray(labels), return_inverse=True)[1].reshape(-1)  # any label type -> 0..k-1
            labels = torch.as_tensor(codes)[group_image]
            for value in labels.unique():
                other = _scores(stats, labels == value, labels != value, method)[use].nanmean(0)
                kept_best = torch.maximum(kept_best, other)
        blocked = kept_best >= score
        ranked = _top(score, len(score), floor)
        excluded = [i for i in ranked[:n] if blocked[i]]
        chosen = [i for i in ranked if not blocked[i]][:n]
    else:
        chosen = _top(score, n, floor)
    typical = typical_values(sae, rows, chosen, _row_mask(groups, target, gate), percentile)
    return _selection(sae, chosen, typical, score, per_bucket, edges, method=method, excluded=tuple(excluded))


def _row_mask(groups: Tensor, target: Tensor, gate: Tensor | None) -> Tensor:
    mask = target[groups]
    return mask if gate is None else mask & gate


@torch.no_grad()
def typical_values(
    sae: SAE,
    rows: Mapping[str, Tensor],
    latents: Sequence[int],
    where: Tensor | None = None,
    percentile: float = TYPICAL_PERCENTILE,
) -> tuple[float, ...]:
    """Per latent: the `percentile` of its non-zero codes over rows `where` (all rows if None); 0 if it never fires."""
    if not latents:
        return ()
    subset = rows if where is None else {"activation": rows["activation"][where], "timestep": rows["timestep"][where]}
    values = torch.cat([codes[:, list(latents)] for _, codes in encode_rows(sae, subset)])  # [rows, latents]
    out = []
    for j in range(len(latents)):
        active = values[:, j][values[:, j] > 0]
        out.append(float(torch.quantile(active, percentile / 100.0)) if len(active) else 0.0)
    return tuple(out)


def latents_for_bucket(
    sae: SAE,
    rows: Mapping[str, Tensor],
    bucket: int,
    n: int,
    edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
    percentile: float = TYPICAL_PERCENTILE,
) -> LatentSelection:
    """Latents that fire more in timestep bucket `bucket` ([edges[b], edges[b+1])) than in the others on average
    (mean code in the bucket minus the mean of the other buckets' mean codes)."""
    if not 0 <= bucket < len(edges) - 1:
        raise ValueError(f"bucket must be in 0..{len(edges) - 2} for edges {list(edges)}, received {bucket}")
    one_group = torch.zeros(len(rows["activation"]), dtype=torch.long)
    stats = _group_stats(sae, rows, one_group, 1, None, edges)
    means, present = stats.sums[0] / stats.rows[0].clamp_min(1)[:, None], stats.rows[0] > 0
    others = [b for b in range(len(edges) - 1) if b != bucket and present[b]]
    if not present[bucket] or not others:
        raise ValueError(
            f"latents_for_bucket needs rows in bucket {bucket} and in another bucket; rows per bucket: "
            f"{stats.rows[0].tolist()}"
        )
    per_bucket = torch.full_like(means, float("nan"))  # per bucket b: mean code in b minus the others' mean
    for b in range(len(edges) - 1):
        rest = [o for o in range(len(edges) - 1) if o != b and present[o]]
        if present[b] and rest:
            per_bucket[b] = means[b] - means[rest].mean(0)
    score = per_bucket[bucket].clone()
    chosen = _top(score, n, 0.0)
    where = bucket_masks(rows["timestep"], edges)[bucket]
    return _selection(sae, chosen, typical_values(sae, rows, chosen, where, percentile), score, per_bucket, edges)


@dataclass(frozen=True)
class CodeCentroids:
    """The mean SAE code of each value of a factor (e.g. each hue bin), per timestep bucket, at one hook: what
    `recipes.match_centroids` compares a reference with. Unlike a selection's few latents, it reads the whole
    code, so a value is told apart by every latent that differs between values."""

    hook: str
    values: tuple[Any, ...]
    means: Tensor
    """[buckets, values, d_sae] float64; nan where a value has no row in a bucket."""
    edges: tuple[float, ...] = DEFAULT_BUCKET_EDGES


def code_centroids(
    sae: SAE,
    rows: Mapping[str, Tensor],
    image_values: Any,
    gate: Tensor | None = None,
    edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
) -> CodeCentroids:
    """Mean code of each value of `image_values` (one label per image of the rows' `image` column), per
    timestep bucket of `edges`, over the rows where `gate` (bool per row, e.g. the shape's tokens) holds."""
    if "image" not in rows:
        raise ValueError("code_centroids needs rows with an `image` column (record_samples / record_noised)")
    labels = np.asarray(image_values)
    if int(rows["image"].max()) >= len(labels):
        raise ValueError(f"image_values has {len(labels)} entries but rows come from {int(rows['image'].max()) + 1}")
    values, index = np.unique(labels, return_inverse=True)
    groups = torch.as_tensor(index.reshape(-1))[rows["image"]]
    gate = None if gate is None else torch.as_tensor(gate, dtype=torch.bool)
    stats = _group_stats(sae, rows, groups, len(values), gate, edges)
    means = stats.sums / stats.rows[..., None]  # [values, buckets, d_sae]; 0 / 0 = nan where a value has no row
    return CodeCentroids(
        sae.cfg.metadata.hook_name, tuple(v.item() for v in values), means.transpose(0, 1), tuple(edges)
    )
