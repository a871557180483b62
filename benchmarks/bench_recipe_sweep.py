"""Which training recipe keeps an SAE's latents alive on DiT activations: the sweep behind the runner's defaults.

Each variant trains one SAE through SAELens's `SAETrainer` exactly as `DiTSAETrainingRunner` does (the data
provider of `feed_timesteps`, `saes.data_init.init_from_rows` before the first step), on one harvest of the
bundled backbone (640 images, 50 DDIM steps, both CFG branches, 1/16 of the tokens: 256k rows, seed 0), and is
scored on 256 fresh images (102,400 rows, harvest seed 777, both branches): held-out explained variance over
all rows, dead latents (never fire) and dense latents (fire on more than 10% of rows). A plain-torch TopK
(`plain_topk_reference.py`, independent of SAELens) on the same rows is the reference for what a healthy TopK
reaches.

    python benchmarks/bench_recipe_sweep.py [--model digits] [--hook blocks.1.hook_resid_post] [--work /tmp/sweep]
        [--variants defaults unit-decoder ...] [--seed 0]

Writes benchmarks/results/recipe_sweep_<model>.md (and .json); rows already in the JSON are reused.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from sae_lens import LoggingConfig, SAETrainer
from sae_lens.config import SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from safetensors.torch import load_file, save_file

import sae_lens_dit  # noqa: F401  (registers tide, topk_sparse)
from sae_lens_dit.analysis.evals import DENSE_THRESHOLD, latent_usage, reconstruct
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.saes import feed_timesteps
from sae_lens_dit.saes.data_init import init_from_rows
from sae_lens_dit.toy.backbones import load_pipeline
from sae_lens_dit.training.harvest import HarvestConfig, harvest_chunks
from sae_lens_dit.training.recipe import hold_unit_decoder_rows

RESULTS = Path(__file__).parent / "results"
D_SAE, K, TOKENS, BATCH = 1536, 16, 2_000_000, 4096
# name: (training architecture, recipe). "sae_lens defaults": b_dec 0, decoder rows at norm 0.1 (SAELens's start),
# dead window 200 steps (the runner's old default), AuxK weight 1.0; each later variant changes one thing. "aux"
# absent: the architecture's own default (TIDE 1/32, SAELens TopK 1.0); "rows": training rows (default 2M);
# "warmup": learning-rate warm-up steps (default 0); "batch": rows per step (default 4096); "normalize": inputs
# scaled to mean norm sqrt(d_in) (SAELens's expected_average_only_in, folded back after training); "unit":
# inputs scaled so the mean row, centred on the training mean, has norm 1 (the plain-torch reference's scale), by
# the same SAELens activation scaler (folded back after training); "clip": False turns off the gradient clipping
# at norm 1 that SAELens's trainer applies before each step; "renorm": decoder rows back to unit norm after each
# Adam step (the plain-torch reference's way of holding the decoder norm).
VARIANTS: dict[str, tuple[str, dict]] = {
    "topk sae_lens defaults": ("topk_sparse", {"b_dec": "zeros", "unit": False, "window": 200, "lr": 4e-4}),
    "topk + unit decoder": ("topk_sparse", {"b_dec": "zeros", "unit": True, "window": 200, "lr": 4e-4}),
    "topk + b_dec median": ("topk_sparse", {"b_dec": "geometric_median", "unit": True, "window": 200, "lr": 4e-4}),
    "topk recipe (+ window 20)": ("topk_sparse", {"b_dec": "geometric_median", "unit": True, "window": 20, "lr": 4e-4}),
    "topk recipe lr 1e-3": ("topk_sparse", {"b_dec": "geometric_median", "unit": True, "window": 20, "lr": 1e-3}),
    "topk recipe lr 1e-3 aux 1/32": (
        "topk_sparse",
        {"b_dec": "geometric_median", "unit": True, "window": 20, "lr": 1e-3, "aux": 1 / 32},
    ),
    "topk recipe lr 4e-4 aux 1/32": (
        "topk_sparse",
        {"b_dec": "geometric_median", "unit": True, "window": 20, "lr": 4e-4, "aux": 1 / 32},
    ),
    "topk recipe lr 7e-4": ("topk_sparse", {"b_dec": "geometric_median", "unit": True, "window": 20, "lr": 7e-4}),
    "topk recipe lr 1e-3 warmup 100": (
        "topk_sparse",
        {"b_dec": "geometric_median", "unit": True, "window": 20, "lr": 1e-3, "warmup": 100},
    ),
    "topk recipe 4M rows": (
        "topk_sparse",
        {"b_dec": "geometric_median", "unit": True, "window": 20, "lr": 4e-4, "rows": 4_000_000},
    ),
    "topk recipe 4M rows aux 4": (
        "topk_sparse",
        {"b_dec": "geometric_median", "unit": True, "window": 20, "lr": 4e-4, "rows": 4_000_000, "aux": 4.0},
    ),
    "topk recipe 4M rows window 5": (
        "topk_sparse",
        {"b_dec": "geometric_median", "unit": True, "window": 5, "lr": 4e-4, "rows": 4_000_000},
    ),
    "topk recipe 4M rows window 50": (
        "topk_sparse",
        {"b_dec": "geometric_median", "unit": True, "window": 50, "lr": 4e-4, "rows": 4_000_000},
    ),
    "topk recipe 4M rows window 100": (
        "topk_sparse",
        {"b_dec": "geometric_median", "unit": True, "window": 100, "lr": 4e-4, "rows": 4_000_000},
    ),
    "topk recipe window 50": ("topk_sparse", {"b_dec": "geometric_median", "unit": True, "window": 50, "lr": 4e-4}),
    "topk recipe 4M rows batch 1024 window 200": (
        "topk_sparse",
        {"b_dec": "geometric_median", "unit": True, "window": 200, "lr": 4e-4, "rows": 4_000_000, "batch": 1024},
    ),
    "topk recipe 4M rows window 50 normalized": (
        "topk_sparse",
        {"b_dec": "geometric_median", "unit": True, "window": 50, "lr": 4e-4, "rows": 4_000_000, "normalize": True},
    ),
    "topk recipe 4M rows window 50 unit scale": (
        "topk_sparse",
        {"b_dec": "geometric_median", "unit": True, "window": 50, "lr": 4e-4, "rows": 4_000_000, "normalize": "unit"},
    ),
    "topk recipe 3M rows batch 1024 window 50": (
        "topk_sparse",
        {"b_dec": "geometric_median", "unit": True, "window": 50, "lr": 4e-4, "rows": 3_072_000, "batch": 1024},
    ),
    "topk recipe 3M rows batch 1024 window 50 no aux": (
        "topk_sparse",
        {
            "b_dec": "geometric_median",
            "unit": True,
            "window": 50,
            "lr": 4e-4,
            "rows": 3_072_000,
            "batch": 1024,
            "aux": 0.0,
        },
    ),
    "topk recipe 3M rows batch 1024 window 50 no clip": (
        "topk_sparse",
        {"b_dec": "geometric_median", "unit": True, "window": 50, "lr": 4e-4, "rows": 3_072_000, "batch": 1024}
        | {"clip": False},
    ),
    "topk recipe 3M rows batch 1024 window 50 renorm": (
        "topk_sparse",
        {"b_dec": "geometric_median", "unit": True, "window": 50, "lr": 4e-4, "rows": 3_072_000, "batch": 1024}
        | {"renorm": True},
    ),
    "topk (SAELens's dense step) recipe 3M rows batch 1024 window 50": (
        "topk",
        {"b_dec": "geometric_median", "unit": True, "window": 50, "lr": 4e-4, "rows": 3_072_000, "batch": 1024},
    ),
    "topk recipe 3M rows batch 1024 window 50 b_dec mean": (
        "topk_sparse",
        {"b_dec": "mean", "unit": True, "window": 50, "lr": 4e-4, "rows": 3_072_000, "batch": 1024},
    ),
    "tide sae_lens defaults": ("tide", {"b_dec": "zeros", "unit": False, "window": 200, "lr": 4e-4, "aux": 1.0}),
    "tide recipe lr 4e-4 aux 1": (
        "tide",
        {"b_dec": "geometric_median", "unit": True, "window": 20, "lr": 4e-4, "aux": 1.0},
    ),
    "tide recipe lr 1e-3 aux 1": (
        "tide",
        {"b_dec": "geometric_median", "unit": True, "window": 20, "lr": 1e-3, "aux": 1.0},
    ),
    "tide recipe (lr 1e-3 aux 1/32)": ("tide", {"b_dec": "geometric_median", "unit": True, "window": 20, "lr": 1e-3}),
    "tide recipe window 50": ("tide", {"b_dec": "geometric_median", "unit": True, "window": 50, "lr": 1e-3}),
    "tide recipe 4M rows window 50": (
        "tide",
        {"b_dec": "geometric_median", "unit": True, "window": 50, "lr": 1e-3, "rows": 4_000_000},
    ),
    "tide recipe 4M rows batch 1024 window 200": (
        "tide",
        {"b_dec": "geometric_median", "unit": True, "window": 200, "lr": 1e-3, "rows": 4_000_000, "batch": 1024},
    ),
    "batchtopk recipe lr 4e-4": ("batchtopk", {"b_dec": "geometric_median", "unit": True, "window": 20, "lr": 4e-4}),
}
# The plain TopK recipe (`training.recipe.PLAIN_TOPK_RECIPE`: b_dec at the mean, Gaussian unit decoder rows with
# the encoder their transpose, inputs at unit centred norm, rows back to unit norm after each step), by learning
# rate and budget: 2M rows in batches of 4096 (488 steps, the default here), 4M (976 steps), 3M in batches of 1024
# (3000 steps, the plain-torch reference's budget).
PLAIN = {"b_dec": "mean", "unit": True, "directions": "gaussian", "normalize": "unit", "renorm": True, "window": 20}
BUDGETS = {  # name suffix: (budget, learning rates tried)
    "": ({}, (4e-4, 1e-3, 2e-3, 4e-3)),
    " 4M rows": ({"rows": 4_000_000}, (1e-3, 2e-3)),
    " 3M rows batch 1024": ({"rows": 3_072_000, "batch": 1024}, (4e-4, 1e-3, 2e-3)),
}
for _suffix, (_budget, _lrs) in BUDGETS.items():
    for _lr in _lrs:
        _name = f"topk plain recipe lr {_lr:.0e}{_suffix}".replace("e-0", "e-")
        VARIANTS[_name] = ("topk_sparse", PLAIN | {"lr": _lr} | _budget)
VARIANTS["topk plain recipe lr 4e-4 3M rows batch 1024 window 50"] = (
    "topk_sparse",
    PLAIN | {"lr": 4e-4, "window": 50} | BUDGETS[" 3M rows batch 1024"][0],
)
for _lr in (4e-4, 1e-3):  # TIDE on the plain recipe, at the reference's budget (its AuxK weight 1/32)
    VARIANTS[f"tide plain recipe lr {_lr:.0e} 3M rows batch 1024 window 50".replace("e-0", "e-")] = (
        "tide",
        PLAIN | {"lr": _lr, "window": 50} | BUDGETS[" 3M rows batch 1024"][0],
    )
VARIANTS["tide plain recipe lr 1e-3"] = ("tide", PLAIN | {"lr": 1e-3})  # at the runner's budget
VARIANTS["tide plain recipe lr 1e-3 4M rows"] = ("tide", PLAIN | {"lr": 1e-3} | BUDGETS[" 4M rows"][0])
VARIANTS["batchtopk plain recipe lr 1e-3"] = ("batchtopk", PLAIN | {"lr": 1e-3})


FINDINGS = """\
Findings (both backbones, seed 0 unless named; the runner's defaults are the 2M-row recipes, the bundled releases
were trained on the 4M-row one before the plain TopK recipe):

