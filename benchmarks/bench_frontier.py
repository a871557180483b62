"""The frontier the field reads: explained variance and denoising loss recovered against L0, for TIDE, TopK and
BatchTopK over k and dictionary width, trained with the runner's recipe on the bundled backbones.

Every SAE trains on the same rows as `bench_recipe_sweep.py` (one harvest per backbone and hook: 640 images,
50 DDIM steps, both CFG branches, 256k rows) through SAELens's `SAETrainer` with the runner's recipe
(`saes.data_init.init_from_rows`: b_dec at the geometric median, unit-norm decoder start; dead window 20 steps;
the architecture's `DEFAULT_LR`), 2M rows in batches of 4096. Each is saved as SAELens saves it and scored
as loaded back (BatchTopK becomes a JumpReLU SAE, so its L0 is measured, not set): held-out explained
variance, dead and dense latents on 102,400 rows of 256 fresh images (harvest seed 777, both branches), and
denoising loss recovered (against mean-ablation, mean over buckets and branches) on 64 held-out images of
the backbone's held-out split noised into every timestep bucket (`evals.heldout_pass`). Seeds here are
not the sweep's seed 0.

    python benchmarks/bench_frontier.py [--models digits shapes] [--k 8 16 32 64] [--widths 4 16]
        [--seeds 1 2 3] [--work /tmp/sae-lens-dit-sweep]

Resumable (runs already in results/frontier.json are kept). Writes benchmarks/results/frontier.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from bench_recipe_sweep import BATCH, TOKENS, batches, rows, score  # noqa: E402
from sae_lens import SAE, LoggingConfig, SAETrainer  # noqa: E402
from sae_lens.config import SAETrainerConfig  # noqa: E402
from sae_lens.registry import get_sae_training_class  # noqa: E402

import sae_lens_dit  # noqa: E402, F401
from sae_lens_dit.analysis.evals import heldout_pass, reconstruct, spliced_denoising  # noqa: E402
from sae_lens_dit.hooking.hooked import HookedDiT  # noqa: E402
from sae_lens_dit.saes import feed_timesteps  # noqa: E402
from sae_lens_dit.saes.data_init import init_from_rows  # noqa: E402
from sae_lens_dit.toy.backbones import load_pipeline  # noqa: E402
from sae_lens_dit.toy.image_sets import training_split  # noqa: E402
from sae_lens_dit.training.runner import DEFAULT_LR, DiTSAERunnerConfig  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ARCHITECTURES = ("tide", "topk", "batchtopk")
RECIPE = DiTSAERunnerConfig.__dataclass_fields__  # the runner's defaults are the recipe


def train_and_save(architecture: str, d_sae: int, k: int, data: dict, seed: int, folder: Path, hook: str) -> SAE:
    torch.manual_seed(seed)
    sae_cls, cfg_cls = get_sae_training_class("topk_sparse" if architecture == "topk" else architecture)
    cfg = cfg_cls(d_in=data["train_x"].shape[1], d_sae=d_sae, k=k)
    cfg.metadata.hook_name = hook  # where `evals.spliced_denoising` splices it
    sae = sae_cls(cfg)
    init_from_rows(
        sae,
        data["train_x"][: RECIPE["init_rows"].default],
        RECIPE["b_dec_init"].default,
        unit_decoder=RECIPE["unit_decoder_init"].default,
    )
    lr = DEFAULT_LR[architecture]
    steps = TOKENS // BATCH
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * BATCH,
        train_batch_size_samples=BATCH,
        lr=lr,
        lr_end=lr / 10,
        lr_warm_up_steps=0,
        lr_decay_steps=0,
        device="cpu",
        dead_feature_window=RECIPE["dead_feature_window"].default,
        feature_sampling_window=500,
        n_checkpoints=0,
        checkpoint_path=str(folder / "checkpoints"),
        logger=LoggingConfig(log_to_wandb=False),
    )
    provider = feed_timesteps(batches(data["train_x"], data["train_t"], seed), sae)
    trained = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=provider).fit()
    trained.save_inference_model(str(folder))
    return SAE.load_from_disk(str(folder))


@torch.no_grad()
def measured_l0(sae, x: torch.Tensor, t: torch.Tensor) -> float:
    return float(
        sum((reconstruct(sae, x[i : i + 8192], t[i : i + 8192])[1] != 0).sum() for i in range(0, len(x), 8192)) / len(x)
    )


def plot(results: dict, path: Path) -> None:
    models = sorted({r["model"] for r in results.values()})
    fig, axes = plt.subplots(2, len(models), figsize=(5.5 * len(models), 8), squeeze=False)
    for col, model in enumerate(models):
        for row, metric in enumerate(("explained_variance", "denoising_loss_recovered")):
            ax = axes[row][col]
            for arch, color in zip(ARCHITECTURES, ("C3", "C0", "C2"), strict=True):
                for width, style in ((4, "--"), (16, "-")):
                    pts = {}
                    for r in results.values():
                        if r["model"] == model and r["architecture"] == arch and r["width"] == width:
                            pts.setdefault(r["k"], []).append((r["l0"], r[metric]))
                    if pts:
                        ks = sorted(pts)
                        xs = [statistics.mean(p[0] for p in pts[k]) for k in ks]
                        ys = [statistics.mean(p[1] for p in pts[k]) for k in ks]
                        ax.plot(xs, ys, style, marker="o", color=color, label=f"{arch} {width}x")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("L0 (held-out)")
            ax.set_ylabel(metric.replace("_", " "))
            ax.set_title(f"{model}: {metric.replace('_', ' ')}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["digits", "shapes"])
    parser.add_argument("--hook", default="blocks.1.hook_resid_post")
    parser.add_argument("--k", nargs="+", type=int, default=[8, 16, 32, 64])
    parser.add_argument("--widths", nargs="+", type=int, default=[4, 16])
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--work", type=Path, default=Path("/tmp/sae-lens-dit-sweep"))
    args = parser.parse_args()
    out_json = RESULTS / "frontier.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    for model in args.models:
        data = rows(model, args.hook, args.work)
        pipe = load_pipeline(model)
        hooked = HookedDiT(pipe.transformer)
        hp = heldout_pass(pipe, hooked, args.hook, training_split(model, seed=0)[1].take(64))
        for seed in args.seeds:
            for width in args.widths:
                for k in args.k:
                    for arch in args.architectures:
                        key = f"{model} | {args.hook} | {arch} | {width}x | k {k} | seed {seed}"
                        if key in results:
                            continue
                        start = time.perf_counter()
                        with tempfile.TemporaryDirectory() as tmp:
                            d_sae = width * data["train_x"].shape[1]
                            sae = train_and_save(arch, d_sae, k, data, seed, Path(tmp), args.hook)
                        scores = score(sae, data["test_x"], data["test_t"])
                        denoising = spliced_denoising(sae, hooked, hp)
                        results[key] = {
                            "model": model,
                            "hook": args.hook,
                            "architecture": arch,
                            "width": width,
                            "k": k,
                            "seed": seed,
                            **scores,
                            "l0": measured_l0(sae, data["test_x"], data["test_t"]),
                            "denoising_loss_recovered": statistics.mean(d["recovered_vs_mean"] for d in denoising),
                            "seconds": round(time.perf_counter() - start, 1),
                        }
                        print(key, json.dumps(results[key]), flush=True)
                        out_json.write_text(json.dumps(results, indent=1))
    write_report(results)


def summary(results: dict) -> list[str]:
    """Whether TIDE leads, per (model, width, k) and seed: its EV and DLR minus the best baseline's, computed
    from the runs (nothing hand-written)."""
    runs = {(r["model"], r["width"], r["k"], r["seed"], r["architecture"]): r for r in results.values()}
    cells = sorted({key[:4] for key in runs if all((*key[:4], a) in runs for a in ARCHITECTURES)})
    if not cells:
        return []
    lines = [
        "## Does TIDE lead? (per seed: TIDE minus the better of TopK and BatchTopK)",
        "",
        "| model | width | k | seeds | EV margin, mean (min) | DLR margin, mean (min) |",
        "|---|---|---|---|---|---|",
    ]
    wins = {"EV": 0, "DLR": 0}
    for model, width, k in sorted({c[:3] for c in cells}):
        seeds = [c[3] for c in cells if c[:3] == (model, width, k)]
        margins: dict[str, list[float]] = {"EV": [], "DLR": []}
        for seed in seeds:
            rs = {a: runs[(model, width, k, seed, a)] for a in ARCHITECTURES}
            for name, key in (("EV", "explained_variance"), ("DLR", "denoising_loss_recovered")):
                margin = rs["tide"][key] - max(rs[a][key] for a in ARCHITECTURES if a != "tide")
                margins[name].append(margin)
                wins[name] += margin > 0
        ev, dlr = margins["EV"], margins["DLR"]
        lines.append(
            f"| {model} | {width}x | {k} | {len(seeds)} | {statistics.mean(ev):+.4f} ({min(ev):+.4f}) | "
            f"{statistics.mean(dlr):+.4f} ({min(dlr):+.4f}) |"
        )
    lines += [
        "",
        f"TIDE has the highest explained variance in {wins['EV']} and the highest denoising loss recovered in "
        f"{wins['DLR']} of {len(cells)} (model, width, k, seed) cells.",
    ]
    return lines


def write_report(results: dict) -> None:
    groups: dict[tuple, list[dict]] = {}
    for r in results.values():
        groups.setdefault((r["model"], r["hook"], r["width"], r["k"], r["architecture"]), []).append(r)
    lines = [
        "# Frontier: TIDE, TopK and BatchTopK against L0",
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        "",
        "Mean over seeds (n = seeds run). EV: held-out explained variance; DLR: denoising loss recovered vs "
        "mean-ablation.",
        "",
        "| model | hook | width | k | architecture | n | L0 | EV | DLR | dead | dense |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, hook, width, k, arch), rs in sorted(groups.items()):
        m = {
            key: statistics.mean(r[key] for r in rs)
            for key in ("l0", "explained_variance", "denoising_loss_recovered", "dead_fraction", "dense_fraction")
        }
        lines.append(
            f"| {model} | {hook} | {width}x | {k} | {arch} | {len(rs)} | {m['l0']:.1f} | "
            f"{m['explained_variance']:.4f} | {m['denoising_loss_recovered']:.4f} | "
            f"{m['dead_fraction']:.3f} | {m['dense_fraction']:.3f} |"
        )
    lines += ["", *summary(results)]
    (RESULTS / "frontier.md").write_text("\n".join(lines) + "\n\n![frontier](frontier.png)\n")
    plot(results, RESULTS / "frontier.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
