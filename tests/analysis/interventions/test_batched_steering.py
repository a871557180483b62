"""One spec per sample (`steer(hooked, saes, [spec_0, spec_1, ...])`), checked against the single-sample path: each
sample steered alone, in a batch of one, with its own spec (the independent reference), on the tiny random DiT.

What is checked against what:
- block output: row i of a batched call with per-sample specs equals the output of row i run alone with spec i
  (atol 1e-6: the same float32 operations, in a batch of another size); a row whose spec is empty keeps the
  unsteered batched activation bit for bit (torch.equal).
- whole pipeline runs (CFG-doubled batch, 4 steps): sample i of one batched call equals the sample of a
  single-sample call with the same seed and spec i (atol 1e-5 on images in [0, 1]); the empty-spec sample is
  bit-identical to the same sample of the unsteered batched call; the edited samples differ from it.
- `use_error_term=False`: only rows of samples with edits become the SAE's reconstruction.
- the trace names each record's sample; a list whose length is not the batch's sample count is refused.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from sae_lens_dit import HookedDiT
from sae_lens_dit.analysis.interventions.spec import LatentEdit, SteeringSpec
from sae_lens_dit.analysis.interventions.steering import steer

HOOK = "blocks.0.hook_resid_post"


def _inputs(rows: list[int]) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(11)
    full = {
        "hidden_states": torch.randn(3, 4, 8, 8, generator=generator),
        "timestep": torch.tensor([50.0, 620.0, 980.0]),
        "class_labels": torch.tensor([1, 2, 3]),
    }
    return {k: v[rows] for k, v in full.items()}


def _specs() -> list[SteeringSpec]:
    return [
        SteeringSpec((LatentEdit(HOOK, (3,), "clamp", 2.5),)),
        SteeringSpec((LatentEdit(HOOK, (17, 30), "add", (1.5, -0.7)), LatentEdit(HOOK, (5,), "zero"))),
        SteeringSpec(),
    ]


@pytest.mark.parametrize("kind", ["topk", "tide"])
def test_each_row_equals_its_spec_applied_alone(block0_output, pipe, make_sae, kind):
    sae, hooked = make_sae(kind), HookedDiT(pipe.transformer)
    specs = _specs()
    plain = block0_output(pipe.transformer, _inputs([0, 1, 2]))
    with steer(hooked, [sae], specs) as trace:
        batched = block0_output(pipe.transformer, _inputs([0, 1, 2]))
    for i, spec in enumerate(specs):
        if spec.edits:
            with steer(hooked, [sae], spec):
                alone = block0_output(pipe.transformer, _inputs([i]))
            torch.testing.assert_close(batched[i], alone[0], atol=1e-6, rtol=0)
            assert (batched[i] - plain[i]).abs().max() > 1e-3  # the edit did something
    assert torch.equal(batched[2], plain[2])
    assert sorted({(r["sample"], r["edit"]) for r in trace.records}) == [(0, 0), (1, 0), (1, 1)]


def test_without_error_term_only_edited_samples_are_reconstructed(block0_output, pipe, make_sae):
    sae, hooked = make_sae("topk"), HookedDiT(pipe.transformer)
    specs = [SteeringSpec(), SteeringSpec((LatentEdit(HOOK, (3,), "add", 0.0),)), SteeringSpec()]
    plain = block0_output(pipe.transformer, _inputs([0, 1, 2]))
    with steer(hooked, [sae], specs, use_error_term=False):
        batched = block0_output(pipe.transformer, _inputs([0, 1, 2]))
    with torch.no_grad():
        reconstruction = sae.decode(sae.encode(plain[1]))  # a zero-strength add: the plain reconstruction
    assert torch.equal(batched[[0, 2]], plain[[0, 2]])
    torch.testing.assert_close(batched[1], reconstruction, atol=1e-6, rtol=0)
    assert (batched[1] - plain[1]).abs().max() > 1e-3


def _images(pipe, labels: list[int], seed: int, spec=None, hooked=None, sae=None) -> np.ndarray:
    kwargs = {
        "class_labels": labels,
        "num_inference_steps": 4,
        "guidance_scale": 3.0,
        "generator": [torch.Generator().manual_seed(seed) for _ in labels],
        "output_type": "np",
    }
    if spec is None:
        return pipe(**kwargs).images
    with steer(hooked, [sae], spec):
        return pipe(**kwargs).images


def test_batched_pipeline_run_equals_single_sample_runs(pipe, make_sae):
    sae, hooked = make_sae("tide"), HookedDiT(pipe.transformer)
    specs = [
        SteeringSpec((LatentEdit(HOOK, (3,), "clamp", 4.0, timesteps=(300.0, 800.0)),)),
        SteeringSpec((LatentEdit(HOOK, (9,), "zero"), LatentEdit(HOOK, (12,), "add", 3.0, branch="cond"))),
        SteeringSpec(),
    ]
    labels = [1, 7, 3]
    plain = _images(pipe, labels, seed=5)
    batched = _images(pipe, labels, 5, specs, hooked, sae)
    for i, spec in enumerate(specs):
        alone = _images(pipe, [labels[i]], 5, spec if spec.edits else None, hooked, sae)[0]
        np.testing.assert_allclose(batched[i], alone, atol=1e-5, rtol=0)
    assert np.array_equal(batched[2], plain[2])
    assert all(np.abs(batched[i] - plain[i]).max() > 1e-3 for i in (0, 1))


def test_a_list_of_the_wrong_length_is_refused(pipe, make_sae):
    sae, hooked = make_sae("topk"), HookedDiT(pipe.transformer)
    specs = _specs()[:2]
    with pytest.raises(ValueError, match="2 per-sample specs but the pipeline's batch holds 3"):
        _images(pipe, [1, 2, 3], 0, specs, hooked, sae)
    with pytest.raises(ValueError, match="non-empty list"), steer(hooked, [sae], []):
        pass
