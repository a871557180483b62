"""Wall-clock cost of `HookedDiT.record` over a full sampling run of a stock pipeline (image or video).

Recording one hook with tokens_per_image=16 should cost at most 5% over the same run without
hooks (ratio of medians), for images (`--pipeline dit`: DiTPipeline) and for video (`--pipeline wan`:
WanPipeline, two CFG calls per step, 16 tokens per video spread evenly over its frames). Both
variants run in this process, interleaved (baseline, recorded, baseline, ...) so that drifting
machine load hits both alike; each run uses the same seed.
Besides wall clock, the table gives this process's CPU time per run: on a shared machine other
processes stretch wall clock at random, CPU time much less so. A noise-robust bound comes last:
the CPU cost of the hooks per transformer call, measured on a 5-layer, 16-token DiT whose own
forward is tiny, as a fraction of one step of the full run.

    python benchmarks/bench_record_overhead.py [--pipeline dit|wan] [--repeats 9] [--steps 25] [--threads 1]

Prints a table and writes it to benchmarks/results/record_overhead.md (dit) or record_overhead_video.md (wan).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sae_lens_dit import HookedDiT
from sae_lens_dit.toy.random_dit import random_dit, random_dit_pipeline
from sae_lens_dit.toy.random_video import TEXT_LENGTH, random_wan_pipeline

HOOK = "blocks.4.hook_resid_post"
TOKENS_PER_IMAGE = 16
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Workload:
    build: Callable[[], object]
    run: Callable[[object, int], None]  # (pipe, steps): one sampling run
    setup: str
    results: str


def _dit_pipe():
    """A DiT-S/2-like model at 256 image tokens (32x32 latent, patch 2), 8 layers, width 192."""
    transformer = random_dit(
        sample_size=32, num_layers=8, num_attention_heads=6, attention_head_dim=32, norm_elementwise_affine=False
    )
    return random_dit_pipeline(transformer, vae="kl")


def _dit_run(pipe, steps: int) -> None:
    pipe(class_labels=[1, 2], num_inference_steps=steps, generator=torch.manual_seed(0), output_type="np")


def _wan_run(pipe, steps: int) -> None:
    pipe(
        prompt=["a red square", "a blue circle"],
        negative_prompt=["a cat", "a dog"],
        height=128,
        width=128,
        num_frames=17,
        num_inference_steps=steps,
        guidance_scale=5.0,
        max_sequence_length=TEXT_LENGTH,
        generator=torch.manual_seed(0),
        output_type="np",
    )


WORKLOADS = {
    "dit": Workload(
        _dit_pipe,
        _dit_run,
        "DiTPipeline, DiT 8 layers x width 192, 256 image tokens, 2 images with CFG (batch 4), {steps} DDIM steps, "
        "AutoencoderKL() decode",
        "record_overhead.md",
    ),
    "wan": Workload(
        lambda: random_wan_pipeline(layers=8, heads=6, head_dim=32),
        _wan_run,
        "WanPipeline (toy.random_video), Wan transformer 8 layers x width 192, 2 videos of 17 frames at 128x128 "
        "(latents 5 x 16 x 16: 320 video tokens in 5 frames), CFG as two calls per step, {steps} UniPC flow steps, "
        "AutoencoderKLWan decode",
        "record_overhead_video.md",
    ),
}


def sample(pipe, run: Callable[[object, int], None], steps: int) -> tuple[float, float]:
    """(wall-clock seconds, process CPU seconds) of one sampling run."""
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        run(pipe, steps)
    return time.perf_counter() - wall, time.process_time() - cpu


def hook_cost_per_call(calls: int = 400) -> float:
    """CPU seconds the record hooks add per transformer call (tiny model, same hook and k)."""
    model = random_dit(num_layers=5, num_attention_heads=1, attention_head_dim=8)
    hooked = HookedDiT(model)
    x, labels = torch.randn(2, 4, 8, 8).repeat(2, 1, 1, 1), torch.tensor([1, 2, 1000, 1000])

    def loop() -> float:
        start = time.process_time()
        with torch.no_grad():
            for t in range(calls, 0, -1):
                model(x, timestep=torch.full((4,), t), class_labels=labels)
        return time.process_time() - start

    base, recorded = [], []
    for _ in range(5):
        base.append(loop())
        with hooked.record([HOOK], tokens_per_image=TOKENS_PER_IMAGE):
            recorded.append(loop())
    return (statistics.median(recorded) - statistics.median(base)) / calls


def _row(label: str, runs: list[tuple[float, float]]) -> str:
    wall, cpu = [run[0] for run in runs], [run[1] for run in runs]
    return (
        f"| {label} | {statistics.median(wall):.3f} | {min(wall):.3f} | {max(wall):.3f} "
        f"| {statistics.median(cpu):.3f} | {len(runs)} |"
    )


def _ratio(recorded: list[tuple[float, float]], baseline: list[tuple[float, float]], index: int) -> float:
    return statistics.median(run[index] for run in recorded) / statistics.median(run[index] for run in baseline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", choices=sorted(WORKLOADS), default="dit", help="image (dit) or video (wan)")
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per variant")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps per run")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    workload = WORKLOADS[args.pipeline]
    pipe = workload.build()
    hooked = HookedDiT(pipe.transformer)
    sample(pipe, workload.run, args.steps)  # warm-up (allocator, kernels)
    baseline, recorded, kept = [], [], 0
    for _ in range(args.repeats):
        baseline.append(sample(pipe, workload.run, args.steps))
        with hooked.record([HOOK], tokens_per_image=TOKENS_PER_IMAGE) as rec:
            recorded.append(sample(pipe, workload.run, args.steps))
        kept = rec[HOOK].numel()

    table = "\n".join(
        [
            "| variant | wall median s | wall min s | wall max s | CPU median s | runs |",
            "| --- | --- | --- | --- | --- | --- |",
            _row("no hooks", baseline),
            _row(f"record `{HOOK}`, {TOKENS_PER_IMAGE} tokens/image", recorded),
            "",
            f"**ratio of wall-clock medians: {_ratio(recorded, baseline, 0):.3f}** (target <= 1.05); "
            f"ratio of CPU-time medians: {_ratio(recorded, baseline, 1):.3f}",
        ]
    )
    setup = (
        f"{workload.setup.format(steps=args.steps)}; {kept} values kept per recorded run. "
        f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, {platform.processor() or 'cpu'}; "
        f"load average at the end {os.getloadavg()[0]:.2f}."
    )
    per_call = hook_cost_per_call()
    step_cpu = statistics.median(run[1] for run in baseline) / args.steps
    table += (
        f"\n\nHook CPU cost per transformer call (16-token DiT micro-run, 400 calls x 5): "
        f"{per_call * 1e6:.0f} us = {per_call / step_cpu:.2%} of one step of the full run's CPU time."
    )
    print(table)
    print(setup)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / workload.results).write_text(
        f"# record() overhead ({args.pipeline})\n\nCommand: `python benchmarks/bench_record_overhead.py "
        f"--pipeline {args.pipeline} --repeats {args.repeats} --steps {args.steps} --threads {args.threads}`\n\n"
        f"{setup}\n\n{table}\n"
    )


if __name__ == "__main__":
    main()
