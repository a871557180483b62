"""The sparse TopK training step equals the dense one: outputs, losses, firing statistics and every
parameter's gradient, on fresh random inputs; and training either way ends at the same loss.

References: SAELens's own `TopKTrainingSAE` (same weights) for the TopK baseline; TIDE's dense path
(SAELens's `TrainingSAE.training_forward_pass` over TIDE's encode/decode) for TIDE; the transcoder's own dense
step (encode, decode, skip, MSE against the MLP output) for TIDE transcoders."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from sae_lens import SAE
from sae_lens.config import SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.topk_sae import TopKSAE, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer

from sae_lens_dit import TideTrainingSAE, TideTrainingSAEConfig
from sae_lens_dit.saes import feed_timesteps
from sae_lens_dit.saes.sparse_topk import (
    AUTO_MAX_DENSITY,
    SparseTopKTrainingSAE,
    SparseTopKTrainingSAEConfig,
    uses_sparse_decode,
)
from sae_lens_dit.saes.synthetic import SyntheticTimestepData, recovery_scores, train_through_sae_trainer

TIMESTEP_MLP = {"timestep_embed_dim": 16, "timestep_hidden_dim": 12}
EVERY_TERM = {"timestep_scale": True, "timestep_shift": True, "timestep_decoder_bias": True}
SHAPES = [(16, 64, 4), (12, 48, 7), (8, 32, 32), (24, 96, 1)]  # (d_in, d_sae, k), k = d_sae included


def _perturbed(sae: Any, generator: torch.Generator) -> Any:
    """Random non-zero values everywhere (zero-initialised timestep heads included)."""
    with torch.no_grad():
        for param in sae.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return sae


def _step(sae: Any, x: torch.Tensor, t: torch.Tensor, dead: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor]]:
    if isinstance(sae, TideTrainingSAE):
        sae.receive_batch_timesteps(t)
    out = sae.training_forward_pass(TrainStepInput(x, {}, dead, 0, False))
    out.loss.backward()
    return out, {name: param.grad for name, param in sae.named_parameters()}


def _pair(kind: str, d_in: int, d_sae: int, k: int, generator: torch.Generator) -> tuple[Any, Any]:
    """(SAE on the sparse path, reference on the dense path) with the same weights."""
    if kind == "tide":
        sparse = _perturbed(
            TideTrainingSAE(TideTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, sparse_decode=True, **TIMESTEP_MLP)),
            generator,
        )
        dense = copy.deepcopy(sparse)
        dense.cfg.sparse_decode = False
        return sparse, dense
    sparse = _perturbed(
        SparseTopKTrainingSAE(SparseTopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, sparse_decode=True)), generator
    )
    dense = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    dense.load_state_dict(sparse.state_dict())
    return sparse, dense


@pytest.mark.parametrize("kind", ["tide", "topk"])
@pytest.mark.parametrize(("d_in", "d_sae", "k"), SHAPES)
def test_sparse_step_equals_dense_step(kind: str, d_in: int, d_sae: int, k: int) -> None:
    generator = torch.Generator().manual_seed(d_in * d_sae + k)
    sparse, dense = _pair(kind, d_in, d_sae, k, generator)
    x = 2 * torch.randn(40, d_in, generator=generator)
    t = torch.randint(0, 1001, (40,), generator=generator).float()
    dead = torch.rand(d_sae, generator=generator) < 0.5  # dead latents also fire in this batch
    out_sparse, grads_sparse = _step(sparse, x, t, dead)
    out_dense, grads_dense = _step(dense, x, t, dead)

    assert out_sparse.feature_acts.is_sparse and not out_dense.feature_acts.is_sparse
    torch.testing.assert_close(out_sparse.feature_acts.to_dense(), out_dense.feature_acts, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_sparse.sae_out, out_dense.sae_out, rtol=1e-5, atol=1e-5)
    assert out_sparse.losses.keys() == out_dense.losses.keys()
    assert out_dense.losses["auxiliary_reconstruction_loss"] > 0
    for name, loss in out_dense.losses.items():
        torch.testing.assert_close(out_sparse.losses[name], loss, rtol=1e-5, atol=1e-6)
    assert grads_sparse.keys() == grads_dense.keys()
    for name, grad in grads_dense.items():
        scale = grad.abs().max().item()
        assert scale > 0, f"{name}: zero gradient, the test could not tell the paths apart"
        torch.testing.assert_close(grads_sparse[name], grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize(("d_in", "d_out", "d_sae", "k"), [(16, 16, 64, 4), (12, 20, 48, 7)])
def test_sparse_transcoder_step_equals_its_dense_step(d_in: int, d_out: int, d_sae: int, k: int, skip: bool) -> None:
    from sae_lens_dit.saes.tide_transcoder import TideTrainingTranscoder, TideTrainingTranscoderConfig
    from sae_lens_dit.training.sublayers import transcoder_rows

    generator = torch.Generator().manual_seed(d_in * d_out + k + skip)
    cfg = TideTrainingTranscoderConfig(
        d_in=d_in, d_out=d_out, d_sae=d_sae, k=k, skip=skip, sparse_decode=True, **TIMESTEP_MLP, **EVERY_TERM
    )
    sparse = _perturbed(TideTrainingTranscoder(cfg), generator)
    dense = copy.deepcopy(sparse)
    dense.cfg.sparse_decode = False
    rows = transcoder_rows(2 * torch.randn(40, d_in, generator=generator), torch.randn(40, d_out, generator=generator))
    t = torch.randint(0, 1001, (40,), generator=generator).float()
    dead = torch.rand(d_sae, generator=generator) < 0.5
    out_sparse, grads_sparse = _step(sparse, rows, t, dead)
    out_dense, grads_dense = _step(dense, rows, t, dead)
    assert out_sparse.feature_acts.is_sparse and not out_dense.feature_acts.is_sparse
    torch.testing.assert_close(out_sparse.sae_in, rows[:, d_in:])  # scored against the MLP output
    torch.testing.assert_close(out_sparse.feature_acts.to_dense(), out_dense.feature_acts, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_sparse.sae_out, out_dense.sae_out, rtol=1e-5, atol=1e-5)
    assert out_dense.losses["auxiliary_reconstruction_loss"] > 0
    for name, loss in out_dense.losses.items():
        torch.testing.assert_close(out_sparse.losses[name], loss, rtol=1e-5, atol=1e-6)
    for name, grad in grads_dense.items():
        if grad is None:  # timestep MLP parts no term uses
            assert grads_sparse[name] is None, name
            continue
        scale = grad.abs().max().item()
        assert scale > 0, f"{name}: zero gradient, the test could not tell the paths apart"
        torch.testing.assert_close(grads_sparse[name], grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def _trainer_step(sae: Any, x: torch.Tensor, t: torch.Tensor) -> SAETrainer:
    cfg = SAETrainerConfig(total_training_samples=10**6, train_batch_size_samples=x.shape[0], lr_end=1e-3, device="cpu")
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=feed_timesteps(iter([(x, t)]), sae))
    trainer.step(next(trainer.data_provider))
    return trainer


def test_trainer_statistics_and_log_are_the_same_with_sparse_codes() -> None:
    generator = torch.Generator().manual_seed(7)
    sparse, dense = _pair("tide", 16, 128, 5, generator)
    x, t = torch.randn(64, 16, generator=generator), torch.full((64,), 400.0)
    trainers = [_trainer_step(sae, x, t) for sae in (sparse, dense)]
    torch.testing.assert_close(trainers[0].act_freq_scores, trainers[1].act_freq_scores)
    torch.testing.assert_close(trainers[0].n_forward_passes_since_fired, trainers[1].n_forward_passes_since_fired)
    for (name, p_sparse), p_dense in zip(sparse.named_parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(p_sparse, p_dense, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("kind", ["tide", "topk"])
def test_200_steps_end_at_the_same_loss(kind: str) -> None:
    data = SyntheticTimestepData.create(d_in=16, n_atoms=24, active_per_row=3)
    scores = []
    for sparse_decode in (True, False):
        torch.manual_seed(0)
        shape = {"d_in": 16, "d_sae": 64, "k": 4, "sparse_decode": sparse_decode}
        sae = (
            TideTrainingSAE(TideTrainingSAEConfig(**shape, **TIMESTEP_MLP))
            if kind == "tide"
            else SparseTopKTrainingSAE(SparseTopKTrainingSAEConfig(**shape))
        )
        train_through_sae_trainer(sae, data.pairs(32, seed=3), 32 * 200, 32, lr=3e-3, dead_feature_window=20)
        scores.append(recovery_scores(sae.eval(), data).fvu)
    assert scores[0] < 0.5, f"did not learn: FVU {scores[0]:.3f}"
    assert scores[0] == pytest.approx(scores[1], rel=0.01), scores


def test_automatic_choice_and_override() -> None:
    small_k = int(AUTO_MAX_DENSITY * 64)
    assert uses_sparse_decode(TideTrainingSAEConfig(d_in=8, d_sae=64, k=small_k))
    assert not uses_sparse_decode(TideTrainingSAEConfig(d_in=8, d_sae=64, k=small_k + 1))
    assert not uses_sparse_decode(TideTrainingSAEConfig(d_in=8, d_sae=64, k=2, sparse_decode=False))
    assert uses_sparse_decode(SparseTopKTrainingSAEConfig(d_in=8, d_sae=64, k=64, sparse_decode=True))


def test_hooks_on_the_latents_fall_back_to_the_dense_path() -> None:
    sae = SparseTopKTrainingSAE(SparseTopKTrainingSAEConfig(d_in=8, d_sae=64, k=2))
    seen = []
    sae.hook_sae_acts_post.add_hook(lambda acts, hook: seen.append(acts.shape))
    out = sae.training_forward_pass(TrainStepInput(torch.randn(5, 8), {}, None, 0, False))
    assert not out.feature_acts.is_sparse and seen == [torch.Size([5, 64])]


def test_sparse_step_under_bf16_autocast_tracks_the_dense_step() -> None:
    generator = torch.Generator().manual_seed(3)
    sparse, dense = _pair("tide", 32, 256, 8, generator)
    x, t = torch.randn(64, 32, generator=generator), torch.full((64,), 900.0)
    dead = torch.zeros(256, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_sparse, grads_sparse = _step(sparse, x, t, dead)
        out_dense, grads_dense = _step(dense, x, t, dead)
    assert all(grad.dtype == torch.float32 for grad in grads_sparse.values())
    torch.testing.assert_close(out_sparse.loss, out_dense.loss, rtol=2e-2, atol=0)
    cosine = torch.cosine_similarity(grads_sparse["W_enc"].flatten(), grads_dense["W_enc"].flatten(), dim=0)
    assert cosine > 0.99


def test_topk_sparse_checkpoint_is_a_plain_sae_lens_topk_sae(tmp_path) -> None:
    torch.manual_seed(0)
    sae = _perturbed(
        SparseTopKTrainingSAE(SparseTopKTrainingSAEConfig(d_in=8, d_sae=64, k=3)), torch.Generator().manual_seed(1)
    )
    sae.save_inference_model(tmp_path)
    loaded = SAE.load_from_disk(tmp_path)
    assert type(loaded) is TopKSAE and loaded.cfg.architecture() == "topk"
    x = torch.randn(10, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), sae(x), rtol=1e-5, atol=1e-5)


def test_topk_sparse_is_a_registered_training_architecture() -> None:
    assert get_sae_training_class("topk_sparse") == (SparseTopKTrainingSAE, SparseTopKTrainingSAEConfig)
    cfg = SparseTopKTrainingSAEConfig(d_in=8, d_sae=64, k=3, sparse_decode=False)
    again = SparseTopKTrainingSAEConfig.from_dict(cfg.to_dict())
    assert type(again) is SparseTopKTrainingSAEConfig and again.sparse_decode is False and again.k == 3