- At 2M rows the TopK recipe keeps its latents alive (dead 0.5-3%) but leaves 2.0-2.2% of them dense, just over
  issue 22's 2%; a plain-torch TopK on the same rows has 1.6% (digits) and 2.7% (shapes).
- A higher learning rate trades dense for dead latents (TopK lr 1e-3 on digits: dense 1.6%, dead 12-17%; lr 7e-4:
  dense 1.8%, dead 4-6%; a 100-step warm-up does not prevent it); a lower AuxK weight changes nothing at 4e-4.
- Training longer lowers the dense share and raises explained variance (TopK 4M rows: dense 1.6% / 1.0%, EV
  +0.011 / +0.012), but with the 20-step dead window shapes loses 7.4% of its latents. AuxK, as SAELens applies it
  here, is what kills them: a 5-step window leaves 31% dead, a 50- or 100-step window 1.8% (the two give identical
  numbers, so AuxK apparently never triggers with either); a 4x AuxK weight gives 4.8% dead and 2.1% dense.
- Recipe of the bundled releases, both architectures: 4M rows, dead window 50. TopK: dead 1.0% / 1.8%, dense
  1.6% / 1.0%; TIDE: dead 3.1% / 2.6%, dense 1.1% / 0.2% (digits / shapes).
- Against the plain-torch TopK reference: on digits the SAELens TopK at 4M rows is within 0.001 of it (0.9771 vs
  0.9781); on shapes it stays 0.021 short (0.9266 vs 0.9476). Not closed by SAELens's input normalisation
  (expected_average_only_in: 0.9250) nor by 4x more, smaller steps (batch 1024, 3906 steps: 0.9324, but 5.5% dead;
  TIDE the same way 0.9393, 5.1% dead). Three more differences ruled out on shapes: the reference's input scale
  (inputs centred and scaled to unit mean norm through SAELens's activation scaler: 0.9158, lower), its number of
  steps and batch (3000 steps of 1024 rows, as the reference: 0.9307) and AuxK (the same without it: 0.9311, 9.6%
  dead instead of 26%). Four more ruled out on shapes, each from that 3000 x 1024 run (0.9307): SAELens's gradient
  clipping at norm 1 (off: 0.9267), how the decoder norm is held (rows renormalised after every Adam step, as the
  reference does: 0.9299), this package's sparse TopK step (SAELens's own dense `topk`: 0.9307) and b_dec at the
  mean rather than the geometric median (0.9309). Located by `bench_topk_gap.py`: not the trainer but the recipe.
  SAELens's TopK in a bare loop reaches 0.926-0.927 with the package's recipe and 0.938-0.953 with the reference's
  (inputs centred and scaled, Gaussian directions with b_dec at the mean, rows renormalised after each step); any
  one of the three switched back gives 0.926-0.929. The reference's extra EV comes with 2.5-2.7% dense latents.
