"""Small TIDE SAEs (d_in 16, d_sae 64) and a few-step SAETrainer run that makes the timestep terms
non-zero, for the tests of sae_lens_dit.saes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from sae_lens_dit import TideTrainingSAE, TideTrainingSAEConfig
from sae_lens_dit.saes.synthetic import SyntheticTimestepData, train_through_sae_trainer

SMALL = {"d_in": 16, "d_sae": 64, "k": 4, "timestep_embed_dim": 32, "timestep_hidden_dim": 24}


@pytest.fixture(scope="session")
def synthetic() -> SyntheticTimestepData:
    return SyntheticTimestepData.create(d_in=16, n_atoms=24, active_per_row=3)


@pytest.fixture(scope="session")
def train_tide(synthetic: SyntheticTimestepData) -> Callable[..., TideTrainingSAE]:
    """Build a small TideTrainingSAE (SMALL overridden by kwargs; `on_init` sees it before training)
    and train it 8 steps through SAETrainer + feed_timesteps, at a learning rate that makes every
    timestep head non-zero."""

    def make(
        n_steps: int = 8,
        trainer: dict[str, Any] | None = None,
        on_init: Callable[[TideTrainingSAE], None] | None = None,
        **cfg: Any,
    ) -> TideTrainingSAE:
        torch.manual_seed(0)
        sae = TideTrainingSAE(TideTrainingSAEConfig(**{**SMALL, **cfg}))
        if on_init is not None:
            on_init(sae)
        train_through_sae_trainer(sae, synthetic.pairs(64, seed=3), 64 * n_steps, 64, lr=1e-2, **(trainer or {}))
        heads = sae.timestep_mlp.heads.weight.view(-1, sae.cfg.d_in, sae.cfg.timestep_hidden_dim)
        for term, rows in zip(sae.timestep_mlp.terms_enabled, heads, strict=True):
            assert rows.abs().sum() > 0, f"{term} head still zero"
        return sae.eval()

    return make
