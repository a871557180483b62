"""DiTSAETrainingRunner end to end on the bundled digits DiT, through SAELens's own trainer and loader."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import wandb
from sae_lens import SAE
from safetensors.torch import load_file

from sae_lens_dit.analysis.evals import reconstruct
from sae_lens_dit.training.runner import DiTSAERunnerConfig, DiTSAETrainingRunner


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "sae_weights.safetensors"))


def test_run_saves_a_sae_lens_sae_with_diffusion_metadata(tiny_run_dict):
    cfg = DiTSAERunnerConfig.from_dict(tiny_run_dict)
    trained = DiTSAETrainingRunner(cfg).run()
    out = Path(cfg.output_dir)
    for name in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "runner_cfg.json", "eval.json"):
        assert (out / name).exists(), name
    meta = json.loads((out / "cfg.json").read_text())["metadata"]
    assert meta["hook_name"] == "blocks.1.hook_resid_post"
    assert meta["model_name"] == "digits"
    assert "1000" in meta["timestep_convention"]
    assert meta["harvest"]["num_inference_steps"] == 4

    loaded = SAE.load_from_disk(str(out))  # SAELens's own loader
    x, t = torch.randn(32, 96), torch.rand(32) * 1000
    torch.testing.assert_close(reconstruct(loaded, x, t)[0], reconstruct(trained, x, t)[0], rtol=1e-5, atol=1e-5)
    written = json.loads((out / "eval.json").read_text())  # the one layout: {"config": ..., "reports": [...]}
    assert set(written) == {"config", "reports"} and written["config"]["eval_images"] == cfg.eval_images
    (report,) = written["reports"]
    assert {k: report[k] for k in ("sae", "model", "hook", "architecture", "d_sae")} == {
        "sae": "blocks.1.hook_resid_post/tide",
        "model": "digits",
        "hook": "blocks.1.hook_resid_post",
        "architecture": "tide",
        "d_sae": cfg.sae.d_sae,
    }
    assert {b["t_low"] for b in report["buckets"]} <= {0, 200, 400, 600, 800}
    assert all(b["l0"] == pytest.approx(8) for b in report["buckets"])
    assert report["mean_explained_variance"] == pytest.approx(
        sum(b["explained_variance"] for b in report["buckets"]) / len(report["buckets"])
    )
    assert (out / "eval.md").read_text().startswith("**tide on digits blocks.1.hook_resid_post (held-out)**")


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "standard", "jumprelu", "matryoshka_batchtopk"])
def test_sae_lens_baselines_train_through_the_same_data_path(tiny_run_dict, architecture):
    sae = {"architecture": architecture, "d_in": 96, "d_sae": 192}
    if architecture in ("topk", "batchtopk", "matryoshka_batchtopk"):
        sae["k"] = 8
    if architecture == "matryoshka_batchtopk":
        sae["matryoshka_widths"] = [64, 192]
    cfg = DiTSAERunnerConfig.from_dict({**tiny_run_dict, "sae": sae, "training_tokens": 64 * 8})
    DiTSAETrainingRunner(cfg).run()
    # SAELens saves some training architectures as another inference one (batchtopk -> jumprelu).
    expected = cfg.sae.get_inference_config_class().architecture()
    assert SAE.load_from_disk(cfg.output_dir).cfg.architecture() == expected


def test_streaming_and_cached_modes_train_identical_weights(tiny_run_dict, tmp_path):
    streamed = DiTSAERunnerConfig.from_dict({**tiny_run_dict, "output_dir": str(tmp_path / "s")})
    cached = DiTSAERunnerConfig.from_dict({**tiny_run_dict, "output_dir": str(tmp_path / "c"), "data_mode": "cached"})
    DiTSAETrainingRunner(streamed).run()
    DiTSAETrainingRunner(cached).run()
    assert (tmp_path / "c" / "activations" / "shard-00000.parquet").exists()
    a, b = _weights(tmp_path / "s"), _weights(tmp_path / "c")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


_RUN_SCRIPT = """
import json, sys
from sae_lens_dit.training.runner import DiTSAERunnerConfig, DiTSAETrainingRunner
DiTSAETrainingRunner(DiTSAERunnerConfig.from_dict(json.loads(sys.argv[1]))).run()
"""


def _run(cfg: dict, wait: bool = True) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN_SCRIPT, json.dumps(cfg)], env=env, stderr=subprocess.PIPE, text=True
    )
    if wait:
        _, err = proc.communicate()
        assert proc.returncode == 0, err[-3000:]
    return proc


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(tiny_run_dict, tmp_path):
    long = {
        **tiny_run_dict,
        "training_tokens": 64 * 60,
        "n_checkpoints": 3,
        "harvest": {**tiny_run_dict["harvest"], "num_images": 120},
    }
    _run({**long, "output_dir": str(tmp_path / "whole")})

    killed = {**long, "output_dir": str(tmp_path / "killed")}
    proc = _run(killed, wait=False)
    deadline = time.time() + 300
    ckpts = tmp_path / "killed" / "checkpoints"
    while not list(ckpts.glob("*/data_state.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "sae_weights.safetensors").exists(), "killed too late to test resuming"
    assert list(ckpts.glob("*/data_state.json"))

    _run(killed)  # the same command again resumes from the newest checkpoint
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "killed")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_wandb_offline_run_holds_the_logged_metrics(tiny_run_dict):
    cfg = DiTSAERunnerConfig.from_dict({**tiny_run_dict, "wandb_mode": "offline", "wandb_log_frequency": 2})
    DiTSAETrainingRunner(cfg).run()
    wandb.teardown()  # the wandb service writes the run file in the background; stop it so the file is complete
    runs = list((Path(cfg.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    payload = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    for key in (b"metrics/explained_variance", b"metrics/l0", b"losses/mse_loss", b"final/t0-200/explained_variance"):
        assert key in payload, key


# -- bad input is refused before any long work -------------------------------------------------------


def test_unknown_hook_is_refused_with_close_names(tiny_run_dict):
    bad = {
        **tiny_run_dict,
        "hook_name": "blocks.1.hook_resid_pst",
        "harvest": {**tiny_run_dict["harvest"], "hook_names": ["blocks.1.hook_resid_pst"]},
    }
    with pytest.raises(ValueError, match="blocks.1.hook_resid_post"):
        DiTSAETrainingRunner(DiTSAERunnerConfig.from_dict(bad))


def test_d_in_mismatch_is_refused(tiny_run_dict):
    bad = {**tiny_run_dict, "sae": {**tiny_run_dict["sae"], "d_in": 64}}
    with pytest.raises(ValueError, match="d_in=96"):
        DiTSAETrainingRunner(DiTSAERunnerConfig.from_dict(bad))


def test_missing_model_path_and_offline_hub_id_are_refused(tiny_run_dict, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        DiTSAETrainingRunner(DiTSAERunnerConfig.from_dict({**tiny_run_dict, "model": str(tmp_path / "nope")}))
    with pytest.raises(OSError, match="HF_HUB_OFFLINE"):
        DiTSAETrainingRunner(DiTSAERunnerConfig.from_dict({**tiny_run_dict, "model": "nobody/no-such-dit"}))


def test_output_dir_with_a_different_run_is_never_overwritten(tiny_run_dict):
    out = Path(tiny_run_dict["output_dir"])
    out.mkdir(parents=True)
    other = DiTSAERunnerConfig.from_dict({**tiny_run_dict, "seed": 99})
    (out / "runner_cfg.json").write_text(json.dumps(other.to_dict()))
    (out / "sae_weights.safetensors").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="different run"):
        DiTSAETrainingRunner(DiTSAERunnerConfig.from_dict(tiny_run_dict))
    assert (out / "sae_weights.safetensors").read_bytes() == b"precious"


def test_non_finite_trained_weights_are_never_saved(tiny_run_dict, monkeypatch):
    import sae_lens_dit.training.runner as runner_module

    class Diverging(runner_module.SAETrainer):  # a run that ends with a NaN in the decoder, as a diverged one would
        def fit(self):
            sae = super().fit()
            with torch.no_grad():
                sae.W_dec[0, 0] = float("nan")
            return sae

    monkeypatch.setattr(runner_module, "SAETrainer", Diverging)
    runner = DiTSAETrainingRunner(DiTSAERunnerConfig.from_dict(tiny_run_dict))
    with pytest.raises(ValueError, match="non-finite weights .*W_dec"):
        runner.run()
    assert not (runner.output_dir / "sae_weights.safetensors").exists()


@pytest.mark.parametrize("normalize", ["none", "expected_average_only_in"])
def test_b_dec_starts_at_the_geometric_median_of_the_first_training_rows(tiny_run_dict, normalize):
    from sae_lens_dit.saes.data_init import geometric_median
    from sae_lens_dit.training.harvest import harvest_chunks

    sae = {**tiny_run_dict["sae"], "normalize_activations": normalize}
    runner = DiTSAETrainingRunner(DiTSAERunnerConfig.from_dict({**tiny_run_dict, "sae": sae, "init_rows": 500}))
    factor = runner._init_from_data()
    # independent reference: the same harvest's first 500 rows, the trainer's scale sqrt(d_in) / mean norm
    rows = torch.cat(
        [
            c.activations[runner.cfg.hook_name]
            for c in harvest_chunks(runner.pipe, runner.hooked, runner.cfg.harvest, progress=False)
        ]
    ).float()[:500]
    expected_factor = 96**0.5 / float(rows.norm(dim=-1).mean()) if normalize != "none" else None
    assert factor == (pytest.approx(expected_factor, rel=1e-5) if expected_factor else None)
    torch.testing.assert_close(
        runner.sae.b_dec.data, geometric_median(rows * (expected_factor or 1.0)), rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(runner.sae.W_dec.norm(dim=-1), torch.ones(192), rtol=0, atol=1e-5)