- The plain TopK recipe (`training.recipe.PLAIN_TOPK_RECIPE`, the "topk plain recipe" rows): those three choices
  inside SAELens's `SAETrainer`. At the reference's budget (3000 steps of 1024, lr 4e-4, dead window 50) shapes
  reaches 0.9470 / 0.9331 / 0.9327 (seeds 0-2; dead 0.1-0.7%, dense 2.1-2.7%); the same runs with the Gaussian
  rows drawn from a generator of their own reached 0.9459 / 0.9473 / 0.9487, so the spread is the initial draw's,
  as the reference's own (0.9380-0.9527). With the 20-step window AuxK kills 22-32% of the latents at batch 1024.
  It learns slowly at 4e-4 (2M rows: 0.8863) and is above the DiT recipe at lr 1e-3 at every budget: shapes 2M /
  4M rows 0.9231 / 0.9389 (DiT recipe 0.9139 / 0.9263), digits 0.9654 / 0.9766 (0.9658 / 0.9771, a tie); lr 2e-3
  and 4e-3 gain at 2M rows (0.9245, 0.9271) and lose at 4M (0.9317). So TopK and BatchTopK (shapes 2M rows:
  0.9288, dead 0.6%, dense 3.3%) train on it at lr 1e-3. TIDE on the plain recipe at the reference's budget: lr
  4e-4 0.9588 (dead 5.7%), lr 1e-3 0.9381 (dead 4.5%), against 0.9393 on its own recipe with 4M rows of 1024;
  at the runner's budgets (lr 1e-3, 2M / 4M rows of 4096) 0.9205 / 0.9313, below its own recipe (0.9300 / 0.9351
  with window 50), so TIDE keeps the DiT recipe."""


def rows(model: str, hook: str, work: Path) -> dict[str, torch.Tensor]:
    """Training and held-out rows of `hook`, harvested once into `work`."""
    path = work / f"{model}-{hook}.safetensors"
    if path.exists():
        return load_file(str(path))
    pipe = load_pipeline(model)
    hooked = HookedDiT(pipe.transformer)
    out = {}
    for split, images, seed in (("train", 640, 0), ("test", 256, 777)):
        cfg = HarvestConfig(hook_names=(hook,), num_images=images, branch="both", seed=seed)
        chunks = list(harvest_chunks(pipe, hooked, cfg, progress=True))
        out[f"{split}_x"] = torch.cat([c.activations[hook] for c in chunks]).float()
        out[f"{split}_t"] = torch.cat([c.timestep for c in chunks]).float()
    work.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    return out


def batches(
    x: torch.Tensor, t: torch.Tensor, seed: int, batch: int = BATCH
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch + 1, batch):
            yield x[perm[i : i + batch]], t[perm[i : i + batch]]


def train_variant(architecture: str, recipe: dict, data: dict[str, torch.Tensor], seed: int) -> dict:
    torch.manual_seed(seed)
    sae_cls, cfg_cls = get_sae_training_class(architecture)
    aux = {"aux_loss_coefficient": recipe["aux"]} if "aux" in recipe else {}  # else the architecture's default
    normalize = {"normalize_activations": "expected_average_only_in"} if recipe.get("normalize") is True else {}
    sae = sae_cls(cfg_cls(d_in=data["train_x"].shape[1], d_sae=D_SAE, k=K, **aux, **normalize))
    init_rows = data["train_x"][:65536]
    scaling = init_rows.shape[1] ** 0.5 / float(init_rows.norm(dim=-1).mean()) if normalize else None  # as the runner
    if recipe.get("normalize") == "unit":
        scaling = 1.0 / float((init_rows - init_rows.mean(0)).norm(dim=-1).mean())
    directions = recipe.get("directions", "sae_lens")
    init_from_rows(sae, init_rows, recipe["b_dec"], scaling, unit_decoder=recipe["unit"], directions=directions)
    batch = recipe.get("batch", BATCH)
    steps = recipe.get("rows", TOKENS) // batch
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch,
        train_batch_size_samples=batch,
        lr=recipe["lr"],
        lr_end=recipe["lr"] / 10,
        lr_warm_up_steps=recipe.get("warmup", 0),
        lr_decay_steps=0,
        device="cpu",
        dead_feature_window=recipe["window"],
        feature_sampling_window=500,
        n_checkpoints=0,
        checkpoint_path="/tmp/unused",
        logger=LoggingConfig(log_to_wandb=False),
    )
    start = time.perf_counter()
    provider = feed_timesteps(batches(data["train_x"], data["train_t"], seed, batch), sae)
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=provider)
    trainer.activation_scaler.scaling_factor = scaling  # None: no normalisation; else folded back by fit()
    if recipe.get("renorm"):
        hold_unit_decoder_rows(trainer.optimizer, sae)
    clip = torch.nn.utils.clip_grad_norm_
    if recipe.get("clip") is False:
        torch.nn.utils.clip_grad_norm_ = lambda params, *a, **k: torch.zeros(())  # the trainer's clip, off
    try:
        sae = trainer.fit()
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
    seconds = time.perf_counter() - start
    return {**score(sae, data["test_x"], data["test_t"]), "seconds": round(seconds, 1), "steps": steps}


@torch.no_grad()
def score(sae, x: torch.Tensor, t: torch.Tensor) -> dict:
    err = 0.0
    for i in range(0, len(x), 8192):
        err += float((reconstruct(sae, x[i : i + 8192], t[i : i + 8192])[0] - x[i : i + 8192]).pow(2).sum())
    usage = latent_usage(sae, x, t)
    return {
        "explained_variance": 1 - err / float((x - x.mean(0)).pow(2).sum()),
        "dead_fraction": usage.dead_fraction,
        "dense_fraction": usage.dense_fraction,
    }


def main() -> None:
    from plain_topk_reference import train_plain_topk

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="digits")
    parser.add_argument("--hook", default="blocks.1.hook_resid_post")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sae-lens-dit-sweep"))
    parser.add_argument("--variants", nargs="+", default=[*VARIANTS, "plain torch topk"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = rows(args.model, args.hook, args.work)
    out_json = RESULTS / f"recipe_sweep_{args.model}.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    for name in args.variants:
        key = f"{args.hook} | {name} | seed {args.seed}"
        if key in results:
            continue
        if name == "plain torch topk":
            start = time.perf_counter()
            res = train_plain_topk(data["train_x"], data["test_x"], K, D_SAE, steps=3000, seed=args.seed)
            results[key] = {
                **res,
                "seconds": round(time.perf_counter() - start, 1),
                "steps": 3000,
                "architecture": "plain torch",
                "recipe": "DESIGN.md reference, batch 1024",
            }
        else:
            architecture, recipe = VARIANTS[name]
            res = train_variant(architecture, recipe, data, args.seed)
            results[key] = {**res, "architecture": architecture, "recipe": recipe}
        print(key, json.dumps(results[key]), flush=True)
        out_json.write_text(json.dumps(results, indent=1))
    lines = [
        f"# Training recipe sweep: {args.model}",
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        "",
        f"d_sae {D_SAE}, k {K}, {TOKENS:,} training rows in batches of {BATCH} (the runner's preset).",
        "",
        "| hook | variant | seed | held-out explained variance | dead | "
        f"dense (> {DENSE_THRESHOLD:.0%} of rows) | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        hook, name, seed = key.split(" | ")
        lines.append(
            f"| {hook} | {name} | {seed.removeprefix('seed ')} | {r['explained_variance']:.4f} | "
            f"{r['dead_fraction']:.3f} | {r['dense_fraction']:.3f} | {r['seconds']} |"
        )
    lines += ["", FINDINGS]
    (RESULTS / f"recipe_sweep_{args.model}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
