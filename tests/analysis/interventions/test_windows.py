"""`sae_lens_dit.analysis.interventions.windows` on hand-made curves and selections.

What is checked against what: `auto_window` / `profile_window` against windows worked out by hand (peak,
fraction, contiguity, nan as "not in the window") and, on fresh random curves, against a brute-force
search for the longest run of buckets around the peak that all reach `fraction` of it (exact: edges are
returned as they are given); `commitment_curve` against the one-bucket windows it must measure;
`resolve_window` against the selection's measured window, its profile window, or the explicit window;
`grow_window` against a greedy growth traced by hand on a measure with exact binary-fraction values (== on
windows and every (window, value) tried).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from sae_lens_dit.analysis.interventions.selection import LatentSelection
from sae_lens_dit.analysis.interventions.windows import (
    auto_window,
    commitment_curve,
    grow_window,
    profile_window,
    resolve_window,
)

EDGES = (0.0, 200.0, 400.0, 600.0, 800.0, 1000.0)


@pytest.mark.parametrize(
    ("curve", "fraction", "window"),
    [
        ([0.1, 0.5, 1.0, 0.6, 0.4], 0.5, (200.0, 800.0)),  # 0.5 reaches half the peak (>=); 0.4 and 0.1 do not
        ([0.1, 0.5, 1.0, 0.6, 0.4], 0.7, (400.0, 600.0)),
        ([0.1, 0.5, 1.0, 0.6, 0.4], 0.0, (0.0, 1000.0)),
        ([0.9, 0.1, 1.0, 0.2, 0.8], 0.5, (400.0, 600.0)),  # contiguous: 0.9 and 0.8 are cut off by the dips
        ([2.0, 1.5, -1.0, 2.0, 0.0], 0.5, (0.0, 400.0)),  # tied peaks: the first one
        ([0.3, float("nan"), 0.4, 0.35, 0.1], 0.5, (400.0, 800.0)),  # nan is never inside and breaks the run
        ([-1.0, -2.0, 0.01, -0.5, -3.0], 0.5, (400.0, 600.0)),
    ],
)
def test_auto_window_on_hand_made_curves(curve, fraction, window):
    assert auto_window(curve, EDGES, fraction) == window


def _brute_force(curve: np.ndarray, edges: tuple[float, ...], fraction: float) -> tuple[float, float]:
    peak = int(np.argmax(curve))
    best = (peak, peak)
    for low in range(peak + 1):
        for high in range(peak, len(curve)):
            if all(curve[low : high + 1] >= fraction * curve[peak]) and high - low > best[1] - best[0]:
                best = (low, high)
    return edges[best[0]], edges[best[1] + 1]


def test_auto_window_matches_a_brute_force_search_on_random_curves():
    rng = np.random.default_rng(0)
    edges = tuple(float(e) for e in np.linspace(0, 1000, 11))
    for _ in range(200):
        curve = rng.normal(size=10)
        curve[rng.integers(10)] = abs(curve).max() + 0.1  # a positive peak
        fraction = float(rng.uniform(0.0, 1.0))
        assert auto_window(curve.tolist(), edges, fraction) == _brute_force(curve, edges, fraction)


@pytest.mark.parametrize("curve", [[0.0] * 5, [-1.0, -0.5, -2.0, -0.1, -3.0], [float("nan")] * 5])
def test_no_positive_value_is_refused(curve):
    with pytest.raises(ValueError, match="no bucket has a positive value"):
        auto_window(curve, EDGES)


def test_curve_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match=re.escape("4 values for 5 buckets")):
        auto_window([1.0, 2.0, 3.0, 4.0], EDGES)


def _selection(bucket_score, method="mean_diff", window=None) -> LatentSelection:
    n = len(bucket_score[0])
    selection = LatentSelection(
        "blocks.0.hook_resid_post",
        tuple(range(n)),
        (1.0,) * n,
        (0.5,) * n,
        tuple(map(tuple, bucket_score)),
        edges=EDGES,
        method=method,
    )
    return selection if window is None else selection.with_window(window)


def test_profile_window_sums_the_positive_part_of_each_bucket():
    # per bucket, the positive scores summed: 0.2, 0.9, 1.2, 0.3, 0 -> peak at bucket 2, half of it is 0.6
    scores = [[0.2, -0.5], [0.5, 0.4], [1.2, -3.0], [0.3, float("nan")], [-1.0, -1.0]]
    assert profile_window(_selection(scores)) == (200.0, 600.0)
    assert profile_window(_selection(scores), fraction=0.8) == (400.0, 600.0)
    # a latent strongly negative in a bucket must not cancel another's positive score there
    assert profile_window(_selection([[0.1, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, -5.0], [0.1, 0.0]])) == (600.0, 800.0)
    # auroc: only the excess over 0.5 counts: 0.1, 0.05, 0.3, 0.1, 0.2 (summing raw values would peak elsewhere)
    auroc = [[0.6, 0.5], [0.55, 0.4], [0.8, 0.3], [0.6, 0.5], [0.7, 0.45]]
    assert profile_window(_selection(auroc, "auroc"), fraction=0.5) == (400.0, 600.0)
    assert profile_window(_selection(auroc, "auroc"), fraction=0.3) == (400.0, 1000.0)
    with pytest.raises(ValueError, match="no bucket has a positive value"):
        profile_window(_selection([[0.5, 0.4]] * 5, "auroc"))


def test_commitment_curve_measures_each_one_bucket_window():
    asked = []

    def measure(window):
        asked.append(window)
        return math.sin(window[0] / 300.0) + 1

    curve = commitment_curve(measure, EDGES)
    assert asked == [(0.0, 200.0), (200.0, 400.0), (400.0, 600.0), (600.0, 800.0), (800.0, 1000.0)]
    assert curve == [math.sin(lo / 300.0) + 1 for lo, _ in asked] and all(isinstance(v, float) for v in curve)
    assert auto_window(curve, EDGES, fraction=0.9) == (400.0, 800.0)  # 1, 1.62, 1.97, 1.91, 1.46


def test_resolve_window_prefers_a_measured_window():
    scores = [[0.0], [0.1], [1.0], [0.2], [0.0]]
    plain = _selection(scores)
    measured = _selection(scores, window=(600, 1000))
    assert resolve_window(plain, "auto") == profile_window(plain) == (400.0, 600.0)
    assert resolve_window(measured, "auto") == (600.0, 1000.0)
    assert measured.with_window((0, 200), [1, 2, 3, 4, 5]).commitment == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert resolve_window(measured, None) is None
    assert resolve_window(measured, (100, 300)) == (100.0, 300.0)
    assert resolve_window(measured, [250, 250]) == (250.0, 250.0)
    for bad in ((300, 100), "later", (1, 2, 3)):
        with pytest.raises(ValueError, match=re.escape("window must be 'auto' or [low, high] timesteps")):
            resolve_window(measured, bad)


def _additive(window: tuple[float, float]) -> float:
    """Per-bucket gains 0, 1/4, 1/2, 3/8, 1/16 summed over the window, minus 1/4 per bucket beyond the first."""
    gains = [0.0, 0.25, 0.5, 0.375, 0.0625]
    buckets = [b for b in range(5) if window[0] <= EDGES[b] and EDGES[b + 1] <= window[1]]
    return sum(gains[b] for b in buckets) - 0.25 * (len(buckets) - 1)


def test_grow_window_adds_the_best_neighbour_while_it_gains_enough():
    calls = []

    def measure(window):
        calls.append(window)
        return _additive(window)

    window, tried = grow_window(measure, EDGES)
    # one-bucket curve 0, .25, .5, .375, .0625 -> start at 400-600 (0.5); 200-600 gives 0.5, 400-800 0.625 (+0.125):
    # grow right; then 200-800 gives 0.625 and 400-1000 0.4375: no gain of 0.02 -> stop
    assert window == (400.0, 800.0)
    assert tried == [
        ((400.0, 600.0), 0.5),
        ((200.0, 600.0), 0.5),
        ((400.0, 800.0), 0.625),
        ((200.0, 800.0), 0.625),
        ((400.0, 1000.0), 0.4375),
    ]
    assert len(calls) == 5 + 4  # the commitment curve, then the four grown windows tried
    calls.clear()
    curve = [_additive((lo, hi)) for lo, hi in zip(EDGES[:-1], EDGES[1:], strict=True)]
    assert grow_window(measure, EDGES, curve=curve)[0] == (400.0, 800.0) and len(calls) == 4  # a given curve is reused
    # no minimum gain: a tie grows too (200-800 at 0.625), then 0-800 (0.375) and 200-1000 (0.4375) lose
    assert grow_window(_additive, EDGES, min_gain=0.0)[0] == (200.0, 800.0)
    assert grow_window(_additive, EDGES, min_gain=1.0)[0] == (400.0, 600.0)  # nothing gains 1: the peak bucket alone
    assert grow_window(lambda w: w[1] - w[0], EDGES, min_gain=0.0)[0] == (0.0, 1000.0)  # grows until no neighbour
