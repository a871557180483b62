"""TIDE transcoders: the equations by hand, registration with SAELens, training through SAETrainer, and
save -> SAELens loader -> same outputs (max abs diff <= 1e-5) at several timesteps.

Reference for the equations: the module docstring of `sae_lens_dit.saes.tide_transcoder`, computed
here with plain torch ops from the parameters (the timestep embedding from diffusers itself).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from sae_lens import SAE
from sae_lens.registry import get_sae_class, get_sae_training_class

from sae_lens_dit.conventions import TIDE_TRANSCODER_ARCHITECTURE, TimestepConditioned
from sae_lens_dit.saes import (
    TideTrainingTranscoder,
    TideTrainingTranscoderConfig,
    TideTranscoder,
    TideTranscoderConfig,
    transcoder_rows,
)
from sae_lens_dit.saes.loading import validated_disk_loader
from sae_lens_dit.saes.synthetic import train_through_sae_trainer
from sae_lens_dit.saes.tide_transcoder import skip_knot_weights

D_IN, D_OUT = 12, 10
SMALL = {"d_in": D_IN, "d_out": D_OUT, "d_sae": 48, "k": 4, "timestep_embed_dim": 32, "timestep_hidden_dim": 24}
TIMESTEPS = (0.0, 250.5, 999.0, torch.tensor([0.0, 10.0, 10.0, 500.0, 999.0, 999.0, 3.0, 700.0]))


SKIPS = {
    "none": {"skip": False},
    "one": {"skip": True},
    "knots": {"skip": True, "skip_timestep_knots": 4, "skip_knots_scale": 0.3},
}


def _inference(skip: str, rescale: bool) -> TideTranscoder:
    torch.manual_seed(0)
    cfg = TideTranscoderConfig(
        **SMALL, **SKIPS[skip], rescale_acts_by_decoder_norm=rescale, normalize_activations="none"
    )
    tc = TideTranscoder(cfg)
    with torch.no_grad():  # every parameter non-trivial: heads, biases, skip, decoder norms far from 1
        for param in tc.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
        tc.W_dec.mul_(torch.linspace(0.3, 3.0, cfg.d_sae)[:, None])
    return tc.eval()


def _by_hand(tc: TideTranscoder, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x [B, N, d_in], t [B] -> MLP output [B, N, d_out], from the parameters with plain torch ops."""
    mlp = tc.timestep_mlp
    emb = get_timestep_embedding(t, tc.cfg.timestep_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=1)
    hidden = F.silu(F.linear(F.silu(F.linear(emb, *_params(mlp.linear_1))), *_params(mlp.linear_2)))
    heads = F.linear(hidden, *_params(mlp.heads))  # [B, d_in + d_in + d_out]
    scale, shift, decoder_bias = (h[:, None, :] for h in heads.split([D_IN, D_IN, D_OUT], dim=-1))
    pre = (x * (1 + scale) + shift) @ tc.W_enc + tc.b_enc
    norms = tc.W_dec.norm(dim=-1)
    if tc.cfg.rescale_acts_by_decoder_norm:
        pre = pre * norms
    values, indices = pre.topk(tc.cfg.k, dim=-1)
    codes = torch.zeros_like(pre).scatter(-1, indices, values.relu())
    if tc.cfg.rescale_acts_by_decoder_norm:
        codes = codes / norms
    return codes @ tc.W_dec + tc.b_dec + decoder_bias + _skip_by_hand(tc, x, t)


