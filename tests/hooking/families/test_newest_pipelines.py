"""HookedDiT inside two of the newest stock text-to-image pipelines, ZImagePipeline and CogView4Pipeline, offline.

Why: the adapters (`adapters/z_image.yaml`, `adapters/cogview4.yaml`) claim how each pipeline lays out CFG and
which timestep scale it hands its transformer, and that an idle or recording HookedDiT changes no image. Those
claims only hold if they are checked inside diffusers' own `__call__`: its prompt encoding, its CFG layout, its
flow-matching schedule and its VAE decode. No weights can be downloaded here, so every part is built from a
config and only the weights are random: word-level tokenizers made in memory (`toy.random_unet.word_tokenizer`;
Z-Image's gets a one-line Jinja chat template, since the pipeline calls `apply_chat_template`), a tiny random
Qwen3 (Z-Image) or GLM (CogView4) text encoder over that vocabulary whose width is the transformer's text width,
the tiny transformers of the family tests (`conftest.py` beside this file) and a one-level `AutoencoderKL` with the
transformer's latent channels. Each test builds a fresh pipeline (fixed seed) so "before wrapping" is real.

What the pipelines do (read from diffusers' source, asserted below):
- ZImagePipeline: ONE call per step, latents repeated as [cond | uncond]; the transformer gets
  (1000 - t) / 1000 (0 = noise, 1 = clean), which the adapter maps back to t (1000 = noise). Past
  `cfg_truncation` it runs the cond rows alone.
- CogView4Pipeline: TWO calls per step (cond, then uncond with the negative prompt); the transformer gets the
  unshifted linear timesteps int(linspace(1000, 1, n)) while the scheduler steps with mu-shifted sigmas, so
  the recorded t is not 1000 * sigma.
"""

import numpy as np
import pytest
import torch
from diffusers import (
    CogView4Pipeline,
    FlowMatchEulerDiscreteScheduler,
    ZImagePipeline,
)
from transformers import GlmConfig, GlmModel, Qwen3Config, Qwen3Model

from sae_lens_dit import HookedDiT
from sae_lens_dit.conventions import COND, UNCOND
from sae_lens_dit.toy.random_unet import WORDS, tiny_vae, word_tokenizer

