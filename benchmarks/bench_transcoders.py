"""Timestep-aware transcoders against the same transcoder without timestep terms, on both bundled backbones.

Each run is the runner's own path (`sae-lens-dit train --architecture tide_transcoder --hook blocks.2.mlp` from the
backbone's preset: one harvest of the MLP's input and output pair, 640 images, 50 DDIM steps, both CFG branches,
shared by every run of a backbone), trained on 2M rows. The TIDE transcoder is the default one: the decoder's timestep
bias and a skip connection interpolated between 5 timestep knots (`skip_timestep_knots`). The baseline is the same
skip transcoder with every timestep term off (`timestep_scale`, `timestep_shift`, `timestep_decoder_bias` false,
`skip_timestep_knots` 0): a plain TopK skip transcoder at the same k, so L0 is equal by construction. SAELens 6.54
ships inference transcoders (ReLU, JumpReLU, skip) but no training class for any of them, and no TopK transcoder, so
this ablation is the baseline that trains through the same path at equal L0.

Reported per run, on held-out rows (harvest seed + 1000, 64 images, both branches): the explained variance of the MLP
output per timestep bucket (the runner's report), and denoising loss recovered with the MLP replaced by the
transcoder (no error term), against the MLP zero- and mean-ablated (`sae-lens-dit eval`'s protocol on 64 held-out
images of the backbone's held-out split, every bucket, both branches). The seed seeds the transcoder's
initialisation and shuffling; seed 1 chose the recipe (`--results transcoder_ablations`, `transcoder_knots`), the
committed table is seeds 2-4. Also: one training step of the transcoder against a TIDE SAE of the same width
(SAELens's `SAETrainer.step`, interleaved, median).

    python benchmarks/bench_transcoders.py --seeds 2 3 4 [--models digits shapes] [--work /tmp/sae-lens-dit-tc]

Resumable (runs in results/transcoders.json are kept). Writes benchmarks/results/transcoders.{md,json}; the
ablations (`--variants ... --seeds 1 --results transcoder_ablations` or `transcoder_knots`) write their own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from bench_tide_step import _training_step  # noqa: E402
from sae_lens import SAE

import sae_lens_dit  # noqa: F401  (registers the architectures)
from sae_lens_dit.analysis.evals import EvalConfig, evaluate
from sae_lens_dit.saes import TideTrainingSAE, TideTrainingSAEConfig
from sae_lens_dit.saes.tide_transcoder import TideTrainingTranscoder, TideTrainingTranscoderConfig
from sae_lens_dit.training.presets import preset_config
from sae_lens_dit.training.runner import DiTSAETrainingRunner
from sae_lens_dit.training.sublayers import sublayer_hooks

RESULTS = Path(__file__).parent / "results"
SUBLAYER = "blocks.2.mlp"
_OFF = {"timestep_scale": False, "timestep_shift": False, "timestep_decoder_bias": False, "skip_timestep_knots": 0}
VARIANTS = {
    "tide_transcoder": {},  # the defaults: decoder's timestep bias, skip with 5 timestep knots, no input modulation
    "topk_transcoder": _OFF,  # no timestep term at all: a plain TopK (skip) transcoder, same lr
}
ABLATIONS = {  # which of TIDE's terms, at which learning rate, helps a transcoder (run with --variants); no skip
    f"{name}_lr{lr}": {**terms, "skip": False, "skip_timestep_knots": 0, "lr": float(lr)}
    for name, terms in {
        "tide_all_terms": {"timestep_scale": True, "timestep_shift": True, "timestep_decoder_bias": True},
        "tide_input_only": {"timestep_scale": True, "timestep_shift": True, "timestep_decoder_bias": False},
        "tide_decoder_bias_only": {"timestep_scale": False, "timestep_shift": False, "timestep_decoder_bias": True},
        "topk_transcoder": _OFF,
    }.items()
    for lr in ("4e-4", "1e-3")
} | {  # the skip connection (the default since it was measured), with and without TIDE's decoder bias
    "tide_decoder_bias_only_skip_lr1e-3": {
        "timestep_scale": False,
        "timestep_shift": False,
        "skip": True,
        "skip_timestep_knots": 0,
        "lr": 1e-3,
    },
    "topk_transcoder_skip_lr1e-3": {**_OFF, "skip": True, "lr": 1e-3},
    "tide_all_terms_skip_lr1e-3": {
        "timestep_scale": True,
        "timestep_shift": True,
        "skip": True,
        "skip_timestep_knots": 0,
        "lr": 1e-3,
    },
    **{  # the timestep-dependent skip (skip_timestep_knots), its knot count and the knots' learning-rate scale
        f"tide_skip_knots{n}_scale{scale}_lr1e-3": {
            "timestep_scale": False,
            "timestep_shift": False,
            "skip_timestep_knots": n,
            "skip_knots_scale": scale,
            "lr": 1e-3,
        }
        for n, scale in ((5, 1.0), (5, 0.1), (11, 0.1))
    },
    "tide_input_only_skip_lr1e-3": {
        "timestep_scale": True,
        "timestep_shift": True,
        "timestep_decoder_bias": False,
        "skip": True,
        "skip_timestep_knots": 0,
        "lr": 1e-3,
    },
}
EVAL = EvalConfig(num_images=64, num_samples=0, factors=False, batch_size=128)


def run_one(model: str, variant: str, seed: int, work: Path) -> dict:
    hooks = list(sublayer_hooks(SUBLAYER))
    folder = work / f"{model}-{variant}-seed{seed}"
    settings = dict({**VARIANTS, **ABLATIONS}[variant])
    lr = settings.pop("lr", None)
    cfg = preset_config(
        f"dit-tiny-{model}",
        hook_name=SUBLAYER,
        lr=lr,
        sae={"architecture": "tide_transcoder", "d_in": 96, "d_out": 96, **settings},
        harvest={"hook_names": hooks},
        eval_images=64,
        seed=seed,
        cache_dir=str(work / f"{model}-cache"),
        output_dir=str(folder),
        wandb_mode="disabled",
    )
    start = time.perf_counter()
    DiTSAETrainingRunner(cfg, overwrite=True).run()
    seconds = time.perf_counter() - start
    report = json.loads((folder / "eval.json").read_text())["reports"][0]
    buckets = report["buckets"]  # held-out rows of both branches, per timestep bucket
    sae = SAE.load_from_disk(str(folder))
    protocol = evaluate([sae], EVAL)[0]
    return {
        "model": model,
        "variant": variant,
        "seed": seed,
        "ev_by_bucket": {f"{row['t_low']:g}-{row['t_high']:g}": row["explained_variance"] for row in buckets},
        "l0": statistics.mean(row["l0"] for row in buckets),
        "recovered_vs_zero": statistics.mean(row["recovered_vs_zero"] for row in protocol["denoising"]),
        "recovered_vs_mean": statistics.mean(row["recovered_vs_mean"] for row in protocol["denoising"]),
        "dead_fraction": report.get("latent_usage", {}).get("dead_fraction"),
        "seconds": round(seconds, 1),
    }


def step_cost(repeats: int = 15) -> dict:
    """Median seconds of one SAETrainer step, transcoder and TIDE SAE at width 96 -> 1536, k 16, batch 4096."""
    torch.manual_seed(0)
    batch, t = 4096, torch.linspace(0, 999, 4096)
    tc = TideTrainingTranscoder(TideTrainingTranscoderConfig(d_in=96, d_out=96, d_sae=1536, k=16))
    sae = TideTrainingSAE(TideTrainingSAEConfig(d_in=96, d_sae=1536, k=16))
    steps = {
        "transcoder": _training_step(tc, torch.randn(batch, 192), t),
        "sae": _training_step(sae, torch.randn(batch, 96), t),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(3):
        for step in steps.values():
            step()
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {**{f"{k}_seconds": v for k, v in medians.items()}, "ratio": medians["transcoder"] / medians["sae"]}


def write(results: dict, cost: dict | None, name: str = "transcoders") -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"runs": results, "step_cost": cost}, indent=1))
    title = (
        "Timestep-aware transcoders vs the same transcoder without timestep terms (blocks.2.mlp; seeds 2-4, none"
        " used for tuning)"
        if name == "transcoders"
        else f"Transcoder ablations, `{name}` (blocks.2.mlp; seed 1, the tuning seed; the defaults were chosen from"
        " these rows)"
    )
    lines = [
        f"# {title}",
        "",
        "Mean over seeds (n). EV: held-out explained variance of the MLP output per timestep bucket (both branches);",
        "DLR: denoising loss recovered with the MLP replaced by the transcoder, vs zero- and mean-ablated MLP.",
        "",
    ]
    runs = list(results.values())
    for model in dict.fromkeys(r["model"] for r in runs):
        buckets = list(next(r for r in runs if r["model"] == model)["ev_by_bucket"])
        lines += [
            f"## {model}",
            "",
            "| variant | n | L0 | "
            + " | ".join(f"EV t {b}" for b in buckets)
            + " | DLR vs zero | DLR vs mean | dead |",
            "|---" * (len(buckets) + 6) + "|",
        ]
        for variant in dict.fromkeys(r["variant"] for r in runs):
            mine = [r for r in runs if r["model"] == model and r["variant"] == variant]
            if not mine:
                continue
            ev = [statistics.mean(r["ev_by_bucket"][b] for r in mine) for b in buckets]
            dead = [r["dead_fraction"] for r in mine if r["dead_fraction"] is not None]
            cells = [variant, str(len(mine)), f"{statistics.mean(r['l0'] for r in mine):.1f}"]
            cells += [f"{v:.4f}" for v in ev]
            cells += [f"{statistics.mean(r['recovered_vs_zero'] for r in mine):.4f}"]
            cells += [f"{statistics.mean(r['recovered_vs_mean'] for r in mine):.4f}"]
            cells += [f"{statistics.mean(dead):.3f}" if dead else ""]
            lines.append("| " + " | ".join(cells) + " |")
        wins = []
        for seed in sorted({r["seed"] for r in runs if r["model"] == model}):
            pair = {r["variant"]: r for r in runs if r["model"] == model and r["seed"] == seed}
            if {"tide_transcoder", "topk_transcoder"} <= set(pair):
                tide, base = pair["tide_transcoder"]["ev_by_bucket"], pair["topk_transcoder"]["ev_by_bucket"]
                wins.append(sum(tide[b] > base[b] for b in buckets))
        if wins:
            lines += ["", f"TIDE above the baseline in {wins} of {len(buckets)} buckets, per seed."]
        lines.append("")
    if cost:
        lines += [
            f"Training step at width 1536, k 16, batch 4096 (SAETrainer.step, median of interleaved runs): transcoder "
            f"{cost['transcoder_seconds'] * 1000:.0f} ms, TIDE SAE {cost['sae_seconds'] * 1000:.0f} ms, ratio "
            f"{cost['ratio']:.2f} (target <= 1.2).",
            "",
        ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits", "shapes"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--work", type=Path, default=Path("/tmp/sae-lens-dit-tc"))
    parser.add_argument("--skip-step-cost", action="store_true")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=[*VARIANTS, *ABLATIONS])
    parser.add_argument("--results", default="transcoders", help="results/<name>.{md,json}")
    args = parser.parse_args()
    path = RESULTS / f"{args.results}.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    results, cost = saved.get("runs", {}), saved.get("step_cost")
    if not args.skip_step_cost:
        cost = step_cost()
        print("step cost", cost, flush=True)
        write(results, cost, args.results)
    for seed in args.seeds:
        for model in args.models:
            for variant in args.variants:
                key = f"{model} | {variant} | seed {seed}"
                if key in results:
                    continue
                results[key] = run_one(model, variant, seed, args.work)
                print(key, json.dumps(results[key]), flush=True)
                write(results, cost, args.results)


if __name__ == "__main__":
    main()
