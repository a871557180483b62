"""Hub releases load through huggingface_hub's cache, pinned to their commit, offline; a release
that is not cached says how to get it."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from sae_lens import SAE
from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface
from safetensors.torch import load_file, save_file

from sae_lens_dit.hub.releases import ReleaseNotCachedError, register_releases
from sae_lens_dit.resources import pretrained_dir

from .conftest import assert_same_outputs, put_in_hub_cache

REPO = "someone/tide-dit-tiny-test"
PINNED, MAIN = "a" * 40, "b" * 40
SAE_ID = "blocks.1.hook_resid_post/tide"
SOURCE = pretrained_dir() / "saes" / "tide-dit-tiny-digits"


def _release_file(tmp_path, revision: str = PINNED):
    entry = yaml.safe_load((pretrained_dir() / "releases.yaml").read_text())["tide-dit-tiny/digits"]
    entry = {**entry, "source": {"hub": {"repo_id": REPO, "revision": revision}}}
    path = tmp_path / "releases.yaml"
    path.write_text(yaml.safe_dump({"tide-dit-tiny/hub-test": entry}))
    return path


@pytest.fixture
def two_commits(tmp_path, offline_hub_cache):
    """The repo at PINNED holds the bundled digits SAEs; main (a later commit) holds other weights."""
    put_in_hub_cache(offline_hub_cache, REPO, SOURCE, PINNED, ref=None)
    changed = tmp_path / "changed"
    shutil.copytree(SOURCE, changed)
    weights = changed / SAE_ID / "sae_weights.safetensors"
    save_file({k: v * 2 for k, v in load_file(weights).items()}, weights)
    put_in_hub_cache(offline_hub_cache, REPO, changed, MAIN)
    return offline_hub_cache


def test_hub_release_loads_its_pinned_commit_offline(tmp_path, two_commits, restore_shipped_releases):
    register_releases(_release_file(tmp_path))
    sae, _, log_sparsity = SAE.from_pretrained_with_cfg_and_sparsity("tide-dit-tiny/hub-test", SAE_ID)
    assert_same_outputs(sae, SAE.load_from_disk(str(SOURCE / SAE_ID)))
    assert log_sparsity is not None
    assert load_sae_config_from_huggingface("tide-dit-tiny/hub-test", SAE_ID)["d_sae"] == sae.cfg.d_sae
    # the repo id itself goes through SAELens's default loader and reads main, the other commit
    with pytest.warns(UserWarning, match="registered in the official pretrained SAEs list"):
        main = SAE.from_pretrained(REPO, SAE_ID)
    torch.testing.assert_close(main.W_dec, 2 * sae.W_dec)


def test_hub_release_not_in_the_cache_offline_is_a_clear_error(tmp_path, offline_hub_cache, restore_shipped_releases):
    register_releases(_release_file(tmp_path))
    with pytest.raises(ReleaseNotCachedError, match=f"{REPO}@{PINNED}.*not in the Hub cache.*HF_HUB_OFFLINE=1"):
        SAE.from_pretrained("tide-dit-tiny/hub-test", SAE_ID)
    with pytest.raises(ReleaseNotCachedError, match="hf download"):
        load_sae_config_from_huggingface("tide-dit-tiny/hub-test", SAE_ID)


def test_force_download_reaches_huggingface_hub(tmp_path, two_commits, restore_shipped_releases):
    register_releases(_release_file(tmp_path))
    with pytest.raises(ValueError, match="force_download=True.*offline"):  # huggingface_hub's own refusal
        SAE.from_pretrained("tide-dit-tiny/hub-test", SAE_ID, force_download=True)


def test_registry_promise_is_checked_against_the_cfg(tmp_path, two_commits, restore_shipped_releases):
    path = _release_file(tmp_path)
    path.write_text(path.read_text().replace("hook: blocks.1.hook_resid_post", "hook: blocks.2.hook_resid_post", 1))
    register_releases(path)
    with pytest.raises(ValueError, match="registry promises.*blocks.2.hook_resid_post.*cfg.json"):
        SAE.from_pretrained("tide-dit-tiny/hub-test", SAE_ID)
