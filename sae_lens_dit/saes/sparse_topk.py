"""Sparse TopK training: the decoder and the encoder's backward use only the TopK (indices, values).

A TopK SAE keeps k of d_sae latents per row (k 64 of 18,432 at DiT-XL width), yet SAELens's
training step multiplies a dense [batch, d_sae] code tensor through the decoder, forward and
backward, and back-propagates a dense [batch, d_sae] gradient through the encoder: four of its six
big matmuls multiply almost only zeros. Here the encoder's pre-activations are still computed
densely (TopK needs all of them) but without autograd; the TopK indices then drive

- the decoder: `embedding_bag(indices, W_dec, per_sample_weights=values)` (built-in forward and
  backward, CPU and CUDA),
- the encoder's backward (`_TopKPreActs`): the gradient reaches only the selected pre-activations,
  so dW_enc = sae_in^T @ G (G sparse, k non-zeros a row) and d sae_in = G @ W_enc^T,
- AuxK (`calculate_topk_aux_acts`' selection) on the dead latents' columns only (the loss's scaling:
  `sae_lens_dit.saes.auxk`).

The step returns the codes as a sparse COO tensor, which `SAETrainer`'s firing statistics and
logged L0 accept as they are. Results equal the dense path's to float tolerance (outputs, losses,
every parameter's gradient; `tests/saes/test_sparse_decode.py`). The dense path still runs
when `sparse_decode` resolves to False, and whenever a hook is attached to `hook_sae_acts_pre` or
`hook_sae_acts_post` (they need the dense latents). Under the trainer's bf16 autocast the dense
encoder matmul runs in bf16; the sparse ops run in the parameters' dtype. The step is not
`torch.compile`d: compiling it measured 0.94x the eager time at d_in 1152, d_sae 18432, k 64 on 2 CPU
cores (`benchmarks/results/fast_train_compile.md`), against ~30 s of compilation per process and
AuxK shapes that follow the number of dead latents (possible recompiles; not measured).

`SparseTopKTraining` is the mixin (TIDE's training SAE and transcoder use it; a transcoder's batch holds its
input and target side by side, `_sparse_split`); `SparseTopKTrainingSAE` is
SAELens's TopK training SAE with it, registered as training architecture `topk_sparse`. It saves as
a plain SAELens `topk` SAE, so its checkpoints load without this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from sae_lens.saes.sae import SAEConfig, TrainingSAE, TrainStepInput, TrainStepOutput
from sae_lens.saes.topk_sae import TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
from typing_extensions import override

from sae_lens_dit.saes.auxk import check_auxk_normalization, scaled_residual_loss

SPARSE_ARCHITECTURE = "topk_sparse"
"""SAELens training architecture of `SparseTopKTrainingSAE` (it saves as `topk`)."""

AUTO_MAX_DENSITY = 1 / 16
"""`sparse_decode=None` uses the sparse path when k / d_sae is at most this. The sparse step's cost
grows with k, the dense step's with d_sae. Measured for TIDE at d_in 1152, d_sae 4608, batch 1024 on
2 shared CPU cores (`benchmarks/results/fast_train.md`): sparse / dense step time 0.36 at k / d_sae
1/64, 0.61 at 1/16, 0.85 at 1/8, 1.42 at 1/4; an earlier run under heavier load had 0.73 at 1/16 but
1.24 at 1/8, so the threshold is 1/16, where the sparse step won in both."""


@dataclass(kw_only=True)
class SparseDecodeFields:
    """The training-speed option shared by `TideTrainingSAEConfig` and `SparseTopKTrainingSAEConfig`."""

    sparse_decode: bool | None = None
    """Train with the sparse decoder and encoder backward (see `sae_lens_dit.saes.sparse_topk`):
    same results as the dense path to float tolerance, several times less arithmetic when k is much
    smaller than d_sae. None: on when k / d_sae <= `AUTO_MAX_DENSITY` (1/16, measured). Training only:
    inference SAEs and saved checkpoints are the same either way."""


def uses_sparse_decode(cfg: Any) -> bool:
    """Whether `cfg` (with `k`, `d_sae`, `sparse_decode`) trains with the sparse path."""
    if cfg.sparse_decode is not None:
        return cfg.sparse_decode
    return cfg.k / cfg.d_sae <= AUTO_MAX_DENSITY


class _TopKPreActs(torch.autograd.Function):
    """`(sae_in @ W_enc + b_enc)` at `indices` [N, m], whose values the caller already computed
    without autograd; the backward touches only those N * m entries."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        sae_in: torch.Tensor,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        indices: torch.Tensor,
        values: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(sae_in, W_enc, indices)
        ctx.d_sae = b_enc.shape[0]
        return values.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        sae_in, W_enc, indices = ctx.saved_tensors
        n_rows, m = indices.shape
        grad = grad.to(W_enc.dtype)
        flat_indices = indices.reshape(-1)
        grad_sae_in = grad_W_enc = grad_b_enc = None
        if ctx.needs_input_grad[0]:  # sum_j grad[n, j] * W_enc[:, indices[n, j]]
            grad_sae_in = F.embedding_bag(indices, W_enc.T.contiguous(), per_sample_weights=grad, mode="sum")
        if ctx.needs_input_grad[1]:  # sae_in^T @ G, G [N, d_sae] with the grads at `indices`
            rows = torch.arange(n_rows, device=indices.device).repeat_interleave(m)
            G = torch.sparse_coo_tensor(
                torch.stack([rows, flat_indices]), grad.reshape(-1), (n_rows, ctx.d_sae), check_invariants=False
            )
            grad_W_enc = torch.mm(sae_in.T.to(W_enc.dtype), G)
        if ctx.needs_input_grad[2]:
            grad_b_enc = grad.new_zeros(ctx.d_sae).index_add_(0, flat_indices, grad.reshape(-1))
        return grad_sae_in, grad_W_enc, grad_b_enc, None, None


