"""Publish runner outputs as a Hub repo in SAELens's layout, with a diffusion-aware model card.

The repo layout is exactly what SAELens's `upload_saes_to_huggingface` writes: one folder per
SAE id holding `cfg.json`, `sae_weights.safetensors`, `sparsity.safetensors` and `runner_cfg.json`,
so `SAE.from_pretrained(repo_id, sae_id)` loads it with SAELens alone (after `import sae_lens_dit`,
which registers the `tide` architecture). On top of that, `README.md` carries what a diffusion
dictionary needs (backbone, hook, timestep convention, CFG branch, harvest settings, per-timestep
metrics from `eval.json`, a usage snippet), and `release.yaml` holds the `releases.yaml` entry to
add so the repo loads by release id too. The SAE id of a runner folder is `<hook>/<architecture>`.

    write_publish_folder([run_dir], "owner/name", "out/")      # what --dry-run writes
    publish([run_dir], "owner/name", "out/")                    # the same, then uploads it
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import HfApi
from sae_lens.constants import RUNNER_CFG_FILENAME, SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME
from sae_lens.training.upload_saes_to_huggingface import upload_saes_to_huggingface

from sae_lens_dit.analysis.evals.results import read_eval_file
from sae_lens_dit.conventions import CARD_FILENAME, EVAL_JSON, RELEASE_ENTRY_FILENAME, TIDE_ARCHITECTURE
from sae_lens_dit.conventions import sae_id as make_sae_id
from sae_lens_dit.hub.release_schema import RELEASE_ID, parse_release
from sae_lens_dit.saes.loading import validated_disk_loader

PUBLISHED_FILES = (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME, RUNNER_CFG_FILENAME)
"""The files SAELens's `upload_saes_to_huggingface` uploads per SAE."""
SHARED_METADATA = ("model_name", "model_class_name", "adapter", "timestep_convention", "harvest")
"""cfg.json metadata that every SAE of one release must share."""


@dataclass(frozen=True)
class RunnerOutput:
    """One runner output folder, read and validated."""

    folder: Path
    cfg: dict[str, Any]
    eval: dict[str, Any]

    @property
    def metadata(self) -> dict[str, Any]:
        return self.cfg["metadata"]

    @property
    def sae_id(self) -> str:
        return make_sae_id(self.metadata["hook_name"], self.cfg["architecture"])

    def mean_l0(self) -> float:
        buckets = self.eval["buckets"]
        return sum(b["l0"] * b["rows"] for b in buckets) / sum(b["rows"] for b in buckets)


def read_runner_output(folder: str | Path) -> RunnerOutput:
    """A runner output folder whose SAE loads as saved, whose cfg.json carries the diffusion
    metadata and which holds the runner's eval.json."""
    folder = Path(folder)
    validated_disk_loader(folder)
    cfg = json.loads((folder / SAE_CFG_FILENAME).read_text())
    missing = [key for key in ("hook_name", *SHARED_METADATA) if key not in (cfg.get("metadata") or {})]
    if not (folder / EVAL_JSON).is_file():
        missing.append(EVAL_JSON)
    if missing:
        raise ValueError(
            f"{folder}: lacks {missing}; publish folders written by DiTSAETrainingRunner (sae-lens-dit train), "
            f"which records the metadata in cfg.json and the held-out metrics in {EVAL_JSON}"
        )
    return RunnerOutput(folder, cfg, read_eval_file(folder / EVAL_JSON).single_report())


def default_release_id(model_name: str, repo_id: str) -> str:
    """`tide-<backbone>/<repo name>`, the backbone slug made from the model name's last path part."""
    slug = "".join(c if c.isalnum() else "-" for c in model_name.rsplit("/", 1)[-1].lower()).strip("-")
    return f"tide-{slug}/{repo_id.split('/')[-1]}"


