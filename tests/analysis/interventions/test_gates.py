"""`sae_lens_dit.analysis.interventions.gates`: Gate validation and per-token decisions, LinearProbe files, fit_probe.

What is checked against what:
- `fit_probe` on fresh planted rows (two shifted Gaussian classes, 30% positive, every input dimension on its
  own scale and offset): accuracy above 0.95 on fresh rows of the same distribution, and its logits on raw
  activations against scikit-learn's LogisticRegression fitted to the same objective (class-balanced
  weights, the same L2 penalty rescaled to sklearn's C, on inputs standardised by hand) and mapped back to
  raw inputs by hand: atol 1e-3 on logits of size ~10 (two L-BFGS runs converged to their own tolerances).
- `LinearProbe.logits` against x @ weight + bias by hand (atol 1e-6); save/load bit-exact (torch.equal on the
  weight, == on the bias and the hook); files that are not probes are refused with ValueError.
- `Gate.inside` against a hand threshold of the codes (any gate latent above the threshold) or of the
  probe's logit, `invert` flipping it; Gate dict round trip and refusals.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from sae_lens_dit.analysis.interventions.gates import Gate, LinearProbe, fit_probe

HOOK = "blocks.0.hook_resid_post"
D = 8


def _planted(n: int, generator: torch.Generator, setting: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Rows whose positives (30%) are shifted along a fixed direction, then every dimension scaled and offset."""
    y = torch.rand(n, generator=generator) < 0.3
    z = torch.randn(n, D, generator=generator) + 4.0 * setting["direction"] * y[:, None]
    return z * setting["scale"] + setting["offset"], y


