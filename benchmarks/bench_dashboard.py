"""Dashboard of a whole bundled release, built then rebuilt with nothing changed, in one run.

The first build samples the backbone once for all the release's SAEs (recording every hook they read),
encodes each SAE's tokens, samples the steering previews and writes the pages; everything expensive is
cached, content-addressed, in the dashboard folder (`analysis/dashboard/cache.py`). The rebuild reads it
back: it calls the pipeline and the transformer zero times (counted with spies on the pipeline class and on
the transformer's forward: resumed previews run the package's own loop, not the pipeline) and rewrites nothing.
Both builds run in this process on a fresh folder, with the `DashboardConfig` defaults unless
`--max-latents` (pages per SAE) or `--no-steering` say otherwise.

Run: OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/bench_dashboard.py [--release tide-dit-tiny/shapes]
[--max-latents N]  (OMP_NUM_THREADS=1 when another job holds one of the two cores)
Prints a table and writes benchmarks/results/dashboard.md (`--append` adds a section to it).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
from sae_lens import SAE

import sae_lens_dit  # noqa: F401  (registers the bundled releases)
from sae_lens_dit.analysis.dashboard import DashboardConfig, build_dashboard
from sae_lens_dit.analysis.dashboard.cache import FOLDER
from sae_lens_dit.hooking.hooked import denoiser
from sae_lens_dit.toy.backbones import load_pipeline

OUT = Path(__file__).parent / "results" / "dashboard.md"


def release_saes(release: str) -> list[SAE]:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return [SAE.from_pretrained(release, sae_id) for sae_id in get_pretrained_saes_directory()[release].saes_map]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="tide-dit-tiny/shapes")
    parser.add_argument("--max-latents", type=int, default=DashboardConfig.max_latents)
    parser.add_argument("--no-steering", action="store_true", help="no steering previews on the pages")
    parser.add_argument("--progress", action="store_true", help="show the per-stage progress bars")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--append", action="store_true", help="add this run's section to --out instead of replacing it")
    args = parser.parse_args()
    saes = release_saes(args.release)
    cfg = DashboardConfig(max_latents=args.max_latents, steering=not args.no_steering)
    model = saes[0].cfg.metadata.model_name
    pipe = load_pipeline(model)
    cls, net = type(pipe), type(denoiser(pipe))
    calls = [0, 0, 0]  # pipeline calls, transformer forward calls, batch rows through the transformer
    real, real_forward = cls.__call__, net.forward

    def spy(self, *a, **kw):
        calls[0] += 1
        return real(self, *a, **kw)

    @functools.wraps(real_forward)  # hooks read the call's arguments through forward's signature
    def forward_spy(self, *a, **kw):
        calls[1] += 1
        calls[2] += len(a[0] if a else kw["hidden_states"])
        return real_forward(self, *a, **kw)

    cls.__call__, net.forward = spy, forward_spy
    folder = Path(tempfile.mkdtemp(prefix="bench-dashboard-")) / "site"
    rows = []
    try:
        for label in ("first build", "rebuild (nothing changed)"):
            calls[:] = [0, 0, 0]
            start, cpu = time.perf_counter(), time.process_time()
            build = build_dashboard(saes, folder, cfg, progress=args.progress)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            rows.append((label, seconds, cpu, *calls, build.written, build.reused))
            print(
                f"{label}: {seconds:.1f} s ({cpu:.1f} s CPU), {calls[0]} pipeline calls, {calls[1]} transformer "
                f"calls ({calls[2]} rows), {build.written} files written",
                flush=True,
            )
        cache_mb = sum(p.stat().st_size for p in (folder / FOLDER).rglob("*") if p.is_file()) / 2**20
        pages = sum(len(list((site / "latents").glob("*.html"))) for site in build.sites.values())
    finally:
        cls.__call__, net.forward = real, real_forward
        shutil.rmtree(folder.parent, ignore_errors=True)
    ratio = rows[0][1] / rows[1][1]
    settings = (
        f"{len(saes)} SAEs of `{args.release}` ({', '.join(sorted({s.cfg.metadata.hook_name for s in saes}))}), "
        f"{cfg.num_images} images x {cfg.num_inference_steps} steps, {args.max_latents} pages per SAE ({pages} in "
        f"all), steering previews {'off' if args.no_steering else 'on'}; cache {cache_mb:.1f} MiB"
    )
    table = [
        "| build | seconds | CPU seconds | pipeline calls | transformer calls (rows) | files written | files reused |",
        "|---|---|---|---|---|---|---|",
        *(f"| {label} | {s:.1f} | {u:.1f} | {c} | {f} ({n}) | {w} | {r} |" for label, s, u, c, f, n, w, r in rows),
        f"| ratio first / rebuild | {ratio:.1f}x | | | | | |",
    ]
    cores = os.cpu_count()
    threads = os.environ.get("OMP_NUM_THREADS")
    command = (
        ("" if threads is None else f"OMP_NUM_THREADS={threads} ")
        + "HF_HUB_OFFLINE=1 python benchmarks/bench_dashboard.py"
        + (f" --max-latents {args.max_latents}" if args.max_latents != DashboardConfig.max_latents else "")
        + (" --no-steering" if args.no_steering else "")
    )
    text = "\n".join(
        [
            f"# Dashboard of a whole release: first build vs rebuild ({args.release})",
            "",
            f"{settings}. One process, fresh folder; {cores} CPU cores ({platform.processor() or platform.machine()}), "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads. Run: `{command}`.",
            "",
            *table,
            "",
            "The first build samples the backbone once for every SAE (all hooks recorded in one run)"
            + (
                ""
                if args.no_steering
                else f", then each SAE's steering previews (one unedited sample per class with its latents at every "
                "step, shared by the SAEs of the backbone, and two edited samples per page, each resumed from those "
                f"latents at its window's first step, in batches of {cfg.batch_size} samples that steer a different "
                "latent in each sample and that each sample joins at its own step)"
            )
            + ". The rebuild reads the content-addressed cache in the dashboard folder and calls the pipeline and "
            "the transformer zero times.",
            "",
        ]
    )
    print("\n".join(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and args.out.is_file():
        text = args.out.read_text() + "\n" + text
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