def write_publish_folder(
    sae_dirs: list[str | Path], repo_id: str, output_dir: str | Path, release_id: str | None = None
) -> Path:
    """Write the repo folder: one SAELens folder per SAE, the model card and `release.yaml` (whose
    entry is "not yet published" until `publish` pins it to the uploaded commit)."""
    runs = [read_runner_output(folder) for folder in sae_dirs]
    _check_one_release(runs)
    release_id = release_id or default_release_id(runs[0].metadata["model_name"], repo_id)
    if not RELEASE_ID.match(release_id):
        raise ValueError(f"--release {release_id!r}: expected tide-<backbone>/<variant>, e.g. tide-dit-xl/256")
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; publish into a new --output-dir")
    for run in runs:
        target = out / run.sae_id
        target.mkdir(parents=True)
        for name in PUBLISHED_FILES:
            if (run.folder / name).is_file():
                shutil.copy2(run.folder / name, target / name)
    write_card_and_entry(runs, repo_id, release_id, None, out)
    return out


def write_card_and_entry(
    runs: list[RunnerOutput], repo_id: str, release_id: str, revision: str | None, out: Path
) -> dict[str, Any]:
    """(Re)write README.md and release.yaml for `revision` (None: not yet published)."""
    entry = release_entry(runs, repo_id, release_id, revision, out)
    parse_release(release_id, entry, out)  # an entry the registry would refuse is a bug here, not later
    entry_text = yaml.safe_dump({release_id: entry}, sort_keys=False, width=1000)
    (out / RELEASE_ENTRY_FILENAME).write_text(entry_text)
    (out / CARD_FILENAME).write_text(model_card(runs, repo_id, release_id, entry_text))
    return entry


def _check_one_release(runs: list[RunnerOutput]) -> None:
    if not runs:
        raise ValueError("publish needs at least one --sae folder")
    ids = [run.sae_id for run in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"two --sae folders share an SAE id (<hook>/<architecture>): {ids}; publish them separately")
    for key in SHARED_METADATA:
        values = {json.dumps(run.metadata[key], sort_keys=True) for run in runs}
        if len(values) > 1:
            raise ValueError(
                f"the --sae folders differ in metadata {key!r} ({sorted(values)}); one release holds SAEs of one "
                f"backbone and one harvest: publish them as separate releases"
            )


def release_entry(
    runs: list[RunnerOutput], repo_id: str, release_id: str, revision: str | None, output_dir: Path
) -> dict[str, Any]:
    """The `releases.yaml` entry for the folder."""
    meta = runs[0].metadata
    publish_command = shlex.join(
        [
            "sae-lens-dit",
            "publish",
            "--sae",
            *(str(r.folder) for r in runs),
            "--repo-id",
            repo_id,
            "--release",
            release_id,
            "--output-dir",
            str(output_dir),
        ]
    )
    return {
        "status": "published" if revision else "not yet published",
        "source": {"hub": {"repo_id": repo_id, "revision": revision}},
        "model": meta["model_name"],
        "backbone": f"{meta['model_name']} ({meta['model_class_name']})",
        "adapter": meta["adapter"],
        "timestep_convention": meta["timestep_convention"],
        "cfg_branch": meta["harvest"]["branch"],
        "harvest": meta["harvest"],
        "saes": [
            {
                "id": run.sae_id,
                "path": run.sae_id,
                "hook": run.metadata["hook_name"],
                "architecture": run.cfg["architecture"],
                "variance_explained": round(run.eval["mean_explained_variance"], 4),
                "l0": round(run.mean_l0(), 2),
                "denoising_loss_recovered": None,
            }
            for run in runs
        ],
        "links": {"repo": f"https://huggingface.co/{repo_id}"},
        "training_command": "; ".join(f"sae-lens-dit train --config {r.sae_id}/{RUNNER_CFG_FILENAME}" for r in runs),
        "publish_command": publish_command,
    }


