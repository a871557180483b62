"""Pretrained dictionaries end to end: the bundled releases from an installed wheel (not the
checkout), and a `publish --dry-run` folder loaded from a Hub cache by SAELens alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import constants
from sae_lens import SAE

from sae_lens_dit.analysis.evals import reconstruct
from sae_lens_dit.cli import main
from sae_lens_dit.resources import pretrained_dir
from sae_lens_dit.training.runner import DiTSAERunnerConfig, DiTSAETrainingRunner

REPO_ROOT = Path(__file__).resolve().parents[2]
X = torch.randn(40, 96, generator=torch.Generator().manual_seed(2))
T = torch.linspace(0, 999, 40)


def test_publish_dry_run_folder_loads_from_a_hub_cache_with_saelens(tiny_run_dict, tmp_path, monkeypatch):
    cfg = DiTSAERunnerConfig.from_dict(tiny_run_dict)
    trained = DiTSAETrainingRunner(cfg).run()
    out = tmp_path / "publish"
    argv = ["publish", "--sae", cfg.output_dir, "--repo-id", "someone/tiny", "--dry-run", "--output-dir", str(out)]
    assert main(argv) == 0

    sha = "c" * 40  # the folder as huggingface_hub caches a repo snapshot, offline
    repo = tmp_path / "hub" / "models--someone--tiny"
    shutil.copytree(out, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    loaded = SAE.from_pretrained("someone/tiny", "blocks.1.hook_resid_post/tide")  # SAELens's own loader
    for got, want in zip(reconstruct(loaded, X, T), reconstruct(trained, X, T), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


_LOAD_BUNDLED = """
import json, sys, warnings
import torch
import sae_lens_dit
from sae_lens import SAE
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
from sae_lens_dit.analysis.evals import reconstruct
x, t = torch.load(sys.argv[1])
outputs = {}
for release, sae_ids in sae_lens_dit.list_releases().items():
    if release.startswith("tide-dit-tiny/"):
        for sae_id in sae_ids:
            got = reconstruct(SAE.from_pretrained(release, sae_id), x, t)
            outputs[release + "|" + sae_id] = [v.detach().clone() for v in got]  # plain tensors
torch.save(outputs, sys.argv[2])
print(json.dumps({"file": sae_lens_dit.__file__, "releases": sae_lens_dit.list_releases(),
                  "saelens_kept": "gpt2-small-res-jb" in get_pretrained_saes_directory()}))
"""


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """The built wheel installed (not editable) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(REPO_ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp / "dist").glob("sae_lens_dit-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)], check=True, capture_output=True
    )
    return tmp / "site"


def _run_installed(site: Path, tmp_path: Path) -> tuple[dict, dict, str]:
    torch.save((X, T), tmp_path / "inputs.pt")
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-W", "always", "-c", _LOAD_BUNDLED, str(tmp_path / "inputs.pt"), str(tmp_path / "o.pt")]
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1]), torch.load(tmp_path / "o.pt"), done.stderr


@pytest.mark.slow
def test_installed_wheel_loads_the_bundled_releases_offline(installed_wheel, tmp_path):
    report, outputs, _ = _run_installed(installed_wheel, tmp_path)
    assert Path(report["file"]).resolve().is_relative_to(installed_wheel.resolve())
    shipped = yaml.safe_load((pretrained_dir() / "releases.yaml").read_text())
    assert report["releases"] == {rid: [s["id"] for s in entry["saes"]] for rid, entry in shipped.items()}
    bundled = {
        (rid, s["id"], entry["source"]["bundled"] + "/" + s["path"])
        for rid, entry in shipped.items()
        if "bundled" in entry["source"]
        for s in entry["saes"]
    }
    assert {f"{rid}|{sid}" for rid, sid, _ in bundled} == set(outputs) and len(outputs) == 24
    for release, sae_id, folder in bundled:  # the checkout's files, read by SAELens's own disk loader
        want = reconstruct(SAE.load_from_disk(str(pretrained_dir() / folder)), X, T)
        for got, expected in zip(outputs[f"{release}|{sae_id}"], want, strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.slow
def test_malformed_entry_in_the_installed_wheel_is_reported_at_import(installed_wheel, tmp_path):
    releases = installed_wheel / "sae_lens_dit" / "_data" / "pretrained" / "releases.yaml"
    original = releases.read_text()
    broken = yaml.safe_load(original)["tide-dit-tiny/digits"] | {"cfg_branch": "sideways"}
    try:
        releases.write_text(original + yaml.safe_dump({"tide-dit-tiny/broken": broken}))
        report, outputs, stderr = _run_installed(installed_wheel, tmp_path)
    finally:
        releases.write_text(original)
    assert "ReleaseRegistryWarning" in stderr
    assert "release 'tide-dit-tiny/broken' skipped: field 'cfg_branch'" in stderr
    assert "tide-dit-tiny/broken" not in report["releases"] and "tide-dit-tiny/digits" in report["releases"]
    assert report["saelens_kept"] and outputs
