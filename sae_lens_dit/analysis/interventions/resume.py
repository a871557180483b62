"""Steered samples resumed mid-schedule from their unedited trajectory: a spec changes nothing before the first
step it touches, so a steered sample starts there, from the unedited sample's latents at that step.

Why its own module: `DiTPipeline` always starts from noise at step 0 and has no step callback, so starting
at step s needs a denoising loop of the package's own. `denoise` is that one loop: DiTPipeline's steps (the
CFG-doubled batch with the null class 1000 after the class labels, `scheduler.scale_model_input`, guidance on
the noise channels, the learned-sigma split, `scheduler.step` for every update, the VAE decode of `decode`)
over any range of the schedule, checked against the stock pipeline in tests/analysis/interventions/
test_resume.py. Resuming is exact only where a step depends on nothing but the latents and t, i.e. DDIM
(eta 0, no multistep history): `resumable` says why a pipeline is not, and callers then sample from step 0
with the stock pipeline. Specs apply with the error term (`steer`'s default): rows outside every edit's
window then keep their activation bit for bit, so up to its first edited step a steered sample is its
unedited one (up to float32 rounding of another batch). Gates and regions only narrow an edit, so its
window (and `steps`) alone decide where it may start.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sae_lens_dit.analysis.interventions import steering
from sae_lens_dit.analysis.interventions.spec import SteeringSpec
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.backbones import NULL_CLASS

RESUMABLE_SCHEDULERS = ("DDIMScheduler",)
"""Schedulers whose step reads only (model output, t, latents): resuming from recorded latents is exact."""


def resumable(pipe: Any) -> str | None:
    """None when `denoise` runs `pipe`'s sampling from any step; else why it cannot."""
    from diffusers import DiTPipeline

    if not isinstance(pipe, DiTPipeline):
        return f"{type(pipe).__name__} is not a DiTPipeline (the one loop `denoise` follows)"
    name = type(pipe.scheduler).__name__
    if name not in RESUMABLE_SCHEDULERS:
        return f"{name} keeps state between steps or adds noise; resuming needs one of {list(RESUMABLE_SCHEDULERS)}"
    return None


def guidance_of(pipe: Any, guidance_scale: float | None) -> float:
    """The guidance scale a call of `pipe` with `guidance_scale` (None: its default) samples with."""
    if guidance_scale is not None:
        return float(guidance_scale)
    default = getattr(pipe, "default_guidance_scale", None)  # TinyDiTPipeline's measured default
    return float(
        default if default is not None else inspect.signature(pipe.__call__).parameters["guidance_scale"].default
    )


def initial_latents(pipe: Any, n: int, generator: torch.Generator | list[torch.Generator]) -> Tensor:
    """[n, C, h, w] starting noise, drawn as DiTPipeline draws it."""
    from diffusers.utils.torch_utils import randn_tensor

    size, channels = pipe.transformer.config.sample_size, pipe.transformer.config.in_channels
    shape = (n, channels, size, size)
    return randn_tensor(shape, generator=generator, device=pipe._execution_device, dtype=pipe.transformer.dtype)


@torch.no_grad()
def denoise(
    pipe: Any,
    latents: Tensor,
    class_labels: Sequence[int],
    num_inference_steps: int,
    guidance_scale: float,
    start: int = 0,
    stop: int | None = None,
    on_step: Callable[[int, Tensor], Any] | None = None,
) -> Tensor:
    """Run schedule steps start .. stop - 1 (stop None: the last) of a DiTPipeline on `latents` [n, C, h, w] (the
    latents entering step `start`); returns the latents after the last step run. `on_step(i, latents)` sees the
    latents entering each step i."""
    scheduler, transformer, device = pipe.scheduler, pipe.transformer, pipe._execution_device
    scheduler.set_timesteps(num_inference_steps)
    channels = transformer.config.in_channels
    labels = torch.tensor([int(c) for c in class_labels], device=device).reshape(-1)
    guided = guidance_scale > 1
    if guided:
        labels = torch.cat([labels, torch.full_like(labels, NULL_CLASS)])
    for i in range(start, len(scheduler.timesteps) if stop is None else stop):
        if on_step is not None:
            on_step(i, latents)
        t = scheduler.timesteps[i]
        latents = scheduler.scale_model_input(latents, t)
        model_input = torch.cat([latents] * 2) if guided else latents
        timesteps = t[None].to(device).expand(len(model_input))
        noise_pred = transformer(model_input, timestep=timesteps, class_labels=labels).sample
        eps, rest = noise_pred[:, :channels], noise_pred[:, channels:]
        if guided:
            cond, uncond = eps.chunk(2)
            eps, rest = uncond + guidance_scale * (cond - uncond), rest[: len(latents)]
        learned_sigma = transformer.config.out_channels // 2 == channels
        model_output = eps if learned_sigma else torch.cat([eps, rest], dim=1)
        latents = scheduler.step(model_output, t, latents).prev_sample
    return latents


