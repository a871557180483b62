"""Tiny random backbones of the diffusers families that the adapter schema hooks exactly.

Configs are in the spirit of diffusers' own model tests (`tests/models/transformers/`): a few
thousand parameters, built and run in milliseconds on CPU. Each `Family` also carries the test's
*own* account of where activations live (block output index, submodule attribute and how to cut
its image tokens out) and of how the family's pipelines call the transformer (timestep map, CFG
layout), written from the diffusers sources independently of `adapters/*.yaml`, so the tests
compare HookedDiT against plain torch hooks and against the pipelines, not against the spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import torch
from diffusers import (
    AllegroTransformer3DModel,
    BriaTransformer2DModel,
    ChronoEditTransformer3DModel,
    CogVideoXDDIMScheduler,
    CogVideoXTransformer3DModel,
    CogView3PlusTransformer2DModel,
    CogView4Transformer2DModel,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HunyuanDiT2DModel,
    HunyuanVideoTransformer3DModel,
    LongCatImageTransformer2DModel,
    LTXVideoTransformer3DModel,
    OvisImageTransformer2DModel,
    QwenImageTransformer2DModel,
    SanaVideoTransformer3DModel,
    SkyReelsV2Transformer3DModel,
    UniPCMultistepScheduler,
    WanTransformer3DModel,
)
from diffusers.models.embeddings import get_2d_rotary_pos_embed
from torch import Tensor, nn

Submodule = tuple[str, int | None, Callable[[Tensor], Tensor]]
"""(attribute of the block, index into its output tuple or None, output -> image tokens [batch, tokens, d] as a view)"""


@dataclass(frozen=True)
class Stack:
    attribute: str  # the ModuleList on the transformer
    image_index: int | None  # where the block output holds the image stream (None: the output is it)
    text_index: int | None = None  # where it holds the text stream (None: no text stream)
    submodules: dict[str, Submodule] = field(default_factory=dict)  # hook suffix -> Submodule


@dataclass(frozen=True)
class Family:
    adapter: str  # the adapter name HookedDiT must pick for the class
    build: Callable[[], nn.Module]
    inputs: Callable[[int], dict[str, Any]]  # forward kwargs for a batch of b distinct images
    stacks: dict[str, Stack]  # hook-name prefix -> Stack
    scheduler: Callable[[], Any]  # the scheduler the family's pipelines use
    pipeline_timestep: Callable[[Tensor, int], Tensor]  # scheduler timestep t, batch -> the `timestep` argument
    cfg: Literal["equal_halves", "separate_calls"]  # how the pipelines lay out classifier-free guidance

    def make(self) -> nn.Module:
        torch.manual_seed(0)
        return self.build().eval()

    @staticmethod
    def run(model: nn.Module, inputs: dict[str, Any]) -> Tensor:
        with torch.no_grad():
            return model(**inputs, return_dict=False)[0]


def _whole(out: Tensor) -> Tensor:
    return out


# --- Qwen-Image ---------------------------------------------------------------------------------
# QwenImagePipeline packs 2x2 latent patches into tokens before the transformer: hidden_states is
# [batch, (h / 2) * (w / 2), 4 * channels] and img_shapes gives (frames, h / 2, w / 2) per image.


def _qwenimage() -> nn.Module:
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )


def _qwenimage_edit() -> nn.Module:
    # Qwen-Image-Edit-2511 style: zero_cond_t gives the reference tokens their own (t = 0) modulation.
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        axes_dims_rope=(8, 4, 4),
        zero_cond_t=True,
    )


def _qwenimage_edit_inputs(b: int) -> dict[str, Any]:
    # QwenImageEditPlusPipeline: hidden_states = torch.cat([latents, image_latents], dim=1), and img_shapes
    # lists the generated image's grid, then the reference's.
    return {
        **_qwenimage_inputs(b),
        "hidden_states": torch.randn(b, 32, 16),
        "img_shapes": [[(1, 4, 4), (1, 4, 4)]] * b,
    }


def _qwenimage_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 16, 16),
        "encoder_hidden_states": torch.randn(b, 7, 16),
        "encoder_hidden_states_mask": torch.ones(b, 7),
        "timestep": torch.rand(b),
        "img_shapes": [(1, 4, 4)] * b,
    }


# --- Wan 2.1 / 2.2, ChronoEdit ------------------------------------------------------------------


def _wan_config() -> dict[str, Any]:
    return dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def _wan_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 4, 2, 8, 8),  # [batch, channels, frames, height, width]
        "encoder_hidden_states": torch.randn(b, 6, 16),
        "timestep": torch.rand(b) * 1000,
    }


_WAN_STACKS = {
    "blocks": Stack(
        "blocks",
        None,
        submodules={
            "attn": ("attn1", None, _whole),
            "cross_attn": ("attn2", None, _whole),
            "mlp": ("ffn", None, _whole),
        },
    )
}

# --- CogView4 -----------------------------------------------------------------------------------


def _cogview4() -> nn.Module:
    return CogView4Transformer2DModel(
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=4,
        num_attention_heads=4,
        out_channels=4,
        text_embed_dim=8,
        time_embed_dim=8,
        condition_dim=4,
    )


def _cogview4_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 4, 8, 8),
        "encoder_hidden_states": torch.randn(b, 6, 8),
        "timestep": torch.rand(b) * 1000,
        "original_size": torch.tensor([[64, 64]] * b),
        "target_size": torch.tensor([[64, 64]] * b),
        "crop_coords": torch.tensor([[0, 0]] * b),
    }


# --- Hunyuan-DiT --------------------------------------------------------------------------------


def _hunyuandit() -> nn.Module:
    return HunyuanDiT2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=4,  # enough for a long skip: blocks 3 reads block 0's output
        attention_head_dim=8,
        num_attention_heads=2,
        cross_attention_dim=8,
        cross_attention_dim_t5=8,
        pooled_projection_dim=4,
        hidden_size=16,
        text_len=4,
        text_len_t5=4,
        activation_fn="gelu-approximate",
    )


def _hunyuandit_inputs(b: int) -> dict[str, Any]:
    # HunyuanDiTPipeline builds the 2D RoPE for the (h / patch) x (w / patch) grid itself.
    rope = get_2d_rotary_pos_embed(8, ((0, 0), (4, 4)), (4, 4), output_type="pt")
    return {
        "hidden_states": torch.randn(b, 4, 8, 8),
        "timestep": torch.randint(0, 1000, (b,)).float(),
        "encoder_hidden_states": torch.randn(b, 4, 8),
        "text_embedding_mask": torch.ones(b, 4),
        "encoder_hidden_states_t5": torch.randn(b, 4, 8),
        "text_embedding_mask_t5": torch.ones(b, 4),
        "image_meta_size": torch.tensor([[64.0, 64, 64, 64, 0, 0]] * b),
        "style": torch.zeros(b, dtype=torch.long),
        "image_rotary_emb": rope,
    }


# --- CogVideoX ----------------------------------------------------------------------------------

COGVIDEOX_TEXT_TOKENS = 8


def _cogvideox() -> nn.Module:
    return CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=8,
        num_layers=2,
        sample_width=8,
        sample_height=8,
        sample_frames=8,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=COGVIDEOX_TEXT_TOKENS,
    )


def _cogvideox_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 2, 4, 8, 8),  # [batch, frames, channels, height, width]
        "encoder_hidden_states": torch.randn(b, COGVIDEOX_TEXT_TOKENS, 8),
        "timestep": torch.randint(0, 1000, (b,)),
    }


def _cogvideox_mlp_video(out: Tensor) -> Tensor:
    return out[:, COGVIDEOX_TEXT_TOKENS:]  # the block's one MLP runs over [text | video]


# --- LTX-Video ----------------------------------------------------------------------------------


def _ltx() -> nn.Module:
    return LTXVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=2,
        caption_channels=16,
    )


def _ltx_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 2 * 4 * 4, 4),  # packed [batch, frames * height * width, channels]
        "encoder_hidden_states": torch.randn(b, 6, 16),
        "timestep": torch.rand(b) * 1000,
        "encoder_attention_mask": torch.ones(b, 6),
        "num_frames": 2,
        "height": 4,
        "width": 4,
    }


# --- HunyuanVideo -------------------------------------------------------------------------------


def _hunyuan_video() -> nn.Module:
    return HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=2,
        num_single_layers=2,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
    )


def _hunyuan_video_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 4, 2, 4, 4),  # [batch, channels, frames, height, width]
        "timestep": torch.rand(b) * 1000,
        "encoder_hidden_states": torch.randn(b, 6, 16),
        "encoder_attention_mask": torch.ones(b, 6),
        "pooled_projections": torch.randn(b, 8),
        "guidance": torch.full((b,), 6000.0),  # HunyuanVideoPipeline: guidance_scale * 1000
    }


# --- CogView3-Plus -------------------------------------------------------------------------------

COGVIEW3PLUS_TEXT_TOKENS = 6


def _cogview3plus() -> nn.Module:
    return CogView3PlusTransformer2DModel(
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=4,
        num_attention_heads=2,
        out_channels=4,
        text_embed_dim=8,
        time_embed_dim=8,
        condition_dim=2,
        pos_embed_max_size=8,
        sample_size=8,
    )


def _cogview3plus_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 4, 8, 8),
        "encoder_hidden_states": torch.randn(b, COGVIEW3PLUS_TEXT_TOKENS, 8),
        "timestep": torch.randint(0, 1000, (b,)),
        "original_size": torch.tensor([[64, 64]] * b),
        "target_size": torch.tensor([[64, 64]] * b),
        "crop_coords": torch.tensor([[0, 0]] * b),
    }


def _cogview3plus_mlp_image(out: Tensor) -> Tensor:
    return out[:, COGVIEW3PLUS_TEXT_TOKENS:]  # the block's one MLP runs over [text | image]


# --- Flux-style double + single stream: Bria 3.2, LongCat-Image, Ovis-Image -----------------------
# The pipelines pack 2x2 latent patches into tokens: hidden_states [batch, image tokens, 4 * channels].

FLUXLIKE_TEXT_TOKENS, FLUXLIKE_IMAGE_TOKENS = 12, 16


def _fluxlike_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, FLUXLIKE_IMAGE_TOKENS, 4),
        "encoder_hidden_states": torch.randn(b, FLUXLIKE_TEXT_TOKENS, 32),
        "img_ids": torch.randn(FLUXLIKE_IMAGE_TOKENS, 3),
        "txt_ids": torch.randn(FLUXLIKE_TEXT_TOKENS, 3),
        "timestep": torch.rand(b),
    }


def _fluxlike_single_attn(out: Tensor) -> Tensor:
    return out[:, FLUXLIKE_TEXT_TOKENS:]  # single-stream attention runs over [text | image]


_FLUXLIKE_STACKS = {
    "blocks": Stack("transformer_blocks", 1, 0, {"attn": ("attn", 0, _whole), "mlp": ("ff", None, _whole)}),
    "single_blocks": Stack("single_transformer_blocks", 1, 0, {"attn": ("attn", None, _fluxlike_single_attn)}),
}
_FLUXLIKE_SIZES = dict(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, joint_attention_dim=32)


# --- Allegro, Sana-Video ------------------------------------------------------------------------


def _allegro() -> nn.Module:
    return AllegroTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        cross_attention_dim=16,
        sample_width=8,
        sample_height=8,
        sample_frames=8,
        caption_channels=24,
    )


def _sana_video() -> nn.Module:
    return SanaVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=2,
        num_cross_attention_heads=2,
        cross_attention_head_dim=12,
        cross_attention_dim=24,
        caption_channels=16,
        sample_size=8,
        patch_size=(1, 2, 2),
        rope_max_seq_len=32,
    )


def _video_inputs(text_dim: int, timestep: Callable[[int], Tensor]) -> Callable[[int], dict[str, Any]]:
    def inputs(b: int) -> dict[str, Any]:
        return {
            "hidden_states": torch.randn(b, 4, 2, 8, 8),  # [batch, channels, frames, height, width]
            "encoder_hidden_states": torch.randn(b, 6, text_dim),
            "timestep": timestep(b),
        }

    return inputs


def _expanded(t: Tensor, b: int) -> Tensor:
    return t.expand(b).to(torch.float32)  # `timestep = t.expand(latents.shape[0])` in the pipelines


def _flow() -> Any:
    return FlowMatchEulerDiscreteScheduler(shift=3.0)


FAMILIES: dict[str, Family] = {
    "qwenimage": Family(
        "qwenimage",
        _qwenimage,
        _qwenimage_inputs,
        {"blocks": Stack("transformer_blocks", 1, 0, {"attn": ("attn", 0, _whole), "mlp": ("img_mlp", None, _whole)})},
        _flow,
        lambda t, b: _expanded(t, b) / 1000,  # QwenImagePipeline: timestep=timestep / 1000
        "separate_calls",
    ),
    "qwenimage_edit": Family(
        "qwenimage",
        _qwenimage_edit,
        _qwenimage_edit_inputs,
        {"blocks": Stack("transformer_blocks", 1, 0, {"attn": ("attn", 0, _whole), "mlp": ("img_mlp", None, _whole)})},
        _flow,
        lambda t, b: _expanded(t, b) / 1000,  # QwenImageEdit(Plus)Pipeline: timestep=timestep / 1000
        "separate_calls",
    ),
    "wan": Family(
        "wan",
        lambda: WanTransformer3DModel(**_wan_config()),
        _wan_inputs,
        _WAN_STACKS,
        lambda: UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
        _expanded,
        "separate_calls",
    ),
    "chronoedit": Family(
        "wan",
        lambda: ChronoEditTransformer3DModel(**_wan_config()),
        _wan_inputs,
        _WAN_STACKS,
        lambda: UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0),
        _expanded,
        "separate_calls",
    ),
    "cogview4": Family(
        "cogview4",
        _cogview4,
        _cogview4_inputs,
        {"blocks": Stack("transformer_blocks", 0, 1, {"attn": ("attn1", 0, _whole)})},
        _flow,
        _expanded,
        "separate_calls",
    ),
    "hunyuandit": Family(
        "hunyuandit",
        _hunyuandit,
        _hunyuandit_inputs,
        {
            "blocks": Stack(
                "blocks",
                None,
                submodules={
                    "attn": ("attn1", None, _whole),
                    "cross_attn": ("attn2", None, _whole),
                    "mlp": ("ff", None, _whole),
                },
            )
        },
        DDPMScheduler,
        lambda t, b: torch.tensor([t] * b).to(torch.float32),  # HunyuanDiTPipeline's t_expand
        "equal_halves",
    ),
    "cogvideox": Family(
        "cogvideox",
        _cogvideox,
        _cogvideox_inputs,
        {
            "blocks": Stack(
                "transformer_blocks", 0, 1, {"attn": ("attn1", 0, _whole), "mlp": ("ff", None, _cogvideox_mlp_video)}
            )
        },
        CogVideoXDDIMScheduler,
        lambda t, b: t.expand(b),  # CogVideoXPipeline: integer timesteps, expanded
        "equal_halves",
    ),
    "ltx": Family(
        "ltx",
        _ltx,
        _ltx_inputs,
        {
            "blocks": Stack(
                "transformer_blocks",
                None,
                submodules={
                    "attn": ("attn1", None, _whole),
                    "cross_attn": ("attn2", None, _whole),
                    "mlp": ("ff", None, _whole),
                },
            )
        },
        _flow,
        _expanded,
        "equal_halves",
    ),
    "hunyuan_video": Family(
        "hunyuan_video",
        _hunyuan_video,
        _hunyuan_video_inputs,
        {
            "blocks": Stack("transformer_blocks", 0, 1, {"attn": ("attn", 0, _whole), "mlp": ("ff", None, _whole)}),
            "single_blocks": Stack("single_transformer_blocks", 0, 1, {"attn": ("attn", 0, _whole)}),
        },
        lambda: FlowMatchEulerDiscreteScheduler(shift=7.0),
        _expanded,
        "separate_calls",
    ),
    "cogview3plus": Family(
        "cogview3plus",
        _cogview3plus,
        _cogview3plus_inputs,
        {
            "blocks": Stack(
                "transformer_blocks", 0, 1, {"attn": ("attn1", 0, _whole), "mlp": ("ff", None, _cogview3plus_mlp_image)}
            )
        },
        CogVideoXDDIMScheduler,
        lambda t, b: t.expand(b),  # CogView3PlusPipeline: integer timesteps, expanded
        "equal_halves",
    ),
    "bria": Family(
        "bria",
        lambda: BriaTransformer2DModel(
            **_FLUXLIKE_SIZES, attention_head_dim=8, num_attention_heads=2, axes_dims_rope=[0, 4, 4]
        ),
        lambda b: {**_fluxlike_inputs(b), "timestep": torch.rand(b) * 1000},
        _FLUXLIKE_STACKS,
        _flow,
        _expanded,  # BriaPipeline: timestep = t.expand(batch), sigma * 1000
        "equal_halves",
    ),
    "longcat_image": Family(
        "longcat_image",
        lambda: LongCatImageTransformer2DModel(
            **_FLUXLIKE_SIZES,
            attention_head_dim=16,
            num_attention_heads=2,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
        ),
        _fluxlike_inputs,
        _FLUXLIKE_STACKS,
        _flow,
        lambda t, b: _expanded(t, b) / 1000,  # LongCatImagePipeline: timestep=timestep / 1000
        "separate_calls",
    ),
    "ovis_image": Family(
        "ovis_image",
        lambda: OvisImageTransformer2DModel(
            **_FLUXLIKE_SIZES, out_channels=4, attention_head_dim=16, num_attention_heads=2, axes_dims_rope=(4, 4, 8)
        ),
        _fluxlike_inputs,
        _FLUXLIKE_STACKS,
        _flow,
        lambda t, b: _expanded(t, b) / 1000,  # OvisImagePipeline: timestep=timestep / 1000
        "separate_calls",
    ),
    "skyreels_v2": Family(
        "skyreels_v2",
        lambda: SkyReelsV2Transformer3DModel(**_wan_config()),
        _wan_inputs,
        _WAN_STACKS,
        lambda: UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0),
        _expanded,  # SkyReelsV2Pipeline: timestep = t.expand(batch)
        "separate_calls",
    ),
    "allegro": Family(
        "allegro",
        _allegro,
        _video_inputs(24, lambda b: torch.randint(0, 1000, (b,))),
        {
            "blocks": Stack(
                "transformer_blocks",
                None,
                submodules={
                    "attn": ("attn1", None, _whole),
                    "cross_attn": ("attn2", None, _whole),
                    "mlp": ("ff", None, _whole),
                },
            )
        },
        EulerAncestralDiscreteScheduler,
        lambda t, b: t.expand(b),  # AllegroPipeline: timestep = t.expand(batch)
        "equal_halves",
    ),
    "sana_video": Family(
        "sana_video",
        _sana_video,
        _video_inputs(16, lambda b: torch.rand(b) * 1000),
        {
            "blocks": Stack(
                "transformer_blocks",
                None,
                submodules={"attn": ("attn1", None, _whole), "cross_attn": ("attn2", None, _whole)},
            )
        },
        lambda: DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=8.0),
        _expanded,  # SanaVideoPipeline: timestep = t.expand(batch)
        "equal_halves",
    ),
}


@pytest.fixture(params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> Family:
    return FAMILIES[request.param]


@pytest.fixture
def families() -> dict[str, Family]:
    return FAMILIES
