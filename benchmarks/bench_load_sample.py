"""Cold start of the bundled backbones: a fresh, offline process that loads one and samples a batch.

Each run is a new Python process with HF_HUB_OFFLINE=1 that imports sae_lens_dit, calls
`load_tiny_dit(name)` and samples a batch at the default guidance (DDIM, 50 steps); it reports the
seconds of each phase. The baseline, measured in the same run, is a fresh process that only imports
torch: the floor any torch program pays. Medians of several runs.

    python benchmarks/bench_load_sample.py [--repeats 5] [--batch 16] [--threads 1]

Prints a table and writes it to benchmarks/results/load_sample.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "load_sample.md"
CHILD = """
import json, sys, time
start = time.perf_counter()
import torch
torch.set_num_threads({threads})
after_torch = time.perf_counter()
if {backbone!r}:
    from sae_lens_dit import load_tiny_dit
    after_import = time.perf_counter()
    pipe = load_tiny_dit({backbone!r})
    pipe.set_progress_bar_config(disable=True)
    after_load = time.perf_counter()
    labels = [i % len(pipe.labels) for i in range({batch})]
    images = pipe(class_labels=labels, num_inference_steps=50, generator=torch.Generator().manual_seed(0),
                  output_type="np").images
    assert images.shape[0] == {batch}
    done = time.perf_counter()
else:
    after_import = after_load = done = after_torch
print(json.dumps({{"import torch": after_torch - start, "import sae_lens_dit": after_import - after_torch,
                  "load": after_load - after_import, "sample": done - after_load}}))
"""


def run_child(backbone: str, batch: int, threads: int) -> dict[str, float]:
    """Phase seconds of one fresh process, plus its wall clock from spawn to exit."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(backbone=backbone, batch=batch, threads=threads)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    phases = json.loads(out.strip().splitlines()[-1])
    return {**phases, "process wall clock": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    variants = {"baseline (import torch only)": "", "digits": "digits", "shapes": "shapes"}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits every variant alike
        for name, backbone in variants.items():
            runs[name].append(run_child(backbone, args.batch, args.threads))
    phases = list(runs["digits"][0])
    base = statistics.median(r["process wall clock"] for r in runs["baseline (import torch only)"])
    lines = [
        f"# Cold start: fresh offline process, load a bundled backbone, sample {args.batch} images "
        f"(DDIM 50 steps, default CFG), {args.threads} thread(s); medians of {args.repeats}",
        "",
        "| process | " + " | ".join(f"{p} (s)" for p in phases) + " | x baseline wall clock |",
        "|---|" + "---|" * (len(phases) + 1),
    ]
    for name, results in runs.items():
        medians = [statistics.median(r[p] for r in results) for p in phases]
        lines.append(f"| {name} | " + " | ".join(f"{m:.2f}" for m in medians) + f" | {medians[-1] / base:.2f} |")
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
