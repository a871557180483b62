"""Interventions measured on the bundled backbones: class steering, style transfer, concept suppression.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_interventions.py  (a few minutes on one core)
Writes benchmarks/results/interventions.json and .md. DDIM 20 steps (the digits DiT's accuracy at
20 steps is printed beside every number), default guidance, bundled TIDE SAEs at blocks.1 and blocks.3.

- Class steering (digits): samples asked for class A, steered with the latents most selective for
  B = (A + 3) % 10 (`latents_for_images` on recorded samples, both hooks), `add` at a strength from a
  sweep; control: random latents, same count, strength rescaled so the added vector has the same
  norm; baseline: adding alpha x (class-mean activation of B - of A) per timestep bucket (no SAE),
  alpha from a sweep. flip rate = share the bundled classifier labels B. Ceiling: the whole
  activation at one hook replaced, call by call, by that of a run asked for B with the same seed;
  no edit at that hook can do better than a perfect copy of the target run's activation.
- Style transfer (shapes): reference shapes images encoded with `encode_reference`, top latents
  (pooled, excess over ordinary samples) clamped into generations of another shape. Colour kept =
  the output's measured hue is within 1/12 of the reference's (one of six hue arcs); shape kept =
  the shape classifier gives the asked shape.
- Suppression (digits): the class's most selective latents zeroed at every timestep.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from sae_lens import SAE

import sae_lens_dit  # noqa: F401  (registers the bundled releases)
from sae_lens_dit import HookedDiT, load_tiny_dit
from sae_lens_dit.backbones import load_tiny_classifier, measure_shape_factors
from sae_lens_dit.evals import bucket_masks, latent_timestep_stats, sample_images
from sae_lens_dit.image_sets import make_shapes
from sae_lens_dit.interventions import (
    LatentEdit,
    SteeringSpec,
    encode_reference,
    latents_for_images,
    record_samples,
    steer,
    suppression_spec,
    transfer_spec,
)

STEPS = 20
HOOKS = ("blocks.1.hook_resid_post", "blocks.3.hook_resid_post")
N_LATENTS = 32
STRENGTHS = (8.0, 16.0, 32.0, 64.0)
ALPHAS = (2.0, 4.0, 8.0)
PER_PAIR = 5
OUT = Path(__file__).parent / "results"


def _saes(release: str) -> dict[str, SAE]:
    return {hook: SAE.from_pretrained(release, f"{hook}/tide") for hook in HOOKS}


def _pairs() -> tuple[list[int], list[int]]:
    a = [c for c in range(10) for _ in range(PER_PAIR)]
    return a, [(c + 3) % 10 for c in a]


def _flip_rate(pipe, clf, asked: list[int], target: list[int], context_for) -> float:
    """Sample each target group under its own context; share of images the classifier labels as the target."""
    hits = []
    for b in sorted(set(target)):
        idx = [i for i, t in enumerate(target) if t == b]
        with context_for(b, asked[idx[0]]):
            images = sample_images(pipe, [asked[i] for i in idx], seed=100 + b, num_inference_steps=STEPS)
        hits.append(clf.predict(images) == b)
    return float(np.concatenate(hits).mean())


def class_steering(pipe, hooked, clf) -> dict:
    saes = _saes("tide-dit-tiny/digits")
    labels = [c for c in range(10) for _ in range(10)]
    choices, means = {}, {}
    for hook, sae in saes.items():
        rows, images = record_samples(pipe, hooked, hook, labels, seed=1, num_inference_steps=STEPS,
                                      tokens_per_image=16)  # fmt: skip
        label = np.array(labels)
        choices[hook] = {c: latents_for_images(sae, rows, label == c, N_LATENTS).latents for c in range(10)}
        row_label = torch.tensor(labels)[rows["image"]]
        masks = bucket_masks(rows["timestep"])
        means[hook] = {c: torch.stack([rows["activation"][m & (row_label == c)].mean(0) for m in masks])
                       for c in range(10)}  # fmt: skip
    accuracy = float((clf.predict(images) == np.array(labels)).mean())
    asked, target = _pairs()
    generator = torch.Generator().manual_seed(0)

    def sae_spec(b: int, strength: float, random: bool = False) -> SteeringSpec:
        edits = []
        for hook, sae in saes.items():
            latents = choices[hook][b]
            if not random:
                edits.append(LatentEdit(hook, tuple(latents), "add", strength))
                continue
            chosen = torch.randperm(sae.cfg.d_sae, generator=generator)[: len(latents)].tolist()
            unit = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=-1, keepdim=True)
            target_norm = (strength * unit[latents].sum(0)).norm()
            edits.append(LatentEdit(hook, tuple(chosen), "add", float(target_norm / unit[chosen].sum(0).norm())))
        return SteeringSpec(tuple(edits))

    sweep = {}
    for strength in STRENGTHS:
        sweep[strength] = _flip_rate(pipe, clf, asked, target, lambda b, a, s=strength: steer(hooked, list(
            saes.values()), sae_spec(b, s)))  # fmt: skip
        print(f"  SAE steering strength {strength}: flip rate {sweep[strength]:.2f}", flush=True)
    best = max(sweep, key=sweep.get)
    control = _flip_rate(pipe, clf, asked, target,
                         lambda b, a: steer(hooked, list(saes.values()), sae_spec(b, best, random=True)))  # fmt: skip

    def mean_difference(b: int, a: int, alpha: float):
        def add(activation, hook):
            t = float(hooked.call_context.timestep[0])
            bucket = [bool(m) for m in bucket_masks(torch.tensor([t]))].index(True)
            return activation + alpha * (means[hook.name][b][bucket] - means[hook.name][a][bucket])

        return hooked.hooks(fwd_hooks=[(hook, add) for hook in HOOKS])

    baseline_sweep = {}
    for alpha in ALPHAS:
        baseline_sweep[alpha] = _flip_rate(pipe, clf, asked, target, lambda b, a, al=alpha: mean_difference(b, a, al))
        print(f"  mean-difference baseline alpha {alpha}: flip rate {baseline_sweep[alpha]:.2f}", flush=True)
    unsteered = _flip_rate(pipe, clf, asked, target, lambda b, a: steer(hooked, [], SteeringSpec()))

    @contextmanager
    def oracle_patch(b: int, a: int, hook: str):
        """The ceiling of any edit at `hook`: its whole activation replaced, call by call, by the activation of
        a run asked for the target class with the same seed (what a perfect steering would reproduce)."""
        n = asked.count(a)
        captured: list[torch.Tensor] = []
        with hooked.hooks(fwd_hooks=[(hook, lambda act, hook: captured.append(act.clone()))]):
            sample_images(pipe, [b] * n, seed=100 + b, num_inference_steps=STEPS)
        replay = iter(captured)
        with hooked.hooks(fwd_hooks=[(hook, lambda act, hook: next(replay))]):
            yield

    oracle = {hook: _flip_rate(pipe, clf, asked, target, lambda b, a, h=hook: oracle_patch(b, a, h)) for hook in HOOKS}
    print(f"  oracle activation patching: flip rate {oracle}", flush=True)
    return {
        "flip_rate": sweep[best], "strength": best, "strength_sweep": {str(k): v for k, v in sweep.items()},
        "control_flip_rate": control, "baseline_flip_rate": max(baseline_sweep.values()),
        "baseline_alpha_sweep": {str(k): v for k, v in baseline_sweep.items()}, "unsteered_flip_rate": unsteered,
        "latents_per_hook": N_LATENTS, "hooks": list(HOOKS), "samples": len(asked), "steps": STEPS,
        "classifier_accuracy_unsteered": accuracy, "oracle_patch_flip_rate": oracle,
    }  # fmt: skip


def _hue_match(hue: np.ndarray, reference: np.ndarray) -> np.ndarray:
    d = np.abs(hue - reference)
    return np.minimum(d, 1.0 - d) < 1.0 / 12.0


def style_transfer() -> dict:
    pipe = load_tiny_dit("shapes")
    hooked, clf = HookedDiT(pipe.transformer), load_tiny_classifier("shapes")
    hook = HOOKS[0]
    sae = SAE.from_pretrained("tide-dit-tiny/shapes", f"{hook}/tide")
    rows, _ = record_samples(pipe, hooked, hook, [c % 4 for c in range(40)], seed=2, num_inference_steps=STEPS,
                             tokens_per_image=16)  # fmt: skip
    baseline = latent_timestep_stats(sae, rows["activation"], rows["timestep"]).mean_activation
    refs = make_shapes(8, seed=11)
    out: dict[str, list] = {"colour_kept": [], "shape_kept": [], "colour_unsteered": [], "shape_unsteered": []}
    for i in range(len(refs.shape)):
        asked = [int((refs.shape[i] + 1 + j) % 4) for j in range(3)]  # other shapes than the reference's
        ref = encode_reference(pipe, hooked, sae, torch.from_numpy(refs.images[i]), seed=i,
                               class_labels=torch.tensor([int(refs.shape[i])]))  # fmt: skip
        spec = transfer_spec(ref, n=8, baseline=baseline, op="clamp")
        plain = sample_images(pipe, asked, seed=200 + i, num_inference_steps=STEPS)
        with steer(hooked, [sae], spec):
            moved = sample_images(pipe, asked, seed=200 + i, num_inference_steps=STEPS)
        for key, images in (("unsteered", plain), ("kept", moved)):
            out[f"colour_{key}"].append(_hue_match(measure_shape_factors(images).hue, refs.hue[i]))
            out[f"shape_{key}"].append(clf.predict(images) == np.array(asked))
    rates = {k: float(np.concatenate(v).mean()) for k, v in out.items()}
    return {"colour_transfer_rate": rates["colour_kept"], "shape_kept_rate": rates["shape_kept"],
            "colour_match_unsteered": rates["colour_unsteered"], "shape_accuracy_unsteered": rates["shape_unsteered"],
            "references": len(refs.shape), "samples": 3 * len(refs.shape), "hook": hook,
            "latents_per_bucket": 8}  # fmt: skip


def suppression(pipe, hooked, clf) -> dict:
    saes = _saes("tide-dit-tiny/digits")
    labels = [c for c in range(10) for _ in range(10)]
    rows = {hook: record_samples(pipe, hooked, hook, labels, seed=1, num_inference_steps=STEPS, tokens_per_image=16)[0]
            for hook in HOOKS}  # fmt: skip
    asked = [c for c in range(10) for _ in range(8)]
    plain = clf.predict(sample_images(pipe, asked, seed=300, num_inference_steps=STEPS))
    results = []
    for concept in (1, 4, 7):
        spec = SteeringSpec()
        for hook, sae in saes.items():
            chosen = latents_for_images(sae, rows[hook], np.array(labels) == concept, N_LATENTS).latents
            spec = spec + suppression_spec(hook, chosen)
        with steer(hooked, list(saes.values()), spec):
            steered = clf.predict(sample_images(pipe, asked, seed=300, num_inference_steps=STEPS))
        mine, others = np.array(asked) == concept, np.array(asked) != concept
        results.append({
            "concept": concept, "rate_before": float((plain[mine] == concept).mean()),
            "rate_after": float((steered[mine] == concept).mean()),
            "others_accuracy_before": float((plain[others] == np.array(asked)[others]).mean()),
            "others_accuracy_after": float((steered[others] == np.array(asked)[others]).mean()),
        })  # fmt: skip
        print(f"  suppress {concept}: {results[-1]}", flush=True)
    return {"per_concept": results, "latents_per_hook": N_LATENTS, "samples_per_class": 8}


def main() -> None:
    torch.manual_seed(0)
    start = time.time()
    pipe = load_tiny_dit("digits")
    hooked, clf = HookedDiT(pipe.transformer), load_tiny_classifier("digits")
    print("class steering (digits)", flush=True)
    steering = class_steering(pipe, hooked, clf)
    print("suppression (digits)", flush=True)
    suppressed = suppression(pipe, hooked, clf)
    print("style transfer (shapes)", flush=True)
    transfer = style_transfer()
    report = {"class_steering": steering, "style_transfer": transfer, "suppression": suppressed,
              "seconds": round(time.time() - start, 1), "threads": torch.get_num_threads()}  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "interventions.json").write_text(json.dumps(report, indent=1))
    s, t = steering, transfer
    lines = [
        "# Interventions on the bundled backbones (DDIM 20 steps, TIDE SAEs)", "",
        "| experiment | metric | value |", "|---|---|---|",
        f"| class steering A -> (A+3)%10, {s['samples']} samples | flip_rate (SAE latents, strength {s['strength']}) "
        f"| {s['flip_rate']:.2f} |",
        f"| | control_flip_rate (random latents, same count and norm) | {s['control_flip_rate']:.2f} |",
        f"| | baseline_flip_rate (class-mean difference, best alpha) | {s['baseline_flip_rate']:.2f} |",
        f"| | unsteered flip rate | {s['unsteered_flip_rate']:.2f} |",
        *[f"| | ceiling: whole activation patched from a target-class run at {hook} | {rate:.2f} |"
          for hook, rate in s["oracle_patch_flip_rate"].items()],
        f"| | strength sweep | {s['strength_sweep']} |",
        f"| | baseline alpha sweep | {s['baseline_alpha_sweep']} |",
        f"| style transfer (shapes), {t['samples']} samples | colour transfer rate (unsteered match) | "
        f"{t['colour_transfer_rate']:.2f} ({t['colour_match_unsteered']:.2f}) |",
        f"| | shape kept rate (unsteered accuracy) | {t['shape_kept_rate']:.2f} "
        f"({t['shape_accuracy_unsteered']:.2f}) |",
    ]  # fmt: skip
    for r in suppressed["per_concept"]:
        lines.append(f"| suppression of {r['concept']} | rate among samples asked for it; other classes' accuracy | "
                     f"{r['rate_before']:.2f} -> {r['rate_after']:.2f}; "
                     f"{r['others_accuracy_before']:.2f} -> {r['others_accuracy_after']:.2f} |")  # fmt: skip
    lines.append(f"\n{report['seconds']} s on {report['threads']} thread(s).")
    (OUT / "interventions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
