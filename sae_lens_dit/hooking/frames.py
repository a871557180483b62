"""Video frames of a call's tokens: where a family's latents hold them, and token samples spread over them.

Why one home: a video transformer's hooks are flat [batch, frames x height x width, d] (frame-major), so
nothing in an activation says where one frame ends. The adapter's `frames:` section says where the
frame count is (an axis of the latents, or a forward argument for packed latents such as LTX's) and the
temporal patch size (a number or a config value such as `patch_size[0]` or `patch_size_t`); the call
context reads it, and recording draws `tokens_per_image` evenly over the frames, so that a harvest of a
long video does not over- or under-sample some of its frames by chance.

>>> spread_over_frames(8, frames=4, k=5, generator=torch.Generator().manual_seed(0)).tolist()  # 2 + 1 + 1 + 1
[0, 1, 3, 5, 7]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sae_lens_dit.hooking.spec_fields import AdapterSpecError, SpecFields

_CONFIG_REF = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)(\[(?P<index>\d+)\])?$")


@dataclass(frozen=True)
class FramesSpec:
    """Where a call's frame count is (the `frames:` section of an adapter YAML)."""

    axis: int | None = None
    """Axis of 5-D video latents holding the frames ([batch, channels, frames, h, w]: 2); a call with 4-D
    latents (an image, for families that take both) has no frames."""
    argument: str | None = None
    """Instead of `axis`: the forward argument holding the number of (latent) frames, for packed latents."""
    temporal_patch: int | str = 1
    """Latent frames per token frame: a number, or a config value (`patch_size_t`, `patch_size[0]`); a config
    value of null counts as 1 (CogVideoX 1.0's `patch_size_t`)."""

    def temporal_patch_of(self, config: Any, source: str) -> int:
        """The temporal patch size for one transformer's config."""
        if isinstance(self.temporal_patch, int):
            return self.temporal_patch
        match = _CONFIG_REF.match(self.temporal_patch)
        value = getattr(config, match["key"], None) if match and config is not None else None
        if match and match["index"] is not None and value is not None:
            value = value[int(match["index"])]
        if not match or (value is not None and not isinstance(value, int)):
            raise AdapterSpecError(
                f"adapter spec {source}: frames.temporal_patch {self.temporal_patch!r} does not name an int config "
                f"value of {type(config).__name__} (found {value!r}); fix the file"
            )
        return value or 1

    def count(self, latents: Any, frames_argument: Any, temporal_patch: int) -> int | None:
        """Token frames of one call: the latents' frame axis (or the argument) over the temporal patch."""
        if self.axis is not None:
            if latents.ndim != 5:  # an image call of a family that also takes images (HunyuanImage)
                return None
            return int(latents.shape[self.axis]) // temporal_patch
        if frames_argument is None:
            return None
        return int(torch.as_tensor(frames_argument).reshape(-1)[0]) // temporal_patch


def parse_frames(fields: SpecFields) -> FramesSpec:
    """The `frames:` section: exactly one of `axis` and `argument`, and an optional `temporal_patch`."""
    fields.check_keys(("axis", "argument", "temporal_patch"))
    axis, argument = fields.get("axis", int, None), fields.get("argument", str, None)
    if (axis is None) == (argument is None):
        fields.fail("", "give exactly one of axis (the latents' frame axis) and argument (a frame-count argument)")
    if axis is not None and not 1 <= axis <= 4:
        fields.fail("axis", f"expected an axis of the 5-D latents after the batch axis (1-4), received {axis}")
    patch = fields.get("temporal_patch", (int, str), 1)
    if isinstance(patch, int) and patch < 1:
        fields.fail("temporal_patch", f"expected a positive int or a config value name, received {patch}")
    if isinstance(patch, str) and not _CONFIG_REF.match(patch):
        fields.fail("temporal_patch", f"expected a config key like patch_size_t or patch_size[0], received {patch!r}")
    return FramesSpec(axis=axis, argument=argument, temporal_patch=patch)


def spread_over_frames(n_tokens: int, frames: int, k: int, generator: torch.Generator) -> Tensor:
    """[k] sorted positions of `n_tokens` frame-major tokens, as evenly over `frames` frames as k allows.

    Each frame gets k // frames tokens and k % frames frames (drawn) one more; within a frame the positions are
    drawn uniformly. When the tokens do not split into whole frames, the draw is uniform over all tokens.
    """
    if frames <= 1 or n_tokens % frames:
        return torch.randperm(n_tokens, generator=generator)[:k].sort().values
    per_frame = n_tokens // frames
    counts = torch.full((frames,), k // frames)
    counts[torch.randperm(frames, generator=generator)[: k % frames]] += 1
    picks = [
        frame * per_frame + torch.randperm(per_frame, generator=generator)[: int(count)]
        for frame, count in enumerate(counts)
    ]
    return torch.cat(picks).sort().values
