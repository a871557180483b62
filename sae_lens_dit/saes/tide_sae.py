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

The training seam. `SAETrainer` pulls bare activation tensors from its data provider
(`Iterator[Tensor]`) and calls `sae.training_forward_pass` with them; nothing else reaches the
SAE. `feed_timesteps(pairs, sae)` therefore wraps the (activations [B, d_in], timesteps [B]) pairs
a harvest yields: for each pair it hands the timesteps to the SAE (`receive_batch_timesteps`),
then yields the activations to the trainer. The timesteps travel beside the batch, never inside
it, so the trainer, its activation scaler and the metrics it logs (explained variance, L0) see the
real activations only. The SAE takes the handed timesteps once, in the training step that follows
the pull, and checks their count against the batch; pulls with no step between them
(`ActivationScaler.estimate_scaling_factor`, an evaluator) only overwrite them, so a step always
uses the timesteps of the batch it was given. SAEs without `receive_batch_timesteps` (the SAELens
baselines) ignore the timesteps and train on the same activations.

>>> pairs = iter([(torch.randn(4, 8), torch.full((4,), 999.0))])
>>> [tuple(batch.shape) for batch in feed_timesteps(pairs, sae=None)]
[(4, 8)]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from sae_lens.saes.sae import SAE, TrainStepInput, TrainStepOutput
from sae_lens.saes.topk_sae import (
    TopKSAE,
    TopKSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
    act_times_W_dec,
    calculate_topk_aux_acts,
)
from torch import nn
from typing_extensions import override

from sae_lens_dit.conventions import TIDE_ARCHITECTURE, TIMESTEP_CONVENTION, TIMESTEP_MAX  # noqa: F401 (re-exported)
from sae_lens_dit.saes.loading import check_state_dict
from sae_lens_dit.saes.sparse_topk import SparseDecodeFields, SparseTopKTraining
from sae_lens_dit.saes.timestep_mlp import (
    NO_TERMS,
    TERMS,
    TimestepLike,
    TimestepMLP,
    TimestepTerms,
    as_timestep,
)

logger = logging.getLogger(__name__)

_TERMS_TAG = "_tide_timestep_terms"  # attribute `encode` sets on the codes it returns


@dataclass(kw_only=True)
class TideFields:
    """Settings of the timestep MLP, shared by the inference and the training config.

    "Measured" below: fraction of variance unexplained (FVU, held out, mean of 3 seeds) on
    synthetic timestep-modulated activations with a known dictionary, d_in 32, d_sae 128, k 3,
    300k rows through SAETrainer; SAELens TopK gets 0.180 there, TIDE with the defaults 0.041
    (`benchmarks/tide_options_synthetic.py`, `benchmarks/results/tide_options_synthetic.md`).
    To be re-measured on real DiT activations.
    """

    timestep_embed_dim: int = 256
    """Width of the sinusoidal timestep embedding (DiT's `Timesteps(256, flip_sin_to_cos=True,
    downscale_freq_shift=1)` convention); 256, DiT's own width, is what `init_from_dit_block`
    needs. Measured: 64, 256, 1024 equal within noise (FVU 0.039, 0.041, 0.040)."""

    timestep_hidden_dim: int = 256
    """Width of the timestep MLP's two hidden layers (for `init_from_dit_block`: the DiT's width).
    Measured: 64, 256, 1024 about equal (FVU 0.045, 0.041, 0.039). It costs per distinct timestep
    in a batch, not per row."""

    timestep_scale: bool = True
    """Multiply the centred input by `1 + scale(t)` before encoding. Measured: alone 0.125 (TopK
    0.180); with shift (the paper's input modulation) 0.123; dropping it from the default set
    0.057 instead of 0.041."""

    timestep_shift: bool = True
    """Add `shift(t)` to the input before encoding. Measured: alone no gain (0.189); it pays with
    the other two terms (0.041 with, 0.057 for decoder_bias alone)."""

    timestep_decoder_bias: bool = True
    """Add `decoder_bias(t)` to the reconstruction: our addition, the paper leaves the decoder open.
    Measured: the largest single term (alone 0.057; input modulation without it 0.123); at k 2 the
    defaults reach 0.130 against TopK's 0.289 and the paper's input modulation's 0.238."""


