"""On-disk activation caches: readable by `datasets`, equal to streaming, atomic and resumable."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import torch

from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.backbones import load_tiny_dit
from sae_lens_dit.training.activation_cache import read_cache, write_cache
from sae_lens_dit.training.harvest import HarvestConfig, harvest_chunks


@pytest.fixture(scope="module")
def digits():
    pipe = load_tiny_dit("digits")
    return pipe, HookedDiT(pipe.transformer)


def test_cache_equals_streaming_and_loads_with_datasets(digits, tmp_path, tiny_harvest):
    pipe, hooked = digits
    cfg = HarvestConfig.from_dict({**tiny_harvest, "hook_names": ["blocks.0.hook_resid_post", "blocks.3.mlp.hook_out"]})
    write_cache(pipe, hooked, cfg, tmp_path / "cache", model="digits")
    cached = list(read_cache(tmp_path / "cache"))
    streamed = list(harvest_chunks(pipe, hooked, cfg, progress=False))
    assert len(cached) == len(streamed) == cfg.num_batches
    for a, b in zip(cached, streamed, strict=True):
        for name in cfg.hook_names:
            torch.testing.assert_close(a.activations[name], b.activations[name], rtol=0, atol=0)
        for key in ("timestep", "step", "branch", "sample", "token", "label"):
            assert torch.equal(getattr(a, key), getattr(b, key)), key

    ds = datasets.load_dataset(str(tmp_path / "cache"), split="train")
    rows = sum(c.num_rows for c in cached)
    assert ds.num_rows == rows
    assert set(ds.column_names) == {*cfg.hook_names, "timestep", "step", "branch", "sample", "token", "label", "frame"}
    first = ds.with_format("torch")[: cached[0].num_rows]
    torch.testing.assert_close(first["blocks.0.hook_resid_post"], cached[0].activations["blocks.0.hook_resid_post"])
    # Metadata is what the sampler did: 4 steps, both CFG branches, 4 tokens of 64 per image.
    assert sorted(ds.unique("step")) == [0, 1, 2, 3]
    assert sorted(ds.unique("branch")) == [0, 1]
    pipe.scheduler.set_timesteps(4)
    assert sorted(ds.unique("timestep")) == sorted(float(t) for t in pipe.scheduler.timesteps)
    assert rows == cfg.num_images * 4 * 2 * 4


def test_other_settings_in_the_same_folder_are_refused(digits, tmp_path, tiny_harvest):
    pipe, hooked = digits
    cfg = HarvestConfig.from_dict({**tiny_harvest, "num_images": 8})
    write_cache(pipe, hooked, cfg, tmp_path / "c")
    before = sorted(p.name for p in (tmp_path / "c").iterdir())
    with pytest.raises(ValueError, match="other settings"):
        write_cache(pipe, hooked, HarvestConfig.from_dict({**tiny_harvest, "num_images": 8, "seed": 5}), tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == before


_HARVEST_SCRIPT = """
import sys
from sae_lens_dit.toy.backbones import load_tiny_dit
from sae_lens_dit.training.activation_cache import write_cache
from sae_lens_dit.training.harvest import HarvestConfig
from sae_lens_dit.hooking.hooked import HookedDiT
pipe = load_tiny_dit("digits")
cfg = HarvestConfig(hook_names=("blocks.1.hook_resid_post",), num_images=120, images_per_batch=4,
                    num_inference_steps=8, branch="both")
write_cache(pipe, HookedDiT(pipe.transformer), cfg, sys.argv[1], model="digits")
"""


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_killed_harvest_leaves_complete_shards_and_resumes(tmp_path):
    out = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", _HARVEST_SCRIPT, str(out)], env=_env(), stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(out.glob("shard-*.parquet"))) < 3 and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shards = sorted(out.glob("shard-*.parquet"))
    assert 3 <= len(shards) < 30, "the harvest must be killed mid-way for this test to mean anything"
    for shard in shards:  # every shard left behind is complete and readable
        datasets.Dataset.from_parquet(str(shard))
    kept = {s.name: s.stat().st_mtime_ns for s in shards}

    subprocess.run([sys.executable, "-c", _HARVEST_SCRIPT, str(out)], env=_env(), check=True, stderr=subprocess.DEVNULL)
    assert len(list(out.glob("shard-*.parquet"))) == 30
    assert not list(out.glob("*.tmp"))
    assert all(Path(out / name).stat().st_mtime_ns == t for name, t in kept.items())  # resumed, not redone
    subprocess.run(
        [sys.executable, "-c", _HARVEST_SCRIPT, str(tmp_path / "fresh")],
        env=_env(),
        check=True,
        stderr=subprocess.DEVNULL,
    )
    for a, b in zip(read_cache(out), read_cache(tmp_path / "fresh"), strict=True):
        assert torch.equal(a.activations["blocks.1.hook_resid_post"], b.activations["blocks.1.hook_resid_post"])
