"""Small image sets with known content, for the bundled backbones.

`load_digit_images` wraps sklearn's 1,797 real handwritten 8x8 digits. `make_shapes` draws a
dSprites-like set where every factor of every image is known, so features can be scored against
ground truth and style transfer can be measured (colour moved, shape kept).

Images are float32 in [-1, 1], channels first, the range DiTPipeline maps back with x / 2 + 0.5.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

ShapeKind = Literal["circle", "square", "triangle", "cross"]
SHAPE_KINDS: tuple[str, ...] = get_args(ShapeKind)
DIGIT_LABELS: tuple[str, ...] = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class ShapesSpec:
    """The documented ranges every shapes image is drawn from (uniformly, independently)."""

    image_size: int = 16
    """Side of the square RGB image in pixels."""
    size_range: tuple[float, float] = (3.0, 6.5)
    """Half-width of the shape in pixels."""
    saturation_range: tuple[float, float] = (0.7, 1.0)
    """HSV saturation of the shape colour (hue is uniform on [0, 1))."""
    value_range: tuple[float, float] = (0.75, 1.0)
    """HSV value (brightness) of the shape colour."""
    background_range: tuple[float, float] = (0.0, 0.25)
    """Grey level of the uniform background, in [0, 1] intensity."""
    supersample: int = 4
    """Each pixel is the mean of supersample**2 sub-pixel tests (anti-aliasing)."""


@dataclass(frozen=True)
class ShapesBatch:
    """Images and the factors that made them; every array has the batch as its first axis."""

    images: np.ndarray  # [n, 3, S, S] float32 in [-1, 1]
    shape: np.ndarray  # [n] int, index into SHAPE_KINDS (the class label)
    hue: np.ndarray  # [n] float in [0, 1)
    rgb: np.ndarray  # [n, 3] float shape colour in [0, 1]
    size: np.ndarray  # [n] float half-width in pixels
    center: np.ndarray  # [n, 2] float (x, y) in pixels
    background: np.ndarray  # [n] float grey level in [0, 1]


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's handwritten digits as ([1797, 1, 8, 8] float32 in [-1, 1], [1797] labels)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0) * 2.0 - 1.0
    return images[:, None], digits.target.astype(np.int64)


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test on coordinates already centred on the shape and divided by its half-width."""
    if kind == "circle":
        return u**2 + v**2 <= 1.0
    if kind == "square":
        return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    if kind == "triangle":  # apex up, base at v = 0.8
        return (v <= 0.8) & (v >= -1.0 + 2.0 * np.abs(u) * 0.9)
    if kind == "cross":
        return ((np.abs(u) <= 0.33) | (np.abs(v) <= 0.33)) & (np.abs(u) <= 1) & (np.abs(v) <= 1)
    raise ValueError(f"unknown shape kind {kind!r}; expected one of {SHAPE_KINDS}")


def make_shapes(n: int, seed: int, spec: ShapesSpec = ShapesSpec()) -> ShapesBatch:
    """Draw `n` shapes images; the same (n, seed, spec) always gives the same batch."""
    rng = np.random.default_rng(seed)
    s, ss = spec.image_size, spec.supersample
    shape = rng.integers(0, len(SHAPE_KINDS), size=n)
    hue = rng.uniform(0.0, 1.0, size=n)
    sat = rng.uniform(*spec.saturation_range, size=n)
    val = rng.uniform(*spec.value_range, size=n)
    size = rng.uniform(*spec.size_range, size=n)
    center = np.stack([rng.uniform(size, s - size), rng.uniform(size, s - size)], axis=1)
    background = rng.uniform(*spec.background_range, size=n)
    rgb = np.array([colorsys.hsv_to_rgb(h, a, b) for h, a, b in zip(hue, sat, val, strict=True)], np.float32)

    sub = (np.arange(s * ss) + 0.5) / ss  # sub-pixel centres in pixel units
    ys, xs = np.meshgrid(sub, sub, indexing="ij")
    images = np.empty((n, 3, s, s), np.float32)
    for i in range(n):
        u, v = (xs - center[i, 0]) / size[i], (ys - center[i, 1]) / size[i]
        cover = _shape_mask(SHAPE_KINDS[shape[i]], u, v).reshape(s, ss, s, ss).mean(axis=(1, 3))
        img = background[i] + cover[None] * (rgb[i][:, None, None] - background[i])
        images[i] = img * 2.0 - 1.0
    return ShapesBatch(images, shape, hue, rgb, size, center, background)


HUE_BINS = 6
"""Colour factor values: the hue circle cut into this many equal arcs (red, yellow, green, ...)."""
GRID_BINS = 3
"""Size and position factor values: each range cut into this many equal parts."""


@dataclass(frozen=True)
class LabelledImages:
    """Images with their class and every known factor as discrete values, for scoring features."""

    images: np.ndarray  # [n, C, S, S] float32 in [-1, 1]
    labels: np.ndarray  # [n] int class id (digit, or index into SHAPE_KINDS)
    factors: dict[str, np.ndarray]
    """Factor family -> [n] int value; the class is always the family "class"."""

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, n: int) -> LabelledImages:
        return LabelledImages(self.images[:n], self.labels[:n], {k: v[:n] for k, v in self.factors.items()})


def _bins(values: np.ndarray, low: float, high: float, n: int) -> np.ndarray:
    return np.clip(((values - low) / (high - low) * n).astype(np.int64), 0, n - 1)


def shape_factor_values(
    hue: np.ndarray, size: np.ndarray, center: np.ndarray, spec: ShapesSpec = ShapesSpec()
) -> dict[str, np.ndarray]:
    """Discrete colour (hue arc), size, x and y thirds of known or measured factors: the values that
    evaluation and dashboards group images by."""
    return {
        "colour": _bins(hue, 0.0, 1.0, HUE_BINS),
        "size": _bins(size, *spec.size_range, GRID_BINS),
        "x": _bins(center[:, 0], 0.0, spec.image_size, GRID_BINS),
        "y": _bins(center[:, 1], 0.0, spec.image_size, GRID_BINS),
    }


def shapes_factors(batch: ShapesBatch, spec: ShapesSpec = ShapesSpec()) -> dict[str, np.ndarray]:
    """The discrete factor values of a shapes batch: class (shape) and `shape_factor_values`."""
    return {"class": batch.shape, **shape_factor_values(batch.hue, batch.size, batch.center, spec)}


DIGITS_HELDOUT = 180
SHAPES_TRAIN, SHAPES_HELDOUT = 20000, 1000


def training_split(name: str, seed: int = 0) -> tuple[LabelledImages, LabelledImages]:
    """(train, held out) images of bundled backbone `name` ("digits" or "shapes"): the split its
    training script used with the same seed, so evaluations never score on training images."""
    if name == "digits":
        x, y = load_digit_images()
        perm = np.random.default_rng(seed).permutation(len(x))
        held, train = perm[:DIGITS_HELDOUT], perm[DIGITS_HELDOUT:]
        return (
            LabelledImages(x[train], y[train], {"class": y[train]}),
            LabelledImages(x[held], y[held], {"class": y[held]}),
        )
    if name == "shapes":
        train, held = make_shapes(SHAPES_TRAIN, seed=seed), make_shapes(SHAPES_HELDOUT, seed=seed + 1)
        return (
            LabelledImages(train.images, train.shape, shapes_factors(train)),
            LabelledImages(held.images, held.shape, shapes_factors(held)),
        )
    raise ValueError(f"no image set for backbone {name!r}; expected 'digits' or 'shapes'")
