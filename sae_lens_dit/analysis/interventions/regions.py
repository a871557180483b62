"""Where an edit applies on the image: a box, a mask image or a token list as a mask over the token grid.

Why a module of its own: the spec (`spec.LatentEdit`) stores regions in image terms (fractions of
the image, a mask file, token positions) so it stays independent of any backbone's patch size; the
steering hook needs a [tokens] mask for the grid of the call in progress (`HookedDiT.token_grid`).
This is the one translation between the two, also used by analyses that pick the rows inside a box.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def region_mask(
    grid: tuple[int, int],
    box: Sequence[float] | None = None,
    mask: str | None = None,
    tokens: Sequence[int] | None = None,
) -> Tensor | None:
    """[tokens] bool, row-major over the token grid: tokens whose centre is in `box` (x0, y0, x1, y1 in
    fractions of the image), where the mask image, resized to the grid, is brighter than half, or the
    listed `tokens`. None when none is given (every token)."""
    rows, cols = grid
    if tokens is not None:
        if max(tokens) >= rows * cols:
            raise ValueError(
                f"token position(s) {[i for i in tokens if i >= rows * cols]} out of range; the image "
                f"has {rows * cols} tokens ({rows} x {cols})"
            )
        inside = torch.zeros(rows * cols, dtype=torch.bool)
        inside[list(tokens)] = True
        return inside
    if box is not None:
        ys = (torch.arange(rows, dtype=torch.float64) + 0.5) / rows
        xs = (torch.arange(cols, dtype=torch.float64) + 0.5) / cols
        inside_y = (ys >= box[1]) & (ys < box[3])
        inside_x = (xs >= box[0]) & (xs < box[2])
        return (inside_y[:, None] & inside_x[None, :]).reshape(-1)
    if mask is not None:
        from PIL import Image

        image = Image.open(mask).convert("L").resize((cols, rows), Image.Resampling.BOX)
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0 > 0.5).reshape(-1)
    return None
