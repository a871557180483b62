"""Families with reversed or EDM timestep maps: exact hooks, and t on the project scale inside hooks.

Exact = torch.equal with plain torch hooks on the same run (the hooked run and the torch hooks see
the very same tensors). Timesteps: the raw value each family's pipeline passes at a known noise
level (the pipelines' own formulas, in conftest) must read as that level's t on [0, 1000], 1000 = noise.
"""

from __future__ import annotations

import pytest
import torch

from sae_lens_dit import HookedDiT
from sae_lens_dit.hooking.adapters import adapter_for


def _expected_names(family, model) -> set[str]:
    names = set()
    for prefix, attribute in family.stacks.items():
        for i, block in enumerate(getattr(model, attribute)):
            names |= {f"{prefix}.{i}.hook_resid_pre", f"{prefix}.{i}.hook_resid_post", f"{prefix}.{i}.hook_update"}
            if family.text_index is not None and not getattr(block, "context_pre_only", False):
                names.add(f"{prefix}.{i}.hook_txt_resid_post")
            names |= {f"{prefix}.{i}.{hook}.hook_out" for hook in family.submodules}
            names |= {f"{prefix}.{i}.mlp.hook_in" for hook in family.submodules if hook == "mlp"}
    return names


def test_the_class_gets_its_adapter_and_every_listed_hook_is_exact(family, capture):
    model = family.make()
    assert adapter_for(model).name == family.name
    hooked = HookedDiT(model)
    names = [name for name in hooked.hook_names if name.split(".")[0] in family.stacks]  # Lumina2's joint
    assert set(names) == _expected_names(family, model)  # blocks have their own test (per-row image spans)
    batch = 2
    inputs = family.inputs(batch, torch.full((batch,), family.raw_at(0.5)))
    reference = family.run(model, inputs)

    seen = {}
    with hooked.hooks(fwd_hooks=[(name, lambda x, hook: seen.__setitem__(hook.name, x)) for name in names]):
        captured = capture(family, model, inputs)  # torch hooks and HookPoints in one forward
    assert set(seen) == set(captured) == set(names)
    for name in names:
        assert seen[name].shape[0] == batch and seen[name].ndim == 3, name
        assert torch.equal(seen[name], captured[name]), name
    assert torch.equal(family.run(model, inputs), reference)  # hooks gone, output unchanged


@pytest.mark.parametrize("sigma", [0.75, 0.25, 1.0])
def test_the_timestep_read_in_a_hook_is_t_on_the_project_scale(family, sigma):
    if family.name == "cosmos1":
        sigma = {0.75: 3.0, 0.25: 1 / 3, 1.0: 80.0}[sigma]  # EDM sigma: t = 750, 250, 987.65
    model = family.make()
    hooked = HookedDiT(model)
    raw = torch.full((2,), family.raw_at(sigma), dtype=torch.float32)  # as the pipeline passes it
    read = []
    name = hooked.hook_names[1]
    with hooked.hooks(fwd_hooks=[(name, lambda x, hook: read.append(hooked.call_context.timestep.clone()))]):
        family.run(model, family.inputs(2, raw))
    assert len(read) == 1
    expected = torch.full((2,), family.t_at(sigma))
    torch.testing.assert_close(read[0], expected, rtol=0, atol=2e-3)
    assert 0 <= float(read[0][0]) <= 1000


def test_a_higher_noise_level_reads_as_a_higher_t(family):
    """The maps are increasing in the noise level, whatever the direction of the raw value."""
    model = family.make()
    hooked = HookedDiT(model)
    sigmas = [80.0, 3.0, 1.0, 0.2, 0.002] if family.name == "cosmos1" else [1.0, 0.9, 0.5, 0.1, 0.0]
    raw = torch.tensor([family.raw_at(sigma) for sigma in sigmas])
    read = []
    with hooked.hooks(fwd_hooks=[(hooked.hook_names[1], lambda x, hook: read.append(hooked.call_context.timestep))]):
        family.run(model, family.inputs(len(sigmas), raw))
    assert bool((read[0].diff() < 0).all()), read[0]
    torch.testing.assert_close(read[0], torch.tensor([family.t_at(s) for s in sigmas]), rtol=0, atol=2e-3)


