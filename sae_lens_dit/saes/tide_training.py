"""TIDE's training SAE: MSE plus the AuxK dead-latent loss, trained by SAELens's `SAETrainer` unchanged.

Why a module of its own: training adds what inference never needs, namely the timesteps handed
beside each batch (`sae_lens_dit.saes.timestep_feed`), the sparse training step
(`sae_lens_dit.saes.sparse_topk`) and the AuxK loss (`sae_lens_dit.saes.auxk`). The timestep
modulation itself is shared with the inference SAE (`sae_lens_dit.saes.tide_modulation`).

>>> sae = TideTrainingSAE(TideTrainingSAEConfig(d_in=8, d_sae=32, k=4))
>>> sae.receive_batch_timesteps(torch.full((3,), 999.0))
>>> out = sae.training_forward_pass(TrainStepInput(torch.randn(3, 8), {}, None, 0, False))
>>> out.sae_out.shape
torch.Size([3, 8])
"""

from __future__ import annotations

import torch
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from sae_lens.saes.topk_sae import TopKTrainingSAE
from typing_extensions import override

from sae_lens_dit.saes.auxk import auxk_loss
from sae_lens_dit.saes.sparse_topk import SparseTopKTraining
from sae_lens_dit.saes.tide_config import TideTrainingSAEConfig
from sae_lens_dit.saes.tide_modulation import TimestepModulatedSAE
from sae_lens_dit.saes.timestep_mlp import TimestepLike


class TideTrainingSAE(TimestepModulatedSAE, SparseTopKTraining, TopKTrainingSAE):
    """TIDE with training: MSE + AuxK dead-latent loss, encoder initialised as the decoder's transpose.

    Trains inside SAELens's `SAETrainer` unchanged: wrap the (activations, timesteps) batches with
    `feed_timesteps(pairs, sae)`, which hands each batch's timesteps to `receive_batch_timesteps`
    before the trainer sees the activations; `training_forward_pass` takes them, once. With
    `sparse_decode` on (the default when k / d_sae is small) the step decodes from the TopK indices
    and values only (`sae_lens_dit.saes.sparse_topk`); the timestep MLP runs once per distinct
    timestep of the batch either way.
    """

    cfg: TideTrainingSAEConfig  # type: ignore[assignment]
    _batch_timesteps: torch.Tensor | None = None

    def receive_batch_timesteps(self, timesteps: torch.Tensor) -> None:
        """Timesteps [batch] of the batch the trainer will pass next (called by `feed_timesteps`)."""
        if timesteps.ndim != 1:
            raise ValueError(
                f"receive_batch_timesteps expects one timestep per row, shape [batch]; got shape "
                f"{tuple(timesteps.shape)}"
            )
        self._batch_timesteps = timesteps

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        timesteps = self._take_batch_timesteps(step_input.sae_in)
        with self._terms_once(step_input.sae_in, timesteps):
            return super().training_forward_pass(step_input)

    def _take_batch_timesteps(self, rows: torch.Tensor) -> torch.Tensor:
        """The timesteps handed for the batch `rows` [batch, ...], taken once, on its device."""
        timesteps, self._batch_timesteps = self._batch_timesteps, None
        n_rows, name = rows.shape[0], type(self).__name__
        if timesteps is None:
            raise ValueError(
                f"{name}.training_forward_pass: no timesteps were handed for this batch. "
                "Build the trainer's data provider with feed_timesteps(pairs, sae) "
                "(sae_lens_dit.saes), which hands each batch's timesteps to the SAE."
            )
        if timesteps.shape[0] != n_rows:
            raise ValueError(
                f"{name}.training_forward_pass: {timesteps.shape[0]} timesteps were handed "
                f"for a batch of {n_rows} rows; feed_timesteps must yield (activations [B, d_in], "
                f"timesteps [B]) pairs and nothing else may pull from the data provider in between"
            )
        return timesteps.to(rows.device)

    @override
    def _sparse_encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        return self._encoder_input(x, self._encode_terms(x, None))

    @override
    def _sparse_decoder_bias(self, x: torch.Tensor) -> torch.Tensor | None:
        return self._decoder_bias(x, None)

    @override
    def _aux_k(self) -> int:
        return self.cfg.k_aux if self.cfg.k_aux is not None else self.cfg.d_in // 2

    @override
    def encode_with_hidden_pre(
        self, x: torch.Tensor, timestep: TimestepLike | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [..., d_in] -> (TopK codes, pre-activations), both [..., d_sae]."""
        terms = self._encode_terms(x, timestep)
        hidden_pre = self._modulated_hidden_pre(x, terms)
        feature_acts = self.hook_sae_acts_post(self.activation_fn(hidden_pre))
        return self._tag_codes(feature_acts, terms), hidden_pre

    @override
    def encode(self, x: torch.Tensor, timestep: TimestepLike | None = None) -> torch.Tensor:
        return self.encode_with_hidden_pre(x, timestep)[0]

    @override
    def calculate_aux_loss(
        self,
        step_input: TrainStepInput,
        feature_acts: torch.Tensor,
        hidden_pre: torch.Tensor,
        sae_out: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        loss = auxk_loss(
            sae_in=step_input.sae_in,
            sae_out=sae_out,
            hidden_pre=hidden_pre,
            dead_neuron_mask=step_input.dead_neuron_mask,
            W_dec=self.W_dec,
            k_aux=self._aux_k(),
            rescale_acts_by_decoder_norm=self.cfg.rescale_acts_by_decoder_norm,
        )
        return {"auxiliary_reconstruction_loss": self.cfg.aux_loss_coefficient * loss}
