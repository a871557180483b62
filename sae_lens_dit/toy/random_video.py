"""A tiny random stock `WanPipeline` (text-to-video), built offline, for tests and the video benchmarks.

Why: video is where recording is most expensive and where the token layout (frames x height x width)
matters, and the claims about it (idle hooks are bit-identical, CFG branches and timesteps are read
right, recording costs <= 5%) must be checked inside diffusers' own pipeline loop: its prompt encoding,
its two CFG calls per step, its UniPC flow scheduler and its causal video VAE. No weights can be
downloaded here, so every part is built from a config: a word-level tokenizer made in memory, a tiny
random UMT5 encoder, a Wan transformer and a one-level `AutoencoderKLWan`.

>>> pipe = random_wan_pipeline()
>>> type(pipe).__name__, pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
('WanPipeline', 4, 8)
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from sae_lens_dit.toy.random_unet import WORDS, word_tokenizer

LATENT_CHANNELS = 16
"""`AutoencoderKLWan`'s z_dim: its latents_mean/std have 16 entries."""
TEXT_LENGTH = 16
"""Prompt tokens (the pipeline's `max_sequence_length`; pass it to every call)."""


def random_wan_transformer(
    layers: int = 2, heads: int = 2, head_dim: int = 12, text_width: int = 16, seed: int = 0
) -> WanTransformer3DModel:
    """A random `WanTransformer3DModel` over 16-channel latents in (1, 2, 2) patches."""
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        text_dim=text_width,
        freq_dim=256,
        ffn_dim=2 * heads * head_dim,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()


def random_wan_pipeline(layers: int = 2, heads: int = 2, head_dim: int = 12, seed: int = 0) -> WanPipeline:
    """A stock `WanPipeline` of random tiny parts: 8x spatial and 4x temporal VAE compression, so
    `height=width=64, num_frames=5` gives latents of 2 frames x 8 x 8 and 32 video tokens per sample."""
    torch.manual_seed(seed)
    text_width = 16
    encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(WORDS) + 4,
            d_model=text_width,
            d_kv=8,
            d_ff=32,
            num_layers=2,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=2,
        )
    ).eval()
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()
    pipe = WanPipeline(
        tokenizer=word_tokenizer(TEXT_LENGTH),
        text_encoder=encoder,
        transformer=random_wan_transformer(layers, heads, head_dim, text_width, seed),
        vae=vae,
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
