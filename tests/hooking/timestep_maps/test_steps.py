"""Step counting through scheduler loops of families whose own timestep rises along a run.

The loops follow the pipelines' code (MochiPipeline, Lumina2Pipeline, CosmosTextToWorldPipeline):
the same scheduler, the same raw timestep expression, the same call layout. `hooked.record` must see
one run, one step per scheduler timestep, and t per step falling on the project scale.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import EDMEulerScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.mochi.pipeline_mochi import linear_quadratic_schedule

from sae_lens_dit import HookedDiT


def test_mochi_reversed_timesteps_count_as_one_run_of_falling_steps(families):
    family = families["mochi"]
    model = family.make()
    hooked = HookedDiT(model)
    scheduler = FlowMatchEulerDiscreteScheduler(invert_sigmas=True)  # Mochi's scheduler config
    steps = 4
    scheduler.set_timesteps(sigmas=np.array(linear_quadratic_schedule(steps, 0.025)))
    raw_timesteps = scheduler.timesteps.clone()
    assert bool((raw_timesteps.diff() > 0).all())  # the raw value rises along the run
    latents = torch.randn(1, 4, 2, 16, 16)
    text = torch.randn(2, 16, 16)
    with hooked.record(["blocks.1.hook_resid_post"], tokens_per_image=4) as rec:
        for t in scheduler.timesteps:
            model_input = torch.cat([latents] * 2)  # [uncond | cond]
            inputs = family.inputs(2, t.expand(2))
            inputs.update(hidden_states=model_input, encoder_hidden_states=text)
            uncond, cond = family.run(model, inputs).chunk(2)
            latents = scheduler.step(uncond + 4.5 * (cond - uncond), t, latents, return_dict=False)[0]
    assert rec.n_calls == steps
    assert rec.run.tolist() == [0] * steps and rec.step.tolist() == list(range(steps))
    assert rec.branch.tolist() == [[1, 0]] * steps and rec.sample_index.tolist() == [[0, 0]] * steps
    per_step = rec.timesteps[:, 0]
    assert bool((per_step.diff() < 0).all()), per_step
    torch.testing.assert_close(per_step, (1000 - raw_timesteps).float(), rtol=0, atol=1e-3)
    assert float(per_step[0]) == 1000.0  # the first step is pure noise


def test_lumina2_one_minus_sigma_with_separate_cfg_calls_counts_steps(families):
    family = families["lumina2"]
    model = family.make()
    hooked = HookedDiT(model)
    scheduler = FlowMatchEulerDiscreteScheduler()
    steps = 4
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps))  # Lumina2Pipeline's default sigmas
    latents = torch.randn(1, 4, 16, 16)
    with hooked.record(["noise_refiner.0.hook_resid_post"]) as rec:
        for i, t in enumerate(scheduler.timesteps):
            current = (1 - t / scheduler.config.num_train_timesteps).expand(1)  # as Lumina2Pipeline
            inputs = family.inputs(1, current)
            inputs["hidden_states"] = latents
            cond = family.run(model, inputs)
            noise = cond
            if i < steps - 1:  # CFG truncation: the last step runs cond only
                uncond = family.run(model, {**inputs, "encoder_hidden_states": torch.randn(1, 16, 32)})
                noise = uncond + 4.0 * (cond - uncond)
            latents = scheduler.step(-noise, t, latents, return_dict=False)[0]
    n_calls = 2 * steps - 1
    assert rec.n_calls == n_calls and rec.run.tolist() == [0] * n_calls
    assert rec.step.tolist() == [0, 0, 1, 1, 2, 2, 3]
    assert rec.branch[:, 0].tolist() == [0, 1, 0, 1, 0, 1, 0]  # cond call first, then uncond
    expected = (1000 * scheduler.sigmas[:steps]).float()
    torch.testing.assert_close(rec.timesteps[::2, 0], expected, rtol=0, atol=1e-3)
    assert bool((rec.timesteps[::2, 0].diff() < 0).all())


def test_cosmos1_edm_log_sigma_steps_fall_and_read_as_flow_time(families):
    family = families["cosmos1"]
    model = family.make()
    hooked = HookedDiT(model)
    scheduler = EDMEulerScheduler(  # Cosmos 1.0's scheduler config
        sigma_min=0.002, sigma_max=80, sigma_data=0.5, sigma_schedule="karras", final_sigmas_type="sigma_min"
    )
    steps = 3
    scheduler.set_timesteps(steps)
    latents = torch.randn(1, 4, 1, 16, 16) * scheduler.init_noise_sigma
    with hooked.record(["blocks.0.hook_resid_post", "blocks.1.mlp.hook_out"]) as rec:
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(latents, t)
            inputs = family.inputs(1, t.expand(1))
            inputs["hidden_states"] = model_input
            cond = family.run(model, inputs)
            uncond = family.run(model, {**inputs, "encoder_hidden_states": torch.randn(1, 12, 16)})
            latents = scheduler.step(uncond + 7.0 * (cond - uncond), t, latents, return_dict=False)[0]
    assert rec.n_calls == 2 * steps and rec.run.tolist() == [0] * (2 * steps)
    assert rec.step.tolist() == [0, 0, 1, 1, 2, 2] and rec.branch[:, 0].tolist() == [0, 1] * steps
    sigma = scheduler.sigmas[:steps].double()
    torch.testing.assert_close(rec.timesteps[::2, 0], (1000 * sigma / (1 + sigma)).float(), rtol=0, atol=1e-3)
    assert bool((rec.timesteps[::2, 0].diff() < 0).all())
    assert rec["blocks.1.mlp.hook_out"].shape == (2 * steps, 1, 64, 24)


def test_without_the_reversal_every_mochi_step_would_read_as_a_new_run(families):
    """Why the map matters for counting: the same loop under a plain affine map (the pre-v2 reading)."""
    from dataclasses import replace

    from sae_lens_dit.hooking.adapters import TimestepSpec, adapter_for

    family = families["mochi"]
    model = family.make()
    spec = adapter_for(model)
    hooked = HookedDiT(model, spec=replace(spec, timestep=TimestepSpec("timestep", 1.0, None)))
    scheduler = FlowMatchEulerDiscreteScheduler(invert_sigmas=True)
    scheduler.set_timesteps(sigmas=np.array(linear_quadratic_schedule(3, 0.025)))
    with hooked.record(["blocks.0.hook_resid_post"]) as rec:
        for t in scheduler.timesteps:
            family.run(model, family.inputs(1, t.expand(1)))
    assert rec.run.tolist() == [0, 1, 2] and rec.step.tolist() == [0, 0, 0]
