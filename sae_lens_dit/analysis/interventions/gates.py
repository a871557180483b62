"""Where an edit applies, decided per token and per step from the run itself.

Why: an edit on every token repaints the whole image (a hue edit turns the background the target
colour in every sample), and a static box cannot follow a shape that the model has not placed yet
or that sits somewhere else in every sample. A `Gate` picks, inside each transformer call, the
tokens where the concept is, from the activation the hook sees before it is edited: where given
latents of the hook's SAE fire, or where a linear probe on the hook's activation is positive (a
`LinearProbe`, fitted with `fit_probe` on recorded rows and saved as safetensors so a steering spec
can name it). Static regions (box, mask image, token list) stay on `LatentEdit` and combine with a
gate by AND.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from sae_lens_dit.guards.config import check_keys


@dataclass(frozen=True)
class Gate:
    """Tokens an edit applies to, per row and call: where `latents` fire (code > threshold) or the probe's logit
    is above `threshold`; `invert` flips it."""

    latents: tuple[int, ...] | None = None
    """Latents of the SAE at the edit's hook; a token is inside where any of them is above `threshold`."""
    probe: str | None = None
    """Path of a LinearProbe (.safetensors) on the edit's hook; a token is inside where its logit > threshold."""
    threshold: float = 0.0
    """Code (latents) or logit (probe) a token must exceed."""
    invert: bool = False
    """Apply the edit outside the gate instead."""
    grow: int = 0
    """Tokens to grow the gate by on the image's token grid (8-neighbourhood, before `invert`); negative
    shrinks it. Lets an edit reach the ring around a shape (make it larger) or only its rim (smaller)."""
    center_at: tuple[float | None, float | None] | None = None
    """Move the gate's tokens, per row, so their centre lands at (x, y) in fractions of the image (after `grow`,
    before `invert`; a null coordinate stays where it is): the edit applies where the concept *would be* if it
    sat there (draw a shape elsewhere, in its own outline)."""

    def __post_init__(self) -> None:
        if (self.latents is None) == (self.probe is None):
            raise ValueError(f"a gate needs exactly one of `latents` or `probe`, received {asdict(self)}")
        if self.latents is not None:
            latents = (self.latents,) if isinstance(self.latents, int) else tuple(self.latents)
            if not latents or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in latents):
                raise ValueError(f"gate latents must be a non-empty list of non-negative ints, received {self.latents}")
            object.__setattr__(self, "latents", latents)
        if self.probe is not None and not Path(self.probe).exists():
            raise FileNotFoundError(f"gate probe {self.probe} does not exist; fit one with gates.fit_probe(...).save()")
        if not isinstance(self.threshold, (int, float)) or not math.isfinite(self.threshold):
            raise ValueError(f"gate threshold must be a finite number, received {self.threshold!r}")
        if not isinstance(self.grow, int) or isinstance(self.grow, bool):
            raise ValueError(f"gate grow must be a whole number of tokens, received {self.grow!r}")
        if self.center_at is not None:
            center = tuple(self.center_at)
            if len(center) != 2 or not all(
                c is None or (isinstance(c, (int, float)) and not isinstance(c, bool) and 0.0 <= c <= 1.0)
                for c in center
            ):
                raise ValueError(
                    f"gate center_at must be [x, y], each in [0, 1] or null (stays), received {self.center_at!r}"
                )
            object.__setattr__(self, "center_at", tuple(None if c is None else float(c) for c in center))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Gate:
        if not isinstance(data, Mapping):
            raise ValueError(f"gate: expected a mapping with `latents` or `probe`, received {data!r}")
        check_keys(data, cls.__dataclass_fields__, "gate")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v is not None}
        defaults = {"threshold": 0.0, "invert": False, "grow": 0, "center_at": None}
        return {k: v for k, v in out.items() if not (k in defaults and v == defaults[k])}

    def inside(
        self,
        activation: Tensor,
        codes: Tensor | None,
        probe: LinearProbe | None = None,
        grid: tuple[int, int] | None = None,
    ) -> Tensor:
        """[rows, tokens] bool from the unedited `activation` [rows, tokens, d] and its SAE `codes`
        [rows, tokens, d_sae] (needed for a latent gate); `grid` (rows, columns) of the tokens, needed to grow."""
        if self.latents is not None:
            if codes is None:
                raise ValueError("a latent gate needs the SAE's codes of the activation")
            inside = (codes[..., list(self.latents)] > self.threshold).any(-1)
        else:
            probe = probe if probe is not None else LinearProbe.load(self.probe)
            inside = probe.logits(activation) > self.threshold
        if self.grow or self.center_at is not None:
            if grid is None:
                raise ValueError("a gate with `grow` or `center_at` needs the token grid of the image")
            if self.grow:
                inside = grow_mask(inside, grid, self.grow)
            if self.center_at is not None:
                inside = move_mask(inside, grid, self.center_at)
        return ~inside if self.invert else inside

    @property
    def needs_grid(self) -> bool:
        return bool(self.grow) or self.center_at is not None


