"""TIDE: a TopK sparse autoencoder whose input is modulated by the denoising timestep.

TIDE (arXiv 2503.07050) reads one hook of a diffusion transformer at every denoising step. The
same concept looks different at t=999 (almost pure noise) and at t=50, so TIDE modulates the
SAE input adaLN-style before the TopK encoder::

    x_mod = (x - b_dec) * (1 + scale(t)) + shift(t)
    z     = TopK(x_mod @ W_enc + b_enc)
    x_hat = z @ W_dec + b_dec + decoder_bias(t)

`scale`, `shift` and `decoder_bias` are heads of a small MLP over a sinusoidal timestep embedding
(DiT's convention), each optional. The heads start at zero, so a fresh TIDE SAE is exactly a
SAELens TopK SAE with the same weights. The paper leaves the decoder open; `decoder_bias(t)` is
our addition and measured best (see `TideFields`).

Timestep convention (shared with `HookedDiT`): a float on the DDPM training scale [0, 1000],
1000 = pure noise. A timestep is one number (or 0-d tensor) for the whole input, or a tensor whose
shape is a prefix of the input's leading dims ([batch] for x [batch, tokens, d_in], [rows] for
x [rows, d_in]). The MLP runs once per distinct timestep value, which keeps it cheap: batches hold
few distinct timesteps.

Where the timestep comes from, in order: the `timestep=` argument; inside `forward`, the forward's
own (encode and decode share one MLP evaluation); for `decode`, the terms `encode` attached to the
very tensor it returned (so `decode(encode(x, timestep=t))` works, in-place edits of the codes
included; a new tensor built from them carries none); the `at_timestep(t)` context, so SAELens
code that calls `sae(x)` or `sae.encode(x)` works. No timestep where one is needed is an error,
never a default.

Where the parts live: settings in `tide_config` (`TideFields`, `TideSAEConfig`,
`TideTrainingSAEConfig`), the modulation both SAEs share in `tide_modulation`, the training SAE in
`tide_training`, the training seam (`feed_timesteps`: timesteps travel beside each batch to the
SAE, never inside it) in `timestep_feed`, the AuxK loss in `auxk`. This module holds the inference
`TideSAE` and answers every one of those names, as it always has.
"""

from __future__ import annotations

import torch
from sae_lens.saes.topk_sae import TopKSAE
from typing_extensions import override

from sae_lens_dit.conventions import TIDE_ARCHITECTURE, TIMESTEP_CONVENTION, TIMESTEP_MAX
from sae_lens_dit.saes.auxk import auxk_loss
from sae_lens_dit.saes.tide_config import TideFields, TideSAEConfig, TideTrainingSAEConfig
from sae_lens_dit.saes.tide_modulation import TimestepModulatedSAE
from sae_lens_dit.saes.tide_training import TideTrainingSAE
from sae_lens_dit.saes.timestep_feed import BatchTimestepReceiver, feed_timesteps
from sae_lens_dit.saes.timestep_mlp import TimestepLike

__all__ = [  # the names this module answered before the split, kept importable from here
    "TIDE_ARCHITECTURE",
    "TIMESTEP_CONVENTION",
    "TIMESTEP_MAX",
    "BatchTimestepReceiver",
    "TideFields",
    "TideSAE",
    "TideSAEConfig",
    "TideTrainingSAE",
    "TideTrainingSAEConfig",
    "auxk_loss",
    "feed_timesteps",
]


class TideSAE(TimestepModulatedSAE, TopKSAE):
    """Inference TIDE SAE: timestep-modulated input, TopK codes, linear decoder (+ decoder_bias(t)).

    >>> cfg = TideSAEConfig(d_in=8, d_sae=32, k=4, rescale_acts_by_decoder_norm=False,
    ...     apply_b_dec_to_input=True, normalize_activations="none")
    >>> sae = TideSAE(cfg)
    >>> x, t = torch.randn(2, 5, 8), torch.tensor([999.0, 10.0])  # t per image, 5 tokens each
    >>> z = sae.encode(x, timestep=t)
    >>> x_hat = sae.decode(z)  # reuses the timestep z was encoded at
    >>> bool((z > 0).sum(-1).le(4).all()), x_hat.shape
    (True, torch.Size([2, 5, 8]))
    """

    cfg: TideSAEConfig  # type: ignore[assignment]

    @override
    def encode(self, x: torch.Tensor, timestep: TimestepLike | None = None) -> torch.Tensor:
        """[..., d_in] -> TopK codes [..., d_sae] at `timestep` (see the module docstring)."""
        terms = self._encode_terms(x, timestep)
        hidden_pre = self._modulated_hidden_pre(x, terms)
        return self._tag_codes(self.hook_sae_acts_post(self.activation_fn(hidden_pre)), terms)
