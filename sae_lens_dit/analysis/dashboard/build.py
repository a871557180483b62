"""Feature dashboards: a static HTML site per SAE showing where, on which images and when in the
denoising trajectory each latent fires.

Why plain files: researchers open the site from disk (file://) or any static server, share it as a
folder and keep it beside the SAE; nothing runs but a little JavaScript that sorts and filters.

Data, one sampling run per backbone, shared by every SAE of that backbone:
- `num_images` images sampled with the backbone's pipeline (classes cycled, seeded as
  `evals.sample_images`), every token of each SAE's hook recorded at every step on the cond
  branch with `HookedDiT.record`;
- the scheduler's prediction of the clean image at each step (`pred_original_sample`), on which
  token heatmaps are drawn: at t = 1000 the model's input is pure noise, its prediction is not;
- per SAE: latents from `evals.reconstruct`; firing frequency and mean activation per timestep
  bucket and the early / late / persistent / dead profile from `evals.latent_timestep_stats`.

Build: every file is written only when its bytes change (images are named by a hash of their
content, so a rebuild reuses them), files of an earlier build that are no longer produced are
removed, and files the dashboard did not write (not in its `manifest.json`) are never touched.
Timesteps follow the package convention: DDPM scale [0, 1000], 1000 = pure noise.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from sae_lens_dit.analysis.dashboard import html
from sae_lens_dit.analysis.dashboard.files import MANIFEST, SiteFiles  # noqa: F401  (MANIFEST is re-exported)
from sae_lens_dit.analysis.evals import (
    DENSE_THRESHOLD,
    LatentTimestepStats,
    bucket_masks,
    latent_timestep_stats,
    reconstruct,
    sample_images,
)
from sae_lens_dit.conventions import PROFILES, sae_display_name
from sae_lens_dit.hooking.hooked import HookedDiT

logger = logging.getLogger(__name__)

ASSETS = ("style.css", "site.js")
"""Static files shipped in `sae_lens_dit/analysis/dashboard/assets/`, copied to `<output>/assets/`."""
OVERLAY_RGB = np.array([255.0, 48.0, 0.0])
OVERLAY_ALPHA = 0.75
"""Heatmap colour and its opacity where the latent reaches its maximum over the sampled set."""
SHAPE_FACTOR_NAMES = {
    "colour": ["red", "yellow", "green", "cyan", "blue", "magenta"],
    "size": ["small", "medium", "large"],
    "x": ["left", "centre", "right"],
    "y": ["top", "middle", "bottom"],
}
"""Factor values of the shapes backbone, measured from each sample (`backbones.measure_shape_factors`)."""


@dataclass(frozen=True)
class DashboardConfig:
    """Settings of `build_dashboard` and `sae-lens-dit dashboard` (field docstrings are the CLI help)."""

    num_images: int = 32
    """Images sampled with the backbone (classes cycled); every token of every step is encoded."""
    num_inference_steps: int = 20
    """Denoising steps per image (the timestep axis of every plot)."""
    guidance_scale: float | None = None
    """Classifier-free guidance of the samples; None: the pipeline's default."""
    max_latents: int = 64
    """Latents that get a page: the first alive ones by id (the index lists every latent)."""
    latents: tuple[int, ...] | None = None
    """Latent ids that get a page, instead of the first max_latents alive ones."""
    top_images: int = 8
    """Top-activating images per latent page."""
    strip_steps: int = 8
    """Timesteps in the strip that follows one image through denoising."""
    thumb_size: int = 96
    """Side of every thumbnail in pixels."""
    neighbours: int = 5
    """Nearest latents by decoder cosine listed per page."""
    edges: tuple[float, ...] = tuple(float(t) for t in range(0, 1001, 100))
    """Timestep bucket edges of the frequency and mean-activation plots (DDPM scale, 1000 = noise)."""
    steering: bool = True
    """Steering previews (before / after) when sae_lens_dit.analysis.interventions.editing is installed."""
    steering_strength: float = 4.0
    """Steering previews clamp the latent at this many times its typical active value (the median of its non-zero
    codes over the sampled tokens), on every token, inside the latent's own timestep window (the buckets around
    its peak firing frequency that reach half of it); the second preview zeroes it there. At 4 the first previews of
    the bundled shapes SAE at block 1 move pixels by 0.16 on average (benchmarks/results/previews.md)."""
    seed: int = 0
    """Seed of the sampled images."""
    batch_size: int = 32
    """Images per pipeline call."""
    device: str = "cpu"
    """Device of the backbone and SAEs."""

    def __post_init__(self) -> None:
        for name in ("num_images", "num_inference_steps", "top_images", "strip_steps", "thumb_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DashboardConfig.{name} must be at least 1, received {getattr(self, name)}")
        if self.max_latents < 0 or self.neighbours < 0:
            raise ValueError("DashboardConfig.max_latents and neighbours must not be negative")
        if len(self.edges) < 2 or list(self.edges) != sorted(self.edges):
            raise ValueError(f"DashboardConfig.edges must be at least two increasing timesteps, received {self.edges}")
        if not 0 < self.steering_strength < float("inf"):
            raise ValueError(
                f"DashboardConfig.steering_strength must be a positive multiple of the typical value, "
                f"received {self.steering_strength}"
            )


