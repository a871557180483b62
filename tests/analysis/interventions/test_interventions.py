"""Steering specs applied through HookedDiT, checked against hand computations with the SAE's own
encode/decode on a tiny random DiT (16 tokens of width 8) and tiny random SAEs.

Tolerances: "exact" comparisons use torch.equal (the untouched rows/tokens must be bit-identical);
hand computations of edited activations use atol 1e-5 (different float operation order). The `pipe` fixture
is conftest.py's; latent selection, gates and recipes have their own files (test_selection.py, test_gates.py,
test_steering.py, test_recipes.py).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata
from torch import Tensor

from sae_lens_dit import HookedDiT, TideSAE, TideSAEConfig
from sae_lens_dit.analysis.interventions.editing import preview_latent
from sae_lens_dit.analysis.interventions.regions import region_mask
from sae_lens_dit.analysis.interventions.spec import LatentEdit, SAESource, SteeringSpec
from sae_lens_dit.analysis.interventions.steering import steer
from sae_lens_dit.conventions import timestep_scope
from sae_lens_dit.toy.backbones import NULL_CLASS

HOOK = "blocks.0.hook_resid_post"
D, D_SAE = 8, 32


def _randomise(sae: SAE) -> SAE:
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.normal_(0, 0.5)
    return sae


def _topk(rescale: bool = True) -> SAE:
    cfg = TopKSAEConfig(
        d_in=D, d_sae=D_SAE, k=4, rescale_acts_by_decoder_norm=rescale, metadata=SAEMetadata(hook_name=HOOK)
    )
    return _randomise(TopKSAE(cfg))


def _standard() -> SAE:
    return _randomise(StandardSAE(StandardSAEConfig(d_in=D, d_sae=D_SAE, metadata=SAEMetadata(hook_name=HOOK))))


def _tide() -> SAE:
    cfg = TideSAEConfig(
        d_in=D,
        d_sae=D_SAE,
        k=4,
        rescale_acts_by_decoder_norm=True,
        apply_b_dec_to_input=True,
        normalize_activations="none",
        metadata=SAEMetadata(hook_name=HOOK),
    )
    sae = _randomise(TideSAE(cfg))
    with torch.no_grad():  # keep the timestep terms O(1), so float32 hand computations stay within 1e-5
        for parameter in sae.timestep_mlp.parameters():
            parameter.mul_(0.1)
    return sae


def _inputs(timesteps: list[float], labels: list[int]) -> dict[str, Tensor]:
    n = len(timesteps)
    return {
        "hidden_states": torch.randn(n, 4, 8, 8),
        "timestep": torch.tensor(timesteps),
        "class_labels": torch.tensor(labels),
    }


def _activation(
    hooked: HookedDiT, inputs: dict[str, Tensor], sae: SAE | None = None, spec: SteeringSpec | None = None, **kwargs
) -> Tensor:
    """The activation at HOOK after any steering (the cache hook runs after the steering hook)."""
    with torch.no_grad():
        if spec is None:
            return hooked.run_with_cache(**inputs, names_filter=HOOK)[1][HOOK]
        with steer(hooked, [sae], spec, **kwargs):
            return hooked.run_with_cache(**inputs, names_filter=HOOK)[1][HOOK]


def _hand(sae: SAE, x: Tensor, t: Tensor, edit: LatentEdit) -> Tensor:
    """decode(op(encode(x))) - decode(encode(x)) on every row and token, with SAELens's own encode/decode."""
    with torch.no_grad(), timestep_scope(sae, t):
        z = sae.encode(x)
        edited = z.clone()
        cols = list(edit.latents)
        value = torch.as_tensor(edit.value, dtype=z.dtype)
        if edit.op == "add":
            edited[..., cols] += value
        elif edit.op == "clamp":
            edited[..., cols] = value
        elif edit.op == "scale":
            edited[..., cols] *= value
        else:
            edited[..., cols] = 0.0
        return sae.decode(edited) - sae.decode(z.clone())


