"""Ground truth: on activations built from a known dictionary, scaled and shifted by the timestep,
a short SAETrainer run of TIDE recovers the dictionary better than SAELens TopK at the same k."""

from __future__ import annotations

import pytest
import torch
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

from sae_lens_dit import TideTrainingSAE, TideTrainingSAEConfig
from sae_lens_dit.saes.synthetic import SyntheticTimestepData, recovery_scores, train_through_sae_trainer


@pytest.mark.slow
def test_tide_recovers_the_dictionary_better_than_topk() -> None:
    data = SyntheticTimestepData.create(d_in=32, n_atoms=64, active_per_row=3, n_timesteps=20)
    scores = {}
    for name, sae_class, cfg_class in (
        ("topk", TopKTrainingSAE, TopKTrainingSAEConfig),
        ("tide", TideTrainingSAE, TideTrainingSAEConfig),
    ):
        torch.manual_seed(0)
        sae = sae_class(cfg_class(d_in=32, d_sae=128, k=3))
        train_through_sae_trainer(sae, data.pairs(512, seed=1), total_samples=300_000, batch_size=512)
        scores[name] = recovery_scores(sae.eval(), data)
        print(f"{name}: {scores[name]}")
    assert scores["tide"].matched_atom_cosine > scores["topk"].matched_atom_cosine + 0.05
    assert scores["tide"].atoms_recovered > scores["topk"].atoms_recovered + 0.2
    assert scores["tide"].mse < 0.5 * scores["topk"].mse
