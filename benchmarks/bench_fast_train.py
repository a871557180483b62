"""Fast SAE training: TIDE's sparse training step against SAELens's TopK training step.

Each step is a full `SAETrainer.step` (forward, backward, gradient clipping, Adam, schedulers,
firing statistics) of a freshly built SAE, fed through `feed_timesteps`; batches hold `--distinct`
distinct timesteps. TIDE runs with its defaults (`sparse_decode=None` resolves to the sparse path
at these k / d_sae); the reference is SAELens's own `TopKTrainingSAE` (dense). The two are timed
alternately (TIDE, TopK, TIDE, TopK, ...) in one process, so load from other processes hits both
alike; medians over `--repeats` steps after `--warmup` steps. Torch uses `--threads` threads while
timing (CPU). Peak memory: on CUDA `torch.cuda.max_memory_allocated` over building the SAE and its
trainer plus two steps; on CPU the growth of the peak resident set of a fresh process that does the
same (one per SAE, run after the timing).

A second table sets `AUTO_MAX_DENSITY` (the `sparse_decode=None` threshold): TIDE with the sparse
path against TIDE with the dense path at d_sae = 4 d_in over k / d_sae from 1/64 to 1/4.

    python benchmarks/bench_fast_train.py [--device cuda] [--autocast] [--quick]

`--quick` times only the headline setting with 3 steps (for checks; the committed table is the
full grid). Writes `benchmarks/results/fast_train.md` (`fast_train_<device>.md` off CPU).
`--compile` instead times TIDE's step with `torch.compile(sae.training_forward_pass)` against the
eager step at the headline setting (compilation in the warm-up steps) and writes
`fast_train_compile[_<device>].md`: the step uses torch.compile only if this measures faster.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP (see bench_tide_step.py)

import argparse  # noqa: E402
import gc  # noqa: E402
import multiprocessing  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from bench_tide_step import _median_seconds, _timestep_batch  # noqa: E402
from sae_lens.config import SAETrainerConfig  # noqa: E402
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig  # noqa: E402
from sae_lens.training.sae_trainer import SAETrainer  # noqa: E402

from sae_lens_dit import TideTrainingSAE, TideTrainingSAEConfig  # noqa: E402
from sae_lens_dit.saes import feed_timesteps  # noqa: E402
from sae_lens_dit.saes.sparse_topk import AUTO_MAX_DENSITY, uses_sparse_decode  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TARGET = 0.6  # TIDE step / TopK step at the headline setting
HEADLINE = (16, 64)  # (d_sae / d_in, k)
GRID = [HEADLINE, (4, 64), (64, 64), (16, 16), (16, 128)]
CROSSOVER_DENSITIES = [1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4]


def _build(arch: str, d_in: int, d_sae: int, k: int, device: str) -> Any:
    shape = {"d_in": d_in, "d_sae": d_sae, "k": k, "device": device}
    if arch == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(**shape))
    sparse = {"tide": None, "tide-compiled": None, "tide-sparse": True, "tide-dense": False}[arch]
    sae = TideTrainingSAE(TideTrainingSAEConfig(**shape, sparse_decode=sparse))
    if arch == "tide-compiled":
        sae.training_forward_pass = torch.compile(sae.training_forward_pass)
    return sae


def _stepper(sae: Any, x: torch.Tensor, t: torch.Tensor, autocast: bool) -> Callable[[], None]:
    """One `SAETrainer.step` on (x, t) per call."""
    cfg = SAETrainerConfig(
        total_training_samples=10**9,
        train_batch_size_samples=x.shape[0],
        lr_end=3e-4,
        device=str(x.device),
        autocast=autocast,
    )

    def pairs():
        while True:
            yield x, t

    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=feed_timesteps(pairs(), sae))
    return lambda: trainer.step(next(trainer.data_provider))


def _peak_memory_child(arch: str, d_in: int, d_sae: int, k: int, batch: int, distinct: int, threads: int) -> float:
    """In a fresh process: MiB the peak resident set grows by over building the SAE + two steps."""
    torch.set_num_threads(threads)
    x = torch.randn(batch, d_in)
    t = _timestep_batch(batch, distinct, torch.device("cpu"))
    before = _peak_rss_kib()
    step = _stepper(_build(arch, d_in, d_sae, k, "cpu"), x, t, autocast=False)
    step()
    step()
    return (_peak_rss_kib() - before) / 1024


def _peak_rss_kib() -> int:
    """This process's peak resident set (Linux VmHWM; unlike ru_maxrss, not inherited across exec)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