@pytest.mark.parametrize(
    "make_sae", [_topk, lambda: _topk(False), _standard, _tide], ids=["topk", "topk-raw", "standard", "tide"]
)
@pytest.mark.parametrize("op", ["add", "clamp", "scale", "zero"])
def test_each_operation_equals_hand_computation(pipe, make_sae, op):
    sae, hooked = make_sae(), HookedDiT(pipe.transformer)
    inputs = _inputs([50.0, 620.0, 980.0], [1, 2, NULL_CLASS])
    x = _activation(hooked, inputs)
    edit = LatentEdit(HOOK, (3, 17, 30), op, (2.5, -1.0, 0.7) if op != "zero" else 0.0)
    got = _activation(hooked, inputs, sae, SteeringSpec((edit,)))
    expected = x + _hand(sae, x, inputs["timestep"], edit)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert not torch.equal(got, x)

    replaced = _activation(hooked, inputs, sae, SteeringSpec((edit,)), use_error_term=False)
    with torch.no_grad(), timestep_scope(sae, inputs["timestep"]):
        reconstruction = sae.decode(sae.encode(x))
    torch.testing.assert_close(replaced, reconstruction + _hand(sae, x, inputs["timestep"], edit), atol=1e-5, rtol=0)


def test_edits_compose_in_order(pipe):
    sae, hooked = _topk(), HookedDiT(pipe.transformer)
    inputs = _inputs([300.0, 300.0], [4, 5])
    x = _activation(hooked, inputs)
    first, second = LatentEdit(HOOK, (5,), "clamp", 3.0), LatentEdit(HOOK, (5, 6), "scale", 2.0)
    got = _activation(hooked, inputs, sae, SteeringSpec((first,)) + SteeringSpec((second,)))
    with torch.no_grad():
        z = sae.encode(x)
        edited = z.clone()
        edited[..., 5] = 6.0  # clamped to 3, then doubled
        edited[..., 6] *= 2.0
        expected = x + sae.decode(edited) - sae.decode(z.clone())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_box_leaves_tokens_outside_unchanged(pipe):
    sae, hooked = _tide(), HookedDiT(pipe.transformer)
    inputs = _inputs([700.0, 200.0], [3, NULL_CLASS])
    x = _activation(hooked, inputs)
    edit = LatentEdit(HOOK, (0, 1, 2), "add", 5.0, box=(0.0, 0.0, 0.5, 0.5))  # top-left 2 x 2 of the 4 x 4 grid
    got = _activation(hooked, inputs, sae, SteeringSpec((edit,)))
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[:2, :2] = True
    inside = inside.reshape(-1)
    assert torch.equal(got[:, ~inside], x[:, ~inside])
    assert (got[:, inside] - x[:, inside]).abs().amax(-1).gt(1e-3).all()


def test_mask_image_and_region_mask(tmp_path):
    from PIL import Image

    image = np.zeros((40, 40), np.uint8)
    image[:, 30:] = 255  # right quarter
    Image.fromarray(image).save(tmp_path / "mask.png")
    got = region_mask((4, 4), mask=str(tmp_path / "mask.png")).reshape(4, 4)
    assert got[:, 3].all() and not got[:, :3].any()
    box = region_mask((4, 4), box=(0.5, 0.25, 1.0, 0.5)).reshape(4, 4)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1, 2:] = True
    assert torch.equal(box, expected)
    assert torch.equal(region_mask((4, 4), tokens=(0, 15)).nonzero().squeeze(1), torch.tensor([0, 15]))


def test_pipeline_mask_outside_unchanged_at_first_step(pipe):
    sae, hooked = _topk(), HookedDiT(pipe.transformer)
    edit = LatentEdit(HOOK, (1, 2), "clamp", 4.0, mask=None, tokens=(5, 6, 9, 10))

    def first_step(spec: SteeringSpec | None) -> Tensor:
        generator = torch.Generator().manual_seed(0)
        with steer(hooked, [sae], spec or SteeringSpec()), hooked.record([HOOK]) as rec:  # record sees the edit
            pipe(class_labels=[1, 2], num_inference_steps=3, generator=generator)
        return rec[HOOK][0]  # [batch, tokens, d] of the first call

    plain, steered = first_step(None), first_step(SteeringSpec((edit,)))
    outside = torch.ones(16, dtype=torch.bool)
    outside[[5, 6, 9, 10]] = False
    assert torch.equal(steered[:, outside], plain[:, outside])
    assert not torch.equal(steered[:, ~outside], plain[:, ~outside])


