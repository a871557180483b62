"""Steered samples resumed mid-schedule (`resume.steer_resumed`) against the independent reference: the stock
DiTPipeline called from step 0 with the same seed inside `steer` with the same spec, on the tiny random DiT
(DDIM, 5 steps: t = 800, 600, 400, 200, 0; CFG 3).

What is checked against what:
- `denoise` from step 0, unedited: equal to the stock pipeline's images of the same batch (atol 1e-6), and to
  single-sample calls (atol 1e-5: float32 rounding of another batch size), with and without CFG.
- every job of one `steer_resumed` call (several batches, samples joining a batch at their own step) equals the
  stock pipeline's sample of its label and spec (atol 1e-5 on images in [0, 1]): windows opening at steps 2 and
  3, at step 0, an edit limited by `steps` (so `steer`'s `first_step` counts from the schedule's start), and a
  window no step falls in (the unedited image); each edited one differs from its unedited sample.
- `first_edited_step` by hand; pipelines that cannot resume are named with the reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from sae_lens_dit import HookedDiT
from sae_lens_dit.analysis.interventions.resume import (
    decode,
    denoise,
    first_edited_step,
    initial_latents,
    resumable,
    sample_unedited,
    steer_resumed,
)
from sae_lens_dit.analysis.interventions.spec import LatentEdit, SteeringSpec
from sae_lens_dit.analysis.interventions.steering import steer

HOOK, STEPS, SEED = "blocks.0.hook_resid_post", 5, 3


def _stock(pipe, label: int, guidance: float, spec: SteeringSpec | None = None, hooked=None, sae=None) -> np.ndarray:
    """The stock pipeline's sample of one label from the noise of SEED, steered by `spec` if given."""
    return _stock_batch(pipe, [label], guidance, spec, hooked, sae)[0]


def _stock_batch(pipe, labels, guidance: float, spec=None, hooked=None, sae=None) -> np.ndarray:
    kwargs = {
        "class_labels": labels,
        "num_inference_steps": STEPS,
        "guidance_scale": guidance,
        "generator": [torch.Generator().manual_seed(SEED) for _ in labels],
        "output_type": "np",
    }
    if spec is None:
        return pipe(**kwargs).images
    with steer(hooked, [sae], spec):
        return pipe(**kwargs).images


@pytest.mark.parametrize("guidance", [3.0, 1.0])
def test_denoise_from_step_zero_is_the_stock_pipeline(pipe, guidance):
    labels = [1, 6]
    latents = initial_latents(pipe, 2, [torch.Generator().manual_seed(SEED) for _ in labels])
    ours = decode(pipe, denoise(pipe, latents, labels, STEPS, guidance))
    np.testing.assert_allclose(ours, _stock_batch(pipe, labels, guidance), atol=1e-6, rtol=0)  # same batch
    for image, label in zip(ours, labels, strict=True):  # a batch of another size: float32 rounding apart
        np.testing.assert_allclose(image, _stock(pipe, label, guidance), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["topk", "tide"])
def test_resumed_previews_equal_the_stock_pipeline_from_step_zero(pipe, make_sae, kind):
    sae, hooked = make_sae(kind), HookedDiT(pipe.transformer)
    unedited = sample_unedited(pipe, hooked, [2, 5], SEED, STEPS, 3.0)
    assert unedited.timesteps == ((800.0,), (600.0,), (400.0,), (200.0,), (0.0,))
    specs = [
        SteeringSpec((LatentEdit(HOOK, (3,), "clamp", 4.0, timesteps=(300.0, 500.0)),)),  # opens at step 2
        SteeringSpec((LatentEdit(HOOK, (7,), "add", 3.0, timesteps=(0.0, 200.0)),)),  # step 3
        SteeringSpec((LatentEdit(HOOK, (9,), "clamp", 4.0, timesteps=(700.0, 1000.0)),)),  # step 0
        SteeringSpec((LatentEdit(HOOK, (12,), "add", -3.0, steps=(2, 4)),)),  # step 2, then step 4 only
        SteeringSpec((LatentEdit(HOOK, (3,), "clamp", 4.0, timesteps=(610.0, 790.0)),)),  # no step: unedited
        SteeringSpec(),
    ]
    assert [first_edited_step(s, unedited.timesteps) for s in specs] == [2, 3, 0, 2, STEPS, STEPS]
    jobs = [(row, spec) for spec in specs for row in (0, 1)]
    images = steer_resumed(pipe, hooked, [sae], unedited, jobs, STEPS, 3.0, batch_size=3)
    for (row, spec), image in zip(jobs, images, strict=True):
        label = unedited.labels[row]
        before = _stock(pipe, label, 3.0)
        np.testing.assert_allclose(unedited.images[row], before, atol=1e-5, rtol=0)
        reference = _stock(pipe, label, 3.0, spec, hooked, sae) if spec.edits else before
        np.testing.assert_allclose(image, reference, atol=1e-5, rtol=0)
        if first_edited_step(spec, unedited.timesteps) < STEPS:
            assert np.abs(image - before).max() > 1e-3  # the edit did something
        else:
            assert np.array_equal(image, unedited.images[row])


def test_first_edited_step_and_what_cannot_resume(pipe):
    timesteps = ((800.0,), (600.0,), (400.0,))
    edit = LatentEdit(HOOK, (1,), "zero", timesteps=(400.0, 600.0))
    assert first_edited_step(SteeringSpec((edit,)), timesteps) == 1  # window ends are inclusive
    late = LatentEdit(HOOK, (1,), "zero", steps=(2,))
    assert first_edited_step(SteeringSpec((late, edit)), timesteps) == 1  # the earliest edit decides
    assert first_edited_step(SteeringSpec((edit,)), ((float("nan"),),)) == 0  # a call without a timestep
    assert resumable(pipe) is None
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    assert "EulerDiscreteScheduler keeps state" in resumable(pipe)
    assert "object is not a DiTPipeline" in resumable(object())
