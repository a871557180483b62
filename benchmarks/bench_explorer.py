"""Live explorer: request-to-image time of an edit, against the same edit through `interventions.edit`.

Issue 20 asks for an edit round trip <= 3 s on 2 cores at 20 steps on the bundled backbones. The
baseline, measured in the same process and interleaved, is the library call the app wraps
(`sae_lens_dit.analysis.interventions.edit`: the unedited and the edited sample of one seed), so the
ratio is what the app adds (request parsing, the token-grid box, PNG encoding, the cache).

Protocol: bundled shapes backbone, `blocks.1.hook_resid_post/tide` of the bundled release, 20 DDIM steps,
one latent (the most frequently firing), strength 4 x typical, box = top-left quarter, window 0-400.
Seeds 9100+ (not used for tuning anything); every request uses a new seed so no image is cached.
Requests go through Starlette's TestClient (in process, no network). Prints a table and writes
`benchmarks/results/explorer.md`.

    python benchmarks/bench_explorer.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from sae_lens import SAE

import sae_lens_dit  # noqa: F401  (registers the bundled releases)
from sae_lens_dit import HookedDiT, load_tiny_dit
from sae_lens_dit.analysis.explorer import create_app
from sae_lens_dit.analysis.interventions import LatentEdit, SteeringSpec, edit

OUT = Path(__file__).parent / "results" / "explorer.md"
SAE_ID = "blocks.1.hook_resid_post/tide"
STEPS, BOX, WINDOW, STRENGTH, CLASS = 20, (0.0, 0.0, 0.5, 0.5), (0.0, 400.0), 4.0, 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from starlette.testclient import TestClient

    # One intra-op thread: the app runs torch on TestClient's worker thread and the baseline on the main
    # thread; with a pool per calling thread, idle OpenMP workers of one spin against the other (20 s vs 0.3 s).
    torch.set_num_threads(1)
    pipe = load_tiny_dit("shapes")
    pipe.set_progress_bar_config(disable=True)
    hooked = HookedDiT(pipe.transformer)
    sae = SAE.from_pretrained("tide-dit-tiny/shapes", SAE_ID)
    with tempfile.TemporaryDirectory() as tmp:
        client = TestClient(create_app(pipe, hooked, [sae], Path(tmp) / "cache", num_inference_steps=STEPS))
        latents = client.get("/api/latents?sae=0").json()["latents"]
        top = max(latents, key=lambda row: row["firing"])
        latent, typical = top["id"], float(top.get("typical") or 1.0)
        spec = SteeringSpec(
            (LatentEdit(SAE_ID.split("/")[0], (latent,), "clamp", STRENGTH * typical, box=BOX, timesteps=WINDOW),)
        )
        app_s, lib_s = [], []
        for i in range(args.repeats):  # interleaved: app, then library, on fresh seeds
            seed = 9100 + 2 * i
            box = ",".join(map(str, BOX))
            query = f"class={CLASS}&seed={seed}&latents={latent}&strength={STRENGTH}&box={box}&op=clamp"
            start = time.perf_counter()
            body = client.get(f"/api/edit?{query}&window={WINDOW[0]:g},{WINDOW[1]:g}").json()
            client.get(body["after"])
            app_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            edit(pipe, hooked, [sae], spec, seed + 1, class_labels=[CLASS], num_inference_steps=STEPS)
            lib_s.append(time.perf_counter() - start)
    app_med, lib_med = statistics.median(app_s), statistics.median(lib_s)
    rows = [
        "| path | median s | runs (s) |",
        "| --- | --- | --- |",
        f"| app: `/api/edit` + image, new seed | {app_med:.2f} | {', '.join(f'{s:.2f}' for s in app_s)} |",
        f"| library: `interventions.edit` | {lib_med:.2f} | {', '.join(f'{s:.2f}' for s in lib_s)} |",
        f"| ratio app / library | {app_med / lib_med:.2f}x | |",
    ]
    text = "\n".join(
        [
            "# Live explorer: edit round trip",
            "",
            f"`python benchmarks/bench_explorer.py --repeats {args.repeats}`; {platform.machine()}, "
            f"{os.cpu_count()} CPUs (1 torch thread), torch {torch.__version__}. Shapes backbone, {SAE_ID}, "
            f"{STEPS} DDIM steps, "
            f"one latent clamped at {STRENGTH:g} x typical in the top-left quarter at t {WINDOW[0]:g}-{WINDOW[1]:g}; "
            "every request on a new seed (nothing cached). Target (issue 20): <= 3 s.",
            "",
            *rows,
            "",
        ]
    )
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
