"""A replacement model of the digits DiT: every block's MLP replaced by its timestep-aware transcoder, no error term.

Trains one TIDE transcoder per block (`sae-lens-dit train --preset transcoder-tiny-digits --hook blocks.{0..3}.mlp`:
one shared harvest of the four MLP input/output pairs, each transcoder with the preset's recipe; seed 1), then,
with all four spliced in at once (`HookedDiT.saes`, no error term):

- denoising loss recovered on 64 held-out images of the digits held-out split noised into every timestep bucket
  (both CFG branches): (L_ablated - L_replaced) / (L_ablated - L_clean), with all four MLPs zero-ablated or
  mean-ablated (each MLP output replaced by its mean over the rows of the same bucket and branch);
- sample fidelity: 100 samples (classes cycled, 50 DDIM steps) with and without the transcoders from the same
  noise, the bundled digits classifier's agreement between the two, each's rate of the asked class, and the
  Frechet distance in the classifier's embedding against the floor of two clean runs with different noise.

    python benchmarks/bench_replacement.py [--work /tmp/sae-lens-dit-replacement]
    python benchmarks/bench_replacement.py --release tide-dit-tiny/digits-transcoders   # the shipped transcoders

Writes benchmarks/results/replacement.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch
from sae_lens import SAE

from sae_lens_dit.analysis.evals import heldout_pass, sample_images, spliced_denoising, spliced_generation
from sae_lens_dit.analysis.evals.denoising import _losses_with
from sae_lens_dit.cli import main as cli
from sae_lens_dit.conventions import BRANCH_NAMES
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.backbones import load_tiny_classifier, load_tiny_dit
from sae_lens_dit.toy.image_sets import training_split

RESULTS = Path(__file__).parent / "results"
BLOCKS = range(4)


def train(work: Path) -> list[SAE]:
    hooks = [f"blocks.{i}.mlp" for i in BLOCKS]
    args = ["train", "--preset", "transcoder-tiny-digits", "--hook", *hooks, "--seed", "1", "--eval-images", "64"]
    args += ["--wandb-mode", "disabled", "--output-dir", str(work)]
    if not all((work / f"tide_transcoder-{hook}" / "cfg.json").exists() for hook in hooks):
        assert cli(args) == 0
    return [SAE.load_from_disk(str(work / f"tide_transcoder-{hook}")) for hook in hooks]


@torch.no_grad()
def replacement_denoising(hooked: HookedDiT, tcs: list[SAE], hp) -> dict:
    """Losses per row: clean, all MLPs zero-ablated, all mean-ablated, all replaced; recovered vs each ablation."""
    rows, outs = torch.arange(len(hp.timestep)), [f"blocks.{i}.mlp.hook_out" for i in BLOCKS]
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in outs}
    record = [(name, lambda a, hook: captured[hook.name].append(a.float().cpu())) for name in outs]
    clean = _losses_with(hooked, hp, rows, record, 128)
    acts = {name: torch.cat(parts) for name, parts in captured.items()}
    zero = _losses_with(hooked, hp, rows, [(name, lambda a, hook: torch.zeros_like(a)) for name in outs], 128)
    mean = torch.empty_like(clean)
    for _, _, mask in hp.groups():
        means = {name: acts[name][mask].mean(0) for name in outs}
        hooks = [(name, lambda a, hook, m=means[name]: m.to(a).expand_as(a)) for name in outs]
        mean[mask] = _losses_with(hooked, hp, mask.nonzero().squeeze(1), hooks, 128)
    with hooked.saes(tcs, use_error_term=False):
        replaced = _losses_with(hooked, hp, rows, [], 128)
    out = {}
    for b, br, mask in hp.groups():
        c, z, m, r = (float(v[mask].mean()) for v in (clean, zero, mean, replaced))
        out[f"{hp.edges[b]:g}-{hp.edges[b + 1]:g} {BRANCH_NAMES[br]}"] = {
            "loss_clean": c,
            "loss_zero_ablated": z,
            "loss_mean_ablated": m,
            "loss_replaced": r,
            "recovered_vs_zero": (z - r) / (z - c),
            "recovered_vs_mean": (m - r) / (m - c),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/sae-lens-dit-replacement"))
    parser.add_argument("--release", help="Replace the MLPs by a release's transcoders instead of training them")
    args = parser.parse_args()
    if args.release:
        import sae_lens_dit  # noqa: F401  (registers the releases)

        tcs = [SAE.from_pretrained(args.release, f"blocks.{i}.mlp/tide_transcoder") for i in BLOCKS]
    else:
        tcs = train(args.work)
    pipe = load_tiny_dit("digits")
    pipe.set_progress_bar_config(disable=True)
    hooked = HookedDiT(pipe.transformer)
    held = training_split("digits", seed=0)[1].take(64)
    hp = heldout_pass(pipe, hooked, "blocks.0.mlp.hook_in", held, seed=5, hook_name_out="blocks.0.mlp.hook_out")
    denoising = replacement_denoising(hooked, tcs, hp)
    single = {f"blocks.{i}.mlp": spliced_denoising(tc, hooked, hp) for i, tc in enumerate(tcs) if i == 0}
    labels = [int(c) for c in np.resize(np.arange(10), 100)]
    clean = sample_images(pipe, labels, 0, 50)
    reference = sample_images(pipe, labels, 1, 50)
    drift = spliced_generation(tcs, pipe, hooked, labels, clean, reference, load_tiny_classifier("digits"), seed=0)
    result = {
        "transcoders": args.release or "trained",
        "denoising": denoising,
        "block0_alone": single,
        "generation": drift.to_dict(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replacement.json").write_text(json.dumps(result, indent=1))
    g = drift.to_dict()
    source = (
        f"the release `{args.release}`"
        if args.release
        else "trained here (`--preset transcoder-tiny-digits --seed 1 --eval-images 64`)"
    )
    lines = [
        "# Replacement model: every MLP of the digits DiT replaced by its TIDE transcoder (no error term)",
        "",
        f"Transcoders: {source}. Reproduce: `python benchmarks/bench_replacement.py"
        + (f" --release {args.release}`." if args.release else "`."),
        "",
        "| t bucket, branch | loss clean | all MLPs zero-ablated | all mean-ablated | replaced | recovered vs zero "
        "| recovered vs mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, row in denoising.items():
        lines.append(
            f"| {key} | {row['loss_clean']:.4f} | {row['loss_zero_ablated']:.4f} | {row['loss_mean_ablated']:.4f} | "
            f"{row['loss_replaced']:.4f} | {row['recovered_vs_zero']:.3f} | {row['recovered_vs_mean']:.3f} |"
        )
    mean_zero = statistics.mean(row["recovered_vs_zero"] for row in denoising.values())
    mean_mean = statistics.mean(row["recovered_vs_mean"] for row in denoising.values())
    lines += [
        "",
        f"Mean over buckets and branches: recovered {mean_zero:.3f} vs zero-ablation, {mean_mean:.3f} vs "
        "mean-ablation.",
        "",
        f"Samples (100, classes cycled, 50 steps, same noise): classifier agreement {g['classifier_agreement']:.2f}; "
        f"asked class {g['on_class_clean']:.2f} clean, {g['on_class_spliced']:.2f} replaced; pixel MSE "
        f"{g['pixel_mse']:.4f}; Frechet distance {g['frechet_distance']:.3f} (floor, two clean runs: "
        f"{g['frechet_floor']:.3f}).",
        "",
    ]
    (RESULTS / "replacement.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
