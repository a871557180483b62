"""Cost of TIDE against SAELens TopK at DiT-XL width: one training step, and encode + decode.

The training step is SAELens's own `SAETrainer.step` (forward, backward, gradient clipping, Adam,
schedulers, dead-latent bookkeeping; no latent is dead yet, so the AuxK term costs nothing in
either) fed through `feed_timesteps`; encode + decode runs the
inference classes (`TideSAE`, `TopKSAE`) under `torch.no_grad()`. TIDE and TopK are timed
alternately in the same run; medians over `--repeats` runs after `--warmup` runs. Batches hold
`--distinct` distinct timesteps (1: one denoising step, as when HookedDiT splices the SAE in;
50: a shuffled harvest of 50-step sampling). On CPU each setting runs at each `--threads` count.

OpenMP's wait policy is set to PASSIVE unless the environment sets `OMP_WAIT_POLICY`: on cores
shared with other jobs, an OpenMP worker that spin-waits after each parallel op takes the core the
main thread needs, so every small op can cost a scheduler slice, and TIDE's ~25 small timestep
ops per pass then show up as 10-30% at two threads (measured here with ACTIVE under load 4-5 on
2 cores), though they cost under 3% of the arithmetic. The policy used is in the results.
Writes `benchmarks/results/tide_step.md` (or `tide_step_<device>.md` off CPU).

    python benchmarks/bench_tide_step.py [--device cuda] [--batch 512]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP (see above)

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from sae_lens.config import SAETrainerConfig  # noqa: E402
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig  # noqa: E402
from sae_lens.training.sae_trainer import SAETrainer  # noqa: E402

from sae_lens_dit import TideSAE, TideSAEConfig, TideTrainingSAE, TideTrainingSAEConfig  # noqa: E402
from sae_lens_dit.saes import feed_timesteps  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TARGETS = {"training step": 1.15, "encode+decode": 1.10}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timestep_batch(batch: int, distinct: int, device: torch.device) -> torch.Tensor:
    values = torch.linspace(0.0, 999.0, distinct, device=device)
    return values[torch.arange(batch, device=device) % distinct]


def _training_step(sae: Any, x: torch.Tensor, t: torch.Tensor) -> Callable[[], None]:
    cfg = SAETrainerConfig(
        total_training_samples=10**9,
        train_batch_size_samples=x.shape[0],
        lr_end=3e-4,
        device=str(x.device),
    )

    def pairs():
        while True:
            yield x, t

    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=feed_timesteps(pairs(), sae))

    def step() -> None:
        trainer.step(next(trainer.data_provider))

    return step


def _encode_decode(sae: Any, x: torch.Tensor, t: torch.Tensor) -> Callable[[], None]:
    kwargs = {"timestep": t} if isinstance(sae, TideSAE) else {}

    @torch.no_grad()
    def run() -> None:
        sae.decode(sae.encode(x, **kwargs), **kwargs)

    return run


def _median_seconds(
    runs: dict[str, Callable[[], None]], repeats: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Median wall time of each callable, interleaving them so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(warmup + repeats):
        for name, run in runs.items():
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=512, help="rows per batch")
    parser.add_argument("--d-in", type=int, default=1152, help="DiT-XL width")
    parser.add_argument("--expansion", type=int, default=16, help="d_sae = expansion * d_in")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--distinct", type=int, nargs="+", default=[1, 50], help="distinct timesteps per batch")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, torch.get_num_threads()], help="CPU thread counts to time"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = {"d_in": args.d_in, "d_sae": args.expansion * args.d_in, "k": args.k, "device": str(device)}
    inference = {"rescale_acts_by_decoder_norm": True, "apply_b_dec_to_input": True, "normalize_activations": "none"}
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.d_in, device=device)

    rows = []
    settings = [
        (threads, distinct) for threads in (args.threads if device.type == "cpu" else [0]) for distinct in args.distinct
    ]
    for threads, distinct in settings:
        if threads:
            torch.set_num_threads(threads)
        t = _timestep_batch(args.batch, distinct, device)
        measured = {
            "training step": _median_seconds(
                {
                    "tide": _training_step(TideTrainingSAE(TideTrainingSAEConfig(**shape)), x, t),
                    "topk": _training_step(TopKTrainingSAE(TopKTrainingSAEConfig(**shape)), x, t),
                },
                args.repeats,
                args.warmup,
                device,
            ),
            "encode+decode": _median_seconds(
                {
                    "tide": _encode_decode(TideSAE(TideSAEConfig(**shape, **inference)), x, t),
                    "topk": _encode_decode(TopKSAE(TopKSAEConfig(**shape, rescale_acts_by_decoder_norm=True)), x, t),
                },
                args.repeats,
                args.warmup,
                device,
            ),
        }
        for what, seconds in measured.items():
            ratio = seconds["tide"] / seconds["topk"]
            verdict = "ok" if ratio <= TARGETS[what] else "OVER"
            rows.append(
                f"| {what} | {threads or '-'} | {distinct} | {seconds['topk'] * 1e3:.1f} | "
                f"{seconds['tide'] * 1e3:.1f} | {ratio:.3f} | <= {TARGETS[what]} {verdict} |"
            )
            print(rows[-1], flush=True)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    table = (
        "| measure | CPU threads | distinct timesteps | TopK ms | TIDE ms | TIDE / TopK | target |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("tide_step.md" if device.type == "cpu" else f"tide_step_{device.type}.md")
    out.write_text(
        f"# TIDE vs SAELens TopK: cost per step\n\n`python benchmarks/bench_tide_step.py --device {args.device} "
        f"--batch {args.batch}` on {name}; torch {torch.__version__}. d_in {args.d_in}, d_sae "
        f"{shape['d_sae']}, k {args.k}, batch {args.batch}, TIDE defaults (timestep MLP 256 wide, "
        f"scale + shift + decoder_bias). Medians of {args.repeats} runs after {args.warmup} warm-up "
        f"runs, TIDE and TopK interleaved. OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}. Load "
        f"average (1, 5, 15 min) at the end: "
        f"{', '.join(f'{load:.1f}' for load in os.getloadavg())}.\n\n{table}\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
