"""Steering with gates, op swap and typical units, checked on a tiny random DiT (16 tokens of width 8) against
activations captured by plain torch forward hooks on the transformer block and hand computations with the
SAE's own encode/decode.

What is checked against what:
- tokens outside a gate (latent gate: any gate latent's code above the threshold; probe gate: x . w + b above
  it; both decided from the unsteered activation; `invert` flips) keep the unsteered block output bit for bit
  (torch.equal); tokens inside equal x + decode(edited codes) - decode(codes) by hand (atol 1e-5, float32
  in another operation order); the trace counts the gated tokens.
- `swap` clamps the targets and zeroes the competitors, `unit: typical` multiplies add/clamp values by
  `typical` and leaves scale factors alone: hand computation, atol 1e-5.
- a spec holding gates, typical units and competitors round-trips through YAML and JSON (equality); bad gates
  and edits are refused with a ValueError naming the problem; a probe fitted on another hook is refused.
"""

from __future__ import annotations

import re
import shutil

import pytest
import torch
import yaml
from sae_lens import SAE
from torch import Tensor

from sae_lens_dit import HookedDiT
from sae_lens_dit.analysis.interventions.gates import Gate, LinearProbe
from sae_lens_dit.analysis.interventions.spec import LatentEdit, SteeringSpec
from sae_lens_dit.analysis.interventions.steering import check_spec, steer
from sae_lens_dit.conventions import timestep_scope

HOOK = "blocks.0.hook_resid_post"
D = 8


def _inputs(seed: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(3, 4, 8, 8, generator=generator),
        "timestep": torch.tensor([50.0, 620.0, 980.0]),
        "class_labels": torch.tensor([1, 2, 3]),
    }


def _block_output(
    capture,
    pipe,
    hooked: HookedDiT,
    inputs: dict[str, Tensor],
    sae: SAE | None = None,
    spec: SteeringSpec | None = None,
) -> tuple[Tensor, list]:
    """Output of transformer block 0 as a plain torch forward hook sees it (`capture`, the conftest's
    block0_output), unsteered or with `spec` applied."""
    if spec is None:
        return capture(pipe.transformer, inputs), []
    with steer(hooked, [sae], spec) as trace:
        out = capture(pipe.transformer, inputs)
    return out, trace.records


def _encode(sae: SAE, x: Tensor, t: Tensor) -> Tensor:
    with torch.no_grad(), timestep_scope(sae, t):
        return sae.encode(x)


def _hand(sae: SAE, x: Tensor, t: Tensor, edited: Tensor, codes: Tensor, inside: Tensor) -> Tensor:
    """x + (decode(edited) - decode(codes)) on the tokens `inside` [batch, tokens], x elsewhere."""
    with torch.no_grad(), timestep_scope(sae, t):
        delta = sae.decode(edited) - sae.decode(codes.clone())
    return x + torch.where(inside[..., None], delta, torch.zeros_like(delta))


def _between(score: Tensor) -> float:
    """A threshold halfway between the two middle scores: no token sits on it, so the package's float32 score and
    the float64 one by hand put every token on the same side (a token at exactly the median flipped on some CPUs)."""
    ordered = score.flatten().double().sort().values
    middle = len(ordered) // 2
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def _apply(codes: Tensor, op: str, latents: list[int], values: Tensor, competitors: list[int] = ()) -> Tensor:
    edited = codes.clone()
    if op == "add":
        edited[..., latents] += values
    elif op in ("clamp", "swap"):
        edited[..., latents] = values
    elif op == "scale":
        edited[..., latents] *= values
    edited[..., list(competitors)] = 0.0
    return edited