def _validate_tide_fields(cfg: TideSAEConfig | TideTrainingSAEConfig) -> None:
    problems = []
    if cfg.timestep_embed_dim < 4 or cfg.timestep_embed_dim % 2:
        problems.append(f"timestep_embed_dim must be even and >= 4, got {cfg.timestep_embed_dim}")
    if cfg.timestep_hidden_dim < 1:
        problems.append(f"timestep_hidden_dim must be >= 1, got {cfg.timestep_hidden_dim}")
    if not 1 <= cfg.k <= cfg.d_sae:
        problems.append(f"k must be in [1, d_sae={cfg.d_sae}], got {cfg.k}")
    if cfg.normalize_activations == "covariance_whitening":
        problems.append(
            "normalize_activations='covariance_whitening' cannot be folded into a timestep-modulated "
            "SAE (the per-dimension scale acts in whitened space); use 'expected_average_only_in' "
            "or 'none'"
        )
    if problems:
        raise ValueError(f"{type(cfg).__name__}: " + "; ".join(problems))


@dataclass(kw_only=True)
class TideSAEConfig(TopKSAEConfig, TideFields):
    """Configuration of an inference `TideSAE`, as read from `cfg.json`.

    Every setting that changes the SAE's outputs is required here (no default), so a `cfg.json`
    missing one fails to load instead of loading a different SAE. The timestep MLP's settings keep
    their defaults: a mismatch with the weights file is caught when the weights load.
    Field meanings: see `TopKSAEConfig` and `TideFields`.
    """

    # `field()`: no default (a bare annotation would inherit the parent's default)
    k: int = field()
    rescale_acts_by_decoder_norm: bool = field()
    apply_b_dec_to_input: bool = field()
    normalize_activations: str = field()  # values: see SAEConfig, which checks them

    def __post_init__(self) -> None:
        super().__post_init__()
        _validate_tide_fields(self)

    @override
    @classmethod
    def architecture(cls) -> str:
        return TIDE_ARCHITECTURE


