"""`output_dirs`: the ownership marker, claims, and paths confined to their folder (issue 18)."""

from __future__ import annotations

import os

import pytest

from sae_lens_dit.guards.output_dirs import MARKER, ForeignFolderError, check_claimable, claim, confined, owner

# -- the marker ------------------------------------------------------------------------------------


def test_claim_writes_the_marker_first_and_refuses_foreign_or_other_kind_folders(tmp_path):
    new = claim(tmp_path / "new", "harvest")
    assert owner(new) == "harvest" and os.listdir(new) == [MARKER]
    assert claim(new, "harvest") == new  # a rerun of the same kind
    with pytest.raises(ForeignFolderError, match="belongs to `sae-lens-dit harvest`"):
        claim(new, "train")
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(ForeignFolderError, match=r"did not write \(notes.txt\)"):
        claim(user, "eval")
    assert os.listdir(user) == ["notes.txt"]
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "runner_cfg.json").write_text("{}")
    assert check_claimable(legacy, "train", legacy=("runner_cfg.json",)) is True
    holder = tmp_path / "holder"  # a folder holding only our own sub-folders (e.g. activations/) is free
    claim(holder / "activations", "harvest")
    assert claim(holder, "train") == holder


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/passwd", "C:\\x", "", ".."])
def test_confined_refuses_paths_outside_the_folder(tmp_path, rel):
    with pytest.raises(ValueError, match="refusing to touch it"):
        confined(tmp_path / "site", rel)


def test_confined_refuses_a_link_that_leads_outside(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "site" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ValueError, match="resolves outside"):
        confined(tmp_path / "site", "link/file.txt")
    assert confined(tmp_path / "site", "a/b.png") == tmp_path / "site" / "a" / "b.png"