@pytest.mark.parametrize("kind", ["topk", "tide"])
@pytest.mark.parametrize("gate_by", ["latents", "probe"])
@pytest.mark.parametrize("op", ["add", "clamp"])
@pytest.mark.parametrize("invert", [False, True], ids=["inside", "inverted"])
def test_gated_edit_touches_only_the_gated_tokens(block0_output, pipe, make_sae, tmp_path, kind, gate_by, op, invert):
    sae, hooked = make_sae(kind), HookedDiT(pipe.transformer)
    inputs = _inputs(seed=7)
    t = inputs["timestep"]
    x, _ = _block_output(block0_output, pipe, hooked, inputs)
    codes = _encode(sae, x, t)
    if gate_by == "latents":
        latents = [int(i) for i in (codes > 0).sum((0, 1)).argsort(descending=True)[:2]]  # two that fire here
        score = codes[..., latents].amax(-1)
        threshold = _between(score[score > 0])
        gate = Gate(latents=tuple(latents), threshold=threshold, invert=invert)
    else:
        probe = LinearProbe(HOOK, torch.randn(D, generator=torch.Generator().manual_seed(1)), 0.2)
        score = (x.double() * probe.weight.double()).sum(-1) + probe.bias  # the probe's logit by hand
        threshold = _between(score)
        gate = Gate(probe=str(probe.save(tmp_path / "probe.safetensors")), threshold=threshold, invert=invert)
    inside = (score > threshold) != invert
    assert 0 < int(inside.sum()) < inside.numel()
    edit = LatentEdit(HOOK, (3, 17, 30), op, (2.5, -1.0, 0.7), gate=gate)
    got, records = _block_output(block0_output, pipe, hooked, inputs, sae, SteeringSpec((edit,)))

    assert torch.equal(got[~inside], x[~inside])
    expected = _hand(sae, x, t, _apply(codes, op, [3, 17, 30], torch.tensor([2.5, -1.0, 0.7])), codes, inside)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (got[inside] - x[inside]).abs().amax(-1).gt(1e-4).all()
    assert [r["edited_tokens"] for r in records] == [int(inside.sum())]


