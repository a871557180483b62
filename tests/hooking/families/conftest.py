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
    AnyFlowTransformer3DModel,
    AuraFlowTransformer2DModel,
    BriaFibo2Transformer2DModel,
    BriaFiboTransformer2DModel,
    BriaTransformer2DModel,
    ChromaTransformer2DModel,
    ChronoEditTransformer3DModel,
    CogVideoXDDIMScheduler,
    CogVideoXDPMScheduler,
    CogVideoXTransformer3DModel,
    CogView3PlusTransformer2DModel,
    CogView4Transformer2DModel,
    ConsisIDTransformer3DModel,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EasyAnimateTransformer3DModel,
    ErnieImageTransformer2DModel,
    EulerAncestralDiscreteScheduler,
    FlowMapEulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    Flux2Transformer2DModel,
    Flux3Transformer2DModel,
    GlmImageTransformer2DModel,
    HeliosTransformer3DModel,
    HiDreamImageTransformer2DModel,
    HunyuanDiT2DModel,
    HunyuanImageTransformer2DModel,
    HunyuanVideo15Transformer3DModel,
    HunyuanVideoFramepackTransformer3DModel,
    HunyuanVideoTransformer3DModel,
    JoyImageEditPlusTransformer3DModel,
    JoyImageEditTransformer3DModel,
    Kandinsky5Transformer3DModel,
    Kandinsky6SRTransformer3DModel,
    Kandinsky6Transformer3DModel,
    Krea2Pipeline,
    Krea2Transformer2DModel,
    LongCatImageTransformer2DModel,
    LTX2VideoTransformer3DModel,
    LTXVideoTransformer3DModel,
    MotifVideoTransformer3DModel,
    NucleusMoEImageTransformer2DModel,
    OmniGenTransformer2DModel,
    OvisImageTransformer2DModel,
    PRXTransformer2DModel,
    QwenImage21Transformer2DModel,
    QwenImageTransformer2DModel,
    SanaVideoTransformer3DModel,
    SanaWMLTX2RefinerTransformer3DModel,
    SanaWMTransformer3DModel,
    SkyReelsV2Transformer3DModel,
    UniPCMultistepScheduler,
    WanAnimateTransformer3DModel,
    WanTransformer3DModel,
    WanVACETransformer3DModel,
    ZImageTransformer2DModel,
)
from diffusers.models.embeddings import get_2d_rotary_pos_embed
from torch import Tensor, nn

Submodule = tuple[str, int | None, Callable[[Tensor], Tensor]]
"""(dotted path of the module in the block, index into its output tuple or None,
output -> image tokens [batch, tokens, d] as a view)"""


@dataclass(frozen=True)
class Stack:
    attribute: str  # the ModuleList on the transformer (a dotted path: `mode_blocks.image`)
    image_index: int | None  # where the block output holds the image stream (None: the output is it)
    text_index: int | None = None  # where it holds the text stream (None: no text stream)
    submodules: dict[str, Submodule] = field(default_factory=dict)  # hook suffix -> Submodule
    joint_image_tokens: int | None = None  # a stream that holds more than the image: its last n are the image
    image_first: bool = False  # the joint stream is [image | rest] instead: its first n are the image
    image_start: int | None = None  # the joint stream is [text | image | rest] instead: the n from here are the image
    text: bool = True  # a joint stream's rest is text (hook_txt_resid_post), not padding alone
    sequence_first: bool = False  # the block's stream is [tokens, batch, d] (ERNIE-Image)


@dataclass(frozen=True)
class Family:
    adapter: str  # the adapter name HookedDiT must pick for the class
    build: Callable[[], nn.Module]
    inputs: Callable[[int], dict[str, Any]]  # forward kwargs for a batch of b distinct images
    stacks: dict[str, Stack]  # hook-name prefix -> Stack
    scheduler: Callable[[], Any]  # the scheduler the family's pipelines use
    pipeline_timestep: Callable[[Tensor, int], Tensor]  # scheduler timestep t, batch -> the `timestep` argument
    cfg: Literal["equal_halves", "separate_calls", "none"]  # how the pipelines lay out classifier-free guidance
    cond_first: bool = False  # equal_halves: the pipelines put the cond half first (most put uncond first)
    latents_argument: str = "hidden_states"  # the forward argument with the latents
    timestep_argument: str = "timestep"  # the forward argument with the timestep

    def make(self) -> nn.Module:
        torch.manual_seed(0)
        return self.build().eval()

    @staticmethod
    def sample(output: Any) -> Tensor:
        """The model output's sample as one tensor (Z-Image returns a list of per-sample tensors)."""
        return torch.stack(output[0]) if isinstance(output[0], list) else output[0]

    @staticmethod
    def run(model: nn.Module, inputs: dict[str, Any]) -> Tensor:
        with torch.no_grad():
            return Family.sample(model(**inputs, return_dict=False))


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
        "hidden_states": torch.randn(b, 16 + 4, 16),  # the generated 4x4 grid, then a 2x2 reference
        "img_shapes": [[(1, 4, 4), (1, 2, 2)]] * b,
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
        text_embed_dim=16,
        time_embed_dim=8,
        condition_dim=4,
    )


def _cogview4_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 4, 8, 8),
        "encoder_hidden_states": torch.randn(b, 6, 16),
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


def _hunyuan_video_framepack() -> nn.Module:
    return HunyuanVideoFramepackTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=2,
        num_single_layers=2,
        num_refiner_layers=1,
        patch_size=2,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
        image_condition_type=None,
        has_image_proj=True,
        image_proj_dim=16,
        has_clean_x_embedder=True,
    )


def _hunyuan_video_framepack_inputs(b: int) -> dict[str, Any]:
    # HunyuanVideoFramepackPipeline: the section's noisy latents plus the clean / 2x / 4x history latents and
    # their frame indices (for the RoPE), SigLIP image embeddings and the distilled guidance (scale * 1000).
    return {
        "hidden_states": torch.randn(b, 4, 3, 4, 4),
        "timestep": torch.rand(b) * 1000,
        "encoder_hidden_states": torch.randn(b, 6, 16),
        "encoder_attention_mask": torch.ones(b, 6),
        "pooled_projections": torch.randn(b, 8),
        "image_embeds": torch.randn(b, 6, 16),
        "indices_latents": torch.arange(3),
        "guidance": torch.full((b,), 10000.0),
        "latents_clean": torch.randn(b, 4, 2, 4, 4),
        "indices_latents_clean": torch.arange(2),
        "latents_history_2x": torch.randn(b, 4, 2, 4, 4),
        "indices_latents_history_2x": torch.arange(2),
        "latents_history_4x": torch.randn(b, 4, 8, 4, 4),
        "indices_latents_history_4x": torch.arange(8),
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


# --- Wan VACE, Wan Animate: Wan blocks, with a control hint / face adapter added between blocks --------


def _wan_vace() -> nn.Module:
    # vace_layers [0, 2] of 4: the control hints land after blocks 0 and 2.
    return WanVACETransformer3DModel(**{**_wan_config(), "num_layers": 4}, vace_layers=[0, 2], vace_in_channels=12)


def _wan_vace_inputs(b: int) -> dict[str, Any]:
    # WanVACEPipeline: control_hidden_states are the control video's latents + mask [batch, 3 * 4, frames, h, w].
    return {**_wan_inputs(b), "control_hidden_states": torch.randn(b, 12, 2, 8, 8)}


def _wan_animate() -> nn.Module:
    config = {key: value for key, value in _wan_config().items() if key != "in_channels"}
    return WanAnimateTransformer3DModel(
        **config,
        in_channels=12,  # 2 * latent_channels + 4: noisy latents | reference / conditioning latents | mask
        latent_channels=4,
        image_dim=16,
        motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16},
        motion_encoder_size=16,
        motion_style_dim=8,
        motion_dim=4,
        motion_encoder_dim=16,
        face_encoder_hidden_dim=16,
        face_encoder_num_heads=2,
        inject_face_latents_blocks=1,  # a face adapter after every block
    )


