"""HookedDiT inside a stock StableDiffusion3Pipeline, built offline from tiny random parts.

The CLIP tokenizers are word-level `tokenizers` models made in memory (`toy.random_unet.word_tokenizer`) and
the text encoders tiny random CLIPs (no T5), so the pipeline's own prompt path, CFG layout and flow-matching
scheduler run.
"""

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextModelWithProjection

from sae_lens_dit import HookedDiT
from sae_lens_dit.toy.random_unet import clip_config, tiny_vae, word_tokenizer


def _tokenizer():
    return word_tokenizer(16)


def _clip() -> CLIPTextModelWithProjection:
    return CLIPTextModelWithProjection(clip_config(width=32, layers=3, heads=4)).eval()


@pytest.fixture(scope="module")
def sd3():
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
    ).eval()
    vae = tiny_vae(
        32, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035
    )  # SD3's latent statistics
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=_clip(),
        tokenizer=_tokenizer(),
        text_encoder_2=_clip(),
        tokenizer_2=_tokenizer(),
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(pipe, **kwargs) -> np.ndarray:
    return pipe(
        prompt=["a red square", "a blue circle"],
        num_inference_steps=3,
        height=32,
        width=32,
        guidance_scale=5.0,
        max_sequence_length=16,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
        **kwargs,
    ).images


def test_sd3_pipeline_is_unchanged_by_an_idle_hooked_model_and_records_both_streams(sd3):
    clean = _sample(sd3)
    hooked = HookedDiT(sd3.transformer)
    np.testing.assert_array_equal(_sample(sd3), clean)  # wrapping changes nothing

    names = ["blocks.0.hook_resid_post", "blocks.0.hook_txt_resid_post"]
    with hooked.record(names, tokens_per_image=None) as rec:
        recorded = _sample(sd3)
    np.testing.assert_array_equal(recorded, clean)  # recording changes nothing either
    image, text = rec[names[0]], rec[names[1]]
    assert image.shape == (3, 4, 32 * 32, 32)  # steps, 2 prompts x CFG, all image tokens, width
    assert text.shape[:2] == (3, 4) and text.shape[2] != image.shape[2]  # the text stream is kept apart
    assert rec.branch[0].tolist() == [1, 1, 0, 0]  # text pipelines put the unconditional half first
    sd3.scheduler.set_timesteps(3)
    torch.testing.assert_close(rec.timesteps[:, 0], sd3.scheduler.timesteps.float(), rtol=0, atol=1e-3)
    assert "blocks.1.hook_txt_resid_post" not in hooked.hook_names  # SD3's last block returns no text
