"""Tiny random backbones for every supported family (configs from diffusers' own model tests).

Each `Backbone` also carries the test's *own* description of where activations live (block
output index, submodule attribute and how to slice its output), written independently of
`adapters/*.yaml`, so the tests compare HookedDiT against plain torch hooks rather than against
the spec it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from diffusers import (
    FluxTransformer2DModel,
    PixArtTransformer2DModel,
    SanaTransformer2DModel,
    SD3Transformer2DModel,
)
from torch import Tensor, nn

from sae_lens_dit.toy.random_dit import random_dit, random_dit_pipeline


def _tokens_of_channels_first(out: Tensor) -> Tensor:
    return out.flatten(2).transpose(1, 2)  # [batch, d, h, w] -> [batch, h * w, d]


@dataclass
class Backbone:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int], dict[str, Any]]
    stacks: dict[str, str]  # hook-name prefix -> ModuleList attribute
    image_index: int | None  # where the block output holds the image stream
    text_index: int | None = None
    # per stack prefix: hook suffix -> (submodule attribute, output tuple index or None,
    # tensor -> image tokens [batch, tokens, d] as a view)
    submodules: dict[str, dict[str, tuple[str, int | None, Callable[[Tensor], Tensor]]]] = field(default_factory=dict)

    def make(self) -> nn.Module:
        """A fresh random model in eval mode (DiT drops class labels at random in training mode)."""
        return self.build().eval()

    def blocks(self, model: nn.Module, prefix: str) -> nn.ModuleList:
        return getattr(model, self.stacks[prefix])

    @staticmethod
    def run(model: nn.Module, inputs: dict[str, Any]) -> Tensor:
        """The model's sample output for `inputs` (a plain forward, no grad)."""
        with torch.no_grad():
            return model(**inputs, return_dict=False)[0]


def _whole(out: Tensor) -> Tensor:
    return out


def _dit() -> nn.Module:
    return random_dit(num_embeds_ada_norm=8)


def _pixart() -> nn.Module:
    return PixArtTransformer2DModel(
        sample_size=8,
        num_layers=2,
        patch_size=2,
        attention_head_dim=2,
        num_attention_heads=2,
        in_channels=4,
        cross_attention_dim=8,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=8,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        use_additional_conditions=False,
        caption_channels=None,
    )


def _sd3(**extra: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        return SD3Transformer2DModel(
            sample_size=16,
            patch_size=1,
            in_channels=4,
            num_layers=4,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,
            pooled_projection_dim=64,
            out_channels=4,
            pos_embed_max_size=96,
            **extra,
        )

    return make


def _flux() -> nn.Module:
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )


def _sana() -> nn.Module:
    return SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=4,
        num_attention_heads=2,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=16,
    )


def _sd3_inputs(batch: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(batch, 4, 16, 16),
        "encoder_hidden_states": torch.randn(batch, 12, 32),
        "pooled_projections": torch.randn(batch, 64),
        "timestep": torch.rand(batch) * 1000,
    }


FLUX_TEXT_TOKENS, FLUX_IMAGE_TOKENS = 12, 16


def _flux_inputs(batch: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(batch, FLUX_IMAGE_TOKENS, 4),
        "encoder_hidden_states": torch.randn(batch, FLUX_TEXT_TOKENS, 32),
        "pooled_projections": torch.randn(batch, 32),
        "img_ids": torch.randn(FLUX_IMAGE_TOKENS, 3),
        "txt_ids": torch.randn(FLUX_TEXT_TOKENS, 3),
        "timestep": torch.rand(batch),
    }


def _flux_single_attn(out: Tensor) -> Tensor:
    return out[:, FLUX_TEXT_TOKENS:]  # the single-stream attention runs over [text | image]


_SD3_SUBMODULES = {"blocks": {"attn": ("attn", 0, _whole), "mlp": ("ff", None, _whole)}}

