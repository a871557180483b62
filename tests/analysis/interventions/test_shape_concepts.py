"""The scoring and sampling pieces of the shapes concepts, against images whose factors are known.

References: `image_sets.make_shapes` draws images with known hue, centre and size; shape tokens are
checked against a hand-drawn square; `sample_seeded` on a subset must reproduce the full batch's
images from the same noise (to 1e-5: batched matmuls round by batch size on some CPUs), which the grouped
steering of benchmarks relies on.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sae_lens_dit.analysis.interventions.editing import sample_seeded
from sae_lens_dit.analysis.interventions.shape_concepts import _choose
from sae_lens_dit.analysis.interventions.shape_scoring import hue_bin, score_hue, score_position, score_size
from sae_lens_dit.toy.backbones import shape_tokens
from sae_lens_dit.toy.image_sets import make_shapes


def _hwc(images: np.ndarray) -> np.ndarray:
    return np.transpose(images, (0, 2, 3, 1)) / 2.0 + 0.5


def test_shape_tokens_marks_patches_covered_by_the_shape():
    image = np.full((1, 16, 16, 3), 0.1, np.float32)
    image[0, 4:8, 10:14] = (0.9, 0.2, 0.1)  # 2x2-pixel patches: rows 2-3, columns 5-6 of an 8x8 grid
    expected = np.zeros((8, 8), bool)
    expected[2:4, 5:7] = True
    np.testing.assert_array_equal(shape_tokens(image, (8, 8))[0], expected.reshape(-1))


def test_scores_read_known_factors():
    batch = make_shapes(24, seed=np.random.default_rng().integers(1 << 30))
    before = _hwc(batch.images)
    kinds = batch.shape

    def classify(images):  # the true kind for the untouched images, another for anything changed
        return np.where(np.abs(images - before).max((1, 2, 3)) == 0, kinds, -1)

    rates = score_hue(before, before, hue_bin(batch.hue), classify)
    assert rates["kept"].all() and rates["background"].all()
    assert rates["target"].all()  # the measured hue bin is the drawn one (checked on 2,000 images: no miss)
    recoloured = before.copy()
    recoloured[..., :] = recoloured.mean(-1, keepdims=True)  # grey everything: border unchanged, hue lost
    assert not score_hue(before, recoloured, hue_bin(batch.hue), classify)["kept"].any()
    side = np.where(batch.center[:, 0] < 8, "left", "right")
    placed = score_position(before, before, side, classify)
    x = batch.center[:, 0]
    clear = np.minimum(np.abs(x - 16 / 3), np.abs(x - 32 / 3)) > 0.5  # measured centroids: within 0.4 px
    expected = np.where(side == "left", x < 16 / 3, x > 32 / 3)
    np.testing.assert_array_equal(placed["target"][clear], expected[clear])
    shifted = np.roll(before, 2, axis=2)  # two pixels to the right: width unchanged
    sized = score_size(before, shifted, np.array(["larger"] * 24), classify)
    assert not sized["target"].any() and np.abs(sized["width_change"]).max() < 0.5


def test_hue_kept_follows_the_shape_colour():
    """`hue_kept` of position and size: true for the untouched images and for a shift that keeps the colour, false
    where the shape's colour is rotated by half the hue circle (3 of 6 bins away: no rounding can keep its bin)."""
    import colorsys

    batch = make_shapes(16, seed=np.random.default_rng().integers(1 << 30))
    before = _hwc(batch.images)
    kinds = np.zeros(16, int)
    border = np.median(before[:, 0], axis=1)
    rotated = before.copy()
    for i in range(16):
        shape = np.abs(before[i] - border[i]).max(-1) > 0.05
        for y, x in zip(*np.nonzero(shape), strict=True):
            h, s, v = colorsys.rgb_to_hsv(*before[i, y, x])
            rotated[i, y, x] = colorsys.hsv_to_rgb((h + 0.5) % 1.0, s, v)
    side = np.array(["left"] * 16)
    classify = lambda images: kinds  # noqa: E731
    assert score_position(before, before, side, classify)["hue_kept"].all()
    assert score_size(before, np.roll(before, 1, axis=1), np.array(["smaller"] * 16), classify)["hue_kept"].all()
    assert not score_position(before, rotated, side, classify)["hue_kept"].any()
    assert not score_size(before, rotated, np.array(["larger"] * 16), classify)["hue_kept"].any()


