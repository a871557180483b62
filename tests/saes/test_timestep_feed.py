"""The timestep seam: feed_timesteps + SAETrainer, for TIDE and for the SAELens baselines."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from sae_lens.config import SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from sae_lens.training.sae_trainer import SAETrainer

from sae_lens_dit import TideTrainingSAE, TideTrainingSAEConfig
from sae_lens_dit.saes import feed_timesteps
from sae_lens_dit.saes.synthetic import SyntheticTimestepData, recovery_scores, train_through_sae_trainer

SMALL = {"d_in": 16, "d_sae": 64, "k": 4, "timestep_embed_dim": 32, "timestep_hidden_dim": 24}


class _RecordingTide(TideTrainingSAE):
    """Records the timesteps each training step used next to the rows it was given."""

    def __init__(self, cfg: TideTrainingSAEConfig) -> None:
        super().__init__(cfg)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        self.seen.append((self._batch_timesteps.clone(), step_input.sae_in.clone()))
        return super().training_forward_pass(step_input)


def _labelled_pairs(batch: int, seed: int):
    """Rows that carry their own timestep: x[:, 0] / x[:, 1] == t / 1000, whatever the scaling."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        t = torch.randint(0, 1000, (batch,), generator=generator).float()
        x = torch.randn(batch, 16, generator=generator)
        x[:, 1] = 1.0
        x[:, 0] = t / 1000
        yield x, t


def _trainer(sae: Any, pairs, steps: int, batch: int = 32, **cfg: Any) -> SAETrainer:
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch, train_batch_size_samples=batch, lr=1e-2, lr_end=1e-2, **cfg
    )
    return SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=feed_timesteps(pairs, sae))


def test_each_step_uses_the_timesteps_of_its_batch_after_norm_estimation() -> None:
    sae = _RecordingTide(TideTrainingSAEConfig(**SMALL, normalize_activations="expected_average_only_in"))
    trainer = _trainer(sae, _labelled_pairs(32, seed=0), steps=5, n_batches_for_norm_estimate=3)
    trainer.fit()
    assert len(sae.seen) == 5
    for timesteps, sae_in in sae.seen:
        torch.testing.assert_close(timesteps / 1000, sae_in[:, 0] / sae_in[:, 1])


def test_a_provider_without_timesteps_is_a_clear_error() -> None:
    sae = TideTrainingSAE(TideTrainingSAEConfig(**SMALL))
    cfg = SAETrainerConfig(total_training_samples=64, train_batch_size_samples=32, lr_end=3e-4)
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=iter([torch.randn(32, 16)] * 2))
    with pytest.raises(ValueError, match="feed_timesteps"):
        trainer.fit()


def test_timesteps_are_taken_once_and_must_match_the_batch() -> None:
    sae = TideTrainingSAE(TideTrainingSAEConfig(**SMALL))
    step = TrainStepInput(torch.randn(8, 16), {}, None, 0, False)
    sae.receive_batch_timesteps(torch.zeros(7))
    with pytest.raises(ValueError, match="7 timesteps were handed for a batch of 8 rows"):
        sae.training_forward_pass(step)
    sae.receive_batch_timesteps(torch.zeros(8))
    sae.training_forward_pass(step)
    with pytest.raises(ValueError, match="no timesteps were handed"):
        sae.training_forward_pass(step)
    with pytest.raises(ValueError, match=r"shape \[batch\]"):
        sae.receive_batch_timesteps(torch.zeros(8, 1))


def test_feed_timesteps_rejects_pairs_that_do_not_line_up() -> None:
    with pytest.raises(ValueError, match=r"timesteps \(3,\)"):
        next(feed_timesteps(iter([(torch.randn(4, 16), torch.zeros(3))]), sae=None))


def test_logged_metrics_are_computed_on_the_real_activations(train_tide) -> None:
    sae = train_tide()  # timestep terms non-zero: modulated input differs from the activations
    sae.train()
    pairs = _labelled_pairs(32, seed=1)
    trainer = _trainer(sae, pairs, steps=1)
    x, t = next(_labelled_pairs(32, seed=1))
    provider_batch = next(trainer.data_provider)
    torch.testing.assert_close(provider_batch, x)
    before = copy.deepcopy(sae)
    output = trainer.step(provider_batch)
    assert output.sae_in is provider_batch
    expected_out = before(x, timestep=t)
    torch.testing.assert_close(output.sae_out, expected_out)
    logged = trainer.build_train_step_log_dict(output, n_training_samples=32)
    residual = (x - expected_out).pow(2).sum(-1).mean()
    variance = (x - x.mean(0)).pow(2).sum(-1).mean()
    assert logged["metrics/explained_variance"] == pytest.approx((1 - residual / variance).item(), abs=1e-5)
    assert logged["metrics/l0"] == 4


BASELINES = {
    "standard": {},
    "topk": {"k": 4},
    "batchtopk": {"k": 4},
    "jumprelu": {},
    "matryoshka_batchtopk": {"k": 4, "matryoshka_widths": [16, 64]},
    "tide": {"k": 4, "timestep_embed_dim": 32, "timestep_hidden_dim": 24},
}


@pytest.mark.parametrize("architecture", sorted(BASELINES))
def test_every_architecture_trains_through_the_seam(architecture: str) -> None:
    data = SyntheticTimestepData.create(d_in=16, n_atoms=24, active_per_row=3)
    sae_class, cfg_class = get_sae_training_class(architecture)
    torch.manual_seed(0)
    sae = sae_class(cfg_class(d_in=16, d_sae=64, **BASELINES[architecture]))
    before = recovery_scores(copy.deepcopy(sae).eval(), data, n_rows=512)
    train_through_sae_trainer(sae, data.pairs(128, seed=5), total_samples=128 * 60, batch_size=128)
    after = recovery_scores(sae.eval(), data, n_rows=512)
    assert after.mse < 0.8 * before.mse
