"""Test-wide settings (offline, no wandb network, deterministic and light on the two CPU cores) and the tiny
run settings shared by the training and hub tests: the bundled digits DiT with few steps and images."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)


TINY_HARVEST = {
    "hook_names": ["blocks.1.hook_resid_post"],
    "num_images": 24,
    "images_per_batch": 8,
    "num_inference_steps": 4,
    "branch": "both",
}


@pytest.fixture
def tiny_run_dict(tmp_path):
    """A runner config dict (DiTSAERunnerConfig.to_dict layout) that trains in a few seconds."""
    return {
        "model": "digits",
        "hook_name": "blocks.1.hook_resid_post",
        "sae": {"architecture": "tide", "d_in": 96, "d_sae": 192, "k": 8},
        "harvest": dict(TINY_HARVEST),
        "eval_images": 8,
        "training_tokens": 64 * 30,
        "batch_size": 64,
        "shuffle_buffer": 256,
        "wandb_mode": "disabled",
        "output_dir": str(tmp_path / "run"),
    }


@pytest.fixture
def tiny_harvest() -> dict:
    """A harvest config dict (HarvestConfig.from_dict layout) that samples in a few seconds."""
    return dict(TINY_HARVEST)
