"""Copy the runner outputs of one tiny-backbone training into `pretrained/saes/tide-dit-tiny-<name>/`.

    OMP_NUM_THREADS=1 sae-lens-dit train --preset dit-tiny-<name> --architecture tide topk \\
        --hook blocks.1.hook_resid_post blocks.3.hook_resid_post --output-dir /tmp/rel/<name>
    python scripts/bundle_tiny_saes.py --name <name> --runs /tmp/rel/<name> --command "<the train command>"

(`--runs` and `--command` take several, when architectures were trained by separate commands.)

Each `<runs>/<architecture>-<hook>/` becomes `<hook>/<architecture>/` with SAELens's files
(`cfg.json`, `sae_weights.safetensors`, `sparsity.safetensors`, `runner_cfg.json`) and the
runner's `eval.json`. The script writes the folder's README.md (command, settings, held-out metrics
per timestep bucket) and prints the `saes:` lines of its `releases.yaml` entry.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

FILES = ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "runner_cfg.json", "eval.json")
ROOT = Path(__file__).resolve().parents[1] / "pretrained" / "saes"


from sae_lens_dit.evals import DENSE_THRESHOLD  # noqa: E402  (the one definition of a dense latent)


def learning_rate(runner_cfg: dict, architecture: str) -> float:
    """The run's learning rate: its `lr`, or the architecture's default the runner used for None."""
    from sae_lens_dit.runner import DEFAULT_LR, FALLBACK_LR

    return runner_cfg["lr"] if runner_cfg["lr"] is not None else DEFAULT_LR.get(architecture, FALLBACK_LR)


def mean_l0(report: dict) -> float:
    return sum(b["l0"] * b["rows"] for b in report["buckets"]) / sum(b["rows"] for b in report["buckets"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="Bundled backbone name (digits, shapes)")
    parser.add_argument("--runs", required=True, type=Path, nargs="+", help="The train commands' --output-dir(s)")
    parser.add_argument("--command", required=True, nargs="+", help="The exact train command(s), for the card")
    args = parser.parse_args()
    out = ROOT / f"tide-dit-tiny-{args.name}"
    saes = []
    for run in sorted(p for runs in args.runs for p in runs.iterdir() if (p / "eval.json").is_file()):
        cfg, report = json.loads((run / "cfg.json").read_text()), json.loads((run / "eval.json").read_text())
        sae_id = f"{cfg['metadata']['hook_name']}/{cfg['architecture']}"
        (out / sae_id).mkdir(parents=True, exist_ok=True)
        for name in FILES:
            shutil.copy2(run / name, out / sae_id / name)
        saes.append((sae_id, cfg, report))
    harvest, runner = saes[0][1]["metadata"]["harvest"], json.loads((out / saes[0][0] / "runner_cfg.json").read_text())
    lrs = {cfg["architecture"]: json.loads((out / sae_id / "runner_cfg.json").read_text()) for sae_id, cfg, _ in saes}
    guidance = json.loads((ROOT.parent / f"tiny-dit-{args.name}" / "sampling.json").read_text())["guidance_scale"]
    lines = [
        f"# tide-dit-tiny/{args.name}",
        "",
        f"TIDE SAEs and TopK baselines on the bundled {args.name} DiT (`pretrained/tiny-dit-{args.name}`), bundled in",
        "the wheel; they load offline, the SAELens way:",
        "",
        "```python",
        "import sae_lens_dit  # registers the tide architecture and this release",
        "from sae_lens import SAE",
        "",
        f'sae = SAE.from_pretrained("tide-dit-tiny/{args.name}", "{saes[0][0]}")',
        "with sae.at_timestep(t):  # t: [rows], DDPM scale [0, 1000]",
        "    x_hat = sae(x)",
        "```",
        "",
        "Each `<hook>/<architecture>/` holds SAELens's files (`cfg.json` with the diffusion metadata,",
        "`sae_weights.safetensors`, `sparsity.safetensors`, `runner_cfg.json`) and the held-out report `eval.json`.",
        "",
        "## How they were made",
        "",
        f"Harvest, the same for every SAE: {harvest['num_images']} images, {harvest['num_inference_steps']} DDIM "
        f"steps, CFG branch {harvest['branch']}, the pipeline's default guidance ({guidance}), 1/16 of the tokens "
        f"per image and step, seed "
        f"{harvest['seed']}; then {runner['training_tokens']:,} training rows per SAE (d_sae {saes[0][1]['d_sae']}, "
        f"k {saes[0][1]['k']}, batch {runner['batch_size']}, Adam at each architecture's learning rate "
        f"({', '.join(f'{a} {learning_rate(c, a)}' for a, c in lrs.items())}), the runner's recipe: b_dec "
        f"{runner['b_dec_init']}, unit-norm decoder start {runner['unit_decoder_init']}, dead window "
        f"{runner['dead_feature_window']} steps), on CPU:",
        "",
        "```",
        *args.command,
        f"python scripts/bundle_tiny_saes.py --name {args.name} --runs {' '.join(map(str, args.runs))} "
        "--command '<the commands above>'",
        "```",
        "",
        f"## Held-out reconstruction ({runner['eval_images']} new images): explained variance by timestep bucket",
        "",
        "| sae id | mean | "
        + " | ".join(f"t {b['t_low']:.0f}-{b['t_high']:.0f}" for b in saes[0][2]["buckets"])
        + " | L0 | dead | dense |",
        "|---|---|" + "---|" * len(saes[0][2]["buckets"]) + "---|---|---|",
    ]
    for sae_id, _, report in saes:
        buckets = " | ".join(f"{b['explained_variance']:.4f}" for b in report["buckets"])
        usage = report["latent_usage"]
        lines.append(f"| `{sae_id}` | {report['mean_explained_variance']:.4f} | {buckets} | {mean_l0(report):.1f} | "
                     f"{usage['dead_fraction']:.3f} | {usage['dense_fraction']:.3f} |")  # fmt: skip
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
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))
    for sae_id, cfg, report in saes:
        hook = cfg["metadata"]["hook_name"]
        print(f"    - {{id: {sae_id}, path: {sae_id}, hook: {hook},\n       architecture: {cfg['architecture']}, "
              f"variance_explained: {report['mean_explained_variance']:.4f}, l0: {mean_l0(report):.1f}, "
              f"dead_fraction: {report['latent_usage']['dead_fraction']:.4f}, "
              f"dense_fraction: {report['latent_usage']['dense_fraction']:.4f}, "
              "denoising_loss_recovered: null}  # then: sae-lens-dit eval (see the card)")  # fmt: skip


if __name__ == "__main__":
    main()
