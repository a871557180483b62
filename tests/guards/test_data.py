"""No silently wrong result: non-finite activations, untrained class labels, NaN strengths, NaN SAE
weights and edits that match nothing are stopped or reported (issue 18, "Silently wrong results")."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from sae_lens import SAE

import sae_lens_dit  # noqa: F401  (registers the bundled releases)
from sae_lens_dit.analysis.interventions import LatentEdit, SteeringSpec, edit
from sae_lens_dit.cli import main
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.backbones import load_tiny_dit
from sae_lens_dit.training.harvest import ActivationChunk, HarvestConfig, class_ids, harvest_chunks
from sae_lens_dit.training.runner import DiTSAERunnerConfig, DiTSAETrainingRunner

RELEASE, SAE_ID, HOOK = "tide-dit-tiny/digits", "blocks.1.hook_resid_post/tide", "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def digits():
    pipe = load_tiny_dit("digits")
    return pipe, HookedDiT(pipe.transformer)


@pytest.fixture(scope="module")
def nan_sae_dir(tmp_path_factory):
    sae = SAE.from_pretrained(RELEASE, "blocks.1.hook_resid_post/topk")  # TIDE checks its own weights; topk does not
    with torch.no_grad():
        sae.W_dec[3, 5] = float("nan")
    folder = tmp_path_factory.mktemp("nan") / "sae"
    sae.save_model(str(folder))
    return folder


def test_harvest_stops_at_non_finite_activations_naming_batch_and_cause(digits):
    pipe, hooked = digits
    cfg = HarvestConfig(
        hook_names=(HOOK,), num_images=2, images_per_batch=2, num_inference_steps=2, guidance_scale=1e30
    )
    with pytest.raises(ValueError, match=r"harvest batch 0 .*NaN or inf.*guidance_scale=1e\+30"):
        list(harvest_chunks(pipe, hooked, cfg, progress=False))


def test_training_stops_at_a_non_finite_batch(tmp_path, monkeypatch):
    cfg = DiTSAERunnerConfig.from_dict(
        {
            "model": "digits",
            "hook_name": HOOK,
            "sae": {"architecture": "tide", "d_in": 96, "d_sae": 192, "k": 8},
            "harvest": {"hook_names": [HOOK], "num_images": 4, "images_per_batch": 2, "num_inference_steps": 2},
            "training_tokens": 64,
            "batch_size": 32,
            "shuffle_buffer": 64,
            "eval_images": 2,
            "wandb_mode": "disabled",
            "output_dir": str(tmp_path / "run"),
        }
    )
    runner = DiTSAETrainingRunner(cfg)
    x = torch.randn(64, 96)
    x[7, 3] = float("inf")
    rows = torch.zeros(64, dtype=torch.long)
    chunk = ActivationChunk({HOOK: x}, torch.full((64,), 500.0), rows, rows, rows, rows, rows)
    monkeypatch.setattr(runner, "_chunks", lambda: iter([chunk]))
    with pytest.raises(ValueError, match=r"training batch \d+ \(hook blocks.1.hook_resid_post\).*NaN or inf"):
        list(runner._data_provider(skip=0))


def test_class_labels_the_backbone_was_not_trained_on_are_refused(digits, tmp_path, capsys):
    pipe, _ = digits
    with pytest.raises(ValueError, match=r"\[42\] not classes this backbone was trained on"):
        class_ids(pipe, HarvestConfig(class_labels=(3, 42)))
    argv = [
        "edit",
        "--release",
        RELEASE,
        "--hook",
        HOOK,
        "--latent",
        "3",
        "--class-labels",
        "42",
        "--num-inference-steps",
        "2",
        "--output-dir",
        str(tmp_path / "e"),
    ]
    assert main(argv) == 2
    assert "[42] not classes" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_nan_strengths_are_refused(tmp_path, capsys):
    for value in (math.nan, math.inf, (1.0, math.nan)):
        with pytest.raises(ValueError, match="finite number"):
            LatentEdit(HOOK, (1, 2), "add", value)
    argv = [
        "edit",
        "--release",
        RELEASE,
        "--hook",
        HOOK,
        "--latent",
        "3",
        "--value",
        "nan",
        "--output-dir",
        str(tmp_path / "e"),
    ]
    assert main(argv) == 2
    assert "finite number" in capsys.readouterr().err


def test_every_sae_folder_goes_through_the_validating_loader(nan_sae_dir, tmp_path, capsys):
    for argv in (
        ["eval", "--sae", str(nan_sae_dir), "--output-dir", str(tmp_path / "ev")],
        ["dashboard", "--sae", str(nan_sae_dir), "--output-dir", str(tmp_path / "db")],
        ["edit", "--sae", str(nan_sae_dir), "--hook", HOOK, "--latent", "1", "--output-dir", str(tmp_path / "ed")],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "NaN or inf in ['W_dec']" in err and len(err.strip().splitlines()) == 1
    assert not any((tmp_path / name).exists() for name in ("ev", "db", "ed"))
    spec = SteeringSpec.from_dict({"saes": [{"path": str(nan_sae_dir)}], "edits": [{"hook": HOOK, "latents": [1]}]})
    with pytest.raises(ValueError, match="NaN or inf"):
        spec.load_saes()


def test_truncated_weights_and_missing_cuda_say_what_is_wrong(nan_sae_dir, tmp_path, capsys):
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(nan_sae_dir, cut)
    weights = cut / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["eval", "--sae", str(cut), "--output-dir", str(tmp_path / "ev")]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["eval", "--sae", str(cut), "--device", "cuda", "--output-dir", str(tmp_path / "ev")]) == 2
        err = capsys.readouterr().err
        assert "CUDA is not available" in err and "corrupt" not in err


def test_an_edit_that_matches_no_step_is_reported(digits, caplog):
    pipe, hooked = digits
    sae = SAE.from_pretrained(RELEASE, SAE_ID)
    spec = SteeringSpec((LatentEdit(HOOK, (1,), "add", 4.0, steps=(40,)),))
    with caplog.at_level(logging.WARNING, logger="sae_lens_dit.analysis.interventions.editing"):
        result = edit(pipe, hooked, [sae], spec, seed=0, class_labels=[3], num_inference_steps=2)
    assert not result.trace.records
    assert "edits[0] at blocks.1.hook_resid_post" in caplog.text and "changed nothing" in caplog.text


def test_eval_of_an_sae_trained_for_another_width_is_one_line(tmp_path, capsys):
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    sae = TopKSAE(TopKSAEConfig(d_in=48, d_sae=96, k=4))  # the digits DiT is 96 wide
    sae.cfg.metadata.model_name, sae.cfg.metadata.hook_name = "digits", HOOK
    sae.save_model(str(tmp_path / "narrow"))
    argv = ["eval", "--sae", str(tmp_path / "narrow"), "--output-dir", str(tmp_path / "ev"), "--num-samples", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "d_in=48" in err and "96-dimensional" in err and len(err.strip().splitlines()) == 1


def test_prompts_for_a_class_conditional_backbone_are_refused(digits):
    pipe, _ = digits
    with pytest.raises(ValueError, match="class-conditional and takes no prompt"):
        class_ids(pipe, HarvestConfig(hook_names=(HOOK,), prompts=("a red square",)))
