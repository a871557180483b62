"""`sae_lens_dit.analysis.interventions.recipes`: edits built from latent selections, reference matching,
transfer and suppression.

What is checked against what:
- `selection_edit` / `swap_spec` / `suppression_spec` against `LatentEdit`s written out by hand (equality):
  the window "auto" resolved by hand from the selection's bucket scores, competitors = the other selections'
  latents at the same hook minus the target's own, in order, without repeats.
- a `swap_spec` applied with `steer` on a tiny random DiT against a hand computation with the SAE's own
  encode/decode (targets clamped at value x typical, competitors zeroed, only rows in the window and tokens
  in the gate): atol 1e-5; rows and tokens outside: torch.equal with the unsteered block output.
- `match_reference` scores against a hand computation on planted reference codes (mean code of each
  selection's latents over the buckets of its window and the chosen tokens, divided by its typical value,
  averaged over latents): atol 1e-9; the picked key follows the planted codes.
- `transfer_spec` returns (swap_spec toward the matched key, that key).
- `encode_reference` codes against a hand noising (the scheduler's alphas_cumprod, the same generator draws),
  a plain torch forward hook on the block and the TIDE SAE's encode at each bucket's timestep: atol 1e-5.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor

from sae_lens_dit import HookedDiT
from sae_lens_dit.analysis.interventions.gates import Gate
from sae_lens_dit.analysis.interventions.recipes import (
    ReferenceLatents,
    encode_reference,
    match_reference,
    selection_edit,
    suppression_spec,
    swap_spec,
    transfer_spec,
)
from sae_lens_dit.analysis.interventions.selection import LatentSelection
from sae_lens_dit.analysis.interventions.spec import LatentEdit, SteeringSpec
from sae_lens_dit.analysis.interventions.steering import steer
from sae_lens_dit.conventions import timestep_scope

HOOK = "blocks.0.hook_resid_post"
OTHER = "blocks.1.hook_resid_post"
EDGES = (0.0, 200.0, 400.0, 600.0, 800.0, 1000.0)
PEAK_2_3 = ((0.0, 0.0), (0.1, 0.0), (1.0, 0.9), (0.8, 0.2), (0.0, -0.3))
"""Bucket scores whose positive sums (0, 0.1, 1.9, 1.0, 0) give the profile window (400, 800) at fraction 0.5."""


def _selection(latents, typical=None, bucket_score=PEAK_2_3, hook=HOOK, window=None) -> LatentSelection:
    """A selection of `latents`; `bucket_score` rows of another length are replaced by their first value per latent."""
    latents = tuple(latents)
    typical = tuple(typical) if typical is not None else (1.0,) * len(latents)
    scores = tuple(b if len(b) == len(latents) else (b[0],) * len(latents) for b in bucket_score)
    selection = LatentSelection(hook, latents, typical, (1.0,) * len(latents), scores, edges=EDGES)
    return selection if window is None else selection.with_window(window)


def test_selection_edit_builds_the_edit_by_hand():
    selection = _selection((4, 7), typical=(2.0, 0.5))
    gate = Gate(latents=(1,), threshold=0.5)
    clamp = selection_edit(selection, "clamp", 1.5, gate=gate, competitors=(3, 4, 3, 9), box=(0, 0, 0.5, 0.5))
    assert clamp == LatentEdit(
        HOOK,
        (4, 7),
        "clamp",
        1.5,
        timesteps=(400.0, 800.0),
        box=(0, 0, 0.5, 0.5),
        gate=gate,
        unit="typical",
        typical=(2.0, 0.5),
    )
    assert clamp.values().tolist() == [3.0, 0.75]
    swap = selection_edit(selection, "swap", 1.0, competitors=(3, 4, 3, 9), window=None, branch="cond")
    assert swap == LatentEdit(
        HOOK, (4, 7), "swap", 1.0, branch="cond", unit="typical", typical=(2.0, 0.5), competitors=(3, 9)
    )
    assert selection_edit(selection, "scale", 2.0, window=(100, 200)).values().tolist() == [2.0, 2.0]
    assert selection_edit(selection, "scale", 2.0, window=(100, 200)).timesteps == (100.0, 200.0)
    measured = selection.with_window((0.0, 300.0))
    assert selection_edit(measured, "add", 1.0).timesteps == (0.0, 300.0)  # a measured window wins over the profile
    with pytest.raises(ValueError, match=re.escape(f"the selection at {HOOK} holds no latent")):
        selection_edit(_selection(()), "clamp")


def _selections() -> dict[str, LatentSelection]:
    return {
        "red": _selection((1, 2), typical=(2.0, 0.5)),
        "green": _selection((2, 5), typical=(1.0, 1.0)),
        "blue": _selection((6,), typical=(3.0,)),
        "deep": _selection((9,), hook=OTHER),  # another hook: never a competitor of HOOK's edit
    }


def test_swap_spec_clamps_the_target_and_zeroes_the_other_values_latents():
    selections = _selections()
    gate = Gate(latents=(11,))
    spec = swap_spec(selections, "red", 1.5, gate=gate)
    expected = LatentEdit(
        HOOK,
        (1, 2),
        "swap",
        1.5,
        timesteps=(400.0, 800.0),
        gate=gate,
        unit="typical",
        typical=(2.0, 0.5),
        competitors=(5, 6),
    )
    assert spec == SteeringSpec((expected,))
    assert swap_spec(selections, "blue", window=None).edits[0].competitors == (1, 2, 5)
    assert swap_spec(selections, "deep").edits == (
        LatentEdit(OTHER, (9,), "swap", 1.0, timesteps=(400.0, 800.0), unit="typical", typical=(1.0,)),
    )
    with pytest.raises(ValueError, match=re.escape("no selection for 'pink'; selections exist for ['red', 'green'")):
        swap_spec(selections, "pink")


def test_swap_spec_steers_by_hand(block0_output, pipe, make_sae):
    sae, hooked = make_sae("standard"), HookedDiT(pipe.transformer)
    generator = torch.Generator().manual_seed(6)
    inputs = {
        "hidden_states": torch.randn(3, 4, 8, 8, generator=generator),
        "timestep": torch.tensor([50.0, 620.0, 980.0]),
        "class_labels": torch.tensor([1, 2, 3]),
    }
    x = block0_output(pipe.transformer, inputs)
    with torch.no_grad():
        codes = sae.encode(x)
    threshold = float(codes[..., 11].median())
    spec = swap_spec(_selections(), "red", 1.5, gate=Gate(latents=(11,), threshold=threshold))  # window (400, 800)
    with steer(hooked, [sae], spec):
        got = block0_output(pipe.transformer, inputs)
    inside = torch.zeros(3, 16, dtype=torch.bool)
    inside[1] = codes[1, :, 11] > threshold  # only row 1 (t = 620) is in the window
    assert 0 < int(inside.sum()) < 16 and (codes[1][inside[1]][:, [5, 6]] > 0).any()
    edited = codes.clone()
    edited[..., [1, 2]] = torch.tensor([1.5 * 2.0, 1.5 * 0.5])
    edited[..., [5, 6]] = 0.0
    with torch.no_grad():
        delta = sae.decode(edited) - sae.decode(codes.clone())
    assert torch.equal(got[~inside], x[~inside])
    torch.testing.assert_close(got[inside], (x + delta)[inside], atol=1e-5, rtol=0)


def _reference() -> ReferenceLatents:
    generator = torch.Generator().manual_seed(8)
    codes = torch.relu(torch.randn(5, 16, 32, generator=generator)) * 0.2
    codes[4, :, [1, 2]] = 5.0  # red's latents fire hard, but only outside red's window
    codes[2:, :, 3] = 3.0  # blue-ish: 3 / typical 2 = 1.5 over its measured window
    codes[2:, :, 4] = 2.0 + torch.rand(3, 16, generator=generator)
    codes[:, :, 5] = 8.0  # high raw codes, but typical 10
    return ReferenceLatents(HOOK, EDGES, torch.tensor([100.0, 300.0, 500.0, 700.0, 900.0]), codes)


def _reference_selections() -> dict[str, LatentSelection]:
    early = ((1.0,), (0.6,), (0.0,), (0.0,), (0.0,))  # profile window (0, 400)
    return {
        "red": _selection((1, 2), bucket_score=((1.0, 1.0), (0.6, 0.6), (0, 0), (0, 0), (0, 0))),  # (0, 400)
        "blue": _selection((3, 4), typical=(2.0, 2.0), window=(400.0, 1000.0)),
        "gold": _selection((5,), typical=(10.0,), bucket_score=early),
        "deep": _selection((6,), hook=OTHER),
        "none": _selection(()),
    }


def _hand_match(reference: ReferenceLatents, window: dict[str, tuple[float, float]], tokens=None) -> dict[str, float]:
    mids = [100.0, 300.0, 500.0, 700.0, 900.0]
    codes = reference.codes.double() if tokens is None else reference.codes.double()[:, tokens]
    out = {}
    for key, selection in _reference_selections().items():
        if key not in window:
            continue
        use = [b for b, m in enumerate(mids) if window[key][0] <= m <= window[key][1]]
        out[key] = sum(
            float(codes[use][..., latent].mean()) / typical
            for latent, typical in zip(selection.latents, selection.typical, strict=True)
        ) / len(selection.latents)
    return out


def test_match_reference_normalises_by_typical_within_each_window():
    reference, selections = _reference(), _reference_selections()
    windows = {"red": (0.0, 400.0), "blue": (400.0, 1000.0), "gold": (0.0, 400.0)}  # by hand from the bucket scores
    best, scores = match_reference(reference, selections)
    expected = _hand_match(reference, windows)
    assert set(scores) == set(expected) and best == "blue"
    for key, value in expected.items():
        assert abs(scores[key] - value) < 1e-9, key
    assert max(expected, key=expected.get) == "blue" and expected["red"] < expected["blue"]

    tokens = torch.tensor([0, 5, 9])
    planted = ReferenceLatents(HOOK, EDGES, reference.timesteps, reference.codes.clone())
    planted.codes[:, tokens, 5] = 30.0  # gold fires at 3x its typical value, on these tokens only
    best, scores = match_reference(planted, selections, tokens=tokens)
    expected = _hand_match(planted, windows, tokens)
    assert best == "gold" and all(abs(scores[k] - v) < 1e-9 for k, v in expected.items())
    assert match_reference(planted, selections)[0] == "blue"  # over all tokens blue still wins
    everywhere = {key: (0.0, 1000.0) for key in windows}  # in_window=False: every bucket, as selection scores
    _, scores = match_reference(reference, selections, in_window=False)
    assert all(abs(scores[k] - v) < 1e-9 for k, v in _hand_match(reference, everywhere).items())

    with pytest.raises(ValueError, match=re.escape(f"no selection with latents reads {HOOK}")):
        match_reference(reference, {"deep": selections["deep"], "none": selections["none"]})


def test_transfer_spec_swaps_toward_the_matched_value():
    reference, selections = _reference(), _reference_selections()
    gate = Gate(latents=(12,), invert=True)
    spec, key = transfer_spec(reference, selections, 2.0, gate=gate, branch="cond")
    assert key == "blue"
    assert spec == swap_spec(selections, "blue", 2.0, gate=gate, branch="cond")
    assert spec.edits[0].latents == (3, 4) and spec.edits[0].competitors == (1, 2, 5)
    assert spec.edits[0].timesteps == (400.0, 1000.0) and spec.edits[0].values().tolist() == [4.0, 4.0]


def test_suppression_spec_zeroes_the_latents():
    gate = Gate(latents=(3,), threshold=1.0)
    assert suppression_spec(HOOK, [1, 2]).edits == (LatentEdit(HOOK, (1, 2), "zero"),)
    spec = suppression_spec(HOOK, (5,), "uncond", gate=gate, timesteps=(100.0, 500.0))
    assert spec == SteeringSpec((LatentEdit(HOOK, (5,), "zero", branch="uncond", gate=gate, timesteps=(100.0, 500.0)),))


def test_encode_reference_reads_codes_at_bucket_middles(pipe, make_sae):
    sae, hooked = make_sae("tide"), HookedDiT(pipe.transformer)
    image = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    reference = encode_reference(pipe, hooked, sae, image, seed=5, edges=(0, 500, 1000), class_labels=torch.tensor([2]))
    assert reference.hook == HOOK and reference.edges == (0.0, 500.0, 1000.0)
    assert torch.equal(reference.timesteps, torch.tensor([250.0, 750.0]))

    noise = torch.randn((2, 1, 4, 8, 8), generator=torch.Generator().manual_seed(5))  # record_noised's draw
    alphas = pipe.scheduler.alphas_cumprod
    noisy = torch.cat(
        [alphas[t].sqrt() * image[None] + (1 - alphas[t]).sqrt() * noise[k] for k, t in enumerate((250, 750))]
    )
    store: list[Tensor] = []
    handle = pipe.transformer.transformer_blocks[0].register_forward_hook(lambda _m, _a, out: store.append(out))
    try:
        with torch.no_grad():
            pipe.transformer(noisy, timestep=torch.tensor([250, 750]), class_labels=torch.tensor([2, 2]))
    finally:
        handle.remove()
    with torch.no_grad(), timestep_scope(sae, torch.tensor([250.0, 750.0])):
        expected = sae.encode(store[0])
    assert reference.codes.shape == (2, 16, 32)
    torch.testing.assert_close(reference.codes, expected, atol=1e-5, rtol=0)


def test_code_centroids_and_match_centroids_against_hand_means_and_cosines(make_sae):
    from sae_lens_dit.analysis.interventions.recipes import match_centroids
    from sae_lens_dit.analysis.interventions.selection import code_centroids

    sae = make_sae("tide")
    generator = torch.Generator().manual_seed(3)
    n_rows, d_in = 240, sae.cfg.d_in
    rows = {
        "activation": torch.randn(n_rows, d_in, generator=generator),
        "timestep": torch.randint(0, 1001, (n_rows,), generator=generator).float(),
        "image": torch.randint(0, 6, (n_rows,), generator=generator),
    }
    hue = ["red", "blue", "red", "gold", "blue", "red"]  # a label per image
    gate = torch.rand(n_rows, generator=generator) > 0.3
    centroids = code_centroids(sae, rows, hue, gate=gate, edges=EDGES)
    with torch.no_grad(), timestep_scope(sae, rows["timestep"]):
        codes = sae.encode(rows["activation"]).double()
    assert centroids.values == ("blue", "gold", "red") and centroids.means.shape == (5, 3, sae.cfg.d_sae)
    row_value = [hue[i] for i in rows["image"].tolist()]
    for b in range(5):
        low, high = EDGES[b], EDGES[b + 1]
        in_bucket = (rows["timestep"] >= low) & ((rows["timestep"] <= high) if b == 4 else (rows["timestep"] < high))
        for v, value in enumerate(centroids.values):
            mine = in_bucket & gate & torch.tensor([r == value for r in row_value])
            if mine.any():
                torch.testing.assert_close(centroids.means[b, v], codes[mine].mean(0), atol=1e-6, rtol=0)
            else:
                assert centroids.means[b, v].isnan().all()

    tokens = torch.tensor([1, 4, 6])
    ref_codes = torch.rand(5, 8, sae.cfg.d_sae, generator=generator)
    ref_codes[:, tokens] += 4.0 * centroids.means[:, 1].nan_to_num().float()[:, None]  # gold, on these tokens
    middles = torch.tensor([100.0, 300, 500, 700, 900])
    reference = ReferenceLatents(sae.cfg.metadata.hook_name, EDGES, middles, ref_codes)
    best, scores = match_centroids(reference, centroids, tokens)
    for v, value in enumerate(centroids.values):
        hand = 0.0
        for b in range(5):
            a, c = ref_codes[b, tokens].double().mean(0), centroids.means[b, v]
            if not c.isnan().any():
                hand += float(a @ c / (a.norm() * c.norm()))
        assert abs(scores[value] - hand) < 1e-9, value
    assert best == "gold"
    selections = {"gold": _selection((1,), hook=sae.cfg.metadata.hook_name)}
    spec, key = transfer_spec(reference, selections, centroids=centroids, tokens=tokens)
    assert key == "gold" and spec == swap_spec(selections, "gold")
    with pytest.raises(ValueError, match="centroids read"):
        match_centroids(ReferenceLatents(OTHER, EDGES, reference.timesteps, ref_codes), centroids)
    with pytest.raises(ValueError, match="image_values has 2 entries"):
        code_centroids(sae, rows, ["red", "blue"])