BACKBONES = {
    "dit": Backbone(
        "dit",
        _dit,
        lambda b: {
            "hidden_states": torch.randn(b, 4, 8, 8),
            "timestep": torch.randint(0, 1000, (b,)),
            "class_labels": torch.randint(0, 9, (b,)),
        },
        {"blocks": "transformer_blocks"},
        None,
        submodules={"blocks": {"attn": ("attn1", None, _whole), "mlp": ("ff", None, _whole)}},
    ),
    "pixart": Backbone(
        "pixart",
        _pixart,
        lambda b: {
            "hidden_states": torch.randn(b, 4, 8, 8),
            "encoder_hidden_states": torch.randn(b, 8, 8),
            "timestep": torch.randint(0, 1000, (b,)),
            "added_cond_kwargs": {"aspect_ratio": None, "resolution": None},
        },
        {"blocks": "transformer_blocks"},
        None,
        submodules={
            "blocks": {
                "attn": ("attn1", None, _whole),
                "cross_attn": ("attn2", None, _whole),
                "mlp": ("ff", None, _whole),
            }
        },
    ),
    "sd3": Backbone("sd3", _sd3(), _sd3_inputs, {"blocks": "transformer_blocks"}, 1, 0, _SD3_SUBMODULES),
    "sd3.5": Backbone(
        "sd3.5",
        _sd3(dual_attention_layers=(0,), qk_norm="rms_norm"),
        _sd3_inputs,
        {"blocks": "transformer_blocks"},
        1,
        0,
        {"blocks": {**_SD3_SUBMODULES["blocks"], "attn2": ("attn2", None, _whole)}},
    ),
    "flux": Backbone(
        "flux",
        _flux,
        _flux_inputs,
        {"blocks": "transformer_blocks", "single_blocks": "single_transformer_blocks"},
        1,
        0,
        {
            "blocks": {"attn": ("attn", 0, _whole), "mlp": ("ff", None, _whole)},
            "single_blocks": {"attn": ("attn", None, _flux_single_attn)},
        },
    ),
    "sana": Backbone(
        "sana",
        _sana,
        lambda b: {
            "hidden_states": torch.randn(b, 4, 16, 16),
            "encoder_hidden_states": torch.randn(b, 5, 8),
            "timestep": torch.rand(b) * 1000,
        },
        {"blocks": "transformer_blocks"},
        None,
        submodules={
            "blocks": {
                "attn": ("attn1", None, _whole),
                "cross_attn": ("attn2", None, _whole),
                "mlp": ("ff", None, _tokens_of_channels_first),
            }
        },
    ),
}


@pytest.fixture(params=list(BACKBONES))
def backbone(request: pytest.FixtureRequest) -> Backbone:
    return BACKBONES[request.param]


@pytest.fixture
def backbones() -> dict[str, Backbone]:
    return BACKBONES


def _torch_hooks_left(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if module._forward_hooks or module._forward_pre_hooks]


@pytest.fixture
def torch_hooks_left() -> Callable[[nn.Module], list[str]]:
    """Names of a model's modules that carry any torch forward (pre-)hook."""
    return _torch_hooks_left


@pytest.fixture
def dit_pipe():
    """DiTPipeline from diffusers' own pipeline-test config (tiny DiT, default AutoencoderKL, DDIM), offline."""
    return random_dit_pipeline(
        vae="kl", sample_size=16, patch_size=4, attention_head_dim=8, norm_elementwise_affine=False
    )


@pytest.fixture
def pixart_pipe():
    """PixArtAlphaPipeline over the tiny PixArt, offline: no tokenizer or text encoder, so call it with
    precomputed prompt embeddings (and use_resolution_binning=False for its tiny sample size)."""
    from diffusers import AutoencoderKL, DDIMScheduler, PixArtAlphaPipeline

    pipe = PixArtAlphaPipeline(
        tokenizer=None, text_encoder=None, vae=AutoencoderKL(), transformer=_pixart().eval(), scheduler=DDIMScheduler()
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _check_video_frames(model: nn.Module, inputs: dict[str, Any], run: Callable[[nn.Module, dict], Any]) -> None:
    """A change to one latent frame reaches, at the first block's input, exactly the tokens `rec.rows` puts in
    that frame (the patch embedding is per frame; attention has not mixed tokens yet), and every frame holds
    the same number of tokens: the frame count and the frame-major order, checked without the YAML."""
    from sae_lens_dit import HookedDiT
    from sae_lens_dit.hooking.adapters import adapter_for

    spec = adapter_for(model).frames
    hooked = HookedDiT(model)
    latents = inputs["hidden_states"]
    name = next(n for n in hooked.hook_names if n.endswith(".hook_resid_pre"))
    with torch.no_grad(), hooked.record([name], tokens_per_image=None) as rec:
        run(model, inputs)
    frames = int(rec.frames[0])
    rows = rec.rows(name)
    assert frames >= 2 and sorted(rows["frame"].unique().tolist()) == list(range(frames))
    per_frame = len(rows["frame"]) // frames
    assert rows["frame"].bincount().tolist() == [per_frame] * frames
    temporal = spec.temporal_patch_of(model.config, "test")
    for frame in (0, frames - 1):
        edited = latents.clone()
        if spec.axis is not None:
            index = [slice(None)] * latents.ndim
            index[spec.axis] = slice(frame * temporal, (frame + 1) * temporal)
            edited[tuple(index)] += 1.0
        else:  # packed [batch, frames * h * w, c]: the latents' own token order
            edited[:, frame * per_frame : (frame + 1) * per_frame] += 1.0
        with torch.no_grad(), hooked.record([name], tokens_per_image=None) as changed:
            run(model, {**inputs, "hidden_states": edited})
        moved = (changed.rows(name)["activation"] - rows["activation"]).abs().amax(dim=1) > 0
        assert torch.equal(moved, rows["frame"] == frame), f"frame {frame}"


@pytest.fixture
def check_video_frames() -> Callable[[nn.Module, dict[str, Any], Callable[[nn.Module, dict], Any]], None]:
    """(model, forward kwargs of one video, run) -> asserts the adapter's `frames:` against a per-frame edit."""
    return _check_video_frames
