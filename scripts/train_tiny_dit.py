"""Train one bundled backbone (`digits` or `shapes`) and write `pretrained/tiny-dit-<name>/`.

Start a backbone, then continue it in stages (CPU, one thread: runs are bit-for-bit repeatable):
    python scripts/train_tiny_dit.py --name shapes --steps 3500 --threads 1
    python scripts/train_tiny_dit.py --name shapes --steps 4500 --threads 1 --init-from pretrained/tiny-dit-shapes
Each model card lists the exact stages (lr, batch, --lr-decay, --min-snr-gamma, --num-layers) that
made the bundled weights; every stage appends itself to the folder's metrics.json history.

It trains the classifier first, then the DiT (epsilon prediction, squaredcos schedule, 10% label
dropout to the null class, AdamW, EMA; a stage may add depth, its new blocks starting as identities),
then measures what the model card reports: class accuracy of CFG samples per guidance scale (20 seeds
per class, DDIM 50 steps), the chosen default guidance re-measured on fresh seeds, denoising loss per
timestep bucket on held-out images, and (shapes) factor statistics.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from itertools import accumulate
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiTTransformer2DModel
from diffusers.training_utils import EMAModel
from PIL import Image

from sae_lens_dit.toy.backbones import (
    NULL_CLASS,
    IdentityVAE,
    TinyClassifier,
    TinyDiTPipeline,
    measure_shape_factors,
)
from sae_lens_dit.toy.image_sets import DIGIT_LABELS, SHAPE_KINDS, ShapesSpec, make_shapes, training_split

ROOT = Path(__file__).resolve().parents[1]
GUIDANCE_GRID = (1.0, 1.5, 2.0, 3.0, 4.0)
SAMPLES_PER_CLASS = 20
DEFAULT_LAYERS = 4
CHECK_SEEDS = (0, 1, 2, 3)
"""Seeds of the fresh sample sets that re-measure the accuracy at the chosen guidance (the grid's seed,
1234, also chose it)."""
GUIDANCE_TOLERANCE = 0.05
"""Default guidance: the strongest scale whose sample accuracy is within this of the best (CFG
samples stay on-class while the uncond branch, which SAEs and edits need, is exercised)."""
BUCKETS = ((0, 200), (200, 400), (400, 600), (600, 800), (800, 1000))


def dataset(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(train images, train labels, held-out images, held-out labels, label names)."""
    train, held = training_split(name, seed)
    return train.images, train.labels, held.images, held.labels, list(DIGIT_LABELS if name == "digits" else SHAPE_KINDS)


def dit_config(name: str, num_layers: int = DEFAULT_LAYERS) -> dict:
    channels, size, patch = (1, 8, 1) if name == "digits" else (3, 16, 2)
    return dict(
        in_channels=channels,
        out_channels=channels,
        sample_size=size,
        patch_size=patch,
        num_layers=num_layers,
        num_attention_heads=4,
        attention_head_dim=24,
        attention_bias=True,
        activation_fn="gelu-approximate",
        norm_type="ada_norm_zero",
        norm_elementwise_affine=False,
        num_embeds_ada_norm=NULL_CLASS,
        dropout=0.0,
    )


