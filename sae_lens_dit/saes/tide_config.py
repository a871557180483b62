"""The settings of TIDE SAEs: the timestep MLP's fields and the inference / training config pair.

Why a module of their own: the configs are what `cfg.json` and the runner's `sae:` section are
read into, and they are shared by the inference SAE (`tide_sae`), the training SAE
(`tide_training`) and the timestep modulation both build on (`tide_modulation`). Each field's
docstring says what it does and what it measured; the architecture itself is described in
`sae_lens_dit.saes.tide_sae`.

>>> TideTrainingSAEConfig(d_in=8, d_sae=32, k=4).architecture()
'tide'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sae_lens.saes.topk_sae import TopKSAEConfig, TopKTrainingSAEConfig
from typing_extensions import override

from sae_lens_dit.conventions import TIDE_ARCHITECTURE
from sae_lens_dit.saes.auxk import check_auxk_normalization
from sae_lens_dit.saes.sparse_topk import SparseDecodeFields


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
        check_auxk_normalization(self)

    @override
    @classmethod
    def architecture(cls) -> str:
        return TIDE_ARCHITECTURE
