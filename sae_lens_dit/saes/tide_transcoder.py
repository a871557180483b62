"""TIDE transcoders: a timestep-modulated TopK dictionary that reads an MLP's input and writes its output.

Why. An SAE reconstructs one activation; a transcoder *replaces* a sublayer: it encodes the MLP's
input and decodes to the MLP's output, so its latents are a sparse, readable stand-in for the MLP
that circuit analysis can follow. In a diffusion transformer the MLP input looks different at every
denoising step, so the encoder gets TIDE's timestep modulation (`tide_modulation`, shared with the
TIDE SAE, not copied)::

    x_mod = x * (1 + scale(t)) + shift(t)                          x: MLP input [..., d_in]
    z     = TopK(x_mod @ W_enc + b_enc)                            [..., d_sae]
    y_hat = z @ W_dec + b_dec + decoder_bias(t) (+ x @ W_skip(t).T) MLP output [..., d_out]

There is no input centring by b_dec (it lives in the output space; SAELens's transcoders refuse
`apply_b_dec_to_input` too). `skip=True` (the training default) adds SAELens's `SkipTranscoder`
connection `W_skip` [d_out, d_in], zero-initialised. With `skip_timestep_knots=n` the skip itself
depends on the timestep: `W_skip(t) = W_skip + skip_knots_scale * sum_j hat_j(t) W_skip_knots[j]`,
where the hats interpolate linearly between n knots evenly spaced over [0, 1000]
(`skip_knot_weights`). Why: one affine map already explains 0.81-0.96 of a bundled MLP's output,
and one per timestep bucket 0.003-0.033 more (`benchmarks/results/linear_mlp.md`); the latents
need not spend themselves on that part. The timestep heads and knots start at zero, so a fresh TIDE
transcoder is a plain TopK transcoder. Timesteps reach it as they reach TIDE SAEs: `timestep=`,
`at_timestep(t)` (`conventions.TimestepConditioned`), or `HookedDiT.saes()`, which passes each
row's timestep.

Hooks, following SAELens's transcoder convention (`HookedSAETransformer.add_sae`):
`cfg.metadata.hook_name` is the *input* hook (`blocks.{i}.mlp.hook_in`) and
`cfg.metadata.hook_name_out` the output hook (`blocks.{i}.mlp.hook_out`).

Training. `SAETrainer` hands the SAE one tensor per batch and scores `TrainStepOutput.sae_in`
against `sae_out`; a transcoder needs the MLP's input and output. So training rows are the two side
by side, `transcoder_rows(inputs, outputs)` = [batch, d_in + d_out] (timesteps beside them through
`feed_timesteps`, as for TIDE). `training_forward_pass` splits them and reports the MLP output as
`sae_in`, so the trainer's explained variance is the MLP output's. One activation-norm factor scales
both halves, and folding it afterwards is exact (W_skip is unchanged by it). The loss is the MSE to
the MLP output plus the AuxK loss (`auxk`) on that residual. The dense training step only.

>>> cfg = TideTranscoderConfig(d_in=8, d_out=6, d_sae=32, k=4, skip=True, rescale_acts_by_decoder_norm=False,
...     normalize_activations="none")
>>> tc = TideTranscoder(cfg)
>>> tc(torch.randn(2, 5, 8), timestep=torch.tensor([999.0, 10.0])).shape
torch.Size([2, 5, 6])
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from sae_lens.saes.sae import SAE, TrainStepInput, TrainStepOutput
from sae_lens.saes.topk_sae import TopKSAEConfig
from torch import nn
from typing_extensions import override

from sae_lens_dit.conventions import TIDE_TRANSCODER_ARCHITECTURE, TIMESTEP_MAX
from sae_lens_dit.saes.sparse_topk import SparseTopKTraining
from sae_lens_dit.saes.tide_config import TideFields, TideTrainingSAEConfig, _validate_tide_fields
from sae_lens_dit.saes.tide_modulation import _missing_timestep
from sae_lens_dit.saes.tide_sae import TideSAE
from sae_lens_dit.saes.tide_training import TideTrainingSAE
from sae_lens_dit.saes.timestep_mlp import TimestepLike, as_timestep, check_timestep_range, check_timestep_shape


def transcoder_rows(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Training rows of a transcoder: MLP inputs [B, d_in] and outputs [B, d_out] -> [B, d_in + d_out]."""
    if inputs.shape[:-1] != outputs.shape[:-1]:
        raise ValueError(
            f"transcoder_rows: inputs {tuple(inputs.shape)} and outputs {tuple(outputs.shape)} must have the "
            f"same rows (one MLP input and its output per row)"
        )
    return torch.cat([inputs, outputs], dim=-1)


DEFAULT_SKIP_KNOTS = 5
"""Knots of a training transcoder's skip when `skip_timestep_knots` is not given and the skip is on."""


