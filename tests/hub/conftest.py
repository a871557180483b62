"""Helpers for the release-registry tests: the shipped registry is put back after each test that
registers another releases file, and SAEs are compared on the same rows and timesteps."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from sae_lens_dit.analysis.evals import reconstruct
from sae_lens_dit.hub.releases import register_releases

ROWS = torch.randn(48, 96, generator=torch.Generator().manual_seed(1))
TIMESTEPS = torch.linspace(0, 999, 48)


@pytest.fixture
def restore_shipped_releases():
    """Tests may register other releases files; the shipped registry is back afterwards."""
    yield
    register_releases()


def assert_same_outputs(loaded, reference, x: torch.Tensor = ROWS, t: torch.Tensor = TIMESTEPS) -> None:
    """Same latents and reconstructions on the same rows (TIDE SAEs get their timesteps)."""
    (x_hat, z), (x_ref, z_ref) = reconstruct(loaded, x, t), reconstruct(reference, x, t)
    torch.testing.assert_close(z, z_ref, rtol=0, atol=0)
    torch.testing.assert_close(x_hat, x_ref, rtol=0, atol=0)


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path, sha: str, ref: str | None = "main") -> None:
    """Lay `folder` out as huggingface_hub caches a repo snapshot: models--owner--name/snapshots/<sha>/
    (plain files are enough offline) and refs/<ref> holding the sha."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / sha)
    if ref is not None:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(sha)


@pytest.fixture
def offline_hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache in tmp_path, offline: huggingface_hub reads these at call time."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache
