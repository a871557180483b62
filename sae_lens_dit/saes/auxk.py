"""The AuxK dead-latent loss (Gao et al. 2024, appendix A.2), shared by this package's TopK training SAEs.

Why one module: TIDE's dense training step (`tide_training`) and the sparse TopK step
(`sparse_topk`) compute the same loss from differently built reconstructions, and both configs
must refuse the activation normalisations under which that loss compares two different spaces.
Writing the scaling and the check once keeps the two paths equal by construction.

The loss: the top `k_aux` dead latents (by pre-activation) reconstruct the main reconstruction's
residual, without the decoder bias (it is in the residual already), scaled by
min(n_dead / k_aux, 1) so that a handful of dead latents barely counts.

>>> residual, recons = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
>>> float(scaled_residual_loss(recons, residual, n_dead=2, k_aux=4))  # 2 of 4 dead: half of |r|^2
0.5
"""

from __future__ import annotations

from typing import Any

import torch
from sae_lens.saes.topk_sae import act_times_W_dec, calculate_topk_aux_acts

_AUXK_BREAKING_NORMALIZATIONS = ("constant_norm_rescale", "layer_norm")
"""SAELens `normalize_activations` values that put the AuxK reconstruction and the residual in different spaces."""


def scaled_residual_loss(recons: torch.Tensor, residual: torch.Tensor, n_dead: int, k_aux: int) -> torch.Tensor:
    """min(n_dead / k_aux, 1) * mean over rows of |recons - residual|^2. recons, residual [batch, d_in]."""
    return min(n_dead / k_aux, 1.0) * (recons - residual).pow(2).sum(dim=-1).mean()


def auxk_loss(
    sae_in: torch.Tensor,
    sae_out: torch.Tensor,
    hidden_pre: torch.Tensor,
    dead_neuron_mask: torch.Tensor | None,
    W_dec: torch.Tensor,
    k_aux: int,
    rescale_acts_by_decoder_norm: bool,
) -> torch.Tensor:
    """AuxK loss from dense pre-activations: the top `k_aux` dead latents reconstruct the residual.

    sae_in, sae_out [batch, d_in]; hidden_pre [batch, d_sae]; dead_neuron_mask [d_sae] bool.
    """
    if dead_neuron_mask is None or (n_dead := int(dead_neuron_mask.sum())) == 0:
        return sae_out.new_tensor(0.0)
    residual = (sae_in - sae_out).detach()
    auxk_acts = calculate_topk_aux_acts(min(k_aux, n_dead), hidden_pre, dead_neuron_mask)
    recons = act_times_W_dec(auxk_acts, W_dec, rescale_acts_by_decoder_norm)  # no bias: it is in the residual
    return scaled_residual_loss(recons, residual, n_dead, k_aux)


def check_auxk_normalization(cfg: Any) -> None:
    """Refuse a training config whose `normalize_activations` would break the AuxK loss (as SAELens TopK does)."""
    if cfg.normalize_activations in _AUXK_BREAKING_NORMALIZATIONS:
        raise ValueError(
            f"{type(cfg).__name__}: normalize_activations={cfg.normalize_activations!r} would put "
            f"the AuxK loss's reconstruction and residual in different spaces (SAELens TopK refuses it "
            f"too); use 'expected_average_only_in' or 'none'"
        )