def model_card(runs: list[RunnerOutput], repo_id: str, release_id: str, entry_text: str) -> str:
    """README.md with the diffusion metadata, metrics, usage and the registry entry."""
    meta, harvest = runs[0].metadata, runs[0].metadata["harvest"]
    lines = [
        "---",
        "library_name: saelens",
        "tags: [saelens, sae-lens-dit, sparse-autoencoder, diffusion-transformer, tide]",
        "---",
        "",
        f"# {release_id}: SAEs for {meta['model_name']}",
        "",
        "Sparse autoencoders on diffusion-transformer activations, trained with sae-lens-dit "
        "(TIDE: timestep-aware SAEs, arXiv 2503.07050).",
        "",
        "| | |",
        "|---|---|",
        f"| backbone | {meta['model_name']} ({meta['model_class_name']}), adapter `{meta['adapter']}` |",
        f"| timestep convention | {meta['timestep_convention']} |",
        f"| CFG branch | {harvest['branch']} |",
        f"| harvest | {_harvest_summary(harvest)} |",
        "",
        "## SAEs",
        "",
        "| sae id | hook | architecture | d_in | d_sae | k | explained variance | L0 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        ev, l0, cfg = run.eval["mean_explained_variance"], run.mean_l0(), run.cfg
        lines.append(
            f"| `{run.sae_id}` | `{run.metadata['hook_name']}` | {cfg['architecture']} | {cfg['d_in']} | "
            f"{cfg['d_sae']} | {cfg.get('k', '-')} | {ev:.4f} | {l0:.2f} |"
        )
    lines += ["", "Held-out reconstruction per timestep bucket (new seeds, same harvest settings):", ""]
    for run in runs:
        lines += [
            f"### {run.sae_id}",
            "",
            "| t bucket | rows | explained variance | MSE | cosine | L0 |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {b['t_low']:.0f}-{b['t_high']:.0f} | {b['rows']} | {b['explained_variance']:.4f} | {b['mse']:.3e} "
            f"| {b['cosine']:.4f} | {b['l0']:.1f} |"
            for b in run.eval["buckets"]
        ]
        lines.append("")
    lines += [
        "Denoising loss recovered with the SAE spliced in: not measured yet.",
        "",
        "## Usage",
        "",
        "```python",
        "import sae_lens_dit  # registers the tide architecture with SAELens",
        "from sae_lens import SAE",
        "",
        f'sae = SAE.from_pretrained("{repo_id}", "{runs[0].sae_id}")',
        *_usage(runs[0].cfg["architecture"]),
        "```",
        "",
        "To splice it into the backbone: `with HookedDiT(pipe.transformer).saes([sae]): pipe(...)`.",
        "",
        "## Registry entry",
        "",
        f"Add to `pretrained/releases.yaml` of sae-lens-dit to load it as `SAE.from_pretrained({release_id!r}, ...)`:",
        "",
        "```yaml",
        entry_text.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _usage(architecture: str) -> list[str]:
    if architecture == TIDE_ARCHITECTURE:
        return [
            "z = sae.encode(x, timestep=t)  # x: [rows, d_in] activations, t: [rows] in the convention above",
            "with sae.at_timestep(t):  # for code that calls sae(x)",
            "    x_hat = sae(x)",
        ]
    return ["x_hat = sae(x)  # x: [rows, d_in] activations"]


def _harvest_summary(harvest: dict[str, Any]) -> str:
    tokens = harvest.get("tokens_per_image")
    return (
        f"{harvest['num_images']} images, {harvest['num_inference_steps']} steps, guidance "
        f"{harvest.get('guidance_scale') or 'pipeline default'}, steps kept: {harvest.get('keep_timesteps') or 'all'}, "
        f"tokens per image and step: {tokens or '1/16 of the image tokens'}, seed {harvest['seed']}"
    )


def publish(
    sae_dirs: list[str | Path],
    repo_id: str,
    output_dir: str | Path,
    release_id: str | None = None,
    dry_run: bool = False,
) -> tuple[Path, str | None]:
    """Write the repo folder and, unless `dry_run`, upload the SAEs with SAELens's
    `upload_saes_to_huggingface`, pin the entry to the commit that holds them and upload the card.
    Returns (folder, pinned commit or None)."""
    out = write_publish_folder(sae_dirs, repo_id, output_dir, release_id)
    if dry_run:
        return out, None
    runs = [read_runner_output(folder) for folder in sae_dirs]
    release_id = next(iter(yaml.safe_load((out / RELEASE_ENTRY_FILENAME).read_text())))
    upload_saes_to_huggingface(
        {run.sae_id: out / run.sae_id for run in runs},
        hf_repo_id=repo_id,
        show_progress=False,
        add_default_readme=False,
    )
    api = HfApi()
    revision = api.repo_info(repo_id).sha
    write_card_and_entry(runs, repo_id, release_id, revision, out)
    api.upload_file(
        path_or_fileobj=str(out / CARD_FILENAME),
        path_in_repo=CARD_FILENAME,
        repo_id=repo_id,
        commit_message=f"Model card for {release_id}",
    )
    return out, revision
