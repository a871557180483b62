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

One module per topic: `config` (the settings), `trajectories` (the sampling run), `latent_summary`
(per-latent statistics), `thumbnails` (heatmaps), `previews` (steering previews), `files` (what a
build may write), `cache` (the content-addressed cache of the run, the statistics and the previews,
under `<output>/cache/`, so a rebuild with unchanged inputs samples nothing), `html` (the markup)
and this one, the build of the pages; every name the single module had before the split is
importable from here. Each latent page links the same latent id in the sibling SAEs of its backbone.

Build: every file is written only when its bytes change (images are named by a hash of their
content, so a rebuild reuses them), files of an earlier build that are no longer produced are
removed, and files the dashboard did not write (not in its `manifest.json`) are never touched.
Timesteps follow the package convention: DDPM scale [0, 1000], 1000 = pure noise.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae_lens_dit.analysis.backbone_groups import load_backbones
from sae_lens_dit.analysis.dashboard import html
from sae_lens_dit.analysis.dashboard.cache import Cache, PageCache, digest, module_digest, source_digest
from sae_lens_dit.analysis.dashboard.config import DashboardConfig
from sae_lens_dit.analysis.dashboard.files import MANIFEST, SiteFiles
from sae_lens_dit.analysis.dashboard.latent_summary import (
    LatentSummary,
    cached_summary,
    nearest_latents,
    selectivity,
    summarize,
)
from sae_lens_dit.analysis.dashboard.previews import SteeringPreviews, preview_window, steering_previews
from sae_lens_dit.analysis.dashboard.thumbnails import OVERLAY_ALPHA, OVERLAY_RGB, render_thumbnail, token_heatmap
from sae_lens_dit.analysis.dashboard.trajectories import (
    SHAPE_FACTOR_NAMES,
    Trajectories,
    cached_trajectories,
    sample_trajectories,
)
from sae_lens_dit.analysis.evals import DENSE_THRESHOLD, bucket_masks
from sae_lens_dit.conventions import PROFILES, sae_display_name, timestep_scope
from sae_lens_dit.hooking.splicing import hook_pair

__all__ = [  # the names of the single module this was before the split, re-exported
    "ASSETS",
    "MANIFEST",
    "OVERLAY_ALPHA",
    "OVERLAY_RGB",
    "SHAPE_FACTOR_NAMES",
    "DashboardBuild",
    "DashboardConfig",
    "LatentSummary",
    "Trajectories",
    "build_dashboard",
    "nearest_latents",
    "preview_window",
    "render_thumbnail",
    "sample_trajectories",
    "selectivity",
    "summarize",
    "token_heatmap",
]

logger = logging.getLogger(__name__)

