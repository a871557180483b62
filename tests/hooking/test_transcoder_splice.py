"""`HookedDiT.saes([transcoder])`: the MLP's output replaced by the transcoder's reconstruction from the MLP's input.

Transcoders name their hooks as SAELens's do: `cfg.metadata.hook_name` = `blocks.{i}.mlp.hook_in` (read),
`hook_name_out` = `blocks.{i}.mlp.hook_out` (written). References: the MLP's input captured by an
independent torch pre-hook, the transcoder called on it by hand with each row's timestep, and the model
run with the MLP output replaced by hand through a plain torch hook. Tolerance: none where the reference
performs the same float ops (torch.equal); 1e-5 where a linear layer is compared with a transcoder built
to reproduce it (a different order of float ops).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from sae_lens.saes.sae import SAEMetadata
from torch import Tensor, nn

from sae_lens_dit import HookedDiT
from sae_lens_dit.saes import TideTranscoder, TideTranscoderConfig

BLOCK = 1
HOOKS = {"hook_name": f"blocks.{BLOCK}.mlp.hook_in", "hook_name_out": f"blocks.{BLOCK}.mlp.hook_out"}


def _transcoder(d: int, d_sae: int, k: int, skip: bool = False, knots: int = 0) -> TideTranscoder:
    cfg = TideTranscoderConfig(
        d_in=d,
        d_out=d,
        d_sae=d_sae,
        k=k,
        skip=skip,
        skip_timestep_knots=knots,
        rescale_acts_by_decoder_norm=False,
        normalize_activations="none",
        timestep_embed_dim=16,
        timestep_hidden_dim=8,
        metadata=SAEMetadata(**HOOKS),
    )
    return TideTranscoder(cfg).eval()


def _timed_transcoder(d: int) -> TideTranscoder:
    """Random weights, timestep heads and skip knots: its output depends on each row's timestep."""
    torch.manual_seed(1)
    tc = _transcoder(d, 4 * d, 3, skip=True, knots=3)
    with torch.no_grad():
        for param in tc.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
    return tc


def _mlp(backbone: Any, model: nn.Module) -> tuple[nn.Module, Any]:
    attribute, _, image_part = backbone.submodules["blocks"]["mlp"]
    return getattr(backbone.blocks(model, "blocks")[BLOCK], attribute), image_part


@pytest.mark.parametrize("name", ["dit", "sana"])  # sana: channels_first MLP ([batch, d, h, w])
def test_spliced_output_equals_the_transcoder_on_an_independent_capture(backbones, torch_hooks_left, name):
    backbone = backbones[name]
    model = backbone.make()
    hooked = HookedDiT(model)
    inputs = backbone.inputs(2)
    inputs["timestep"] = torch.tensor([900.0, 40.0])  # on the project scale as passed (DiT, Sana)
    mlp, part = _mlp(backbone, model)
    tc = _timed_transcoder(hooked.d_model)

    seen: dict[str, Tensor] = {}
    handle = mlp.register_forward_pre_hook(lambda m, args, kwargs: seen.update(x=args[0]), with_kwargs=True)
    try:
        clean = backbone.run(model, inputs)
    finally:
        handle.remove()
    x = part(seen["x"])  # [batch, tokens, d]: the MLP input, upstream of the splice
    with torch.no_grad():
        expected = tc(x, timestep=inputs["timestep"])  # each row's timestep
        assert not torch.equal(expected, tc(x, timestep=500.0))

    with torch.no_grad(), hooked.saes([tc], use_error_term=False):
        handle = mlp.register_forward_hook(lambda m, args, out: seen.update(out=part(out).clone()))
        try:
            spliced = backbone.run(model, inputs)
        finally:
            handle.remove()
    assert torch.equal(seen["out"], expected)

    def by_hand(module, args, output):
        output = output.clone()
        part(output).copy_(expected)
        return output

    handle = mlp.register_forward_hook(by_hand)
    try:
        assert torch.equal(spliced, backbone.run(model, inputs))
    finally:
        handle.remove()
    assert not torch.equal(spliced, clean)
    with torch.no_grad(), hooked.saes([tc], use_error_term=True):  # error term: exactly the clean model
        assert torch.equal(backbone.run(model, inputs), clean)
    assert torch_hooks_left(model) == [] and tc.use_error_term is False


def test_a_transcoder_reproducing_a_linear_mlp_changes_nothing(backbones, torch_hooks_left):
    backbone = backbones["dit"]
    model = backbone.make()
    block = model.transformer_blocks[BLOCK]
    d = model.inner_dim
    torch.manual_seed(2)
    block.ff = nn.Linear(d, d)  # the MLP is a linear map y = x W^T + b (before HookedDiT is built)
    hooked = HookedDiT(model)
    inputs = backbone.inputs(2)
    clean = backbone.run(model, inputs)

    tc = _transcoder(d, 2 * d, 2 * d)  # z = relu([x, -x]); z @ [W^T; -W^T] + b = x W^T + b
    with torch.no_grad():
        tc.W_enc.copy_(torch.cat([torch.eye(d), -torch.eye(d)], dim=1))
        tc.b_enc.zero_()
        tc.W_dec.copy_(torch.cat([block.ff.weight.T, -block.ff.weight.T], dim=0))
        tc.b_dec.copy_(block.ff.bias)
    with torch.no_grad(), hooked.saes([tc], use_error_term=False):
        spliced = backbone.run(model, inputs)
    torch.testing.assert_close(spliced, clean, rtol=0, atol=1e-5)
    with torch.no_grad():
        tc.b_dec.add_(0.5)
        with hooked.saes([tc], use_error_term=False):
            assert not torch.allclose(backbone.run(model, inputs), clean, atol=1e-3)
    assert torch_hooks_left(model) == []


def test_a_missing_input_or_a_wrong_width_is_a_clear_error(backbones):
    backbone = backbones["dit"]
    model = backbone.make()
    hooked = HookedDiT(model)
    tc = _transcoder(hooked.d_model + 1, 8, 2)
    with pytest.raises(ValueError, match=f"d_in={hooked.d_model + 1}"), hooked.saes([tc]):
        backbone.run(model, backbone.inputs(2))
    tc = _transcoder(hooked.d_model, 8, 2)
    tc.cfg.metadata.hook_name_out = "blocks.0.mlp.hook_out"  # the input (block 1) runs after the output
    with pytest.raises(RuntimeError, match="found no input"), hooked.saes([tc]):
        backbone.run(model, backbone.inputs(2))
    tc.cfg.metadata.hook_name_out = "blocks.1.mlp.hook_ot"
    with pytest.raises(ValueError, match="unknown hook name"), hooked.saes([tc]):
        pass
