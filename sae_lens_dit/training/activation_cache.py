"""The on-disk activation cache: one parquet shard per harvest batch, resumable, readable by `datasets`.

Why a module of its own: the harvest (`sae_lens_dit.training.harvest`) decides what is sampled;
this module decides how its rows are stored, resumed and read back. A cache is a folder of parquet
shards (`shard-00000.parquet`, one per harvest batch, written to a hidden temporary name and
renamed, so a killed harvest leaves only complete shards), the harvest settings it was made with
and a dataset card; `datasets.load_dataset(folder)` reads the shards as one train split. The card
declares no `configs:` data files on purpose: with them, `datasets` keys its cache on the folder's
name and the patterns alone, and would hand back a stale copy of another folder of the same name;
without them it fingerprints the shard files themselves. The activation columns are named after
their hooks (e.g. `blocks.2.hook_resid_post`).

Every batch is a function of its index, so a cache resumes batch by batch and its rows are exactly
the rows a streaming run sees. Data parallelism needs nothing more: rank `r` of `n` writes the
shards whose index is `r` modulo `n` into the same folder (`sae_lens_dit.training.distributed`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from sae_lens_dit.conventions import HARVEST_CONFIG_FILENAME
from sae_lens_dit.guards.output_dirs import claim
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.training.harvest import (
    ActivationChunk,
    HarvestConfig,
    plan_batches,
    resolve_keep_timesteps,
    sample_batch,
)

logger = logging.getLogger(__name__)

METADATA_COLUMNS = ("timestep", "step", "branch", "sample", "token", "label")
"""The columns of a shard besides the activations (one per hook) and `frame` (absent from older caches)."""
CARD_TAG = "# DiT activations harvested by sae-lens-dit"
"""The dataset card's title: a README.md without it is the user's and is never replaced."""


def _chunk_to_table(chunk: ActivationChunk) -> pa.Table:
    columns: dict[str, pa.Array] = {}
    for name, acts in chunk.activations.items():
        flat = acts.numpy().reshape(-1)
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat), acts.shape[1])
    for key in METADATA_COLUMNS:
        values = getattr(chunk, key).numpy()
        columns[key] = pa.array(values.astype(np.float32 if key == "timestep" else np.int64))
    if chunk.frame is not None:
        columns["frame"] = pa.array(chunk.frame.numpy().astype(np.int64))
    return pa.table(columns)


def _table_to_chunk(table: pa.Table, hook_names: tuple[str, ...], dtype: torch.dtype) -> ActivationChunk:
    acts = {}
    for name in hook_names:
        column = table.column(name).combine_chunks()
        flat = column.values.to_numpy(zero_copy_only=False)
        acts[name] = torch.from_numpy(flat.reshape(len(column), column.type.list_size).copy()).to(dtype)
    meta = {key: torch.from_numpy(table.column(key).to_numpy().copy()) for key in METADATA_COLUMNS}
    meta["timestep"] = meta["timestep"].float()
    frame = torch.from_numpy(table.column("frame").to_numpy().copy()) if "frame" in table.column_names else None
    return ActivationChunk(activations=acts, **meta, frame=frame)


def _dataset_card(cfg: HarvestConfig, model: str) -> str:
    return (
        "---\ntags:\n- sae-lens-dit\n- activations\n---\n"
        f"{CARD_TAG}\n\nModel: `{model}`. Hooks: "
        f"{', '.join(f'`{h}`' for h in cfg.hook_names)}. One row per kept token; columns: the hooks' "
        "activations, `timestep` (DDPM scale [0, 1000], 1000 = noise), `step`, `branch` (0 cond, 1 uncond, "
        "2 image_cond), `sample`, `token`, `label` (class id, or prompt index), `frame` (the token's video frame, "
        "0 for images)."
        "\n\n```python\nimport datasets\n"
        'ds = datasets.load_dataset(FOLDER, split="train")\n```\n'
        f"\nHarvest settings: `{json.dumps(cfg.to_dict())}`\n"
    )


def write_cache(
    pipe: Any,
    hooked: HookedDiT,
    cfg: HarvestConfig,
    output_dir: str | Path,
    model: str = "",
    rank: int = 0,
    world_size: int = 1,
) -> Path:
    """Cached mode: write one parquet shard per harvest batch into `output_dir`, resuming.

    Shards already present (complete, by construction) are kept; the folder must have been made
    by the same harvest settings, otherwise nothing is touched and a ValueError says so. With
    `world_size` > 1 this process writes only rank `rank`'s shards (see the module docstring); the
    ranks may run at once on one shared folder.
    """
    out = claim(output_dir, "harvest", legacy=(HARVEST_CONFIG_FILENAME,))
    cfg_path = out / HARVEST_CONFIG_FILENAME
    record = json.loads(json.dumps({"harvest": cfg.to_dict(), "model": model}))  # tuples as JSON reads them back
    if cfg_path.exists():
        existing = json.loads(cfg_path.read_text())
        if existing != record:
            raise ValueError(
                f"{out} holds a harvest with other settings ({cfg_path}); choose another --output-dir "
                "or delete that folder to start over"
            )
    else:
        _atomic_write_text(cfg_path, json.dumps(record, indent=2))
        card = out / "README.md"
        if not card.exists() or CARD_TAG in card.read_text(errors="replace"):  # never replace the user's README
            _atomic_write_text(card, _dataset_card(cfg, model))
    keep = resolve_keep_timesteps(pipe, cfg)
    mine = plan_batches(pipe, cfg, rank, world_size)
    plans = [p for p in mine if _shard_problem(_shard_path(out, p.index)) is not None]
    for plan in plans:
        problem = _shard_problem(_shard_path(out, plan.index))
        if problem != "missing":
            logger.warning("%s: %s; sampling that batch again", _shard_path(out, plan.index), problem)
    where = f"rank {rank} of {world_size}" if world_size > 1 else "harvest"
    done = len(mine) - len(plans)
    if done:
        logger.info("%s resuming in %s: %d of its %d shards already written", where, out, done, len(mine))
    for plan in tqdm(plans, desc="Harvesting", unit="batch", initial=done, total=len(mine), disable=rank != 0):
        shard = _shard_path(out, plan.index)
        try:
            table = _chunk_to_table(sample_batch(pipe, hooked, cfg, plan, keep))
        except Exception:
            logger.error(
                "%s failed on %s; the complete shards in %s are kept: run the same command again to resume",
                where,
                shard.name,
                out,
            )
            raise
        tmp = shard.with_name(f".{shard.name}.tmp")  # hidden: `datasets` never reads a shard being written
        pq.write_table(table, tmp)
        problem = _shard_problem(tmp)
        if problem is not None or pq.read_metadata(tmp).num_rows != table.num_rows:
            raise OSError(
                f"{shard}: the file just written does not read back ({problem or 'rows missing'}); "
                "check the disk (full? failing?) and run the same command again to resume"
            )
        os.replace(tmp, shard)
    return out


def _shard_path(out: Path, index: int) -> Path:
    return out / f"shard-{index:05d}.parquet"


def _shard_problem(path: Path) -> str | None:
    """None for a complete parquet file (its footer reads), else what is wrong with it."""
    if not path.exists():
        return "missing"
    try:
        pq.read_metadata(path)
    except (pa.ArrowException, OSError) as err:
        return f"truncated or corrupt ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    return None


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: ranks may write the same file at once
    tmp.write_text(text)
    os.replace(tmp, path)


def read_cache_config(cache_dir: str | Path) -> tuple[HarvestConfig, str]:
    """(harvest settings, model) of a cache folder written by `write_cache`."""
    path = Path(cache_dir) / HARVEST_CONFIG_FILENAME
    if not path.exists():
        raise FileNotFoundError(
            f"{cache_dir} is not an activation cache (no {HARVEST_CONFIG_FILENAME}); run `sae-lens-dit harvest` first"
        )
    record = json.loads(path.read_text())
    return HarvestConfig.from_dict(record["harvest"]), record.get("model", "")


def check_cache_complete(cache_dir: str | Path) -> HarvestConfig:
    """The cache's harvest settings, once every shard is there; an incomplete cache is an error."""
    cfg, _ = read_cache_config(cache_dir)
    problems = {i: _shard_problem(_shard_path(Path(cache_dir), i)) for i in range(cfg.num_batches)}
    broken = [i for i, problem in problems.items() if problem not in (None, "missing")]
    if broken:
        raise ValueError(
            f"activation cache {cache_dir}: {len(broken)} shard(s) {problems[broken[0]]}, e.g. "
            f"{_shard_path(Path(cache_dir), broken[0]).name}; re-run the same harvest to sample them again"
        )
    missing = [i for i, problem in problems.items() if problem == "missing"]
    if missing:
        raise FileNotFoundError(
            f"activation cache {cache_dir} is incomplete ({len(missing)} of {cfg.num_batches} shards missing, "
            f"e.g. {_shard_path(Path(cache_dir), missing[0]).name}); re-run the same harvest to resume it"
        )
    return cfg


def read_cache(cache_dir: str | Path, rank: int = 0, world_size: int = 1) -> Iterator[ActivationChunk]:
    """The chunks of a complete cache in harvest order (rank `rank` of `world_size`: its share only)."""
    cfg = check_cache_complete(cache_dir)
    dtype = getattr(torch, cfg.storage_dtype)
    for index in range(rank, cfg.num_batches, world_size):
        shard = _shard_path(Path(cache_dir), index)
        try:
            table = pq.read_table(shard)
        except (pa.ArrowException, OSError) as err:
            raise ValueError(
                f"{shard}: cannot read it ({type(err).__name__}: {err}); it is truncated or corrupt: "
                "delete it and re-run the same harvest to sample it again"
            ) from None
        yield _table_to_chunk(table, cfg.hook_names, dtype)