STEPS, TEXT_LENGTH, TEXT_WIDTH = 3, 16, 16
PROMPTS = ["a red square", "a blue circle on grey background"]
NEGATIVE = ["a cat", "a dog"]
Z_SIZE = 12  # one-level VAE: 12x12 latents in 2x2 patches -> 36 image tokens (padded to 64 inside the model)
Z_TOKENS = (Z_SIZE // 2) ** 2
COG_SIZE = 16  # CogView4 wants multiples of 16: 16x16 latents in 2x2 patches -> 64 image tokens
COG_TOKENS = (COG_SIZE // 2) ** 2


def _text_config(config_class):
    """A tiny decoder config over `word_tokenizer`'s vocabulary (Qwen3 and GLM take the same fields)."""
    return config_class(
        vocab_size=len(WORDS) + 4,
        hidden_size=TEXT_WIDTH,
        intermediate_size=2 * TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def _z_image_pipeline(families) -> ZImagePipeline:
    torch.manual_seed(0)
    tokenizer = word_tokenizer(TEXT_LENGTH)
    tokenizer.chat_template = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
    transformer = families["z_image"].make()  # the family test's tiny config (captions TEXT_WIDTH wide)
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),  # a static shift: the pipeline's mu is ignored
        vae=tiny_vae(Z_SIZE, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=Qwen3Model(_text_config(Qwen3Config)).eval(),
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _cogview4_pipeline(families) -> CogView4Pipeline:
    torch.manual_seed(0)
    transformer = families["cogview4"].make()  # the family test's tiny config (text TEXT_WIDTH wide)
    scheduler = FlowMatchEulerDiscreteScheduler(  # CogView4's own scheduler settings
        base_image_seq_len=256, base_shift=0.25, max_shift=0.75, use_dynamic_shifting=True, time_shift_type="linear"
    )
    pipe = CogView4Pipeline(
        tokenizer=word_tokenizer(TEXT_LENGTH),
        text_encoder=GlmModel(_text_config(GlmConfig)).eval(),
        vae=tiny_vae(COG_SIZE),
        transformer=transformer,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def z_image(families) -> ZImagePipeline:
    return _z_image_pipeline(families)


@pytest.fixture
def cogview4(families) -> CogView4Pipeline:
    return _cogview4_pipeline(families)


def _sample(pipe, seed: int = 3, **kwargs) -> np.ndarray:
    size = Z_SIZE if isinstance(pipe, ZImagePipeline) else COG_SIZE
    images = pipe(
        prompt=PROMPTS,
        negative_prompt=NEGATIVE,
        height=size,
        width=size,
        num_inference_steps=STEPS,
        guidance_scale=4.0,  # > 1: CFG on in both pipelines
        max_sequence_length=TEXT_LENGTH,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **kwargs,
    ).images
    assert images.shape == (2, size, size, 3) and np.isfinite(images).all() and images.std() > 0
    return images


# --- Z-Image --------------------------------------------------------------------------------------


def test_z_image_pipeline_is_unchanged_by_an_idle_or_recording_hooked_model(z_image):
    clean = _sample(z_image)
    hooked = HookedDiT(z_image.transformer)
    np.testing.assert_array_equal(_sample(z_image), clean)  # wrapping changes nothing

    names = ["noise_refiner.0.hook_resid_post", "blocks.1.hook_resid_post"]
    with hooked.record(names, tokens_per_image=None) as rec:
        recorded = _sample(z_image)
    np.testing.assert_array_equal(recorded, clean)  # recording changes nothing either
    # One call per step with [cond | uncond] rows; the image is the first 36 tokens (its padding is cut off).
    for name in names:
        assert rec[name].shape == (STEPS, 4, Z_TOKENS, 16)
    assert rec.branch.tolist() == [[COND, COND, UNCOND, UNCOND]] * STEPS
    assert rec.sample_index.tolist() == [[0, 1, 0, 1]] * STEPS
    assert rec.step.tolist() == list(range(STEPS))

    # The pipeline's own schedule: sigmas linspace(1, 1/n, n), shifted by the scheduler (mu passed, unused here).
    slope = (1.15 - 0.5) / (4096 - 256)  # calculate_shift with the scheduler's defaults
    mu = 0.5 + slope * (Z_TOKENS - 256)
    z_image.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / STEPS, STEPS).tolist(), mu=mu)
    expected = z_image.scheduler.timesteps.float()
    assert expected[0] == 1000.0 and (expected.diff() < 0).all()
    for row in range(4):  # every row of a call carries its step's t, on [0, 1000] with 1000 = noise
        torch.testing.assert_close(rec.timesteps[:, row], expected, rtol=0, atol=1e-3)


def test_z_image_records_what_an_independent_torch_hook_sees(z_image):
    hooked = HookedDiT(z_image.transformer)
    seen: list[torch.Tensor] = []
    raw_t: list[torch.Tensor] = []

    def plain(module, args, output):  # layers[1](x, x_mask, x_freqs, adaln_input) -> [batch, joint tokens, dim]
        seen.append(output.detach().clone())

    def timestep_in(module, args, kwargs):  # transformer(x_list, t, cap_feats_list, ...)
        raw_t.append(args[1].detach().clone())

    handles = [
        z_image.transformer.layers[1].register_forward_hook(plain),
        z_image.transformer.register_forward_pre_hook(timestep_in, with_kwargs=True),
    ]
    names = ["blocks.1.hook_resid_post", "blocks.1.hook_txt_resid_post"]
    try:
        with hooked.record(names, tokens_per_image=None) as rec:
            _sample(z_image, seed=11)
    finally:
        for handle in handles:
            handle.remove()
    assert len(seen) == STEPS  # one joint call per step
    joint = torch.stack(seen)  # [steps, 4 rows, image 36 | pad 28 | caption | pad, 16]
    assert torch.equal(rec["blocks.1.hook_resid_post"], joint[:, :, :Z_TOKENS])  # the image comes first
    assert torch.equal(rec["blocks.1.hook_txt_resid_post"], joint[:, :, Z_TOKENS:])  # and the rest is the text side
    # The transformer itself is fed (1000 - t) / 1000: 0 = noise; the recording reports t.
    torch.testing.assert_close(torch.stack(raw_t), (1000 - rec.timesteps) / 1000, rtol=0, atol=1e-6)
    assert (torch.stack(raw_t)[0] == 0).all()


def test_z_image_cfg_truncation_runs_later_steps_on_the_cond_rows_alone(z_image):
    # (1000 - t) / 1000 is 0, 0.14 and 0.4 at the three steps: above 0.1 the pipeline drops the uncond rows.
    hooked = HookedDiT(z_image.transformer)
    with hooked.record(["blocks.0.hook_resid_post"], tokens_per_image=None) as rec:
        _sample(z_image, cfg_truncation=0.1)
    rows = rec.rows("blocks.0.hook_resid_post")
    first = rows["token"] == 0  # one row per (call, batch row)
    layout = torch.stack([rows["step"][first], rows["branch"][first], rows["sample"][first]], dim=1).tolist()
    assert layout == [
        [0, COND, 0],
        [0, COND, 1],
        [0, UNCOND, 0],
        [0, UNCOND, 1],  # step 0: [cond | uncond] as without truncation
        [1, COND, 0],
        [1, COND, 1],  # steps 1 and 2: a call of the two cond rows alone
        [2, COND, 0],
        [2, COND, 1],
    ]
    assert (rows["token"].reshape(-1, Z_TOKENS) == torch.arange(Z_TOKENS)).all()  # every image token of every row


# --- CogView4 -------------------------------------------------------------------------------------


def test_cogview4_pipeline_is_unchanged_by_an_idle_or_recording_hooked_model(cogview4):
    clean = _sample(cogview4)
    hooked = HookedDiT(cogview4.transformer)
    np.testing.assert_array_equal(_sample(cogview4), clean)  # wrapping changes nothing

    names = ["blocks.0.attn.hook_out", "blocks.1.hook_resid_post"]
    with hooked.record(names, tokens_per_image=None) as rec:
        recorded = _sample(cogview4)
    np.testing.assert_array_equal(recorded, clean)  # recording changes nothing either
    # Two calls per step (cond, then uncond), each with both images and all of their 64 tokens.
    for name in names:
        assert rec[name].shape == (2 * STEPS, 2, COG_TOKENS, 16)
    assert rec.branch.tolist() == [[COND, COND], [UNCOND, UNCOND]] * STEPS
    assert rec.sample_index.tolist() == [[0, 1]] * (2 * STEPS)
    assert rec.step.tolist() == [0, 0, 1, 1, 2, 2]  # both CFG calls of a step count as one step

    # The pipeline's own schedule: linear integer timesteps as given, sigmas = t / 1000 shifted by mu.
    timesteps = np.linspace(1000, 1.0, STEPS).astype(np.int64).astype(np.float32)
    mu = (COG_TOKENS / 256) ** 0.5 * 0.75 + 0.25
    cogview4.scheduler.set_timesteps(timesteps=timesteps, sigmas=timesteps / 1000, mu=mu)
    expected = cogview4.scheduler.timesteps.float()
    assert expected.tolist() == [1000.0, 500.0, 1.0]
    for row in range(2):
        torch.testing.assert_close(rec.timesteps[:, row], expected.repeat_interleave(2), rtol=0, atol=1e-3)
    shifted = 1000 * cogview4.scheduler.sigmas[:-1]  # the latents' noise level: 1000, 384.6, 0.6
    assert shifted[1] < expected[1] - 100  # the model is conditioned on the unshifted t (500), not on 1000 sigma


def test_cogview4_records_what_an_independent_torch_hook_sees(cogview4):
    hooked = HookedDiT(cogview4.transformer)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def plain(module, args, output):  # transformer_blocks[1](...) -> (image, text)
        seen.append((output[0].detach().clone(), output[1].detach().clone()))

    handle = cogview4.transformer.transformer_blocks[1].register_forward_hook(plain)
    names = ["blocks.1.hook_resid_post", "blocks.1.hook_txt_resid_post"]
    try:
        with hooked.record(names, tokens_per_image=None) as rec:
            _sample(cogview4, seed=11)
    finally:
        handle.remove()
    assert len(seen) == 2 * STEPS
    assert torch.equal(rec["blocks.1.hook_resid_post"], torch.stack([image for image, _ in seen]))
    assert torch.equal(rec["blocks.1.hook_txt_resid_post"], torch.stack([text for _, text in seen]))


# --- Both -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [_z_image_pipeline, _cogview4_pipeline], ids=["z_image", "cogview4"])
def test_a_hook_edit_reaches_the_image(build, families):
    # The bit-identity above is not vacuous: the same hook point, edited, changes the pipeline's image.
    pipe = build(families)
    clean = _sample(pipe, seed=5)
    hooked = HookedDiT(pipe.transformer)
    with hooked.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda act, hook: torch.zeros_like(act))]):
        edited = _sample(pipe, seed=5)
    assert np.abs(edited - clean).max() > 1e-3
    np.testing.assert_array_equal(_sample(pipe, seed=5), clean)  # and gone once the context exits
