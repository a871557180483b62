"""Output folders belong to the user: a folder we did not write is refused before any work, paths
a rebuild deletes stay inside the folder, and interrupted builds are rebuilt (issue 18, "Files lost").
These tests use only the public API and the command line, so they run against any version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sae_lens import SAE

import sae_lens_dit  # noqa: F401  (registers the bundled releases)
from sae_lens_dit.analysis.dashboard.build import MANIFEST, DashboardConfig, build_dashboard
from sae_lens_dit.cli import main

RELEASE, SAE_ID = "tide-dit-tiny/digits", "blocks.1.hook_resid_post/tide"
TINY = DashboardConfig(
    num_images=4,
    num_inference_steps=3,
    max_latents=3,
    top_images=2,
    strip_steps=2,
    thumb_size=24,
    batch_size=4,
    edges=(0.0, 500.0, 1000.0),
    steering=False,
)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- train -----------------------------------------------------------------------------------------


def test_train_into_a_folder_holding_someone_elses_sae_is_refused(tmp_path, capsys):
    sae = tmp_path / "their-sae"
    sae.mkdir()
    files = {"cfg.json": b'{"architecture": "topk"}', "sae_weights.safetensors": b"precious", "eval.md": b"theirs"}
    for name, data in files.items():
        (sae / name).write_bytes(data)
    for flags in ([], ["--overwrite"]):
        assert main(["train", "--output-dir", str(sae), "--num-images", "2", *flags]) == 2
        err = capsys.readouterr().err
        assert "did not write" in err and len(err.strip().splitlines()) == 1
        assert _snapshot(sae) == files


# -- harvest ---------------------------------------------------------------------------------------


def test_harvest_never_overwrites_the_users_readme(tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "README.md").write_text("# my notes\n")
    argv = [
        "harvest",
        "--output-dir",
        str(out),
        "--num-images",
        "2",
        "--num-inference-steps",
        "2",
        "--images-per-batch",
        "2",
        "--hook",
        "blocks.1.hook_resid_post",
    ]
    assert main(argv) == 2
    assert "did not write (README.md)" in capsys.readouterr().err
    assert _snapshot(out) == {"README.md": b"# my notes\n"}


# -- dashboard -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sae():
    return SAE.from_pretrained(RELEASE, SAE_ID)


@pytest.mark.parametrize("listed", ["../victim.txt", "ABSOLUTE"])
def test_dashboard_rebuild_never_deletes_outside_its_folder(tmp_path, listed):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    site = tmp_path / "site"
    site.mkdir()
    rel = str(victim) if listed == "ABSOLUTE" else listed
    (site / MANIFEST).write_text(json.dumps({"files": {rel: "0" * 64}}))
    with pytest.raises(ValueError, match="refusing to touch it"):
        build_dashboard([SAE.from_pretrained(RELEASE, SAE_ID)], site, TINY, progress=False)
    assert victim.read_text() == "keep me"
    assert main(["dashboard", "--release", RELEASE, "--sae-id", SAE_ID, "--output-dir", str(site)]) == 2
    assert victim.read_text() == "keep me"


def test_dashboard_that_failed_midway_is_rebuilt_to_the_same_site(sae, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    build_dashboard([sae], clean, TINY, progress=False)
    broken = tmp_path / "broken"
    from sae_lens_dit.analysis.dashboard import build as dashboard

    real, calls = dashboard._latent_page, []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("latent 99999 out of range")
        return real(*args, **kwargs)

    monkeypatch.setattr(dashboard, "_latent_page", fail_on_second)
    with pytest.raises(ValueError, match="latent 99999"):
        build_dashboard([sae], broken, TINY, progress=False)
    monkeypatch.setattr(dashboard, "_latent_page", real)
    assert not (broken / MANIFEST).exists()
    build_dashboard([sae], broken, TINY, progress=False)
    assert _snapshot(broken) == _snapshot(clean)


_KILLED_BUILD = """
import os, pathlib, signal, sys
import sae_lens_dit
from sae_lens import SAE
from sae_lens_dit.analysis.dashboard.build import DashboardConfig, build_dashboard
cfg = DashboardConfig(**{cfg})
real, count = pathlib.Path.write_bytes, [0]
def write_bytes(self, data):  # kill -9 in the middle of the Nth file the build writes
    if self.name.endswith(".tmp"):
        count[0] += 1
        if count[0] == int(sys.argv[2]):
            real(self, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    return real(self, data)
pathlib.Path.write_bytes = write_bytes
build_dashboard([SAE.from_pretrained("{release}", "{sae_id}")], sys.argv[1], cfg, progress=False)
"""


@pytest.mark.slow
def test_killed_dashboard_build_then_rebuild_equals_an_uninterrupted_build(sae, tmp_path):
    clean = tmp_path / "clean"
    build_dashboard([sae], clean, TINY, progress=False)
    fields = {k: v for k, v in TINY.__dict__.items()}
    script = textwrap.dedent(_KILLED_BUILD).format(cfg=repr(fields), release=RELEASE, sae_id=SAE_ID)
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(killed), "6"], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not (killed / MANIFEST).exists()
    build_dashboard([sae], killed, TINY, progress=False)
    assert _snapshot(killed) == _snapshot(clean)
