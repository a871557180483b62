"""The held-out denoising pass of a text-conditioned pipeline (SD, SDXL, PixArt): its own samples, re-noised.

Why: the protocol's held-out pass (`denoising.heldout_pass`) noises labelled images and calls a DiT with
class labels. A text-to-image pipeline has no labelled image set of its own and its denoiser takes
family-specific conditioning (prompt embeddings, pooled embeddings, SDXL's size ids). So here the
held-out images are the pipeline's own clean latents for the prompts (the `label` is the prompt's index),
and the conditioning is whatever the pipeline itself passed its denoiser for each prompt and CFG branch,
captured from one call and replayed per row. Noise follows the model's training objective: DDPM noising
with the scheduler's betas, scored against the noise or v (`prediction_type`). Flow-matching pipelines
(SD3, Flux) are refused: their objective differs and is evaluated by the training report.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler

from sae_lens_dit.analysis.evals.denoising import HeldoutPass, with_losses
from sae_lens_dit.conventions import BRANCH_NAMES, DEFAULT_BUCKET_EDGES, TIMESTEP_MAX
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.image_sets import LabelledImages

CAPTURE_GUIDANCE = 2.0
"""Guidance of the one call whose conditioning is captured: any scale above 1 makes the pipeline pass both
branches (cond prompt and negative prompt)."""


def check_prompted(pipe: Any) -> None:
    """One clear error, before any sampling, for a pipeline this pass cannot evaluate."""
    if "prompt" not in inspect.signature(pipe.__call__).parameters:
        raise ValueError(f"prompts: {type(pipe).__name__} takes no prompt; evaluate it with its held-out images")
    objective = pipe.scheduler.config.get("prediction_type")
    if not hasattr(pipe.scheduler, "alphas_cumprod") or objective not in ("epsilon", "v_prediction"):
        raise ValueError(
            f"the held-out denoising pass re-noises samples the DDPM way, but {type(pipe.scheduler).__name__} "
            f"(prediction_type {objective!r}) is not a DDPM-family scheduler predicting noise or "
            f"v; evaluate this backbone with the training report (`train` evaluates fresh harvested rows)"
        )


@torch.no_grad()
def prompted_heldout_pass(
    pipe: Any,
    hooked: HookedDiT,
    hook_name: str,
    prompts: Sequence[str],
    num_images: int,
    edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
    seed: int = 0,
    batch_size: int = 64,
    num_inference_steps: int = 20,
    guidance_scale: float | None = None,
    hook_name_out: str | None = None,
) -> HeldoutPass:
    """`num_images` samples of the pipeline (prompts cycled, seed `seed`) noised to one timestep per image in
    each bucket and run once per CFG branch with the conditioning the pipeline gave each prompt (`hook_name_out`: a
    transcoder's output hook, as in `denoising.heldout_pass`)."""
    hooked.check_hook_names([hook_name] + ([hook_name_out] if hook_name_out else []))
    check_prompted(pipe)
    if num_images < 1 or not prompts:
        raise ValueError(
            f"need at least one image and one prompt, received {num_images} images, {len(prompts)} prompts"
        )
    labels = np.resize(np.arange(len(prompts)), num_images)
    x0 = _clean_latents(pipe, prompts, labels, seed, batch_size, num_inference_steps, guidance_scale)
    conditioning = _captured_conditioning(pipe, hooked, prompts)
    ddpm = DDPMScheduler.from_config(pipe.scheduler.config)
    velocity = pipe.scheduler.config.get("prediction_type") == "v_prediction"
    gen = torch.Generator().manual_seed(seed + 1)
    n = len(x0)
    noisy, target, timestep, bucket, branch, index = [], [], [], [], [], []
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        t = torch.randint(int(lo), max(int(hi), int(lo) + 1), (n,), generator=gen).clamp_max(int(TIMESTEP_MAX) - 1)
        eps = torch.randn(x0.shape, generator=gen)
        xt = ddpm.add_noise(x0, eps, t)
        goal = ddpm.get_velocity(x0, eps, t) if velocity else eps
        for br in range(len(BRANCH_NAMES)):
            noisy.append(xt), target.append(goal), timestep.append(t)
            bucket.append(torch.full((n,), b)), branch.append(torch.full((n,), br)), index.append(torch.arange(n))
    device, dtype = hooked.transformer.device, hooked.transformer.dtype
    prompt_of_row = torch.from_numpy(labels).long().repeat(len(timestep))  # [rows]
    branch_of_row = torch.cat(branch)
    images = LabelledImages(x0.numpy(), labels, {"class": labels})
    hp = HeldoutPass(
        hook_name,
        tuple(float(e) for e in edges),
        images,
        torch.cat(noisy).to(device, dtype),
        torch.cat(target).to(device),
        torch.cat(timestep).to(device),
        lambda idx: conditioning(prompt_of_row[idx.cpu()], branch_of_row[idx.cpu()]),
        torch.cat(bucket),
        branch_of_row,
        torch.cat(index),
        hook_name_out,
    )
    return with_losses(hooked, hp, batch_size)


def _clean_latents(
    pipe: Any,
    prompts: Sequence[str],
    labels: np.ndarray,
    seed: int,
    batch_size: int,
    steps: int,
    guidance: float | None,
) -> torch.Tensor:
    """[n, C, H, W] the pipeline's own final latents (before the VAE) for each image's prompt, on the CPU."""
    parts = []
    for start in range(0, len(labels), batch_size):
        generator = torch.Generator(pipe.device).manual_seed(seed * 100_003 + start)
        kwargs = {} if guidance is None else {"guidance_scale": guidance}
        batch = [prompts[int(i)] for i in labels[start : start + batch_size]]
        out = pipe(prompt=batch, num_inference_steps=steps, generator=generator, output_type="latent", **kwargs)
        parts.append(out.images.float().cpu())
    return torch.cat(parts)


def _captured_conditioning(pipe: Any, hooked: HookedDiT, prompts: Sequence[str]):
    """A function (prompt ids [rows], branches [rows]) -> the denoiser's conditioning keywords for those rows,
    sliced from one pipeline call over all prompts at `CAPTURE_GUIDANCE` (both branches)."""
    denoiser = hooked.transformer
    seen: dict[str, Any] = {}

    def capture(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        if not seen:
            signature = inspect.signature(module.forward)
            call = dict(signature.bind(*args, **kwargs).arguments)
            for name, parameter in signature.parameters.items():
                if parameter.kind is inspect.Parameter.VAR_KEYWORD:  # a **kwargs parameter: its keywords as such
                    call.update(call.pop(name, {}))
            seen["call"] = call
            seen["context"] = hooked.read_call(args, kwargs)

    handle = denoiser.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        pipe(prompt=list(prompts), num_inference_steps=1, guidance_scale=CAPTURE_GUIDANCE, output_type="latent")
    finally:
        handle.remove()
    call, context = seen["call"], seen["context"]
    batch = len(context.sample)
    row_of = {(int(s), int(b)): r for r, (s, b) in enumerate(zip(context.sample, context.branch, strict=True))}
    missing = [(p, b) for p in range(len(prompts)) for b in range(len(BRANCH_NAMES)) if (p, b) not in row_of]
    if missing:
        raise ValueError(
            f"{type(pipe).__name__} at guidance {CAPTURE_GUIDANCE} did not pass every (prompt, branch) to its denoiser "
            f"(missing {missing[:4]}); the held-out pass needs both CFG branches"
        )
    replaced = (hooked.spec.latents, hooked.spec.timestep.argument, "return_dict")  # set per row; .sample read
    fixed = {name: value for name, value in call.items() if name not in replaced}

    def conditioning(prompt_ids: torch.Tensor, branches: torch.Tensor) -> dict[str, Any]:
        rows = torch.tensor([row_of[(int(p), int(b))] for p, b in zip(prompt_ids, branches, strict=True)])
        return {name: _rows(value, rows, batch) for name, value in fixed.items()}

    return conditioning


def _rows(value: Any, rows: torch.Tensor, batch: int) -> Any:
    """`value` with its batch dimension indexed by `rows` (tensors whose first dimension is the batch, inside
    dicts, lists and tuples too); anything else as it was."""
    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch:
        return value[rows.to(value.device)]
    if isinstance(value, dict):
        return {key: _rows(item, rows, batch) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_rows(item, rows, batch) for item in value)
    return value
