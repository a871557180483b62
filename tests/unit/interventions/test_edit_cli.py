"""`sae-lens-dit edit` on the bundled digits backbone and SAE, with 2 denoising steps."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from sae_lens_dit.cli import main
from sae_lens_dit.interventions import LatentEdit, SteeringSpec

BASE = ["edit", "--release", "tide-dit-tiny/digits", "--class-labels", "1", "7", "--num-inference-steps", "2"]
HOOK = "blocks.3.hook_resid_post"


def test_edit_writes_grids_and_json(tmp_path):
    spec = SteeringSpec((LatentEdit(HOOK, (5, 9), "add", 32.0, steps=(1,)),)).save(tmp_path / "spec.yaml")
    assert main([*BASE, "--spec", str(spec), "--seed", "3", "--output-dir", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "edit.json").read_text())
    assert report["edited"][0]["steps"] == [1] and report["saes"][0]["architecture"] == "tide"
    assert SteeringSpec.from_dict(report["spec"]) == SteeringSpec.load(spec)
    before = np.asarray(Image.open(tmp_path / "out" / "before.png"))
    grid = np.asarray(Image.open(tmp_path / "out" / "edit.png"))
    assert grid.shape[0] == 2 * before.shape[0] and np.array_equal(grid[: before.shape[0]], before)
    assert report["mean_abs_pixel_change"] > 0


def test_edit_errors_are_clear(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main([*BASE, "--hook", HOOK, "--latent", "1536", "--output-dir", out]) == 2
    assert "latent index(es) [1536] out of range" in capsys.readouterr().err
    assert main([*BASE, "--hook", "blocks.7.hook_resid_post", "--latent", "1", "--output-dir", out]) == 2
    assert "has no SAE at ['blocks.7.hook_resid_post']" in capsys.readouterr().err
    assert main([*BASE, "--latent", "1", "--output-dir", out]) == 2
    assert "--latent needs --hook" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