def _wan_animate_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 12, 3, 8, 8),  # reference frame + 2 frames
        "timestep": torch.rand(b) * 1000,
        "encoder_hidden_states": torch.randn(b, 6, 16),
        "encoder_hidden_states_image": torch.randn(b, 4, 16),  # CLIP features of the reference image
        "pose_hidden_states": torch.randn(b, 4, 2, 8, 8),  # one frame fewer than hidden_states
        "face_pixel_values": torch.randn(b, 3, 1, 16, 16),  # pixel-space face video
    }


# --- HunyuanVideo 1.5, HunyuanImage 2.1 -----------------------------------------------------------


def _hunyuan_video15() -> nn.Module:
    return HunyuanVideo15Transformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=16,
        text_embed_2_dim=8,
        image_embed_dim=12,
        rope_axes_dim=(2, 2, 4),
        target_size=16,
        task_type="t2v",
    )


def _hunyuan_text_inputs(b: int) -> dict[str, Any]:
    return {
        "encoder_hidden_states": torch.randn(b, 6, 16),  # MLLM tokens
        "encoder_attention_mask": torch.ones(b, 6),
        "encoder_hidden_states_2": torch.randn(b, 4, 8),  # ByT5 tokens
        "encoder_attention_mask_2": torch.ones(b, 4),
    }


def _hunyuan_video15_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 4, 2, 4, 4),  # [batch, channels, frames, height, width]
        "timestep": torch.rand(b) * 1000,
        **_hunyuan_text_inputs(b),
        "image_embeds": torch.zeros(b, 3, 12),  # text-to-video: zero image embeddings
    }


def _hunyuan_image() -> nn.Module:
    return HunyuanImageTransformer2DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        num_single_layers=2,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=(1, 1),
        text_embed_dim=16,
        text_embed_2_dim=8,
        rope_axes_dim=(4, 4),
    )


def _hunyuan_image_inputs(b: int) -> dict[str, Any]:
    return {"hidden_states": torch.randn(b, 4, 4, 4), "timestep": torch.rand(b) * 1000, **_hunyuan_text_inputs(b)}


# --- Kandinsky 5.0 --------------------------------------------------------------------------------


def _kandinsky5() -> nn.Module:
    model = Kandinsky5Transformer3DModel(
        in_visual_dim=4,
        in_text_dim=16,
        in_text_dim2=8,
        time_dim=16,
        out_visual_dim=4,
        patch_size=(1, 2, 2),
        model_dim=16,  # head_dim = sum(axes_dims) = 8: two heads
        ff_dim=32,
        num_text_blocks=1,
        num_visual_blocks=2,
        axes_dims=(2, 2, 4),
    )
    # Kandinsky5Modulation starts at zero (every gate 0: attention and MLP outputs would not reach the stream);
    # give the modulation layers random weights, as a trained model has.
    for name, module in model.named_modules():
        if name.endswith("modulation.out_layer"):
            nn.init.normal_(module.weight, std=0.5)
            nn.init.normal_(module.bias, std=0.5)
    return model


def _kandinsky5_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 2, 8, 8, 4),  # channels last: [batch, frames, height, width, channels]
        "encoder_hidden_states": torch.randn(b, 6, 16),
        "timestep": torch.rand(b) * 1000,
        "pooled_projections": torch.randn(b, 8),
        "visual_rope_pos": [torch.arange(2), torch.arange(4), torch.arange(4)],  # the patch grid, as the pipeline
        "text_rope_pos": torch.arange(6),
    }


# --- EasyAnimate, ConsisID -----------------------------------------------------------------------

EASYANIMATE_TEXT_TOKENS = 6


def _easyanimate() -> nn.Module:
    return EasyAnimateTransformer3DModel(
        attention_head_dim=16,  # its 3D RoPE splits the head dimension in even parts
        num_attention_heads=2,
        in_channels=4,
        out_channels=4,
        patch_size=2,
        num_layers=2,
        mmdit_layers=2,
        sample_height=8,
        sample_width=8,
        text_embed_dim=16,
        time_embed_dim=8,
    )


def _easyanimate_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 4, 2, 8, 8),  # [batch, channels, frames, height, width]
        "timestep": torch.rand(b) * 1000,
        "encoder_hidden_states": torch.randn(b, EASYANIMATE_TEXT_TOKENS, 16),
    }


CONSISID_TEXT_TOKENS = 8


def _consisid() -> nn.Module:
    return ConsisIDTransformer3DModel(
        num_attention_heads=2,
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
        max_text_seq_length=CONSISID_TEXT_TOKENS,
        cross_attn_interval=1,  # a face cross-attention after every block
        is_kps=False,
        is_train_face=True,
        cross_attn_dim_head=1,
        cross_attn_num_heads=1,
        LFE_id_dim=2,
        LFE_vit_dim=2,
        LFE_depth=5,
        LFE_dim_head=8,
        LFE_num_heads=2,
        LFE_num_id_token=1,
        LFE_num_querie=1,
        LFE_output_dim=10,
        LFE_ff_mult=1,
        LFE_num_scale=1,
    )


def _consisid_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 2, 4, 8, 8),  # [batch, frames, channels, height, width]
        "encoder_hidden_states": torch.randn(b, CONSISID_TEXT_TOKENS, 8),
        "timestep": torch.randint(0, 1000, (b,)),
        "id_vit_hidden": [torch.randn(b, 2, 2)],  # face features, as ConsisIDPipeline passes them
        "id_cond": torch.randn(b, 2),
    }


def _consisid_mlp_video(out: Tensor) -> Tensor:
    return out[:, CONSISID_TEXT_TOKENS:]  # the block's one MLP runs over [text | video]


# --- GLM-Image ------------------------------------------------------------------------------------


def _glm_image() -> nn.Module:
    return GlmImageTransformer2DModel(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        text_embed_dim=32,
        time_embed_dim=16,
        condition_dim=8,
        prior_vq_quantizer_codebook_size=64,
    )


def _glm_image_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 4, 8, 8),
        "encoder_hidden_states": torch.randn(b, 6, 32),  # glyph (quoted text) embeddings
        "prior_token_id": torch.randint(0, 64, (b, 16)),  # the AR prior's token per image token
        "prior_token_drop": torch.zeros(b, 16, dtype=torch.bool),
        "timestep": torch.rand(b) * 1000,
        "target_size": torch.tensor([[64.0, 64.0]] * b),
        "crop_coords": torch.tensor([[0.0, 0.0]] * b),
    }


# --- LTX-2 ----------------------------------------------------------------------------------------


def _ltx2() -> nn.Module:
    return LTX2VideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=4,
        audio_out_channels=4,
        audio_num_attention_heads=2,
        audio_attention_head_dim=4,
        audio_cross_attention_dim=8,
        num_layers=2,
        qk_norm="rms_norm_across_heads",
        caption_channels=16,
        rope_double_precision=False,
    )


def _ltx2_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 2 * 4 * 4, 4),  # packed [batch, frames * height * width, channels]
        "audio_hidden_states": torch.randn(b, 9, 4),  # [batch, audio frames, channels * mel bins]
        "encoder_hidden_states": torch.randn(b, 6, 16),
        "audio_encoder_hidden_states": torch.randn(b, 6, 16),
        "timestep": torch.rand(b) * 1000,
        "encoder_attention_mask": torch.ones(b, 6, dtype=torch.bool),
        "num_frames": 2,
        "height": 4,
        "width": 4,
        "audio_num_frames": 9,
        "fps": 25.0,
    }


