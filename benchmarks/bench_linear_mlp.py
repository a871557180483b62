"""How much of each DiT MLP's output is linear in its input, with one map for all timesteps or one per bucket.

Why: a transcoder's skip connection is a linear map from the MLP's input to its output, and it is what made the
bundled transcoders good (`transcoder_ablations.md`); TIDE's timestep terms added nothing once it was there
(`transcoders.md`). This measures the headroom a timestep-dependent skip would have: the held-out explained
variance of the best affine map (least squares, with bias) fitted on all rows against one fitted per timestep
bucket, for every block's MLP of both bundled backbones.

Rows: one harvest per backbone (`--num-images` images, 50 DDIM steps, both CFG branches, 1/16 of the tokens), the
MLP's `hook_in` and `hook_out` at every block; 80% of the rows (by image) fit, the rest score.

    python benchmarks/bench_linear_mlp.py [--num-images 320]

Writes benchmarks/results/linear_mlp.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sae_lens_dit.analysis.evals import bucket_masks
from sae_lens_dit.conventions import DEFAULT_BUCKET_EDGES
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.backbones import load_pipeline
from sae_lens_dit.training.harvest import HarvestConfig, harvest_chunks

RESULTS = Path(__file__).parent / "results"
BLOCKS = {"digits": 4, "shapes": 6}


def affine_fit(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least-squares [d_in + 1, d_out] map with bias, in float64."""
    return torch.linalg.lstsq(torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1), y).solution


def affine_apply(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1) @ w


def explained_variance(y_hat: torch.Tensor, y: torch.Tensor) -> float:
    return 1 - float((y_hat - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=320)
    args = parser.parse_args()
    edges = DEFAULT_BUCKET_EDGES
    buckets_named = ", ".join(f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:], strict=True))
    lines = [
        "# How linear is a DiT MLP? Affine maps from its input to its output",
        "",
        f"Reproduce: `python benchmarks/bench_linear_mlp.py --num-images {args.num_images}`. Held-out explained "
        "variance of the MLP output (20% of the images) by one least-squares affine map for every timestep, and by "
        f"one per timestep bucket ({buckets_named}).",
        "",
        "| model | block | rows | one map | one map per bucket | difference |",
        "|---|---|---|---|---|---|",
    ]
    for model, n_blocks in BLOCKS.items():
        pipe = load_pipeline(model)
        hooks = [f"blocks.{i}.mlp.hook_{side}" for i in range(n_blocks) for side in ("in", "out")]
        cfg = HarvestConfig(hook_names=tuple(hooks), num_images=args.num_images, branch="both", seed=0)
        chunks = list(harvest_chunks(pipe, HookedDiT(pipe.transformer), cfg, progress=True))
        t = torch.cat([c.timestep for c in chunks]).double()
        sample = torch.cat([c.sample for c in chunks])
        fit_rows = sample < int(sample.max() + 1) * 0.8  # by image, so no image is on both sides
        masks = bucket_masks(t, DEFAULT_BUCKET_EDGES)  # the package's buckets (t = 1000 in the last)
        for block in tqdm(range(n_blocks), desc=model):
            x = torch.cat([c.activations[f"blocks.{block}.mlp.hook_in"] for c in chunks]).double()
            y = torch.cat([c.activations[f"blocks.{block}.mlp.hook_out"] for c in chunks]).double()
            one = explained_variance(affine_apply(affine_fit(x[fit_rows], y[fit_rows]), x[~fit_rows]), y[~fit_rows])
            y_hat = torch.empty_like(y)
            for rows in masks:
                y_hat[rows] = affine_apply(affine_fit(x[fit_rows & rows], y[fit_rows & rows]), x[rows])
            per = explained_variance(y_hat[~fit_rows], y[~fit_rows])
            lines.append(f"| {model} | {block} | {len(x):,} | {one:.4f} | {per:.4f} | {per - one:+.4f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "linear_mlp.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