ASSETS = ("style.css", "site.js")
"""Static files shipped in `sae_lens_dit/analysis/dashboard/assets/`, copied to `<output>/assets/`."""


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
    sampling run that records all their hooks at once. The run, each SAE's statistics and its steering
    previews are cached, content-addressed, under `output_dir/cache/` (`cache`): a rebuild with unchanged
    inputs samples nothing. Returns where the site is and how many files were written, reused and removed.
    """
    cfg = cfg or DashboardConfig()
    if not saes:
        raise ValueError("no SAEs to build a dashboard for")
    root = Path(output_dir)
    files_ = SiteFiles(root)
    backbones = list(load_backbones(saes, cfg.device))  # every SAE is checked before anything is written
    for asset in ASSETS:
        files_.write(f"assets/{asset}", files("sae_lens_dit.analysis.dashboard").joinpath("assets", asset).read_bytes())
    cache = Cache(files_)
    sites: dict[str, Path] = {}
    plans: list[_Site] = []
    for backbone in backbones:
        logger.info("recording %s of %s: %d images", backbone.hooks, backbone.model, cfg.num_images)
        traj, run_key = cached_trajectories(
            backbone.pipe, backbone.hooked, backbone.hooks, backbone.model, cfg, cache, progress
        )
        for sae in tqdm(backbone.saes, desc=f"encoding {backbone.model}", unit="sae", disable=not progress):
            name = sae_display_name(sae)
            folder = _slug(name)
            while folder in {p.name for p in sites.values()}:
                folder += "_"
            sites[name] = root / folder
            sae.to(cfg.device)
            key = digest("sae", run_key, module_digest(sae), list(cfg.edges))
            summary = cached_summary(sae, traj, cfg.edges, cache, key)
            plans.append(_Site(sae, backbone, traj, summary, folder, _page_latents(summary, cfg, sae.cfg.d_sae), key))
    entries = []
    befores: dict[int, dict] = {}  # per backbone: class label -> unedited preview sample, shared by its SAEs
    for plan in plans:
        steering = None
        transcoder = len(set(hook_pair(plan.sae))) > 1  # steering refuses transcoders: no previews on their pages
        if cfg.steering and transcoder:
            logger.info("no steering previews for %s: a transcoder cannot be steered", sae_display_name(plan.sae))
        if cfg.steering and not transcoder:
            key = digest("previews", plan.key, cfg.steering_strength)
            shared = befores.setdefault(id(plan.backbone), {})
            backbone = plan.backbone
            steering = steering_previews(
                backbone.pipe, backbone.hooked, plan.sae, plan.traj, cfg, cache, key, shared, progress
            )
        siblings = [p for p in plans if p is not plan and p.backbone is plan.backbone]
        entries.append(_build_site(plan, siblings, files_, cfg, steering, progress, cache))
        if steering is not None:
            steering.save()
    files_.write("index.html", html.root_index(entries).encode())
    files_.finish()
    logger.info("dashboard cache: %d hits, %d misses", cache.hits, cache.misses)
    return DashboardBuild(root / "index.html", sites, files_.written, files_.reused, files_.removed)


@dataclass
class _Site:
    """One SAE's site, planned before any page is written (so pages can link the same latent in sibling sites)."""

    sae: Any
    backbone: Any
    traj: Trajectories
    summary: LatentSummary
    folder: str
    page_ids: list[int]
    key: str

    def label(self) -> str:
        """Short name among siblings: hook and architecture."""
        return f"{self.sae.cfg.metadata.hook_name} {self.sae.cfg.architecture()}"


def _build_site(
    plan: _Site,
    siblings: Sequence[_Site],
    files_: SiteFiles,
    cfg: DashboardConfig,
    steering: SteeringPreviews | None,
    progress: bool,
    cache: Cache,
) -> dict[str, Any]:
    """Write one SAE's index and latent pages; returns its entry for the root index."""
    sae, traj, summary, folder, page_ids = plan.sae, plan.traj, plan.summary, plan.folder, plan.page_ids
    d_sae = sae.cfg.d_sae
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
        "page_ids": list(page_ids),
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
    drawn, code = PageCache(cache, digest("pages", plan.key, folder)), source_digest()  # pages a rebuild may keep
    to_draw = []
    for position, i in enumerate(page_ids):
        nav = (
            page_ids[position - 1] if position else None,
            page_ids[position + 1] if position + 1 < len(page_ids) else None,
        )
        same = [
            (
                p.label(),
                f"../../{p.folder}/" + (f"latents/{i}.html" if i in p.page_ids else "index.html"),
                i in p.page_ids,
            )
            for p in siblings
        ]
        rel = f"{folder}/latents/{i}.html"
        page_key = digest("page", code, plan.key, cfg.__dict__, i, nav, page_ids, same, info, rows[i])
        if not drawn.reuse(rel, page_key):
            to_draw.append((i, nav, same, rel, page_key))
    layouts = {i: _PageLayout.of(summary, traj, cfg, i) for i, *_ in to_draw}
    if steering is not None:  # every preview of the pages to draw, in batched pipeline calls
        steering.prepare([(i, layouts[i].label(traj)) for i in layouts if rows[i]["peak"] is not None], summary)
    heat = _token_activations(sae, traj, {i: layout.pairs for i, layout in layouts.items()})
    for i, nav, same, rel, page_key in tqdm(to_draw, desc=f"pages {info['name']}", unit="page", disable=not progress):
        page = _latent_page(
            sae,
            traj,
            summary,
            i,
            info,
            rows[i],
            neighbours.get(i, []),
            pages,
            nav,
            files_,
            folder,
            cfg,
            steering,
            same,
            layouts[i],
            heat[i],
        ).encode()
        files_.write(rel, page)
        drawn.add(rel, page_key, page)
    drawn.save()
    return info