@pytest.mark.parametrize("grow", [1, -1])
def test_grown_gate_edits_the_ring_around_or_the_core_of_the_gated_tokens(block0_output, pipe, make_sae, grow):
    sae, hooked = make_sae("tide"), HookedDiT(pipe.transformer)
    inputs = _inputs(seed=9)
    t = inputs["timestep"]
    x, _ = _block_output(block0_output, pipe, hooked, inputs)
    codes = _encode(sae, x, t)
    latent = int((codes > 0).sum((0, 1)).argmax())  # the latent that fires on most tokens here
    score = codes[..., latent]
    threshold = float(score[score > 0].quantile(0.7 if grow > 0 else 0.0)) - 1e-6
    plain = (score > threshold).reshape(-1, 4, 4)  # the tiny DiT's 16 tokens on a 4 x 4 grid
    pooled = torch.nn.functional.max_pool2d((plain if grow > 0 else ~plain).float()[:, None], 3, 1, 1)[:, 0] > 0
    inside = (pooled if grow > 0 else ~pooled).reshape(len(plain), 16)  # dilation, or erosion = not dilated outside
    assert 0 < int(inside.sum()) < inside.numel() and not torch.equal(inside, plain.reshape(inside.shape))
    edit = LatentEdit(HOOK, (3,), "add", 2.0, gate=Gate(latents=(latent,), threshold=threshold, grow=grow))
    got, records = _block_output(block0_output, pipe, hooked, inputs, sae, SteeringSpec((edit,)))
    assert torch.equal(got[~inside], x[~inside])
    expected = _hand(sae, x, t, _apply(codes, "add", [3], torch.tensor([2.0])), codes, inside)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert [r["edited_tokens"] for r in records] == [int(inside.sum())]
    if grow > 0:  # the same tokens, moved to the left edge: the gate's columns shift by the rounded distance
        moved = torch.zeros_like(plain)
        for r in range(len(plain)):
            if plain[r].any():
                dx = round(0.125 * 4 - 0.5 - float(plain[r].nonzero()[:, 1].float().mean()))  # <= 0: leftward
                moved[r, :, : 4 + dx] = plain[r, :, -dx:]
        gate = Gate(latents=(latent,), threshold=threshold, center_at=(0.125, None))
        edit = LatentEdit(HOOK, (3,), "add", 2.0, gate=gate)
        got, _ = _block_output(block0_output, pipe, hooked, inputs, sae, SteeringSpec((edit,)))
        inside = moved.reshape(len(plain), 16)
        assert int(inside.sum()) > 0 and not torch.equal(inside, plain.reshape(inside.shape))
        expected = _hand(sae, x, t, _apply(codes, "add", [3], torch.tensor([2.0])), codes, inside)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_gate_reads_the_unedited_activation_when_edits_chain(block0_output, pipe, make_sae):
    sae, hooked = make_sae("standard"), HookedDiT(pipe.transformer)
    inputs = _inputs(seed=8)
    t = inputs["timestep"]
    x, _ = _block_output(block0_output, pipe, hooked, inputs)
    codes = _encode(sae, x, t)
    threshold = float(codes[..., 6].median())
    inside = codes[..., 6] > threshold
    assert 0 < int(inside.sum()) < inside.numel()
    first = LatentEdit(HOOK, (6,), "zero")  # switches the gate latent off everywhere before the gated edit runs
    second = LatentEdit(HOOK, (3,), "add", 2.0, gate=Gate(latents=(6,), threshold=threshold))
    got, _ = _block_output(block0_output, pipe, hooked, inputs, sae, SteeringSpec((first, second)))
    edited = codes.clone()
    edited[..., 6] = 0.0
    edited[..., 3] += 2.0 * inside
    torch.testing.assert_close(got, _hand(sae, x, t, edited, codes, torch.ones_like(inside)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("gated", [False, True])
def test_swap_clamps_targets_and_zeroes_competitors(block0_output, pipe, make_sae, gated):
    sae, hooked = make_sae("standard"), HookedDiT(pipe.transformer)
    inputs = _inputs(seed=9)
    t = inputs["timestep"]
    x, _ = _block_output(block0_output, pipe, hooked, inputs)
    codes = _encode(sae, x, t)
    competitors = [5, 9, 30]
    assert (codes[..., competitors] > 0).any(-1).float().mean() > 0.5  # zeroing them changes most tokens
    gate, inside = None, torch.ones(codes.shape[:2], dtype=torch.bool)
    if gated:
        threshold = float(codes[..., 11].median())
        gate, inside = Gate(latents=(11,), threshold=threshold), codes[..., 11] > threshold
    edit = LatentEdit(HOOK, (3, 17), "swap", (2.0, 1.5), competitors=tuple(competitors), gate=gate)
    got, _ = _block_output(block0_output, pipe, hooked, inputs, sae, SteeringSpec((edit,)))
    edited = _apply(codes, "swap", [3, 17], torch.tensor([2.0, 1.5]), competitors)
    torch.testing.assert_close(got, _hand(sae, x, t, edited, codes, inside), atol=1e-5, rtol=0)
    assert torch.equal(got[~inside], x[~inside])
    assert edit.columns == (3, 17, 5, 9, 30)


@pytest.mark.parametrize("op", ["add", "clamp", "swap", "scale"])
def test_typical_unit_multiplies_values_by_typical(block0_output, pipe, make_sae, op):
    sae, hooked = make_sae("tide"), HookedDiT(pipe.transformer)
    inputs = _inputs(seed=10)
    t = inputs["timestep"]
    x, _ = _block_output(block0_output, pipe, hooked, inputs)
    codes = _encode(sae, x, t)
    competitors = (8,) if op == "swap" else ()
    edit = LatentEdit(HOOK, (3, 17), op, (1.5, 2.0), unit="typical", typical=(0.8, 3.0), competitors=competitors)
    raw = [1.5 * 0.8, 2.0 * 3.0] if op != "scale" else [1.5, 2.0]  # scale: a plain factor
    assert edit.values().tolist() == raw
    raw = torch.tensor(raw)
    got, _ = _block_output(block0_output, pipe, hooked, inputs, sae, SteeringSpec((edit,)))
    edited = _apply(codes, op, [3, 17], raw, competitors)
    torch.testing.assert_close(
        got, _hand(sae, x, t, edited, codes, torch.ones(3, 16, dtype=torch.bool)), atol=1e-5, rtol=0
    )


def test_spec_with_gates_round_trips_through_yaml_and_json(tmp_path, monkeypatch):
    (tmp_path / "specs" / "probes").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    near = LinearProbe(HOOK, torch.randn(D), -0.25).save(tmp_path / "specs" / "probes" / "near.safetensors")
    far = LinearProbe(HOOK, torch.randn(D), 0.5).save(tmp_path / "elsewhere" / "far.safetensors")
    spec = SteeringSpec(
        (
            LatentEdit(
                HOOK,
                (1, 2),
                "swap",
                1.5,
                gate=Gate(latents=(4, 5), threshold=0.25),
                unit="typical",
                typical=(0.5, 2.0),
                competitors=(7, 8),
                timesteps=(300, 700),
            ),
            LatentEdit(
                HOOK, (3,), "add", 2.0, gate=Gate(probe=str(near), threshold=-1.0, invert=True), box=(0, 0, 0.5, 1)
            ),
            LatentEdit(HOOK, (4,), "clamp", 1.0, gate=Gate(probe=str(far))),
            LatentEdit(HOOK, (9,), "zero"),
        )
    )
    monkeypatch.chdir(tmp_path / "elsewhere")  # relative probe paths are read against the spec's folder, not the cwd
    for name in ("spec.yaml", "spec.json"):
        path = spec.save(tmp_path / "specs" / name)
        assert SteeringSpec.load(path) == spec
    written = yaml.safe_load((tmp_path / "specs" / "spec.yaml").read_text())["edits"]
    assert written[0]["gate"] == {"latents": [4, 5], "threshold": 0.25} and written[0]["unit"] == "typical"
    assert written[1]["gate"] == {"probe": "probes/near.safetensors", "threshold": -1.0, "invert": True}
    assert written[2]["gate"] == {"probe": str(far)}  # outside the spec's folder: kept absolute
    assert "gate" not in written[3] and "unit" not in written[3] and "competitors" not in written[3]
    shutil.copytree(tmp_path / "specs", tmp_path / "moved")  # a spec folder moves with its probes
    moved = SteeringSpec.load(tmp_path / "moved" / "spec.yaml")
    assert moved.edits[1].gate.probe == str(tmp_path / "moved" / "probes" / "near.safetensors")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"gate": {"latents": [1], "when": "early"}}, "edits[0]: gate: unknown key 'when'"),
        ({"gate": {"latents": [1], "probe": "PROBE"}}, "edits[0]: a gate needs exactly one of `latents` or `probe`"),
        ({"gate": {"threshold": 1.0}}, "a gate needs exactly one of `latents` or `probe`"),
        ({"gate": [1, 2]}, "gate: expected a mapping with `latents` or `probe`, received (1, 2)"),
        ({"gate": "probe.safetensors"}, "gate: expected a mapping with `latents` or `probe`"),
        ({"op": "clamp", "competitors": [4]}, "competitors are only used by op swap"),
        ({"op": "swap", "competitors": [1, 4]}, "latents [1] are both targets and competitors"),
        ({"unit": "typical"}, "unit typical needs `typical`"),
        ({"unit": "typical", "typical": [1.0, 2.0]}, "typical needs one non-negative number per latent (1)"),
        ({"unit": "typical", "typical": [-1.0]}, "typical needs one non-negative number per latent"),
        ({"unit": "sigma"}, "unit must be one of ['raw', 'typical']"),
    ],
)
def test_bad_gated_specs_say_what_is_wrong(tmp_path, changes, message):
    probe = str(LinearProbe(HOOK, torch.zeros(D), 0.0).save(tmp_path / "probe.safetensors"))
    if isinstance(changes.get("gate"), dict) and changes["gate"].get("probe") == "PROBE":
        changes = {"gate": {**changes["gate"], "probe": probe}}
    with pytest.raises(ValueError, match=re.escape(message)):
        SteeringSpec.from_dict({"edits": [{"hook": HOOK, "latents": [1], "op": "add", "value": 1.0, **changes}]})


