"""Dashboard steering previews, old recipe against new, on the bundled shapes DiT (blocks.1.hook_resid_post, TIDE).

- old: add +/- 1.0 x the latent's max activation along its decoder direction, on every token at every step
  (the dashboard's previews up to this change, `steering_strength` 1.0);
- new: clamp the latent at S x its typical active value (median of its non-zero codes over the dashboard's
  recorded tokens, `LatentSummary.typical`) on every token inside its own timestep window
  (`dashboard.preview_window`: buckets around its peak firing frequency reaching half of it), and zero it
  there; S = 2, 4 (the new default), 8.

Data: the dashboard's own sampling run and summary (`DashboardConfig()` defaults: 32 images, DDIM 20 steps,
default guidance, seed 0, buckets of 100). Latents, two sets of 16: the most frequent non-dense ones
(density over all recorded tokens <= evals.DENSE_THRESHOLD), and the first alive ones by id (the pages a
default dashboard build makes). Each preview is one sample of the class the dashboard page uses
(the class of the latent's top image in its peak bucket), re-generated with `interventions.preview_latent`
from seeds 0, 1, 2 (seed 0 is the dashboard's); recipes are interleaved per (latent, seed) in one process.
Metric: mean |after - before| over pixels and channels (images in [0, 1]); share of previews above 0.05;
shape kept: the bundled shapes classifier gives the same kind before and after.

Run: HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/bench_previews.py   (about 8 minutes on one core)
Prints a table and writes benchmarks/results/previews.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sae_lens import SAE

import sae_lens_dit  # noqa: F401  (registers the bundled releases)
from sae_lens_dit import HookedDiT, load_tiny_dit
from sae_lens_dit.analysis.dashboard.build import DashboardConfig, preview_window, sample_trajectories, summarize
from sae_lens_dit.analysis.evals import DENSE_THRESHOLD, bucket_masks
from sae_lens_dit.analysis.interventions import preview_latent
from sae_lens_dit.toy.backbones import load_tiny_classifier

RELEASE, SAE_ID = "tide-dit-tiny/shapes", "blocks.1.hook_resid_post/tide"
OUT = Path(__file__).parent / "results" / "previews.md"
VISIBLE = 0.05
"""A preview counts as visible when its mean |pixel change| exceeds this."""


def measure(setup: dict, latents: list[int], seeds: int, strengths: list[float]) -> tuple[dict, list[dict]]:
    """Per recipe: every preview's mean |pixel change| and whether the shape kind survived; a row per latent."""
    pipe, sae, summary, traj, cfg = (setup[k] for k in ("pipe", "sae", "summary", "traj", "cfg"))
    masks = bucket_masks(traj.timesteps, cfg.edges)
    kwargs = {"hooked": setup["hooked"], "num_inference_steps": cfg.num_inference_steps}
    results: dict[str, dict[str, list]] = {}
    per_latent = []
    for latent in latents:
        peak = int(summary.stats.frequency[:, latent].argmax())
        in_peak = torch.arange(len(traj.timesteps))[masks[peak]]
        label = int(traj.labels[int(summary.image_step_max[in_peak, :, latent].max(0).values.argmax())])
        typical, window = float(summary.typical[latent]), preview_window(summary.stats, latent)
        top = float(summary.max_activation[latent])
        row = {
            "latent": latent,
            "density": float(summary.density[latent]),
            "max": top,
            "typical": typical,
            "window": window,
            "label": traj.factor_names["class"][label],
        }
        recipe_args = {  # name -> (strength, op, preview_latent options)
            "old +": (top, "add", {}),
            "old -": (-top, "add", {}),
            **{f"new clamp {s:g}x": (s, "clamp", {"typical": typical, "window": window}) for s in strengths},
            "new zero": (0.0, "zero", {"window": window}),
        }
        for seed in range(seeds):  # every recipe of one (latent, seed) in a row: old and new interleaved
            for name, (strength, op, options) in recipe_args.items():
                call = {**options, **kwargs, "class_labels": [label]}
                result = preview_latent(pipe, sae, latent, strength, seed, op, **call)
                delta = float(np.abs(result.after - result.before).mean())
                kept = bool(setup["classify"](result.after)[0] == setup["classify"](result.before)[0])
                results.setdefault(name, {"change": [], "kept": []})
                results[name]["change"].append(delta)
                results[name]["kept"].append(kept)
                row.setdefault(name, []).append(delta)
        per_latent.append(row)
        print(f"latent {latent}: " + ", ".join(f"{n} {np.mean(row[n]):.3f}" for n in recipe_args), flush=True)
    return results, per_latent


