"""The dit-xl-2-256 preset's code path, on a random DiT with DiT-XL/2-256's layout shrunk in depth.

No pretrained DiT-XL can be downloaded here, so the test saves a local diffusers pipeline folder
(DiT-XL/2 widths, patching, latent size and 1000 classes; one block instead of 28; a tiny VAE)
and runs the preset against it with small harvest and dictionary sizes.
"""

import json

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel
from sae_lens import SAE

from sae_lens_dit.toy.random_dit import DIT_XL_2_LAYOUT, random_dit
from sae_lens_dit.training.runner import PRESETS, DiTSAETrainingRunner, preset_config


def _dit_xl_layout(num_layers: int) -> DiTTransformer2DModel:
    return random_dit(**DIT_XL_2_LAYOUT, num_layers=num_layers)


@pytest.mark.slow
def test_dit_xl_preset_runs_end_to_end_on_a_shrunk_model(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "dit-xl-shrunk"
    pipe = DiTPipeline(
        transformer=_dit_xl_layout(num_layers=1), vae=AutoencoderKL(latent_channels=4), scheduler=DDIMScheduler()
    )
    pipe.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())  # the Hub repo carries its label map here
    (folder / "model_index.json").write_text(json.dumps({**index, "id2label": {"0": "tench", "1": "goldfish"}}))

    preset = PRESETS["dit-xl-2-256"]
    assert preset["sae"]["d_in"] == 1152 and preset["sae"]["d_sae"] == 16 * 1152  # the paper's 16x dictionary
    hook = "blocks.0.hook_resid_post"
    cfg = preset_config(
        "dit-xl-2-256",
        model=str(folder),
        hook_name=hook,
        device="cpu",
        sae={"d_sae": 2304, "k": 16},
        harvest={"hook_names": [hook], "num_images": 4, "images_per_batch": 2, "num_inference_steps": 3},
        eval_images=2,
        training_tokens=256,
        batch_size=64,
        shuffle_buffer=128,
        wandb_mode="disabled",
        output_dir=str(tmp_path / "run"),
    )
    assert cfg.harvest.storage_dtype == "float16" and cfg.data_mode == "cached"  # the preset's own choices
    DiTSAETrainingRunner(cfg).run()

    sae = SAE.load_from_disk(str(tmp_path / "run"))
    assert (sae.cfg.d_in, sae.cfg.architecture()) == (1152, "tide")
    # 256 tokens per image (32x32 latents, patch 2); the paper keeps 1/16 of them per step.
    harvest = json.loads((tmp_path / "run" / "activations" / "harvest_config.json").read_text())["harvest"]
    assert harvest["tokens_per_image"] is None
    rows = sum(1 for _ in (tmp_path / "run" / "activations").glob("shard-*.parquet"))
    assert rows == 2
