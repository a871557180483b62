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
    assert set(hooked.hook_names) == _expected_names(family, model)
    batch = 2
    inputs = family.inputs(batch, torch.full((batch,), family.raw_at(0.5)))
    reference = family.run(model, inputs)

    seen = {}
    with hooked.hooks(fwd_hooks=[(name, lambda x, hook: seen.__setitem__(hook.name, x)) for name in hooked.hook_names]):
        captured = capture(family, model, inputs)  # torch hooks and HookPoints in one forward
    assert set(seen) == set(captured) == set(hooked.hook_names)
    for name in hooked.hook_names:
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


def test_lumina2_joint_rows_are_ragged_so_only_the_noise_refiner_is_hooked(families):
    """Lumina2's main `layers` see [caption (per-row length) | image | pad]: no fixed span is the image."""
    family = families["lumina2"]
    model = family.make()
    hooked = HookedDiT(model)
    assert {name.split(".")[0] for name in hooked.hook_names} == {"noise_refiner"}
    joint = []
    handle = model.layers[0].register_forward_pre_hook(lambda module, args: joint.append(args[0]))
    inputs = family.inputs(2, torch.full((2,), 0.5))  # captions of 10 and 16 tokens
    try:
        family.run(model, inputs)
    finally:
        handle.remove()
    image_tokens = (16 // 2) ** 2
    assert joint[0].shape == (2, 16 + image_tokens, 24)
    # row 0: image at [10, 74) then 6 padding rows (zeros); row 1: image at [16, 80), no padding
    assert bool((joint[0][0, 10 + image_tokens :] == 0).all()) and not bool((joint[0][1, -6:] == 0).all())


@pytest.mark.parametrize("name", ["mochi", "cosmos1"])
def test_video_frames_are_read_and_frame_major(families, check_video_frames, name):
    family = families[name]
    inputs = family.inputs(1, torch.tensor([family.raw_at(0.5)]))
    latents = inputs["hidden_states"]
    inputs["hidden_states"] = torch.randn(*latents.shape[:2], 3, *latents.shape[3:])  # three frames
    check_video_frames(family.make(), inputs, family.run)
