"""Where an image token sits: the row-major grid of a hook's tokens, at every resolution level.

Why one home: spatial edits, heatmaps, shape gates and the dashboard's per-token pictures all need to
know that token i of an activation sits at row i // columns, column i % columns. A transformer has one
grid (latent size over patch size); a UNet has one per level (the latent halved by each downsampler, SD
and SDXL round odd sizes up), and non-square images are common in both.

>>> token_grid(24, (8, 12), patch_size=2)
(4, 6)
>>> token_grid(6, (8, 12), patch_size=1, levels=3)  # a UNet level two downsamplers deep
(2, 3)
"""

from __future__ import annotations

from typing import Any


def spatial_patch(config: Any) -> int:
    """Pixels of latent per token side: `patch_size`, or the last of a video model's (frames, height, width)
    patch (Wan's (1, 2, 2)); 1 without one (a UNet)."""
    patch = getattr(config, "patch_size", None) or 1
    if isinstance(patch, (list, tuple)):
        if len(set(patch[-2:])) != 1:
            raise ValueError(f"patch_size {list(patch)}: token grids need square spatial patches")
        patch = patch[-1]
    return int(patch)


def configured_grid(config: Any) -> tuple[int, int] | None:
    """(rows, columns) of the top-level grid at the model's configured sample size; None without one."""
    size = getattr(config, "sample_size", None)
    if not size:
        return None
    patch = spatial_patch(config)
    height, width = (size, size) if isinstance(size, int) else size
    return height // patch, width // patch


def resolution_levels(config: Any) -> int:
    """How many grids a model's hooks can be on: one per UNet level (`block_out_channels`), else one."""
    channels = getattr(config, "block_out_channels", None)
    return len(channels) if isinstance(channels, (list, tuple)) and getattr(config, "patch_size", None) is None else 1


def token_grid(
    n_tokens: int,
    latent_size: tuple[int, int] | None,
    patch_size: int = 1,
    levels: int = 1,
    configured: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """(rows, columns) of the row-major grid of `n_tokens` image tokens.

    Candidates, in order: the latent's (height, width) in patches, halved (rounding up) once per level
    below the top; when no latent size is given, the configured grid halved the same way, then a square.
    The first candidate with `n_tokens` cells wins; none raises (spatial work needs a known grid).
    """
    if latent_size is not None:  # the latent actually sampled decides; no square fallback
        top = [(latent_size[0] // patch_size, latent_size[1] // patch_size)]
    else:
        side = int(round(n_tokens**0.5))
        top = [configured, (side, side)] if configured is not None else [(side, side)]
    for rows, columns in top:
        for _ in range(levels):
            if rows * columns == n_tokens:
                return rows, columns
            rows, columns = -(-rows // 2), -(-columns // 2)
    raise ValueError(
        f"cannot lay {n_tokens} tokens out on a grid (not the latent's or the model's configured size in "
        f"{patch_size}x{patch_size} patches at any of its {levels} level(s), and not square); spatial edits and "
        f"heatmaps need a known token grid"
    )
