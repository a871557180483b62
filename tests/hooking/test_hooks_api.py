"""TransformerLens-style hook management on HookedDiT: names, lifetimes, errors, stream layout."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import AutoencoderKL

from sae_lens_dit import HookedDiT
from sae_lens_dit.hooking.adapters import AdapterSpecError


class Boom(RuntimeError):
    pass


def test_unknown_hook_name_lists_close_valid_names(backbones):
    hooked = HookedDiT(backbones["dit"].make())
    for call in (
        lambda: hooked.run_with_hooks(fwd_hooks=[("blocks.1.hook_resid_pots", lambda x, hook: None)]),
        lambda: hooked.run_with_cache(names_filter=["blocks.1.hook_resid_pots"]),
        lambda: hooked.add_hook("blocks.1.hook_resid_pots", lambda x, hook: None),
        lambda: hooked.record(["blocks.1.hook_resid_pots"]).__enter__(),
    ):
        with pytest.raises(
            ValueError, match=r"unknown hook name 'blocks.1.hook_resid_pots'.*'blocks.1.hook_resid_post'"
        ):
            call()


def test_unsupported_transformer_names_supported_classes_and_how_to_add_one():
    with pytest.raises(AdapterSpecError) as error:
        HookedDiT(AutoencoderKL())
    message = str(error.value)
    assert "AutoencoderKL" in message and "adapters" in message
    for supported in (
        "DiTTransformer2DModel",
        "PixArtTransformer2DModel",
        "SD3Transformer2DModel",
        "FluxTransformer2DModel",
        "SanaTransformer2DModel",
    ):
        assert supported in message


def test_hooks_are_removed_when_the_forward_raises(backbones, torch_hooks_left):
    backbone = backbones["pixart"]
    model = backbone.make()
    hooked = HookedDiT(model)

    def explode(x, hook):
        raise Boom

    with pytest.raises(Boom), hooked.record(["blocks.0.hook_resid_post"]), torch.no_grad():
        hooked.run_with_hooks(**backbone.inputs(2), fwd_hooks=[("blocks.1.mlp.hook_out", explode)])
    assert torch_hooks_left(model) == []
    assert not any(hook_point.fwd_hooks for hook_point in hooked.hook_dict.values())
    with pytest.raises(RuntimeError, match="only available while the transformer runs"):
        _ = hooked.call_context


def test_permanent_hooks_stay_until_reset_and_torch_hooks_follow(backbones, torch_hooks_left):
    backbone = backbones["dit"]
    model = backbone.make()
    hooked = HookedDiT(model)
    seen = []
    hooked.add_hook("blocks.1.hook_resid_post", lambda x, hook: seen.append(hook.name), is_permanent=True)
    assert torch_hooks_left(model) != []
    with torch.no_grad():
        hooked.run_with_hooks(**backbone.inputs(2), fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: None)])
        backbone.run(model, backbone.inputs(2))  # the stock model call fires the permanent hook too
    assert seen == ["blocks.1.hook_resid_post"] * 2
    hooked.reset_hooks(including_permanent=True)
    assert torch_hooks_left(model) == []


def test_a_replacement_of_the_wrong_shape_is_refused(backbones):
    backbone = backbones["dit"]
    hooked = HookedDiT(backbone.make())
    with pytest.raises(ValueError, match=r"blocks.0.hook_resid_post returned \(2, 3\).*\(2, 16, 8\)"):
        hooked.run_with_hooks(
            **backbone.inputs(2), fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: x[:, 0, :3])]
        )


def test_call_context_is_readable_inside_hooks_only(backbones):
    backbone = backbones["dit"]
    hooked = HookedDiT(backbone.make())
    inputs = backbone.inputs(4)
    inputs["class_labels"] = torch.tensor([3, 5, 8, 8])  # [cond | uncond] halves, null class 8
    contexts = []
    hooked.run_with_hooks(
        **inputs, fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: contexts.append(hooked.call_context))]
    )
    (ctx,) = contexts
    assert torch.equal(ctx.timestep, inputs["timestep"].float())
    assert ctx.branch.tolist() == [0, 0, 1, 1] and ctx.sample.tolist() == [0, 1, 0, 1]
    with pytest.raises(RuntimeError, match="only available while the transformer runs"):
        _ = hooked.call_context


def test_joint_blocks_keep_image_and_text_streams_apart(backbones):
    sd3, flux = backbones["sd3"], backbones["flux"]
    hooked = HookedDiT(sd3.make())
    inputs = sd3.inputs(2)
    with torch.no_grad():
        _, cache = hooked.run_with_cache(**inputs)
    image_tokens, text_tokens = 16 * 16, inputs["encoder_hidden_states"].shape[1]
    assert cache["blocks.2.hook_resid_post"].shape == (2, image_tokens, 32)
    assert cache["blocks.2.hook_txt_resid_post"].shape == (2, text_tokens, 32)
    assert cache["blocks.3.hook_resid_post"].shape == (2, image_tokens, 32)
    assert "blocks.3.hook_txt_resid_post" not in hooked.hook_dict  # the last SD3 block returns None for text

    hooked = HookedDiT(flux.make())
    inputs = flux.inputs(2)
    with torch.no_grad():
        _, cache = hooked.run_with_cache(**inputs)
    n_image, n_text = inputs["hidden_states"].shape[1], inputs["encoder_hidden_states"].shape[1]
    for prefix in ("blocks", "single_blocks"):
        assert cache[f"{prefix}.1.hook_resid_post"].shape == (2, n_image, 32)
        assert cache[f"{prefix}.1.hook_txt_resid_post"].shape == (2, n_text, 32)
        assert cache[f"{prefix}.1.attn.hook_out"].shape == (2, n_image, 32)


def test_spec_that_does_not_fit_the_model_names_the_file(backbones):
    model = backbones["dit"].make()
    spec = HookedDiT(model).spec
    wrong_list = dataclasses.replace(spec, stacks=(dataclasses.replace(spec.stacks[0], module="blocks"),))
    with pytest.raises(AdapterSpecError, match=r"no ModuleList at 'blocks'.*transformer_blocks.*dit.yaml"):
        HookedDiT(model, wrong_list)
    sub = dataclasses.replace(spec.stacks[0].submodules[0], module="attn9")
    wrong_sub = dataclasses.replace(spec, stacks=(dataclasses.replace(spec.stacks[0], submodules=(sub,)),))
    with pytest.raises(AdapterSpecError, match=r"no submodule 'attn9'.*attn1.*dit.yaml"):
        HookedDiT(model, wrong_sub)


def test_image_tokens_follows_the_config(backbones):
    assert HookedDiT(backbones["dit"].make()).image_tokens == (8 // 2) ** 2
    assert HookedDiT(backbones["sd3"].make()).image_tokens == 16**2
    with pytest.raises(ValueError, match="depends on the input resolution"):
        _ = HookedDiT(backbones["flux"].make()).image_tokens


def test_token_grid_comes_from_the_latent_then_the_config_then_a_square(backbones):
    dit = HookedDiT(backbones["dit"].make())  # sample_size 8, patch 2
    assert dit.token_grid(16) == (4, 4)  # the configured grid
    assert dit.token_grid(24, latent_size=(8, 12)) == (4, 6)  # a non-square latent, by hand: 8/2 x 12/2
    assert dit.token_grid(36) == (6, 6)  # neither configured: a square
    with pytest.raises(ValueError, match="cannot lay 24 tokens"):
        dit.token_grid(24)  # not the configured size, not square
    with pytest.raises(ValueError, match="cannot lay 16 tokens"):
        dit.token_grid(16, latent_size=(8, 12))  # the sampled latent decides, with no fallback
    flux = HookedDiT(backbones["flux"].make())  # no configured size: squares only
    assert flux.token_grid(64) == (8, 8)


def _context_of(hooked: HookedDiT, inputs: dict):
    contexts = []
    with torch.no_grad():
        hooked.run_with_hooks(
            **inputs, fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: contexts.append(hooked.call_context))]
        )
    return contexts[0]


def test_timesteps_are_normalised_to_the_ddpm_scale(backbones):
    flux = backbones["flux"]
    ctx = _context_of(HookedDiT(flux.make()), {**flux.inputs(2), "timestep": torch.tensor([0.25, 1.0])})
    assert ctx.timestep.tolist() == [250.0, 1000.0]  # FluxPipeline passes t / 1000
    sana = backbones["sana"]
    model = type(sana.make())(**{**sana.make().config, "timestep_scale": 2.0}).eval()
    ctx = _context_of(HookedDiT(model), {**sana.inputs(2), "timestep": torch.tensor([500.0, 1000.0])})
    assert ctx.timestep.tolist() == [250.0, 500.0]  # SanaPipeline passes t * config.timestep_scale
    dit = backbones["dit"]
    ctx = _context_of(HookedDiT(dit.make()), {**dit.inputs(2), "timestep": torch.tensor([999])})
    assert ctx.timestep.tolist() == [999.0, 999.0]  # one timestep for the whole batch covers every row


def test_text_pipelines_cfg_is_detected_from_identical_batch_halves(backbones):
    pixart = backbones["pixart"]
    hooked = HookedDiT(pixart.make())
    inputs = pixart.inputs(4)
    ctx = _context_of(hooked, inputs)
    assert ctx.branch.tolist() == [0, 0, 0, 0] and ctx.sample.tolist() == [0, 1, 2, 3]
    inputs["hidden_states"] = inputs["hidden_states"][:2].repeat(2, 1, 1, 1)  # [uncond | cond], same latents
    ctx = _context_of(hooked, inputs)
    assert ctx.branch.tolist() == [1, 1, 0, 0] and ctx.sample.tolist() == [0, 1, 0, 1]