def _lumina2_joint_run(family, model, inputs, hooked=None, fwd_hooks=()):
    """Every joint layer's input, output and submodule outputs / MLP input, by plain torch hooks, in one forward."""
    seen = {}
    handles = []
    for i, layer in enumerate(model.layers):
        handles += [
            layer.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(f"{i}.in", args[0])),
            layer.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(f"{i}.out", out)),
            layer.attn.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(f"{i}.attn", out)),
            layer.feed_forward.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(f"{i}.mlp", out)),
            layer.feed_forward.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(f"{i}.mlp_in", args[0])),
        ]
    try:
        if hooked is None:
            output = family.run(model, inputs)
        else:
            with hooked.hooks(fwd_hooks=list(fwd_hooks)):
                output = family.run(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen, output


def test_lumina2_joint_blocks_see_each_rows_image_right_after_its_own_caption(families):
    """Lumina2's main `layers` see [caption (per-row length) | image | pad]: hooks cut rows 0 and 1 at their own
    offsets (captions of 10 and 16 tokens, from the mask by hand), equal to plain torch hooks (torch.equal)."""
    family = families["lumina2"]
    model = family.make()
    hooked = HookedDiT(model)
    inputs = family.inputs(2, torch.full((2,), 0.5))
    n = (16 // 2) ** 2
    starts = [10, 16]  # the caption lengths `_lumina2_inputs` sets, counted by hand
    assert inputs["encoder_attention_mask"].sum(1).tolist() == starts

    def image(x):
        return torch.stack([x[r, s : s + n] for r, s in enumerate(starts)])

    def caption_and_padding(x):
        return torch.stack([torch.cat([x[r, :s], x[r, s + n :]]) for r, s in enumerate(starts)])

    names = [name for name in hooked.hook_names if name.startswith("blocks.")]
    assert {name.split(".", 2)[2] for name in names} == {
        "hook_resid_pre", "hook_resid_post", "hook_update", "hook_txt_resid_post", "attn.hook_out", "mlp.hook_in",
        "mlp.hook_out",
    }  # fmt: skip
    reference = family.run(model, inputs)
    got = {}
    seen, output = _lumina2_joint_run(
        family, model, inputs, hooked, [(name, lambda x, hook: got.__setitem__(hook.name, x)) for name in names]
    )
    assert torch.equal(output, reference)
    assert not torch.equal(seen["0.in"][0, 10 + n :], seen["0.in"][1, 10 + n :])  # row 0 is padded, row 1 is not
    for i in range(len(model.layers)):
        expected = {
            "hook_resid_pre": image(seen[f"{i}.in"]),
            "hook_resid_post": image(seen[f"{i}.out"]),
            "hook_update": image(seen[f"{i}.out"]) - image(seen[f"{i}.in"]),
            "hook_txt_resid_post": caption_and_padding(seen[f"{i}.out"]),
            "attn.hook_out": image(seen[f"{i}.attn"]),
            "mlp.hook_in": image(seen[f"{i}.mlp_in"]),
            "mlp.hook_out": image(seen[f"{i}.mlp"]),
        }
        for suffix, tensor in expected.items():
            assert got[f"blocks.{i}.{suffix}"].shape == tensor.shape, suffix
            assert torch.equal(got[f"blocks.{i}.{suffix}"], tensor), f"blocks.{i}.{suffix}"

    # zeroing the image hook changes each row's image span only: its caption and padding stay bit-identical
    plain, _ = _lumina2_joint_run(family, model, inputs)
    zeroed, _ = _lumina2_joint_run(
        family, model, inputs, hooked, [("blocks.0.hook_resid_post", lambda x, hook: torch.zeros_like(x))]
    )
    after = zeroed["1.in"]  # layer 0's output as the model passes it on (a torch hook on layer 0 runs first)
    assert torch.equal(image(after), torch.zeros(2, n, 24))
    assert torch.equal(caption_and_padding(after), caption_and_padding(plain["1.in"]))
    assert not torch.equal(image(plain["1.in"]), torch.zeros(2, n, 24))


def test_lumina2_text_mask_of_another_batch_is_refused(families):
    family = families["lumina2"]
    model = family.make()
    hooked = HookedDiT(model)
    inputs = family.inputs(2, torch.full((2,), 0.5))
    assert hooked.read_call((), inputs).image_offset.tolist() == [10, 16]
    inputs["encoder_attention_mask"] = inputs["encoder_attention_mask"][:1]  # one mask row for a batch of two
    with pytest.raises(ValueError, match=r"text_mask 'encoder_attention_mask' has shape \(1, 16\)"):
        hooked.read_call((), inputs)


@pytest.mark.parametrize("name", ["mochi", "cosmos1"])
def test_video_frames_are_read_and_frame_major(families, check_video_frames, name):
    family = families[name]
    inputs = family.inputs(1, torch.tensor([family.raw_at(0.5)]))
    latents = inputs["hidden_states"]
    inputs["hidden_states"] = torch.randn(*latents.shape[:2], 3, *latents.shape[3:])  # three frames
    check_video_frames(family.make(), inputs, family.run)