@torch.no_grad()
def decode(pipe: Any, latents: Tensor) -> np.ndarray:
    """Final latents [n, C, h, w] -> images [n, H, W, C] float32 in [0, 1], as DiTPipeline's `np` output."""
    samples = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return (samples / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy()


@dataclass(frozen=True)
class Unedited:
    """Unedited samples with their latents at every step: what steered samples resume from."""

    labels: tuple[int, ...]
    states: Tensor  # [steps + 1, n, C, h, w] latents entering step i; states[steps]: the final latents
    timesteps: tuple[tuple[float, ...], ...]
    """Per step: the call's timesteps as steering reads them (`CallContext.timestep`, package convention)."""
    images: np.ndarray  # [n, H, W, C] in [0, 1]

    @classmethod
    def concat(cls, parts: Sequence[Unedited]) -> Unedited:
        """The samples of `parts` (of one schedule) as one set, in order."""
        return cls(
            tuple(label for p in parts for label in p.labels),
            torch.cat([p.states for p in parts], dim=1),
            tuple(tuple(sorted(set().union(*ts))) for ts in zip(*(p.timesteps for p in parts), strict=True)),
            np.concatenate([p.images for p in parts]),
        )

    def row(self, i: int) -> Unedited:
        return Unedited((self.labels[i],), self.states[:, i : i + 1], self.timesteps, self.images[i : i + 1])


class _CallTimesteps:
    """A call listener: the distinct timesteps of each transformer call, as steering's hooks read them."""

    def __init__(self, hooked: HookedDiT):
        self.hooked, self.calls = hooked, []

    def on_call_start(self) -> None:
        t = self.hooked.call_context.timestep
        self.calls.append((float("nan"),) if t is None else tuple(sorted(set(t.tolist()))))

    def on_call_end(self) -> None:
        pass


def sample_unedited(
    pipe: Any, hooked: HookedDiT, labels: Sequence[int], seed: int, num_inference_steps: int, guidance_scale: float
) -> Unedited:
    """One unedited sample per label, every one from the noise of `seed` (a generator per sample, as the
    dashboard previews draw it), with its latents at every step."""
    generators = [torch.Generator(pipe.device).manual_seed(seed) for _ in labels]
    states: list[Tensor] = []
    calls = _CallTimesteps(hooked)
    with hooked.listening(calls):
        final = denoise(
            pipe,
            initial_latents(pipe, len(labels), generators),
            labels,
            num_inference_steps,
            guidance_scale,
            on_step=lambda _, x: states.append(x),
        )
    return Unedited(
        tuple(int(c) for c in labels), torch.stack([*states, final]), tuple(calls.calls), decode(pipe, final)
    )


def first_edited_step(spec: SteeringSpec, timesteps: Sequence[Sequence[float]]) -> int:
    """The first step (of the steps whose call timesteps are `timesteps`) where an edit of `spec` may touch a row:
    one of the step's timesteps lies in its window (NaN: a call without one, counted as inside) and its `steps`,
    if any, list the step. len(timesteps) when no edit touches any step."""
    for i, ts in enumerate(timesteps):
        for edit in spec.edits:
            window = edit.timesteps
            inside = window is None or any(t != t or window[0] <= t <= window[1] for t in ts)
            if inside and (edit.steps is None or i in edit.steps):
                return i
    return len(timesteps)


def steer_resumed(
    pipe: Any,
    hooked: HookedDiT,
    saes: Sequence[Any],
    unedited: Unedited,
    jobs: Sequence[tuple[int, SteeringSpec]],
    num_inference_steps: int,
    guidance_scale: float,
    batch_size: int,
    on_batch: Callable[[], Any] = lambda: None,
) -> np.ndarray:
    """Images [len(jobs), H, W, C] of `unedited` sample `row` steered by `spec`, for each (row, spec) job, each
    resumed at its first edited step (`first_edited_step`; a spec that touches no step gives the unedited image).
    Jobs run in batches of `batch_size`, sorted by start step: a batch starts at its earliest start and each
    sample joins it at its own (one `steer` block per stretch between joins, with one spec per sample present)."""
    steps = len(unedited.timesteps)
    starts = [first_edited_step(spec, unedited.timesteps) for _, spec in jobs]
    images = np.zeros((len(jobs), *unedited.images.shape[1:]), np.float32)
    for j, start in enumerate(starts):
        if start == steps:
            images[j] = unedited.images[jobs[j][0]]
    order = sorted((j for j in range(len(jobs)) if starts[j] < steps), key=starts.__getitem__)
    for batch in (order[i : i + batch_size] for i in range(0, len(order), batch_size)):
        joins = sorted({starts[j] for j in batch})
        members: list[int] = []
        latents = unedited.states[0, :0]
        for a, b in zip(joins, [*joins[1:], steps], strict=True):
            joining = [j for j in batch if starts[j] == a]
            members += joining
            latents = torch.cat([latents, unedited.states[a, [jobs[j][0] for j in joining]]])
            labels = [unedited.labels[jobs[j][0]] for j in members]
            with steering.steer(hooked, saes, [jobs[j][1] for j in members], first_step=a):
                latents = denoise(pipe, latents, labels, num_inference_steps, guidance_scale, a, b)
        images[members] = decode(pipe, latents)
        on_batch()
    return images
