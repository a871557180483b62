"""`HookedDiT.record` over stock pipelines built offline from tiny parts.

References: the scheduler's own timesteps, the pipelines' documented CFG layouts, and the block
outputs seen by a plain torch forward hook in the same run (compared exactly: the recorder only
indexes and copies them, in float32).
"""

from __future__ import annotations

import pytest
import torch

from sae_lens_dit import HookedDiT

NAME = "blocks.1.hook_resid_post"


def _pixart_kwargs(n_images: int, steps: int) -> dict:
    mask = torch.ones(n_images, 6)
    return {
        "prompt_embeds": torch.randn(n_images, 6, 8),
        "prompt_attention_mask": mask,
        "negative_prompt": None,
        "negative_prompt_embeds": torch.randn(n_images, 6, 8),
        "negative_prompt_attention_mask": mask,
        "num_inference_steps": steps,
        "use_resolution_binning": False,
        "output_type": "np",
    }


def _block_outputs(pipe, index: int) -> tuple[list, torch.utils.hooks.RemovableHandle]:
    outputs = []
    handle = pipe.transformer.transformer_blocks[index].register_forward_hook(lambda m, a, out: outputs.append(out))
    return outputs, handle


def _check_tokens_and_values(rec, outputs, k: int) -> None:
    tokens = rec.token_index(NAME)  # [calls, rows, k]
    n_tokens = outputs[0].shape[1]
    assert tokens.shape[-1] == k
    assert bool((tokens >= 0).all()) and bool((tokens < n_tokens).all())
    assert bool((tokens.diff(dim=-1) > 0).all())  # k distinct positions, sorted
    for call, full in enumerate(outputs):
        rows = torch.arange(full.shape[0])[:, None]
        assert torch.equal(rec[NAME][call], full[rows, tokens[call]])


def test_dit_pipeline_is_recorded_per_step_with_cond_first_labels(dit_pipe):
    pipe = dit_pipe
    hooked = HookedDiT(pipe.transformer)
    outputs, handle = _block_outputs(pipe, 1)
    with hooked.record([NAME], tokens_per_image=5) as rec:
        pipe(class_labels=[3, 7], num_inference_steps=4, guidance_scale=4.0, output_type="np")
    handle.remove()
    steps = pipe.scheduler.timesteps
    assert rec.n_calls == len(steps) == 4
    assert rec.step.tolist() == [0, 1, 2, 3] and rec.run.tolist() == [0] * 4
    assert torch.equal(rec.timesteps, steps.float()[:, None].expand(4, 4))
    assert rec.branch.tolist() == [[0, 0, 1, 1]] * 4  # DiTPipeline: [cond | uncond]
    assert rec.sample_index.tolist() == [[0, 1, 0, 1]] * 4
    assert rec[NAME].shape == (4, 4, 5, 16) and rec[NAME].dtype == torch.float32
    tokens = rec.token_index(NAME)
    assert torch.equal(tokens[:, :2], tokens[:, 2:])  # both CFG rows of an image share positions
    _check_tokens_and_values(rec, outputs, 5)


def test_pixart_pipeline_is_recorded_with_uncond_first_labels(pixart_pipe):
    pipe = pixart_pipe
    hooked = HookedDiT(pipe.transformer)
    outputs, handle = _block_outputs(pipe, 1)
    with hooked.record([NAME, "blocks.0.attn.hook_out"], tokens_per_image=3) as rec:
        pipe(**_pixart_kwargs(2, 3))
    handle.remove()
    assert rec.n_calls == 3 and rec.step.tolist() == [0, 1, 2]
    assert torch.equal(rec.timesteps, pipe.scheduler.timesteps.float()[:, None].expand(3, 4))
    assert rec.branch.tolist() == [[1, 1, 0, 0]] * 3  # text pipelines: [uncond | cond]
    assert rec.sample_index.tolist() == [[0, 1, 0, 1]] * 3
    assert rec["blocks.0.attn.hook_out"].shape == (3, 4, 3, 4)
    assert torch.equal(rec.token_index(NAME), rec.token_index("blocks.0.attn.hook_out"))
    _check_tokens_and_values(rec, outputs, 3)


def test_without_guidance_every_row_is_cond_and_its_own_sample(dit_pipe):
    pipe = dit_pipe
    with HookedDiT(pipe.transformer).record([NAME]) as rec:
        pipe(class_labels=[3, 7], num_inference_steps=2, guidance_scale=1.0, output_type="np")
    assert rec.branch.tolist() == [[0, 0]] * 2 and rec.sample_index.tolist() == [[0, 1]] * 2
    assert rec[NAME].shape == (2, 2, 16, 16)  # all tokens


def test_branch_timestep_dtype_filters(pixart_pipe):
    pipe = pixart_pipe
    pipe.scheduler.set_timesteps(4)
    wanted = pipe.scheduler.timesteps[1:3].tolist()
    with HookedDiT(pipe.transformer).record([NAME], 2, timesteps=wanted, branch="cond", dtype=torch.float16) as rec:
        pipe(**_pixart_kwargs(2, 4))
    assert rec.timesteps.tolist() == [[wanted[0]] * 2, [wanted[1]] * 2]
    assert rec.step.tolist() == [1, 2]
    assert rec.branch.tolist() == [[0, 0]] * 2 and rec.sample_index.tolist() == [[0, 1]] * 2
    assert rec[NAME].shape == (2, 2, 2, 4) and rec[NAME].dtype == torch.float16


