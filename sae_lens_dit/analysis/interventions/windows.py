"""When an edit takes hold: commitment curves and automatic timestep windows.

Why: a diffusion model decides different things at different noise levels. On the bundled shapes
DiT the hue of the shape is decided at t in about 300-700: an edit there recolours the shape, an
edit at every step destroys the shape, an edit only at t < 450 changes nothing. So a steering edit
needs a window, and the right window depends on the factor, the layer and the backbone. Two
sources decide it here:

- the selected latents' own per-timestep profile (`profile_window`: the buckets where the latents
  are most selective for the target, read from `LatentSelection.bucket_score`), free to compute;
- a measured commitment curve (`commitment_curve`: the factor's response to the edit confined to
  one timestep bucket at a time, any scalar the caller measures), from which `auto_window` takes
  the contiguous buckets around the peak that reach `fraction` of it.

`resolve_window(selection, "auto")` uses the measured window when the selection carries one
(`LatentSelection.with_window`) and the profile otherwise; the window used belongs in the result
JSON of whatever ran the edit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

from sae_lens_dit.analysis.interventions.selection import LatentSelection, chance_score

Window = tuple[float, float]
WindowArg = Window | Literal["auto"] | None
AUTO_FRACTION = 0.5
"""A bucket joins an automatic window when its value reaches this fraction of the peak's."""


def _span(values: Sequence[float], edges: Sequence[float], fraction: float) -> Window:
    """[low, high] timesteps of the contiguous buckets around the largest value that reach `fraction` of it."""
    if len(values) != len(edges) - 1:
        raise ValueError(f"{len(values)} values for {len(edges) - 1} buckets of edges {list(edges)}")
    clean = [v if math.isfinite(v) else -math.inf for v in values]
    peak = max(range(len(clean)), key=clean.__getitem__)
    if not clean[peak] > 0:
        raise ValueError(f"no bucket has a positive value ({list(values)}); no window can be chosen from it")
    low = high = peak
    while low > 0 and clean[low - 1] >= fraction * clean[peak]:
        low -= 1
    while high < len(clean) - 1 and clean[high + 1] >= fraction * clean[peak]:
        high += 1
    return float(edges[low]), float(edges[high + 1])


def profile_window(selection: LatentSelection, fraction: float = AUTO_FRACTION) -> Window:
    """The buckets where the selected latents are most selective for their target (sum of their positive
    per-bucket scores; for auroc, the excess over 0.5)."""
    floor = chance_score(selection.method)
    totals = [sum(max(0.0, s - floor) for s in bucket if math.isfinite(s)) for bucket in selection.bucket_score]
    return _span(totals, selection.edges, fraction)


def commitment_curve(measure: Callable[[Window], float], edges: Sequence[float]) -> list[float]:
    """`measure(window)` for every one-bucket window of `edges`: the factor's response (e.g. the share of
    samples that took the target value and kept the rest) to the edit confined to that bucket."""
    return [float(measure((float(lo), float(hi)))) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def auto_window(curve: Sequence[float], edges: Sequence[float], fraction: float = AUTO_FRACTION) -> Window:
    """The window a measured commitment curve points to: contiguous buckets around its peak reaching
    `fraction` of it."""
    return _span(curve, edges, fraction)


def grow_window(
    measure: Callable[[Window], float],
    edges: Sequence[float],
    curve: Sequence[float] | None = None,
    min_gain: float = 0.02,
) -> tuple[Window, list[tuple[Window, float]]]:
    """A measured window: start at the bucket where the one-bucket edit works best (`curve`, measured with
    `commitment_curve` if not given), then add the neighbouring bucket (left or right) that raises
    `measure` most, while it raises it by at least `min_gain`. Returns (window, every (window, value) tried).

    Unlike `auto_window` this checks the combined window itself: buckets that each work alone can
    destroy what must be kept when edited together (on the shapes DiT a hue edit over 400-900 recolours
    as often as one over 400-800 but dissolves twice as many shapes)."""
    curve = list(curve) if curve is not None else commitment_curve(measure, edges)
    peak = max(range(len(curve)), key=curve.__getitem__)
    low = high = peak
    best = curve[peak]
    tried = [((float(edges[peak]), float(edges[peak + 1])), best)]
    while True:
        options = []
        if low > 0:
            options.append((low - 1, high))
        if high < len(curve) - 1:
            options.append((low, high + 1))
        scored = []
        for lo, hi in options:
            window = (float(edges[lo]), float(edges[hi + 1]))
            value = float(measure(window))
            tried.append((window, value))
            scored.append((value, lo, hi))
        if not scored:
            break
        value, lo, hi = max(scored)
        if value < best + min_gain:
            break
        best, low, high = value, lo, hi
    return (float(edges[low]), float(edges[high + 1])), tried


def resolve_window(selection: LatentSelection, window: WindowArg) -> Window | None:
    """`window` as a timestep window: "auto" -> the selection's measured window, else its profile window."""
    if window is None:
        return None
    if window == "auto":
        return selection.window if selection.window is not None else profile_window(selection)
    return fixed_window(window)


def fixed_window(window: Window) -> Window:
    """`window` checked as [low, high] timesteps with low <= high, as floats."""
    if isinstance(window, str) or len(window) != 2 or not window[0] <= window[1]:
        raise ValueError(f"window must be 'auto' or [low, high] timesteps with low <= high, received {window!r}")
    return float(window[0]), float(window[1])