# --- Helios ---------------------------------------------------------------------------------------


def _helios() -> nn.Module:
    config = {key: value for key, value in _wan_config().items() if key != "rope_max_seq_len"}
    return HeliosTransformer3DModel(
        **config,
        rope_dim=(4, 4, 4),
        has_multi_term_memory_patch=True,
        guidance_cross_attn=True,
        zero_history_timestep=True,
        is_amplify_history=False,
    )


def _helios_inputs(b: int) -> dict[str, Any]:
    # HeliosPipeline: the section's noisy latents, the short / mid / long history latents and frame indices.
    return {
        **_wan_inputs(b),
        "indices_hidden_states": torch.arange(1, 3).expand(b, -1),
        "indices_latents_history_short": torch.zeros(b, 1, dtype=torch.long),
        "indices_latents_history_mid": torch.zeros(b, 1, dtype=torch.long),
        "indices_latents_history_long": torch.zeros(b, 4, dtype=torch.long),
        "latents_history_short": torch.randn(b, 4, 1, 8, 8),
        "latents_history_mid": torch.randn(b, 4, 1, 8, 8),
        "latents_history_long": torch.randn(b, 4, 4, 8, 8),
    }


# --- Kandinsky 6 ----------------------------------------------------------------------------------


def _kandinsky6() -> nn.Module:
    return Kandinsky6Transformer3DModel(
        in_visual_dim=4,
        out_visual_dim=4,
        in_text_dim=8,
        in_text_dim2=8,
        time_dim=16,
        patch_size=(1, 2, 2),
        model_dim=24,  # head_dim = sum(axes_dims) = 12: two heads
        ff_dim=32,
        num_text_blocks=1,
        num_visual_blocks=2,
        axes_dims=(4, 4, 4),
        visual_cond=True,
        in_audio_dim=4,
        out_audio_dim=4,
    )


def _kandinsky6_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 2, 8, 8, 9),  # channels last: noisy latents | condition latents | mask
        "encoder_hidden_states": torch.randn(b, 6, 8),
        "pooled_projections": torch.randn(b, 8),
        "timestep": torch.rand(b) * 1000,
        "audio_hidden_states": torch.randn(b, 5, 4),
    }


# --- PRX ------------------------------------------------------------------------------------------


def _prx() -> nn.Module:
    model = PRXTransformer2DModel(
        in_channels=4,
        patch_size=2,
        context_in_dim=16,
        hidden_size=32,
        mlp_ratio=2.0,
        num_heads=2,
        depth=2,
        axes_dim=[8, 8],
    )
    # PRX's Modulation starts at zero (every gate 0); give it random weights, as a trained model has.
    for block in model.blocks:
        nn.init.normal_(block.modulation.lin.weight, std=0.5)
        nn.init.normal_(block.modulation.lin.bias, std=0.5)
    return model


def _prx_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 4, 8, 8),
        "timestep": torch.rand(b),
        "encoder_hidden_states": torch.randn(b, 6, 16),
    }


# --- Nucleus-MoE Image -----------------------------------------------------------------------------


def _nucleusmoe_image() -> nn.Module:
    model = NucleusMoEImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=5,  # dense_moe_strategy keeps blocks 0-2 and the last dense: block 3 is a mixture of experts
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,
        axes_dims_rope=(8, 4, 4),
        mlp_ratio=6.0,  # the dense blocks' inner width rounds down to a multiple of 128: 32 * 6 * 2 / 3 = 128
        moe_enabled=True,
        num_experts=4,
        moe_intermediate_dim=32,
        capacity_factors=2.0,  # expert capacity ceil(2 * 16 tokens / 4 experts) = 8 must not exceed the tokens
    )
    # The experts' weights are allocated with torch.empty (a checkpoint fills them): give them values.
    for name, parameter in model.named_parameters():
        if ".experts." in name:
            nn.init.normal_(parameter, std=0.1)
    return model


def _nucleusmoe_image_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 16, 16),  # packed 2x2 latent patches of a 4x4 grid
        "encoder_hidden_states": torch.randn(b, 6, 16),
        "encoder_hidden_states_mask": torch.ones(b, 6, dtype=torch.long),
        "timestep": torch.rand(b),
        "img_shapes": [(1, 4, 4)] * b,
    }


def _kandinsky6_sr() -> nn.Module:
    return Kandinsky6SRTransformer3DModel(
        in_visual_dim=4,
        out_visual_dim=4,
        time_dim=16,
        patch_size=(1, 1, 1),
        model_dim=24,
        ff_dim=32,
        num_visual_blocks=2,
        axes_dims=(4, 4, 4),
    )


def _kandinsky6_sr_inputs(b: int) -> dict[str, Any]:
    # NABLA attention needs the token grid's height and width divisible by 8.
    return {"hidden_states": torch.randn(b, 1, 8, 8, 9), "timestep": torch.rand(b) * 1000}


def _expanded(t: Tensor, b: int) -> Tensor:
    return t.expand(b).to(torch.float32)  # `timestep = t.expand(latents.shape[0])` in the pipelines


def _flow() -> Any:
    return FlowMatchEulerDiscreteScheduler(shift=3.0)


# --- Chroma, AuraFlow, Bria FIBO, Krea 2: single-stream blocks over one joint [text | image] sequence
# Chroma and AuraFlow concatenate [text | image] (AuraFlow: [registers | text | image]) before their first
# single-stream block and split the image back out after the last; FIBO joins and splits around every single
# block; every Krea 2 block is single-stream. In all four the image is the last 16 tokens of such a block's stream.

JOINT_IMAGE_TOKENS = 16


def _joint_tail(out: Tensor) -> Tensor:
    return out[:, -JOINT_IMAGE_TOKENS:]


def _chroma() -> nn.Module:
    return ChromaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 4, 8),
        approximator_num_channels=8,
        approximator_hidden_dim=16,
        approximator_layers=1,
    )


def _auraflow() -> nn.Module:
    return AuraFlowTransformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_mmdit_layers=2,
        num_single_dit_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        out_channels=4,
        pos_embed_max_size=256,
    )


def _auraflow_inputs(b: int) -> dict[str, Any]:
    # 8x8 latents in 2x2 patches: 16 image tokens, after 6 text tokens and the model's register tokens.
    return {
        "hidden_states": torch.randn(b, 4, 8, 8),
        "encoder_hidden_states": torch.randn(b, 6, 32),
        "timestep": torch.rand(b),
    }


def _bria_fibo() -> nn.Module:
    return BriaFiboTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        text_encoder_dim=16,
        axes_dims_rope=[0, 4, 4],
    )


def _bria_fibo_inputs(b: int) -> dict[str, Any]:
    # Packed [batch, 16, 4] latents, 6 text tokens, one text-encoder layer per block (2 double + 2 single).
    return {
        "hidden_states": torch.randn(b, JOINT_IMAGE_TOKENS, 4),
        "encoder_hidden_states": torch.randn(b, 6, 16),
        "text_encoder_layers": [torch.randn(b, 6, 16) for _ in range(4)],
        "timestep": torch.rand(b) * 1000,
        "img_ids": torch.randn(JOINT_IMAGE_TOKENS, 3),
        "txt_ids": torch.randn(6, 3),
    }


def _krea2() -> nn.Module:
    return Krea2Transformer2DModel(
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=32,
        timestep_embed_dim=16,
        text_hidden_dim=16,
        num_text_layers=2,
        text_num_attention_heads=2,
        text_num_key_value_heads=2,
        text_intermediate_size=32,
        num_layerwise_text_blocks=1,
        num_refiner_text_blocks=1,
        axes_dims_rope=(2, 2, 4),
    )


