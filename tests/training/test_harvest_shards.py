"""A truncated harvest shard is found when the cache is checked or read, named with what to do, and
sampled again by the same harvest command (issue 18: "reported as 'wrote 12 shards'")."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from sae_lens_dit.cli import main
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.backbones import load_tiny_dit
from sae_lens_dit.training.activation_cache import check_cache_complete, read_cache, write_cache
from sae_lens_dit.training.harvest import HarvestConfig

HOOK = "blocks.1.hook_resid_post"
CFG = HarvestConfig(hook_names=(HOOK,), num_images=4, images_per_batch=2, num_inference_steps=2)


def test_truncated_shard_is_detected_then_resampled(tmp_path, capsys, caplog):
    pipe = load_tiny_dit("digits")
    out = write_cache(pipe, HookedDiT(pipe.transformer), CFG, tmp_path / "cache", model="digits")
    shard = out / "shard-00001.parquet"
    whole = pq.read_table(shard)
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"1 shard\(s\) truncated or corrupt.*shard-00001.parquet.*re-run"):
        check_cache_complete(out)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        list(read_cache(out))
    argv = [
        "harvest",
        "--output-dir",
        str(out),
        "--num-images",
        "4",
        "--images-per-batch",
        "2",
        "--num-inference-steps",
        "2",
        "--hook",
        HOOK,
    ]
    assert main(argv) == 2  # the CLI's defaults differ from CFG in other fields: refused, untouched
    assert "other settings" in capsys.readouterr().err
    write_cache(pipe, HookedDiT(pipe.transformer), CFG, out, model="digits")
    assert "shard-00001.parquet: truncated or corrupt" in caplog.text
    assert pq.read_table(shard).equals(whole)
    assert len(list(read_cache(out))) == 2


def test_the_cache_names_are_still_answered_by_the_harvest_module():
    from sae_lens_dit.training import activation_cache, harvest

    for name in ("write_cache", "read_cache", "read_cache_config", "check_cache_complete", "CARD_TAG"):
        assert getattr(harvest, name) is getattr(activation_cache, name)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        harvest.no_such_name  # noqa: B018
