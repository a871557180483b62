"""The held-out pass of text-conditioned pipelines (`evals.prompted`), on stock SD and SDXL pipelines of tiny parts.

References: the pipeline's own `encode_prompt` (the conditioning replayed per row), its own latents for the
same seed (the clean images), DDPM noising written out with the scheduler's alphas (the noisy rows and the
targets), and the UNet called directly without any hook (the clean loss). Float tolerances: 1e-5 relative
where the same quantity is computed in another order.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from sae_lens_dit import HookedDiT
from sae_lens_dit.analysis.evals.prompted import prompted_heldout_pass
from sae_lens_dit.conventions import COND, UNCOND
from sae_lens_dit.toy.random_unet import random_sd_pipeline

PROMPTS = ["a red square", "a blue circle", "a cat on a grey background"]
EDGES = (0.0, 500.0, 1000.0)


def _pass(pipe, hook: str, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    hooked = HookedDiT.from_pipeline(pipe)
    hp = prompted_heldout_pass(pipe, hooked, hook, PROMPTS, 4, EDGES, seed=7, num_inference_steps=2, **kwargs)
    return hooked, hp


def _by_hand(pipe, hp):
    """(x0 per row, alpha-bar per row) from the scheduler's own betas."""
    alphas = pipe.scheduler.alphas_cumprod[hp.timestep.long()].double()[:, None, None, None]
    x0 = torch.from_numpy(hp.images.images)[hp.image_index].double()
    return x0, alphas


def test_sd_rows_are_the_pipelines_samples_noised_the_ddpm_way_with_its_own_prompt_embeddings():
    pipe = random_sd_pipeline("sd")
    hooked, hp = _pass(pipe, "up.1.1.hook_update", batch_size=2)
    assert len(hp.timestep) == 2 * 2 * 4  # buckets x branches x images
    # Clean images: the pipeline's own latents for the prompts, seed 7, in batches of 2.
    generator = torch.Generator().manual_seed(7 * 100_003)
    first = pipe(prompt=PROMPTS[:2], num_inference_steps=2, generator=generator, output_type="latent").images
    torch.testing.assert_close(torch.from_numpy(hp.images.images[:2]), first)
    assert hp.images.labels.tolist() == [0, 1, 2, 0]
    # Noisy rows: sqrt(ab) x0 + sqrt(1 - ab) eps, eps = the target (an epsilon model).
    x0, ab = _by_hand(pipe, hp)
    expected = ab.sqrt() * x0 + (1 - ab).sqrt() * hp.noise.double()
    torch.testing.assert_close(hp.noisy.double(), expected, rtol=1e-5, atol=1e-5)
    # Conditioning: encode_prompt's embeddings, cond or negative by the row's branch.
    cond, uncond = pipe.encode_prompt(PROMPTS, "cpu", 1, True)
    rows = torch.arange(len(hp.timestep))
    given = hp.conditioning(rows)["encoder_hidden_states"]
    prompt = torch.from_numpy(hp.images.labels)[hp.image_index]
    for row in rows.tolist():
        reference = cond if int(hp.branch[row]) == COND else uncond
        torch.testing.assert_close(given[row], reference[prompt[row]])
    assert set(hp.branch.tolist()) == {COND, UNCOND}
    # Clean loss: the UNet called directly, no hook, on those inputs.
    with torch.no_grad():
        pred = pipe.unet(hp.noisy, hp.timestep, encoder_hidden_states=given).sample
    torch.testing.assert_close(hp.loss_clean, (pred - hp.noise).pow(2).flatten(1).mean(1), rtol=1e-5, atol=1e-7)
    assert hp.activation.shape == (len(rows), 16 * 16, hooked.d_in("up.1.1.hook_update"))  # the top level
    assert (hp.loss_zero != hp.loss_clean).any()


def test_v_prediction_models_are_scored_against_v():
    pipe = random_sd_pipeline("sd")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    _, hp = _pass(pipe, "mid.0.hook_resid_post")
    x0, ab = _by_hand(pipe, hp)
    eps = (hp.noisy.double() - ab.sqrt() * x0) / (1 - ab).sqrt()
    torch.testing.assert_close(hp.noise.double(), ab.sqrt() * eps - (1 - ab).sqrt() * x0, rtol=1e-4, atol=1e-4)


def test_sdxl_rows_carry_pooled_embeddings_and_size_ids():
    pipe = random_sd_pipeline("sdxl")
    _, hp = _pass(pipe, "down.2.1.hook_update")
    rows = torch.arange(len(hp.timestep))
    given = hp.conditioning(rows)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(PROMPTS, device="cpu")
    prompt = torch.from_numpy(hp.images.labels)[hp.image_index]
    for row in rows.tolist():
        is_cond = int(hp.branch[row]) == COND
        torch.testing.assert_close(given["encoder_hidden_states"][row], (embeds if is_cond else negative)[prompt[row]])
        text = given["added_cond_kwargs"]["text_embeds"][row]
        torch.testing.assert_close(text, (pooled if is_cond else negative_pooled)[prompt[row]])
    assert given["added_cond_kwargs"]["time_ids"].shape == (len(rows), 6)


def test_flow_matching_pipelines_are_refused_before_sampling():
    pipe = random_sd_pipeline("sd")
    pipe.scheduler = FlowMatchEulerDiscreteScheduler()
    with pytest.raises(ValueError, match="not a DDPM-family scheduler"):
        _pass(pipe, "mid.0.hook_resid_post")