def _on_grid(inside: Tensor, grid: tuple[int, int]) -> Tensor:
    """[rows, tokens] bool as [rows, grid rows, grid columns]."""
    rows, cols = grid
    if inside.shape[-1] != rows * cols:
        raise ValueError(f"gate covers {inside.shape[-1]} tokens but the grid {rows} x {cols} has {rows * cols}")
    return inside.reshape(-1, rows, cols)


def move_mask(inside: Tensor, grid: tuple[int, int], center: tuple[float | None, float | None]) -> Tensor:
    """[rows, tokens] bool, each row's tokens shifted by whole tokens so their mean position lands nearest to
    `center` (x, y in fractions of the image; None: not moved along that axis); tokens shifted off the image
    are dropped, empty rows stay empty."""
    rows, cols = grid
    image = _on_grid(inside, grid)
    out = torch.zeros_like(image)
    ys, xs = torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64)
    for r in range(len(image)):
        if not image[r].any():
            continue
        y_now = float((image[r].sum(1) * ys).sum() / image[r].sum())
        x_now = float((image[r].sum(0) * xs).sum() / image[r].sum())
        dy = 0 if center[1] is None else round(center[1] * rows - 0.5 - y_now)
        dx = 0 if center[0] is None else round(center[0] * cols - 0.5 - x_now)
        source = image[r, max(0, -dy) : rows - max(0, dy), max(0, -dx) : cols - max(0, dx)]
        out[r, max(0, dy) : max(0, dy) + source.shape[0], max(0, dx) : max(0, dx) + source.shape[1]] = source
    return out.reshape(inside.shape)


def grow_mask(inside: Tensor, grid: tuple[int, int], by: int) -> Tensor:
    """[rows, tokens] bool grown by `by` tokens (8-neighbourhood) on the row-major `grid`; negative shrinks
    (a token stays only if every token within |by| of it, inside the image, is inside)."""
    image = _on_grid(inside, grid)[:, None].float()
    size = 2 * abs(by) + 1
    if by > 0:
        grown = torch.nn.functional.max_pool2d(image, size, stride=1, padding=abs(by)) > 0
    else:  # shrink = not (grow the outside); the border of the image does not count as outside
        grown = -torch.nn.functional.max_pool2d(-image, size, stride=1, padding=abs(by)) > 0
    return grown.reshape(inside.shape)


@dataclass(frozen=True)
class LinearProbe:
    """logit(x) = x . weight + bias on one hook's activation; positive = the concept is at that token."""

    hook: str
    weight: Tensor  # [d_in] float32
    bias: float

    def logits(self, activation: Tensor) -> Tensor:
        return activation.float() @ self.weight.to(activation.device) + self.bias

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        bias = torch.tensor([self.bias], dtype=torch.float64)  # float64: the bias is a Python float, kept bit for bit
        save_file(
            {"weight": self.weight.float().contiguous(), "bias": bias},
            str(path),
            metadata={"hook": self.hook, "format": "sae-lens-dit linear probe"},
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> LinearProbe:
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"linear probe {path} does not exist")
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        if set(tensors) != {"weight", "bias"} or tensors["weight"].dim() != 1:
            raise ValueError(
                f"{path} is not a linear probe (expected tensors weight [d_in] and bias [1], found "
                f"{ {k: list(v.shape) for k, v in tensors.items()} })"
            )
        return cls(metadata.get("hook", ""), tensors["weight"], float(tensors["bias"][0]))


def fit_probe(
    rows: Mapping[str, Tensor],
    target_rows: Any,
    hook: str = "",
    steps: int = 300,
    l2: float = 1e-3,
    seed: int = 0,
    balance: bool = True,
) -> LinearProbe:
    """Logistic regression of `target_rows` (a bool per row, e.g. "this token is on the shape") on the rows'
    activations, full-batch L-BFGS on standardised inputs, classes weighted equally when `balance`.
    The returned probe works on raw activations (the standardisation is folded into its weights)."""
    x = rows["activation"].double()
    y = torch.as_tensor(np.asarray(target_rows), dtype=torch.float64)
    if len(y) != len(x):
        raise ValueError(f"target_rows has {len(y)} entries for {len(x)} rows")
    if y.min() == y.max():
        raise ValueError("fit_probe needs rows of both classes (some target, some not)")
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    pos = float(y.mean())
    weight_row = torch.where(y > 0, 0.5 / pos, 0.5 / (1 - pos)) if balance else torch.ones_like(y)
    torch.manual_seed(seed)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = (
            weight_row * torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none")
        ).mean()
        loss = loss + l2 * (w**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    w_raw = (w.detach() / std).float()
    b_raw = float(b.detach() - (w.detach() * mean / std).sum())
    return LinearProbe(hook, w_raw, b_raw)