def _peak_memory(arch: str, d_in: int, d_sae: int, k: int, args: argparse.Namespace) -> float:
    """Peak memory (MiB) of building `arch` and its trainer and running two steps."""
    if args.device.startswith("cuda"):
        device = torch.device(args.device)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        x = torch.randn(args.batch, d_in, device=device)
        step = _stepper(
            _build(arch, d_in, d_sae, k, args.device),
            x,
            _timestep_batch(args.batch, args.distinct, device),
            args.autocast,
        )
        step()
        step()
        torch.cuda.synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        del step
        return peak
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_peak_memory_child, (arch, d_in, d_sae, k, args.batch, args.distinct, args.threads))


def _time_pair(
    archs: tuple[str, str], d_in: int, d_sae: int, k: int, args: argparse.Namespace, repeats: int
) -> dict[str, float]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, d_in, device=device)
    t = _timestep_batch(args.batch, args.distinct, device)
    runs = {arch: _stepper(_build(arch, d_in, d_sae, k, args.device), x, t, args.autocast) for arch in archs}
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    seconds = _median_seconds(runs, repeats, args.warmup, device)
    torch.set_num_threads(1)
    del runs
    gc.collect()
    return seconds


def _compile_report(args: argparse.Namespace) -> None:
    expansion, k = HEADLINE
    torch.set_num_threads(1)
    args.warmup = max(args.warmup, 2)
    seconds = _time_pair(("tide-compiled", "tide"), args.d_in, expansion * args.d_in, k, args, args.repeats)
    ratio = seconds["tide-compiled"] / seconds["tide"]
    on_cpu = args.device == "cpu"
    name = torch.cuda.get_device_name(torch.device(args.device)) if not on_cpu else f"CPU ({os.cpu_count()} cores)"
    text = (
        f"# torch.compile of TIDE's training step\n\n`python benchmarks/bench_fast_train.py --compile"
        f"{'' if on_cpu else f' --device {args.device}'}` on {name}; torch {torch.__version__}. "
        f"`torch.compile(sae.training_forward_pass)` vs eager, full `SAETrainer.step`, d_in {args.d_in}, "
        f"d_sae {expansion * args.d_in}, k {k}, batch {args.batch}; medians of {args.repeats} steps after "
        f"{args.warmup} warm-up steps (compilation), interleaved. 1-min load average at the end: "
        f"{os.getloadavg()[0]:.1f}.\n\n| eager ms | compiled ms | compiled / eager |\n|---|---|---|\n"
        f"| {seconds['tide'] * 1e3:.0f} | {seconds['tide-compiled'] * 1e3:.0f} | {ratio:.3f} |\n"
    )
    print(text)
    out = RESULTS / ("fast_train_compile.md" if on_cpu else f"fast_train_compile_{torch.device(args.device).type}.md")
    out.write_text(text)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1024, help="rows per batch")
    parser.add_argument("--d-in", type=int, default=1152, help="DiT-XL width")
    parser.add_argument("--distinct", type=int, default=50, help="distinct timesteps per batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads while timing")
    parser.add_argument("--autocast", action="store_true", help="bf16 autocast in SAETrainer (both SAEs)")
    parser.add_argument("--quick", action="store_true", help="headline setting only, 3 steps (not for the table)")
    parser.add_argument("--compile", action="store_true", help="torch.compile'd vs eager TIDE step, headline only")
    args = parser.parse_args()
    if args.compile:
        _compile_report(args)
        return
    torch.set_num_threads(1)
    d_in, on_cpu = args.d_in, args.device == "cpu"
    grid = [HEADLINE] if args.quick else GRID
    repeats = 3 if args.quick else args.repeats
    loads = [os.getloadavg()[0]]

    rows = []
    for expansion, k in grid:
        d_sae = expansion * d_in
        seconds = _time_pair(("tide", "topk"), d_in, d_sae, k, args, repeats)
        loads.append(os.getloadavg()[0])
        memory = {arch: _peak_memory(arch, d_in, d_sae, k, args) for arch in ("tide", "topk")}
        ratio = seconds["tide"] / seconds["topk"]
        verdict = (f"<= {TARGET} " + ("ok" if ratio <= TARGET else "OVER")) if (expansion, k) == HEADLINE else ""
        rows.append(
            f"| {d_sae} ({expansion}x) | {k} | {seconds['topk'] * 1e3:.0f} | {seconds['tide'] * 1e3:.0f} | "
            f"{args.batch / seconds['topk']:.0f} | {args.batch / seconds['tide']:.0f} | {ratio:.3f} | "
            f"{memory['topk']:.0f} | {memory['tide']:.0f} | {verdict} |"
        )
        print(rows[-1], flush=True)

    crossover = []
    if not args.quick:
        d_sae = 4 * d_in
        for density in CROSSOVER_DENSITIES:
            k = round(density * d_sae)
            seconds = _time_pair(("tide-sparse", "tide-dense"), d_in, d_sae, k, args, repeats)
            loads.append(os.getloadavg()[0])
            auto = "sparse" if uses_sparse_decode(TideTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k)) else "dense"
            crossover.append(
                f"| 1/{round(1 / density)} | {k} | {seconds['tide-dense'] * 1e3:.0f} | "
                f"{seconds['tide-sparse'] * 1e3:.0f} | {seconds['tide-sparse'] / seconds['tide-dense']:.3f} | {auto} |"
            )
            print(crossover[-1], flush=True)

    name = torch.cuda.get_device_name(torch.device(args.device)) if not on_cpu else f"CPU ({os.cpu_count()} cores)"
    memory_note = (
        "peak `torch.cuda.max_memory_allocated` over building the SAE and trainer and two steps"
        if not on_cpu
        else "growth of the peak resident set of a fresh process over building the SAE and trainer and two steps"
    )
    command = "python benchmarks/bench_fast_train.py" + (f" --device {args.device}" if not on_cpu else "")
    command += " --autocast" if args.autocast else ""
    text = (
        f"# Fast SAE training: TIDE (sparse step) vs SAELens TopK\n\n`{command}` on {name}; torch "
        f"{torch.__version__}{f', {args.threads} threads while timing' if on_cpu else ''}"
        f"{', bf16 autocast' if args.autocast else ''}. A full `SAETrainer.step` (optimizer included), "
        f"d_in {d_in}, batch {args.batch}, {args.distinct} distinct timesteps per batch, TIDE defaults "
        f"(timestep MLP 256 wide, scale + shift + decoder_bias, `sparse_decode` automatic), SAELens "
        f"`TopKTrainingSAE` defaults. Medians of {repeats} steps after {args.warmup} warm-up step(s), "
        f"TIDE and TopK interleaved. Memory: {memory_note}. OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}. "
        f"1-min load average before and after each setting: {', '.join(f'{load:.1f}' for load in loads)} "
        f"(other jobs share these cores; both SAEs see the same load).\n\n"
        "| d_sae | k | TopK ms | TIDE ms | TopK tokens/s | TIDE tokens/s | TIDE / TopK | TopK MiB | TIDE MiB "
        "| target |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    if crossover:
        text += (
            f"\n## Where the sparse path pays: TIDE sparse vs dense step, d_sae {4 * d_in}\n\n"
            f"`sparse_decode=None` picks the sparse path when k / d_sae <= {AUTO_MAX_DENSITY:g} "
            f"(`AUTO_MAX_DENSITY`).\n\n"
            "| k / d_sae | k | dense ms | sparse ms | sparse / dense | automatic choice |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(crossover) + "\n"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("fast_train.md" if on_cpu else f"fast_train_{torch.device(args.device).type}.md")
    if args.quick:
        print(text)
        print("--quick: results not written")
        return
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