def test_an_erased_shape_is_neither_smaller_nor_kept():
    """A steered image with no shape left (every pixel the border colour) is not "smaller" and did not keep its
    kind, whatever the classifier says of an empty image; a shape drawn on an empty image is not "larger"."""
    batch = make_shapes(8, seed=np.random.default_rng().integers(1 << 30))
    before = _hwc(batch.images)
    erased = np.broadcast_to(np.median(before[:, 0], axis=1)[:, None, None], before.shape).copy()

    def same_kind(images):  # a classifier that agrees with everything: only the shape's presence decides
        return np.zeros(len(images), int)

    smaller = score_size(before, erased, np.array(["smaller"] * 8), same_kind)
    assert (smaller["width_change"] < -4).all()  # the width fell to 0: the old score counted this as "smaller"
    assert not smaller["target"].any() and not smaller["kept"].any() and smaller["vanished"].all()
    larger = score_size(erased, before, np.array(["larger"] * 8), same_kind)
    assert not larger["target"].any() and larger["kept"].all() and not larger["vanished"].any()
    side = np.array(["left"] * 8)
    assert not score_position(before, erased, side, same_kind)["kept"].any()
    assert not score_hue(before, erased, hue_bin(batch.hue), same_kind)["kept"].any()
    assert score_hue(before, before, hue_bin(batch.hue), same_kind)["kept"].all()


def test_sample_seeded_reproduces_any_subset(pipe):
    """Each sample's noise is its own seed's, so a subset re-generates the same images; to float rounding only,
    as the CPU's matmul kernels may depend on the batch size (1e-5 of a [0, 1] pixel; a sample of another seed
    differs by tenths)."""
    labels, seeds = np.arange(6) % 3, np.arange(6) + 11
    full = sample_seeded(pipe, labels, seeds, num_inference_steps=2)
    part = sample_seeded(pipe, labels[[4, 1]], seeds[[4, 1]], num_inference_steps=2)
    np.testing.assert_allclose(part, full[[4, 1]], rtol=0, atol=1e-5)
    other = sample_seeded(pipe, labels[[4, 1]], seeds[[4, 1]] + 100, num_inference_steps=2)
    assert np.abs(other - full[[4, 1]]).max() > 0.05


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([("a", {"target": 0.9, "kept": 0.7}), ("b", {"target": 0.8, "kept": 0.9})], "b"),
        ([("a", {"target": 0.9, "kept": 0.9, "background": 0.5}), ("b", {"target": 0.6, "kept": 0.9})], "b"),
        ([("a", {"target": 0.9, "kept": 0.5}), ("b", {"target": 0.5, "kept": 0.6})], "a"),  # none keeps: best product
    ],
)
def test_choose_prefers_the_strongest_setting_that_keeps_the_rest(results, expected):
    assert _choose(results) == expected


def test_balanced_choice_takes_the_best_of_the_lower_rate():
    results = [
        ("a", {"target": 0.93, "kept": 0.86}),  # highest target that keeps 0.85: the unbalanced choice
        ("b", {"target": 0.90, "kept": 0.92}),  # min 0.90: the balanced one
        ("c", {"target": 0.99, "kept": 0.95, "background": 0.5}),  # ruins the background: never
    ]
    assert _choose(results) == "a"
    assert _choose(results, balanced=True) == "b"


