"""Editing samples: the same generation with and without a steering spec, and images to compare them.

Why a module of its own: this is the face of interventions for a user, the CLI (`sae-lens-dit edit`),
dashboards and benchmarks. `edit` re-generates one sample (same seed, same call arguments) with the
spec applied beside the unedited one and warns about edits that matched nothing; `preview_latent`
does it for one latent (dashboard previews); `sample_seeded` and `steer_groups` re-generate many
samples, each group with its own spec, bit for bit like the unsteered batch (benchmarks and tuning
score steering that way); `save_grid` writes image rows as one PNG.

The spec itself is `spec` (plain data, YAML/JSON), applying it inside a run is `steering`, token
regions are `regions`; what to edit is chosen in `selection`, `gates`, `windows`, `recipes` and
`concepts`. The names of `spec`, `regions` and `steering` this module held before the split are
re-exported here (`import X as X`). Timesteps follow the package convention: DDPM scale [0, 1000].
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens import SAE

from sae_lens_dit.analysis.interventions.regions import region_mask as region_mask
from sae_lens_dit.analysis.interventions.spec import OPERATIONS as OPERATIONS
from sae_lens_dit.analysis.interventions.spec import UNITS as UNITS
from sae_lens_dit.analysis.interventions.spec import LatentEdit, Operation, SteeringSpec
from sae_lens_dit.analysis.interventions.spec import SAESource as SAESource
from sae_lens_dit.analysis.interventions.spec import Unit as Unit
from sae_lens_dit.analysis.interventions.steering import SteeringTrace, check_spec, steer
from sae_lens_dit.analysis.interventions.steering import decoder_delta as decoder_delta
from sae_lens_dit.hooking.hooked import HookedDiT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EditResult:
    """Images of one sampling call without (`before`) and with (`after`) the spec, [n, H, W, C] in [0, 1]."""

    before: np.ndarray
    after: np.ndarray
    trace: SteeringTrace


def generate(pipe: Any, seed: int, **pipe_kwargs: Any) -> np.ndarray:
    """`pipe(**pipe_kwargs)` as `np` images [n, H, W, C], from a generator seeded with `seed` (so a call with
    the same seed and arguments re-generates the same sample); pass class_labels=... or prompt=...."""
    generator = torch.Generator(pipe.device).manual_seed(seed)
    return pipe(generator=generator, output_type="np", **pipe_kwargs).images


def sample_seeded(
    pipe: Any, labels: Sequence[int], seeds: Sequence[int], num_inference_steps: int = 20, **pipe_kwargs: Any
) -> np.ndarray:
    """`np` images [n, H, W, C]; sample i uses its own generator seeded with seeds[i], so any subset of
    samples re-generates the same images from the same noise (steering groups of samples one spec at a time
    relies on it), equal up to float rounding where the CPU's kernels depend on the batch size."""
    generators = [torch.Generator(pipe.device).manual_seed(int(s)) for s in seeds]
    return pipe(
        class_labels=[int(c) for c in labels],
        num_inference_steps=num_inference_steps,
        generator=generators,
        output_type="np",
        **pipe_kwargs,
    ).images


def steer_groups(
    pipe: Any,
    hooked: HookedDiT,
    saes: Sequence[SAE],
    labels: np.ndarray,
    seeds: np.ndarray,
    group: np.ndarray,
    spec_for: Any,
    num_inference_steps: int = 20,
) -> np.ndarray:
    """Images of every sample, each group of samples (equal `group` values) steered with `spec_for(value)`."""
    out = None
    for value in dict.fromkeys(group.tolist()):
        idx = np.flatnonzero(group == value)
        with steer(hooked, saes, spec_for(value)):
            images = sample_seeded(pipe, labels[idx], seeds[idx], num_inference_steps)
        out = np.zeros((len(labels), *images.shape[1:]), images.dtype) if out is None else out
        out[idx] = images
    return out


def edit(
    pipe: Any,
    hooked: HookedDiT,
    saes: Sequence[SAE],
    spec: SteeringSpec,
    seed: int,
    use_error_term: bool = True,
    **pipe_kwargs: Any,
) -> EditResult:
    """Re-generate the sample of (`seed`, `pipe_kwargs`) with `spec` applied, beside the unedited one."""
    check_spec(hooked, saes, spec)
    before = generate(pipe, seed, **pipe_kwargs)
    with steer(hooked, saes, spec, use_error_term) as trace:
        after = generate(pipe, seed, **pipe_kwargs)
    untouched = sorted(set(range(len(spec.edits))) - {r["edit"] for r in trace.records})
    for index in untouched:
        e = spec.edits[index]
        logger.warning(
            "edits[%d] at %s (timesteps %s, steps %s, branch %s) matched no step, timestep or row of this "
            "run and changed nothing; widen its window or steps",
            index,
            e.hook,
            e.timesteps,
            e.steps,
            e.branch,
        )
    return EditResult(before, after, trace)


def preview_latent(
    pipe: Any,
    sae: SAE,
    latent: int,
    strength: float,
    seed: int = 0,
    op: Operation = "add",
    hooked: HookedDiT | None = None,
    *,
    typical: float | None = None,
    window: tuple[float, float] | None = None,
    **pipe_kwargs: Any,
) -> EditResult:
    """Before/after images of one latent steered on every token and branch (for dashboards).

    `op="add"` moves the activation by `strength` x the latent's decoder direction; `clamp`/`scale` use
    `strength` as the value or factor, `zero` ignores it. With `typical` (the latent's typical active value)
    add and clamp values are `strength` x typical (`unit: typical`). `window` ([low, high] timesteps, DDPM
    scale) limits the edit in time; None = the whole run. Pass the pipeline's call arguments
    (class_labels=[3], num_inference_steps=..., ...).
    """
    hooked = hooked if hooked is not None else HookedDiT.from_pipeline(pipe)
    unit = {"unit": "typical", "typical": (typical,)} if typical is not None else {}
    spec = SteeringSpec((LatentEdit(sae.cfg.metadata.hook_name, (latent,), op, strength, timesteps=window, **unit),))
    return edit(pipe, hooked, [sae], spec, seed, **pipe_kwargs)


def save_grid(path: str | Path, rows: Sequence[np.ndarray], min_size: int = 64) -> Path:
    """Write image rows (each [n, H, W, C] in [0, 1]) as one PNG grid, small images enlarged (nearest)."""
    from PIL import Image

    scale = max(1, -(-min_size // rows[0].shape[1]))
    pad = 2
    strips = []
    for row in rows:
        tiles = [
            np.pad(np.repeat(np.repeat(img, scale, 0), scale, 1), ((pad, pad), (pad, pad), (0, 0)))
            for img in np.clip(row, 0.0, 1.0)
        ]
        strips.append(np.concatenate(tiles, axis=1))
    grid = (np.concatenate(strips, axis=0) * 255).round().astype(np.uint8)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return Path(path)
