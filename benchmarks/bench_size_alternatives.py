"""size=smaller on the shapes DiT: the bundled recipe (erode the outline at block 1) beside every alternative tried,
on the same samples, with where each one fails (too little change, or the shape erased).

Run: OMP_NUM_THREADS=2 python benchmarks/bench_size_alternatives.py   (about 8 minutes on two cores)
Writes benchmarks/results/size_alternatives.md and .json.

Why: issue 16 asks "smaller by at least 1 px of width in >= 0.80 of samples"; the bundled concept reaches 0.53 on the
evaluation seeds (0.60 on the tuning seeds). This script is the evidence behind "the recipes tried plateau": each
recipe is a steering spec built from the library's pieces (erode_spec, size selections, probe gates) or, as an
activation-level reference outside the SAE, the rim tokens' activation replaced by the mean background activation.
Protocol: latents and probes from the seed-1 samples (as the bundled concepts); every recipe on the tuning seeds
5000-5191 (192 samples, every shape kind 48 times). Reporting the best of many recipes on the seeds they are compared
on over-estimates it, which is the safe side for a claim that none reaches 0.80. Nothing here is evaluated on the
benchmark's seeds 9000-9095.
"""

from __future__ import annotations

import json
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sae_lens import SAE

import sae_lens_dit  # noqa: F401  (registers the bundled releases)
from sae_lens_dit import HookedDiT, load_tiny_dit
from sae_lens_dit.analysis.interventions import LatentEdit, SteeringSpec
from sae_lens_dit.analysis.interventions.concepts import load_concept
from sae_lens_dit.analysis.interventions.editing import sample_seeded, steer_groups
from sae_lens_dit.analysis.interventions.gates import LinearProbe, grow_mask
from sae_lens_dit.analysis.interventions.recipes import selection_edit
from sae_lens_dit.analysis.interventions.shape_concepts import (
    GATE_THRESHOLD,
    erode_spec,
    fit_shape_probe,
    record_shape_samples,
    shape_selection,
    size_selections,
    size_spec,
)
from sae_lens_dit.analysis.interventions.shape_scoring import score_size
from sae_lens_dit.conventions import CONCEPTS_DIR, TIDE_ARCHITECTURE, TIMESTEP_MAX, sae_id
from sae_lens_dit.resources import pretrained_dir
from sae_lens_dit.toy.backbones import load_tiny_classifier

STEPS, N, SEED = 20, 192, 5000
KINDS = ("circle", "square", "triangle", "cross")
HOOKS = tuple(f"blocks.{i}.hook_resid_post" for i in range(6))
B0, B1, B2, B3, B4, B5 = HOOKS
WINDOW = (300.0, TIMESTEP_MAX)
OUT = Path(__file__).parent / "results"
CONCEPTS = pretrained_dir() / "saes" / "tide-dit-tiny-shapes" / CONCEPTS_DIR


