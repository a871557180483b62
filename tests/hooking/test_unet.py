"""HookedDiT on UNet2DConditionModel (`adapters/sd_unet.yaml`), inside stock SD and SDXL pipelines built offline.

References, none of which reads the adapter spec: the test's own walk over the UNet's levels with plain
torch hooks (Transformer2DModel input / output, relaid [B, C, h, w] -> [B, h*w, C], and their difference
for `hook_update`; the inner BasicTransformerBlocks and their attn1 / attn2 / ff), the pipeline run
without HookedDiT, and the spliced update computed by hand. Exact comparisons are `torch.equal`; the
one computed by hand repeats the splice's float operations and is held to 1e-6.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler
from sae_lens.saes.sae import SAEMetadata
from torch import Tensor, nn

from sae_lens_dit import HookedDiT
from sae_lens_dit.conventions import COND, UNCOND
from sae_lens_dit.saes import TideSAE, TideSAEConfig
from sae_lens_dit.toy.random_unet import random_sd_pipeline, random_unet

SDXL_UNBOX_BLOCKS = ("down.2.1", "mid.0", "up.0.0", "up.0.1")


def _levels(unet: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, Transformer2DModel) as the issue names them, walked by hand."""
    for i, block in enumerate(unet.down_blocks):
        for j, attention in enumerate(getattr(block, "attentions", None) or []):
            yield f"down.{i}.{j}", attention
    for j, attention in enumerate(unet.mid_block.attentions):
        yield f"mid.{j}", attention
    for i, block in enumerate(unet.up_blocks):
        for j, attention in enumerate(getattr(block, "attentions", None) or []):
            yield f"up.{i}.{j}", attention


def _tokens(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, C, h, w] -> [B, h*w, C]


def _capture(unet: nn.Module, run) -> dict[str, Tensor]:
    seen: dict[str, Tensor] = {}
    handles = []

    def keep(key: str, value: Tensor) -> None:
        assert key not in seen, f"{key} fired twice in one call"
        seen[key] = value

    for name, level in _levels(unet):
        handles.append(level.register_forward_pre_hook(lambda m, a, k, n=name: keep(f"{n}.in", a[0]), with_kwargs=True))

        def post(module, args, output, n=name):
            pre, out = _tokens(seen[f"{n}.in"]), _tokens(output[0])
            keep(f"{n}.hook_resid_pre", pre)
            keep(f"{n}.hook_resid_post", out)
            keep(f"{n}.hook_update", _tokens(output[0] - seen[f"{n}.in"]))

        handles.append(level.register_forward_hook(post))
        for k, block in enumerate(level.transformer_blocks):
            key = f"{name}.blocks.{k}"

            def block_post(module, args, kwargs, output, key=key):
                x = kwargs.get("hidden_states", args[0] if args else None)
                keep(f"{key}.hook_resid_pre", x)
                keep(f"{key}.hook_resid_post", output)
                keep(f"{key}.hook_update", output - x)

            handles.append(block.register_forward_hook(block_post, with_kwargs=True))
            for suffix, module in (("attn", block.attn1), ("cross_attn", block.attn2), ("mlp", block.ff)):
                handles.append(module.register_forward_hook(lambda m, a, o, k=f"{key}.{suffix}.hook_out": keep(k, o)))
            handles.append(block.ff.register_forward_pre_hook(lambda m, a, k=f"{key}.mlp.hook_in": keep(k, a[0])))
    try:
        out = run()
    finally:
        for handle in handles:
            handle.remove()
    return {key: value for key, value in seen.items() if not key.endswith(".in")} | {"out": out}


@pytest.fixture(params=["sd", "sdxl"])
def kind(request) -> str:
    return request.param


def _unet_inputs(kind: str, unet: nn.Module, generator: torch.Generator) -> dict:
    inputs = {
        "sample": torch.randn(2, 4, 16, 12, generator=generator),  # non-square on purpose
        "timestep": torch.tensor([981, 17]),
        "encoder_hidden_states": torch.randn(2, 16, unet.config.cross_attention_dim, generator=generator),
    }
    if kind == "sdxl":
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(2, 16, generator=generator),
            "time_ids": torch.rand(2, 6),
        }
    return inputs


def test_every_unet_hook_equals_an_independent_torch_hook(kind):
    unet = random_unet(kind)
    inputs = _unet_inputs(kind, unet, torch.Generator().manual_seed(3))
    with torch.no_grad():
        seen = _capture(unet, lambda: unet(**inputs, return_dict=False)[0])
        hooked = HookedDiT(unet)
        out, cache = hooked.run_with_cache(**inputs, return_dict=False)
    assert hooked.spec.name == "sd_unet"
    assert torch.equal(out[0], seen.pop("out"))
    assert set(hooked.hook_names) == set(seen)
    for name in hooked.hook_names:
        assert torch.equal(cache[name], seen[name]), name
        assert cache[name].shape[-1] == hooked.d_in(name), name
    if kind == "sdxl":
        assert {f"{block}.hook_update" for block in SDXL_UNBOX_BLOCKS} <= set(hooked.hook_names)
        assert hooked.d_in("down.1.0.hook_update") == 16 and hooked.d_in("down.2.1.hook_update") == 32
        with pytest.raises(ValueError, match="differ in width"):
            _ = hooked.d_model
    assert [name for name, module in unet.named_modules() if module._forward_hooks or module._forward_pre_hooks] == []


