"""The training seam: timesteps travel beside each batch to the SAE, never inside it.

`SAETrainer` pulls bare activation tensors from its data provider (`Iterator[Tensor]`) and calls
`sae.training_forward_pass` with them; nothing else reaches the SAE. `feed_timesteps(pairs, sae)`
therefore wraps the (activations [B, d_in], timesteps [B]) pairs a harvest yields: for each pair it
hands the timesteps to the SAE (`receive_batch_timesteps`), then yields the activations to the
trainer. The timesteps travel beside the batch, never inside it, so the trainer, its activation
scaler and the metrics it logs (explained variance, L0) see the real activations only. The SAE
takes the handed timesteps once, in the training step that follows the pull, and checks their
count against the batch; pulls with no step between them (`ActivationScaler.estimate_scaling_factor`,
an evaluator) only overwrite them, so a step always uses the timesteps of the batch it was given.
SAEs without `receive_batch_timesteps` (the SAELens baselines) ignore the timesteps and train on
the same activations.

>>> pairs = iter([(torch.randn(4, 8), torch.full((4,), 999.0))])
>>> [tuple(batch.shape) for batch in feed_timesteps(pairs, sae=None)]
[(4, 8)]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class BatchTimestepReceiver(Protocol):
    """An SAE that takes the timesteps [batch] of the next training batch (e.g. `TideTrainingSAE`)."""

    def receive_batch_timesteps(self, timesteps: torch.Tensor) -> None: ...


def feed_timesteps(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], sae: object) -> Iterator[torch.Tensor]:
    """Yield the activations [B, d_in] of each (activations, timesteps [B]) pair, handing the
    timesteps to `sae` first if it takes them. Use the result as `SAETrainer`'s data provider
    (the seam: see the module docstring)."""
    receiver = sae if isinstance(sae, BatchTimestepReceiver) else None
    for activations, timesteps in pairs:
        if timesteps.ndim != 1 or timesteps.shape[0] != activations.shape[0]:
            raise ValueError(
                f"feed_timesteps: expected (activations [B, d_in], timesteps [B]) pairs, got "
                f"activations {tuple(activations.shape)} with timesteps {tuple(timesteps.shape)}"
            )
        if receiver is not None:
            receiver.receive_batch_timesteps(timesteps)
        yield activations