def _skip_by_hand(tc: TideTranscoder, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor | float:
    """x [B, N, d_in], t [B] -> the skip term: each batch item's matrix interpolated between its two knots."""
    if not tc.cfg.skip:
        return 0.0
    knots = tc.cfg.skip_timestep_knots
    out = []
    for x_item, t_item in zip(x, t.tolist(), strict=True):
        W = tc.W_skip
        if knots:
            spacing = 1000 / (knots - 1)
            low = min(int(t_item // spacing), knots - 2)
            upper = (t_item - low * spacing) / spacing
            delta = (1 - upper) * tc.W_skip_knots[low] + upper * tc.W_skip_knots[low + 1]
            W = W + tc.cfg.skip_knots_scale * delta
        out.append(x_item @ W.T)
    return torch.stack(out)


def _params(linear: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    return linear.weight, linear.bias


def test_registered_with_sae_lens_and_timestep_conditioned() -> None:
    assert TIDE_TRANSCODER_ARCHITECTURE == "tide_transcoder"
    assert get_sae_class("tide_transcoder") == (TideTranscoder, TideTranscoderConfig)
    assert get_sae_training_class("tide_transcoder") == (TideTrainingTranscoder, TideTrainingTranscoderConfig)
    assert isinstance(_inference("none", False), TimestepConditioned)
    assert isinstance(TideTrainingTranscoder(TideTrainingTranscoderConfig(**SMALL)), TimestepConditioned)


@pytest.mark.parametrize("skip", sorted(SKIPS))
@pytest.mark.parametrize("rescale", [False, True])
def test_outputs_equal_a_hand_computation(skip: str, rescale: bool) -> None:
    tc = _inference(skip, rescale)
    x, t = torch.randn(3, 5, D_IN), torch.tensor([999.0, 37.5, 1000.0 * torch.rand(()).item()])
    with torch.no_grad():
        expected = _by_hand(tc, x, t)
        torch.testing.assert_close(tc(x, timestep=t), expected, rtol=0, atol=1e-5)
        with tc.at_timestep(t):
            torch.testing.assert_close(tc(x), expected, rtol=0, atol=1e-5)
            codes = tc.encode(x)
        skip_term = _skip_by_hand(tc, x, t)
        torch.testing.assert_close(tc.decode(codes) + skip_term, expected, rtol=0, atol=1e-5)
        if skip != "none":
            torch.testing.assert_close(tc.skip_output(x, timestep=t), skip_term, rtol=0, atol=1e-5)
        assert int((codes > 0).sum(-1).max()) <= tc.cfg.k


def test_skip_knot_weights_interpolate_linearly() -> None:
    t = torch.cat([torch.tensor([0.0, 1000.0, 500.0]), torch.rand(20) * 1000])
    for knots in (2, 3, 5, 11):
        weights = skip_knot_weights(t, knots)
        grid = torch.linspace(0, 1000, knots)
        for j in range(knots):  # knot j's weight is the hat function centred on it (numpy's interp of a one-hot)
            hat = np.interp(t.numpy(), grid.numpy(), np.eye(knots)[j])
            np.testing.assert_allclose(weights[:, j].numpy(), hat, atol=1e-6)


def test_the_skip_has_timestep_knots_by_default_and_none_without_a_skip() -> None:
    with_skip, without = TideTrainingTranscoderConfig(**SMALL), TideTrainingTranscoderConfig(**SMALL, skip=False)
    assert (with_skip.skip_timestep_knots, without.skip_timestep_knots) == (5, 0)
    assert TideTrainingTranscoder(with_skip).W_skip_knots.shape == (5, D_OUT, D_IN)
    assert TideTrainingTranscoder(without).W_skip_knots is None


def test_refuses_what_it_cannot_do() -> None:
    tc = _inference("none", False)
    with pytest.raises(ValueError, match="needs the denoising timestep"):
        tc(torch.randn(3, D_IN))
    with pytest.raises(ValueError, match="d_in=12"):
        tc(torch.randn(3, D_OUT), timestep=10.0)
    with pytest.raises(ValueError, match="apply_b_dec_to_input"):
        TideTrainingTranscoderConfig(**SMALL, apply_b_dec_to_input=True)
    with pytest.raises(ValueError, match="skip_timestep_knots must be 0"):
        TideTrainingTranscoderConfig(**SMALL, skip_timestep_knots=1)
    with pytest.raises(ValueError, match="needs skip=True"):
        TideTrainingTranscoderConfig(**SMALL, skip=False, skip_timestep_knots=3)
    knotted = _inference("knots", False)
    with pytest.raises(ValueError, match="needs the denoising timestep"):
        knotted.skip_output(torch.randn(3, D_IN))
    with pytest.raises(ValueError, match="timesteps must lie in"):
        knotted.skip_output(torch.randn(3, D_IN), timestep=torch.tensor([10.0, 1500.0, 0.0]))
    training = TideTrainingTranscoder(TideTrainingTranscoderConfig(**SMALL))
    training.receive_batch_timesteps(torch.zeros(4))
    with pytest.raises(ValueError, match="d_in \\+ d_out"):
        training.training_forward_pass(_step(torch.randn(4, D_IN)))


def _step(rows: torch.Tensor) -> Any:
    from sae_lens.saes.sae import TrainStepInput

    return TrainStepInput(rows, {}, None, 0, False)


def _pairs(seed: int, batch: int = 64):
    """Endless (transcoder rows [B, d_in + d_out], timesteps [B]): a timestep-dependent nonlinear 'MLP'."""
    generator = torch.Generator().manual_seed(seed)
    A = torch.randn(D_IN, D_OUT, generator=torch.Generator().manual_seed(99))
    while True:
        x = torch.randn(batch, D_IN, generator=generator) * 2
        t = torch.randint(0, 1000, (batch,), generator=generator).float()
        y = torch.relu(x @ A) * (1 + t[:, None] / 1000) - 0.1 * t[:, None] / 1000
        yield transcoder_rows(x, y), t


VARIANTS = {
    "rescale": {"rescale_acts_by_decoder_norm": True},
    "no-rescale+skip": {"rescale_acts_by_decoder_norm": False, "skip": True},
    "rescale+norm-scaling+skip": {
        "rescale_acts_by_decoder_norm": True,
        "normalize_activations": "expected_average_only_in",
        "skip": True,
    },
    "norm-scaling+skip-knots": {
        "rescale_acts_by_decoder_norm": False,
        "normalize_activations": "expected_average_only_in",
        "skip_timestep_knots": 3,
    },
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def trained(request) -> tuple[TideTrainingTranscoder, Any]:
    """(the transcoder SAETrainer returned, a function computing it as it was trained, before folding)."""
    torch.manual_seed(0)
    tc = TideTrainingTranscoder(TideTrainingTranscoderConfig(**SMALL, **VARIANTS[request.param]))
    snapshot: dict[str, Any] = {"sae": tc, "factor": 1.0}
    fold = tc.fold_activation_norm_scaling_factor

    def snapshot_then_fold(scaling_factor: float) -> None:
        snapshot.update(sae=copy.deepcopy(tc), factor=scaling_factor)
        fold(scaling_factor)

    tc.fold_activation_norm_scaling_factor = snapshot_then_fold  # type: ignore[method-assign]
    trainer = {"n_batches_for_norm_estimate": 2} if "norm" in request.param else {}
    train_through_sae_trainer(tc, _pairs(3), 64 * 8, 64, lr=1e-2, **trainer)
    assert (snapshot["factor"] != 1.0) == ("norm" in request.param)
    for term_rows in tc.timestep_mlp.heads.weight.split(tc.timestep_mlp.widths):
        assert term_rows.abs().sum() > 0
    if tc.W_skip is not None:
        assert tc.W_skip.abs().sum() > 0
    if tc.W_skip_knots is not None:
        assert (tc.W_skip_knots.abs().sum(dim=(1, 2)) > 0).all()
    with torch.no_grad():  # decoder norms far from 1, so that folding them matters
        for model in {id(tc): tc, id(snapshot["sae"]): snapshot["sae"]}.values():
            model.W_dec.mul_(torch.linspace(0.3, 3.0, tc.cfg.d_sae)[:, None])

    def as_trained(x: torch.Tensor, timestep: Any) -> torch.Tensor:
        return snapshot["sae"](x * snapshot["factor"], timestep=timestep) / snapshot["factor"]

    return tc.eval(), as_trained


def _assert_same_outputs(loaded: SAE[Any], trained: tuple[TideTrainingTranscoder, Any]) -> None:
    assert isinstance(loaded, TideTranscoder)
    tc, as_trained = trained
    x = torch.randn(8, D_IN) * 2
    with torch.no_grad():
        for t in TIMESTEPS:
            torch.testing.assert_close(loaded(x, timestep=t), tc(x, timestep=t), rtol=0, atol=1e-5)
            torch.testing.assert_close(loaded(x, timestep=t), as_trained(x, timestep=t), rtol=0, atol=1e-5)


def test_inference_model_round_trips_through_sae_lens_loaders(trained, tmp_path: Path) -> None:
    trained[0].save_inference_model(tmp_path)
    folds = [False, True] if trained[0].cfg.rescale_acts_by_decoder_norm else [False]
    for fold in folds:
        for converter in ({}, {"converter": validated_disk_loader}):
            _assert_same_outputs(SAE.load_from_disk(tmp_path, fold_W_dec_norm=fold, **converter), trained)


def test_training_checkpoint_and_save_model_round_trip(trained, tmp_path: Path) -> None:
    trained[0].save_model(tmp_path / "checkpoint")
    loaded = SAE.load_from_disk(tmp_path / "checkpoint")
    _assert_same_outputs(loaded, trained)
    reloaded = TideTrainingTranscoder.load_from_disk(tmp_path / "checkpoint")
    x = torch.randn(8, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x, timestep=300.0), trained[0](x, timestep=300.0), rtol=0, atol=1e-5)
    loaded.save_model(tmp_path / "inference")  # an inference transcoder's own save_model
    _assert_same_outputs(SAE.load_from_disk(tmp_path / "inference", converter=validated_disk_loader), trained)


def test_training_reports_the_mlp_output_and_learns_it() -> None:
    torch.manual_seed(0)
    tc = TideTrainingTranscoder(TideTrainingTranscoderConfig(**SMALL, skip=True))
    rows, t = next(_pairs(5, batch=256))
    tc.receive_batch_timesteps(t)
    before = tc.training_forward_pass(_step(rows))
    assert torch.equal(before.sae_in, rows[:, D_IN:])  # the trainer scores the MLP output
    train_through_sae_trainer(tc, _pairs(3), 64 * 60, 64, lr=1e-2)
    tc.receive_batch_timesteps(t)
    after = tc.training_forward_pass(_step(rows))
    assert after.losses["mse_loss"] < 0.5 * before.losses["mse_loss"]
