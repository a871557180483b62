"""The frontier the field reads: explained variance and denoising loss recovered against L0, for TIDE, TopK and
BatchTopK over k and dictionary width, trained with the runner's recipe on the bundled backbones.

Every SAE trains on the same rows as `bench_recipe_sweep.py` (one harvest per backbone and hook: 640 images,
50 DDIM steps, both CFG branches, 256k rows) through SAELens's `SAETrainer` with the runner's recipe for the
architecture (`training.recipe`: TIDE's "DiT" recipe, b_dec at the geometric median and a unit-norm decoder start;
TopK's and BatchTopK's "plain TopK" recipe, b_dec at the mean, Gaussian unit decoder rows, inputs at unit centred
norm, rows back to unit norm after each step; dead window 20 steps; the architecture's `DEFAULT_LR`), 2M rows in
batches of 4096. Runs of an older recipe stay in the table, labelled, and faint in the plot. Each is saved as
SAELens saves it and scored as loaded back (BatchTopK becomes a JumpReLU SAE, so its L0 is measured, not set):
held-out explained variance, dead and dense latents on 102,400 rows of 256 fresh images (harvest seed 777, both
branches), and denoising loss recovered (against mean-ablation, mean over buckets and branches) on 64 held-out images of
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
from sae_lens_dit.saes.data_init import centre_of, init_from_rows  # noqa: E402
from sae_lens_dit.toy.backbones import load_pipeline  # noqa: E402
from sae_lens_dit.toy.image_sets import training_split  # noqa: E402
from sae_lens_dit.training.recipe import (  # noqa: E402
    DIT_RECIPE,
    PLAIN_TOPK_RECIPE,
    hold_unit_decoder_rows,
    recipe_for,
    unit_scaling_factor,
)
from sae_lens_dit.training.runner import DEFAULT_LR, DiTSAERunnerConfig  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ARCHITECTURES = ("tide", "topk", "batchtopk")
RECIPE = DiTSAERunnerConfig.__dataclass_fields__  # the runner's defaults are the recipe
RECIPE_NAMES = {DIT_RECIPE: "DiT", PLAIN_TOPK_RECIPE: "plain TopK"}


def recipe_name(architecture: str) -> str:
    """The name of the recipe an architecture trains with now (runs from before the recipe was recorded: DiT)."""
    return RECIPE_NAMES[recipe_for("topk_sparse" if architecture == "topk" else architecture)]


def train_and_save(architecture: str, d_sae: int, k: int, data: dict, seed: int, folder: Path, hook: str) -> SAE:
    torch.manual_seed(seed)
    sae_cls, cfg_cls = get_sae_training_class("topk_sparse" if architecture == "topk" else architecture)
    cfg = cfg_cls(d_in=data["train_x"].shape[1], d_sae=d_sae, k=k)
    cfg.metadata.hook_name = hook  # where `evals.spliced_denoising` splices it
    sae = sae_cls(cfg)
    recipe = recipe_for(cfg.architecture())  # as the runner resolves it (`training.recipe`)
    rows = data["train_x"][: RECIPE["init_rows"].default]
    scaling = None
    if recipe.input_scale == "unit":
        scaling = unit_scaling_factor((rows - centre_of(rows, recipe.b_dec_init)).norm(dim=-1).mean())
    init_from_rows(
        sae,
        rows,
        recipe.b_dec_init,
        scaling,
        unit_decoder=RECIPE["unit_decoder_init"].default,
        directions=recipe.decoder_directions,
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
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=provider)
    trainer.activation_scaler.scaling_factor = scaling  # folded into the saved weights by fit()
    if recipe.decoder_norm == "unit_rows":
        hold_unit_decoder_rows(trainer.optimizer, sae)
    trained = trainer.fit()
    trained.save_inference_model(str(folder))
    return SAE.load_from_disk(str(folder))


@torch.no_grad()
def measured_l0(sae, x: torch.Tensor, t: torch.Tensor) -> float:
    return float(
        sum((reconstruct(sae, x[i : i + 8192], t[i : i + 8192])[1] != 0).sum() for i in range(0, len(x), 8192)) / len(x)
    )


def run_recipe(run: dict) -> str:
    return run.get("recipe", "DiT")  # runs from before the recipe was recorded trained with the DiT recipe


def series(results: dict) -> list[tuple[str, str, str]]:
    """(architecture, recipe, colour) of each line: every architecture's current recipe, then the older recipes
    that runs exist for (drawn faint, for comparison)."""
    lines = [(arch, recipe_name(arch), color) for arch, color in zip(ARCHITECTURES, ("C3", "C0", "C2"), strict=True)]
    older = sorted({(r["architecture"], run_recipe(r)) for r in results.values()} - {a[:2] for a in lines})
    return lines + [(arch, recipe, "C7" if arch == "topk" else "C8") for arch, recipe in older]


def plot(results: dict, path: Path) -> None:
    models = sorted({r["model"] for r in results.values()})
    fig, axes = plt.subplots(2, len(models), figsize=(5.5 * len(models), 8), squeeze=False)
    for col, model in enumerate(models):
        for row, metric in enumerate(("explained_variance", "denoising_loss_recovered")):
            ax = axes[row][col]
            for arch, recipe, color in series(results):
                for width, style in ((4, "--"), (16, "-")):
                    pts = {}
                    for r in results.values():
                        if (r["model"], r["architecture"], r["width"], run_recipe(r)) == (model, arch, width, recipe):
                            pts.setdefault(r["k"], []).append((r["l0"], r[metric]))
                    if pts:
                        ks = sorted(pts)
                        xs = [statistics.mean(p[0] for p in pts[k]) for k in ks]
                        ys = [statistics.mean(p[1] for p in pts[k]) for k in ks]
                        label = f"{arch} {width}x" + (f" ({recipe} recipe)" if recipe != recipe_name(arch) else "")
                        ax.plot(xs, ys, style, marker="o", color=color, label=label, alpha=0.4 if "(" in label else 1)
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
                        if recipe_name(arch) != "DiT":
                            key += f" | {recipe_name(arch)} recipe"
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
                            "recipe": recipe_name(arch),
                            **scores,
                            "l0": measured_l0(sae, data["test_x"], data["test_t"]),
                            "denoising_loss_recovered": statistics.mean(d["recovered_vs_mean"] for d in denoising),
                            "seconds": round(time.perf_counter() - start, 1),
                        }
                        print(key, json.dumps(results[key]), flush=True)
                        out_json.write_text(json.dumps(results, indent=1))
    write_report(results)


def summary(results: dict) -> list[str]:
    """Whether TIDE leads, per (model, width, k) and seed: its EV and DLR minus the best baseline run's (TopK or
    BatchTopK, on any recipe run: the stricter comparison), computed from the runs (nothing hand-written)."""
    by_cell: dict[tuple, dict[str, list[dict]]] = {}
    for r in results.values():
        side = "tide" if r["architecture"] == "tide" else "baselines"
        by_cell.setdefault((r["model"], r["width"], r["k"], r["seed"]), {}).setdefault(side, []).append(r)
    cells = sorted(c for c, sides in by_cell.items() if len(sides) == 2)
    if not cells:
        return []
    kinds: dict[tuple[str, str], set[int]] = {}
    for r in results.values():
        if r["architecture"] != "tide":
            kinds.setdefault((r["architecture"], run_recipe(r)), set()).add(r["seed"])
    compared = ", ".join(
        f"{arch} ({recipe} recipe, seeds {sorted(seeds)})" for (arch, recipe), seeds in sorted(kinds.items())
    )
    lines = [
        "## Does TIDE lead? (per seed: TIDE minus the best baseline run)",
        "",
        f"Baselines: {compared}.",
        "",
        "| model | width | k | seeds | EV margin, mean (min) | DLR margin, mean (min) |",
        "|---|---|---|---|---|---|",
    ]
    wins = {"EV": 0, "DLR": 0}
    for model, width, k in sorted({c[:3] for c in cells}):
        seeds = [c[3] for c in cells if c[:3] == (model, width, k)]
        margins: dict[str, list[float]] = {"EV": [], "DLR": []}
        for seed in seeds:
            sides = by_cell[(model, width, k, seed)]
            for name, key in (("EV", "explained_variance"), ("DLR", "denoising_loss_recovered")):
                margin = sides["tide"][0][key] - max(r[key] for r in sides["baselines"])
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
        groups.setdefault((r["model"], r["hook"], r["width"], r["k"], r["architecture"], run_recipe(r)), []).append(r)
    lines = [
        "# Frontier: TIDE, TopK and BatchTopK against L0",
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        "",
        "Mean over seeds (n = seeds run). EV: held-out explained variance; DLR: denoising loss recovered vs "
        "mean-ablation.",
        "",
        "| model | hook | width | k | architecture | recipe | n | L0 | EV | DLR | dead | dense |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, hook, width, k, arch, recipe), rs in sorted(groups.items()):
        m = {
            key: statistics.mean(r[key] for r in rs)
            for key in ("l0", "explained_variance", "denoising_loss_recovered", "dead_fraction", "dense_fraction")
        }
        lines.append(
            f"| {model} | {hook} | {width}x | {k} | {arch} | {recipe} | {len(rs)} | {m['l0']:.1f} | "
            f"{m['explained_variance']:.4f} | {m['denoising_loss_recovered']:.4f} | "
            f"{m['dead_fraction']:.3f} | {m['dense_fraction']:.3f} |"
        )
    lines += ["", *summary(results)]
    (RESULTS / "frontier.md").write_text("\n".join(lines) + "\n\n![frontier](frontier.png)\n")
    plot(results, RESULTS / "frontier.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
