"""Thumbnails of the dashboard pages: a frame resized to a square PNG, with a latent's activation per
token drawn over it as a red heatmap; a video's steering preview as a strip of a few of its frames.

Why its own module: the token -> pixel layout (row-major patches on the model's token grid) is the
one place a heatmap can be drawn wrong, so it is one small function, tested against a real DiT's
patch embedding, with the rendering beside it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

OVERLAY_RGB = np.array([255.0, 48.0, 0.0])
OVERLAY_ALPHA = 0.75
"""Heatmap colour and its opacity where the latent reaches its maximum over the sampled set."""


def token_heatmap(values: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Per-token values [tokens] -> [H, W] pixels: token i covers the patch at row i // columns, column
    i % columns of the `grid`, stretched over the image (pixel y belongs to token row y * rows // H)."""
    rows, cols = grid
    if values.shape != (rows * cols,):
        raise ValueError(f"expected {rows * cols} token values for a {rows}x{cols} grid, received {values.shape}")
    height, width = size
    return values.reshape(rows, cols)[
        np.arange(height)[:, None] * rows // height, np.arange(width)[None] * cols // width
    ]


def render_thumbnail(
    frame: np.ndarray, size: int, heat: np.ndarray | None = None, grid: tuple[int, int] | None = None
) -> bytes:
    """PNG bytes of a frame [H, W, C] uint8 resized to size x size, with `heat` [tokens] in [0, 1] (a latent's
    activation per token over its maximum) overlaid as a red heatmap."""
    image = Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame).convert("RGB")
    resample = Image.Resampling.NEAREST if frame.shape[0] * 2 <= size else Image.Resampling.LANCZOS
    rgb = np.asarray(image.resize((size, size), resample), dtype=np.float64)
    if heat is not None:
        alpha = OVERLAY_ALPHA * np.clip(token_heatmap(heat, grid, (size, size)), 0.0, 1.0)[..., None]
        rgb = rgb * (1.0 - alpha) + OVERLAY_RGB * alpha
    buffer = io.BytesIO()
    Image.fromarray(rgb.round().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


STRIP_FRAMES = 4
"""Frames of a video in a steering preview strip, evenly spaced from the first to the last."""


def render_strip(video: np.ndarray, size: int, frames: int = STRIP_FRAMES) -> tuple[bytes, int]:
    """(PNG bytes, width) of up to `frames` evenly spaced frames of a video [F, H, W, C] uint8, each size x size,
    side by side in time order."""
    chosen = np.unique(np.linspace(0, video.shape[0] - 1, min(frames, video.shape[0])).round().astype(int))
    tiles = [np.asarray(Image.open(io.BytesIO(render_thumbnail(video[f], size)))) for f in chosen]
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(tiles, axis=1)).save(buffer, format="PNG")
    return buffer.getvalue(), size * len(tiles)
