"""Harvest and training throughput on the bundled digits DiT, each against its baseline in one run.

1. Harvest: tokens kept per second by `harvest_chunks` (record one hook, 1/16 of the tokens, both
   CFG branches) against the same sampling with no hooks (the same images, seeds and steps).
2. Training: tokens per second of `SAETrainer` steps for TIDE and for SAELens TopK at the same
   width and k, on the same cached activations.

    python benchmarks/bench_harvest_train.py [--repeats 5] [--out benchmarks/results/harvest_train.md]

Medians of --repeats runs, baseline and candidate interleaved; ratios are of medians.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from sae_lens import SAETrainer
from sae_lens.registry import get_sae_training_class

import sae_lens_dit  # noqa: F401  (registers "tide")
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.saes import feed_timesteps
from sae_lens_dit.toy.backbones import load_tiny_dit
from sae_lens_dit.training.harvest import HarvestConfig, ShuffleBuffer, harvest_chunks
from sae_lens_dit.training.runner import preset_config

HOOK = "blocks.2.hook_resid_post"


def time_harvest(repeats: int) -> tuple[list[float], list[float], int]:
    pipe = load_tiny_dit("digits")
    hooked = HookedDiT(pipe.transformer)
    cfg = HarvestConfig(hook_names=(HOOK,), num_images=32, images_per_batch=32, num_inference_steps=50, branch="both")
    plain, recorded, rows = [], [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        pipe(
            class_labels=[i % 10 for i in range(32)],
            num_inference_steps=50,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
        )
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        rows = sum(c.num_rows for c in harvest_chunks(pipe, hooked, cfg, progress=False))
        recorded.append(time.perf_counter() - start)
    return plain, recorded, rows


def time_training(repeats: int, steps: int, batch: int) -> dict[str, list[float]]:
    pipe = load_tiny_dit("digits")
    cfg = HarvestConfig(hook_names=(HOOK,), num_images=64, images_per_batch=32, num_inference_steps=50, branch="both")
    chunks = list(harvest_chunks(pipe, HookedDiT(pipe.transformer), cfg, progress=False))
    pairs = list(ShuffleBuffer(size=16384, seed=0).batches(iter(chunks), HOOK, batch))[:steps]
    base = preset_config("dit-tiny-digits").sae
    out: dict[str, list[float]] = {"tide": [], "topk": []}
    for _ in range(repeats):
        for architecture in out:
            sae_cfg = get_sae_training_class(architecture)[1](d_in=base.d_in, d_sae=base.d_sae, k=base.k)
            sae = get_sae_training_class(architecture)[0](sae_cfg)
            runner_cfg = replace(
                preset_config("dit-tiny-digits", wandb_mode="disabled"),
                batch_size=batch,
                training_tokens=batch * len(pairs),
            )
            trainer = SAETrainer(
                cfg=runner_cfg.trainer_config(), sae=sae, data_provider=feed_timesteps(iter(pairs), sae)
            )
            start = time.perf_counter()
            trainer.fit()
            out[architecture].append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "harvest_train.md")
    args = parser.parse_args()

    plain, recorded, rows = time_harvest(args.repeats)
    training = time_training(args.repeats, args.steps, args.batch)
    tokens = args.steps * args.batch
    p, r = statistics.median(plain), statistics.median(recorded)
    tide, topk = statistics.median(training["tide"]), statistics.median(training["topk"])
    lines = [
        "# Harvest and training throughput (bundled digits DiT)",
        "",
        f"`python benchmarks/bench_harvest_train.py --repeats {args.repeats} --steps {args.steps} "
        f"--batch {args.batch}`; {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Medians of {args.repeats} interleaved runs.",
        "",
        "| measure | baseline | candidate | baseline s | candidate s | candidate / baseline |",
        "|---|---|---|---|---|---|",
        f"| sample 32 images, 50 steps, CFG ({rows} tokens kept) | no hooks | harvest `{HOOK}` | {p:.3f} | {r:.3f} "
        f"| {r / p:.3f} |",
        f"| train {args.steps} steps x {args.batch} tokens | SAELens topk | tide | {topk:.3f} | {tide:.3f} "
        f"| {tide / topk:.3f} |",
        "",
        f"Harvest throughput: {rows / r:,.0f} tokens kept/s (sampling alone takes {p:.2f} s per batch).  ",
        f"Training throughput: tide {tokens / tide:,.0f} tokens/s, topk {tokens / topk:,.0f} tokens/s.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