def _setting(generator: torch.Generator) -> dict[str, Tensor]:
    direction = torch.randn(D, generator=generator)
    return {
        "direction": direction / direction.norm(),
        "scale": torch.rand(D, generator=generator) * 5 + 0.2,
        "offset": torch.randn(D, generator=generator) * 3,
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_probe_separates_planted_rows_and_matches_sklearn(seed):
    generator = torch.Generator().manual_seed(seed)
    setting = _setting(generator)
    x, y = _planted(600, generator, setting)
    l2 = 1e-3
    probe = fit_probe({"activation": x}, y.numpy(), hook=HOOK, l2=l2)
    assert probe.hook == HOOK and probe.weight.shape == (D,) and probe.weight.dtype == torch.float32

    fresh_x, fresh_y = _planted(2000, generator, setting)
    accuracy = float(((probe.logits(fresh_x) > 0) == fresh_y).float().mean())
    assert accuracy > 0.95

    # The same objective in sklearn's form: mean_i(s_i loss_i) + l2 |w|^2 = 2 l2 N [C sum_i s_i loss_i + |w|^2 / 2]
    # with C = 1 / (2 l2 N), on inputs standardised with the mean and the (unbiased) std of the fitting rows.
    mean, std = x.double().mean(0), x.double().std(0)
    positive = float(y.double().mean())
    weights = np.where(y.numpy(), 0.5 / positive, 0.5 / (1 - positive))
    reference = LogisticRegression(C=1 / (2 * l2 * len(x)), tol=1e-12, max_iter=10_000)
    reference.fit(((x.double() - mean) / std).numpy(), y.numpy(), sample_weight=weights)
    expected = reference.decision_function(((fresh_x.double() - mean) / std).numpy())
    np.testing.assert_allclose(probe.logits(fresh_x).double().numpy(), expected, atol=1e-3, rtol=0)


def test_probe_logits_and_file_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(3)
    probe = LinearProbe(HOOK, torch.randn(D, generator=generator), float(torch.randn(1, dtype=torch.float64)))
    x = torch.randn(5, 16, D, generator=generator)
    hand = (x.double() * probe.weight.double()).sum(-1) + probe.bias
    torch.testing.assert_close(probe.logits(x).double(), hand, atol=1e-6, rtol=0)

    loaded = LinearProbe.load(probe.save(tmp_path / "probe.safetensors"))
    assert loaded.hook == HOOK and torch.equal(loaded.weight, probe.weight) and loaded.bias == probe.bias
    assert torch.equal(loaded.logits(x), probe.logits(x))


def test_load_refuses_files_that_are_not_probes(tmp_path):
    weight = torch.randn(D)
    cases = {
        "extra.safetensors": {"weight": weight, "bias": torch.zeros(1), "W_dec": torch.zeros(2, D)},
        "matrix.safetensors": {"weight": torch.zeros(2, D), "bias": torch.zeros(1)},
        "sae.safetensors": {"W_enc": torch.zeros(D, 4), "b_enc": torch.zeros(4)},
    }
    for name, tensors in cases.items():
        save_file(tensors, str(tmp_path / name))
        with pytest.raises(ValueError, match=re.escape(f"{name} is not a linear probe")):
            LinearProbe.load(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LinearProbe.load(tmp_path / "missing.safetensors")


def test_fit_probe_errors_are_clear():
    rows = {"activation": torch.randn(20, D)}
    with pytest.raises(ValueError, match=re.escape("target_rows has 19 entries for 20 rows")):
        fit_probe(rows, np.ones(19, bool))
    with pytest.raises(ValueError, match=re.escape("needs rows of both classes")):
        fit_probe(rows, np.zeros(20, bool))


def test_gate_inside_is_a_threshold_of_codes_or_logits(tmp_path):
    generator = torch.Generator().manual_seed(4)
    codes = torch.relu(torch.randn(3, 16, 32, generator=generator))
    activation = torch.randn(3, 16, D, generator=generator)
    gate = Gate(latents=(2, 9), threshold=0.7)
    hand = (codes[..., 2] > 0.7) | (codes[..., 9] > 0.7)
    assert 0 < int(hand.sum()) < hand.numel()
    assert torch.equal(gate.inside(activation, codes), hand)
    assert torch.equal(Gate(latents=(2, 9), threshold=0.7, invert=True).inside(activation, codes), ~hand)
    with pytest.raises(ValueError, match="a latent gate needs the SAE's codes"):
        gate.inside(activation, None)

    probe = LinearProbe(HOOK, torch.randn(D, generator=generator), 0.3)
    path = probe.save(tmp_path / "probe.safetensors")
    logit = (activation.double() * probe.weight.double()).sum(-1) + probe.bias
    for threshold in (-0.5, 0.0, 1.0):
        by_probe = Gate(probe=str(path), threshold=threshold)
        assert torch.equal(by_probe.inside(activation, None), logit > threshold)  # loads the probe itself
        assert torch.equal(by_probe.inside(activation, None, probe), logit > threshold)
        inverted = Gate(probe=str(path), threshold=threshold, invert=True)
        assert torch.equal(inverted.inside(activation, None), logit <= threshold)


def _grown_by_hand(inside: torch.Tensor, grid: tuple[int, int], by: int) -> torch.Tensor:
    """Token by token: grown = any inside token within Chebyshev distance `by`; shrunk = all of them."""
    rows, cols = grid
    out = torch.zeros_like(inside)
    for r in range(inside.shape[0]):
        for i in range(rows * cols):
            y, x = divmod(i, cols)
            near = [
                inside[r, yy * cols + xx]
                for yy in range(max(0, y - abs(by)), min(rows, y + abs(by) + 1))
                for xx in range(max(0, x - abs(by)), min(cols, x + abs(by) + 1))
            ]
            out[r, i] = any(near) if by > 0 else all(near)
    return out


@pytest.mark.parametrize("by", [1, 2, -1])
def test_grown_gate_is_the_hand_dilation_or_erosion_on_the_token_grid(by):
    generator = torch.Generator().manual_seed(10 + by)
    grid = (4, 5)  # not square: rows and columns must not be swapped
    codes = torch.relu(torch.randn(3, 20, 6, generator=generator))
    activation = torch.randn(3, 20, D, generator=generator)
    plain = Gate(latents=(1,), threshold=0.8 if by > 0 else 0.2).inside(activation, codes)
    expected = _grown_by_hand(plain, grid, by)
    assert not torch.equal(expected, plain)
    gate = Gate(latents=(1,), threshold=0.8 if by > 0 else 0.2, grow=by)
    assert torch.equal(gate.inside(activation, codes, grid=grid), expected)
    inverted = Gate(latents=(1,), threshold=0.8 if by > 0 else 0.2, grow=by, invert=True)
    assert torch.equal(inverted.inside(activation, codes, grid=grid), ~expected)  # grow first, then invert
    assert Gate.from_dict(gate.to_dict()) == gate and gate.to_dict()["grow"] == by
    with pytest.raises(ValueError, match="needs the token grid"):
        gate.inside(activation, codes)
    with pytest.raises(ValueError, match=re.escape("grid 5 x 5 has 25")):
        gate.inside(activation, codes, grid=(5, 5))
    with pytest.raises(ValueError, match="whole number of tokens"):
        Gate.from_dict({"latents": [1], "grow": 1.5})


def _moved_by_hand(inside: torch.Tensor, grid: tuple[int, int], center: tuple) -> torch.Tensor:
    """Per row: the (row, column) of every inside token, moved by the rounded distance from their mean to
    `center` (token centres at (i + 0.5) / n), kept if still on the image."""
    rows, cols = grid
    out = torch.zeros_like(inside)
    for r in range(inside.shape[0]):
        cells = [divmod(i, cols) for i in range(rows * cols) if inside[r, i]]
        if not cells:
            continue
        y_mean = sum(y for y, _ in cells) / len(cells)
        x_mean = sum(x for _, x in cells) / len(cells)
        dy = 0 if center[1] is None else round((center[1] * rows - 0.5) - y_mean)
        dx = 0 if center[0] is None else round((center[0] * cols - 0.5) - x_mean)
        for y, x in cells:
            if 0 <= y + dy < rows and 0 <= x + dx < cols:
                out[r, (y + dy) * cols + x + dx] = True
    return out


@pytest.mark.parametrize("center", [(0.1, None), (0.9, 0.2), (None, 0.95)])
def test_gate_center_at_moves_each_rows_tokens_so_their_centre_lands_there(center):
    generator = torch.Generator().manual_seed(21)
    grid = (6, 7)
    codes = torch.zeros(4, 42, 3)
    for r, (y, x) in enumerate([(1, 1), (3, 4), (4, 2), (0, 5)]):  # a small blob per row, somewhere else each time
        for dy, dx in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 1)]:
            if y + dy < 6 and x + dx < 7:
                codes[r, (y + dy) * 7 + x + dx, 0] = 1.0 + torch.rand(1, generator=generator)
    codes[3] = 0.0  # a row where the concept is nowhere stays empty
    activation = torch.randn(4, 42, D, generator=generator)
    plain = Gate(latents=(0,)).inside(activation, codes)
    expected = _moved_by_hand(plain, grid, center)
    gate = Gate(latents=(0,), center_at=center)
    got = gate.inside(activation, codes, grid=grid)
    assert torch.equal(got, expected) and not torch.equal(got, plain) and not got[3].any()
    assert torch.equal(Gate(latents=(0,), center_at=center, invert=True).inside(activation, codes, grid=grid), ~got)
    assert Gate.from_dict(gate.to_dict()) == gate and gate.to_dict()["center_at"] == list(center)
    with pytest.raises(ValueError, match=re.escape("gate center_at must be [x, y], each in [0, 1] or null")):
        Gate.from_dict({"latents": [0], "center_at": [1.5, 0.2]})
    with pytest.raises(ValueError, match="needs the token grid"):
        gate.inside(activation, codes)


