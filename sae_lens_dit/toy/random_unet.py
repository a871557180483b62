"""Tiny random Stable Diffusion and SDXL pipelines, built offline, for tests, examples and shrunk presets.

Why: the UNet adapter (`adapters/sd_unet.yaml`) must be checked inside the stock
`StableDiffusionPipeline` and `StableDiffusionXLPipeline`, with their own prompt encoding, CFG layout
and schedulers, and no weights can be downloaded here. Every part is built from a config: UNets with
the real level layout (SD: attention in the first levels; SDXL: none in the first down and last up
level, two transformer blocks per Transformer2DModel deeper down), tiny random CLIP text encoders,
word-level tokenizers made in memory, and a one-level VAE (latent size = image size).

>>> pipe = random_sd_pipeline("sdxl")
>>> type(pipe).__name__, pipe.unet.config.block_out_channels
('StableDiffusionXLPipeline', (8, 16, 32))
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, PreTrainedTokenizerFast

UNetKind = Literal["sd", "sdxl"]
WORDS = ("a", "photo", "of", "red", "blue", "green", "square", "circle", "cat", "dog", "on", "grey", "background")
"""The tokenizers' vocabulary (plus pad, bos, eos, unk); other words map to unk."""
TEXT_WIDTH = 16
SAMPLE_SIZE = 16


def word_tokenizer(max_length: int = 16) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `WORDS`, made in memory (CLIP's BPE files cannot be downloaded here)."""
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, **{word: i + 4 for i, word in enumerate(WORDS)}}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def clip_config(width: int = TEXT_WIDTH, max_length: int = 16, layers: int = 2, heads: int = 2) -> CLIPTextConfig:
    """A tiny CLIP text encoder's config over `word_tokenizer`'s vocabulary (random weights when built)."""
    return CLIPTextConfig(
        vocab_size=len(WORDS) + 4,
        hidden_size=width,
        intermediate_size=2 * width,
        projection_dim=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=max_length,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def random_unet(kind: UNetKind = "sd") -> UNet2DConditionModel:
    """A random UNet2DConditionModel with SD's (`sd`) or SDXL's (`sdxl`) level layout, in eval mode.

    `sd`: two levels, Transformer2DModels at down.0.{0,1}, mid.0, up.1.{0,1,2}. `sdxl`: three levels as in
    SDXL (none at the first down / last up level; two transformer blocks each at the deeper levels), so
    sdxl-unbox's blocks down.2.1, mid.0, up.0.0 and up.0.1 exist; widths 8, 16 and 32 (SDXL: 320, 640, 1280).
    """
    common = dict(sample_size=SAMPLE_SIZE, in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=4)
    if kind == "sd":
        return UNet2DConditionModel(
            **common,
            block_out_channels=(8, 16),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TEXT_WIDTH,
            attention_head_dim=2,
        ).eval()
    if kind == "sdxl":
        return UNet2DConditionModel(
            **common,
            block_out_channels=(8, 16, 32),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 2),
            attention_head_dim=(2, 4, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=4,
            projection_class_embeddings_input_dim=TEXT_WIDTH + 6 * 4,  # pooled text + 6 size/crop ids
            cross_attention_dim=2 * TEXT_WIDTH,  # both text encoders' hidden states, concatenated
        ).eval()
    raise ValueError(f"kind must be 'sd' or 'sdxl', received {kind!r}")


def tiny_vae(sample_size: int = SAMPLE_SIZE, **overrides: Any) -> AutoencoderKL:
    """A one-level random AutoencoderKL (latent size = image size, 4 latent channels); `overrides`: any config."""
    config = dict(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=1,
    )
    return AutoencoderKL(**{**config, **overrides}).eval()


def random_sd_pipeline(kind: UNetKind = "sd", seed: int = 0) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    """A stock StableDiffusionPipeline (`sd`) or StableDiffusionXLPipeline (`sdxl`) of random tiny parts
    (DDIM scheduler; swap it as with any pipeline), 16x16 images, prompts over `WORDS`."""
    torch.manual_seed(seed)
    scheduler = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1)  # SD's own settings
    unet, vae = random_unet(kind), tiny_vae()
    max_length = 16
    if kind == "sd":
        return StableDiffusionPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(clip_config(max_length=max_length)).eval(),
            tokenizer=word_tokenizer(max_length),
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(clip_config(max_length=max_length)).eval(),
        text_encoder_2=CLIPTextModelWithProjection(clip_config(max_length=max_length)).eval(),
        tokenizer=word_tokenizer(max_length),
        tokenizer_2=word_tokenizer(max_length),
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