@dataclass(kw_only=True)
class TideTrainingSAEConfig(TopKTrainingSAEConfig, TideFields, SparseDecodeFields):
    """Configuration for training a `TideTrainingSAE`.

    Inherits `k`, `rescale_acts_by_decoder_norm` (default True) and `decoder_init_norm` from
    `TopKTrainingSAEConfig`, with SAELens TopK's defaults; `aux_loss_coefficient` defaults to 1/32
    instead of 1.0 (measured, see the field); the timestep MLP's settings from
    `TideFields`; `sparse_decode` (training speed only) from `SparseDecodeFields`. Measured on the
    synthetic data of `TideFields`: rescale_acts_by_decoder_norm=False gives FVU 0.032 instead of
    0.041 for TIDE (TopK: 0.165 instead of 0.180); it stays True, as in SAELens, until real DiT
    activations say otherwise (it also keeps `fold_W_dec_norm` available).
    """

    k_aux: int | None = None
    """Number of dead latents the AuxK loss (Gao et al. 2024) lets reconstruct the residual.
    None: d_in // 2, the paper's heuristic and SAELens TopK's fixed value."""

    aux_loss_coefficient: float = 1 / 32
    """Weight of the AuxK loss: Gao et al. 2024's 1/32 (SAELens TopK uses 1.0). Measured with the runner's
    recipe on the bundled digits DiT's block 1 (d_sae 1536, k 16, lr 1e-3, 2M rows): 2.5% of latents dead at
    1/32, 5.3% at 1.0 and 41% at 4.0, where revived latents keep pushing live ones out
    (`benchmarks/results/recipe_sweep_digits.md`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _validate_tide_fields(self)
        if self.k_aux is not None and self.k_aux < 1:
            raise ValueError(f"TideTrainingSAEConfig: k_aux must be None or >= 1, got {self.k_aux}")
        if self.normalize_activations in ("constant_norm_rescale", "layer_norm"):
            raise ValueError(
                f"TideTrainingSAEConfig: normalize_activations={self.normalize_activations!r} would put "
                f"the AuxK loss's reconstruction and residual in different spaces (SAELens TopK refuses it "
                f"too); use 'expected_average_only_in' or 'none'"
            )

    @override
    @classmethod
    def architecture(cls) -> str:
        return TIDE_ARCHITECTURE


def _missing_timestep(method: str) -> ValueError:
    return ValueError(
        f"TIDE SAE .{method}() needs the denoising timestep (float on the DDPM training scale "
        f"[0, {TIMESTEP_MAX:g}], {TIMESTEP_MAX:g} = pure noise) and none was given: pass "
        f"timestep=t, or wrap the call in `with sae.at_timestep(t):` (for SAELens code that calls "
        f"sae(x)); HookedDiT.saes() does this for you."
    )


def _tide_encoder_input(sae: Any, x: torch.Tensor, gain: Any, shift: Any) -> torch.Tensor:
    """The modulated input the encoder matmul consumes. x [..., d_in] -> [..., d_in]."""
    sae_in = sae.process_sae_in(x)
    if gain is not None and shift is not None:
        return torch.addcmul(shift, sae_in, gain)
    if gain is not None:
        return sae_in * gain
    if shift is not None:
        return sae_in + shift
    return sae_in


def _tide_hidden_pre(sae: Any, x: torch.Tensor, gain: Any, shift: Any) -> torch.Tensor:
    """TopK pre-activations of the modulated input. x [..., d_in] -> [..., d_sae]."""
    hidden_pre = sae.hook_sae_acts_pre(_tide_encoder_input(sae, x, gain, shift) @ sae.W_enc + sae.b_enc)
    if sae.cfg.rescale_acts_by_decoder_norm:
        hidden_pre = hidden_pre * sae.W_dec.norm(dim=-1)
    return hidden_pre


def _tide_decode(sae: Any, feature_acts: torch.Tensor, decoder_bias: Any) -> torch.Tensor:
    """Reconstruction from codes. [..., d_sae] -> [..., d_in]."""
    sae_out = act_times_W_dec(feature_acts, sae.W_dec, sae.cfg.rescale_acts_by_decoder_norm) + sae.b_dec
    if decoder_bias is not None:
        sae_out = sae_out + decoder_bias
    sae_out = sae.hook_sae_recons(sae_out)
    sae_out = sae.run_time_activation_norm_fn_out(sae_out)
    return sae.reshape_fn_out(sae_out, sae.d_head)


class _TimestepConditioned(SAE[Any]):
    """What `TideSAE` and `TideTrainingSAE` share; it precedes the TopK class in their MRO, so its
    overrides wrap the TopK behaviour through `super()`."""

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
        )

    @contextmanager
    def at_timestep(self, timestep: TimestepLike) -> Iterator[None]:
        """Use `timestep` for calls that pass none (`sae(x)`, `sae.encode(x)`), e.g. from SAELens code.

        Nests; the previous timestep is restored on exit.

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
        `timestep_decoder_bias` (see the module docstring for where it comes from)."""
        return _tide_decode(self, feature_acts, self._decoder_bias(feature_acts, timestep))

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


class TideSAE(_TimestepConditioned, TopKSAE):
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
        hidden_pre = _tide_hidden_pre(self, x, terms.gain, terms.shift)
        return self._tag_codes(self.hook_sae_acts_post(self.activation_fn(hidden_pre)), terms)


class TideTrainingSAE(_TimestepConditioned, SparseTopKTraining, TopKTrainingSAE):
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
        timesteps, self._batch_timesteps = self._batch_timesteps, None
        n_rows = step_input.sae_in.shape[0]
        if timesteps is None:
            raise ValueError(
                "TideTrainingSAE.training_forward_pass: no timesteps were handed for this batch. "
                "Build the trainer's data provider with feed_timesteps(pairs, sae) "
                "(sae_lens_dit.saes), which hands each batch's timesteps to the SAE."
            )
        if timesteps.shape[0] != n_rows:
            raise ValueError(
                f"TideTrainingSAE.training_forward_pass: {timesteps.shape[0]} timesteps were handed "
                f"for a batch of {n_rows} rows; feed_timesteps must yield (activations [B, d_in], "
                f"timesteps [B]) pairs and nothing else may pull from the data provider in between"
            )
        with self._terms_once(step_input.sae_in, timesteps.to(step_input.sae_in.device)):
            return super().training_forward_pass(step_input)

    @override
    def _sparse_encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        terms = self._encode_terms(x, None)
        return _tide_encoder_input(self, x, terms.gain, terms.shift)

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
        hidden_pre = _tide_hidden_pre(self, x, terms.gain, terms.shift)
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


def auxk_loss(
    sae_in: torch.Tensor,
    sae_out: torch.Tensor,
    hidden_pre: torch.Tensor,
    dead_neuron_mask: torch.Tensor | None,
    W_dec: torch.Tensor,
    k_aux: int,
    rescale_acts_by_decoder_norm: bool,
) -> torch.Tensor:
    """AuxK loss (Gao et al. 2024, appendix A.2): the top `k_aux` dead latents reconstruct the residual.

    Scaled by min(n_dead / k_aux, 1) so a handful of dead latents barely counts. sae_in, sae_out
    [batch, d_in]; hidden_pre [batch, d_sae]; dead_neuron_mask [d_sae] bool.
    """
    if dead_neuron_mask is None or (n_dead := int(dead_neuron_mask.sum())) == 0:
        return sae_out.new_tensor(0.0)
    residual = (sae_in - sae_out).detach()
    auxk_acts = calculate_topk_aux_acts(min(k_aux, n_dead), hidden_pre, dead_neuron_mask)
    recons = act_times_W_dec(auxk_acts, W_dec, rescale_acts_by_decoder_norm)  # no bias: it is in the residual
    return min(n_dead / k_aux, 1.0) * (recons - residual).pow(2).sum(dim=-1).mean()


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
