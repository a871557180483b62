"""The timestep MLP of TIDE: sinusoidal embedding -> small MLP -> the timestep terms.

Timestep convention (shared with `HookedDiT`): a float on the DDPM training scale [0, 1000],
1000 = pure noise; one value for a whole input, or a tensor whose shape is a prefix of the input's
leading dims. The MLP runs once per distinct timestep value and its output is spread over the rows.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

from sae_lens_dit.conventions import TIMESTEP_MAX

TimestepLike = float | int | torch.Tensor


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of timesteps, DiT's convention. [n] -> [n, dim]."""
    return get_timestep_embedding(timesteps, dim, flip_sin_to_cos=True, downscale_freq_shift=1)


TERMS = ("scale", "shift", "decoder_bias")
"""The timestep terms, in the order of their rows in `TimestepMLP.heads`."""


class TimestepTerms(NamedTuple):
    """The timestep terms for one input, each broadcastable to [*leading dims, width]; None if off.
    gain and shift are d_in wide, decoder_bias d_out wide (d_in for an SAE, d_out for a transcoder)."""

    gain: torch.Tensor | None  # 1 + scale(t)
    shift: torch.Tensor | None
    decoder_bias: torch.Tensor | None


NO_TERMS = TimestepTerms(None, None, None)


class TimestepMLP(nn.Module):
    """Sinusoidal embedding -> Linear -> SiLU -> Linear -> SiLU -> `heads`, zero-initialised.

    `linear_1` and `linear_2` have the shape of DiT's `TimestepEmbedding` so that
    `init_from_dit_block` can copy them. `heads` computes every enabled term in one matmul: its
    rows are the enabled terms' blocks in `TERMS` order ([d_in] each; decoder_bias [d_out], which is
    d_in unless given: a transcoder reconstructs another width than it reads).
    """

    def __init__(
        self,
        d_in: int,
        embed_dim: int,
        hidden_dim: int,
        terms: tuple[str, ...],
        dtype: torch.dtype,
        device: torch.device,
        d_out: int | None = None,
    ):
        super().__init__()
        factory = {"dtype": dtype, "device": device}
        self.terms_enabled = tuple(term for term in TERMS if term in terms)
        self.d_in, self.embed_dim = d_in, embed_dim
        d_out = d_in if d_out is None else d_out
        self.widths = tuple(d_out if term == "decoder_bias" else d_in for term in self.terms_enabled)
        self.linear_1 = nn.Linear(embed_dim, hidden_dim, **factory)
        self.linear_2 = nn.Linear(hidden_dim, hidden_dim, **factory)
        self.heads = nn.Linear(hidden_dim, sum(self.widths), **factory)
        nn.init.zeros_(self.heads.weight)
        nn.init.zeros_(self.heads.bias)

    def features(self, timesteps: torch.Tensor) -> torch.Tensor:
        """[n] distinct timesteps -> [n, hidden]."""
        emb = timestep_embedding(timesteps, self.embed_dim).to(self.linear_1.weight.dtype)
        return F.silu(self.linear_2(F.silu(self.linear_1(emb))))

    def terms(self, timestep: torch.Tensor, lead_shape: torch.Size) -> TimestepTerms:
        """The terms at `timestep` for an input with leading dims `lead_shape`.

        Runs the MLP once per distinct timestep value, then spreads the result over the rows.
        """
        if not self.terms_enabled:
            return NO_TERMS
        t = check_timestep_shape(timestep.to(self.linear_1.weight.device), lead_shape)
        if t.ndim == 0:
            values, inverse = t.reshape(1), None
        else:
            values, inverse = torch.unique(t, return_inverse=True)
        check_timestep_range(values)
        per_value = self.heads(self.features(values))  # [n values, sum(widths)]
        if "scale" in self.terms_enabled:
            per_value[:, : self.d_in] += 1  # gain = 1 + scale
        if inverse is None or len(values) == 1:
            spread = per_value[0].split(self.widths)  # each [width]
        elif len(set(self.widths)) == 1:  # [n_terms, *t.shape, (1,)*, d_in]: one gather for all terms
            n_terms, width = len(self.widths), self.widths[0]
            view = (n_terms, *t.shape) + (1,) * (len(lead_shape) - t.ndim) + (width,)
            per_term = per_value.view(len(values), n_terms, width).transpose(0, 1)
            spread = per_term.index_select(1, inverse.reshape(-1)).view(view).unbind(0)
        else:  # [*t.shape, (1,)*, sum(widths)], split into the terms
            view = (*t.shape,) + (1,) * (len(lead_shape) - t.ndim) + (sum(self.widths),)
            spread = per_value.index_select(0, inverse.reshape(-1)).view(view).split(self.widths, dim=-1)
        by_name = dict(zip(self.terms_enabled, spread, strict=True))
        return TimestepTerms(by_name.get("scale"), by_name.get("shift"), by_name.get("decoder_bias"))

    @torch.no_grad()
    def scale_additive_terms(self, factor: float) -> None:
        """Multiply `shift` and `decoder_bias` by `factor` (they live in activation units)."""
        start = 0
        for term, width in zip(self.terms_enabled, self.widths, strict=True):
            if term != "scale":
                rows = slice(start, start + width)
                self.heads.weight[rows] *= factor
                self.heads.bias[rows] *= factor
            start += width


def check_timestep_shape(t: torch.Tensor, lead_shape: torch.Size) -> torch.Tensor:
    """Return `t` as float; its shape must be a prefix of `lead_shape` (size-1 dims broadcast)."""
    if t.ndim > len(lead_shape) or any(size not in (1, lead) for size, lead in zip(t.shape, lead_shape, strict=False)):
        raise ValueError(
            f"timestep of shape {tuple(t.shape)} does not fit activations with leading dims "
            f"{tuple(lead_shape)}: pass one timestep for the whole input, or one per leading index "
            f"(e.g. shape [batch] for activations [batch, tokens, d_in])"
        )
    return t if t.is_floating_point() else t.float()


def check_timestep_range(values: torch.Tensor) -> None:
    """`values`: sorted distinct timesteps (NaN sorts last)."""
    lo, hi = values[[0, -1]].tolist()  # one device sync
    if not (lo >= 0.0 and hi <= TIMESTEP_MAX):  # also catches NaN
        raise ValueError(
            f"timesteps must lie in [0, {TIMESTEP_MAX:g}] (DDPM training scale, {TIMESTEP_MAX:g} = pure "
            f"noise), got values in [{lo}, {hi}]; flow-matching sigmas in [0, 1] must be multiplied "
            f"by {TIMESTEP_MAX:g}"
        )


def as_timestep(timestep: TimestepLike) -> torch.Tensor:
    """A timestep given as a number, as a 0-d tensor."""
    return timestep if isinstance(timestep, torch.Tensor) else torch.tensor(float(timestep))
