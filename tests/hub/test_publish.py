"""`sae-lens-dit publish`: SAELens's upload layout, a diffusion model card and the registry entry;
the upload goes to a local stand-in for the Hub (no network)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from huggingface_hub import HfApi
from sae_lens.training import upload_saes_to_huggingface as sae_lens_upload

from sae_lens_dit.analysis.evals import read_eval_file
from sae_lens_dit.cli import main
from sae_lens_dit.hub.releases import parse_release
from sae_lens_dit.resources import pretrained_dir
from sae_lens_dit.training.runner import preset_config

BUNDLED = pretrained_dir() / "saes" / "tide-dit-tiny-digits"
SAE_FILES = {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "runner_cfg.json"}
REPO = "someone/tide-digits"


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    """Two runner output folders (the bundled digits SAEs of blocks.3, plus the runner config)."""
    folders = []
    for architecture in ("tide", "topk"):
        folder = tmp_path / "runs" / f"{architecture}-blocks.3.hook_resid_post"
        shutil.copytree(BUNDLED / "blocks.3.hook_resid_post" / architecture, folder)
        cfg = preset_config("dit-tiny-digits", output_dir=str(folder), sae={"architecture": architecture})
        (folder / "runner_cfg.json").write_text(json.dumps(cfg.to_dict()))
        folders.append(folder)
    return folders


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_dry_run_writes_the_upload_layout_card_and_entry(runs, tmp_path, capsys):
    out = tmp_path / "hub"
    assert main(["publish", "--sae", *map(str, runs), "--repo-id", REPO, "--dry-run", "--output-dir", str(out)]) == 0
    ids = ["blocks.3.hook_resid_post/tide", "blocks.3.hook_resid_post/topk"]
    assert _files(out) == {"README.md", "release.yaml"} | {f"{i}/{name}" for i in ids for name in SAE_FILES}
    for run, sae_id in zip(runs, ids, strict=True):
        for name in SAE_FILES:
            assert (out / sae_id / name).read_bytes() == (run / name).read_bytes()

    entries = yaml.safe_load((out / "release.yaml").read_text())
    assert list(entries) == ["tide-digits/tide-digits"]  # tide-<model>/<repo name>
    entry = entries["tide-digits/tide-digits"]
    assert entry["status"] == "not yet published" and entry["source"] == {"hub": {"repo_id": REPO, "revision": None}}
    release = parse_release("tide-digits/tide-digits", entry, out)
    assert [s.id for s in release.saes] == ids
    printed = capsys.readouterr().out
    assert "dry run: nothing uploaded" in printed and (out / "release.yaml").read_text() in printed

    card = (out / "README.md").read_text()
    cfg = json.loads((runs[0] / "cfg.json").read_text())
    meta = cfg["metadata"]
    expected = [
        "library_name: saelens",
        "DiTTransformer2DModel",
        "adapter `dit`",
        meta["timestep_convention"],
        "| CFG branch | both |",
        "640 images, 50 steps",
        f'SAE.from_pretrained("{REPO}", "{ids[0]}")',
        "with sae.at_timestep(t):  # for code that calls sae(x)",
        "Denoising loss recovered with the SAE spliced in: not measured yet",
    ]
    for text in expected:
        assert text in card, text
    for run, sae_id in zip(runs, ids, strict=True):
        report = read_eval_file(run).single_report()
        assert f"### {sae_id}" in card
        assert f"{report['mean_explained_variance']:.4f}" in card
        for bucket in report["buckets"]:
            t_range = f"{bucket['t_low']:.0f}-{bucket['t_high']:.0f}"
            assert f"| {t_range} | {bucket['rows']} | {bucket['explained_variance']:.4f}" in card
    assert (out / "release.yaml").read_text().rstrip() in card


class StandInHub:
    """HfApi's upload methods on an existing, empty repo kept in a local folder; commit shas are
    hashes of the file list and commit count."""

    def __init__(self, root: Path):
        self.root, self.commits = root, []
        root.mkdir()
        self._commit()

    def _commit(self) -> str:
        sha = hashlib.sha1(json.dumps(sorted(_files(self.root))).encode() + bytes(len(self.commits))).hexdigest()
        self.commits.append(sha)
        return sha

    def install(self, monkeypatch) -> None:
        hub = self

        def repo_info(api, repo_id, **kwargs):
            return SimpleNamespace(sha=hub.commits[-1])

        def upload_folder(api, folder_path, path_in_repo, allow_patterns, **kwargs):
            for name in allow_patterns:
                if (Path(folder_path) / name).is_file():
                    (hub.root / path_in_repo).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(Path(folder_path) / name, hub.root / path_in_repo / name)
            return SimpleNamespace(oid=hub._commit())

        def upload_file(api, path_or_fileobj, path_in_repo, **kwargs):
            shutil.copy2(path_or_fileobj, hub.root / path_in_repo)
            return SimpleNamespace(oid=hub._commit())

        for name, method in (("repo_info", repo_info), ("upload_folder", upload_folder), ("upload_file", upload_file)):
            monkeypatch.setattr(HfApi, name, method)
        monkeypatch.setattr(sae_lens_upload, "create_repo", None)  # the repo exists: never called


def test_publish_uploads_through_saelens_and_pins_the_entry(runs, tmp_path, monkeypatch):
    hub = StandInHub(tmp_path / "stand-in")
    hub.install(monkeypatch)
    out = tmp_path / "hub"
    argv = ["publish", "--sae", *map(str, runs), "--repo-id", REPO, "--release", "tide-dit-tiny/digits-b3"]
    assert main([*argv, "--output-dir", str(out)]) == 0
    assert _files(hub.root) == _files(out) - {"release.yaml"}
    for name in _files(hub.root):
        assert (hub.root / name).read_bytes() == (out / name).read_bytes(), name
    entry = yaml.safe_load((out / "release.yaml").read_text())["tide-dit-tiny/digits-b3"]
    sae_commit = hub.commits[-2]  # the commit holding every SAE, before the card's
    assert entry["status"] == "published" and entry["source"]["hub"] == {"repo_id": REPO, "revision": sae_commit}
    assert f"revision: {sae_commit}" in (hub.root / "README.md").read_text()
    parse_release("tide-dit-tiny/digits-b3", entry, out)


def test_publish_refuses_what_it_cannot_describe(runs, tmp_path, capsys):
    base = ["publish", "--repo-id", REPO, "--dry-run"]
    assert main([*base, "--sae", str(runs[0]), str(runs[0]), "--output-dir", str(tmp_path / "a")]) == 2
    assert "share an SAE id" in capsys.readouterr().err
    (runs[1] / "eval.json").unlink()
    assert main([*base, "--sae", str(runs[1]), "--output-dir", str(tmp_path / "b")]) == 2
    assert "lacks ['eval.json']" in capsys.readouterr().err
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("")
    assert main([*base, "--sae", str(runs[0]), "--output-dir", str(tmp_path / "c")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([*base, "--sae", str(runs[0]), "--release", "digits", "--output-dir", str(tmp_path / "d")]) == 2
    assert "tide-<backbone>/<variant>" in capsys.readouterr().err
