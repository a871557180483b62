"""Old flat import paths (before the sub-packages) still work, warn once, and give the very same module.

Reference: `importlib.import_module` of the new path; an alias must return that same object (so a
monkeypatch through either path is seen by both) and warn with a DeprecationWarning naming the new path.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from sae_lens_dit._moved import MOVED


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_old_path_is_the_new_module(old, new):
    module = importlib.import_module(f"sae_lens_dit.{old}")
    assert module is importlib.import_module(f"sae_lens_dit.{new}")
    assert module.__name__ == f"sae_lens_dit.{new}" and module.__spec__.name == f"sae_lens_dit.{new}"


@pytest.mark.slow
def test_old_paths_warn_with_the_new_one_in_a_fresh_interpreter():
    code = (
        "import warnings, sae_lens_dit\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from sae_lens_dit.runner import preset_config\n"
        "print([str(w.message) for w in caught if w.category is DeprecationWarning])\n"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300)
    assert "`sae_lens_dit.runner` moved to `sae_lens_dit.training.runner`" in out.stdout, out.stderr[-2000:]


def test_readme_names_resolve_through_old_and_new_paths():
    from sae_lens_dit.analysis.evals import evaluate
    from sae_lens_dit.training.runner import preset_config

    old_runner = importlib.import_module("sae_lens_dit.runner")
    old_evals = importlib.import_module("sae_lens_dit.evals")
    assert old_runner.preset_config is preset_config and old_evals.evaluate is evaluate