def recipes(saes: dict, samples, gates: dict) -> dict[str, tuple[str, SteeringSpec]]:
    """{name: (what it does, spec)}; every spec edits on both CFG branches unless it says otherwise."""
    shape = {h: shape_selection(saes[h], samples) for h in HOOKS}
    shape16 = shape_selection(saes[B1], samples, n=16)
    sizes = {h: size_selections(saes[h], samples) for h in (B1, B3)}
    background = samples.select(saes[B1], 8, on_shape=False, target_rows=~samples.on_shape_rows(B1))
    gate, inside = gates[B1], replace(gates[B1], grow=-1)

    def erode(hooks, value=2.0, window=WINDOW) -> SteeringSpec:
        return erode_spec({h: shape[h] for h in hooks}, value, window, gates)

    def edit(selection, op, value=0.0, on=gate) -> LatentEdit:
        return selection_edit(selection, op, value, gate=on, window=WINDOW)

    def only(spec: SteeringSpec, branch: str) -> SteeringSpec:
        return SteeringSpec(tuple(replace(e, branch=branch) for e in spec.edits))

    larger_uncond = only(size_spec(sizes, "larger", 0.5, WINDOW, gates), "uncond")
    out = {
        "bundled": ("size=smaller as shipped: erode at block 1, 2 x typical inside, t >= 300", None),
        **{f"erode block {h[7]}": (f"the same erode at block {h[7]} alone", erode((h,))) for h in (B0, B2, B3)},
        "erode blocks 0+1": ("erode at blocks 0 and 1", erode((B0, B1))),
        "erode blocks 1+3": ("erode at blocks 1 and 3", erode((B1, B3))),
        "erode blocks 4, 5 (all t)": ("late blocks, every timestep", erode((B4, B5), window=(0.0, TIMESTEP_MAX))),
        "erode t >= 500": ("block 1, window from t 500", erode((B1,), window=(500.0, TIMESTEP_MAX))),
        "erode t 300-700": ("block 1, window 300-700", erode((B1,), window=(300.0, 700.0))),
        "erode inside x1": ("block 1, inside clamped at 1 x typical", erode((B1,), value=1.0)),
        "erode inside x3": ("block 1, inside clamped at 3 x typical", erode((B1,), value=3.0)),
        "erode, rim from logit 0": (
            "zero where the probe logit > 0 (reaches thin arms), inside from logit > 2",
            SteeringSpec(
                (
                    edit(shape[B1], "zero", on=replace(gate, threshold=0.0)),
                    edit(shape[B1], "clamp", 2.0, on=inside),
                )
            ),
        ),
        "erode 16 latents": (
            "16 shape latents zeroed on the gate, 8 clamped inside",
            SteeringSpec((edit(shape16, "zero"), edit(shape[B1], "clamp", 2.0, on=inside))),
        ),
        "negative rim": (
            "shape latents at -0.5 x typical on the rim (anti-shape), 2 x inside",
            SteeringSpec((edit(shape[B1], "clamp", -0.5), edit(shape[B1], "clamp", 2.0, on=inside))),
        ),
        "background painted on the rim": (
            "background latents clamped at 2 x typical on the rim, shape latents zeroed there",
            SteeringSpec(
                (
                    edit(shape[B1], "zero"),
                    edit(background, "clamp", 2.0),
                    edit(shape[B1], "clamp", 2.0, on=inside),
                    edit(background, "zero", on=inside),
                )
            ),
        ),
        "swap toward small, block 1": (
            "small-shape latents clamped, large-shape ones zeroed (size_spec), block 1",
            size_spec({B1: sizes[B1]}, "smaller", 1.0, WINDOW, gates),
        ),
        "swap toward small, blocks 1+3": (
            "the same at blocks 1 and 3, 0.5 x typical",
            size_spec(sizes, "smaller", 0.5, WINDOW, gates),
        ),
        "zero large-shape latents": (
            "large-shape latents zeroed on the gate, blocks 1 and 3",
            SteeringSpec(
                tuple(
                    LatentEdit(h, sizes[h]["larger"].latents, "zero", timesteps=WINDOW, gate=gates[h]) for h in (B1, B3)
                )
            ),
        ),
        "erode on cond only": ("the bundled erode on the conditional branch only", only(erode((B1,)), "cond")),
        "erode + larger on uncond": (
            "erode, and size=larger at 0.5 x typical on the unconditional branch (guidance pushes away from large)",
            erode((B1,)) + larger_uncond,
        ),
    }
    return out


@contextmanager
def background_patch(pipe, hooked: HookedDiT, samples, probe: LinearProbe, t_min: float = 300.0):
    """Outside the SAE: at block 1, for t >= t_min, the rim tokens' activation (probe gate minus the gate shrunk by
    one token) replaced by the mean activation of background tokens at that step of the recorded samples."""
    rows, on_shape = samples.rows[B1], samples.on_shape_rows(B1)
    steps = int(rows["step"].max()) + 1
    mean_bg = torch.stack([rows["activation"][(rows["step"] == k) & ~on_shape].float().mean(0) for k in range(steps)])
    t_of_step = torch.stack([rows["timestep"][rows["step"] == k][0] for k in range(steps)]).float()

    def hook_fn(activation, hook):
        t = hooked.call_context.timestep.float()
        grid = hooked.token_grid(activation.shape[1])
        gate = probe.logits(activation) > GATE_THRESHOLD
        rim = gate & ~grow_mask(gate, grid, -1) & (t >= t_min)[:, None]
        step = (t_of_step[None, :] - t[:, None]).abs().argmin(1)  # [rows]
        fill = mean_bg[step][:, None, :].expand_as(activation).to(activation.dtype)
        return torch.where(rim[..., None], fill, activation)

    with hooked.hooks(fwd_hooks=[(B1, hook_fn)]):
        yield