def _krea2_inputs(b: int) -> dict[str, Any]:
    # Packed [batch, 16, 4] latents on a 4x4 grid; 6 text tokens, each from 2 text-encoder layers of width 16.
    return {
        "hidden_states": torch.randn(b, JOINT_IMAGE_TOKENS, 4),
        "encoder_hidden_states": torch.randn(b, 6, 2, 16),
        "timestep": torch.rand(b),
        "position_ids": Krea2Pipeline.prepare_position_ids(6, 4, 4, "cpu"),
    }


# --- FLUX.2: double-stream blocks, then parallel single-stream blocks over one joint [text | image] sequence ------
# The transformer concatenates [text | image] before its first single block and keeps the image (the last 16 tokens
# here) after the last; each single block's one `attn` (attention and MLP fused) runs over the joint sequence.


def _flux2() -> nn.Module:
    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        timestep_guidance_channels=256,
        axes_dims_rope=(4, 4, 4, 4),
    )


def _flux2_inputs(b: int) -> dict[str, Any]:
    # Flux2Pipeline: packed [batch, 16, 4] latents of a 4x4 grid, position ids (t, h, w, l) per token.
    grid = torch.cartesian_prod(torch.arange(1), torch.arange(4), torch.arange(4), torch.arange(1))
    text = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(6))
    return {
        "hidden_states": torch.randn(b, JOINT_IMAGE_TOKENS, 4),
        "encoder_hidden_states": torch.randn(b, 6, 32),
        "img_ids": grid.expand(b, -1, -1),
        "txt_ids": text.expand(b, -1, -1),
        "timestep": torch.rand(b),
        "guidance": torch.full((b,), 4.0),
    }


FLUX2_TEXT_TOKENS, FLUX2_REFERENCE_TOKENS = 6, 4  # _flux2_inputs' text; the reference image's 2x2 grid


def _flux2_edit_inputs(b: int) -> dict[str, Any]:
    # Flux2Pipeline / Flux2KleinPipeline with a reference image: hidden_states = cat([latents, image_latents]) and
    # img_ids = cat([latent_ids, image_latent_ids]), the generated 4x4 grid at T = 0, a 2x2 reference at T = 10.
    inputs = _flux2_inputs(b)
    reference = torch.cartesian_prod(torch.tensor([10]), torch.arange(2), torch.arange(2), torch.arange(1))
    return {
        **inputs,
        "hidden_states": torch.cat([inputs["hidden_states"], torch.randn(b, FLUX2_REFERENCE_TOKENS, 4)], dim=1),
        "img_ids": torch.cat([inputs["img_ids"], reference.expand(b, -1, -1)], dim=1),
    }


def _flux2_edit_single(out: Tensor) -> Tensor:
    return out[:, FLUX2_TEXT_TOKENS : FLUX2_TEXT_TOKENS + JOINT_IMAGE_TOKENS]  # [text | image | reference]


# --- OmniGen: decoder blocks over one [condition | time token | image] sequence ----------------------------------
# OmniGenPipeline's processor gives 24 condition tokens here (text ids, an input image's 16 patch tokens put in place
# of its placeholder ids 0-16), the transformer adds one time token and the 8x8 latents in 2x2 patches: the image is
# the last 16 of 41 tokens of every block's stream, and of the attention and MLP outputs.

OMNIGEN_CONDITION_TOKENS = 24


def _omnigen() -> nn.Module:
    return OmniGenTransformer2DModel(
        hidden_size=16,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=32,
        num_layers=2,
        pad_token_id=0,
        vocab_size=1000,
        in_channels=4,
        time_step_dim=4,
        rope_scaling={"long_factor": [1, 2], "short_factor": [1, 2]},
    )


def _omnigen_inputs(b: int) -> dict[str, Any]:
    n = OMNIGEN_CONDITION_TOKENS + 1 + JOINT_IMAGE_TOKENS
    return {
        "hidden_states": torch.randn(b, 4, 8, 8),
        "timestep": torch.rand(b),
        "input_ids": torch.randint(0, 10, (b, OMNIGEN_CONDITION_TOKENS)),
        "input_img_latents": [torch.randn(1, 4, 8, 8)],
        "input_image_sizes": {0: [[0, JOINT_IMAGE_TOKENS]]},
        "attention_mask": torch.ones(b, n, n),
        "position_ids": torch.arange(n).expand(b, -1),
    }


# --- HiDream-I1: double-stream blocks, then single-stream blocks over one joint [image | text] sequence -----------
# 8x8 latents in 2x2 patches: 16 image tokens. The single-stream blocks get [image | T5 (8) and last Llama layer (8)
# | the block's own Llama layer (8)]: the image is the FIRST 16 of 40 tokens. Each block is a wrapper around `.block`.


def _hidream() -> nn.Module:
    return HiDreamImageTransformer2DModel(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_channels=[8, 4],
        text_emb_dim=8,
        num_routed_experts=2,
        num_activated_experts=2,
        axes_dims_rope=(4, 2, 2),
        max_resolution=(32, 32),
        llama_layers=(0, 1, 2, 3),  # one Llama layer per block
    )


def _hidream_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 4, 8, 8),
        "timesteps": torch.rand(b) * 1000,
        "encoder_hidden_states_t5": torch.randn(b, 8, 8),
        "encoder_hidden_states_llama3": torch.randn(4, b, 8, 4),  # [Llama layers, batch, tokens, d]
        "pooled_embeds": torch.randn(b, 8),
    }


def _joint_head(out: Tensor) -> Tensor:
    return out[:, :JOINT_IMAGE_TOKENS]


# --- Z-Image: noise refiner on the image, then layers over one [image | caption] sequence, latents as a list ------
# Per-sample latents [16, 1, 8, 8] in 2x2 patches: 16 image tokens, padded with the model's pad token to 32; the
# captions (6 and 36 tokens: ragged) to 32 and 64. The noise refiner sees [image | 16 pad], the layers each row's
# [image | 16 pad | caption | caption pad] (and zeros to the longest row): the image is the FIRST 16 tokens.


def _z_image() -> nn.Module:
    return ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=16,
        n_layers=2,
        n_refiner_layers=2,
        n_heads=1,
        n_kv_heads=2,
        qk_norm=True,
        cap_feat_dim=16,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )


def _z_image_inputs(b: int) -> dict[str, Any]:
    return {
        "x": [torch.randn(16, 1, 8, 8) for _ in range(b)],
        "t": torch.rand(b),
        "cap_feats": [torch.randn(6 + 30 * (i % 2), 16) for i in range(b)],
    }


# --- Bria FIBO 2 (partial): the noise refiner over [image | context images] ---------------------------------------
# 8x8 latents in 2x2 patches: 16 image tokens, then a 6x10 image to edit: 15 context tokens.


def _bria_fibo2() -> nn.Module:
    model = _bria_fibo2_model()
    with torch.no_grad():  # the injection blocks' cross-attention gate starts at 0 (tanh(0): no text at all)
        for block in model.layers:
            if block.cross_attention is not None:
                block.cross_attn_gate.fill_(0.5)
    return model


def _bria_fibo2_model() -> nn.Module:
    return BriaFibo2Transformer2DModel(
        in_channels=4,
        patch_size=2,
        dim=32,
        n_layers=2,
        n_refiner_layers=2,
        n_heads=2,
        cap_feat_dim=24,
        injection_layer_ids=(1,),
        perceiver_num_layers=1,
        min_num_gist_tokens=4,
        max_num_gist_tokens=8,
        gist_step=4,
        gist_min_text_len=4,
        gist_max_text_len=16,
        axes_dims=(4, 6, 6),
        axes_lens=(16, 16, 16),
    )


def _bria_fibo2_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 4, 8, 8),
        "timestep": torch.rand(b),
        "encoder_hidden_states": torch.randn(b, 2, 6, 24),  # the Perceiver's bundle, then one per injection block
        "context_latents": [torch.randn(b, 4, 6, 10)],
    }