def test_position_spec_clamps_in_the_side_box_and_zeroes_the_far_half():
    """Against the edits written out by hand: clamp at value x typical in the outer third (x) and the middle
    two thirds (y) of the side, zero on the other half, both at t_min..1000, per hook."""
    from sae_lens_dit.analysis.interventions.selection import LatentSelection
    from sae_lens_dit.analysis.interventions.shape_concepts import position_spec
    from sae_lens_dit.analysis.interventions.spec import LatentEdit

    hooks = ("blocks.1.hook_resid_post", "blocks.3.hook_resid_post")
    shape = {h: LatentSelection(h, (4, 2), (1.5, 0.5), (0.9, 0.8), ((0.9, 0.8),), edges=(0.0, 1000.0)) for h in hooks}
    spec = position_spec(shape, "left", 2.0, 600)
    expected = []
    for h in hooks:
        expected.append(
            LatentEdit(
                h,
                (4, 2),
                "clamp",
                2.0,
                timesteps=(600.0, 1000.0),
                box=(0.0, 1 / 6, 1 / 3, 5 / 6),
                unit="typical",
                typical=(1.5, 0.5),
            )
        )
        expected.append(LatentEdit(h, (4, 2), "zero", timesteps=(600.0, 1000.0), box=(0.5, 0.0, 1.0, 1.0)))
    assert list(spec.edits) == expected
    assert [e.box for e in position_spec(shape, "right", 2.0, 600).edits[:2]] == [
        pytest.approx((2 / 3, 1 / 6, 1.0, 5 / 6), abs=1e-12),
        (0.0, 0.0, 0.5, 1.0),
    ]
    inner = position_spec(shape, "right", 6.0, 600, box_x=(1 / 8, 3 / 8), clear_from=3 / 8).edits[:2]
    assert [e.box for e in inner] == [
        pytest.approx((5 / 8, 1 / 6, 7 / 8, 5 / 6), abs=1e-12),
        pytest.approx((0.0, 0.0, 5 / 8, 1.0), abs=1e-12),
    ]
    assert inner[0].values().tolist() == [9.0, 3.0]  # 6 x typical
    held = position_spec(shape, "left", 6.0, 600, box_x=(1 / 8, 3 / 8), clear_from=3 / 8, t_clear=300).edits
    assert [(e.op, e.timesteps) for e in held] == [("clamp", (600.0, 1000.0)), ("zero", (300.0, 1000.0))] * 2
    with pytest.raises(ValueError, match="t_clear"):
        position_spec(shape, "left", 2.0, 600, t_clear=700)
    with pytest.raises(ValueError, match="side must be one of"):
        position_spec(shape, "up", 2.0, 600)
    with pytest.raises(ValueError, match="clear_from"):
        position_spec(shape, "left", 2.0, 600, box_x=(0.0, 0.5), clear_from=3 / 8)


def test_erode_spec_zeroes_the_shape_and_clamps_it_one_token_inside(tmp_path):
    """Against the edits written out by hand: per hook, zero the shape's latents on the gate, then clamp them at
    value x typical on the same gate shrunk by one token (grow - 1), both in the window."""
    from sae_lens_dit.analysis.interventions.gates import Gate, LinearProbe
    from sae_lens_dit.analysis.interventions.selection import LatentSelection
    from sae_lens_dit.analysis.interventions.shape_concepts import erode_spec
    from sae_lens_dit.analysis.interventions.spec import LatentEdit

    hooks = ("blocks.1.hook_resid_post", "blocks.3.hook_resid_post")
    probe = LinearProbe(hooks[0], torch.ones(4), 0.0).save(tmp_path / "probe.safetensors")
    gates = {h: Gate(probe=str(probe), threshold=2.0, grow=g) for h, g in zip(hooks, (0, 1), strict=True)}
    shape = {h: LatentSelection(h, (7, 3), (2.0, 0.5), (0.9, 0.8), ((0.9, 0.8),), edges=(0.0, 1000.0)) for h in hooks}
    spec = erode_spec(shape, 2.0, (500.0, 1000.0), gates)
    expected = []
    for h, grow in zip(hooks, (0, 1), strict=True):
        expected.append(LatentEdit(h, (7, 3), "zero", timesteps=(500.0, 1000.0), gate=gates[h]))
        inside = Gate(probe=str(probe), threshold=2.0, grow=grow - 1)
        expected.append(
            LatentEdit(
                h, (7, 3), "clamp", 2.0, timesteps=(500.0, 1000.0), gate=inside, unit="typical", typical=(2.0, 0.5)
            )
        )
    assert list(spec.edits) == expected
