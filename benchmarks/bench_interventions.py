"""Steering measured on the bundled backbones: hue, position, size, transfer (shapes); class steering and
suppression (digits); TIDE vs TopK on the same recipe; the cost of a gated, windowed edit.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_interventions.py   (about 30 minutes on one core)
Writes benchmarks/results/interventions.json and .md. DDIM 20 steps, default guidance.

Protocol. The shapes concepts (`sae_lens_dit.analysis.interventions.shape_concepts`) choose latents and fit
their gate probes
on samples of seed 1 and choose strengths and windows on seeds 5000-5191; every number here is on
seeds 9000-9095 (96 samples per condition), which nothing was chosen on. The TIDE concepts are the
bundled ones (pretrained/saes/tide-dit-tiny-shapes/concepts, built by scripts/build_concepts.py);
the TopK concepts are built here by the same code from the TopK SAEs of the same release.

- hue: each sample is steered toward the hue bin three arcs from its own (6 bins). target: the output's
  bin; kept: the shape classifier gives the same kind as for the unsteered sample; background: border
  colour within 0.1 of the unsteered one. control: random latents (same count, competitors, values,
  gate and window). baseline: the gated difference of mean activations (target-bin images minus the
  rest, on the shape's tokens, in the window) added on gated tokens, scale chosen on the tuning seeds.
- position: toward the outer third on the side away from the shape's centre; size: every sample asked larger and
  asked smaller (96 per direction), by at least one pixel of width; transfer: real shapes images (drawn by
  `image_sets.make_shapes`) as references, read on their shape's tokens (from their pixels) and matched to
  a hue concept by the closest hue bin's mean code (`recipes.match_centroids`, centroids from the seed-1
  samples; chosen on 96 other references, seed 78: 0.90 matched their own bin, against 0.74 for
  `recipes.match_reference` on the concepts' selected latents over every bucket, reported beside it); the
  generation should take the reference's hue bin.
- class steering (digits): asked A, steered to B = (A+3)%10, no target; ceiling = the whole activation
  at one hook replaced by a B run's. Suppression: every class's selective latents zeroed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from sae_lens import SAE

import sae_lens_dit  # noqa: F401  (registers the bundled releases)
from sae_lens_dit import HookedDiT, load_tiny_dit
from sae_lens_dit.analysis.interventions import LatentEdit, SteeringSpec, steer
from sae_lens_dit.analysis.interventions.concepts import list_concepts, load_concept
from sae_lens_dit.analysis.interventions.editing import sample_seeded, steer_groups
from sae_lens_dit.analysis.interventions.gates import LinearProbe
from sae_lens_dit.analysis.interventions.recipes import encode_reference, match_centroids, match_reference, swap_spec
from sae_lens_dit.analysis.interventions.selection import LatentSelection, code_centroids, select_latents
from sae_lens_dit.analysis.interventions.selection_rows import record_samples
from sae_lens_dit.analysis.interventions.shape_concepts import build_shape_concepts, record_shape_samples
from sae_lens_dit.analysis.interventions.shape_scoring import (
    SIZES,
    hue_bin,
    score_hue,
    score_position,
    score_size,
)
from sae_lens_dit.resources import pretrained_dir
from sae_lens_dit.toy.backbones import load_tiny_classifier, measure_shape_factors, shape_tokens
from sae_lens_dit.toy.image_sets import HUE_BINS, make_shapes

STEPS = 20
N_EVAL, EVAL_SEED, TUNING_SEED = 96, 9000, 5000
N_TUNING = 192  # the concepts' tuning seeds (build_shape_concepts's n_tuning); the hue baseline tunes on the first 96
HUE_HOOK, HOOKS = "blocks.1.hook_resid_post", ("blocks.1.hook_resid_post", "blocks.3.hook_resid_post")
OUT = Path(__file__).parent / "results"
BUNDLED_CONCEPTS = pretrained_dir() / "saes" / "tide-dit-tiny-shapes" / "concepts"


def _rates(scores: dict) -> dict:
    return {k: round(float(np.mean(v)), 3) for k, v in scores.items() if np.asarray(v).dtype == bool}


class Shapes:
    """The shapes backbone, its classifier and the evaluation samples (unsteered)."""

    def __init__(self) -> None:
        self.pipe = load_tiny_dit("shapes")
        self.hooked = HookedDiT(self.pipe.transformer)
        self.classify = load_tiny_classifier("shapes").predict
        self.labels = np.arange(N_EVAL) % 4
        self.seeds = np.arange(N_EVAL) + EVAL_SEED
        self.before = sample_seeded(self.pipe, self.labels, self.seeds, STEPS)
        self.factors = measure_shape_factors(self.before)

    def steered(self, saes: list[SAE], group: np.ndarray, spec_for) -> np.ndarray:
        return steer_groups(self.pipe, self.hooked, saes, self.labels, self.seeds, group, spec_for, STEPS)


def _spec(folder: Path, name: str) -> SteeringSpec:
    return load_concept(folder, name)


def _saes(spec: SteeringSpec) -> list[SAE]:
    return spec.load_saes()


def _selection_of(edit: LatentEdit) -> LatentSelection:
    """The selection an edit of a concept was built from (latents, typical values, window)."""
    return LatentSelection(edit.hook, edit.latents, edit.typical, (), (), window=edit.timesteps)


def evaluate_concepts(s: Shapes, folder: Path) -> dict:
    """hue, position, size and transfer of one concept folder on the evaluation samples."""
    out = {}
    some = _spec(folder, "hue=0")
    saes = {sae.cfg.metadata.hook_name: sae for sae in _saes(some + _spec(folder, "position=left"))}
    all_saes = list(saes.values())
    target = (hue_bin(s.factors.hue) + 3) % HUE_BINS
    after = s.steered(all_saes, target, lambda b: _spec(folder, f"hue={b}"))
    out["hue"] = _rates(score_hue(s.before, after, target, s.classify))
    out["hue"]["unsteered_target"] = float((hue_bin(s.factors.hue) == target).mean())
    side = np.where(s.factors.center[:, 0] >= s.before.shape[2] / 2, "left", "right")
    after = s.steered(all_saes, side, lambda d: _spec(folder, f"position={d}"))
    placed = score_position(s.before, after, side, s.classify)
    out["position"] = _rates(placed)
    fits = placed["fits"]
    out["position"]["fitting"] = {k: round(float(placed[k][fits].mean()), 3) for k in ("target", "kept")}
    out["position"]["not_fitting"] = {k: round(float(placed[k][~fits].mean()), 3) for k in ("target", "kept")}
    # every sample asked both ways: 96 per direction, every shape kind in each (alternating directions over samples
    # whose kinds cycle by 4 asked "smaller" of two kinds only)
    direction = np.repeat(np.array(SIZES), N_EVAL)
    size_spec = lambda d: _spec(folder, f"size={d}")  # noqa: E731
    after = np.concatenate([s.steered(all_saes, np.full(N_EVAL, d), size_spec) for d in SIZES])
    sized = score_size(np.concatenate([s.before] * len(SIZES)), after, direction, s.classify)
    out["size"] = {
        **_rates(sized),
        "by_direction": {d: _rates({k: v[direction == d] for k, v in sized.items()}) for d in SIZES},
        "mean_width_change": {d: round(float(sized["width_change"][direction == d].mean()), 2) for d in SIZES},
    }
    out["transfer"] = transfer(s, folder, saes[HUE_HOOK])
    for key, value in out.items():
        print(f"  {key}: {value}", flush=True)
    return out


def transfer(s: Shapes, folder: Path, sae: SAE) -> dict:
    """Real shapes images as references: match each to a hue concept from its codes, swap toward it."""
    refs = make_shapes(N_EVAL, seed=77)
    ref_bins = hue_bin(refs.hue)
    selections = {
        b: _selection_of(next(e for e in _spec(folder, f"hue={b}").edits if e.op == "swap")) for b in range(HUE_BINS)
    }
    # each hue bin's mean code on the shape's tokens of the recorded samples (seed 1, as the concepts)
    samples = record_shape_samples(s.pipe, s.hooked, [HUE_HOOK], seed=1, num_inference_steps=STEPS)
    bins = hue_bin(samples.factors.hue)
    centroids = code_centroids(sae, samples.rows[HUE_HOOK], bins, samples.on_shape_rows(HUE_HOOK))
    # read each reference on its own shape's tokens (from its pixels), as the selections were made on them
    pixels = np.transpose(refs.images, (0, 2, 3, 1)) / 2 + 0.5
    on_shape = torch.from_numpy(shape_tokens(pixels, s.hooked.token_grid(64)))
    matched, by_latents = [], []
    for i in range(N_EVAL):
        codes = encode_reference(
            s.pipe,
            s.hooked,
            sae,
            torch.from_numpy(refs.images[i]),
            seed=i,
            class_labels=torch.tensor([int(refs.shape[i])]),
        )
        matched.append(match_centroids(codes, centroids, tokens=on_shape[i])[0])
        by_latents.append(match_reference(codes, selections, tokens=on_shape[i], in_window=False)[0])
    matched = np.array(matched)
    after = s.steered([sae], matched, lambda b: _spec(folder, f"hue={b}"))
    scores = score_hue(s.before, after, ref_bins, s.classify)
    return {
        **_rates(scores),
        "match_rate": float((matched == ref_bins).mean()),
        "match_rate_selected_latents": float((np.array(by_latents) == ref_bins).mean()),
        "unsteered_target": float((hue_bin(s.factors.hue) == ref_bins).mean()),
    }


def hue_controls(s: Shapes, folder: Path, sae: SAE, samples) -> dict:
    """Random latents on the same recipe, and the gated difference-of-means baseline (scale tuned on tuning seeds)."""
    target = (hue_bin(s.factors.hue) + 3) % HUE_BINS
    generator = torch.Generator().manual_seed(0)

    def random_spec(b: int) -> SteeringSpec:
        edit = next(e for e in _spec(folder, f"hue={b}").edits if e.op == "swap")
        pool = torch.randperm(sae.cfg.d_sae, generator=generator).tolist()
        latents, rivals = pool[: len(edit.latents)], pool[len(edit.latents) : len(edit.latents) + len(edit.competitors)]
        return SteeringSpec(
            (
                LatentEdit(
                    edit.hook,
                    tuple(latents),
                    "swap",
                    edit.value,
                    timesteps=edit.timesteps,
                    gate=edit.gate,
                    unit="typical",
                    typical=edit.typical,
                    competitors=tuple(rivals),
                ),
            )
        )

    control = _rates(score_hue(s.before, s.steered([sae], target, random_spec), target, s.classify))
    edit = next(e for e in _spec(folder, "hue=0").edits if e.op == "swap")
    probe, window = LinearProbe.load(edit.gate.probe), edit.timesteps
    rows = samples.rows[HUE_HOOK]
    gated = samples.on_shape_rows(HUE_HOOK) & (rows["timestep"] >= window[0]) & (rows["timestep"] <= window[1])
    bins = torch.from_numpy(hue_bin(samples.factors.hue))[rows["image"]]
    x = rows["activation"]
    vectors = {b: x[gated & (bins == b)].mean(0) - x[gated & (bins != b)].mean(0) for b in range(HUE_BINS)}

    @contextmanager
    def add_vector(b: int, alpha: float):
        def hook_fn(activation, hook):
            t = s.hooked.call_context.timestep
            rows_in = ((t >= window[0]) & (t <= window[1]))[:, None]
            inside = (probe.logits(activation) > edit.gate.threshold) & rows_in
            return activation + alpha * inside[..., None] * vectors[b]

        with s.hooked.hooks(fwd_hooks=[(HUE_HOOK, hook_fn)]):
            yield

    def baseline_rates(labels, seeds, before, alpha) -> dict:
        tgt = (hue_bin(measure_shape_factors(before).hue) + 3) % HUE_BINS
        after = np.zeros_like(before)
        for b in range(HUE_BINS):
            idx = np.flatnonzero(tgt == b)
            with add_vector(b, alpha):
                after[idx] = sample_seeded(s.pipe, labels[idx], seeds[idx], STEPS)
        return _rates(score_hue(before, after, tgt, s.classify))

    tune_labels, tune_seeds = np.arange(N_EVAL) % 4, np.arange(N_EVAL) + TUNING_SEED
    tune_before = sample_seeded(s.pipe, tune_labels, tune_seeds, STEPS)
    sweep = {alpha: baseline_rates(tune_labels, tune_seeds, tune_before, alpha) for alpha in (1.0, 2.0, 4.0)}
    ok = {a: r for a, r in sweep.items() if r["kept"] >= 0.85 and r["background"] >= 0.95} or sweep
    alpha = max(ok, key=lambda a: ok[a]["target"])
    baseline = baseline_rates(s.labels, s.seeds, s.before, alpha)
    print(f"  hue control {control}; baseline (alpha {alpha}) {baseline}", flush=True)
    return {
        "control": control,
        "baseline": {**baseline, "alpha": alpha, "tuning_sweep": {str(a): r for a, r in sweep.items()}},
    }


def timing(s: Shapes, folder: Path, reps: int = 5) -> dict:
    """Seconds per sampling run of the 96 evaluation samples, unsteered and with one gated, windowed hue edit,
    interleaved; ratio of medians."""
    spec = _spec(folder, "hue=2")
    saes = _saes(spec)
    plain, edited = [], []
    for _ in range(reps):
        start = time.perf_counter()
        sample_seeded(s.pipe, s.labels, s.seeds, STEPS)
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        with steer(s.hooked, saes, spec):
            sample_seeded(s.pipe, s.labels, s.seeds, STEPS)
        edited.append(time.perf_counter() - start)
    return {
        "unsteered_s": statistics.median(plain),
        "steered_s": statistics.median(edited),
        "ratio": statistics.median(edited) / statistics.median(plain),
        "reps": reps,
    }


# ------------------------------------------------------------------------------------------------
# Digits: class steering (no target) and suppression of every class.


def digits(hooks: tuple[str, ...]) -> dict:
    pipe = load_tiny_dit("digits")
    hooked, clf = HookedDiT(pipe.transformer), load_tiny_classifier("digits")
    saes = {hook: SAE.from_pretrained("tide-dit-tiny/digits", f"{hook}/tide") for hook in hooks}
    labels = np.arange(200) % 10
    rows, _ = record_samples(
        pipe, hooked, list(hooks), labels.tolist(), seed=1, num_inference_steps=STEPS, tokens_per_image=16
    )
    select = {
        hook: {c: select_latents(sae, rows[hook], 16, target_images=labels == c) for c in range(10)}
        for hook, sae in saes.items()
    }
    asked = np.arange(100) % 10
    seeds = np.arange(100) + EVAL_SEED
    goal = (asked + 3) % 10

    def flip(spec_for, use=hooks) -> float:
        out = steer_groups(pipe, hooked, [saes[h] for h in use], asked, seeds, goal, spec_for, STEPS)
        return float((clf.predict(out) == goal).mean())

    def swap(b: int, value: float, use) -> SteeringSpec:
        spec = SteeringSpec()
        for hook in use:
            spec = spec + swap_spec(select[hook], b, value, window=None)
        return spec

    result: dict = {"hooks": list(hooks), "samples": len(asked)}
    for value in (2.0, 4.0, 8.0):
        result[f"all_hooks_value_{value}"] = flip(lambda b, v=value: swap(b, v, hooks))
        result[f"single_hook_value_{value}"] = {h: flip(lambda b, v=value, h=h: swap(b, v, (h,)), (h,)) for h in hooks}
        print(
            f"  class steering value {value}: {result[f'all_hooks_value_{value}']}, single "
            f"{result[f'single_hook_value_{value}']}",
            flush=True,
        )

    def ceiling(hook: str) -> float:
        out = np.zeros((len(asked), 8, 8, 1), dtype=np.float32)
        for b in range(10):
            idx = np.flatnonzero(goal == b)
            captured: list[torch.Tensor] = []
            with hooked.hooks(fwd_hooks=[(hook, lambda act, hook, kept=captured: kept.append(act.clone()))]):
                sample_seeded(pipe, goal[idx], seeds[idx], STEPS)
            replay = iter(captured)
            with hooked.hooks(fwd_hooks=[(hook, lambda act, hook, it=replay: next(it))]):
                out[idx] = sample_seeded(pipe, asked[idx], seeds[idx], STEPS)
        return float((clf.predict(out) == goal).mean())

    result["ceiling_single_hook"] = {h: ceiling(h) for h in hooks}
    result["best_multi_layer"] = max(result[f"all_hooks_value_{v}"] for v in (2.0, 4.0, 8.0))
    result["best_single_hook"] = max(max(result[f"single_hook_value_{v}"].values()) for v in (2.0, 4.0, 8.0))
    print(f"  ceiling {result['ceiling_single_hook']}", flush=True)
    plain = clf.predict(sample_seeded(pipe, asked, seeds, STEPS))
    suppression = {}
    for c in range(10):
        spec = SteeringSpec(tuple(LatentEdit(h, select[h][c].latents, "zero") for h in hooks))
        with steer(hooked, list(saes.values()), spec):
            after = clf.predict(sample_seeded(pipe, asked, seeds, STEPS))
        mine = asked == c
        suppression[c] = {
            "rate_before": float((plain[mine] == c).mean()),
            "rate_after": float((after[mine] == c).mean()),
            "others_accuracy_before": float((plain[~mine] == asked[~mine]).mean()),
            "others_accuracy_after": float((after[~mine] == asked[~mine]).mean()),
        }
        print(f"  suppress {c}: {suppression[c]}", flush=True)
    return {"class_steering": result, "suppression": suppression}


PARTS = ("tide", "topk", "digits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", type=Path, default=BUNDLED_CONCEPTS, help="TIDE concept folder")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="What to measure; parts not run keep their results from the existing JSON",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.time()
    path = OUT / "interventions.json"
    report: dict = {
        "protocol": {
            "eval_seeds": [EVAL_SEED, EVAL_SEED + N_EVAL - 1],
            "tuning_seeds": [TUNING_SEED, TUNING_SEED + N_TUNING - 1],
            "record_seed": 1,
            "steps": STEPS,
            "samples_per_condition": N_EVAL,
        }
    }
    seconds = {}
    s = Shapes() if {"tide", "topk"} & set(args.parts) else None
    if "tide" in args.parts:
        print("TIDE concepts (shapes)", flush=True)
        part = time.time()
        report.update(tide_report(s, args.concepts))
        report["timing"] = timing(s, args.concepts)
        print(f"  timing {report['timing']}", flush=True)
        seconds["tide"] = round(time.time() - part)
    if "topk" in args.parts:
        print("TopK concepts (shapes), built by the same code", flush=True)
        part = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            build_shape_concepts(Path(tmp) / "topk", "tide-dit-tiny/shapes", "topk", HOOKS, HUE_HOOK, n_tuning=N_TUNING)
            report["dictionary_comparison_topk"] = evaluate_concepts(s, Path(tmp) / "topk")
        seconds["topk"] = round(time.time() - part)
    if "digits" in args.parts:
        print("digits: class steering and suppression", flush=True)
        part = time.time()
        report["digits"] = digits(("blocks.1.hook_resid_post", "blocks.3.hook_resid_post"))
        seconds["digits"] = round(time.time() - part)
    # parts not run keep their results; read the file only now, as another part may have run meanwhile
    old = json.loads(path.read_text()) if path.exists() and set(args.parts) != set(PARTS) else {}
    seconds = {**old.get("seconds_per_part", {}), **seconds}
    report = {**old, **report}
    if "dictionary_comparison_tide" in report and "dictionary_comparison_topk" in report:
        report["dictionary_comparison"] = {
            "tide": report["dictionary_comparison_tide"],
            "topk": report["dictionary_comparison_topk"],
        }
    report["seconds_per_part"] = seconds
    report["seconds"] = round(time.time() - start, 1)
    OUT.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))
    if all(key in report for key in ("hue", "dictionary_comparison", "digits")):
        write_markdown(report)


def tide_report(s: Shapes, folder: Path) -> dict:
    tide = evaluate_concepts(s, folder)
    samples = record_shape_samples(s.pipe, s.hooked, [HUE_HOOK], seed=1, num_inference_steps=STEPS)
    sae = SAE.from_pretrained("tide-dit-tiny/shapes", f"{HUE_HOOK}/tide")
    controls = hue_controls(s, folder, sae, samples)
    measured = list_concepts(folder)
    h, p, z, t = tide["hue"], tide["position"], tide["size"], tide["transfer"]
    return {
        "hue": {
            "target_rate": h["target"],
            "kept_rate": h["kept"],
            "background_rate": h["background"],
            "control_rate": controls["control"]["target"],
            "baseline_rate": controls["baseline"]["target"],
            "unsteered_rate": h["unsteered_target"],
            "control": controls["control"],
            "baseline": controls["baseline"],
            "window": measured["hue=0"]["measured"]["window"],
            "value": measured["hue=0"]["measured"]["value"],
            "commitment_curve": measured["hue=0"]["measured"]["commitment_curve"],
        },
        "position": {
            "target_rate": p["target"],
            "kept_rate": p["kept"],
            "hue_kept_rate": p["hue_kept"],
            "fitting": p["fitting"],
            "not_fitting": p["not_fitting"],
            "recipe": measured["position=left"]["measured"],
        },
        "size": {
            "target_rate": z["target"],
            "kept_rate": z["kept"],
            "vanished_rate": z["vanished"],
            "hue_kept_rate": z["hue_kept"],
            "by_direction": z["by_direction"],
            "mean_width_change": z["mean_width_change"],
            "recipe": {d: measured[f"size={d}"]["measured"] for d in SIZES},
        },
        "transfer": {
            "target_rate": t["target"],
            "kept_rate": t["kept"],
            "background_rate": t["background"],
            "match_rate": t["match_rate"],
            "match_rate_selected_latents": t["match_rate_selected_latents"],
            "unsteered_rate": t["unsteered_target"],
        },
        "dictionary_comparison_tide": tide,
    }


def write_markdown(r: dict) -> None:
    h, p, z, t = r["hue"], r["position"], r["size"], r["transfer"]
    lines = [
        "# Steering on the bundled backbones (DDIM 20 steps; evaluated on seeds 9000-9095, 96 samples per condition)",
        "",
        "| experiment | target | kept | background | control (random latents) | baseline | unsteered |",
        "|---|---|---|---|---|---|---|",
        f"| hue (TIDE, blocks.1, window {h['window']}, {h['value']} x typical) | {h['target_rate']:.2f} | "
        f"{h['kept_rate']:.2f} | {h['background_rate']:.2f} | {h['control_rate']:.2f} | {h['baseline_rate']:.2f} "
        f"| {h['unsteered_rate']:.2f} |",
        f"| position (TIDE, blocks 1 and 3; hue bin kept {p['hue_kept_rate']:.2f}) | {p['target_rate']:.2f} | "
        f"{p['kept_rate']:.2f} | | | | 0.00 |",
        f"| size (TIDE; every sample asked both ways; larger {z['by_direction']['larger']['target']:.2f}, smaller "
        f"{z['by_direction']['smaller']['target']:.2f}; vanished {z['vanished_rate']:.2f}; hue bin kept "
        f"{z['hue_kept_rate']:.2f}; width change "
        f"{z['mean_width_change']}) | {z['target_rate']:.2f} | {z['kept_rate']:.2f} | | | | |",
        f"| transfer (reference's hue; matched {t['match_rate']:.2f} by centroids, "
        f"{t['match_rate_selected_latents']:.2f} by selected latents) | {t['target_rate']:.2f} | {t['kept_rate']:.2f} "
        f"| {t['background_rate']:.2f} | | | {t['unsteered_rate']:.2f} |",
        "",
        "Kept: the steered sample still has a shape (measured width >= 2 px) of the kind the classifier reads in the "
        "unsteered one; an erased shape is neither kept nor smaller (`interventions.shape_scoring`). Hue bin kept: "
        "the steered shape's hue bin (of 6) is the unsteered one's (chance 0.17); position and size do not keep it "
        "(not part of their targets): a regrown or moved shape takes the colour of the latents clamped on it and of "
        "the noise where it is drawn.",
        "",
        "Size=smaller against its alternatives (every recipe on the tuning seeds): "
        "`benchmarks/results/size_alternatives.md`.",
    ]
    if "dictionary_comparison" in r:
        lines += [
            "",
            "| dictionary | hue target / kept / bg | position target / kept | size target / kept | "
            "transfer target / kept |",
            "|---|---|---|---|---|",
        ]
        for name, d in r["dictionary_comparison"].items():
            lines.append(
                f"| {name} | {d['hue']['target']:.2f} / {d['hue']['kept']:.2f} / {d['hue']['background']:.2f} "
                f"| {d['position']['target']:.2f} / {d['position']['kept']:.2f} | {d['size']['target']:.2f} / "
                f"{d['size']['kept']:.2f} | {d['transfer']['target']:.2f} / {d['transfer']['kept']:.2f} |"
            )
    tm = r["timing"]
    lines += [
        "",
        f"Gated, windowed hue edit: {tm['steered_s']:.2f} s vs {tm['unsteered_s']:.2f} s unsteered per 96 "
        f"samples (ratio {tm['ratio']:.2f}, median of {tm['reps']} interleaved runs).",
    ]
    if "digits" in r:
        c = r["digits"]["class_steering"]
        lines += [
            "",
            f"Class steering A -> (A+3)%10 on digits (no target): best single hook {c['best_single_hook']:.2f}, "
            f"best multi-layer {c['best_multi_layer']:.2f}, ceiling (whole activation patched) "
            f"{c['ceiling_single_hook']}.",
            "",
            "| suppressed class | rate before -> after | others' accuracy |",
            "|---|---|---|",
        ]
        for k, v in r["digits"]["suppression"].items():
            lines.append(
                f"| {k} | {v['rate_before']:.2f} -> {v['rate_after']:.2f} | {v['others_accuracy_before']:.2f}"
                f" -> {v['others_accuracy_after']:.2f} |"
            )
    lines.append(f"\nSeconds per part (one core): {r['seconds_per_part']}.")
    (OUT / "interventions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
