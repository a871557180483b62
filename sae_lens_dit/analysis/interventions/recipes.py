"""Steering recipes: turn latent selections into edits that visibly work, and rebuild transfer and suppression on them.

Why: the pieces (selective latents, strengths in typical units, per-token gates, timestep windows)
only work together. Measured on the bundled shapes DiT: clamping the latents most selective for a
hue, zeroing the other hues' latents, only on the shape's tokens and only at t in about 300-700,
recolours the shape in 0.9 of samples and keeps it; drop the gate and the background takes the
colour, drop the window and the shape dissolves. This module is where that recipe is written once:

- `selection_edit`: one `LatentEdit` from a `LatentSelection` (values in units of each latent's
  typical active value, a gate, a window or "auto").
- `swap_spec`: steer a factor toward one of its values, given one selection per value: clamp the
  target value's latents, zero the other values' latents (its competitors).
- `encode_reference`, `match_reference`, `match_centroids`, `transfer_spec`: take a reference image's value
  of a factor (its colour) without the rest (its shape): read which value's selection fires most on the
  reference, or which value's mean code (`selection.code_centroids`) its code is closest to, then swap
  toward it. Selections made with `avoid={"shape": ...}` leave shape latents out.
- `suppression_spec`: zero a concept's selective latents, optionally gated and windowed.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sae_lens import SAE
from torch import Tensor

from sae_lens_dit.analysis.interventions.gates import Gate
from sae_lens_dit.analysis.interventions.selection import CodeCentroids, LatentSelection
from sae_lens_dit.analysis.interventions.selection_rows import record_noised
from sae_lens_dit.analysis.interventions.spec import LatentEdit, Operation, SteeringSpec
from sae_lens_dit.analysis.interventions.windows import WindowArg, resolve_window
from sae_lens_dit.conventions import DEFAULT_BUCKET_EDGES, Branch, timestep_scope
from sae_lens_dit.hooking.hooked import HookedDiT


def selection_edit(
    selection: LatentSelection,
    op: Operation = "clamp",
    value: float = 1.0,
    *,
    gate: Gate | None = None,
    window: WindowArg = "auto",
    competitors: Sequence[int] = (),
    box: Sequence[float] | None = None,
    branch: Branch = "both",
) -> LatentEdit:
    """An edit of `selection`'s latents: `value` in units of each latent's typical active value (for add,
    clamp and swap; a plain factor for scale), limited to `gate`, `box` and `window` ("auto": see
    `windows.resolve_window`)."""
    if not selection.latents:
        raise ValueError(f"the selection at {selection.hook} holds no latent (no latent scored above chance)")
    competitors = tuple(i for i in dict.fromkeys(competitors) if i not in selection.latents)
    return LatentEdit(
        selection.hook,
        selection.latents,
        op,
        float(value),
        timesteps=resolve_window(selection, window),
        box=None if box is None else tuple(box),
        branch=branch,
        gate=gate,
        unit="typical",
        typical=selection.typical,
        competitors=competitors if op == "swap" else (),
    )


def swap_spec(
    selections: Mapping[Hashable, LatentSelection],
    toward: Hashable,
    value: float = 1.0,
    *,
    gate: Gate | None = None,
    window: WindowArg = "auto",
    branch: Branch = "both",
) -> SteeringSpec:
    """Steer a factor toward the value `toward`: clamp that value's selected latents at `value` x typical and
    zero the latents selected for the factor's other values, where `gate` holds, in `window`."""
    if toward not in selections:
        raise ValueError(f"no selection for {toward!r}; selections exist for {list(selections)}")
    target = selections[toward]
    rivals = [
        i for key, other in selections.items() if key != toward for i in other.latents if other.hook == target.hook
    ]
    return SteeringSpec(
        (selection_edit(target, "swap", value, gate=gate, window=window, competitors=rivals, branch=branch),)
    )


# ------------------------------------------------------------------------------------------------
# Transfer from a reference image.


@dataclass(frozen=True)
class ReferenceLatents:
    """SAE codes of one reference image noised to one timestep per bucket of `edges`."""

    hook: str
    edges: tuple[float, ...]
    timesteps: Tensor  # [buckets] float32, where the reference was noised to (project convention)
    codes: Tensor  # [buckets, tokens, d_sae]


