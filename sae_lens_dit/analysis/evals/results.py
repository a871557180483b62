"""The one layout of `eval.json` (and its Markdown twin `eval.md`), written by the training runner
and by `sae-lens-dit eval` alike, and read back by the model card, the bundling script and tests.

Why one module: the runner and the `eval` command used to write two different layouts under the
same file name, so a reader had to know which command had written a folder. Both now write through
`write_eval_files`; `read_eval_file` also reads the runner's layout of before 0.2 (one report's
keys at the top level), so folders written by older runs still publish.

The layout::

    {
      "config": {...},      # the settings the reports were measured with: EvalConfig's fields for
                            # `sae-lens-dit eval`, the held-out settings for the runner
      "reports": [          # one per SAE, in the order evaluated
        {
          "sae": "<hook>/<architecture>",  # conventions.sae_display_name, the SAE's id in a release
          "model": ..., "hook": ..., "architecture": ..., "d_sae": ...,
          ...                              # the measured sections
        }
      ]
    }

Sections of an `evaluate` report: heldout_images, seed, reconstruction and denoising (per bucket and
CFG branch), timestep_profile, latent_usage, latent_stats, and generation and interpretability when
measured. Sections of a runner report: heldout_images, buckets (`BucketMetrics` per timestep bucket
on held-out harvested rows), mean_explained_variance, latent_usage, init (the data-dependent start).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from sae_lens_dit.conventions import EVAL_JSON, EVAL_MD, sae_id

REPORT_KEYS = ("sae", "model", "hook", "architecture", "d_sae")
"""Keys every report starts with: which SAE it is about."""


@dataclass(frozen=True)
class EvalResults:
    """The contents of an `eval.json`: the settings and one report per SAE."""

    config: dict[str, Any]
    reports: list[dict[str, Any]]

    def single_report(self) -> dict[str, Any]:
        """The one report of a file that holds exactly one (a training run's)."""
        if len(self.reports) != 1:
            names = [r.get("sae") for r in self.reports]
            raise ValueError(f"expected one SAE's report, found {len(self.reports)} ({names}); pick one by its 'sae'")
        return self.reports[0]


def write_eval_files(
    folder: str | Path, reports: Sequence[Mapping[str, Any]], config: Any, markdown: str
) -> tuple[Path, Path]:
    """Write `folder/eval.json` (the layout in this module's docstring) and `folder/eval.md` (`markdown`);
    returns their paths. `config` is a dataclass (e.g. `EvalConfig`) or a mapping of settings.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> report = {"sae": "blocks.1.hook_resid_post/tide", "model": "digits", "hook": "blocks.1.hook_resid_post",
    ...           "architecture": "tide", "d_sae": 1536, "mean_explained_variance": 0.97}
    >>> _ = write_eval_files(folder, [report], {"eval_images": 64}, "| table |")
    >>> read_eval_file(folder).single_report()["mean_explained_variance"]
    0.97
    """
    for i, report in enumerate(reports):
        missing = [key for key in REPORT_KEYS if key not in report]
        if missing:
            raise ValueError(f"reports[{i}] lacks {missing}: every report names its SAE by {list(REPORT_KEYS)}")
    settings = asdict(config) if is_dataclass(config) and not isinstance(config, type) else dict(config)
    folder = Path(folder)
    json_path, md_path = folder / EVAL_JSON, folder / EVAL_MD
    json_path.write_text(json.dumps({"config": settings, "reports": [dict(r) for r in reports]}, indent=1))
    md_path.write_text(markdown + "\n")
    return json_path, md_path


def read_eval_file(path: str | Path) -> EvalResults:
    """An `eval.json` (or the folder holding it) in the layout of `write_eval_files`, or in the runner's
    layout of before 0.2 (read as one report with an empty config)."""
    path = Path(path)
    if path.is_dir():
        path = path / EVAL_JSON
    data = json.loads(path.read_text())
    if "reports" in data:
        return EvalResults(dict(data.get("config") or {}), list(data["reports"]))
    if "buckets" in data and "hook_name" in data:  # the runner's layout before 0.2
        legacy = dict(data)
        hook = legacy.pop("hook_name")
        head = {"sae": sae_id(hook, legacy.get("architecture")), "hook": hook}
        return EvalResults({}, [{**head, **legacy}])
    raise ValueError(
        f"{path} is not an evaluation file of sae-lens-dit (no 'reports'); write it with write_eval_files "
        "(sae-lens-dit train or sae-lens-dit eval)"
    )