def test_empty_and_inert_specs_give_bit_identical_images(pipe):
    sae, hooked = _topk(), HookedDiT(pipe.transformer)

    def images(spec: SteeringSpec | None) -> np.ndarray:
        generator = torch.Generator().manual_seed(3)
        kwargs = {"class_labels": [1, 7], "num_inference_steps": 4, "generator": generator, "output_type": "np"}
        if spec is None:
            return pipe(**kwargs).images
        with steer(hooked, [sae], spec):
            return pipe(**kwargs).images

    plain = images(None)
    assert np.array_equal(images(SteeringSpec()), plain)
    zero_strength = LatentEdit(HOOK, (0, 9), "add", 0.0)
    never = LatentEdit(HOOK, (4,), "clamp", 9.0, timesteps=(1000.5, 2000.0))
    assert np.array_equal(images(SteeringSpec((zero_strength, never))), plain)
    assert not np.array_equal(images(SteeringSpec((LatentEdit(HOOK, (4,), "clamp", 9.0),))), plain)


def test_timestep_window_and_branch_touch_only_their_rows(pipe):
    sae, hooked = _topk(), HookedDiT(pipe.transformer)
    inputs = _inputs([100.0, 400.0, 700.0, 900.0], [1, 2, 3, 4])
    x = _activation(hooked, inputs)
    got = _activation(hooked, inputs, sae, SteeringSpec((LatentEdit(HOOK, (2,), "add", 3.0, timesteps=(300, 800)),)))
    assert torch.equal(got[[0, 3]], x[[0, 3]]) and not torch.equal(got[[1]], x[[1]]) and not torch.equal(got[2], x[2])

    cfg_inputs = _inputs([500.0] * 4, [1, 2, NULL_CLASS, NULL_CLASS])  # a CFG-doubled batch, cond first
    x = _activation(hooked, cfg_inputs)
    got = _activation(hooked, cfg_inputs, sae, SteeringSpec((LatentEdit(HOOK, (2,), "add", 3.0, branch="uncond"),)))
    assert torch.equal(got[:2], x[:2]) and not torch.equal(got[2:], x[2:])


def test_steps_and_trace(pipe):
    sae, hooked = _topk(), HookedDiT(pipe.transformer)
    spec = SteeringSpec((LatentEdit(HOOK, (2,), "add", 1.0, steps=(1, 3)), LatentEdit(HOOK, (3,), "zero")))
    with steer(hooked, [sae], spec) as trace:
        pipe(class_labels=[0], num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    summary = {s["edit"]: s for s in trace.summary()}
    assert summary[0]["steps"] == [1, 3] and summary[1]["steps"] == [0, 1, 2, 3]
    assert summary[0]["rows_x_tokens"] == 2 * 2 * 16  # two calls, cond + uncond rows, 16 tokens


def test_spec_round_trips_through_yaml_and_json(tmp_path):
    spec = SteeringSpec(
        (
            LatentEdit(
                HOOK,
                (1, 2),
                "add",
                (1.5, -2.0),
                timesteps=(100, 600),
                steps=(0, 4),
                box=(0, 0.25, 0.5, 1),
                branch="cond",
            ),
            LatentEdit("blocks.1.hook_resid_post", (7,), "zero", tokens=(3, 4)),
        ),
        (SAESource(release="tide-dit-tiny/digits", sae_id="blocks.1.hook_resid_post/tide"),),
    )
    for name in ("spec.yaml", "spec.json"):
        assert SteeringSpec.load(spec.save(tmp_path / name)) == spec
    assert json.loads(json.dumps(spec.to_dict())) == spec.to_dict()
    both = spec + SteeringSpec((LatentEdit(HOOK, (9,), "scale", 2.0),), spec.saes)
    assert len(both.edits) == 3 and both.saes == spec.saes and both.hooks == [HOOK, "blocks.1.hook_resid_post"]


def test_spec_refuses_an_sae_whose_weights_differ_from_the_ones_it_was_built_on(tmp_path):
    from sae_lens_dit.saes.loading import weights_digest

    sae = _tide()
    sae.save_model(str(tmp_path / "sae"))
    source = SAESource(path=str(tmp_path / "sae"), weights=weights_digest(sae))
    spec = SteeringSpec((LatentEdit(HOOK, (3,), "zero"),), (source,))
    reloaded = SteeringSpec.load(spec.save(tmp_path / "spec.yaml"))
    assert reloaded.saes == (source,)
    assert torch.equal(reloaded.load_saes()[0].W_dec, sae.W_dec)
    with torch.no_grad():  # retrained: one weight moves by one float32 step
        sae.W_dec[0, 0] = torch.nextafter(sae.W_dec[0, 0], torch.tensor(float("inf")))
    sae.save_model(str(tmp_path / "sae"))
    assert weights_digest(sae) != source.weights
    with pytest.raises(ValueError, match="not the one this spec was built on .* rebuild the spec"):
        reloaded.load_saes()
    unpinned = SAESource(path=str(tmp_path / "sae"))  # no digest: loads whatever is there
    assert torch.equal(unpinned.load().W_dec, sae.W_dec)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"hook": HOOK, "latents": [1], "op": "boost"}, "op must be one of"),
        ({"hook": HOOK, "latents": []}, "non-empty list"),
        ({"hook": HOOK, "latents": [1, 2], "value": [1.0]}, "1 values for 2 latents"),
        ({"hook": HOOK, "latents": [1], "timesteps": [800, 100]}, "low <= high"),
        ({"hook": HOOK, "latents": [1], "box": [0.5, 0, 0.2, 1]}, "box must be"),
        ({"hook": HOOK, "latents": [1], "branch": "neg"}, "branch must be one of"),
        ({"hook": HOOK, "latents": [1], "strength": 2}, "unknown key 'strength'"),
        ({"hook": HOOK, "latents": [1], "mask": "/no/such.png"}, "does not exist"),
        ({"latents": [1]}, "needs at least `hook` and `latents`"),
    ],
)
def test_bad_specs_say_what_is_wrong(edit, message):
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        SteeringSpec.from_dict({"edits": [edit]})