@torch.no_grad()
def encode_reference(
    pipe: Any,
    hooked: HookedDiT,
    sae: SAE,
    image: Tensor,
    seed: int = 0,
    edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
    **transformer_kwargs: Any,
) -> ReferenceLatents:
    """Noise `image` ([C, H, W] in the pipeline's pixel range [-1, 1]) with the scheduler's own `add_noise`
    to the middle of each timestep bucket, run the transformer once on the batch (extra arguments, e.g.
    class_labels=tensor, go to it) and read the SAE's codes at its hook."""
    kwargs = {k: v[:1] if isinstance(v, Tensor) and v.shape[:1] == (1,) else v for k, v in transformer_kwargs.items()}
    rows = record_noised(pipe, hooked, sae.cfg.metadata.hook_name, image[None], seed=seed, edges=edges, **kwargs)
    buckets, tokens = len(edges) - 1, int(rows["token"].max()) + 1
    order = torch.argsort(rows["timestep"] * (tokens + 1) + rows["token"], stable=True)
    acts = rows["activation"][order].view(buckets, tokens, -1)
    timesteps = rows["timestep"][order].view(buckets, tokens)[:, 0]
    with timestep_scope(sae, timesteps.to(sae.device)):
        codes = sae.encode(acts.to(sae.device, sae.dtype))
    return ReferenceLatents(sae.cfg.metadata.hook_name, tuple(float(e) for e in edges), timesteps, codes.cpu())


def match_reference(
    reference: ReferenceLatents,
    selections: Mapping[Hashable, LatentSelection],
    tokens: Tensor | None = None,
    in_window: bool = True,
) -> tuple[Hashable, dict[Hashable, float]]:
    """Which value's selection fires most on the reference: per value, the mean over its latents of
    (the reference's mean code on `tokens` (all if None) / the latent's typical value), over the buckets
    overlapping the selection's window (`in_window`) or over every bucket, as `select_latents` scores
    them. Returns (best value, every value's score)."""
    codes = reference.codes.double()
    if tokens is not None:
        codes = codes[:, tokens]
    low_edges, high_edges = torch.tensor(reference.edges[:-1]), torch.tensor(reference.edges[1:])
    scores = {}
    for key, selection in selections.items():
        if selection.hook != reference.hook or not selection.latents:
            continue
        window = resolve_window(selection, "auto") if in_window else (-float("inf"), float("inf"))
        use = (low_edges < window[1]) & (high_edges > window[0])  # buckets overlapping the window
        typical = torch.tensor(selection.typical, dtype=torch.float64).clamp_min(1e-6)
        scores[key] = float((codes[use][..., list(selection.latents)].mean((0, 1)) / typical).mean())
    if not scores:
        raise ValueError(f"no selection with latents reads {reference.hook}, the reference's hook")
    return max(scores, key=scores.get), scores


def match_centroids(
    reference: ReferenceLatents, centroids: CodeCentroids, tokens: Tensor | None = None
) -> tuple[Hashable, dict[Hashable, float]]:
    """Which value's mean code the reference's is closest to: per value, the cosine similarity of the
    reference's mean code on `tokens` (all if None) with the value's centroid, summed over the buckets both
    have. Reads the whole code rather than a selection's few latents (on the shapes DiT: the reference's hue
    bin from 0.74 to 0.90 of references, `benchmarks/bench_interventions.py`). Returns (best, every score)."""
    if centroids.hook != reference.hook:
        raise ValueError(f"centroids read {centroids.hook} but the reference was encoded at {reference.hook}")
    if tuple(centroids.edges) != tuple(reference.edges):
        raise ValueError(f"centroid buckets {centroids.edges} differ from the reference's {reference.edges}")
    codes = reference.codes.double()
    mean = (codes if tokens is None else codes[:, tokens]).mean(1)  # [buckets, d_sae]
    similarity = torch.nn.functional.cosine_similarity(mean[:, None], centroids.means, dim=-1)  # [buckets, values]
    scores = {value: float(similarity[:, i].nansum()) for i, value in enumerate(centroids.values)}
    return max(scores, key=scores.get), scores


def transfer_spec(
    reference: ReferenceLatents,
    selections: Mapping[Hashable, LatentSelection],
    value: float = 1.0,
    *,
    gate: Gate | None = None,
    window: WindowArg = "auto",
    branch: Branch = "both",
    centroids: CodeCentroids | None = None,
    tokens: Tensor | None = None,
) -> tuple[SteeringSpec, Hashable]:
    """Give another generation the reference's value of a factor (e.g. its hue) without the rest of it:
    read the value (`match_centroids` when `centroids` are given, else `match_reference` on the selections'
    latents), on the reference's `tokens`, then `swap_spec` toward it. Returns (spec, matched value)."""
    if centroids is not None:
        key, _ = match_centroids(reference, centroids, tokens)
    else:
        key, _ = match_reference(reference, selections, tokens)
    return swap_spec(selections, key, value, gate=gate, window=window, branch=branch), key


def suppression_spec(
    hook: str,
    latents: Sequence[int],
    branch: Branch = "both",
    *,
    gate: Gate | None = None,
    timesteps: tuple[float, float] | None = None,
) -> SteeringSpec:
    """Zero `latents` of the SAE at `hook` (safe generation: pick them with `select_latents` for the concept to
    remove), at every timestep and token unless limited by `timesteps` and `gate`."""
    return SteeringSpec((LatentEdit(hook, tuple(latents), "zero", branch=branch, gate=gate, timesteps=timesteps),))
