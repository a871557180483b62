"""How a steered shapes image is scored against the same sample unsteered: hue bin reached, shape moved into a
third, width changed, shape kind kept, background kept.

Why: the shapes backbone is where steering can be *scored* from pixels (`backbones.measure_shape_factors` and the
bundled shape classifier); these are the one definition of success that the concept tuning (`shape_concepts`) and
`benchmarks/bench_interventions.py` share, so a recipe is never tuned on one criterion and reported on another.
A steered image whose shape vanished keeps nothing and is not "smaller": the classifier still names a kind for an
empty image, and its width change is the largest of all.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sae_lens_dit.toy.backbones import measure_shape_factors
from sae_lens_dit.toy.image_sets import HUE_BINS  # hue is scored in HUE_BINS equal arcs (chance 1 / HUE_BINS)

SIZES = ("larger", "smaller")
"""The directions `score_size` reads (and the size concepts' names: size=larger, size=smaller)."""
PRESENT_WIDTH = 2.0
"""Measured width (pixels, 2 x `measure_shape_factors(...).size`) below which an image has no shape. The drawn
shapes are 5-13 px wide; a steered sample under one pixel-pair wide lost its shape: it did not keep its kind, and
did not get smaller (the classifier still names some kind for an empty image)."""


def hue_bin(hue: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(hue) * HUE_BINS).astype(int) % HUE_BINS


def border_colour(images: np.ndarray) -> np.ndarray:
    return np.median(np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], 1), 1)


def has_shape(images: np.ndarray) -> np.ndarray:
    """Per image: a shape is there (measured width >= PRESENT_WIDTH)."""
    return 2.0 * measure_shape_factors(images).size >= PRESENT_WIDTH


def kept_kind(before: np.ndarray, after: np.ndarray, classify: Any) -> np.ndarray:
    """Per sample: the steered image still has a shape, of the kind the classifier reads in the unsteered one."""
    return has_shape(after) & (classify(after) == classify(before))


def same_hue(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per sample: the steered shape's hue bin is the unsteered one's (a side effect to watch in edits that are not
    about colour, such as moving or resizing the shape)."""
    return hue_bin(measure_shape_factors(after).hue) == hue_bin(measure_shape_factors(before).hue)


def score_hue(before: np.ndarray, after: np.ndarray, target: np.ndarray, classify: Any) -> dict[str, np.ndarray]:
    """Per sample: took the target hue bin; kept its shape kind (`kept_kind`: a shape is there and the classifier
    agrees with the unsteered sample); background still background (border colour within 0.1 of the unsteered one
    in every channel)."""
    return {
        "target": hue_bin(measure_shape_factors(after).hue) == target,
        "kept": kept_kind(before, after, classify),
        "background": np.abs(border_colour(after) - border_colour(before)).max(-1) < 0.1,
    }


def score_position(before: np.ndarray, after: np.ndarray, side: np.ndarray, classify: Any) -> dict[str, np.ndarray]:
    """Per sample: the shape's centre is in the outer third of its target side; shape kind kept (`kept_kind`);
    `fits`: the unsteered shape is small enough to sit in that third whole (half-width below a third of the image,
    as the training images' centres stay a half-width from the border); `hue_kept`: `same_hue`."""
    x, width = measure_shape_factors(after).center[:, 0], after.shape[2]
    fits = measure_shape_factors(before).size < width / 3
    return {
        "target": np.where(side == "left", x < width / 3, x > 2 * width / 3),
        "kept": kept_kind(before, after, classify),
        "fits": fits,
        "hue_kept": same_hue(before, after),
    }


def score_size(before: np.ndarray, after: np.ndarray, direction: np.ndarray, classify: Any) -> dict[str, np.ndarray]:
    """Per sample: the shape's width (sqrt of its area) grew (shrank) by at least 1 pixel, with a shape there before
    and after (an erased shape is not a smaller one, nor is a shape drawn on an empty image a larger one); shape
    kind kept (`kept_kind`); `vanished`: the steered image has no shape; `hue_kept`: `same_hue`."""
    change = 2.0 * (measure_shape_factors(after).size - measure_shape_factors(before).size)
    present = has_shape(after)
    return {
        "target": np.where(direction == "larger", change >= 1.0, change <= -1.0) & has_shape(before) & present,
        "kept": kept_kind(before, after, classify),
        "vanished": ~present,
        "hue_kept": same_hue(before, after),
        "width_change": change,
    }