def skip_knot_weights(timestep: torch.Tensor, knots: int) -> torch.Tensor:
    """Linear-interpolation weights of `knots` knots evenly spaced over [0, 1000] at each timestep: [*t.shape, knots],
    at most two non-zero per timestep, summing to 1.

    >>> skip_knot_weights(torch.tensor([0.0, 250.0, 1000.0]), 3).tolist()
    [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
    """
    position = (timestep.float() / TIMESTEP_MAX).clamp(0, 1) * (knots - 1)
    low = position.floor().clamp(max=knots - 2)
    upper = position - low  # weight of the knot above
    grid = torch.arange(knots, device=timestep.device, dtype=position.dtype)
    return (1 - upper)[..., None] * (grid == low[..., None]) + upper[..., None] * (grid == low[..., None] + 1)


def _validate_transcoder(cfg: TideTranscoderConfig | TideTrainingTranscoderConfig) -> None:
    problems = []
    if cfg.d_out < 1:
        problems.append(f"d_out must be >= 1, got {cfg.d_out}")
    if cfg.apply_b_dec_to_input:
        problems.append("apply_b_dec_to_input must be False (b_dec lives in the output space)")
    if cfg.normalize_activations not in ("none", "expected_average_only_in"):
        problems.append(
            f"normalize_activations must be 'none' or 'expected_average_only_in' for a transcoder, got "
            f"{cfg.normalize_activations!r} (the others normalise the output by the input's statistics)"
        )
    if cfg.reshape_activations != "none":
        problems.append(f"reshape_activations must be 'none', got {cfg.reshape_activations!r}")
    if cfg.skip_timestep_knots == 1 or cfg.skip_timestep_knots < 0:
        problems.append(f"skip_timestep_knots must be 0 (one skip matrix) or >= 2, got {cfg.skip_timestep_knots}")
    if not cfg.skip_knots_scale > 0:
        problems.append(f"skip_knots_scale must be > 0, got {cfg.skip_knots_scale}")
    if cfg.skip_timestep_knots and not cfg.skip:
        problems.append(
            "skip_timestep_knots needs skip=True (the knots interpolate the skip connection); "
            "set skip_timestep_knots=0 for a transcoder without a skip"
        )
    if problems:
        raise ValueError(f"{type(cfg).__name__}: " + "; ".join(problems))


@dataclass(kw_only=True)
class TideTranscoderConfig(TopKSAEConfig, TideFields):
    """Configuration of an inference `TideTranscoder`, as read from `cfg.json`.

    As `TideSAEConfig`, every setting that changes outputs is required (a `cfg.json` missing one
    fails to load). `d_in` is the MLP input's width, `d_out` the MLP output's.
    """

    d_out: int = field()
    skip: bool = field()
    """Add the skip connection `x @ W_skip.T` (SAELens's `SkipTranscoder`)."""
    skip_timestep_knots: int = 0
    """Knots of the timestep-dependent skip (0: one matrix for every t). A default, not required: files written
    before the field existed have no knots, and a file with knot weights but no field fails `check_state_dict`."""
    skip_knots_scale: float = 0.1
    """What the stored knot matrices are multiplied by (see `TideTrainingTranscoderConfig.skip_knots_scale`)."""
    k: int = field()
    rescale_acts_by_decoder_norm: bool = field()
    normalize_activations: str = field()
    apply_b_dec_to_input: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _validate_tide_fields(self)
        _validate_transcoder(self)

    @override
    @classmethod
    def architecture(cls) -> str:
        return TIDE_TRANSCODER_ARCHITECTURE


