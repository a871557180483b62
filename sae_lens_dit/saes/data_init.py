"""Start an SAE where the data is: `b_dec` at the activations' centre, encoder at the right scale.

Why: DiT residual activations are mostly their mean (mean-vector norm 9-19 against row norms
13-29 on the bundled backbones). SAELens starts `b_dec` at zero, so every row looks alike to a
fresh encoder and the latents that happen to point along the mean win every TopK selection while
the rest never fire. And SAELens's TopK family starts the decoder rows at norm 0.1 with the encoder
as their transpose, while `rescale_acts_by_decoder_norm` makes the code of a latent
`(x - b_dec) . w_enc * |w_dec|`: about 0.01 of the projection it must reach. Adam moves each weight
by about `lr` per step, so the latents that fire first grow to the right scale and the others,
which TopK gives no gradient, can no longer compete (measured: most latents dead after 488 steps,
`benchmarks/results/recipe_sweep.md`).

`init_from_rows(sae, rows, b_dec_init=...)` fixes both before the first step, from a sample of
training rows and nothing else (no backbone, no data source): `b_dec` at the rows' geometric median
(Weiszfeld), mean or zero, in the space the trainer feeds the SAE (`scaling_factor`, from
SAELens's `expected_average_only_in`), and, for architectures whose decode divides by the decoder
norm, the encoder as the transpose of a unit-norm decoder, so that a fresh latent's code is the
projection itself.

>>> rows = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]])
>>> [round(v, 2) for v in geometric_median(rows).tolist()]  # the mean is (2.75, 2.75)
[0.5, 0.5]
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch

BDecInit = Literal["geometric_median", "mean", "zeros"]
B_DEC_INITS: tuple[str, ...] = get_args(BDecInit)
DecoderDirections = Literal["sae_lens", "gaussian"]
"""Where a unit-norm decoder's rows point at the start: SAELens's own draw (kaiming-uniform rows, i.e. from a
cube) or isotropic Gaussian rows (uniform on the sphere, as the plain TopK reference draws them)."""


@torch.no_grad()
def geometric_median(rows: torch.Tensor, max_iter: int = 200, tol: float = 1e-7) -> torch.Tensor:
    """The point minimising the summed Euclidean distance to `rows` [n, d] (Weiszfeld's iteration,
    in float64, from the mean). Robust to outlying rows, unlike the mean. Returns [d] in rows' dtype."""
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"geometric_median expects rows [n, d] with n >= 1, got shape {tuple(rows.shape)}")
    x = rows.double()
    median = x.mean(0)
    for _ in range(max_iter):
        weights = 1.0 / (x - median).norm(dim=1).clamp_min(1e-12)
        new = weights @ x / weights.sum()
        moved = float((new - median).norm())
        median = new
        if moved <= tol * max(float(median.norm()), 1.0):
            break
    return median.to(rows.dtype)


def centre_of(rows: torch.Tensor, method: BDecInit) -> torch.Tensor:
    """The point `b_dec` starts at for `method`: [n, d] -> [d]."""
    if method == "geometric_median":
        return geometric_median(rows)
    if method == "mean":
        return rows.mean(0)
    if method == "zeros":
        return rows.new_zeros(rows.shape[1])
    raise ValueError(f"b_dec_init={method!r}; expected one of {B_DEC_INITS}")


def rescales_by_decoder_norm(sae: Any) -> bool:
    """Whether `sae`'s codes are multiplied by its decoder norms (SAELens's TopK family, TIDE)."""
    return bool(getattr(sae.cfg, "rescale_acts_by_decoder_norm", False))


@torch.no_grad()
def unit_decoder_tied_encoder(sae: Any, directions: DecoderDirections = "sae_lens") -> None:
    """Decoder rows to unit norm and the encoder to their transpose (Gao et al. 2024's start).

    Only for SAEs whose decode divides by the decoder norm: their reconstruction does not change
    with the norm, but their codes do, and at unit norm a fresh latent's code is the projection of
    the centred input on its direction, the scale it must have. `directions="gaussian"` first
    redraws the rows from torch's global generator (seed it for a reproducible start)."""
    if not rescales_by_decoder_norm(sae):
        raise ValueError(
            f"unit_decoder_tied_encoder: {type(sae).__name__} does not rescale its codes by the decoder norm, "
            "so a unit-norm decoder would change its reconstructions; leave its SAELens initialisation"
        )
    if directions == "gaussian":
        sae.W_dec.data = torch.randn_like(sae.W_dec.data)
    elif directions != "sae_lens":
        raise ValueError(f"directions={directions!r}; expected one of {get_args(DecoderDirections)}")
    sae.W_dec.data /= sae.W_dec.data.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sae.W_enc.data = sae.W_dec.data.T.clone().contiguous()


@torch.no_grad()
def init_from_rows(
    sae: Any,
    rows: torch.Tensor,
    b_dec_init: BDecInit = "geometric_median",
    scaling_factor: float | None = None,
    unit_decoder: bool = True,
    directions: DecoderDirections = "sae_lens",
) -> dict[str, float]:
    """Initialise `sae` from training rows [n, d_in] as the module docstring says; returns what was
    done (`b_dec_norm`, `centred_row_norm`) for the training report.

    `scaling_factor` is the factor the trainer multiplies inputs by (SAELens's activation scaler);
    `b_dec` is set in that space. `unit_decoder` applies `unit_decoder_tied_encoder` where it is valid
    (TopK family and TIDE), with the decoder `directions`, and is a no-op elsewhere."""
    if rows.ndim != 2 or rows.shape[1] != sae.cfg.d_in:
        raise ValueError(f"init_from_rows: rows must be [n, d_in={sae.cfg.d_in}], got {tuple(rows.shape)}")
    if not torch.isfinite(rows).all():
        raise ValueError("init_from_rows: the training rows hold non-finite values; check the harvested activations")
    rows = rows.float() * (scaling_factor if scaling_factor is not None else 1.0)
    centre = centre_of(rows, b_dec_init)
    sae.b_dec.data.copy_(centre.to(sae.b_dec.dtype))
    if unit_decoder and rescales_by_decoder_norm(sae):
        unit_decoder_tied_encoder(sae, directions)
    return {"b_dec_norm": float(centre.norm()), "centred_row_norm": float((rows - centre).norm(dim=1).mean())}