FIBO2_GIST_TOKENS = 8
"""Gist tokens of a 6-token prompt in the tiny config (compute_gist_count: 4 + 4 x (6 - 4) / 12, up to a step of 4)."""


def _after_fibo2_gist(out: Tensor) -> Tensor:
    return out[:, FIBO2_GIST_TOKENS : FIBO2_GIST_TOKENS + JOINT_IMAGE_TOKENS]


# --- FLUX.3: per-mode image blocks, then joint single blocks over [text | content] -------------------------------


def _flux3() -> nn.Module:
    return Flux3Transformer2DModel(
        in_channels=4,
        cond_in_channels=4,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        timestep_channels=16,
        axes_dims_rope=(2, 2, 2, 2),
    )


def _flux3_inputs(b: int) -> dict[str, Any]:
    # Packed [batch, 16, 4] latents of a 4x4 grid, 6 text tokens; (t, h, w, l) position ids shared by the batch.
    return {
        "hidden_states": torch.randn(b, JOINT_IMAGE_TOKENS, 4),
        "encoder_hidden_states": torch.randn(b, 6, 16),
        "timestep": torch.rand(b),
        "img_ids": torch.randn(JOINT_IMAGE_TOKENS, 4),
        "txt_ids": torch.randn(6, 4),
    }


# --- JoyImage Edit ----------------------------------------------------------------------------------------------


JOYIMAGE_CONFIG = {
    "patch_size": [1, 2, 2],
    "in_channels": 4,
    "hidden_size": 16,
    "num_attention_heads": 2,
    "text_dim": 8,
    "num_layers": 2,
    "rope_dim_list": [2, 2, 4],
}
"""Tiny JoyImage Edit and Edit Plus transformers (the same blocks)."""


def _joyimage() -> nn.Module:
    return JoyImageEditTransformer3DModel(**JOYIMAGE_CONFIG)


def _joyimage_inputs(b: int) -> dict[str, Any]:
    # JoyImageEditPipeline without a reference image: [batch, items = 1, channels, frames = 1, height, width].
    return {
        "hidden_states": torch.randn(b, 1, 4, 1, 8, 8),
        "timestep": torch.rand(b) * 1000,
        "encoder_hidden_states": torch.randn(b, 6, 8),
    }


def _joyimage_edit_plus() -> nn.Module:
    return JoyImageEditPlusTransformer3DModel(**JOYIMAGE_CONFIG)


def _joyimage_edit_plus_inputs(b: int) -> dict[str, Any]:
    # JoyImageEditPlusPipeline without references: 16 patches [batch, 16, channels, 1, 2, 2] of a 4x4 token grid.
    return {
        "hidden_states": torch.randn(b, JOINT_IMAGE_TOKENS, 4, 1, 2, 2),
        "timestep": torch.rand(b) * 1000,
        "encoder_hidden_states": torch.randn(b, 6, 8),
        "shape_list": [[(1, 4, 4)] for _ in range(b)],
    }


# --- ERNIE-Image: single-stream blocks over a sequence-first [image | text] stream [tokens, batch, d] ------------


def _ernie_image() -> nn.Module:
    model = ErnieImageTransformer2DModel(
        hidden_size=32,
        num_attention_heads=2,
        num_layers=2,
        ffn_hidden_size=64,
        in_channels=4,
        out_channels=4,
        patch_size=2,
        text_in_dim=16,
        rope_axes_dim=(4, 6, 6),
    )
    with torch.no_grad():  # the model zero-initialises its modulation (every gate 0) and output projection
        nn.init.normal_(model.adaLN_modulation[-1].weight, std=0.1)
        nn.init.normal_(model.final_linear.weight, std=0.1)
    return model


def _ernie_image_inputs(b: int) -> dict[str, Any]:
    # 8x8 latents in 2x2 patches: 16 image tokens, then 6 text slots (the second row's text 4 long).
    return {
        "hidden_states": torch.randn(b, 4, 8, 8),
        "timestep": torch.rand(b) * 1000,
        "text_bth": torch.randn(b, 6, 16),
        "text_lens": torch.tensor([6, 4] * (b // 2) + [6] * (b % 2)),
    }


def _sequence_first_head(out: Tensor) -> Tensor:
    return out.transpose(0, 1)[:, :JOINT_IMAGE_TOKENS]


# --- Motif-Video ------------------------------------------------------------------------------------------------


def _motif_video() -> nn.Module:
    return MotifVideoTransformer3DModel(
        in_channels=9,  # noisy latents | first-frame condition latents | mask, as MotifVideoPipeline joins them
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        num_single_layers=2,
        patch_size=2,
        patch_size_t=1,
        text_embed_dim=16,
        rope_axes_dim=(2, 2, 4),
    )


def _motif_video_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 9, 2, 8, 8),  # [batch, channels, frames, height, width]
        "timestep": torch.rand(b) * 1000,
        "encoder_hidden_states": torch.randn(b, 6, 16),
        "encoder_attention_mask": torch.ones(b, 6),
    }


# --- SANA-WM and its stage-2 refiner ------------------------------------------------------------------------------


def _sana_wm() -> nn.Module:
    return SanaWMTransformer3DModel(
        in_channels=4,
        num_layers=2,
        hidden_size=32,
        num_attention_heads=2,
        linear_head_dim=16,
        softmax_every_n=2,  # block 0: gated-delta-net linear attention, block 1: softmax attention
        chunk_plucker_channels=4,
        chunk_plucker_post_attn_blocks=2,
        caption_channels=16,
        mixed_precision="fp32",
    )


def _sana_wm_timestep(t: Tensor, b: int) -> Tensor:
    # SanaWMPipeline: min(t, (1 - condition mask) * 1000) per latent frame, [batch, 1, frames]; the first frame is
    # the conditioning anchor, pinned to 0.
    condition = torch.tensor([1.0, 0.0])
    return torch.minimum(t.float().expand(b, 1, 2), (1.0 - condition) * 1000.0)


def _sana_wm_inputs(b: int) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(b, 4, 2, 4, 4),  # [batch, channels, frames, height, width], (1, 1, 1) patches
        "timestep": _sana_wm_timestep(torch.rand(b)[:, None, None] * 1000, b),
        "encoder_hidden_states": torch.randn(b, 1, 6, 16),  # Gemma hidden states [batch, 1, tokens, d]
        "mask": torch.ones(b, 6),
    }


def _sana_wm_refiner() -> nn.Module:
    return SanaWMLTX2RefinerTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=4,
        audio_out_channels=4,
        audio_num_attention_heads=2,
        audio_attention_head_dim=4,
        audio_cross_attention_dim=8,
        num_layers=2,
        caption_channels=16,
        rope_double_precision=False,
    )


def _sana_wm_refiner_inputs(b: int) -> dict[str, Any]:
    # SanaWMRefiner: one active block of 2 latent frames of 4x4, packed; its RoPE from the model's own helper (no
    # weights: a fresh instance gives the same), every token at sigma * timestep_scale_multiplier.
    rope = _sana_wm_refiner().build_rotary_emb_for_absolute_positions(
        batch_size=b, frame_positions=[0, 1], height=4, width=4, device="cpu", fps=24.0
    )
    return {
        "hidden_states": torch.randn(b, 2 * 4 * 4, 4),
        "encoder_hidden_states": torch.randn(b, 6, 16),
        "timestep": (torch.rand(b, 1) * 1000).expand(b, 32),
        "video_rotary_emb": rope,
        "encoder_attention_mask": torch.ones(b, 6),
    }


# --- AnyFlow: Wan-style blocks, per-frame source time t and target time r -----------------------------------------


def _anyflow() -> nn.Module:
    config = {key: value for key, value in _wan_config().items() if key not in ("cross_attn_norm", "qk_norm")}
    return AnyFlowTransformer3DModel(**config)


