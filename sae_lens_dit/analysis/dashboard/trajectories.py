"""One sampling run of a backbone, shared by the dashboards of all its SAEs: the sampled images, the
scheduler's prediction of the clean image at every step, and every token of the SAEs' hooks at
every step on the cond branch.

Why its own module: sampling is the expensive, backbone-dependent part of a build and knows nothing
about SAEs; the pages draw their heatmaps on the clean-image predictions (`pred_original_sample`),
because at t = 1000 the model's input is pure noise and its prediction is not. Images are sampled
as `evals.sample_images` samples them (classes cycled, seeded), so they are the protocol's images.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae_lens_dit.analysis.dashboard.cache import Cache, digest, module_digest
from sae_lens_dit.analysis.dashboard.config import DashboardConfig
from sae_lens_dit.analysis.evals import sample_images
from sae_lens_dit.hooking.hooked import HookedDiT, denoiser

SHAPE_FACTOR_NAMES = {
    "colour": ["red", "yellow", "green", "cyan", "blue", "magenta"],
    "size": ["small", "medium", "large"],
    "x": ["left", "centre", "right"],
    "y": ["top", "middle", "bottom"],
}
"""Factor values of the shapes backbone, measured from each sample (`backbones.measure_shape_factors`)."""


@dataclass
class Trajectories:
    """What one sampling run of a backbone gives every dashboard built on it."""

    model: str
    activations: dict[str, Tensor]
    """Hook -> [steps, images, tokens, d] cond-branch activations."""
    timesteps: Tensor  # [steps] float32
    predictions: Tensor  # [steps, images, C, (frames,) h, w] the scheduler's clean-image prediction, latent space
    images: np.ndarray  # [images, (frames,) H, W, C] final samples in [0, 1]
    labels: np.ndarray  # [images] class ids asked for
    factors: dict[str, np.ndarray]
    """Family -> [images] int value; "class" is always there."""
    factor_names: dict[str, list[str]]
    """Family -> display name of each value."""
    grid: tuple[int, int]
    """Token grid of one frame (rows, columns): token i of a frame sits at row i // columns, column i % columns
    (row-major patches)."""
    vae: Any = None
    token_frames: int = 1
    """Video frames in tokens (1: an image); a hook's tokens are frame-major: token i is in frame i // (rows x
    columns) (`hooking.frames`)."""
    _frames: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def frames(self, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
        """Decoded clean-image predictions [len(pairs), (frames,) H, W, C] uint8 of (step, image) pairs (decoded
        once)."""
        missing = [pair for pair in dict.fromkeys(pairs) if pair not in self._frames]
        if missing:
            latents = torch.stack([self.predictions[s, n] for s, n in missing])
            for pair, frame in zip(missing, _decode(self.vae, latents), strict=True):
                self._frames[pair] = frame
        return np.stack([self._frames[pair] for pair in pairs])

    def at_token_frame(self, video: np.ndarray, heat: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(picture [H, W, C], heat of its tokens, token frame) of a decoded sample where `heat` [tokens] peaks:
        an image as it is; a video's token frame f shown as the decoded frame at the same point of the clip
        (frame round(f (F - 1) / (token_frames - 1)) of F: latent frames are temporally compressed)."""
        if self.token_frames == 1:
            return video, heat, 0
        per_frame = heat.shape[0] // self.token_frames
        f = int(heat.argmax()) // per_frame
        shown = round(f * (video.shape[0] - 1) / (self.token_frames - 1))
        return video[shown], heat[f * per_frame : (f + 1) * per_frame], f


