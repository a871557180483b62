"""Copy the runner outputs of one tiny-backbone training into `pretrained/saes/tide-dit-tiny-<name>/`
(`--variant transcoders`: `tide-dit-tiny-<name>-transcoders/`, the transcoder release of that backbone).

    OMP_NUM_THREADS=1 sae-lens-dit train --preset dit-tiny-<name> --architecture tide topk \\
        --hook blocks.1.hook_resid_post blocks.3.hook_resid_post --output-dir /tmp/rel/<name>
    python scripts/bundle_tiny_saes.py --name <name> --runs /tmp/rel/<name> --command "<the train command>"

(`--runs` and `--command` take several, when architectures were trained by separate commands. A `--runs`
folder is either a train command's `--output-dir` with one `<architecture>-<hook>/` per SAE, or one SAE's
run folder itself, e.g. a `sae-lens-dit train --config` rerun that replaces one of them.)

Harvests may differ in the hooks they record, nothing else: harvests of the same settings sample the same
images, timesteps and tokens whatever hooks they record (a batch's seed is a function of the harvest seed
and batch index), so every SAE of a release is trained on rows of the same sampling runs. Settings in which
one SAE's run differs from the others (seed, d_sae, batch size, ...) are listed per SAE in the card.

Each `<runs>/<architecture>-<hook>/` becomes `<hook>/<architecture>/` with SAELens's files
(`cfg.json`, `sae_weights.safetensors`, `sparsity.safetensors`, `runner_cfg.json`) and the
runner's `eval.json`. The script writes the folder's README.md (command, settings, held-out metrics
per timestep bucket, size on disk; `--note` adds paragraphs) and prints the `saes:` lines of its
`releases.yaml` entry.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import Counter
from pathlib import Path

FILES = ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "runner_cfg.json", "eval.json")
ROOT = Path(__file__).resolve().parents[1] / "pretrained" / "saes"


from sae_lens_dit.analysis.evals import DENSE_THRESHOLD, read_eval_file  # noqa: E402  (the one definition of a dense latent)


def learning_rate(runner_cfg: dict, architecture: str) -> float:
    """The run's learning rate: its `lr`, or the architecture's default the runner used for None."""
    from sae_lens_dit.training.runner import DEFAULT_LR, FALLBACK_LR

    return runner_cfg["lr"] if runner_cfg["lr"] is not None else DEFAULT_LR.get(architecture, FALLBACK_LR)


def run_folders(runs: list[Path]) -> list[Path]:
    """Each `--runs` folder: itself if it is one SAE's run (holds `eval.json`), else its SAE run subfolders."""
    found = []
    for runs_dir in runs:
        if (runs_dir / "eval.json").is_file():
            found.append(runs_dir)
        else:
            found += [p for p in runs_dir.iterdir() if (p / "eval.json").is_file()]
    return found


def block(hook: str) -> tuple[int, str]:
    """Sort key of a hook name: its block index, then the name (blocks.10 after blocks.9)."""
    parts = hook.split(".")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1, hook)


def settings(runner_cfg: dict, cfg: dict, report: dict) -> dict:
    """The training settings the card names, of one run (its recipe as the runner applied it; runs from before
    the recipe was reported name only b_dec_init)."""
    recipe = report.get("recipe") or {"b_dec_init": runner_cfg["b_dec_init"]}
    return {
        "d_sae": cfg["d_sae"],
        "k": cfg.get("k"),
        "seed": runner_cfg["seed"],
        "batch": runner_cfg["batch_size"],
        "training rows": runner_cfg["training_tokens"],
        "lr": runner_cfg["lr"],
        "dead window": runner_cfg["dead_feature_window"],
        "b_dec": recipe["b_dec_init"],
        "unit decoder": runner_cfg["unit_decoder_init"],
        **{name.replace("_", " "): value for name, value in recipe.items() if name != "b_dec_init"},
    }