def test_bad_application_says_what_is_wrong(pipe):
    sae, hooked = _topk(), HookedDiT(pipe.transformer)
    cases = [
        (SteeringSpec((LatentEdit(HOOK, (32,), "zero"),)), "out of range; the SAE there has d_sae=32"),
        (SteeringSpec((LatentEdit("blocks.9.hook_resid_post", (1,), "zero"),)), "unknown hook name 'blocks.9"),
        (SteeringSpec((LatentEdit("blocks.1.hook_resid_post", (1,), "zero"),)), "no SAE given reads them"),
        (SteeringSpec((LatentEdit(HOOK, (1,), "zero", tokens=(16,)),)), "out of range; the image has 16 tokens"),
    ]
    for spec, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)), steer(hooked, [sae], spec):
            pipe(class_labels=[0], num_inference_steps=1)


def test_preview_latent_changes_only_with_strength(pipe):
    sae = _topk()
    result = preview_latent(pipe, sae, latent=4, strength=6.0, seed=2, class_labels=[3], num_inference_steps=3)
    again = preview_latent(pipe, sae, latent=4, strength=0.0, seed=2, class_labels=[3], num_inference_steps=3)
    assert np.array_equal(result.before, again.before) and np.array_equal(again.after, again.before)
    assert not np.array_equal(result.after, result.before)
    assert result.trace.summary()[0]["calls"] == 3


def test_names_of_the_old_editing_module_still_import_from_it_and_from_the_package():
    """`editing` held the spec, regions and steering before they got modules of their own; every name it
    exported (listed by hand here, as it was) is still importable from it and is the object of its new home."""
    import sae_lens_dit.analysis.interventions as package
    from sae_lens_dit.analysis.interventions import editing, regions, spec, steering

    homes = {
        spec: ["OPERATIONS", "UNITS", "Operation", "Unit", "LatentEdit", "SAESource", "SteeringSpec"],
        regions: ["region_mask"],
        steering: ["SteeringTrace", "check_spec", "decoder_delta", "steer"],
        editing: ["EditResult", "generate", "edit", "preview_latent", "save_grid"],
    }
    for home, names in homes.items():
        for name in names:
            assert getattr(editing, name) is getattr(home, name), name
            if name != "UNITS":  # the package never exported UNITS
                assert getattr(package, name) is getattr(home, name), name
