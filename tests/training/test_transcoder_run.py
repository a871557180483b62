"""`sae-lens-dit train --architecture tide_transcoder --hook blocks.1.mlp`: a transcoder trained end to end on
the bundled digits DiT, saved in SAELens's format with both hooks named, and spliced back in.

References: SAELens's own loader; the pipeline run without hooks (bit-identical with the error term); an
independent `hooked.record` of the two hooks at every token for the harvested rows."""

import json
from pathlib import Path

import pytest
import torch
from sae_lens import SAE

from sae_lens_dit import HookedDiT
from sae_lens_dit.cli import main
from sae_lens_dit.conventions import sae_display_name
from sae_lens_dit.saes import TideTranscoder
from sae_lens_dit.toy.backbones import load_pipeline
from sae_lens_dit.training.harvest import plan_batches
from sae_lens_dit.training.runner import DiTSAERunnerConfig, DiTSAETrainingRunner
from sae_lens_dit.training.sublayers import training_rows

HOOK = "blocks.1.mlp"
PAIR = {"hook_name": f"{HOOK}.hook_in", "hook_name_out": f"{HOOK}.hook_out"}
TINY = {
    "num-images": 8,
    "images-per-batch": 4,
    "num-inference-steps": 4,
    "eval-images": 4,
    "training-tokens": 256,
    "batch-size": 64,
    "shuffle-buffer": 128,
    "init-rows": 128,
    "d-sae": 192,
    "k": 8,
    "wandb-mode": "disabled",
}
TINY_FLAGS = [arg for flag, value in TINY.items() for arg in (f"--{flag}", str(value))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("transcoder") / "run"
    args = ["train", "--architecture", "tide_transcoder", "--hook", HOOK, "--output-dir", str(out), *TINY_FLAGS]
    assert main(args) == 0
    return out


def test_cli_trains_a_transcoder_saved_with_both_hooks(trained: Path) -> None:
    meta = json.loads((trained / "cfg.json").read_text())["metadata"]
    assert {k: meta[k] for k in PAIR} == PAIR
    runner_cfg = json.loads((trained / "runner_cfg.json").read_text())
    assert runner_cfg["hook_name"] == HOOK and runner_cfg["harvest"]["hook_names"] == list(PAIR.values())
    tc = SAE.load_from_disk(str(trained))
    assert isinstance(tc, TideTranscoder) and (tc.cfg.d_in, tc.cfg.d_out) == (96, 96)
    (report,) = json.loads((trained / "eval.json").read_text())["reports"]
    assert report["hook"] == HOOK and report["architecture"] == "tide_transcoder"
    assert report["sae"] == sae_display_name(tc) == f"{HOOK}/tide_transcoder"  # one id in every report
    assert report["buckets"] and all(b["l0"] == pytest.approx(8) for b in report["buckets"])
    assert all(b["explained_variance"] == b["explained_variance"] for b in report["buckets"])  # not NaN
    assert "output, reconstructed from its input" in (trained / "eval.md").read_text()


@pytest.mark.parametrize("model", ["digits", "shapes"])
def test_the_transcoder_presets_train_the_mlp_of_block_2(model: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--preset", f"transcoder-tiny-{model}", "--output-dir", str(out), *TINY_FLAGS]) == 0
    meta = json.loads((out / "cfg.json").read_text())["metadata"]
    assert (meta["hook_name"], meta["hook_name_out"], meta["model_name"]) == (
        "blocks.2.mlp.hook_in",
        "blocks.2.mlp.hook_out",
        model,
    )
    tc = SAE.load_from_disk(str(out))
    assert isinstance(tc, TideTranscoder) and (tc.cfg.d_in, tc.cfg.d_out, tc.cfg.d_sae) == (96, 96, 192)


def _sample(pipe) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    images = pipe(class_labels=[1, 7], num_inference_steps=4, generator=generator, output_type="np").images
    return torch.as_tensor(images)


def test_spliced_transcoder_is_exact_with_the_error_term_and_replaces_the_mlp_without(trained: Path) -> None:
    tc = SAE.load_from_disk(str(trained)).eval()
    pipe = load_pipeline("digits")
    hooked = HookedDiT(pipe.transformer)
    clean = _sample(pipe)
    with hooked.saes([tc], use_error_term=True):
        assert torch.equal(_sample(pipe), clean)
    with hooked.saes([tc], use_error_term=False):
        assert not torch.equal(_sample(pipe), clean)


def test_harvested_rows_equal_an_independent_recording_of_both_hooks(tiny_run_dict) -> None:
    run = {
        **tiny_run_dict,
        "hook_name": HOOK,
        "sae": {"architecture": "tide_transcoder", "d_in": 96, "d_out": 96, "d_sae": 64, "k": 4},
        "harvest": {**tiny_run_dict["harvest"], "hook_names": list(PAIR.values()), "num_images": 4},
    }
    runner = DiTSAETrainingRunner(DiTSAERunnerConfig.from_dict(run))
    chunks = runner._chunks(passes=1)
    chunk = next(chunks)
    chunks.close()
    rows = training_rows(chunk.activations, HOOK)
    assert rows.shape == (chunk.num_rows, 192)

    harvest = runner.cfg.harvest
    plan = plan_batches(runner.pipe, harvest)[0]
    generator = torch.Generator().manual_seed(plan.seed)
    with runner.hooked.record(list(PAIR.values()), branch=harvest.branch) as rec:  # every token
        runner.pipe(
            class_labels=plan.labels,
            num_inference_steps=harvest.num_inference_steps,
            generator=generator,
            output_type="np",
        )
    recorded = {name: rec.rows(name) for name in PAIR.values()}
    ref = recorded[PAIR["hook_name"]]
    key = torch.stack([ref["step"], ref["branch"], ref["sample"], ref["token"]], dim=1)
    for i in (0, chunk.num_rows // 2, chunk.num_rows - 1):
        want = torch.tensor([chunk.step[i], chunk.branch[i], chunk.sample[i] - plan.first_sample, chunk.token[i]])
        (j,) = (key == want).all(dim=1).nonzero()[:, 0].tolist()
        assert ref["timestep"][j] == chunk.timestep[i]
        expected = torch.cat([recorded[name]["activation"][j] for name in PAIR.values()])
        assert torch.equal(rows[i], expected)


def test_widths_that_do_not_match_the_hooks_are_one_clear_error(tiny_run_dict) -> None:
    run = {
        **tiny_run_dict,
        "hook_name": HOOK,
        "sae": {"architecture": "tide_transcoder", "d_in": 96, "d_out": 48, "d_sae": 64, "k": 4},
        "harvest": {**tiny_run_dict["harvest"], "hook_names": list(PAIR.values())},
    }
    with pytest.raises(ValueError, match="d_in=96, d_out=48 .* set d_in=96, d_out=96"):
        DiTSAETrainingRunner(DiTSAERunnerConfig.from_dict(run))
    run["sae"] = {"architecture": "tide", "d_in": 96, "d_sae": 64, "k": 4}
    with pytest.raises(ValueError, match="only a transcoder trains on"):
        DiTSAETrainingRunner(DiTSAERunnerConfig.from_dict(run))