@dataclass(kw_only=True)
class TideTrainingTranscoderConfig(TideTrainingSAEConfig):
    """Configuration for training a `TideTrainingTranscoder`: `TideTrainingSAEConfig`'s fields (TIDE's
    timestep MLP, k, AuxK, `sparse_decode`) plus `d_out` and `skip`."""

    d_out: int = field()
    skip: bool = True
    """Add the skip connection `x @ W_skip.T` (SAELens's `SkipTranscoder`), zero-initialised. On by default: it
    carries the part of the MLP output that is linear in its input, and the latents the rest. Block 2's held-out
    MLP-output explained variance rose from 0.956 to 0.976 (digits) and from 0.881 to 0.959 (shapes), seed 1
    (`benchmarks/results/transcoder_ablations.md`)."""
    skip_timestep_knots: int | None = None
    """Make the skip connection timestep-dependent: one extra [d_out, d_in] matrix at each of this many timesteps
    evenly spaced over [0, 1000], interpolated linearly in t and added to W_skip (0: one matrix for all t, as
    SAELens's SkipTranscoder; else >= 2). None (the default): 5 with the skip, 0 without. Zero-initialised. Costs
    knots x d_in x d_out multiply-adds per row. With 5, block 2's held-out MLP-output explained variance is higher
    than the same transcoder's without timestep terms in every timestep bucket, by 0.0004-0.0062 (seeds 2-4,
    `benchmarks/results/transcoders.md`)."""
    skip_knots_scale: float = 0.1
    """The knot matrices are stored divided by this factor, so that they learn at this fraction of W_skip's rate
    (Adam moves every stored weight by about lr per step). At 1.0 the skip's timestep-dependent part learnt as fast
    as its shared part and some runs ended 0.01 of explained variance lower; at 0.1 none did."""
    apply_b_dec_to_input: bool = False
    timestep_scale: bool = False
    """Off for transcoders: a DiT block's MLP input is already adaLN-modulated by the timestep, and TIDE's input
    modulation on top cost 0.02 of held-out MLP-output explained variance on the digits DiT (block 2, seed 1;
    `benchmarks/results/transcoder_ablations.md`). The decoder's timestep bias stays on."""
    timestep_shift: bool = False
    """Off for transcoders, as `timestep_scale`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.skip_timestep_knots is None:
            self.skip_timestep_knots = DEFAULT_SKIP_KNOTS if self.skip else 0
        _validate_transcoder(self)

    @override
    @classmethod
    def architecture(cls) -> str:
        return TIDE_TRANSCODER_ARCHITECTURE


class _TranscoderParts(SAE[Any]):
    """What the inference and training transcoders add to their TIDE bases (first in both MROs):
    output-space decoder weights, the optional skip connection, input handling without b_dec."""

    cfg: TideTranscoderConfig | TideTrainingTranscoderConfig  # type: ignore[assignment]
    W_skip: nn.Parameter | None
    W_skip_knots: nn.Parameter | None

    @property
    def d_out(self) -> int:
        """Output width (the MLP output's), as SAELens's `Transcoder.d_out`."""
        return self.cfg.d_out

    def _output_width(self) -> int:
        return self.cfg.d_out

    @override
    def initialize_weights(self) -> None:
        super().initialize_weights()  # the SAE's weights and the timestep MLP (decoder_bias d_out wide)
        cfg, factory = self.cfg, {"dtype": self.dtype, "device": self.device}
        W_dec = torch.empty(cfg.d_sae, cfg.d_out, **factory)
        nn.init.kaiming_uniform_(W_dec)
        init_norm = getattr(cfg, "decoder_init_norm", None)
        if init_norm is not None:
            W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True) * init_norm
        if cfg.d_out == cfg.d_in:  # TopK's init: the encoder is the decoder's transpose
            W_enc = W_dec.T.clone().contiguous()
        else:  # SAELens Transcoder's init, each latent's encoder column at the decoder rows' norm
            W_enc = torch.empty(cfg.d_in, cfg.d_sae, **factory)
            nn.init.kaiming_uniform_(W_enc)
            if init_norm is not None:
                W_enc = W_enc / W_enc.norm(dim=0, keepdim=True) * init_norm
        self.W_dec, self.W_enc = nn.Parameter(W_dec), nn.Parameter(W_enc)
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_out, **factory))
        self.W_skip = nn.Parameter(torch.zeros(cfg.d_out, cfg.d_in, **factory)) if cfg.skip else None
        knots = cfg.skip_timestep_knots
        self.W_skip_knots = nn.Parameter(torch.zeros(knots, cfg.d_out, cfg.d_in, **factory)) if knots else None

    @override
    def process_sae_in(self, sae_in: torch.Tensor) -> torch.Tensor:
        """As SAELens's `Transcoder`: dtype, hook, input normalisation; no b_dec (it is d_out wide)."""
        sae_in = self.hook_sae_input(self.reshape_fn_in(sae_in.to(self.dtype)))
        return self.run_time_activation_norm_fn_in(sae_in)

    def skip_output(self, x: torch.Tensor, timestep: TimestepLike | None = None) -> torch.Tensor | None:
        """The skip term x @ W_skip(t).T [..., d_out] of MLP inputs x [..., d_in], or None without a skip connection.

        Only a skip with `skip_timestep_knots` needs the timestep (from `timestep`, else the enclosing forward pass or
        `at_timestep`); it is what `evals.reconstruct` adds to the decoded codes."""
        if self.W_skip is None:
            return None
        x = x.to(self.dtype)
        out = x @ self.W_skip.T
        if self.W_skip_knots is None:
            return out
        t = as_timestep(timestep) if timestep is not None else self._context_timestep
        if t is None:
            raise _missing_timestep("skip_output")
        t = check_timestep_shape(t.to(x.device), x.shape[:-1])
        check_timestep_range(t.reshape(-1).sort().values)
        knots, d_out = self.W_skip_knots.shape[:2]
        weights = skip_knot_weights(t, knots).to(x.dtype)  # [*t.shape, knots]
        weights = weights.reshape(*t.shape, *(1,) * (x.ndim - 1 - t.ndim), knots, 1)
        per_knot = (x @ self.W_skip_knots.reshape(knots * d_out, -1).T).unflatten(-1, (knots, d_out))
        return out + self.cfg.skip_knots_scale * (per_knot * weights).sum(-2)

    @override
    def forward(self, x: torch.Tensor, timestep: TimestepLike | None = None) -> torch.Tensor:
        """MLP input x [..., d_in] -> the transcoder's MLP output [..., d_out] at `timestep`."""
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"{type(self).__name__} reads MLP inputs of width d_in={self.cfg.d_in}, got {x.shape[-1]}; "
                f"feed it the activations of its input hook {self.cfg.metadata.hook_name}"
            )
        if self.use_error_term:
            raise ValueError(
                "a transcoder cannot form an error term from its input alone (it needs the real MLP output); "
                "use HookedDiT.saes([...], use_error_term=True), which reads both hooks"
            )
        with self._terms_once(x, timestep):
            out = self.decode(self.encode(x))
            skip = self.skip_output(x)
            return self.hook_sae_output(out if skip is None else out + skip)

    @override
    def fold_activation_whitening(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("TIDE transcoders cannot fold covariance whitening; use 'expected_average_only_in'")


class TideTranscoder(_TranscoderParts, TideSAE):
    """Inference TIDE transcoder: timestep-modulated MLP input -> TopK codes -> MLP output (+ skip).

    >>> cfg = TideTranscoderConfig(d_in=8, d_out=8, d_sae=16, k=2, skip=False,
    ...     rescale_acts_by_decoder_norm=False, normalize_activations="none")
    >>> tc = TideTranscoder(cfg)
    >>> with tc.at_timestep(500.0):
    ...     z = tc.encode(torch.randn(3, 8))
    >>> tc.decode(z).shape, int((z > 0).sum(-1).max()) <= 2
    (torch.Size([3, 8]), True)
    """

    cfg: TideTranscoderConfig  # type: ignore[assignment]


class TideTrainingTranscoder(_TranscoderParts, TideTrainingSAE):
    """TIDE transcoder with training: MSE to the MLP output + AuxK, on `transcoder_rows`; the sparse step
    (`saes.sparse_topk`) where `sparse_decode` resolves to True, else the dense one.

    >>> cfg = TideTrainingTranscoderConfig(d_in=8, d_out=6, d_sae=32, k=4)
    >>> tc = TideTrainingTranscoder(cfg)
    >>> tc.receive_batch_timesteps(torch.full((3,), 999.0))
    >>> rows = transcoder_rows(torch.randn(3, 8), torch.randn(3, 6))
    >>> out = tc.training_forward_pass(TrainStepInput(rows, {}, None, 0, False))
    >>> out.sae_in.shape, out.sae_out.shape
    (torch.Size([3, 6]), torch.Size([3, 6]))
    """

    cfg: TideTrainingTranscoderConfig  # type: ignore[assignment]

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        rows, (d_in, d_out) = step_input.sae_in, (self.cfg.d_in, self.cfg.d_out)
        if rows.shape[-1] != d_in + d_out:
            raise ValueError(
                f"TideTrainingTranscoder trains on rows [batch, d_in + d_out] = [batch, {d_in + d_out}] "
                f"(transcoder_rows(mlp_inputs, mlp_outputs)), got {tuple(rows.shape)}"
            )
        x, target = self._sparse_split(rows)
        timesteps = self._take_batch_timesteps(rows)
        if self._sparse_path_applies(rows):
            with self._terms_once(x, timesteps):
                return SparseTopKTraining.training_forward_pass(self, step_input)
        with self._terms_once(x, timesteps):
            feature_acts, hidden_pre = self.encode_with_hidden_pre(x)
            sae_out = self.decode(feature_acts)
            skip = self.skip_output(x)
        if skip is not None:
            sae_out = sae_out + skip
        mse_loss = self.mse_loss_fn(sae_out, target).sum(dim=-1).mean()
        aux = self.calculate_aux_loss(replace(step_input, sae_in=target), feature_acts, hidden_pre, sae_out)
        return TrainStepOutput(
            sae_in=target,
            sae_out=sae_out,
            feature_acts=feature_acts,
            hidden_pre=hidden_pre,
            loss=mse_loss + sum(aux.values()),
            losses={"mse_loss": mse_loss, **aux},
        )

    @override
    def _aux_k(self) -> int:
        return self.cfg.k_aux if self.cfg.k_aux is not None else self.cfg.d_out // 2

    @override
    def _sparse_split(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, target = rows.split([self.cfg.d_in, self.cfg.d_out], dim=-1)  # transcoder_rows(input, output)
        return x, target

    @override
    def _sparse_skip(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.skip_output(x)
