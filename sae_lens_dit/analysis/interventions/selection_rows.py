"""Rows for latent selection: recorded generations, two contrasting sets of conditions, noised real images.

Why a module of its own: `selection` scores latents on rows wherever they come from; getting the rows
(sampling a pipeline while recording, or noising labelled real images with the scheduler to every timestep
bucket) is a separate job with its own seeding rules, and each source returns the same columns as
`Recording.rows` plus `image` (which image a row belongs to), the key `select_latents` groups by.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sae_lens_dit.analysis.evals import sample_images
from sae_lens_dit.conventions import DEFAULT_BUCKET_EDGES, TIMESTEP_MAX, Branch
from sae_lens_dit.hooking.hooked import HookedDiT, denoiser


def record_samples(
    pipe: Any,
    hooked: HookedDiT,
    hook: str | Sequence[str],
    class_labels: Sequence[int],
    seed: int,
    num_inference_steps: int = 50,
    guidance_scale: float | None = None,
    batch_size: int = 100,
    tokens_per_image: int | None = None,
    branch: Branch = "cond",
    prompts: Sequence[str] | None = None,
) -> tuple[dict[str, Tensor] | dict[str, dict[str, Tensor]], np.ndarray]:
    """Sample `class_labels` (as `evals.sample_images` does) while recording `hook`: (rows, images).

    Rows get an extra column `image`, the index into `class_labels` (and into the images) of their
    sample. Several hooks: rows is {hook: rows}, recorded in the same run. A text-conditioned pipeline
    takes `prompts`; `class_labels` are then indices into it.
    """
    hooks = [hook] if isinstance(hook, str) else list(hook)
    with hooked.record(hooks, tokens_per_image=tokens_per_image, branch=branch, seed=seed) as rec:
        images = sample_images(pipe, class_labels, seed, num_inference_steps, guidance_scale, batch_size, prompts)
    out = {}
    for name in hooks:
        rows = rec.rows(name)
        rows["image"] = rows["run"] * batch_size + rows["sample"]
        out[name] = rows
    return (out[hooks[0]] if isinstance(hook, str) else out), images


def record_contrast(
    pipe: Any,
    hooked: HookedDiT,
    hook: str | Sequence[str],
    target: Sequence[int | str],
    rest: Sequence[int | str],
    per_condition: int,
    seed: int,
    **sample_kwargs: Any,
) -> tuple[dict[str, Tensor] | dict[str, dict[str, Tensor]], np.ndarray, np.ndarray]:
    """Two user-given sets of conditions, sampled and recorded for `select_latents`: (rows, images, target_images).

    `target` and `rest` are class ids, or prompts for a text-conditioned pipeline (all of one kind);
    `per_condition` images of each are sampled (`record_samples`, with `sample_kwargs`), and `target_images`
    is True for the images of a target condition: `select_latents(sae, rows, n, target_images=...)`.
    """
    conditions = [*target, *rest]
    kinds = {isinstance(c, str) for c in conditions}
    if len(kinds) != 1 or not target or not rest:
        raise ValueError(
            "record_contrast: give non-empty target and rest sets, both class ids or both prompts; received "
            f"target={list(target)!r}, rest={list(rest)!r}"
        )
    prompts = [str(c) for c in conditions] if kinds == {True} else None
    indices = list(range(len(conditions))) if prompts is not None else [int(c) for c in conditions]
    labels = [label for label in indices for _ in range(per_condition)]
    rows, images = record_samples(pipe, hooked, hook, labels, seed, prompts=prompts, **sample_kwargs)
    target_images = np.repeat(np.arange(len(conditions)) < len(target), per_condition)
    return rows, images, target_images


@torch.no_grad()
def record_noised(
    pipe: Any,
    hooked: HookedDiT,
    hook: str,
    images: Tensor,
    seed: int = 0,
    edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
    batch_size: int = 64,
    **transformer_kwargs: Any,
) -> dict[str, Tensor]:
    """Rows of real images: each of `images` ([n, C, H, W] in the pipeline's pixel range [-1, 1]) noised
    with the scheduler's own `add_noise` to the middle of every timestep bucket of `edges`, one
    transformer call per batch (per-image tensors in `transformer_kwargs`, e.g. class_labels=[n], are
    sliced with it). Columns as `Recording.rows` plus `image` (index into `images`)."""
    mids = [(lo + hi) / 2.0 for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    train_steps = pipe.scheduler.config.num_train_timesteps
    raw = torch.tensor([min(round(m * train_steps / TIMESTEP_MAX), train_steps - 1) for m in mids], dtype=torch.long)
    vae = getattr(pipe, "vae", None)
    generator = torch.Generator().manual_seed(seed)
    parts: list[dict[str, Tensor]] = []
    for start in range(0, len(images), batch_size):
        x0 = images[start : start + batch_size].to(pipe.device, denoiser(pipe).dtype)
        if vae is not None and hasattr(vae, "encode"):  # a latent-space pipeline: encode like its training data
            x0 = vae.encode(x0).latent_dist.mean * vae.config.scaling_factor
        n = len(x0)
        noise = torch.randn((len(raw), *x0.shape), generator=generator).to(x0)
        noisy = pipe.scheduler.add_noise(
            x0[None].expand(len(raw), *x0.shape).reshape(-1, *x0.shape[1:]),
            noise.reshape(-1, *x0.shape[1:]),
            raw.repeat_interleave(n),
        )
        kwargs = {
            k: v[start : start + batch_size].repeat(len(raw), *([1] * (v.dim() - 1)))
            if isinstance(v, Tensor) and len(v) == len(images)
            else v
            for k, v in transformer_kwargs.items()
        }
        with hooked.record([hook]) as rec:
            hooked.transformer(noisy, timestep=raw.repeat_interleave(n).to(pipe.device), **kwargs)
        rows = rec.rows(hook)
        rows["image"] = start + rows["sample"] % n
        parts.append(rows)
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
