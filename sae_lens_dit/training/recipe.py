"""The training recipe of each SAE architecture: what the runner does around SAELens's trainer.

Why its own module: a recipe is measured, not guessed, and it is read by the runner's config
(defaults of `lr`, `b_dec_init`, `input_scale`, `decoder_directions`, `decoder_norm`), the runner
(which applies it), the benchmarks and the release cards. One place holds the measured values and
the small functions that apply them.

The measurements (`benchmarks/results/recipe_sweep_*.md` and its findings, `topk_gap.md`): on the
shapes backbone SAELens's TopK trained with the DiT recipe (b_dec at the geometric median, SAELens's
decoder directions at unit norm, codes rescaled by the decoder norm) stops at 0.926-0.931 held-out
explained variance at k 16, where a plain-torch TopK reaches 0.938-0.953. Three choices of the plain
TopK, together, bring SAELens's own `SAETrainer` to 0.933-0.949 (3000 steps of 1024 at lr 4e-4, six
initial draws; the spread is the draw's, as the reference's): inputs scaled so rows centred on b_dec's
start have mean norm 1, decoder rows drawn from a Gaussian with b_dec at the mean, and rows set back
to unit norm after every step instead of codes rescaled by the decoder norm. Any one of them switched
back gives 0.926-0.939. The plain recipe learns slowly at 4e-4 (0.886 after 488 steps of 4096, where
the DiT recipe has 0.914); at 1e-3 it is at or above the DiT recipe at every budget measured (shapes
2M / 4M rows: 0.923 / 0.939 against 0.914 / 0.926; digits a tie), so that is the TopK family's default.
TIDE keeps the DiT recipe: on the plain one it reached 0.959 at the reference's budget (lr 4e-4, 5.7%
dead) but at the runner's budgets it is below its own recipe (2M / 4M rows at 1e-3: 0.920 / 0.931 against
0.930 / 0.935).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from sae_lens_dit.conventions import TIDE_ARCHITECTURE, TIDE_TRANSCODER_ARCHITECTURE
from sae_lens_dit.saes.data_init import BDecInit, DecoderDirections

InputScale = Literal["sae", "unit"]
"""How training inputs are scaled: as the SAE's `normalize_activations` says ("sae"), or by one factor that
gives rows centred on b_dec's start a mean norm of 1 ("unit", SAELens's activation scaler, folded into the
saved weights)."""
DecoderNorm = Literal["sae", "unit_rows"]
"""How the decoder's norm is held: as the SAE's config says ("sae": SAELens's `rescale_acts_by_decoder_norm`
or nothing), or rows set back to unit norm after every optimiser step ("unit_rows")."""

FALLBACK_LR = 4e-4
DEFAULT_LR: dict[str, float] = {
    TIDE_ARCHITECTURE: 1e-3,
    TIDE_TRANSCODER_ARCHITECTURE: 1e-3,  # transcoder ablations (benchmarks/results/transcoder_ablations.md)
    "topk": 1e-3,  # with the plain TopK recipe (module docstring)
    "topk_sparse": 1e-3,
    "batchtopk": 1e-3,
    "standard": 4e-3,
}
"""Learning rate per training architecture when `lr` is None, with its recipe, from the recipe sweeps (d_sae
1536, k 16 on the bundled backbones: `benchmarks/results/recipe_sweep_*.md`, `topk_recipe.md`); others 4e-4."""


@dataclass(frozen=True)
class Recipe:
    """How an SAE starts and how its decoder is held while SAELens's trainer runs."""

    b_dec_init: BDecInit = "geometric_median"
    input_scale: InputScale = "sae"
    decoder_directions: DecoderDirections = "sae_lens"
    decoder_norm: DecoderNorm = "sae"


DIT_RECIPE = Recipe()
"""TIDE's recipe and every architecture's without a measured one."""
PLAIN_TOPK_RECIPE = Recipe(
    b_dec_init="mean", input_scale="unit", decoder_directions="gaussian", decoder_norm="unit_rows"
)
"""The plain TopK's choices (Gao et al. 2024 as `benchmarks/plain_topk_reference.py` trains it), for SAELens's TopK."""
RECIPES: dict[str, Recipe] = dict.fromkeys(("topk", "topk_sparse", "batchtopk"), PLAIN_TOPK_RECIPE)


def recipe_for(architecture: str) -> Recipe:
    """The measured recipe of a training architecture (`DIT_RECIPE` where none was measured)."""
    return RECIPES.get(architecture, DIT_RECIPE)


def unit_scaling_factor(centred_norm: torch.Tensor | float) -> float:
    """The input factor of `input_scale="unit"` from the mean norm of rows centred on b_dec's start."""
    norm = float(centred_norm)
    if not norm > 0 or norm == float("inf"):
        raise ValueError(
            f"input_scale='unit': the training rows' mean distance from b_dec's start is {norm}; the rows are "
            "constant or non-finite, check the harvested activations"
        )
    return 1.0 / norm


def hold_unit_decoder_rows(optimizer: torch.optim.Optimizer, sae: Any) -> Any:
    """`decoder_norm="unit_rows"`: after every step of `optimizer`, `sae`'s decoder rows back to unit norm.
    Returns the hook's handle (`.remove()` undoes it)."""

    @torch.no_grad()
    def unit_rows(*_: object) -> None:
        sae.W_dec.data /= sae.W_dec.data.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    unit_rows()
    return optimizer.register_step_post_hook(unit_rows)
