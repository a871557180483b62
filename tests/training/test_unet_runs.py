"""The sd15 and sdxl-turbo presets, and `sae-lens-dit train` / `eval` / `edit` / `dashboard` on a UNet pipeline.

No pretrained SD or SDXL can be downloaded here, so each test saves a local diffusers folder of a stock
StableDiffusion(XL)Pipeline with tiny random parts (`toy.random_unet`: the real level layout, so the
presets' hooks exist; widths 8-32 instead of 320-1280) and runs the preset or the CLI against it with
small harvest and dictionary sizes. References: SAELens's own loader, the harvest's recorded rows (their
timestep and branch columns against what the pipeline's scheduler and guidance make), the hook's width.
"""

import json

import pytest
from sae_lens import SAE

from sae_lens_dit import HookedDiT
from sae_lens_dit.cli import main
from sae_lens_dit.toy.random_unet import random_sd_pipeline
from sae_lens_dit.training.presets import PRESETS, STARTER_PROMPTS, preset_config
from sae_lens_dit.training.runner import DiTSAETrainingRunner


@pytest.fixture(scope="module")
def tiny_pipes(tmp_path_factory):
    folders = {}
    for kind in ("sd", "sdxl"):
        folder = tmp_path_factory.mktemp("pipes") / kind
        random_sd_pipeline(kind).save_pretrained(folder)
        folders[kind] = folder
    return folders


@pytest.mark.parametrize(("preset", "kind"), [("sd15", "sd"), ("sdxl-turbo", "sdxl")])
def test_unet_presets_run_end_to_end_on_a_shrunk_pipeline(preset, kind, tiny_pipes, tmp_path):
    hook = PRESETS[preset]["hook_name"]
    if kind == "sd":  # the tiny SD has two levels: SAeUron's up_blocks.1.attentions.1 is up.1.1 there too
        assert hook == "up.1.1.hook_update"
    pipe_hooks = HookedDiT.from_pipeline(random_sd_pipeline(kind))
    width = pipe_hooks.d_in(hook)
    cfg = preset_config(
        preset,
        model=str(tiny_pipes[kind]),
        device="cpu",
        sae={"d_in": width, "d_sae": 4 * width, "k": 4},
        harvest={"num_images": 4, "images_per_batch": 2, "num_inference_steps": 2, "prompts": ["a red square"]},
        eval_images=2,
        training_tokens=256,
        batch_size=32,
        shuffle_buffer=64,
        wandb_mode="disabled",
        output_dir=str(tmp_path / "run"),
    )
    assert PRESETS[preset]["harvest"]["prompts"] == list(STARTER_PROMPTS)
    DiTSAETrainingRunner(cfg).run()
    sae = SAE.load_from_disk(str(tmp_path / "run"))
    assert (sae.cfg.d_in, sae.cfg.metadata.hook_name, sae.cfg.architecture()) == (width, hook, "tide")
    assert sae.cfg.metadata.model_class_name == "UNet2DConditionModel"
    report = json.loads((tmp_path / "run" / "eval.json").read_text())["reports"][0]
    assert report["latent_usage"]["rows"] > 0


def test_train_and_edit_from_the_cli_on_a_tiny_sd_pipeline(tiny_pipes, tmp_path, capsys):
    run = tmp_path / "run"
    hook = "up.1.1.hook_update"
    args = ["train", "--model", str(tiny_pipes["sd"]), "--hook", hook, "--d-in", "8", "--d-sae", "32", "--k", "4"]
    args += ["--prompts", "a red square", "a blue circle", "--num-images", "4", "--images-per-batch", "2"]
    args += ["--num-inference-steps", "2", "--guidance-scale", "5", "--branch", "both", "--eval-images", "2"]
    args += ["--training-tokens", "256", "--batch-size", "32", "--shuffle-buffer", "64", "--wandb-mode", "disabled"]
    assert main([*args, "--output-dir", str(run)]) == 0
    rows = json.loads((run / "activations" / "harvest_config.json").read_text())["harvest"]
    assert rows["prompts"] == ["a red square", "a blue circle"] and rows["hook_names"] == [hook]
    assert SAE.load_from_disk(str(run)).cfg.d_in == 8

    assert (
        main(
            ["edit", "--sae", str(run), "--hook", hook, "--latent", "0", "--value", "50", "--prompt", "a red square"]
            + ["--num-inference-steps", "2", "--output-dir", str(tmp_path / "edit")]
        )
        == 0
    )
    edit = json.loads((tmp_path / "edit" / "edit.json").read_text())
    assert edit["mean_abs_pixel_change"] > 0
    assert "edited 1 image(s)" in capsys.readouterr().out

    evaluated = tmp_path / "eval"
    args = ["eval", "--sae", str(run), "--output-dir", str(evaluated), "--num-inference-steps", "2"]
    args += ["--prompts", "a red square", "a blue circle", "--edges", "0", "500", "1000"]
    assert main([*args, "--num-images", "4"]) == 2  # no classifier for spliced generation: one line, before work
    assert "--num-samples 0" in capsys.readouterr().err
    assert main([*args, "--num-images", "2", "--num-samples", "0"]) == 2  # one image per prompt: no probe
    assert "2 images per prompt" in capsys.readouterr().err
    args += ["--num-images", "4"]
    assert main([*args, "--num-samples", "0"]) == 0
    report = json.loads((evaluated / "eval.json").read_text())["reports"][0]
    assert {row["branch"] for row in report["denoising"]} == {"cond", "uncond"}
    assert all(row["loss_clean"] > 0 for row in report["denoising"])

    dash = tmp_path / "dash"
    args = ["dashboard", "--sae", str(run), "--output-dir", str(dash), "--num-images", "2", "--batch-size", "2"]
    args += ["--num-inference-steps", "2", "--max-latents", "2", "--prompts", "a red square", "a blue circle"]
    assert main(args) == 0
    pages = sorted((dash / f"{hook}-tide" / "latents").glob("*.html"))
    assert len(pages) == 2 and all("a red square" in page.read_text() for page in pages)  # the prompt names images


def test_a_dashboard_of_a_text_pipeline_without_prompts_says_what_to_pass(tiny_pipes, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--model", str(tiny_pipes["sd"]), "--hook", "up.1.1.hook_update", "--d-in", "8", "--d-sae", "16"]
    args += ["--k", "2", "--prompts", "a cat", "--num-images", "2", "--images-per-batch", "2", "--eval-images", "1"]
    args += ["--num-inference-steps", "1", "--training-tokens", "64", "--batch-size", "16", "--shuffle-buffer", "32"]
    assert main([*args, "--wandb-mode", "disabled", "--output-dir", str(run)]) == 0
    assert main(["dashboard", "--sae", str(run), "--output-dir", str(tmp_path / "dash")]) == 2
    assert "pass prompts (--prompts)" in capsys.readouterr().err


def test_a_wrong_width_for_a_unet_hook_is_one_clear_error(tiny_pipes, tmp_path, capsys):
    args = ["train", "--model", str(tiny_pipes["sdxl"]), "--hook", "down.2.1.hook_update", "--d-in", "16"]
    assert main([*args, "--prompts", "a cat", "--output-dir", str(tmp_path / "run"), "--wandb-mode", "disabled"]) == 2
    assert "down.2.1.hook_update carries 32-dim activations" in capsys.readouterr().err
