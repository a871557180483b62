"""Held-out metrics per video frame: `metrics_by_frame` against a hand computation, and a training run on a stock
WanPipeline (tiny random parts saved as a local diffusers folder) whose report holds them.

References: the explained variance computed by hand from `sae.encode` / `sae.decode`; for the run, the SAE
loaded back with SAELens's own loader and scored on the held-out harvest's rows, split by their `frame` column.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from sae_lens import SAE, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.backbones import load_pipeline
from sae_lens_dit.toy.random_video import TEXT_LENGTH, random_wan_pipeline
from sae_lens_dit.training.harvest import harvest_chunks
from sae_lens_dit.training.presets import preset_config
from sae_lens_dit.training.runner import HELDOUT_SEED_OFFSET, DiTSAETrainingRunner
from sae_lens_dit.training.sublayers import metrics_by_frame

HOOK = "blocks.1.hook_resid_post"
VIDEO = {"height": 64, "width": 64, "num_frames": 5, "max_sequence_length": TEXT_LENGTH}  # 2 token frames of 4 x 4


def _explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    x, x_hat = x.double(), x_hat.double()
    return 1.0 - float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def test_metrics_by_frame_match_a_hand_computation():
    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=12, d_sae=48, k=4, metadata=SAEMetadata(hook_name=HOOK)))
    x, t = torch.randn(600, 12) + 2.0, torch.rand(600) * 1000
    frame = torch.randint(-1, 3, (600,))  # -1: a hook whose tokens are not whole frames, left out
    metrics = metrics_by_frame(sae, x, t, frame)
    assert [f for f, _ in metrics] == [0, 1, 2]
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(x))
    for f, m in metrics:
        at = frame == f
        assert m.rows == int(at.sum())
        assert m.explained_variance == pytest.approx(_explained_variance(x[at], x_hat[at]), abs=1e-9)
        assert m.l0 == pytest.approx(float((sae.encode(x[at]) != 0).sum(-1).float().mean()), abs=1e-6)
    assert metrics_by_frame(sae, x, t, torch.zeros(600, dtype=torch.long)) == []  # an image: one frame
    assert metrics_by_frame(sae, x, t, None) == []  # an older cache without the column


def test_a_video_run_reports_held_out_metrics_per_frame(tmp_path):
    folder = tmp_path / "wan"
    random_wan_pipeline().save_pretrained(folder)
    cfg = preset_config(
        "dit-tiny-digits",
        model=str(folder),
        hook_name=HOOK,
        sae={"architecture": "topk", "d_in": 24, "d_sae": 96, "k": 4},
        harvest={
            "hook_names": [HOOK],
            "num_images": 4,
            "images_per_batch": 2,
            "num_inference_steps": 2,
            "prompts": ["a red square", "a blue circle"],
            "pipeline_kwargs": VIDEO,
            "tokens_per_image": 8,
        },
        eval_images=2,
        training_tokens=512,
        batch_size=32,
        shuffle_buffer=64,
        wandb_mode="disabled",
        output_dir=str(tmp_path / "run"),
    )
    DiTSAETrainingRunner(cfg).run()
    report = json.loads((tmp_path / "run" / "eval.json").read_text())["reports"][0]
    assert [entry["frame"] for entry in report["frames"]] == [0, 1]
    assert "| frame | rows |" in (tmp_path / "run" / "eval.md").read_text()

    # The same held-out harvest (the runner's settings on its held-out seed), scored by the SAE SAELens loads back.
    held = replace(cfg.harvest, seed=cfg.harvest.seed + HELDOUT_SEED_OFFSET, num_images=2, images_per_batch=2)
    pipe = load_pipeline(str(folder))
    chunks = list(harvest_chunks(pipe, HookedDiT(pipe.transformer), held, progress=False))
    x = torch.cat([c.activations[HOOK] for c in chunks]).float()
    frame = torch.cat([c.frame for c in chunks])
    sae = SAE.load_from_disk(str(tmp_path / "run"))
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(x))
    for entry in report["frames"]:
        at = frame == entry["frame"]
        assert entry["rows"] == int(at.sum()) == len(x) // 2  # tokens_per_image spread evenly over both frames
        assert entry["explained_variance"] == pytest.approx(_explained_variance(x[at], x_hat[at]), abs=1e-4)