def test_runs_restart_steps_and_rows_flatten_everything(dit_pipe):
    pipe = dit_pipe
    with HookedDiT(pipe.transformer).record([NAME], tokens_per_image=4) as rec:
        pipe(class_labels=[3], num_inference_steps=3, output_type="np")
        pipe(class_labels=[5, 6], num_inference_steps=2, output_type="np")
    assert rec.run.tolist() == [0, 0, 0, 1, 1] and rec.step.tolist() == [0, 1, 2, 0, 1]
    with pytest.raises(ValueError, match=r"different numbers of batch rows.*rec.rows"):
        rec[NAME]
    rows = rec.rows(NAME)
    assert set(rows) >= {"activation", "timestep", "step", "branch", "sample", "token"}
    assert rows["activation"].shape == ((3 * 2 + 2 * 4) * 4, 16)
    assert all(len(column) == len(rows["activation"]) for column in rows.values())
    first_call = slice(0, 2 * 4)
    assert rows["timestep"][first_call].tolist() == [float(rec._calls[0].timestep[0])] * 8
    assert rows["branch"][first_call].tolist() == [0] * 4 + [1] * 4
    assert rows["run"][-1] == 1 and rows["step"][-1] == 1 and rows["sample"][-1] == 1


def test_token_draws_are_reproducible_per_seed(dit_pipe):
    pipe = dit_pipe
    hooked = HookedDiT(pipe.transformer)
    draws = []
    for seed in (0, 0, 1):
        with hooked.record([NAME], tokens_per_image=4, seed=seed) as rec:
            pipe(class_labels=[3, 7], num_inference_steps=2, generator=torch.manual_seed(1), output_type="np")
        draws.append((rec.token_index(NAME), rec[NAME]))
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    assert not torch.equal(draws[0][0], draws[2][0])


def test_flux_true_cfg_calls_are_one_step_with_two_branches(backbones):
    flux = backbones["flux"]
    hooked = HookedDiT(flux.make())
    inputs = flux.inputs(2)
    with hooked.record(["single_blocks.0.hook_resid_post"], tokens_per_image=2) as rec, torch.no_grad():
        for sigma in (1.0, 1.0, 0.5, 0.5):  # FluxPipeline: cond call, then negative-prompt call, per step
            hooked(**{**inputs, "timestep": torch.full((2,), sigma)})
    assert rec.step.tolist() == [0, 0, 1, 1] and rec.run.tolist() == [0] * 4
    assert rec.branch.tolist() == [[0, 0], [1, 1], [0, 0], [1, 1]]
    assert rec.sample_index.tolist() == [[0, 1]] * 4
    assert rec.timesteps.tolist() == [[1000.0] * 2] * 2 + [[500.0] * 2] * 2  # Flux gets t / 1000


def test_bad_arguments_are_refused(backbones):
    dit = backbones["dit"]
    hooked = HookedDiT(dit.make())
    with pytest.raises(ValueError, match="branch must be one of"), hooked.record([NAME], branch="pos"):
        pass
    with pytest.raises(ValueError, match=r"tokens_per_image=99 but .* only 16 tokens"), hooked.record([NAME], 99):
        hooked(**dit.inputs(2))
    with pytest.raises(ValueError, match="without a timestep"), hooked.record([NAME]):
        hooked(**{**dit.inputs(2), "timestep": None})


def test_equal_timesteps_share_a_step_and_rising_ones_start_a_run(backbones):
    dit = backbones["dit"]
    hooked = HookedDiT(dit.make())
    inputs = dit.inputs(2)
    with hooked.record([NAME], tokens_per_image=1) as rec, torch.no_grad():
        for t in (900, 900, 500, 800, 100):  # e.g. Heun's repeated timestep, then a second run
            hooked(**{**inputs, "timestep": torch.full((2,), t)})
    assert rec.step.tolist() == [0, 0, 1, 0, 1] and rec.run.tolist() == [0, 0, 0, 1, 1]


def test_record_hooks_are_removed_when_the_pipeline_raises(torch_hooks_left, pixart_pipe):
    pipe = pixart_pipe
    hooked = HookedDiT(pipe.transformer)

    def stop_at_step_one(step: int, t, latents) -> None:
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), hooked.record([NAME], tokens_per_image=2) as rec:
        pipe(**_pixart_kwargs(1, 3), callback=stop_at_step_one)
    assert rec.n_calls == 2
    assert torch_hooks_left(pipe.transformer) == []
    assert not any(hook_point.fwd_hooks for hook_point in hooked.hook_dict.values())


def test_recorder_options_cannot_be_passed_by_position():
    """Several options share a type (two optional sequences, two strings): they travel as one named object."""
    from sae_lens_dit.hooking.adapters import load_spec
    from sae_lens_dit.hooking.recording import Recorder, RecordOptions
    from sae_lens_dit.resources import adapters_dir

    guidance = load_spec(adapters_dir() / "dit.yaml").guidance
    with pytest.raises(TypeError, match="positional"):
        Recorder([NAME], lambda: None, guidance)
    with pytest.raises(ValueError, match="branch must be one of"):
        RecordOptions(branch="conditional")
    with pytest.raises(ValueError, match="tokens_per_image must be a positive int"):
        RecordOptions(tokens_per_image=0)
    options = RecordOptions(tokens_per_image=2, branch="cond")
    recorder = Recorder([NAME], context=lambda: None, guidance=guidance, options=options)
    assert recorder.recording.names == (NAME,)
