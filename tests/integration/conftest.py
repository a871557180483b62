"""Shared tiny settings: the bundled digits DiT with few steps and images, so runs take seconds."""

import pytest

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