def mean_l0(report: dict) -> float:
    return sum(b["l0"] * b["rows"] for b in report["buckets"]) / sum(b["rows"] for b in report["buckets"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="Bundled backbone name (digits, shapes)")
    parser.add_argument("--runs", required=True, type=Path, nargs="+", help="The train commands' --output-dir(s)")
    parser.add_argument("--command", required=True, nargs="+", help="The exact train command(s), for the card")
    parser.add_argument("--note", nargs="*", default=[], help="Paragraph(s) for the end of the card")
    parser.add_argument(
        "--variant", help="Release variant after the name (transcoders: the release tide-dit-tiny/NAME-transcoders)"
    )
    args = parser.parse_args()
    release = f"{args.name}-{args.variant}" if args.variant else args.name
    out = ROOT / f"tide-dit-tiny-{release}"
    saes = []
    for run in run_folders(args.runs):
        cfg, report = json.loads((run / "cfg.json").read_text()), read_eval_file(run).single_report()
        sae_id = report["sae"]  # <hook>/<architecture>; a transcoder's hook is its sublayer (blocks.2.mlp)
        if any(sae_id == other for other, _, _ in saes):
            raise SystemExit(f"two runs of {sae_id} among --runs; name only the one to bundle")
        (out / sae_id).mkdir(parents=True, exist_ok=True)
        for name in FILES:
            shutil.copy2(run / name, out / sae_id / name)
        saes.append((sae_id, cfg, report))
    saes.sort(key=lambda s: (s[1]["architecture"], block(s[1]["metadata"]["hook_name"])))
    harvests = [{**cfg["metadata"]["harvest"], "hook_names": None} for _, cfg, _ in saes]
    if any(h != harvests[0] for h in harvests):
        raise SystemExit("the runs' harvests differ in more than the hooks they record; bundle them separately")
    harvest = saes[0][1]["metadata"]["harvest"]
    runners = {sae_id: json.loads((out / sae_id / "runner_cfg.json").read_text()) for sae_id, _, _ in saes}
    per_sae = {sae_id: settings(runners[sae_id], cfg, report) for sae_id, cfg, report in saes}
    keys = dict.fromkeys(key for s in per_sae.values() for key in s)  # runs from before the recipe name fewer
    common = {key: Counter(s.get(key) for s in per_sae.values()).most_common(1)[0][0] for key in keys}
    (eval_images,) = {r["eval_images"] for r in runners.values()}  # one held-out set size for the whole table
    lrs = {cfg["architecture"]: json.loads((out / sae_id / "runner_cfg.json").read_text()) for sae_id, cfg, _ in saes}
    guidance = json.loads((ROOT.parent / f"tiny-dit-{args.name}" / "sampling.json").read_text())["guidance_scale"]
    hook_sets = {tuple(cfg["metadata"]["harvest"]["hook_names"]) for _, cfg, _ in saes}
    transcoders = all("hook_name_out" in cfg["metadata"] for _, cfg, _ in saes)
    what = "TIDE transcoders (MLP input -> MLP output)" if transcoders else "TIDE SAEs and TopK baselines"
    lines = [
        f"# tide-dit-tiny/{release}",
        "",
        f"{what} on the bundled {args.name} DiT (`pretrained/tiny-dit-{args.name}`), bundled in",
        "the wheel; they load offline, the SAELens way:",
        "",
        "```python",
        "import sae_lens_dit  # registers the tide architecture and this release",
        "from sae_lens import SAE",
        "",
        f'sae = SAE.from_pretrained("tide-dit-tiny/{release}", "{saes[0][0]}")',
        "with sae.at_timestep(t):  # t: [rows], DDPM scale [0, 1000]",
        "    y_hat = sae(x)  # x: the MLP's input (hook_in), y_hat: its output (hook_out)"
        if transcoders
        else "    x_hat = sae(x)",
        "```",
        "",
        "Each `<hook>/<architecture>/` holds SAELens's files (`cfg.json` with the diffusion metadata,",
        "`sae_weights.safetensors`, `sparsity.safetensors`, `runner_cfg.json`) and the held-out report `eval.json`.",
        "",
        "## How they were made",
        "",
        f"Harvest settings, the same for every SAE: {harvest['num_images']} images, "
        f"{harvest['num_inference_steps']} DDIM steps, CFG branch {harvest['branch']}, the pipeline's default "
        f"guidance ({guidance}), 1/16 of the tokens per image and step, seed "
        f"{harvest['seed']}; then {common['training rows']:,} training rows per SAE (d_sae {common['d_sae']}, "
        f"k {common['k']}, batch {common['batch']}, Adam at each architecture's learning rate "
        f"({', '.join(f'{a} {learning_rate(c, a)}' for a, c in lrs.items())}), the runner's recipe: b_dec "
        f"{common['b_dec']}, unit-norm decoder start {common['unit decoder']}, dead window "
        f"{common['dead window']} steps, seed {common['seed']}), on CPU:",
        "",
        "```",
        *args.command,
        f"python scripts/bundle_tiny_saes.py --name {args.name}"
        + (f" --variant {args.variant}" if args.variant else "")
        + f" --runs {' '.join(map(str, args.runs))} "
        "--command '<the commands above>'" + (" --note '<the notes at the end>'" if args.note else ""),
        "```",
    ]
    if len(hook_sets) > 1 or any(per_sae[i] != common for i in per_sae):
        lines += [
            "",
            "Harvests of these settings sample the same images, timesteps and tokens whatever hooks they record (a",
            "batch's seed depends on the harvest seed and batch index only), so the harvests above differ only in",
            "their columns. Per SAE, the hooks its harvest recorded and where its run differs from the settings above:",
            "",
            "| sae id | harvest records | differs from the settings above |",
            "|---|---|---|",
        ]
        for sae_id, cfg, _ in saes:
            hooks = ", ".join(f"`{h}`" for h in cfg["metadata"]["harvest"]["hook_names"])
            own = ", ".join(f"{key} {value}" for key, value in per_sae[sae_id].items() if value != common.get(key))
            lines.append(f"| `{sae_id}` | {hooks} | {own or '-'} |")
    lines += [
        "",
        f"## Held-out reconstruction ({eval_images} new images): explained variance by timestep bucket"
        + (" (of the MLP output, reconstructed from its input)" if transcoders else ""),
        "",
        "| sae id | mean | "
        + " | ".join(f"t {b['t_low']:.0f}-{b['t_high']:.0f}" for b in saes[0][2]["buckets"])
        + " | L0 | dead | dense |",
        "|---|---|" + "---|" * len(saes[0][2]["buckets"]) + "---|---|---|",
    ]
    for sae_id, _, report in saes:
        buckets = " | ".join(f"{b['explained_variance']:.4f}" for b in report["buckets"])
        usage = report["latent_usage"]
        lines.append(
            f"| `{sae_id}` | {report['mean_explained_variance']:.4f} | {buckets} | {mean_l0(report):.1f} | "
            f"{usage['dead_fraction']:.3f} | {usage['dense_fraction']:.3f} |"
        )
    rows = saes[0][2]["latent_usage"]["rows"]
    lines += [
        "",
        f"Dead: share of latents that never fire on the {rows:,} held-out rows (every timestep, both CFG branches);",
        f"dense: share firing on more than {DENSE_THRESHOLD:.0%} of them.",
    ]
    lines += [
        "",
        "Denoising loss recovered (spliced in, no error term, against mean-ablation; 128 held-out images noised into",
        "each timestep bucket, both CFG branches) is in `eval_protocol.md`, made by `sae-lens-dit eval --release",
        "<release> --num-samples 0 --no-factors`; its mean per SAE is `denoising_loss_recovered` in `releases.yaml`.",
    ]
    sizes = {sae_id: sum(f.stat().st_size for f in (out / sae_id).iterdir() if f.is_file()) for sae_id, _, _ in saes}
    kinds = Counter((cfg["architecture"], cfg["d_sae"], round(sizes[sae_id] / 1e6, 1)) for sae_id, cfg, _ in saes)
    lines += [
        "",
        "## Size",
        "",
        f"The {len(saes)} SAEs' files take {sum(sizes.values()) / 1e6:.1f} MB: "
        + ", ".join(f"{n} x {arch} d_sae {d} ({mb} MB each)" for (arch, d, mb), n in sorted(kinds.items()))
        + ".",
        *(["", "## Notes"] if args.note else []),
        *(line for note in args.note for line in ("", note)),
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))
    for sae_id, cfg, report in saes:
        hook = cfg["metadata"]["hook_name"]
        print(
            f"    - {{id: {sae_id}, path: {sae_id}, hook: {hook},\n       architecture: {cfg['architecture']}, "
            f"variance_explained: {report['mean_explained_variance']:.4f}, l0: {mean_l0(report):.2f}, "
            f"dead_fraction: {report['latent_usage']['dead_fraction']:.4f}, "
            f"dense_fraction: {report['latent_usage']['dense_fraction']:.4f}, "
            "denoising_loss_recovered: null}  # then: sae-lens-dit eval (see the card)"
        )


if __name__ == "__main__":
    main()