def test_token_grid_follows_the_level(kind):
    hooked = HookedDiT(random_unet(kind))
    sample = torch.randn(2, 4, 16, 12)  # latent 16 x 12: levels 16x12, 8x6, 4x3
    inputs = _unet_inputs(kind, hooked.transformer, torch.Generator().manual_seed(0)) | {"sample": sample}
    with torch.no_grad():
        _, cache = hooked.run_with_cache(**inputs, names_filter=lambda name: name.endswith("hook_resid_post"))
    for name, activation in cache.items():
        rows, columns = hooked.token_grid(activation.shape[1], latent_size=(16, 12))
        assert rows * columns == activation.shape[1] and rows / columns == 16 / 12, name


def _pipe_images(pipe, hooked_context=None, **kwargs) -> np.ndarray:
    generator = torch.Generator().manual_seed(11)
    args = dict(prompt=["a red square", "a blue circle"], num_inference_steps=2, generator=generator, output_type="np")
    args.update(kwargs)
    if hooked_context is None:
        return pipe(**args).images
    with hooked_context:
        return pipe(**args).images


def _tide(d_in: int, hook_name: str) -> TideSAE:
    torch.manual_seed(5)
    cfg = TideSAEConfig(
        d_in=d_in,
        d_sae=4 * d_in,
        k=4,
        timestep_embed_dim=16,
        timestep_hidden_dim=16,
        rescale_acts_by_decoder_norm=True,
        apply_b_dec_to_input=True,
        normalize_activations="none",
        metadata=SAEMetadata(hook_name=hook_name),
    )
    sae = TideSAE(cfg)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.normal_(0, 0.3)
    return sae


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_stock_pipelines_are_unchanged_idle_recording_and_splicing_with_the_error_term(kind, scheduler):
    pipe = random_sd_pipeline(kind)
    if scheduler == "euler":
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    reference = _pipe_images(pipe, guidance_scale=5.0)
    hooked = HookedDiT(pipe.unet)
    assert np.array_equal(_pipe_images(pipe, guidance_scale=5.0), reference)  # idle
    updates = [name for name in hooked.hook_names if name.endswith("hook_update")]
    with hooked.record(updates + ["mid.0.blocks.0.cross_attn.hook_out"]) as recording:
        assert np.array_equal(_pipe_images(pipe, guidance_scale=5.0), reference)
    rows = recording.rows("mid.0.hook_update")
    assert set(rows["branch"].tolist()) == {COND, UNCOND}
    pipe.scheduler.set_timesteps(2)
    assert sorted(set(rows["timestep"].tolist()), reverse=True) == pytest.approx(pipe.scheduler.timesteps.tolist())
    name = "up.0.1.hook_update" if kind == "sdxl" else "up.1.1.hook_update"
    sae = _tide(hooked.d_in(name), name)
    assert np.array_equal(_pipe_images(pipe, hooked.saes([sae], use_error_term=True), guidance_scale=5.0), reference)
    edited = _pipe_images(pipe, hooked.saes([sae], use_error_term=False), guidance_scale=5.0)
    assert not np.array_equal(edited, reference)


def test_sdxl_turbo_settings_label_every_row_cond():
    pipe = random_sd_pipeline("sdxl")
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    hooked = HookedDiT(pipe.unet)
    with hooked.record(["down.2.1.hook_update"]) as recording:
        _pipe_images(pipe, guidance_scale=0.0, num_inference_steps=1)
    rows = recording.rows("down.2.1.hook_update")
    assert set(rows["branch"].tolist()) == {COND} and set(rows["sample"].tolist()) == {0, 1}
    assert set(rows["timestep"].tolist()) == {999.0}  # one trailing step starts at pure noise


def test_a_spliced_update_without_the_error_term_equals_the_hand_computation():
    unet = random_unet("sdxl")
    hooked = HookedDiT(unet)
    name = "up.0.1.hook_update"
    sae = _tide(hooked.d_in(name), name)
    inputs = _unet_inputs("sdxl", unet, torch.Generator().manual_seed(8))
    block = unet.up_blocks[0].attentions[1]
    seen: dict[str, Tensor] = {}
    handle = block.register_forward_hook(lambda m, args, output: seen.update(pre=args[0], post=output[0]))
    try:
        with torch.no_grad():
            unet(**inputs, return_dict=False)  # clean: the block's input and output
            with hooked.saes([sae], use_error_term=False):
                spliced = {}
                inner = block.register_forward_hook(lambda m, args, output: spliced.update(post=output[0]))
                unet(**inputs, return_dict=False)
                inner.remove()
    finally:
        handle.remove()
    pre, post = _tokens(seen["pre"]), _tokens(seen["post"])
    update = post - pre
    with torch.no_grad(), sae.at_timestep(torch.tensor([981.0, 17.0])):
        by_hand = post + (sae(update) - update)  # the block's output with its update replaced
    expected = by_hand.permute(0, 2, 1).reshape(seen["post"].shape)
    torch.testing.assert_close(spliced["post"], expected, atol=1e-6, rtol=0)
    assert not torch.allclose(spliced["post"], seen["post"], atol=1e-3)


def test_zeroing_the_update_makes_the_block_pass_its_input_through():
    unet = random_unet("sd")
    hooked = HookedDiT(unet)
    inputs = _unet_inputs("sd", unet, torch.Generator().manual_seed(2))
    block = unet.down_blocks[0].attentions[1]
    seen = {}
    with torch.no_grad(), hooked.hooks(fwd_hooks=[("down.0.1.hook_update", lambda u, hook: torch.zeros_like(u))]):
        # Registered after HookedDiT's own hook, so it sees the output the next module gets.
        handle = block.register_forward_hook(lambda m, args, output: seen.update(pre=args[0], post=output[0]))
        try:
            unet(**inputs, return_dict=False)
        finally:
            handle.remove()
    torch.testing.assert_close(seen["post"], seen["pre"], atol=1e-6, rtol=0)  # post + (0 - u), u = post - pre