# ------------------------------------------------------------------------------------------------
# Sampling: images, the clean-image prediction at every step, and every token of the hooks.


@dataclass
class Trajectories:
    """What one sampling run of a backbone gives every dashboard built on it."""

    model: str
    activations: dict[str, Tensor]
    """Hook -> [steps, images, tokens, d] cond-branch activations."""
    timesteps: Tensor  # [steps] float32
    predictions: Tensor  # [steps, images, C, h, w] the scheduler's clean-image prediction, latent space
    images: np.ndarray  # [images, H, W, C] final samples in [0, 1]
    labels: np.ndarray  # [images] class ids asked for
    factors: dict[str, np.ndarray]
    """Family -> [images] int value; "class" is always there."""
    factor_names: dict[str, list[str]]
    """Family -> display name of each value."""
    grid: tuple[int, int]
    """Token grid (rows, columns): token i sits at row i // columns, column i % columns (row-major patches)."""
    vae: Any = None
    _frames: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def frames(self, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
        """Decoded clean-image predictions [len(pairs), H, W, C] uint8 of (step, image) pairs (decoded once)."""
        missing = [pair for pair in dict.fromkeys(pairs) if pair not in self._frames]
        if missing:
            latents = torch.stack([self.predictions[s, n] for s, n in missing])
            for pair, frame in zip(missing, _decode(self.vae, latents), strict=True):
                self._frames[pair] = frame
        return np.stack([self._frames[pair] for pair in pairs])


@torch.no_grad()
def _decode(vae: Any, latents: Tensor) -> np.ndarray:
    """Latents [n, C, h, w] -> images [n, H, W, C] uint8, as DiTPipeline decodes its output."""
    param = next(vae.parameters(), None)
    buffer = next(vae.buffers(), None)
    ref = param if param is not None else buffer
    latents = latents.to(ref.device if ref is not None else "cpu")
    images = vae.decode(latents / vae.config.scaling_factor).sample
    return _uint8((images.float() / 2 + 0.5).permute(0, 2, 3, 1).cpu().numpy())


def _uint8(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] (clipped) -> uint8."""
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


@contextmanager
def _capture_predictions(scheduler: Any, out: list[Tensor]) -> Iterator[None]:
    """Append each `scheduler.step`'s clean-sample prediction (its next sample where it has none) to `out`."""
    own = "step" in vars(scheduler)
    step = scheduler.step

    def capture(model_output: Tensor, timestep: Any, sample: Tensor, *args: Any, **kwargs: Any) -> Any:
        result = step(model_output, timestep, sample, *args, **kwargs)
        prediction = getattr(result, "pred_original_sample", None)
        out.append((prediction if prediction is not None else result[0]).detach().float().cpu())
        return result

    scheduler.step = capture
    try:
        yield
    finally:
        if own:
            scheduler.step = step
        else:
            del scheduler.step


def _class_names(pipe: Any) -> dict[int, str]:
    labels = getattr(pipe, "labels", None)
    if not labels:
        raise ValueError(
            f"{type(pipe).__name__} has no label map (pipe.labels): dashboards sample class-conditional "
            "pipelines (DiTPipeline and the bundled backbones)"
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
    pipe: Any, hooked: HookedDiT, hooks: Sequence[str], model: str, cfg: DashboardConfig
) -> Trajectories:
    """Sample `cfg.num_images` images and record every token of `hooks` at every step (cond branch)."""
    hooked.check_hook_names(hooks)
    names = _class_names(pipe)
    labels = [int(c) for c in np.resize(sorted(names), cfg.num_images)]
    predictions: list[Tensor] = []
    with hooked.record(list(hooks), branch="cond") as rec, _capture_predictions(pipe.scheduler, predictions):
        images = sample_images(pipe, labels, cfg.seed, cfg.num_inference_steps, cfg.guidance_scale, cfg.batch_size)
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
    grid = hooked.token_grid(tokens, latent_size=tuple(pred.shape[-2:]))
    factors = {"class": np.asarray(labels), **_measured_factors(model, images)}
    factor_names = {"class": [names.get(i, str(i)) for i in range(max(names) + 1)]}
    factor_names |= {k: SHAPE_FACTOR_NAMES[k] for k in factors if k in SHAPE_FACTOR_NAMES}
    return Trajectories(
        model, activations, timesteps, pred, images, np.asarray(labels), factors, factor_names, grid, pipe.vae
    )


def _arrange(rows: dict[str, Tensor], steps: int, num_images: int, batch_size: int) -> Tensor:
    """Flat recorded rows -> [steps, images, tokens, d]; image = run * batch_size + sample."""
    tokens = int(rows["token"].max()) + 1
    out = torch.zeros(steps, num_images, tokens, rows["activation"].shape[1])
    image = rows["run"] * batch_size + rows["sample"]
    out[rows["step"], image, rows["token"]] = rows["activation"].float()
    return out


# ------------------------------------------------------------------------------------------------
# Per-SAE analysis: the evals statistics plus what the pages show.


@dataclass
class LatentSummary:
    """Everything an SAE's pages show, computed once from its encodings of a `Trajectories`."""

    stats: LatentTimestepStats
    profile: list[str]
    density: np.ndarray  # [d_sae] firing frequency over all recorded tokens
    max_activation: np.ndarray  # [d_sae]
    image_step_max: Tensor  # [steps, images, d_sae] max over tokens
    breakdown: dict[str, np.ndarray]
    """Family -> [values, d_sae] mean activation over the images of each value (all steps and tokens)."""
    fired_share: dict[str, np.ndarray]
    """Family -> [values, d_sae] share of each value's images on which the latent fires at some step."""
    typical: np.ndarray
    """[d_sae] typical active value: the median of the latent's non-zero codes over all recorded tokens (0 if none)."""


@torch.no_grad()
def summarize(sae: Any, traj: Trajectories, edges: Sequence[float], batch_rows: int = 8192) -> LatentSummary:
    """Encode every recorded token with `sae` (`evals.reconstruct`) and summarize per latent."""
    x = traj.activations[sae.cfg.metadata.hook_name]  # [steps, images, tokens, d]
    steps, n_images, tokens, _ = x.shape
    flat_t = traj.timesteps[:, None, None].expand(steps, n_images, tokens).reshape(-1)
    stats = latent_timestep_stats(
        sae, x.reshape(-1, x.shape[-1]).to(sae.device, sae.dtype), flat_t.to(sae.device), edges, batch_rows
    )
    step_max = torch.zeros(steps, n_images, sae.cfg.d_sae)
    step_mean = torch.zeros_like(step_max)
    per_chunk = max(1, batch_rows // tokens)
    active_ids, active_codes = [], []  # every non-zero code (latent id, value): one pass gives exact medians
    for s in range(steps):
        for i in range(0, n_images, per_chunk):
            chunk = x[s, i : i + per_chunk].to(sae.device, sae.dtype)
            t = traj.timesteps[s].expand(chunk.shape[0] * tokens).to(sae.device)
            latents = reconstruct(sae, chunk.flatten(0, 1), t)[1].float().cpu().view(chunk.shape[0], tokens, -1)
            step_max[s, i : i + per_chunk] = latents.max(1).values
            step_mean[s, i : i + per_chunk] = latents.mean(1)
            fires = latents != 0
            active_ids.append(fires.nonzero()[:, 2].int())
            active_codes.append(latents[fires])
    rows = stats.rows.double()
    density = (stats.frequency * rows[:, None]).sum(0) / rows.sum().clamp_min(1)
    image_mean = step_mean.mean(0).double().numpy()  # [images, d_sae]
    fired = (step_max.amax(0) > 0).double().numpy()
    breakdown, fired_share = {}, {}
    for family, values in traj.factors.items():
        n_values = len(traj.factor_names.get(family, [])) or int(values.max()) + 1
        breakdown[family] = np.stack(
            [
                image_mean[values == v].mean(0) if (values == v).any() else np.zeros(sae.cfg.d_sae)
                for v in range(n_values)
            ]
        )
        fired_share[family] = np.stack(
            [fired[values == v].mean(0) if (values == v).any() else np.zeros(sae.cfg.d_sae) for v in range(n_values)]
        )
    typical = _medians(torch.cat(active_ids), torch.cat(active_codes), sae.cfg.d_sae)
    return LatentSummary(
        stats,
        stats.profile(),
        density.numpy(),
        step_max.amax((0, 1)).numpy(),
        step_max,
        breakdown,
        fired_share,
        typical,
    )


def _medians(ids: Tensor, values: Tensor, n: int) -> np.ndarray:
    """[n] median of `values` grouped by `ids` (0..n-1), halfway between the middle two for even counts, as
    `torch.quantile(group, 0.5)` (and `selection.typical_values`) gives; 0 for ids without values."""
    values, order = values.double().sort(stable=True)
    ids = ids[order].long()
    ids, order = ids.sort(stable=True)
    values = values[order]  # grouped by id, ascending within each group
    counts = torch.bincount(ids, minlength=n)
    if not len(values):
        return np.zeros(n)
    middle = (counts.cumsum(0) - counts) + (counts - 1).clamp_min(0) / 2.0  # fractional index of each median
    last = len(values) - 1
    low, high = values[middle.floor().long().clamp_max(last)], values[middle.ceil().long().clamp_max(last)]
    return torch.where(counts > 0, (low + high) / 2, 0.0).numpy()


def selectivity(breakdown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top value [d_sae], its share of the summed mean activation [d_sae]): 1 = fires for one value only,
    1 / values = indifferent; 0 for latents that never fire."""
    total = breakdown.sum(0)
    share = np.where(total > 0, breakdown.max(0) / np.where(total > 0, total, 1.0), 0.0)
    return breakdown.argmax(0), share


def nearest_latents(w_dec: Tensor, latents: Sequence[int], k: int) -> dict[int, list[tuple[int, float]]]:
    """The k latents whose decoder directions [d_sae, d_in] are closest by cosine to each of `latents`."""
    unit = torch.nn.functional.normalize(w_dec.detach().float().cpu(), dim=1)
    out = {}
    for start in range(0, len(latents), 256):
        ids = list(latents[start : start + 256])
        cos = unit[ids] @ unit.T  # [len(ids), d_sae]
        cos[torch.arange(len(ids)), torch.tensor(ids)] = -2.0
        values, indices = cos.topk(min(k, unit.shape[0] - 1), dim=1)
        for i, vals, idx in zip(ids, values.tolist(), indices.tolist(), strict=True):
            out[i] = list(zip(idx, vals, strict=True))
    return out


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


# ------------------------------------------------------------------------------------------------
# The site.


@dataclass(frozen=True)
class DashboardBuild:
    """Result of `build_dashboard`: where the site is and what the build did."""

    index: Path
    """The root index.html (open it in a browser)."""
    sites: dict[str, Path]
    """SAE name -> folder of its site."""
    written: int
    reused: int
    removed: int


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "sae"


def _check_sae(sae: Any, hooked: HookedDiT, model: str) -> None:
    hook = sae.cfg.metadata.hook_name
    if hook not in hooked.hook_dict:
        try:
            hooked.check_hook_names([hook])
        except ValueError as err:
            raise ValueError(
                f"SAE {sae_display_name(sae)} reads hook {hook!r}, which model {model!r} does not have: {err}"
            ) from None
    if sae.cfg.d_in != hooked.d_model:
        raise ValueError(
            f"SAE {sae_display_name(sae)} has d_in={sae.cfg.d_in} but {hook!r} of {model!r} carries "
            f"d_model={hooked.d_model}: the SAE was trained on another backbone"
        )


def _page_latents(summary: LatentSummary, cfg: DashboardConfig, d_sae: int) -> list[int]:
    if cfg.latents is not None:
        bad = [i for i in cfg.latents if not 0 <= i < d_sae]
        if bad:
            raise ValueError(f"latents {bad} are outside 0..{d_sae - 1} (d_sae {d_sae})")
        return list(dict.fromkeys(cfg.latents))
    return [i for i in range(d_sae) if summary.max_activation[i] > 0][: cfg.max_latents]


def build_dashboard(
    saes: Sequence[Any], output_dir: str | Path, cfg: DashboardConfig | None = None, progress: bool = True
) -> DashboardBuild:
    """Build (or update) the dashboard of each SAE under `output_dir/<sae name>/`, with a root index.

    SAEs name their backbone (`cfg.metadata.model_name`) and hook; SAEs of one backbone share one
    sampling run. Returns where the site is and how many files were written, reused and removed.
    """
    from sae_lens_dit.toy.backbones import load_pipeline

    cfg = cfg or DashboardConfig()
    if not saes:
        raise ValueError("no SAEs to build a dashboard for")
    root = Path(output_dir)
    files_ = SiteFiles(root)
    by_model: dict[str, list] = {}
    for sae in saes:
        model = getattr(sae.cfg.metadata, "model_name", None)
        if not model or not sae.cfg.metadata.hook_name:
            raise ValueError(
                f"SAE {sae_display_name(sae)} does not name its model and hook in cfg.metadata "
                "(model_name, hook_name); set them, as sae-lens-dit train does"
            )
        by_model.setdefault(model, []).append(sae)
    backbones = {}
    for model, group in by_model.items():  # every SAE is checked before anything is written
        pipe = load_pipeline(model, device=cfg.device)
        hooked = HookedDiT(pipe.transformer)
        for sae in group:
            _check_sae(sae, hooked, model)
        backbones[model] = pipe, hooked
    for asset in ASSETS:
        files_.write(f"assets/{asset}", files("sae_lens_dit.analysis.dashboard").joinpath("assets", asset).read_bytes())
    sites: dict[str, Path] = {}
    entries: list[dict[str, Any]] = []
    for model, group in by_model.items():
        pipe, hooked = backbones[model]
        hooks = list(dict.fromkeys(sae.cfg.metadata.hook_name for sae in group))
        logger.info("sampling %d images of %s for %s", cfg.num_images, model, hooks)
        traj = sample_trajectories(pipe, hooked, hooks, model, cfg)
        for sae in group:
            name = sae_display_name(sae)
            folder = _slug(name)
            while folder in {p.name for p in sites.values()}:
                folder += "_"
            sites[name] = root / folder
            sae.to(cfg.device)
            steering = _steering_previews(pipe, hooked, sae, traj, cfg) if cfg.steering else None
            entries.append(_build_site(sae, traj, files_, folder, cfg, steering, progress))
    files_.write("index.html", html.root_index(entries).encode())
    files_.finish()
    return DashboardBuild(root / "index.html", sites, files_.written, files_.reused, files_.removed)


def _build_site(
    sae: Any,
    traj: Trajectories,
    files_: SiteFiles,
    folder: str,
    cfg: DashboardConfig,
    steering: Callable[..., list[dict[str, Any]]] | None,
    progress: bool,
) -> dict[str, Any]:
    """Write one SAE's index and latent pages; returns its entry for the root index."""
    summary = summarize(sae, traj, cfg.edges)
    d_sae = sae.cfg.d_sae
    page_ids = _page_latents(summary, cfg, d_sae)
    neighbours = nearest_latents(sae.W_dec, page_ids, cfg.neighbours) if cfg.neighbours else {}
    top_value, share = selectivity(summary.breakdown["class"])
    class_names = traj.factor_names["class"]
    pages = set(page_ids)
    full = (summary.stats.rows > 0).nonzero().squeeze(1).tolist()  # buckets some denoising step fell in
    info = {
        "name": sae_display_name(sae),
        "model": traj.model,
        "hook": sae.cfg.metadata.hook_name,
        "architecture": sae.cfg.architecture(),
        "d_sae": d_sae,
        "images": len(traj.labels),
        "steps": len(traj.timesteps),
        "edges": list(cfg.edges),
        "folder": folder,
        "profiles": {p: summary.profile.count(p) for p in PROFILES},
        "dead": int((summary.density == 0).sum()),
        "dense": int((summary.density > DENSE_THRESHOLD).sum()),
    }
    rows = [
        {
            "id": i,
            "profile": summary.profile[i],
            "density": float(summary.density[i]),
            "max": float(summary.max_activation[i]),
            "peak": int(summary.stats.frequency[:, i].argmax()) if summary.max_activation[i] > 0 else None,
            "top_class": class_names[top_value[i]] if summary.max_activation[i] > 0 else "",
            "selectivity": float(share[i]),
            "frequency": summary.stats.frequency[full, i].tolist(),
            "page": i in pages,
        }
        for i in range(d_sae)
    ]
    files_.write(f"{folder}/index.html", html.sae_index(info, rows).encode())
    for position, i in enumerate(tqdm(page_ids, desc=f"dashboard {info['name']}", disable=not progress)):
        nav = (
            page_ids[position - 1] if position else None,
            page_ids[position + 1] if position + 1 < len(page_ids) else None,
        )
        page = _latent_page(
            sae, traj, summary, i, info, rows[i], neighbours.get(i, []), pages, nav, files_, folder, cfg, steering
        )
        files_.write(f"{folder}/latents/{i}.html", page.encode())
    return info


@torch.no_grad()
def _token_activations(sae: Any, traj: Trajectories, pairs: Sequence[tuple[int, int]], latent: int) -> np.ndarray:
    """[len(pairs), tokens] activation of `latent` at every token of each (step, image)."""
    x = traj.activations[sae.cfg.metadata.hook_name]
    rows = torch.stack([x[s, n] for s, n in pairs])  # [pairs, tokens, d]
    t = torch.stack([traj.timesteps[s].expand(rows.shape[1]) for s, _ in pairs]).reshape(-1)
    latents = reconstruct(sae, rows.flatten(0, 1).to(sae.device, sae.dtype), t.to(sae.device))[1]
    return latents[:, latent].float().cpu().view(len(pairs), -1).numpy()


def _latent_page(
    sae: Any,
    traj: Trajectories,
    summary: LatentSummary,
    latent: int,
    info: dict[str, Any],
    row: dict[str, Any],
    neighbours: list[tuple[int, float]],
    pages: set[int],
    nav: tuple[int | None, int | None],
    files_: SiteFiles,
    folder: str,
    cfg: DashboardConfig,
    steering: Callable[..., list[dict[str, Any]]] | None,
) -> str:
    stats, peak = summary.stats, row["peak"]
    steps = torch.arange(len(traj.timesteps))
    in_peak = steps if peak is None else steps[bucket_masks(traj.timesteps, cfg.edges)[peak]]
    scores, best = summary.image_step_max[in_peak, :, latent].max(0)  # [images]
    order = [int(n) for n in scores.argsort(descending=True)[: cfg.top_images] if scores[n] > 0]
    top_pairs = [(int(in_peak[best[n]]), n) for n in order]
    strip_image = order[0] if order else 0
    strip_steps = np.unique(np.linspace(0, len(traj.timesteps) - 1, cfg.strip_steps).round().astype(int))
    strip_pairs = [(int(s), strip_image) for s in strip_steps]
    pairs = top_pairs + strip_pairs
    heat = _token_activations(sae, traj, pairs, latent) / max(float(summary.max_activation[latent]), 1e-12)
    frames = traj.frames(pairs)
    thumbs = []
    for (s, n), frame, h in zip(pairs, frames, heat, strict=True):
        png = render_thumbnail(frame, cfg.thumb_size, h, traj.grid)
        thumbs.append(
            {
                "src": "../../" + files_.image(png, f"{folder}/img"),
                "size": cfg.thumb_size,
                "t": float(traj.timesteps[s]),
                "step": s,
                "image": n,
                "label": traj.factor_names["class"][traj.labels[n]],
                "max": float(h.max() * summary.max_activation[latent]),
            }
        )
    full = (stats.rows > 0).nonzero().squeeze(1).tolist()  # buckets no denoising step fell in are left out
    mids = [(cfg.edges[b] + cfg.edges[b + 1]) / 2 for b in full]
    plots = [
        html.line_plot_svg(mids, stats.frequency[full, latent].tolist(), "firing frequency", "#c0392b"),
        html.line_plot_svg(mids, stats.mean_activation[full, latent].tolist(), "mean activation", "#2c6fbb"),
    ]
    breakdown = {
        family: {
            "names": traj.factor_names.get(family) or [str(v) for v in range(len(means))],
            "mean": means[:, latent].tolist(),
            "fired": summary.fired_share[family][:, latent].tolist(),
        }
        for family, means in summary.breakdown.items()
    }
    steer = None
    if steering is not None and row["peak"] is not None:
        steer = steering(latent, int(traj.labels[strip_image]), summary, files_, folder)
    return html.latent_page(
        info,
        row,
        thumbs[: len(top_pairs)],
        thumbs[len(top_pairs) :],
        plots,
        breakdown,
        [(j, cos, j in pages) for j, cos in neighbours],
        nav,
        steer,
    )


def preview_window(stats: LatentTimestepStats, latent: int) -> tuple[float, float]:
    """The latent's own timestep window: the contiguous buckets around its peak firing frequency that reach half
    of it (`windows.auto_window` on the frequency profile). A bucket no denoising step fell in takes the lower
    of its nearest sampled neighbours' frequencies, so it neither splits a window nor ends one early."""
    from sae_lens_dit.analysis.interventions.windows import auto_window

    frequency = stats.frequency[:, latent].double()
    sampled = (stats.rows > 0).nonzero().squeeze(1)
    curve = []
    for b in range(len(frequency)):
        if stats.rows[b] > 0:
            curve.append(float(frequency[b]))
            continue
        near = [frequency[side].item() for side in (sampled[sampled < b][-1:], sampled[sampled > b][:1]) if len(side)]
        curve.append(min(near, default=0.0))
    return auto_window(curve, stats.edges)


def _steering_previews(
    pipe: Any, hooked: HookedDiT, sae: Any, traj: Trajectories, cfg: DashboardConfig
) -> Callable[..., list[dict[str, Any]]]:
    """A function (latent, class, summary, files, folder) -> before / after thumbnails of one sample of the class
    with the latent clamped at `steering_strength` x its typical active value, then zeroed, on every token inside
    its own timestep window (`preview_window`; `interventions.preview_latent`)."""
    from sae_lens_dit.analysis.interventions import preview_latent

    names = traj.factor_names["class"]
    pipe_kwargs = {"num_inference_steps": cfg.num_inference_steps}
    if cfg.guidance_scale is not None:
        pipe_kwargs["guidance_scale"] = cfg.guidance_scale

    def previews(latent: int, label: int, summary: LatentSummary, files_: SiteFiles, folder: str) -> list[dict]:
        typical, window = float(summary.typical[latent]), preview_window(summary.stats, latent)
        span = f"t {window[0]:g}-{window[1]:g}"
        out = []
        for op, caption in (
            ("clamp", f"clamp {cfg.steering_strength:g}x typical ({typical:.3g}), {span}"),
            ("zero", f"zero, {span}"),
        ):
            result = preview_latent(
                pipe,
                sae,
                latent,
                cfg.steering_strength,
                seed=cfg.seed,
                op=op,
                hooked=hooked,
                typical=typical,
                window=window,
                class_labels=[label],
                **pipe_kwargs,
            )
            thumbs = [
                {
                    "src": "../../" + files_.image(render_thumbnail(_uint8(im[0]), cfg.thumb_size), f"{folder}/img"),
                    "size": cfg.thumb_size,
                }
                for im in (result.before, result.after)
            ]
            out.append({"before": thumbs[0], "after": thumbs[1], "caption": f"{names[label]}, {caption}"})
        return out

    return previews