def train_classifier(x, y, hx, hy, num_classes: int, seed: int) -> tuple[TinyClassifier, float]:
    torch.manual_seed(seed)
    clf = TinyClassifier(in_channels=x.shape[1], image_size=x.shape[-1], num_classes=num_classes)
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(1500):
        idx = torch.randint(0, len(xt), (128,))
        noisy = xt[idx] + 0.1 * torch.randn_like(xt[idx])  # robustness to sampler noise
        loss = F.cross_entropy(clf(noisy.clamp(-1, 1)), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.eval()
    acc = float((clf.predict(torch.from_numpy(hx)) == hy).mean())
    return clf, acc


def train_dit(
    x,
    y,
    name: str,
    steps: int,
    seed: int,
    batch: int,
    lr: float,
    init_from: Path | None = None,
    decay: bool = False,
    min_snr_gamma: float | None = None,
    num_layers: int = DEFAULT_LAYERS,
):
    """EMA weights after `steps` AdamW steps; `decay` anneals the lr to 0 on a cosine after warm-up,
    `min_snr_gamma` weights each timestep's loss by min(SNR, gamma) / SNR (Min-SNR, Hang et al.
    2023), which moves the gradient towards the noisy steps where the shape is decided."""
    torch.manual_seed(seed)
    model = DiTTransformer2DModel(**dit_config(name, num_layers))
    if init_from is not None:  # continue an earlier run (its EMA weights) for `steps` more steps
        model = grow(DiTTransformer2DModel.from_pretrained(init_from / "transformer"), model)
    model.train()
    for block in model.transformer_blocks:  # drop labels ourselves: one decision for all blocks
        block.norm1.emb.class_embedder.dropout_prob = 0.0
    noise_sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    ema = EMAModel(model.parameters(), decay=0.999)
    alphas = noise_sched.alphas_cumprod
    snr_weight = (alphas / (1 - alphas)).clamp(max=min_snr_gamma) / (alphas / (1 - alphas)) if min_snr_gamma else None
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    for step in range(steps):
        idx = torch.randint(0, len(xt), (batch,), generator=gen)
        clean, labels = xt[idx], yt[idx].clone()
        labels[torch.rand(batch, generator=gen) < 0.1] = NULL_CLASS
        noise = torch.randn(clean.shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        noisy = noise_sched.add_noise(clean, noise, t)
        scale = min(1.0, (step + 1) / 200)
        if decay and step >= 200:
            scale = 0.5 * (1 + math.cos(math.pi * (step - 200) / max(1, steps - 200)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        per_image = (model(noisy, timestep=t, class_labels=labels).sample - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (per_image * snr_weight[t]).mean() if snr_weight is not None else per_image.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.step(model.parameters())
        if step % 250 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.time() - start:6.0f}s", flush=True)
    ema.copy_to(model.parameters())
    for block in model.transformer_blocks:
        block.norm1.emb.class_embedder.dropout_prob = 0.1
    return model.eval(), noise_sched, time.time() - start


@torch.no_grad()
def grow(trained: DiTTransformer2DModel, target: DiTTransformer2DModel) -> DiTTransformer2DModel:
    """`target` with `trained`'s weights and its extra blocks appended as identities: adaLN-Zero
    with a zeroed modulation gates attention and MLP to 0, so the grown model samples exactly
    like `trained` before its first step (depth added without starting over)."""
    have, want = len(trained.transformer_blocks), len(target.transformer_blocks)
    if want < have:
        raise ValueError(f"--num-layers {want} is below the {have} layers of --init-from; it can only grow")
    missing, unexpected = target.load_state_dict(trained.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("transformer_blocks.") for k in missing), (missing, unexpected)
    for block in target.transformer_blocks[have:]:
        block.norm1.linear.weight.zero_()
        block.norm1.linear.bias.zero_()
    return target


@torch.no_grad()
def denoising_loss_per_bucket(model, sched, hx, hy, seed: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    x, y = torch.from_numpy(hx), torch.from_numpy(hy)
    for lo, hi in BUCKETS:
        t = torch.randint(lo, hi, (len(x),), generator=gen)
        noise = torch.randn(x.shape, generator=gen)
        pred = model(sched.add_noise(x, noise, t), timestep=t, class_labels=y).sample
        out[f"{lo}-{hi}"] = float(F.mse_loss(pred, noise))
    return out


def sample(pipe, num_classes: int, guidance: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(num_classes), SAMPLES_PER_CLASS)
    gen = torch.Generator().manual_seed(seed)
    images = pipe(
        class_labels=labels.tolist(), guidance_scale=guidance, generator=gen, num_inference_steps=50, output_type="np"
    ).images
    return images, labels


def grid_png(images: np.ndarray, labels: np.ndarray, num_classes: int, path: Path, per_class: int = 8):
    rows = [np.concatenate(list(images[labels == c][:per_class]), axis=1) for c in range(num_classes)]
    grid = (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)
    img = Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid)
    img.resize((img.width * 4, img.height * 4), Image.NEAREST).save(path)


def shapes_factor_report(images: np.ndarray, seed: int) -> dict:
    """Mean/std of factors measured from samples against the same measure on generator images."""
    real = make_shapes(len(images), seed=seed)
    ref = measure_shape_factors(((real.images + 1) / 2).transpose(0, 2, 3, 1))
    got = measure_shape_factors(images)
    report = {}
    for key in ("size", "background"):
        a, b = getattr(got, key), getattr(ref, key)
        report[key] = {
            "samples_mean": float(a.mean()),
            "samples_std": float(a.std()),
            "data_mean": float(b.mean()),
            "data_std": float(b.std()),
        }
    for axis, label in enumerate(("x", "y")):
        a, b = got.center[:, axis], ref.center[:, axis]
        report[f"center_{label}"] = {
            "samples_mean": float(a.mean()),
            "samples_std": float(a.std()),
            "data_mean": float(b.mean()),
            "data_std": float(b.std()),
        }
    hist = lambda h: np.histogram(h, bins=6, range=(0, 1))[0] / len(h)  # noqa: E731
    report["hue_hist_6_bins"] = {"samples": hist(got.hue).round(3).tolist(), "data": hist(ref.hue).round(3).tolist()}
    return report


def write_model_card(folder: Path, metrics: dict, config: dict, label_names: list[str]) -> None:
    """README.md of a bundled backbone: config, command, data, measured metrics, sample grid."""
    name = metrics["name"]
    acc = "\n".join(f"| {g} | {a:.3f} |" for g, a in metrics["sample_accuracy_by_guidance"].items())
    fresh = metrics.get("sample_accuracy_fresh_seeds", {})
    chosen = metrics["sample_accuracy_by_guidance"][str(metrics["guidance_scale"])]
    fresh_line = (
        f"\nAt the default guidance on fresh sample sets (seeds {', '.join(fresh)}): "
        f"{', '.join(f'{a:.3f}' for a in fresh.values())}; mean over all five sets "
        f"{(sum(fresh.values()) + chosen) / (len(fresh) + 1):.3f}.\n"
        if fresh
        else ""
    )
    loss = "\n".join(f"| {b} | {v:.4f} |" for b, v in metrics["heldout_denoising_loss_by_t"].items())
    data = (
        "sklearn's `load_digits`: 1,797 real 8x8 handwritten digits (180 held out), scaled to [-1, 1]."
        if name == "digits"
        else "`sae_lens_dit.toy.image_sets.make_shapes(20000, seed=0)` (held out: 1,000 with seed 1): 16x16 RGB, "
        f"shapes {', '.join(label_names)}; ranges in `ShapesSpec` ({json.dumps(metrics.get('shapes_spec'))})."
    )
    factors = ""
    if "factors_at_default_guidance" in metrics:
        factors = (
            "\n## Factors of samples vs the generator (measured from pixels, default guidance)\n\n```json\n"
            + json.dumps(metrics["factors_at_default_guidance"], indent=1)
            + "\n```\n"
        )
    history = metrics["history"]
    depths = list(accumulate((h.get("num_layers") for h in history), lambda a, b: b or a, initial=DEFAULT_LAYERS))[1:]
    commands = "\n".join(
        f"  {i + 1}. `python scripts/train_tiny_dit.py --name {name} --steps {h['steps']} --lr {h['lr']} "
        f"--batch {h['batch']} --threads {metrics['threads']}"
        + (" --lr-decay" if h.get("lr_decay") else "")
        + (f" --min-snr-gamma {h['min_snr_gamma']}" if h.get("min_snr_gamma") else "")
        + (f" --num-layers {depth}" if depth != before else "")
        + (f" --init-from pretrained/tiny-dit-{name}`" if i else "`")
        + f" ({h['train_seconds']} s)"
        for i, (h, before, depth) in enumerate(zip(history, [DEFAULT_LAYERS, *depths[:-1]], depths, strict=True))
    )
    card = f"""# tiny-dit-{name}

A class-conditional pixel-space `DiTTransformer2DModel` (adaLN-Zero, learned null class
{NULL_CLASS} for classifier-free guidance) bundled with sae-lens-dit as an offline backbone.
Load it with `sae_lens_dit.load_tiny_dit("{name}")` (a `DiTPipeline` with an identity VAE) or
`DiTTransformer2DModel.from_pretrained(<this folder>/transformer)`.

- Config: `{json.dumps(config)}` ({metrics["parameters"]:,} parameters, a third of them
  the 1,001-row label tables that DiTPipeline's hard-coded null class 1000 requires).
- Data: {data}
- Training ({metrics["steps"]} AdamW steps in all, 10% label dropout, EMA 0.999, squaredcos DDPM schedule,
  epsilon prediction; {metrics["train_seconds"]} s on {metrics["threads"]} CPU thread(s)), reproduced by:
{commands}
- Sampler: DDIM, 50 steps, `clip_sample=True`; default guidance scale **{metrics["guidance_scale"]}**
  (the strongest scale on the grid below within {GUIDANCE_TOLERANCE:.0%} of the best accuracy).
- Classifier (`classifier/`, `load_tiny_classifier("{name}")`): held-out accuracy
  {metrics["classifier_heldout_accuracy"]:.3f}.

## Samples classified as the asked class (20 per class, fixed seeds, DDIM 50 steps)

| guidance | accuracy |
|---|---|
{acc}
{fresh_line}
## Held-out denoising loss (epsilon MSE) per timestep bucket

| t | loss |
|---|---|
{loss}
{factors}
## Offline cold start

`python benchmarks/bench_load_sample.py` times a fresh process with `HF_HUB_OFFLINE=1` that imports
sae_lens_dit, loads this backbone and samples 16 images (DDIM 50 steps), against a bare `import torch`;
its table is `benchmarks/results/load_sample.md`.

## Samples at the default guidance (one row per class)

![samples](samples.png)
"""
    (folder / "README.md").write_text(card)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", choices=("digits", "shapes"), required=True)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--lr-decay", action="store_true", help="Cosine-anneal the lr to 0 after the warm-up")
    p.add_argument("--min-snr-gamma", type=float, default=None, help="Min-SNR loss weighting (e.g. 5)")
    p.add_argument(
        "--num-layers",
        type=int,
        default=None,
        help=f"DiT depth (default: --init-from's, else {DEFAULT_LAYERS}); above --init-from's, new blocks "
        "start as identities",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output-dir", type=Path, default=None)
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="Continue from a backbone folder written by this script (with --steps 0: re-measure only)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.num_layers is None:
        config = json.loads((args.init_from / "transformer" / "config.json").read_text()) if args.init_from else {}
        args.num_layers = config.get("num_layers", DEFAULT_LAYERS)
    out = args.output_dir or ROOT / "pretrained" / f"tiny-dit-{args.name}"
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    x, y, hx, hy, label_names = dataset(args.name, args.seed)
    clf, clf_acc = train_classifier(x, y, hx, hy, len(label_names), args.seed)
    print(f"classifier held-out accuracy {clf_acc:.3f}", flush=True)
    model, noise_sched, train_s = train_dit(
        x,
        y,
        args.name,
        args.steps,
        args.seed,
        args.batch,
        args.lr,
        args.init_from,
        args.lr_decay,
        args.min_snr_gamma,
        args.num_layers,
    )
    history = json.loads((args.init_from / "metrics.json").read_text())["history"] if args.init_from else []
    if args.steps:
        history.append(
            {
                "steps": args.steps,
                "lr": args.lr,
                "batch": args.batch,
                "lr_decay": args.lr_decay,
                "min_snr_gamma": args.min_snr_gamma,
                "num_layers": args.num_layers,
                "train_seconds": round(train_s),
            }
        )
    model.save_pretrained(tmp / "transformer")
    clf.save_pretrained(tmp / "classifier")
    sampler = DDIMScheduler.from_config(noise_sched.config, clip_sample=True)
    sampler.save_pretrained(tmp / "scheduler")

    pipe = TinyDiTPipeline(
        transformer=model, vae=IdentityVAE(), scheduler=sampler, id2label=dict(enumerate(label_names))
    )
    pipe.set_progress_bar_config(disable=True)
    accuracy, saved = {}, {}
    for g in GUIDANCE_GRID:
        images, labels = sample(pipe, len(label_names), g, seed=1234)
        accuracy[g] = float((clf.predict(images) == labels).mean())
        saved[g] = images
        print(f"guidance {g}: sample accuracy {accuracy[g]:.3f}", flush=True)
    top = max(accuracy.values())
    best = max(g for g in GUIDANCE_GRID if accuracy[g] >= top - GUIDANCE_TOLERANCE)
    grid_png(saved[best], labels, len(label_names), tmp / "samples.png")
    fresh = {
        str(seed): float((clf.predict(images) == labels).mean())
        for seed in CHECK_SEEDS
        for images, labels in [sample(pipe, len(label_names), best, seed)]
    }
    print(f"guidance {best} on fresh seeds: {fresh}", flush=True)
    metrics = {
        "name": args.name,
        "seed": args.seed,
        "threads": args.threads,
        "history": history,
        "steps": sum(h["steps"] for h in history),
        "train_seconds": sum(h["train_seconds"] for h in history),
        "parameters": sum(p.numel() for p in model.parameters()),
        "classifier_heldout_accuracy": clf_acc,
        "sample_accuracy_by_guidance": {str(g): a for g, a in accuracy.items()},
        "guidance_scale": best,
        "sample_accuracy_fresh_seeds": fresh,
        "heldout_denoising_loss_by_t": denoising_loss_per_bucket(model, noise_sched, hx, hy, args.seed),
    }
    if args.name == "shapes":
        metrics["factors_at_default_guidance"] = shapes_factor_report(saved[best], seed=99)
        metrics["shapes_spec"] = ShapesSpec().__dict__
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_model_card(tmp, metrics, dit_config(args.name, args.num_layers), label_names)
    sampling = {"guidance_scale": best, "num_inference_steps": 50, "id2label": dict(enumerate(label_names))}
    (tmp / "sampling.json").write_text(json.dumps(sampling, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
