"""`HookedDiT.saes`: SAELens SAEs spliced into a stock DiTPipeline run.

References: the same pipeline run without SAEs, or with the block output replaced by hand through
a plain torch hook. Each comparison states its tolerance; the reference performs the same float
operations in the same order, so they are exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from diffusers import DiTPipeline
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig
from torch import Tensor

from sae_lens_dit import HookedDiT

NAME = "blocks.1.hook_resid_post"


class TimedSAE(StandardSAE):
    """A StandardSAE that, like a TIDE SAE, needs `at_timestep(t)` and shifts its output by t / 1000."""

    def __init__(self, cfg: StandardSAEConfig):
        super().__init__(cfg)
        self.seen: list[Tensor] = []
        self._t: Tensor | None = None

    @contextmanager
    def at_timestep(self, t: Tensor) -> Iterator[None]:
        self.seen.append(t.clone())
        self._t = t
        try:
            yield
        finally:
            self._t = None

    def decode(self, feature_acts: Tensor) -> Tensor:
        if self._t is None:
            raise ValueError("TimedSAE needs a timestep: call it inside at_timestep(t)")
        return super().decode(feature_acts) + self._t[:, None, None] / 1000  # t: [batch], broadcast over tokens


def _sae(cls: type[StandardSAE] = StandardSAE) -> StandardSAE:
    sae = cls(StandardSAEConfig(d_in=16, d_sae=32, metadata=SAEMetadata(hook_name=NAME)))
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.normal_(0, 0.3)
    return sae


@pytest.fixture
def pipe(dit_pipe) -> DiTPipeline:
    return dit_pipe


def _sample(pipe: DiTPipeline) -> Tensor:
    images = pipe(class_labels=[3, 7], num_inference_steps=3, generator=torch.manual_seed(5), output_type="pt").images
    return images  # [2, 3, 16, 16]


def _sample_with_block_output(pipe: DiTPipeline, replace) -> Tensor:
    handle = pipe.transformer.transformer_blocks[1].register_forward_hook(lambda m, a, out: replace(out))
    try:
        return _sample(pipe)
    finally:
        handle.remove()


@pytest.mark.parametrize("sae_class", [StandardSAE, TimedSAE])
def test_error_term_splice_is_exactly_the_clean_run(pipe, torch_hooks_left, sae_class):
    clean = _sample(pipe)
    sae = _sae(sae_class)
    hooked = HookedDiT(pipe.transformer)
    with hooked.saes([sae], use_error_term=True):
        spliced = _sample(pipe)
    assert torch.equal(spliced, clean)  # tolerance: none
    assert sae.use_error_term is False
    assert torch_hooks_left(pipe.transformer) == []


def test_splice_without_error_term_replaces_the_activation_by_the_sae_output(pipe):
    sae = _sae()
    with torch.no_grad():
        expected = _sample_with_block_output(pipe, lambda out: sae(out))
    with HookedDiT(pipe.transformer).saes([sae], use_error_term=False):
        spliced = _sample(pipe)
    assert torch.equal(spliced, expected)  # tolerance: none (same operations)
    assert not torch.equal(spliced, _sample(pipe))


def test_edits_on_sae_hook_points_pass_through_the_error_term(pipe):
    sae = _sae()

    def by_hand(out: Tensor) -> Tensor:
        zeros = torch.zeros(*out.shape[:-1], 32)
        return out + (sae.decode(zeros) - sae(out))

    with torch.no_grad():
        expected = _sample_with_block_output(pipe, by_hand)
    hooked = HookedDiT(pipe.transformer)
    with hooked.saes([sae]), sae.hooks(fwd_hooks=[("hook_sae_acts_post", lambda acts, hook: torch.zeros_like(acts))]):
        edited = _sample(pipe)
    torch.testing.assert_close(edited, expected, rtol=0, atol=1e-6)
    assert not torch.equal(edited, _sample(pipe))


def test_timestep_aware_saes_get_the_call_timestep_per_row(pipe):
    sae = _sae(TimedSAE)
    sae.use_error_term = True
    with HookedDiT(pipe.transformer).saes([sae], use_error_term=False):
        _sample(pipe)
    steps = pipe.scheduler.timesteps
    assert len(sae.seen) == len(steps)
    for seen, t in zip(sae.seen, steps, strict=True):
        assert torch.equal(seen, torch.full((4,), float(t)))  # [batch]: cond and uncond rows
    assert sae.use_error_term is True  # restored


def test_splice_state_is_restored_when_the_pipeline_raises(pipe, torch_hooks_left):
    sae = _sae(TimedSAE)
    hooked = HookedDiT(pipe.transformer)

    def explode(x, hook):
        raise KeyboardInterrupt

    with (
        pytest.raises(KeyboardInterrupt),
        hooked.saes([sae]),
        hooked.hooks(fwd_hooks=[("blocks.1.mlp.hook_out", explode)]),
    ):
        _sample(pipe)
    assert torch_hooks_left(pipe.transformer) == []
    assert sae.use_error_term is False
    assert not any(hook_point.fwd_hooks for hook_point in hooked.hook_dict.values())


def test_splicing_an_sae_of_the_wrong_width_names_hook_and_widths(backbones):
    backbone = backbones["dit"]
    hooked = HookedDiT(backbone.make())
    sae = TopKSAE(TopKSAEConfig(d_in=hooked.d_model + 8, d_sae=32, k=2))
    sae.cfg.metadata.hook_name = "blocks.0.hook_resid_post"
    match = rf"d_in={hooked.d_model + 8} .*blocks\.0\.hook_resid_post.* {hooked.d_model}-dimensional"
    with pytest.raises(ValueError, match=match), hooked.saes([sae]):
        backbone.run(hooked.transformer, backbone.inputs(2))


@pytest.mark.parametrize("names", [[None], [], [3]])
def test_record_refuses_what_is_not_a_hook_name(backbones, names):
    hooked = HookedDiT(backbones["dit"].make())
    with pytest.raises(ValueError, match=r"record\(\) takes hook names"), hooked.record(names):
        pass