def _anyflow_timestep(t: Tensor, b: int) -> Tensor:
    # AnyFlowPipeline: t.expand(batch).unsqueeze(-1).repeat((1, frames)), one t per latent frame.
    return t.float().expand(b).unsqueeze(-1).repeat((1, 2))


def _anyflow_inputs(b: int) -> dict[str, Any]:
    t = torch.rand(b) * 1000
    return {
        "hidden_states": torch.randn(b, 2, 4, 8, 8),  # [batch, frames, channels, height, width]
        "timestep": _anyflow_timestep(t, b),
        "r_timestep": _anyflow_timestep(t * 0.5, b),  # the flow map's target: a later (cleaner) time
        "encoder_hidden_states": torch.randn(b, 6, 16),
    }


_TWO_STREAM = {"attn": ("attn", 0, _whole), "mlp": ("ff", None, _whole)}
_CHROMA_STACKS = {
    "blocks": Stack("transformer_blocks", 1, 0, _TWO_STREAM),
    "single_blocks": Stack(
        "single_transformer_blocks", None, None, {"attn": ("attn", None, _joint_tail)}, JOINT_IMAGE_TOKENS
    ),
}
_AURAFLOW_STACKS = {
    "blocks": Stack("joint_transformer_blocks", 1, 0, _TWO_STREAM),
    "single_blocks": Stack(
        "single_transformer_blocks",
        None,
        None,
        {"attn": ("attn", None, _joint_tail), "mlp": ("ff", None, _joint_tail)},
        JOINT_IMAGE_TOKENS,
    ),
}


# --- Qwen-Image 2.1: single-stream blocks over one joint [text with condition-image tokens | target image] -----
# 6 text positions, one of them a vision-language image slot holding a 2x2 condition image (4 tokens), then the
# 4x4 target (16 tokens, 4 slots): the blocks see 5 text + 4 condition + 16 target = 25 tokens, and the latents
# hold 20 (condition and target), so only img_shapes' last entry counts the 16 image tokens at the tail.


def _qwenimage21() -> nn.Module:
    return QwenImage21Transformer2DModel(
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        context_in_dim=24,
        mlp_ratio=2,
        axes_dims_rope=(4, 6, 6),
    )


