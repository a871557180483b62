"""HookedDiT inside a stock WanPipeline (text-to-video), built offline from tiny random parts.

The pipeline's own prompt encoding (word-level tokenizer made in memory, tiny UMT5), its two CFG calls
per step (cond first, then uncond with the negative prompt), its UniPC flow scheduler and its causal
video VAE all run; only the weights are random (`toy.random_video`).
"""

import numpy as np
import pytest
import torch

from sae_lens_dit import HookedDiT
from sae_lens_dit.conventions import COND, UNCOND
from sae_lens_dit.toy.random_video import TEXT_LENGTH, random_wan_pipeline
from sae_lens_dit.training.harvest import HarvestConfig, harvest_chunks

STEPS, FRAMES, SIZE = 3, 5, 64  # 5 frames -> 2 latent frames; 64 px -> 8x8 latents -> 2 x 4 x 4 = 32 tokens
TOKENS = 2 * 4 * 4


@pytest.fixture(scope="module")
def wan():
    return random_wan_pipeline()


def _sample(pipe, seed: int = 3) -> np.ndarray:
    return pipe(
        prompt=["a red square", "a blue circle on grey background"],
        negative_prompt=["a cat", "a dog"],
        height=SIZE,
        width=SIZE,
        num_frames=FRAMES,
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        max_sequence_length=TEXT_LENGTH,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).frames


def test_wan_pipeline_is_unchanged_by_an_idle_or_recording_hooked_model(wan):
    clean = _sample(wan)
    assert clean.shape == (2, FRAMES, SIZE, SIZE, 3)
    hooked = HookedDiT(wan.transformer)
    np.testing.assert_array_equal(_sample(wan), clean)  # wrapping changes nothing

    names = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_out"]
    with hooked.record(names, tokens_per_image=None) as rec:
        recorded = _sample(wan)
    np.testing.assert_array_equal(recorded, clean)  # recording changes nothing either
    # Two calls per step (cond, then uncond), each with both videos and all of their 32 tokens.
    assert rec[names[0]].shape == (2 * STEPS, 2, TOKENS, wan.transformer.config.num_attention_heads * 12)
    assert rec.branch.tolist() == [[COND, COND], [UNCOND, UNCOND]] * STEPS
    assert rec.sample_index.tolist() == [[0, 1]] * (2 * STEPS)
    assert rec.step.tolist() == [0, 0, 1, 1, 2, 2]  # both CFG calls of a step count as one step
    wan.scheduler.set_timesteps(STEPS)
    expected_t = wan.scheduler.timesteps.float().repeat_interleave(2)  # flow sigmas x 1000: already [0, 1000]
    torch.testing.assert_close(rec.timesteps[:, 0], expected_t, rtol=0, atol=1e-3)


def test_wan_pipeline_records_what_an_independent_torch_hook_sees(wan):
    hooked = HookedDiT(wan.transformer)
    seen: list[torch.Tensor] = []

    def plain(module, args, output):
        seen.append(output.detach().clone())

    handle = wan.transformer.blocks[1].register_forward_hook(plain)
    try:
        with hooked.record(["blocks.1.hook_resid_post"], tokens_per_image=None) as rec:
            _sample(wan, seed=11)
    finally:
        handle.remove()
    assert len(seen) == 2 * STEPS
    torch.testing.assert_close(rec["blocks.1.hook_resid_post"], torch.stack(seen), rtol=0, atol=0)


def test_wan_pipeline_zeroing_a_hook_changes_the_video(wan):
    clean = _sample(wan, seed=5)
    hooked = HookedDiT(wan.transformer)
    with hooked.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda act, hook: torch.zeros_like(act))]):
        edited = _sample(wan, seed=5)
    assert np.abs(edited - clean).max() > 1e-3  # the hook point is live inside the pipeline loop
    np.testing.assert_array_equal(_sample(wan, seed=5), clean)  # and gone once the context exits


def test_wan_pipeline_tokens_per_image_are_drawn_evenly_over_the_frames(wan):
    hooked = HookedDiT(wan.transformer)
    with hooked.record(["blocks.0.hook_resid_post"], tokens_per_image=4) as rec:
        _sample(wan, seed=7)
    assert rec.frames.tolist() == [2] * (2 * STEPS)  # 5 frames -> 2 latent frames, (1, 2, 2) patches
    rows = rec.rows("blocks.0.hook_resid_post")
    per_call = rows["frame"].reshape(2 * STEPS, 2, 4)  # calls, videos, tokens
    assert (per_call.sum(-1) == 2).all() and ((per_call == 0).sum(-1) == 2).all()  # two tokens in each frame
    assert torch.equal(rows["frame"], rows["token"] // (TOKENS // 2))  # frame-major: token i is in frame i // 16


def test_a_harvest_of_the_wan_pipeline_carries_each_rows_frame(wan):
    cfg = HarvestConfig(
        hook_names=("blocks.1.hook_resid_post",),
        prompts=("a red square", "a blue circle"),
        pipeline_kwargs={"height": SIZE, "width": SIZE, "num_frames": FRAMES, "max_sequence_length": TEXT_LENGTH},
        num_images=2,
        images_per_batch=2,
        num_inference_steps=2,
        guidance_scale=5.0,
        tokens_per_image=6,
        branch="both",
    )
    chunks = list(harvest_chunks(wan, HookedDiT(wan.transformer), cfg, progress=False))
    chunk = chunks[0]
    assert torch.equal(chunk.frame, chunk.token // (TOKENS // 2))
    per_row = chunk.frame.reshape(-1, 6)  # each (call, video) row keeps 6 tokens: 3 in each of the 2 frames
    assert (per_row.sum(-1) == 3).all()