@torch.no_grad()
def _decode(vae: Any, latents: Tensor) -> np.ndarray:
    """Latents [n, C, h, w] -> images [n, H, W, C] uint8, as DiTPipeline decodes its output; video latents
    [n, C, frames, h, w] -> [n, frames', H, W, C], as WanPipeline decodes them (per-channel latents_mean and
    latents_std of the VAE's config, else its scaling_factor)."""
    param = next(vae.parameters(), None)
    buffer = next(vae.buffers(), None)
    ref = param if param is not None else buffer
    latents = latents.to(ref.device if ref is not None else "cpu")
    config = vae.config
    if latents.ndim == 5 and getattr(config, "latents_mean", None) is not None:
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(config.latents_mean, dtype=latents.dtype, device=latents.device).view(shape)
        std = torch.tensor(config.latents_std, dtype=latents.dtype, device=latents.device).view(shape)
        latents = latents * std + mean
    else:
        latents = latents / config.scaling_factor
    images = vae.decode(latents).sample.float() / 2 + 0.5
    channels_last = (0, 2, 3, 4, 1) if images.ndim == 5 else (0, 2, 3, 1)
    return to_uint8(images.permute(*channels_last).cpu().numpy())


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] (clipped) -> uint8."""
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


@contextmanager
def _capture_predictions(
    scheduler: Any, out: list[Tensor], on_step: Callable[[], Any] = lambda: None
) -> Iterator[None]:
    """Append each `scheduler.step`'s clean-sample prediction (its next sample where it has none) to `out`
    (and call `on_step`)."""
    own = "step" in vars(scheduler)
    step = scheduler.step

    def capture(model_output: Tensor, timestep: Any, sample: Tensor, *args: Any, **kwargs: Any) -> Any:
        result = step(model_output, timestep, sample, *args, **kwargs)
        prediction = getattr(result, "pred_original_sample", None)
        out.append((prediction if prediction is not None else result[0]).detach().float().cpu())
        on_step()
        return result

    scheduler.step = capture
    try:
        yield
    finally:
        if own:
            scheduler.step = step
        else:
            del scheduler.step


def condition_names(pipe: Any, cfg: DashboardConfig) -> dict[int, str]:
    """What the images are sampled from, by label id: the prompts given, else the pipeline's class names."""
    if cfg.prompts is not None:
        if "prompt" not in inspect.signature(pipe.__call__).parameters:
            raise ValueError(
                f"prompts: {type(pipe).__name__} is class-conditional and takes no prompt; leave prompts unset"
            )
        return dict(enumerate(cfg.prompts))
    labels = getattr(pipe, "labels", None)
    if not labels:
        raise ValueError(
            f"{type(pipe).__name__} has no label map (pipe.labels): pass prompts (--prompts) for a "
            "text-conditioned pipeline, or use a class-conditional one (DiTPipeline, the bundled backbones)"
        )
    return {int(i): name for name, i in sorted(labels.items(), key=lambda item: item[1])}


def _measured_factors(model: str, images: np.ndarray) -> dict[str, np.ndarray]:
    """Shape factors measured from the samples of the shapes backbone; nothing for other backbones."""
    if model.removeprefix("tiny-dit-") != "shapes":
        return {}
    from sae_lens_dit.toy.backbones import measure_shape_factors
    from sae_lens_dit.toy.image_sets import shape_factor_values

    measured = measure_shape_factors(images)
    return shape_factor_values(measured.hue, measured.size, measured.center)


