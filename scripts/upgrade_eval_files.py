"""Rewrite run folders' `eval.json` from the runner's layout of before 0.2 into the one layout of
`sae_lens_dit.analysis.evals.results` (what `sae-lens-dit train` and `sae-lens-dit eval` now write).

Why: the bundled releases were trained before the layouts were unified; readers accept both, but a
folder should hold one format. The settings and naming keys the old layout lacked are taken from the
folder's own `runner_cfg.json` and `cfg.json`, as the runner now writes them. Folders already in the
new layout are left alone.

    python scripts/upgrade_eval_files.py pretrained/saes     # every run folder below
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sae_lens.constants import RUNNER_CFG_FILENAME

from sae_lens_dit.analysis.evals import read_eval_file
from sae_lens_dit.conventions import DEFAULT_BUCKET_EDGES, EVAL_JSON, SAE_CONFIG_FILENAME
from sae_lens_dit.training.runner import HELDOUT_SEED_OFFSET


def upgrade(folder: Path) -> bool:
    """Rewrite `folder/eval.json` in the new layout; False when it already was."""
    data = json.loads((folder / EVAL_JSON).read_text())
    if "reports" in data:
        return False
    runner = json.loads((folder / RUNNER_CFG_FILENAME).read_text())
    sae_cfg = json.loads((folder / SAE_CONFIG_FILENAME).read_text())
    report = read_eval_file(folder).single_report()
    head = {"sae": report.pop("sae"), "model": runner["model"], "hook": report.pop("hook")}
    head |= {"architecture": sae_cfg["architecture"], "d_sae": sae_cfg["d_sae"]}
    trained_as = runner["sae"].get("architecture")
    if trained_as and trained_as != sae_cfg["architecture"]:
        head["trained_as"] = trained_as
    report.pop("architecture", None)
    harvest = runner["harvest"]
    settings = {
        "eval_images": runner["eval_images"],
        "harvest_seed": harvest.get("seed", 0) + HELDOUT_SEED_OFFSET,
        "num_inference_steps": harvest["num_inference_steps"],
        "branch": harvest["branch"],
        "edges": list(DEFAULT_BUCKET_EDGES),
    }
    text = json.dumps({"config": settings, "reports": [{**head, "heldout_images": runner["eval_images"], **report}]})
    (folder / EVAL_JSON).write_text(json.dumps(json.loads(text), indent=2))
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path, help="run folders, or folders holding run folders")
    args = parser.parse_args()
    for root in args.roots:
        for path in sorted(root.rglob(EVAL_JSON)):
            if (path.parent / RUNNER_CFG_FILENAME).is_file():
                print(("upgraded " if upgrade(path.parent) else "already new: ") + str(path))


if __name__ == "__main__":
    main()
