"""`sae-lens-dit releases` lists what `SAE.from_pretrained` can load."""

from __future__ import annotations

import yaml

import sae_lens_dit
from sae_lens_dit.cli import main


def test_releases_lists_every_release_and_sae_id(capsys):
    assert main(["releases"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for release_id, sae_ids in sae_lens_dit.list_releases().items():
        for sae_id in sae_ids:
            assert any(line.startswith(release_id + " ") and f" {sae_id} " in line for line in lines), sae_id
    assert any("tide-dit-xl/256" in line and "not yet published" in line for line in lines)
    assert any("tide-dit-tiny/digits" in line and "bundled (saes/tide-dit-tiny-digits)" in line for line in lines)


def test_releases_shows_one_release_in_full(capsys):
    assert main(["releases", "--release", "tide-dit-xl/256"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)["tide-dit-xl/256"]
    assert shown["repo_id"] == "sae-lens-dit/tide-dit-xl-2-256" and shown["status"] == "not yet published"
    assert shown["training_command"].startswith("sae-lens-dit train --preset dit-xl-2-256")


def test_unknown_release_lists_the_known_ones(capsys):
    assert main(["releases", "--release", "tide-dit-xl/512"]) == 2
    assert "registered releases are" in capsys.readouterr().err
