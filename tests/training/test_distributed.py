"""Data parallelism on torch.distributed (CPU, gloo, 2 processes): harvests under `torchrun` equal a
single-process harvest, a rank that dies fails the run and a re-run resumes, and a data-parallel
training step equals one process training on the union of the ranks' batches."""

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import torch
import torch.multiprocessing as mp
from sae_lens import SAE, SAETrainer
from sae_lens.config import SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from sae_lens.saes.sae import TrainStepInput
from safetensors.torch import load_file, save_file

from sae_lens_dit.cli import main
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.saes import feed_timesteps
from sae_lens_dit.toy.backbones import load_tiny_dit
from sae_lens_dit.training import activation_cache
from sae_lens_dit.training.activation_cache import check_cache_complete, read_cache, read_cache_config, write_cache
from sae_lens_dit.training.distributed import DistributedSAETrainer, all_reduce_gradients, init_from_env, shutdown
from sae_lens_dit.training.harvest import HarvestConfig
from sae_lens_dit.training.runner import DiTSAERunnerConfig, DiTSAETrainingRunner

BIN = Path(sys.executable).parent
HARVEST_ARGS = [
    "harvest",
    "--hook",
    "blocks.1.hook_resid_post",
    "--num-inference-steps",
    "4",
    "--images-per-batch",
    "4",
]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def _torchrun(*command: str) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 ...`, through the venv's python so it works in CI."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *command],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _single_process_harvest(cache: Path, out: Path) -> Path:
    cfg, model = read_cache_config(cache)
    pipe = load_tiny_dit("digits")
    return write_cache(pipe, HookedDiT(pipe.transformer), cfg, out, model=model)


def _rows(cache: Path) -> dict[tuple[int, ...], tuple]:
    """Every row of a cache read by `datasets`, keyed by (sample, step, branch, token)."""
    ds = datasets.load_dataset(str(cache), split="train").with_format("numpy")[:]
    keys = zip(ds["sample"], ds["step"], ds["branch"], ds["token"], strict=True)
    values = zip(ds["blocks.1.hook_resid_post"], ds["timestep"], ds["label"], strict=True)
    return {
        tuple(int(k) for k in key): (acts.tobytes(), float(t), int(label))
        for key, (acts, t, label) in zip(keys, values, strict=True)
    }


@pytest.mark.slow
def test_two_process_harvest_equals_one_process_harvest(tmp_path):
    two = tmp_path / "two"
    run = _torchrun(
        "--no-python",
        str(BIN / "sae-lens-dit"),
        *HARVEST_ARGS,
        "--num-images",
        "24",
        "--seed",
        "3",
        "--output-dir",
        str(two),
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "from 2 processes" in run.stdout
    one = _single_process_harvest(two, tmp_path / "one")

    rows_two, rows_one = _rows(two), _rows(one)  # one dataset from both ranks' shards
    assert len(rows_two) == 24 * 4 * 2 * 4  # images x steps x CFG branches x tokens (1/16 of 64)
    assert rows_two == rows_one
    assert sorted(p.name for p in two.glob("shard-*")) == [f"shard-{i:05d}.parquet" for i in range(6)]
    for a, b in zip(read_cache(two), read_cache(one), strict=True):  # the package's reader agrees, in order
        assert torch.equal(a.activations["blocks.1.hook_resid_post"], b.activations["blocks.1.hook_resid_post"])
        assert torch.equal(a.sample, b.sample)


def test_datasets_reads_each_cache_not_a_stale_copy_of_a_same_named_folder(tmp_path):
    pipe = load_tiny_dit("digits")
    hooked = HookedDiT(pipe.transformer)
    for seed in (1, 2):  # two harvests in folders of one name (datasets once keyed its cache on the name)
        cfg = HarvestConfig(
            hook_names=("blocks.1.hook_resid_post",), num_images=4, images_per_batch=4, num_inference_steps=2, seed=seed
        )
        write_cache(pipe, hooked, cfg, tmp_path / str(seed) / "acts")
    (tmp_path / "2" / "acts" / ".shard-00001.parquet.tmp").write_bytes(b"half a shard")  # as a killed harvest leaves
    first, second = (_rows(tmp_path / str(seed) / "acts") for seed in (1, 2))
    assert first != second
    assert second == {key: value for chunk in read_cache(tmp_path / "2" / "acts") for key, value in _chunk_rows(chunk)}


def _chunk_rows(chunk):
    acts = chunk.activations["blocks.1.hook_resid_post"].numpy()
    for i in range(chunk.num_rows):
        key = tuple(int(getattr(chunk, k)[i]) for k in ("sample", "step", "branch", "token"))
        yield key, (acts[i].tobytes(), float(chunk.timestep[i]), int(chunk.label[i]))


def _cli_rank(rank: int, argv: list[str], dying_rank: int | None = None) -> None:
    """`sae-lens-dit <argv>` as one rank; `dying_rank` fails on its third batch, once rank 0 wrote two shards."""
    logging.basicConfig(force=True, format="%(levelname)s %(name)s: %(message)s")  # as the console script does
    if rank == dying_rank:
        out, run_batch = Path(argv[argv.index("--output-dir") + 1]), activation_cache.sample_batch

        def dying(pipe, hooked, cfg, plan, keep):
            if plan.index == 5:
                deadline = time.time() + 120
                while not (out / "shard-00002.parquet").exists() and time.time() < deadline:
                    time.sleep(0.05)
                raise RuntimeError(f"simulated failure of rank {rank}")
            return run_batch(pipe, hooked, cfg, plan, keep)

        activation_cache.sample_batch = dying
    if code := main(argv):
        raise SystemExit(code)


def test_a_rank_that_dies_fails_the_harvest_and_a_rerun_resumes(tmp_path, capfd):
    out = tmp_path / "cache"
    argv = [*HARVEST_ARGS, "--num-images", "32", "--output-dir", str(out)]  # ranks: 0 -> shards 0,2,4,6; 1 -> 1,3,5,7
    with pytest.raises(mp.ProcessRaisedException, match="simulated failure of rank 1"):
        _launch(_cli_rank, argv, 1)  # like torchrun, the launcher stops the other rank and fails
    assert "rank 1 of 2 failed on shard-00005.parquet" in capfd.readouterr().err
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    assert {"shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet", "shard-00003.parquet"} <= set(kept)
    assert "shard-00005.parquet" not in kept
    with pytest.raises(FileNotFoundError, match="incomplete"):
        check_cache_complete(out)

    _launch(_cli_rank, argv)  # the same command again, without the failure
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # both ranks' shards were kept
    assert len(list(out.glob("shard-*.parquet"))) == 8 and not list(out.glob("*.tmp"))
    assert _rows(out) == _rows(_single_process_harvest(out, tmp_path / "one"))


# -- training --------------------------------------------------------------------------------------

STEPS, ROWS, D_IN = 3, 32, 16  # ROWS = the global batch; each of the 2 ranks gets half


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(fn, *args) -> None:
    """Run `fn(rank, *args)` in 2 forked processes with the environment torchrun would set."""
    mp.start_processes(_rank_main, args=(fn, _free_port(), *args), nprocs=2, start_method="fork")


def _rank_main(rank: int, fn, port: int, *args) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    try:
        fn(rank, *args)
    finally:
        shutdown()


def _new_sae(architecture: str):
    torch.manual_seed(0)
    sae_cls, cfg_cls = get_sae_training_class(architecture)
    return sae_cls(cfg_cls(d_in=D_IN, d_sae=64, k=4))


def _trained(architecture: str, trainer_cls: type, batches, timesteps) -> SAETrainer:
    sae = _new_sae(architecture)
    cfg = SAETrainerConfig(
        total_training_samples=STEPS * ROWS,
        train_batch_size_samples=ROWS,
        lr=1e-2,
        lr_end=1e-3,
        dead_feature_window=1,
        feature_sampling_window=1000,
    )
    trainer = trainer_cls(cfg, sae, feed_timesteps(zip(batches, timesteps, strict=True), sae))
    trainer.fit()
    return trainer


def _state(trainer: SAETrainer) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone() for k, v in trainer.sae.state_dict().items()}
    return {**state, "act_freq_scores": trainer.act_freq_scores, "since_fired": trainer.n_forward_passes_since_fired}


def _gradients(architecture: str, x: torch.Tensor, t: torch.Tensor, data_parallel: bool) -> dict[str, torch.Tensor]:
    """d(loss)/d(parameters) of one batch, with the ranks' gradients averaged when `data_parallel`."""
    sae = _new_sae(architecture)
    handles = all_reduce_gradients(sae) if data_parallel else []
    coefficients = {k: getattr(c, "value", c) for k, c in sae.get_coefficients().items()}
    step = TrainStepInput(
        sae_in=next(feed_timesteps([(x, t)], sae)),
        coefficients=coefficients,
        dead_neuron_mask=None,
        n_training_steps=0,
        is_logging_step=False,
    )
    sae.training_forward_pass(step).loss.backward()
    for handle in handles:
        handle.remove()
    return {f"grad.{name}": p.grad for name, p in sae.named_parameters()}


def _data_parallel_steps(rank: int, architecture: str, x: torch.Tensor, t: torch.Tensor, out: Path) -> None:
    init_from_env()
    half = slice(rank * ROWS // 2, (rank + 1) * ROWS // 2)
    gradients = _gradients(architecture, x[0, half], t[0, half], data_parallel=True)
    trainer = _trained(architecture, DistributedSAETrainer, list(x[:, half]), list(t[:, half]))
    assert trainer.n_training_samples == STEPS * ROWS and trainer.n_frac_active_samples == STEPS * ROWS
    save_file({**_state(trainer), **gradients}, str(out / f"rank{rank}.safetensors"))


@pytest.mark.parametrize("architecture", ["tide", "topk"])
def test_data_parallel_steps_equal_one_process_on_the_union_of_batches(architecture, tmp_path):
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(STEPS, ROWS, D_IN, generator=generator) * torch.linspace(0.2, 3.0, D_IN)
    t = torch.rand(STEPS, ROWS, generator=generator) * 1000
    _launch(_data_parallel_steps, architecture, x, t, tmp_path)
    # One process on the union of the batches: its first gradient, then the 3 steps.
    reference = {
        **_state(_trained(architecture, SAETrainer, list(x), list(t))),
        **_gradients(architecture, x[0], t[0], data_parallel=False),
    }

    # Dead latents after step 2 (window 1) make step 3's AuxK depend on the merged statistics.
    assert 0 < int((reference["since_fired"] > 1).sum()) < 64
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert ranks[0].keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), f"ranks disagree on {key}"
        # Gradients agree to float rounding (another summation order). Adam divides each update by
        # the gradient's running RMS, so where a gradient is near zero (TIDE's zero-initialised
        # timestep MLP in early steps) that rounding moves an update by up to ~1e-3 of the lr (1e-2).
        atol = 1e-6 if key.startswith("grad.") else 5e-5
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-5, atol=atol, msg=key)
    moved = (reference["W_dec"] - _new_sae(architecture).W_dec).abs().max()
    assert moved > 1e-3, "the steps must move the weights for this test to mean anything"


def _runner_rank(rank: int, cfg: dict, out: Path) -> None:
    sae = DiTSAETrainingRunner(DiTSAERunnerConfig.from_dict(cfg)).run()
    save_file({k: v.detach().contiguous() for k, v in sae.state_dict().items()}, str(out / f"rank{rank}.safetensors"))


def test_runner_trains_data_parallel_and_only_rank_0_writes(tiny_run_dict, tmp_path):
    cfg = {**tiny_run_dict, "data_mode": "cached", "wandb_mode": "offline", "training_tokens": 64 * 10}
    _launch(_runner_rank, cfg, tmp_path)
    run = Path(cfg["output_dir"])
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    loaded = SAE.load_from_disk(str(run))  # rank 0 saved it in SAELens's format
    assert loaded.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    assert (run / "eval.json").exists()
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # rank 1 logs nothing
    shards = sorted(p.name for p in (run / "activations").glob("shard-*.parquet"))
    assert shards == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