def write_markdown(report: dict) -> str:
    rows, (first, last) = report["recipes"], report["protocol"]["seeds"]
    lines = [
        f"# size=smaller: the bundled recipe and its alternatives (tuning seeds {first}-{last}, {last - first + 1} "
        "samples)",
        "",
        "Target: width (sqrt of area) down by >= 1 px with a shape before and after; too little: a shape is there "
        "but did not shrink by 1 px; vanished: no shape left. Issue 16 asks 0.80.",
        "",
        "| recipe | target | kept | too little | vanished | width change | circle / square / triangle / cross |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        kinds = " / ".join(f"{r['by_kind'][k]:.2f}" for k in KINDS)
        lines.append(
            f"| {name}: {r['what']} | {r['target']:.2f} | {r['kept']:.2f} | {r['too_little']:.2f} | "
            f"{r['vanished']:.2f} | {r['mean_width_change']:+.2f} | {kinds} |"
        )
    best = max(rows, key=lambda k: rows[k]["target"])
    oracle = {k: max(rows, key=lambda name: rows[name]["by_kind"][k]) for k in KINDS}
    oracle_rate = float(np.mean([rows[oracle[k]]["by_kind"][k] for k in KINDS]))
    lines += [
        "",
        f"Best single recipe: {best} ({rows[best]['target']:.2f}). Best recipe for each shape kind, as if the recipe "
        f"could be chosen knowing the kind, whatever it does to the kept rate: {oracle_rate:.2f} ("
        + ", ".join(f"{k}: {oracle[k]} {rows[oracle[k]]['by_kind'][k]:.2f}" for k in KINDS)
        + f"). {report['seconds']} s.",
    ]
    (OUT / "size_alternatives.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main() -> None:
    torch.manual_seed(0)
    start = time.time()
    pipe = load_tiny_dit("shapes")
    hooked = HookedDiT(pipe.transformer)
    classify = load_tiny_classifier("shapes").predict
    saes = {h: SAE.from_pretrained("tide-dit-tiny/shapes", sae_id(h, TIDE_ARCHITECTURE)) for h in HOOKS}
    samples = record_shape_samples(pipe, hooked, HOOKS, seed=1, num_inference_steps=STEPS)
    labels, seeds = np.arange(N) % 4, np.arange(N) + SEED
    before = sample_seeded(pipe, labels, seeds, STEPS)
    asked = np.full(N, "smaller")
    rows = {}

    def measure(name: str, what: str, after: np.ndarray) -> None:
        sc = score_size(before, after, asked, classify)
        too_little = ~sc["target"] & ~sc["vanished"]
        rows[name] = {
            "what": what,
            "target": float(sc["target"].mean()),
            "kept": float(sc["kept"].mean()),
            "vanished": float(sc["vanished"].mean()),
            "too_little": float(too_little.mean()),
            "mean_width_change": float(sc["width_change"].mean()),
            "by_kind": {k: float(sc["target"][labels == i].mean()) for i, k in enumerate(KINDS)},
        }
        r = rows[name]
        print(f"{name}: target {r['target']:.2f} kept {r['kept']:.2f} vanished {r['vanished']:.2f} {r['by_kind']}")

    with tempfile.TemporaryDirectory() as tmp:
        gates = {h: fit_shape_probe(samples, h, Path(tmp) / f"{h}.safetensors") for h in HOOKS}
        gates[B1] = replace(gates[B1], probe=str(CONCEPTS / "probes" / f"{B1}.safetensors"))  # the bundled one
        for name, (what, spec) in recipes(saes, samples, gates).items():
            spec = load_concept(CONCEPTS, "size=smaller") if spec is None else spec
            used = [saes[h] for h in spec.hooks]
            measure(name, what, steer_groups(pipe, hooked, used, labels, seeds, np.zeros(N), lambda _, s=spec: s))
        with background_patch(pipe, hooked, samples, LinearProbe.load(gates[B1].probe)):
            after = sample_seeded(pipe, labels, seeds, STEPS)
        measure("activation patch (no SAE)", "rim tokens' activation set to the mean background activation", after)
    report = {"protocol": {"seeds": [SEED, SEED + N - 1], "record_seed": 1, "steps": STEPS}, "recipes": rows}
    report["seconds"] = round(time.time() - start)
    OUT.mkdir(exist_ok=True)
    (OUT / "size_alternatives.json").write_text(json.dumps(report, indent=1))
    print(write_markdown(report))


if __name__ == "__main__":
    main()
