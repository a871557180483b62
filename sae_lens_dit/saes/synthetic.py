"""Synthetic activations with a known dictionary and a known timestep dependence, for TIDE tests.

Each row is a sparse code over a fixed dictionary of unit atoms, scaled and shifted by amounts
that depend on the row's timestep, as activations of a diffusion transformer are across denoising
steps::

    x = gain(t) * (codes @ atoms) + offset(t) + noise
    gain(t)   = 0.5 + t / 1000                                    # 0.5 clean .. 1.5 pure noise
    offset(t) = offset_norm * (cos(pi t / 1000) u + sin(pi t / 1000) v)   # u, v unit, fixed

An SAE that finds the atoms (`matched_atom_cosine` near 1) has recovered the ground truth; the
timestep terms of TIDE can undo `gain` and `offset`, a plain TopK SAE must spend latents on them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.sae import SAE, TrainingSAE
from sae_lens.training.sae_trainer import SAETrainer

from sae_lens_dit.conventions import TIMESTEP_MAX
from sae_lens_dit.saes.tide_sae import TideSAE, TideTrainingSAE, feed_timesteps


@dataclass(frozen=True)
class SyntheticTimestepData:
    """A fixed random dictionary and timestep grid; `sample` draws activations from them."""

    atoms: torch.Tensor  # [n_atoms, d_in], unit rows
    offset_directions: torch.Tensor  # [2, d_in], unit rows
    timesteps: torch.Tensor  # [n_timesteps], the grid rows draw their timestep from
    active_per_row: int
    offset_norm: float
    noise_std: float

    @classmethod
    def create(
        cls,
        d_in: int = 32,
        n_atoms: int = 64,
        active_per_row: int = 3,
        n_timesteps: int = 20,
        offset_norm: float = 2.0,
        noise_std: float = 0.01,
        seed: int = 0,
    ) -> SyntheticTimestepData:
        generator = torch.Generator().manual_seed(seed)
        atoms = torch.randn(n_atoms, d_in, generator=generator)
        directions = torch.randn(2, d_in, generator=generator)
        return cls(
            atoms=atoms / atoms.norm(dim=-1, keepdim=True),
            offset_directions=directions / directions.norm(dim=-1, keepdim=True),
            timesteps=torch.linspace(0.0, TIMESTEP_MAX - 1, n_timesteps),
            active_per_row=active_per_row,
            offset_norm=offset_norm,
            noise_std=noise_std,
        )

    def gain(self, t: torch.Tensor) -> torch.Tensor:
        """[n] -> [n, 1]."""
        return (0.5 + t / TIMESTEP_MAX)[:, None]

    def offset(self, t: torch.Tensor) -> torch.Tensor:
        """[n] -> [n, d_in]."""
        angle = math.pi * t / TIMESTEP_MAX
        return self.offset_norm * (
            torch.cos(angle)[:, None] * self.offset_directions[0]
            + torch.sin(angle)[:, None] * self.offset_directions[1]
        )

    def sample(self, n_rows: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(activations [n, d_in], timesteps [n], codes [n, n_atoms])."""
        n_atoms = self.atoms.shape[0]
        which = torch.rand(n_rows, n_atoms, generator=generator).argsort(dim=-1)[:, : self.active_per_row]
        magnitudes = 0.5 + torch.rand(n_rows, self.active_per_row, generator=generator)
        codes = torch.zeros(n_rows, n_atoms).scatter_(1, which, magnitudes)
        t = self.timesteps[torch.randint(len(self.timesteps), (n_rows,), generator=generator)]
        noise = self.noise_std * torch.randn(n_rows, self.atoms.shape[1], generator=generator)
        return self.gain(t) * (codes @ self.atoms) + self.offset(t) + noise, t, codes

    def pairs(self, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless (activations [B, d_in], timesteps [B]) batches, e.g. for `feed_timesteps`."""
        generator = torch.Generator().manual_seed(seed)
        while True:
            x, t, _ = self.sample(batch_size, generator)
            yield x, t


def matched_atom_cosine(atoms: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """For each true atom [n_atoms, d_in], the best cosine with a learned decoder row [d_sae, d_in].
    Returns [n_atoms]; its mean is the dictionary-recovery score."""
    learned = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return (atoms @ learned.T).max(dim=-1).values


class RecoveryScores(NamedTuple):
    """How well an SAE trained on `SyntheticTimestepData` recovers it (held-out rows)."""

    mse: float  # mean squared error per row, summed over d_in
    fvu: float  # fraction of variance unexplained: mse / total variance
    matched_atom_cosine: float  # mean over true atoms of the best cosine with a decoder row
    atoms_recovered: float  # fraction of true atoms with a decoder row at cosine > 0.9


def train_through_sae_trainer(
    sae: TrainingSAE[Any],
    pairs: Iterator[tuple[torch.Tensor, torch.Tensor]],
    total_samples: int,
    batch_size: int,
    lr: float = 3e-3,
    **trainer_cfg: Any,
) -> TrainingSAE[Any]:
    """Train `sae` with SAELens's `SAETrainer`, its data provider `feed_timesteps(pairs, sae)`."""
    cfg = SAETrainerConfig(
        total_training_samples=total_samples,
        train_batch_size_samples=batch_size,
        lr=lr,
        lr_end=lr,
        device=str(sae.device),
        **{"dead_feature_window": 200, "feature_sampling_window": 1000, **trainer_cfg},
    )
    return SAETrainer(cfg=cfg, sae=sae, data_provider=feed_timesteps(pairs, sae)).fit()


@torch.no_grad()
def recovery_scores(sae: SAE[Any], data: SyntheticTimestepData, n_rows: int = 4096, seed: int = 1234) -> RecoveryScores:
    """Scores of `sae` (TIDE gets each row's timestep; other SAEs ignore it) on fresh rows."""
    x, t, _ = data.sample(n_rows, torch.Generator().manual_seed(seed))
    x_hat = sae(x, timestep=t) if isinstance(sae, TideSAE | TideTrainingSAE) else sae(x)
    mse = (x_hat - x).pow(2).sum(-1).mean().item()
    cosines = matched_atom_cosine(data.atoms, sae.W_dec.detach())
    return RecoveryScores(
        mse=mse,
        fvu=mse / (x - x.mean(0)).pow(2).sum(-1).mean().item(),
        matched_atom_cosine=cosines.mean().item(),
        atoms_recovered=(cosines > 0.9).float().mean().item(),
    )