def test_gate_dict_round_trip_and_refusals(tmp_path):
    path = LinearProbe(HOOK, torch.zeros(D), 0.0).save(tmp_path / "probe.safetensors")
    for gate in (Gate(latents=(4, 1)), Gate(latents=(3,), threshold=0.5, invert=True), Gate(probe=str(path))):
        assert Gate.from_dict(gate.to_dict()) == gate
    assert Gate(latents=(4, 1)).to_dict() == {"latents": [4, 1]}  # defaults are left out
    assert Gate.from_dict({"latents": [4, 1]}).latents == (4, 1)
    cases = [
        ({"latents": [1], "thresh": 1.0}, "gate: unknown key 'thresh' (did you mean 'threshold'?)"),
        ({"latents": [1], "probe": str(path)}, "a gate needs exactly one of `latents` or `probe`"),
        ({}, "a gate needs exactly one of `latents` or `probe`"),
        ({"latents": []}, "gate latents must be a non-empty list of non-negative ints"),
        ({"latents": [1, -2]}, "gate latents must be a non-empty list of non-negative ints"),
        ({"latents": [1], "threshold": float("nan")}, "gate threshold must be a finite number"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            Gate.from_dict(data)
    with pytest.raises(ValueError, match="expected a mapping"):
        Gate.from_dict([1, 2])
    with pytest.raises(FileNotFoundError, match="fit one with gates.fit_probe"):
        Gate(probe=str(tmp_path / "missing.safetensors"))