@dataclass(frozen=True)
class _PageLayout:
    """Which (step, image) pairs a latent page shows: its top images at their best step inside the latent's peak
    bucket, then a strip following the top image (`strip_image`) through denoising."""

    top_pairs: list[tuple[int, int]]
    strip_pairs: list[tuple[int, int]]
    strip_image: int

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return self.top_pairs + self.strip_pairs

    def label(self, traj: Trajectories) -> int:
        """Class of the strip image (the steering previews sample this class)."""
        return int(traj.labels[self.strip_image])

    @classmethod
    def of(cls, summary: LatentSummary, traj: Trajectories, cfg: DashboardConfig, latent: int) -> _PageLayout:
        peak = int(summary.stats.frequency[:, latent].argmax()) if summary.max_activation[latent] > 0 else None
        steps = torch.arange(len(traj.timesteps))
        in_peak = steps if peak is None else steps[bucket_masks(traj.timesteps, cfg.edges)[peak]]
        scores, best = summary.image_step_max[in_peak, :, latent].max(0)  # [images]
        order = [int(n) for n in scores.argsort(descending=True)[: cfg.top_images] if scores[n] > 0]
        top_pairs = [(int(in_peak[best[n]]), n) for n in order]
        strip_image = order[0] if order else 0
        strip_steps = np.unique(np.linspace(0, len(traj.timesteps) - 1, cfg.strip_steps).round().astype(int))
        return cls(top_pairs, [(int(s), strip_image) for s in strip_steps], strip_image)


@torch.no_grad()
def _token_activations(
    sae: Any, traj: Trajectories, pages: dict[int, list[tuple[int, int]]], batch_rows: int = 8192
) -> dict[int, np.ndarray]:
    """Latent -> [len(pairs), tokens] activation of the latent at every token of each of its (step, image) pairs:
    every pair any page shows is encoded once (SAE encoder only), in batches of whole steps."""
    x = traj.activations[sae.cfg.metadata.hook_name]  # [steps, images, tokens, d]
    tokens = x.shape[2]
    wanted = sorted({pair for pairs in pages.values() for pair in pairs})
    latents = sorted(pages)
    column = {latent: j for j, latent in enumerate(latents)}
    codes: dict[tuple[int, int], Tensor] = {}  # pair -> [tokens, len(latents)]
    per_chunk = max(1, batch_rows // tokens)
    for start in range(0, len(wanted), per_chunk):
        chunk = wanted[start : start + per_chunk]
        rows = torch.stack([x[s, n] for s, n in chunk]).flatten(0, 1).to(sae.device, sae.dtype)  # [pairs x tokens, d]
        t = torch.stack([traj.timesteps[s] for s, _ in chunk]).repeat_interleave(tokens).to(sae.device)
        with timestep_scope(sae, t):
            z = sae.encode(rows)[:, latents].float().cpu().view(len(chunk), tokens, len(latents))
        codes.update(zip(chunk, z, strict=True))
    return {
        latent: torch.stack([codes[pair][:, column[latent]] for pair in pairs]).numpy()
        if pairs
        else np.zeros((0, tokens), np.float32)
        for latent, pairs in pages.items()
    }


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
    steering: SteeringPreviews | None,
    same: Sequence[tuple[str, str, bool]],
    layout: _PageLayout,
    codes: np.ndarray,
) -> str:
    """One latent page; `codes` [pairs, tokens] are the latent's activations on the layout's pairs."""
    stats, pairs, top_pairs = summary.stats, layout.pairs, layout.top_pairs
    heat = codes / max(float(summary.max_activation[latent]), 1e-12)
    frames = traj.frames(pairs)
    thumbs = []
    for (s, n), decoded, h in zip(pairs, frames, heat, strict=True):
        picture, frame_heat, frame = traj.at_token_frame(decoded, h)
        png = render_thumbnail(picture, cfg.thumb_size, frame_heat, traj.grid)
        thumbs.append(
            {
                "src": "../../" + files_.image(png, f"{folder}/img"),
                "size": cfg.thumb_size,
                "t": float(traj.timesteps[s]),
                "step": s,
                "image": n,
                "label": traj.factor_names["class"][traj.labels[n]],
                "max": float(h.max() * summary.max_activation[latent]),
                **({"frame": frame} if traj.token_frames > 1 else {}),
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
        steer = steering(latent, layout.label(traj), summary, files_, folder)
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
        same,
    )