def tables(title: str, results: dict, per_latent: list[dict]) -> list[str]:
    recipes = list(results)
    lines = [
        f"## {title}",
        "",
        f"| recipe | mean \\|pixel change\\| | median | share > {VISIBLE} | shape kept |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        values = np.asarray(r["change"])
        lines.append(
            f"| {name} | {values.mean():.4f} | {np.median(values):.4f} | {(values > VISIBLE).mean():.2f} | "
            f"{np.mean(r['kept']):.2f} |"
        )
    lines += [
        "",
        "Per latent (mean \\|pixel change\\| over seeds):",
        "",
        "| latent | density | max | typical | window | class | " + " | ".join(recipes) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(recipes),
    ]
    for row in per_latent:
        lines.append(
            f"| {row['latent']} | {row['density']:.3f} | {row['max']:.3g} | {row['typical']:.3g} | "
            f"{row['window'][0]:g}-{row['window'][1]:g} | {row['label']} | "
            + " | ".join(f"{np.mean(row[n]):.3f}" for n in recipes)
            + " |"
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latents", type=int, default=16, help="latents per set")
    parser.add_argument("--seeds", type=int, default=3, help="preview seeds 0..N-1 per latent")
    parser.add_argument("--strengths", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    cfg = DashboardConfig()
    sae = SAE.from_pretrained(RELEASE, SAE_ID)
    pipe = load_tiny_dit("shapes")
    pipe.set_progress_bar_config(disable=True)
    hooked = HookedDiT(pipe.transformer)
    traj = sample_trajectories(pipe, hooked, [sae.cfg.metadata.hook_name], "shapes", cfg)
    summary = summarize(sae, traj, cfg.edges)
    setup = {
        "pipe": pipe,
        "sae": sae,
        "hooked": hooked,
        "traj": traj,
        "summary": summary,
        "cfg": cfg,
        "classify": load_tiny_classifier("shapes").predict,
    }
    density = summary.density
    sparse = np.nonzero((density > 0) & (density <= DENSE_THRESHOLD))[0]
    sets = {
        "most frequent non-dense latents": sparse[np.argsort(-density[sparse], kind="stable")][: args.latents],
        "first alive latents by id (a default dashboard's pages)": np.nonzero(summary.max_activation > 0)[0][
            : args.latents
        ],
    }
    sections = []
    for title, latents in sets.items():
        print(f"== {title}", flush=True)
        sections += tables(title, *measure(setup, [int(i) for i in latents], args.seeds, args.strengths))
    lines = [
        f"# Dashboard steering previews on {RELEASE} {SAE_ID}: old recipe vs new",
        "",
        f"{args.latents} latents per set x {args.seeds} seeds (0-{args.seeds - 1}) per recipe, DDIM "
        f"{cfg.num_inference_steps} steps, default guidance; dashboard data: {cfg.num_images} images, seed "
        f"{cfg.seed}. Mean \\|pixel change\\| over pixels and channels, images in [0, 1]. "
        f"Run: `python benchmarks/bench_previews.py` ({time.perf_counter() - start:.0f} s).",
        "",
        "old +/-: add +/- 1.0 x max activation x decoder direction, every token and step (the previews before "
        "this change). new clamp Sx: clamp at S x typical inside the latent's window, every token (the "
        "dashboard's first preview, S = `steering_strength`); new zero: zero it there (its second preview). "
        "Shape kept: the bundled shapes classifier gives the same kind before and after.",
        "",
        *sections,
    ]
    text = "\n".join(lines)
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)


if __name__ == "__main__":
    main()