def sample_trajectories(
    pipe: Any, hooked: HookedDiT, hooks: Sequence[str], model: str, cfg: DashboardConfig, progress: bool = False
) -> Trajectories:
    """Sample `cfg.num_images` images and record every token of `hooks` at every step (cond branch)."""
    hooked.check_hook_names(hooks)
    names = condition_names(pipe, cfg)
    labels = [int(c) for c in np.resize(sorted(names), cfg.num_images)]
    predictions: list[Tensor] = []
    calls = -(-cfg.num_images // cfg.batch_size)
    bar = tqdm(total=calls * cfg.num_inference_steps, desc=f"sampling {model}", unit="step", disable=not progress)
    with (
        bar,
        hooked.record(list(hooks), branch="cond") as rec,
        _capture_predictions(pipe.scheduler, predictions, bar.update),
    ):
        sampling = (cfg.num_inference_steps, cfg.guidance_scale, cfg.batch_size, cfg.prompts, cfg.pipeline_kwargs)
        images = sample_images(pipe, labels, cfg.seed, *sampling)
    steps = cfg.num_inference_steps
    if len(predictions) != steps * -(-cfg.num_images // cfg.batch_size):
        raise ValueError(
            f"expected one scheduler step per denoising step ({steps} per pipeline call), saw {len(predictions)} in "
            f"all: dashboards need a pipeline that calls scheduler.step once per step, as DiTPipeline does"
        )
    starts = range(0, cfg.num_images, cfg.batch_size)
    per_call = [predictions[i * steps : (i + 1) * steps] for i in range(len(starts))]
    pred = torch.stack(
        [
            torch.cat(
                [
                    call[s][: min(cfg.batch_size, cfg.num_images - start)]
                    for call, start in zip(per_call, starts, strict=True)
                ]
            )
            for s in range(steps)
        ]
    )
    rows = {hook: rec.rows(hook) for hook in hooks}
    activations = {hook: _arrange(r, steps, cfg.num_images, cfg.batch_size) for hook, r in rows.items()}
    first = rows[hooks[0]]
    timesteps = torch.zeros(steps)
    timesteps[first["step"]] = first["timestep"].float()  # every pipeline call runs the same schedule
    tokens = next(iter(activations.values())).shape[2]
    token_frames = int(rec.frames.max()) if len(rec.frames) else 1
    grid = hooked.token_grid(tokens // token_frames, latent_size=tuple(pred.shape[-2:]))
    factors = {"class": np.asarray(labels), **_measured_factors(model, images)}
    factor_names = {"class": [names.get(i, str(i)) for i in range(max(names) + 1)]}
    factor_names |= {k: SHAPE_FACTOR_NAMES[k] for k in factors if k in SHAPE_FACTOR_NAMES}
    return Trajectories(
        model,
        activations,
        timesteps,
        pred,
        images,
        np.asarray(labels),
        factors,
        factor_names,
        grid,
        pipe.vae,
        token_frames,
    )


def _arrange(rows: dict[str, Tensor], steps: int, num_images: int, batch_size: int) -> Tensor:
    """Flat recorded rows -> [steps, images, tokens, d]; image = run * batch_size + sample."""
    tokens = int(rows["token"].max()) + 1
    out = torch.zeros(steps, num_images, tokens, rows["activation"].shape[1])
    image = rows["run"] * batch_size + rows["sample"]
    out[rows["step"], image, rows["token"]] = rows["activation"].float()
    return out


def trajectories_key(pipe: Any, model: str, cfg: DashboardConfig) -> str:
    """Content hash of everything a sampling run depends on: the backbone's weights and configs (transformer,
    VAE, scheduler), its class names, seed, steps, guidance, number of images, batch size, device, torch and the
    pipeline keyword arguments."""
    scheduler = dict(getattr(pipe.scheduler, "config", {}) or {})
    return digest(
        "trajectories",
        model,
        type(pipe).__name__,
        module_digest(denoiser(pipe), getattr(pipe, "vae", None)),
        type(pipe.scheduler).__name__,
        scheduler,
        sorted(condition_names(pipe, cfg).items()),
        cfg.seed,
        cfg.num_inference_steps,
        cfg.guidance_scale,
        cfg.num_images,
        cfg.batch_size,
        cfg.device,
        torch.__version__,
        *([cfg.pipeline_kwargs] if cfg.pipeline_kwargs else []),  # absent when unset: earlier caches stay valid
    )


def cached_trajectories(
    pipe: Any, hooked: HookedDiT, hooks: Sequence[str], model: str, cfg: DashboardConfig, cache: Cache, progress: bool
) -> tuple[Trajectories, str]:
    """(`sample_trajectories` of `hooks`, its cache key), from the build's cache when it holds this exact run
    (every hook), else sampled once, recording every hook, and cached: `trajectories/<key>/samples` plus one
    file per hook."""
    key = trajectories_key(pipe, model, cfg)
    folder = f"trajectories/{key[:24]}"
    hook_keys = {hook: digest(key, hook) for hook in hooks}
    names = {hook: re.sub(r"[^A-Za-z0-9._-]+", "-", hook) + f"-{hook_keys[hook][:8]}" for hook in hooks}
    samples = cache.load(f"{folder}/samples.safetensors", key)
    found = (
        {hook: cache.load(f"{folder}/{names[hook]}.safetensors", hook_keys[hook]) for hook in hooks} if samples else {}
    )
    if samples is not None and all(v is not None for v in found.values()):
        return _from_cache(model, samples, {hook: found[hook][0]["activation"] for hook in hooks}, pipe.vae), key
    traj = sample_trajectories(pipe, hooked, hooks, model, cfg, progress)
    tensors = {
        "timesteps": traj.timesteps,
        "predictions": traj.predictions,
        "images": torch.from_numpy(np.ascontiguousarray(traj.images)),
        "labels": torch.from_numpy(traj.labels.astype(np.int64)),
        **{f"factor.{k}": torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in traj.factors.items()},
    }
    for hook in hooks:
        cache.save(f"{folder}/{names[hook]}.safetensors", hook_keys[hook], {"activation": traj.activations[hook]})
    values = {
        "factor_names": traj.factor_names,
        "factor_order": list(traj.factors),
        "grid": list(traj.grid),
        "token_frames": traj.token_frames,
    }
    cache.save(f"{folder}/samples.safetensors", key, tensors, values)
    return _from_cache(model, (tensors, json.loads(json.dumps(values))), traj.activations, pipe.vae), key


def _from_cache(
    model: str, samples: tuple[dict[str, Tensor], dict[str, Any]], activations: dict[str, Tensor], vae: Any
) -> Trajectories:
    """A `Trajectories` from the cached tensors (the first build goes through here too, so both read the same)."""
    tensors, values = samples
    order = values["factor_order"]
    return Trajectories(
        model,
        activations,
        tensors["timesteps"],
        tensors["predictions"],
        tensors["images"].numpy(),
        tensors["labels"].numpy(),
        {k: tensors[f"factor.{k}"].numpy() for k in order},
        {k: values["factor_names"][k] for k in order if k in values["factor_names"]},
        tuple(values["grid"]),
        vae,
        int(values.get("token_frames", 1)),
    )