def test_steer_refuses_a_probe_of_another_hook_and_out_of_range_latents(block0_output, pipe, make_sae, tmp_path):
    sae, hooked = make_sae("topk"), HookedDiT(pipe.transformer)
    other = LinearProbe("blocks.1.hook_resid_post", torch.zeros(D), 0.0).save(tmp_path / "other.safetensors")
    cases = [
        (
            LatentEdit(HOOK, (1,), "add", 1.0, gate=Gate(probe=str(other))),
            f"its gate's probe {other} was fitted on blocks.1.hook_resid_post; fit a probe on {HOOK}",
        ),
        (LatentEdit(HOOK, (1,), "add", 1.0, gate=Gate(latents=(32,))), "latent index(es) [32] out of range"),
        (LatentEdit(HOOK, (1,), "swap", 1.0, competitors=(40,)), "latent index(es) [40] out of range"),
    ]
    for edit, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)), steer(hooked, [sae], SteeringSpec((edit,))):
            pipe.transformer(**_inputs(seed=0))


def test_steering_a_transcoder_is_one_clear_error(pipe):
    """A transcoder reads mlp.hook_in and writes mlp.hook_out; an edit decoded at its read hook would silently change
    the MLP's input, so check_spec refuses it and names the transcoder."""
    from sae_lens.saes.sae import SAEMetadata

    from sae_lens_dit.saes import TideTranscoder, TideTranscoderConfig

    meta = SAEMetadata(hook_name="blocks.0.mlp.hook_in", hook_name_out="blocks.0.mlp.hook_out")
    cfg = TideTranscoderConfig(
        d_in=8,
        d_out=8,
        d_sae=32,
        k=4,
        skip=True,
        rescale_acts_by_decoder_norm=False,
        normalize_activations="none",
        metadata=meta,
    )
    tc = TideTranscoder(cfg)
    spec = SteeringSpec((LatentEdit("blocks.0.mlp.hook_in", (3,), "add", (1.0,)),))
    with pytest.raises(ValueError, match=r"blocks\.0\.mlp/tide_transcoder is a transcoder .*steer an SAE of"):
        check_spec(HookedDiT(pipe.transformer), [tc], spec)
