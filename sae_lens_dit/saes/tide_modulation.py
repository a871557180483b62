"""The timestep modulation both TIDE SAEs share: where the timestep comes from, and how it enters.

Why a module of its own: the inference SAE (`tide_sae.TideSAE`) and the training SAE
(`tide_training.TideTrainingSAE`) sit on different SAELens TopK classes but modulate their input
and decoder identically. `TimestepModulatedSAE` is that shared part; it precedes the TopK class in
both MROs. The equations and the order in which a timestep is looked for (argument, enclosing
forward, the codes' own terms, `at_timestep`) are in the `sae_lens_dit.saes.tide_sae` docstring.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from sae_lens.saes.sae import SAE
from sae_lens.saes.topk_sae import act_times_W_dec
from torch import nn
from typing_extensions import override

from sae_lens_dit.conventions import TIMESTEP_MAX
from sae_lens_dit.saes.loading import check_state_dict
from sae_lens_dit.saes.tide_config import TideSAEConfig, TideTrainingSAEConfig
from sae_lens_dit.saes.timestep_mlp import NO_TERMS, TERMS, TimestepLike, TimestepMLP, TimestepTerms, as_timestep

logger = logging.getLogger(__name__)

_TERMS_TAG = "_tide_timestep_terms"  # attribute `encode` sets on the codes it returns


def _missing_timestep(method: str) -> ValueError:
    return ValueError(
        f"TIDE SAE .{method}() needs the denoising timestep (float on the DDPM training scale "
        f"[0, {TIMESTEP_MAX:g}], {TIMESTEP_MAX:g} = pure noise) and none was given: pass "
        f"timestep=t, or wrap the call in `with sae.at_timestep(t):` (for SAELens code that calls "
        f"sae(x)); HookedDiT.saes() does this for you."
    )


class TimestepModulatedSAE(SAE[Any]):
    """What `TideSAE` and `TideTrainingSAE` share; it precedes the TopK class in their MRO, so its
    overrides wrap the TopK behaviour through `super()`. It satisfies
    `sae_lens_dit.conventions.TimestepConditioned` (`at_timestep`)."""

    cfg: TideSAEConfig | TideTrainingSAEConfig  # type: ignore[assignment]
    timestep_mlp: TimestepMLP
    _context_timestep: torch.Tensor | None = None
    _scoped_terms: TimestepTerms | None = None  # set by _terms_once for one forward pass
    _scoped_shape: torch.Size | None = None

    @override
    def initialize_weights(self) -> None:
        super().initialize_weights()
        cfg = self.cfg
        terms = (cfg.timestep_scale, cfg.timestep_shift, cfg.timestep_decoder_bias)
        self.timestep_mlp = TimestepMLP(
            d_in=cfg.d_in,
            embed_dim=cfg.timestep_embed_dim,
            hidden_dim=cfg.timestep_hidden_dim,
            terms=tuple(term for term, on in zip(TERMS, terms, strict=True) if on),
            dtype=self.dtype,
            device=self.device,
            d_out=self._output_width(),
        )

    def _output_width(self) -> int:
        """Width of the reconstruction and of decoder_bias(t): d_in (a transcoder overrides it with d_out)."""
        return self.cfg.d_in

    @contextmanager
    def at_timestep(self, timestep: TimestepLike) -> Iterator[None]:
        """Use `timestep` for calls that pass none (`sae(x)`, `sae.encode(x)`), e.g. from SAELens code.

        Nests; the previous timestep is restored on exit.

        >>> from sae_lens_dit.saes.tide_sae import TideSAE, TideSAEConfig
        >>> sae = TideSAE(TideSAEConfig(d_in=8, d_sae=16, k=2, rescale_acts_by_decoder_norm=False,
        ...     apply_b_dec_to_input=True, normalize_activations="none"))
        >>> with sae.at_timestep(500.0):
        ...     x_hat = sae(torch.randn(3, 8))
        >>> x_hat.shape
        torch.Size([3, 8])
        """
        previous, self._context_timestep = self._context_timestep, as_timestep(timestep)
        try:
            yield
        finally:
            self._context_timestep = previous

    @override
    def decode(self, feature_acts: torch.Tensor, timestep: TimestepLike | None = None) -> torch.Tensor:
        """Codes [..., d_sae] -> reconstruction [..., d_in]; `timestep` only matters with
        `timestep_decoder_bias` (see `sae_lens_dit.saes.tide_sae` for where it comes from)."""
        decoder_bias = self._decoder_bias(feature_acts, timestep)
        sae_out = act_times_W_dec(feature_acts, self.W_dec, self.cfg.rescale_acts_by_decoder_norm) + self.b_dec
        if decoder_bias is not None:
            sae_out = sae_out + decoder_bias
        sae_out = self.hook_sae_recons(sae_out)
        sae_out = self.run_time_activation_norm_fn_out(sae_out)
        return self.reshape_fn_out(sae_out, self.d_head)

    @override
    def forward(self, x: torch.Tensor, timestep: TimestepLike | None = None) -> torch.Tensor:
        """Reconstruction of x [..., d_in] at `timestep` (plus the error term if `use_error_term`)."""
        with self._terms_once(x, timestep):
            return super().forward(x)

    @override
    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        """Fold the trainer's input scaling c: as SAELens, plus shift and decoder_bias divided by c."""
        super().fold_activation_norm_scaling_factor(scaling_factor)
        self.timestep_mlp.scale_additive_terms(1 / scaling_factor)

    @override
    def fold_activation_whitening(
        self, mean: torch.Tensor, whitening_matrix: torch.Tensor, unwhitening_matrix: torch.Tensor
    ) -> None:
        raise NotImplementedError(
            "TIDE SAEs cannot fold covariance whitening (the timestep scale acts per dimension in "
            "whitened space); use normalize_activations='expected_average_only_in' or 'none'"
        )

    @override
    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        super().process_state_dict_for_loading(state_dict)
        check_state_dict(self, state_dict)

    def _encoder_input(self, x: torch.Tensor, terms: TimestepTerms) -> torch.Tensor:
        """The modulated input the encoder matmul consumes. x [..., d_in] -> [..., d_in]."""
        sae_in = self.process_sae_in(x)
        gain, shift = terms.gain, terms.shift
        if gain is not None and shift is not None:
            return torch.addcmul(shift, sae_in, gain)
        if gain is not None:
            return sae_in * gain
        if shift is not None:
            return sae_in + shift
        return sae_in

    def _modulated_hidden_pre(self, x: torch.Tensor, terms: TimestepTerms) -> torch.Tensor:
        """TopK pre-activations of the modulated input. x [..., d_in] -> [..., d_sae]."""
        hidden_pre = self.hook_sae_acts_pre(self._encoder_input(x, terms) @ self.W_enc + self.b_enc)
        if self.cfg.rescale_acts_by_decoder_norm:
            hidden_pre = hidden_pre * self.W_dec.norm(dim=-1)
        return hidden_pre

    def _resolve_terms(
        self, lead_shape: torch.Size, timestep: TimestepLike | None, codes: Any = None
    ) -> TimestepTerms | None:
        """Terms from, in order: `timestep`; the enclosing forward pass; the terms `codes` were
        encoded with; the `at_timestep` context. None if none of them is there."""
        if timestep is not None:
            return self.timestep_mlp.terms(as_timestep(timestep), lead_shape)
        if self._scoped_terms is not None and self._scoped_shape == lead_shape:
            return self._scoped_terms
        tagged = getattr(codes, _TERMS_TAG, None)
        if tagged is not None:
            return tagged
        if self._context_timestep is not None:
            return self.timestep_mlp.terms(self._context_timestep, lead_shape)
        return None

    def _encode_terms(self, x: torch.Tensor, timestep: TimestepLike | None) -> TimestepTerms:
        terms = self._resolve_terms(x.shape[:-1], timestep)
        if terms is not None:
            return terms
        if self.cfg.timestep_scale or self.cfg.timestep_shift:
            raise _missing_timestep("encode")
        return NO_TERMS

    def _decoder_bias(self, feature_acts: torch.Tensor, timestep: TimestepLike | None) -> Any:
        if not self.cfg.timestep_decoder_bias:
            return None
        terms = self._resolve_terms(feature_acts.shape[:-1], timestep, feature_acts)
        if terms is None:
            raise _missing_timestep("decode")
        return terms.decoder_bias

    @contextmanager
    def _terms_once(self, x: torch.Tensor, timestep: TimestepLike | None) -> Iterator[None]:
        """Within one forward pass, encode and decode share one evaluation of the timestep MLP."""
        t = as_timestep(timestep) if timestep is not None else self._context_timestep
        if t is None:  # encode / decode raise if they need a timestep
            yield
            return
        previous = self._scoped_terms, self._scoped_shape, self._context_timestep
        self._scoped_terms = self.timestep_mlp.terms(t, x.shape[:-1])
        self._scoped_shape, self._context_timestep = x.shape[:-1], t
        try:
            yield
        finally:
            self._scoped_terms, self._scoped_shape, self._context_timestep = previous

    @staticmethod
    def _tag_codes(feature_acts: torch.Tensor, terms: TimestepTerms) -> torch.Tensor:
        """Attach the terms to the codes, so that `decode(encode(x, timestep=t))` needs no second t."""
        if terms is not NO_TERMS:
            setattr(feature_acts, _TERMS_TAG, terms)
        return feature_acts

    @torch.no_grad()
    def init_from_dit_block(self, transformer_or_block: nn.Module, block_index: int = 0) -> None:
        """Copy a DiT block's timestep embedder into `linear_1`/`linear_2` (the paper's init).

        Accepts a `DiTTransformer2DModel` (uses `transformer_blocks[block_index]`) or one of its
        `BasicTransformerBlock`s with ada_norm_zero, whose `norm1.emb.timestep_embedder` is copied.
        The heads stay at zero, so the SAE still starts as a plain TopK SAE.
        """
        block = transformer_or_block
        if hasattr(block, "transformer_blocks"):
            block = block.transformer_blocks[block_index]  # type: ignore[index]
        emb = getattr(getattr(block, "norm1", None), "emb", None)
        if emb is None or not hasattr(emb, "timestep_embedder") or not hasattr(emb, "time_proj"):
            raise ValueError(
                f"init_from_dit_block: expected a DiT transformer or block with "
                f"`norm1.emb.timestep_embedder` (ada_norm_zero), got {type(block).__name__} without "
                f"it; pass a DiTTransformer2DModel or one of its transformer_blocks"
            )
        proj, embedder = emb.time_proj, emb.timestep_embedder
        convention = (proj.num_channels, proj.flip_sin_to_cos, proj.downscale_freq_shift, proj.scale)
        ours = (self.cfg.timestep_embed_dim, True, 1, 1)
        if convention != ours:
            raise ValueError(
                f"init_from_dit_block: the block embeds timesteps as (width, flip_sin_to_cos, "
                f"downscale_freq_shift, scale)={convention}, this SAE as {ours}; set "
                f"timestep_embed_dim={proj.num_channels} (other conventions are not supported)"
            )
        if embedder.linear_1.out_features != self.cfg.timestep_hidden_dim:
            raise ValueError(
                f"init_from_dit_block: the block's timestep embedder is {embedder.linear_1.out_features} "
                f"wide, this SAE's timestep MLP {self.cfg.timestep_hidden_dim}; set "
                f"timestep_hidden_dim={embedder.linear_1.out_features}"
            )
        for name in ("linear_1", "linear_2"):
            ours_layer, theirs = getattr(self.timestep_mlp, name), getattr(embedder, name)
            ours_layer.weight.copy_(theirs.weight)
            ours_layer.bias.copy_(theirs.bias)
        logger.info("TIDE timestep MLP initialised from %s", type(block).__name__)