def _qwenimage21_inputs(b: int) -> dict[str, Any]:
    img_mask = torch.zeros(b, 6 + JOINT_IMAGE_TOKENS // 4, dtype=torch.bool)
    img_mask[:, 2] = True  # the condition image's slot inside the text
    img_mask[:, 6:] = True  # the target's slots, appended
    return {
        "hidden_states": torch.randn(b, 4 + JOINT_IMAGE_TOKENS, 16),  # [condition (2x2) | target (4x4)], packed
        "encoder_hidden_states": torch.randn(b, 6, 24),
        "encoder_hidden_states_mask": torch.ones(b, 6, dtype=torch.bool),
        "timestep": torch.rand(b),
        "img_shapes": [[(1, 2, 2), (1, 4, 4)]] * b,
        "img_mask": img_mask,
    }


FAMILIES: dict[str, Family] = {
    "chroma": Family(
        "chroma",
        _chroma,
        _fluxlike_inputs,  # packed [batch, 16, 4] latents, 6 text tokens
        _CHROMA_STACKS,
        _flow,
        lambda t, b: _expanded(t, b) / 1000,  # ChromaPipeline: timestep=timestep / 1000
        "separate_calls",
    ),
    "bria_fibo": Family(
        "bria_fibo",
        _bria_fibo,
        _bria_fibo_inputs,
        _CHROMA_STACKS,  # the same layout: double-stream blocks, then joint single-stream ones (attention only)
        _flow,
        _expanded,  # BriaFiboPipeline: timestep = t.expand(batch), sigma * 1000
        "equal_halves",
    ),
    "krea2": Family(
        "krea2",
        _krea2,
        _krea2_inputs,
        {
            "blocks": Stack(
                "transformer_blocks",
                None,
                None,
                {"attn": ("attn", None, _joint_tail), "mlp": ("ff", None, _joint_tail)},
                JOINT_IMAGE_TOKENS,
            )
        },
        _flow,
        lambda t, b: _expanded(t, b) / 1000,  # Krea2Pipeline: t / scheduler.config.num_train_timesteps
        "separate_calls",
    ),
    "auraflow": Family(
        "auraflow",
        _auraflow,
        _auraflow_inputs,
        _AURAFLOW_STACKS,
        _flow,
        lambda t, b: torch.tensor([t / 1000]).expand(b),  # AuraFlowPipeline: torch.tensor([t / 1000]).expand(batch)
        "equal_halves",
    ),
    "flux2": Family(
        "flux2",
        _flux2,
        _flux2_inputs,
        {
            "blocks": Stack("transformer_blocks", 1, 0, _TWO_STREAM),
            "single_blocks": Stack(
                "single_transformer_blocks", None, None, {"attn": ("attn", None, _joint_tail)}, JOINT_IMAGE_TOKENS
            ),
        },
        _flow,
        lambda t, b: _expanded(t, b) / 1000,  # Flux2Pipeline, Flux2KleinPipeline: timestep=timestep / 1000
        "separate_calls",
    ),
    "flux2_edit": Family(
        "flux2",
        _flux2,
        _flux2_edit_inputs,
        {
            # The image stream is [generated 4x4 | reference 2x2]; the single blocks' [text | generated | reference].
            "blocks": Stack(
                "transformer_blocks",
                1,
                0,
                {"attn": ("attn", 0, _joint_head), "mlp": ("ff", None, _joint_head)},
                JOINT_IMAGE_TOKENS,
                image_first=True,
            ),
            "single_blocks": Stack(
                "single_transformer_blocks",
                None,
                None,
                {"attn": ("attn", None, _flux2_edit_single)},
                JOINT_IMAGE_TOKENS,
                image_start=FLUX2_TEXT_TOKENS,
            ),
        },
        _flow,
        lambda t, b: _expanded(t, b) / 1000,
        "separate_calls",
    ),
    "omnigen": Family(
        "omnigen",
        _omnigen,
        _omnigen_inputs,
        {
            "blocks": Stack(
                "layers",
                None,
                None,
                {"attn": ("self_attn", None, _joint_tail), "mlp": ("mlp", None, _joint_tail)},
                JOINT_IMAGE_TOKENS,
            )
        },
        _flow,  # the noise level sigma = t / 1000 of each step
        # OmniGenPipeline's scheduler (invert_sigmas=True, num_train_timesteps=1) passes 1 - sigma, 0 = noise.
        lambda t, b: 1 - _expanded(t, b) / 1000,
        "equal_halves",
        cond_first=True,  # OmniGenPipeline: torch.cat([latents] * 2), cond then uncond
    ),
    "hidream": Family(
        "hidream",
        _hidream,
        _hidream_inputs,
        {
            "blocks": Stack(
                "double_stream_blocks",
                0,
                1,
                {"attn": ("block.attn1", 0, _whole), "mlp": ("block.ff_i", None, _whole)},
            ),
            "single_blocks": Stack(
                "single_stream_blocks",
                None,
                None,
                {"attn": ("block.attn1", None, _joint_head), "mlp": ("block.ff_i", None, _joint_head)},
                JOINT_IMAGE_TOKENS,
                image_first=True,
            ),
        },
        _flow,
        _expanded,  # HiDreamImagePipeline: timesteps=t.expand(batch), sigma * 1000
        "equal_halves",
        timestep_argument="timesteps",
    ),
    "z_image": Family(
        "z_image",
        _z_image,
        _z_image_inputs,
        {
            "noise_refiner": Stack(
                "noise_refiner",
                None,
                None,
                {"attn": ("attention", None, _joint_head), "mlp": ("feed_forward", None, _joint_head)},
                JOINT_IMAGE_TOKENS,
                image_first=True,
                text=False,
            ),
            "blocks": Stack(
                "layers",
                None,
                None,
                {"attn": ("attention", None, _joint_head), "mlp": ("feed_forward", None, _joint_head)},
                JOINT_IMAGE_TOKENS,
                image_first=True,
            ),
        },
        _flow,
        lambda t, b: (1000 - _expanded(t, b)) / 1000,  # ZImagePipeline: (1000 - t) / 1000, 0 = noise
        "equal_halves",
        cond_first=True,  # ZImagePipeline: latents.repeat(2, ...), prompt embeddings then negative ones
        latents_argument="x",
        timestep_argument="t",
    ),
    "bria_fibo2": Family(
        "bria_fibo2",
        _bria_fibo2,
        _bria_fibo2_inputs,
        {
            "noise_refiner": Stack(
                "noise_refiner",
                None,
                None,
                {"attn": ("attention", None, _joint_head), "mlp": ("feed_forward", None, _joint_head)},
                JOINT_IMAGE_TOKENS,
                image_first=True,
                text=False,
            ),
            # The main blocks: [gist | image | context], 8 gist tokens for these 6-token prompts.
            "blocks": Stack(
                "layers",
                None,
                None,
                {
                    "attn": ("attention", None, _after_fibo2_gist),
                    "cross_attn": ("cross_attention", None, _after_fibo2_gist),  # block 1 only (injection_layer_ids)
                    "mlp": ("feed_forward", None, _after_fibo2_gist),
                },
                JOINT_IMAGE_TOKENS,
                image_start=FIBO2_GIST_TOKENS,
                text=False,
            ),
        },
        _flow,
        lambda t, b: _expanded(t, b) / 1000,  # BriaFibo2Pipeline: t.expand(batch) / 1000
        "separate_calls",
    ),
    "qwenimage": Family(
        "qwenimage",
        _qwenimage,
        _qwenimage_inputs,
        {"blocks": Stack("transformer_blocks", 1, 0, {"attn": ("attn", 0, _whole), "mlp": ("img_mlp", None, _whole)})},
        _flow,
        lambda t, b: _expanded(t, b) / 1000,  # QwenImagePipeline: timestep=timestep / 1000
        "separate_calls",
    ),
    "qwenimage21": Family(
        "qwenimage21",
        _qwenimage21,
        _qwenimage21_inputs,
        {
            "blocks": Stack(
                "transformer_blocks",
                None,
                None,
                {"attn": ("attn", None, _joint_tail), "mlp": ("img_mlp", None, _joint_tail)},
                JOINT_IMAGE_TOKENS,
            )
        },
        _flow,
        lambda t, b: _expanded(t, b) / 1000,  # QwenImage21Pipeline: timestep=timestep / 1000
        "separate_calls",
    ),
    "qwenimage_edit": Family(
        "qwenimage",
        _qwenimage_edit,
        _qwenimage_edit_inputs,
        {
            "blocks": Stack(
                "transformer_blocks",
                1,
                0,
                {"attn": ("attn", 0, _joint_head), "mlp": ("img_mlp", None, _joint_head)},
                JOINT_IMAGE_TOKENS,  # the image stream is [generated 4x4 | reference 2x2]
                image_first=True,
            )
        },
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
    "wan_vace": Family(
        "wan_vace",
        _wan_vace,
        _wan_vace_inputs,
        _WAN_STACKS,
        lambda: UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
        _expanded,  # WanVACEPipeline: timestep = t.expand(batch)
        "separate_calls",
    ),
    "wan_animate": Family(
        "wan_animate",
        _wan_animate,
        _wan_animate_inputs,
        _WAN_STACKS,
        lambda: UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0),
        _expanded,  # WanAnimatePipeline: timestep = t.expand(batch)
        "separate_calls",
    ),
    "hunyuan_video15": Family(
        "hunyuan_video15",
        _hunyuan_video15,
        _hunyuan_video15_inputs,
        {"blocks": Stack("transformer_blocks", 0, 1, {"attn": ("attn", 0, _whole), "mlp": ("ff", None, _whole)})},
        lambda: FlowMatchEulerDiscreteScheduler(shift=7.0),
        _expanded,  # HunyuanVideo15Pipeline: timestep = t.expand(batch), once per guider batch
        "separate_calls",
    ),
    "hunyuan_image": Family(
        "hunyuan_image",
        _hunyuan_image,
        _hunyuan_image_inputs,
        {
            "blocks": Stack("transformer_blocks", 0, 1, {"attn": ("attn", 0, _whole), "mlp": ("ff", None, _whole)}),
            "single_blocks": Stack("single_transformer_blocks", 0, 1, {"attn": ("attn", 0, _whole)}),
        },
        lambda: FlowMatchEulerDiscreteScheduler(shift=4.0),
        _expanded,  # HunyuanImagePipeline: timestep = t.expand(batch), once per guider batch
        "separate_calls",
    ),
    "kandinsky5": Family(
        "kandinsky5",
        _kandinsky5,
        _kandinsky5_inputs,
        {
            "blocks": Stack(
                "visual_transformer_blocks",
                None,
                submodules={
                    "attn": ("self_attention", None, _whole),
                    "cross_attn": ("cross_attention", None, _whole),
                    "mlp": ("feed_forward", None, _whole),
                },
            )
        },
        _flow,
        lambda t, b: t.reshape(1).repeat(b).to(torch.float32),  # Kandinsky5T2VPipeline: t.unsqueeze(0).repeat(batch)
        "separate_calls",
    ),
    "easyanimate": Family(
        "easyanimate",
        _easyanimate,
        _easyanimate_inputs,
        {"blocks": Stack("transformer_blocks", 0, 1, {"attn": ("attn1", 0, _whole), "mlp": ("ff", None, _whole)})},
        _flow,
        _expanded,  # EasyAnimatePipeline: t_expand = torch.tensor([t] * batch)
        "equal_halves",
    ),
    "consisid": Family(
        "consisid",
        _consisid,
        _consisid_inputs,
        {
            "blocks": Stack(
                "transformer_blocks", 0, 1, {"attn": ("attn1", 0, _whole), "mlp": ("ff", None, _consisid_mlp_video)}
            )
        },
        CogVideoXDPMScheduler,
        lambda t, b: t.expand(b),  # ConsisIDPipeline: integer timesteps, expanded
        "equal_halves",
    ),
    "glm_image": Family(
        "glm_image",
        _glm_image,
        _glm_image_inputs,
        {"blocks": Stack("transformer_blocks", 0, 1, {"attn": ("attn1", 0, _whole)})},
        _flow,
        lambda t, b: _expanded(t, b) - 1,  # GlmImagePipeline: timestep = t.expand(batch) - 1
        "separate_calls",
    ),
    "ltx2": Family(
        "ltx2",
        _ltx2,
        _ltx2_inputs,
        {
            "blocks": Stack(
                "transformer_blocks",
                0,
                None,  # the block's second output is the audio stream
                submodules={
                    "attn": ("attn1", None, _whole),
                    "cross_attn": ("attn2", None, _whole),
                    "a2v_attn": ("audio_to_video_attn", None, _whole),
                    "mlp": ("ff", None, _whole),
                },
            )
        },
        _flow,
        _expanded,  # LTX2Pipeline: timestep = t.expand(batch)
        "equal_halves",
    ),
    "hunyuan_video_framepack": Family(
        "hunyuan_video",
        _hunyuan_video_framepack,
        _hunyuan_video_framepack_inputs,
        {
            "blocks": Stack("transformer_blocks", 0, 1, {"attn": ("attn", 0, _whole), "mlp": ("ff", None, _whole)}),
            "single_blocks": Stack("single_transformer_blocks", 0, 1, {"attn": ("attn", 0, _whole)}),
        },
        lambda: FlowMatchEulerDiscreteScheduler(shift=3.0),
        _expanded,  # HunyuanVideoFramepackPipeline: timestep = t.expand(batch)
        "separate_calls",
    ),
    "helios": Family(
        "helios",
        _helios,
        _helios_inputs,
        _WAN_STACKS,
        _flow,
        _expanded,  # HeliosPipeline: timestep = t.expand(batch)
        "separate_calls",
    ),
    "kandinsky6": Family(
        "kandinsky6",
        _kandinsky6,
        _kandinsky6_inputs,
        {
            "blocks": Stack(
                "visual_transformer_blocks",
                0,
                None,  # the block's second output is the audio stream
                submodules={
                    "attn": ("video_dec_block.self_attention", None, _whole),
                    "cross_attn": ("video_dec_block.cross_attention", None, _whole),
                    "a2v_attn": ("va_cross_attention", None, _whole),
                    "mlp": ("video_dec_block.feed_forward", None, _whole),
                },
            )
        },
        _flow,
        _expanded,  # Kandinsky6TI2VAPipeline: timestep = t.expand(batch)
        "separate_calls",
    ),
    "prx": Family(
        "prx",
        _prx,
        _prx_inputs,
        {
            "blocks": Stack(
                "blocks", None, submodules={"attn": ("attention", None, _whole), "mlp": ("down_proj", None, _whole)}
            )
        },
        _flow,
        lambda t, b: t.float().reshape(1).repeat(b) / 1000,  # PRXPipeline: (t / num_train_timesteps).view(1).repeat(2)
        "equal_halves",
    ),
    "nucleusmoe_image": Family(
        "nucleusmoe_image",
        _nucleusmoe_image,
        _nucleusmoe_image_inputs,
        {
            "blocks": Stack(
                "transformer_blocks",
                None,
                submodules={"attn": ("attn", None, _whole), "mlp": ("img_mlp", None, _whole)},
            )
        },
        _flow,
        lambda t, b: _expanded(t, b) / 1000,  # NucleusMoEImagePipeline: timestep / num_train_timesteps
        "separate_calls",
    ),
    "kandinsky6_sr": Family(
        "kandinsky6_sr",
        _kandinsky6_sr,
        _kandinsky6_sr_inputs,
        {
            "blocks": Stack(
                "visual_transformer_blocks",
                None,
                submodules={"attn": ("self_attention", None, _whole), "mlp": ("feed_forward", None, _whole)},
            )
        },
        _flow,
        _expanded,  # Kandinsky6SRPipeline: timestep = t.expand(batch)
        "none",
    ),
    "flux3": Family(
        "flux3",
        _flux3,
        _flux3_inputs,
        {
            "blocks": Stack(
                "mode_blocks.image", None, None, {"attn": ("attn", None, _whole), "mlp": ("ff", None, _whole)}
            ),
            # The joint attention and feed-forward run over [text | image]: the image is the last 16 tokens.
            "single_blocks": Stack(
                "single_transformer_blocks",
                1,
                0,
                {"attn": ("attn", None, _joint_tail), "mlp": ("ff", None, _joint_tail)},
            ),
        },
        lambda: FlowMatchEulerDiscreteScheduler(shift=6.93),  # Flux3SetTimestepsStep's constant shift
        lambda t, b: _expanded(t, b) / 1000,  # Flux3 denoise step: (t / 1000).expand(batch)
        "separate_calls",
    ),
    "joyimage": Family(
        "joyimage",
        _joyimage,
        _joyimage_inputs,
        {"blocks": Stack("double_blocks", 0, 1, {"attn": ("attn", 0, _whole), "mlp": ("img_mlp", None, _whole)})},
        _flow,
        _expanded,  # JoyImageEditPipeline: t.repeat(batch)
        "separate_calls",
    ),
    "ernie_image": Family(
        "ernie_image",
        _ernie_image,
        _ernie_image_inputs,
        {
            "blocks": Stack(
                "layers",
                None,
                None,
                {"attn": ("self_attention", None, _joint_head), "mlp": ("mlp", None, _sequence_first_head)},
                JOINT_IMAGE_TOKENS,
                image_first=True,
                sequence_first=True,
            )
        },
        _flow,
        _expanded,  # ErnieImagePipeline: torch.full((batch,), t)
        "equal_halves",  # torch.cat([latents, latents]), the negative prompt first
    ),
    "joyimage_edit_plus": Family(
        "joyimage_edit_plus",
        _joyimage_edit_plus,
        _joyimage_edit_plus_inputs,
        {"blocks": Stack("double_blocks", 0, 1, {"attn": ("attn", 0, _whole), "mlp": ("img_mlp", None, _whole)})},
        _flow,
        _expanded,  # JoyImageEditPlusPipeline: t.repeat(batch)
        "equal_halves",  # torch.cat([model_input] * 2), the negative prompt first
    ),
    "motif_video": Family(
        "motif_video",
        _motif_video,
        _motif_video_inputs,
        {
            "blocks": Stack("transformer_blocks", 0, 1, {"attn": ("attn", 0, _whole), "mlp": ("ff", None, _whole)}),
            "single_blocks": Stack("single_transformer_blocks", 0, 1, {"attn": ("attn", 0, _whole)}),
        },
        _flow,
        _expanded,  # MotifVideoPipeline: t.expand(batch)
        "separate_calls",
    ),
    "sana_wm": Family(
        "sana_wm",
        _sana_wm,
        _sana_wm_inputs,
        {
            "blocks": Stack(
                "blocks",
                None,
                submodules={
                    "attn": ("attn", None, _whole),
                    "cross_attn": ("cross_attn", None, _whole),
                    "mlp": ("mlp", None, _whole),
                },
            )
        },
        _flow,
        _sana_wm_timestep,
        "equal_halves",
    ),
    "sana_wm_refiner": Family(
        "sana_wm_refiner",
        _sana_wm_refiner,
        _sana_wm_refiner_inputs,
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
        lambda: FlowMatchEulerDiscreteScheduler(shift=1.0),  # SanaWMRefiner's distilled sigmas pass through
        lambda t, b: torch.full((b, 32), float(t) / 1000 * 1000),  # sigma * timestep_scale_multiplier, per token
        "none",
    ),
    "anyflow": Family(
        "anyflow",
        _anyflow,
        _anyflow_inputs,
        _WAN_STACKS,
        FlowMapEulerDiscreteScheduler,
        _anyflow_timestep,
        "equal_halves",
    ),
}


@pytest.fixture(params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> Family:
    return FAMILIES[request.param]


@pytest.fixture
def families() -> dict[str, Family]:
    return FAMILIES


Tap = tuple[nn.Module, Callable[[Any], dict[str, Tensor]]]
"""A module and what to keep of its output ({name: tensor})."""


def seen_with_hooks(hooked: Any, inputs: dict[str, Any], hooks: list, taps: list[Tap]) -> dict[str, Tensor]:
    """What plain torch forward hooks on the `taps` see in one call of the transformer with HookedDiT's `hooks`
    active: registered after HookedDiT's own torch hooks, they see the outputs as the next module does (edited)."""
    seen: dict[str, Tensor] = {}
    with torch.no_grad(), hooked.hooks(fwd_hooks=hooks):
        handles = [
            module.register_forward_hook(lambda m, a, out, keep=keep: seen.update(keep(out))) for module, keep in taps
        ]
        try:
            hooked.transformer(**inputs, return_dict=False)
        finally:
            for handle in handles:
                handle.remove()
    return seen


@pytest.fixture
def seen_with() -> Callable[..., dict[str, Tensor]]:
    """`seen_with_hooks`, for the reference-token tests."""
    return seen_with_hooks