def decode_sparse(indices: torch.Tensor, coefficients: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """sum_j coefficients[n, j] * W_dec[indices[n, j]]: indices, coefficients [N, m] -> [N, d_in]."""
    return F.embedding_bag(indices, W_dec, per_sample_weights=coefficients.to(W_dec.dtype), mode="sum")


def sparse_codes(indices: torch.Tensor, values: torch.Tensor, d_sae: int) -> torch.Tensor:
    """The codes as a sparse COO tensor [N, d_sae] (no autograd), for the trainer's statistics."""
    rows = torch.arange(indices.shape[0], device=indices.device).repeat_interleave(indices.shape[1])
    return torch.sparse_coo_tensor(
        torch.stack([rows, indices.reshape(-1)]),
        values.detach().reshape(-1),
        (indices.shape[0], d_sae),
        check_invariants=False,
    )


def _has_hooks(hook_point: torch.nn.Module) -> bool:
    return bool(hook_point._forward_hooks or hook_point._backward_hooks or hook_point._forward_pre_hooks)


class SparseTopKTraining(TrainingSAE[Any]):
    """Mixin: the sparse training step for a TopK-style training SAE (precedes it in the MRO).

    Needs `W_enc`, `b_enc`, `W_dec`, `b_dec` and a config with `k`, `rescale_acts_by_decoder_norm`,
    `aux_loss_coefficient`, `sparse_decode`. Subclasses adapt it through `_sparse_encoder_input`,
    `_sparse_decoder_bias` and `_aux_k`.
    """

    b_enc: torch.nn.Parameter

    def _sparse_encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder matmul consumes. x [N, d_in] -> [N, d_in]."""
        return self.process_sae_in(x)

    def _sparse_decoder_bias(self, x: torch.Tensor) -> torch.Tensor | None:
        """An extra term added to the reconstruction of x (besides b_dec), or None."""
        return None

    def _aux_k(self) -> int:
        """How many dead latents AuxK uses (SAELens TopK: d_in // 2)."""
        return self.cfg.d_in // 2

    def _sparse_split(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the encoder reads, what the output is scored against) of a batch: an SAE reconstructs its input;
        a transcoder's rows hold its input and its target side by side."""
        return rows, rows

    def _sparse_skip(self, x: torch.Tensor) -> torch.Tensor | None:
        """A term added to the output that does not go through the latents (a skip transcoder's), or None."""
        return None

    def _sparse_path_applies(self, x: torch.Tensor) -> bool:
        return (
            uses_sparse_decode(self.cfg)
            and x.ndim == 2
            and not _has_hooks(self.hook_sae_acts_pre)
            and not _has_hooks(self.hook_sae_acts_post)
        )

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        if not self._sparse_path_applies(step_input.sae_in):
            return super().training_forward_pass(step_input)
        x, target = self._sparse_split(step_input.sae_in)
        sae_in = self._sparse_encoder_input(x)
        rescale = self.cfg.rescale_acts_by_decoder_norm
        W_dec_norm = self.W_dec.norm(dim=-1) if rescale else None
        with torch.no_grad():  # dense pre-activations, only to select latents
            pre_acts = sae_in @ self.W_enc + self.b_enc
            hidden_pre = pre_acts * W_dec_norm if W_dec_norm is not None else pre_acts
            top_indices = hidden_pre.topk(self.cfg.k, dim=-1, sorted=False).indices
            dead_mask = step_input.dead_neuron_mask
            n_dead = 0 if dead_mask is None else int(dead_mask.sum())
            k_aux = self._aux_k()
            aux_indices = top_indices[:, :0]
            if n_dead:
                dead = dead_mask.nonzero().squeeze(1)  # type: ignore[union-attr]
                aux_local = hidden_pre.index_select(1, dead).topk(min(k_aux, n_dead), dim=-1, sorted=False).indices
                aux_indices = dead[aux_local]
            indices = torch.cat([top_indices, aux_indices], dim=1)
            picked = pre_acts.gather(1, indices)
        acts = _TopKPreActs.apply(sae_in, self.W_enc, self.b_enc, indices, picked)
        if W_dec_norm is not None:
            acts = acts * W_dec_norm[indices]
        top_acts, aux_acts = acts.split([self.cfg.k, aux_indices.shape[1]], dim=1)
        top_acts = top_acts.relu()
        inv_norm = 1 / W_dec_norm if W_dec_norm is not None else None

        sae_out = self._decode_at(top_indices, top_acts, inv_norm) + self.b_dec
        for extra in (self._sparse_decoder_bias(x), self._sparse_skip(x)):
            if extra is not None:
                sae_out = sae_out + extra
        sae_out = self.run_time_activation_norm_fn_out(self.hook_sae_recons(sae_out))

        mse_loss = self.mse_loss_fn(sae_out, target).sum(dim=-1).mean()
        aux_loss = sae_out.new_tensor(0.0)
        if n_dead:  # Gao et al. 2024, A.2: the dead latents reconstruct the residual, no bias
            residual = (target - sae_out).detach()
            recons = self._decode_at(aux_indices, aux_acts, inv_norm)
            aux_loss = scaled_residual_loss(recons, residual, n_dead, k_aux)
        aux_loss = self.cfg.aux_loss_coefficient * aux_loss
        return TrainStepOutput(
            sae_in=target,
            sae_out=sae_out,
            feature_acts=sparse_codes(top_indices, top_acts, self.cfg.d_sae),
            hidden_pre=hidden_pre,
            loss=mse_loss + aux_loss,
            losses={"mse_loss": mse_loss, "auxiliary_reconstruction_loss": aux_loss},
        )

    def _decode_at(self, indices: torch.Tensor, acts: torch.Tensor, inv_norm: torch.Tensor | None) -> torch.Tensor:
        """Decoder without bias: [N, m] -> [N, d_in]."""
        coefficients = acts * inv_norm[indices] if inv_norm is not None else acts
        return decode_sparse(indices, coefficients, self.W_dec)


@dataclass
class SparseTopKTrainingSAEConfig(TopKTrainingSAEConfig, SparseDecodeFields):
    """SAELens's `TopKTrainingSAEConfig` plus `sparse_decode`; saves as an inference `topk` SAE."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_auxk_normalization(self)

    @override
    @classmethod
    def architecture(cls) -> str:
        return SPARSE_ARCHITECTURE

    @override
    def get_inference_config_class(self) -> type[SAEConfig]:
        return TopKSAEConfig


class SparseTopKTrainingSAE(SparseTopKTraining, TopKTrainingSAE):
    """SAELens's TopK training SAE with the sparse training step; its checkpoints are `topk` SAEs.

    >>> sae = SparseTopKTrainingSAE(SparseTopKTrainingSAEConfig(d_in=8, d_sae=64, k=2))
    >>> out = sae.training_forward_pass(TrainStepInput(torch.randn(3, 8), {}, None, 0, False))
    >>> out.feature_acts.is_sparse, out.sae_out.shape
    (True, torch.Size([3, 8]))
    """

    cfg: SparseTopKTrainingSAEConfig  # type: ignore[assignment]
