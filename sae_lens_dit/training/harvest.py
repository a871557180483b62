"""Harvest DiT activations across the denoising trajectory, streamed or cached on disk.

One *harvest batch* is one pipeline call: `images_per_batch` class labels, sampled with a seed
derived from (harvest seed, batch index), recorded with `HookedDiT.record`. Everything about a
batch is a function of its index, so a cache can be resumed batch by batch and a streaming run
sees exactly the rows a cached run stores. Rows keep their metadata (timestep, denoising step,
CFG branch, sample id, token position, label) all the way to the SAE: the timestep leaves this
module as an explicit tensor beside each training batch (see `training_batches`).

On disk a cache is a folder of parquet shards (`shard-00000.parquet`, one per harvest batch,
written to a hidden temporary name and renamed, so a killed harvest leaves only complete shards)
and a dataset card; `datasets.load_dataset(folder)` reads the shards as one train split. The card
declares no `configs:` data files on purpose: with them, `datasets` keys its cache on the folder's
name and the patterns alone, and would hand back a stale copy of another folder of the same name;
without them it fingerprints the shard files themselves. The activation columns are named after
their hooks (e.g. `blocks.2.hook_resid_post`).

Data parallelism needs nothing more: rank `r` of `n` takes the batches whose index is `r` modulo
`n` (`rank`/`world_size` arguments), so the union of the ranks' rows is, by construction, exactly
the rows of a single-process harvest with the same seed, and every rank writes its own shards into
the same folder (`sae_lens_dit.training.distributed` runs this under `torchrun`).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from sae_lens_dit.conventions import DEFAULT_HOOK, HARVEST_CONFIG_FILENAME, Branch
from sae_lens_dit.guards.config import check_keys, check_ranges, check_types
from sae_lens_dit.guards.data import check_class_labels, check_finite
from sae_lens_dit.guards.output_dirs import claim
from sae_lens_dit.hooking.hooked import HookedDiT

logger = logging.getLogger(__name__)

StorageDtype = Literal["float32", "float16"]
METADATA_COLUMNS = ("timestep", "step", "branch", "sample", "token", "label")
CARD_TAG = "# DiT activations harvested by sae-lens-dit"
"""The dataset card's title: a README.md without it is the user's and is never replaced."""


@dataclass(frozen=True)
class HarvestConfig:
    """What to sample and which activations to keep."""

    hook_names: tuple[str, ...] = (DEFAULT_HOOK,)
    """Hook points to record (names from `HookedDiT.hook_names`)."""
    class_labels: tuple[int, ...] | None = None
    """Class ids to sample, cycled over the images; None = every class of the model's label map."""
    prompts: tuple[str, ...] | None = None
    """Prompts for text-conditioned pipelines (PixArt, SD3, Flux, Sana), cycled over the images; the
    `label` column then holds the prompt's index. Set either this or class labels, not both."""
    pipeline_kwargs: dict[str, Any] | None = field(default=None, hash=False)
    """Extra keyword arguments for every pipeline call (e.g. height, width, use_resolution_binning)."""
    num_images: int = 640
    """Images to sample in total (each contributes every kept step)."""
    images_per_batch: int = 32
    """Images per pipeline call (one shard per call in the on-disk cache)."""
    num_inference_steps: int = 50
    """Denoising steps per image."""
    guidance_scale: float | None = None
    """Classifier-free guidance scale; None = the pipeline's own default."""
    keep_timesteps: int | tuple[int, ...] | None = None
    """Steps to keep: None = all, an int n = n steps spread evenly over the schedule, a tuple =
    those timestep values (they must be in the scheduler's schedule)."""
    tokens_per_image: int | None = None
    """Tokens kept per image and step; None = 1/16 of the image's tokens (the paper's choice)."""
    branch: Branch = "cond"
    """CFG branch(es) to keep: cond, uncond or both."""
    storage_dtype: StorageDtype = "float32"
    """dtype of stored activations (float16 halves disk and memory)."""
    seed: int = 0
    """Seeds images, noise and token subsampling of every batch."""

    def __post_init__(self) -> None:
        check_types(self, "harvest")
        if self.prompts is not None and self.class_labels is not None:
            raise ValueError("HarvestConfig: set prompts or class_labels, not both")
        if not self.hook_names:
            raise ValueError("HarvestConfig.hook_names is empty: name at least one hook to record")
        minimums = {"num_images": 1, "images_per_batch": 1, "num_inference_steps": 1, "tokens_per_image": 1}
        check_ranges(self, "harvest", at_least={**minimums, "guidance_scale": 0, "seed": 0})
        for name, value, options in (
            ("branch", self.branch, Branch),
            ("storage_dtype", self.storage_dtype, StorageDtype),
        ):
            if value not in get_args(options):
                raise ValueError(f"HarvestConfig.{name}={value!r}; expected one of {get_args(options)}")

    @property
    def num_batches(self) -> int:
        return -(-self.num_images // self.images_per_batch)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HarvestConfig:
        check_keys(data, [f.name for f in fields(cls)], "harvest")
        data = dict(data)
        for key in ("hook_names", "class_labels", "prompts", "keep_timesteps"):
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
        return cls(**data)


class ActivationChunk(NamedTuple):
    """The rows of one harvest batch; every tensor has the rows as its first axis."""

    activations: dict[str, torch.Tensor]  # hook name -> [rows, d_model]
    timestep: torch.Tensor  # [rows] float, DDPM scale [0, 1000]
    step: torch.Tensor  # [rows] int, denoising step index
    branch: torch.Tensor  # [rows] int, 0 = cond, 1 = uncond
    sample: torch.Tensor  # [rows] int, global image id
    token: torch.Tensor  # [rows] int, token position in the image
    label: torch.Tensor  # [rows] int, the class asked for (or the prompt's index)

    @property
    def num_rows(self) -> int:
        return len(self.timestep)


@dataclass
class _BatchPlan:
    index: int
    labels: list[int]
    seed: int
    first_sample: int


def _batch_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def class_ids(pipe: Any, cfg: HarvestConfig) -> list[int]:
    """The conditions a harvest cycles through: prompt indices, its class ids, or the pipeline's label map."""
    if cfg.prompts is not None:
        if "prompt" not in inspect.signature(pipe.__call__).parameters:
            raise ValueError(
                f"harvest.prompts: {type(pipe).__name__} is class-conditional and takes no prompt; set "
                "class_labels (or leave both unset for every class)"
            )
        return list(range(len(cfg.prompts)))
    if cfg.class_labels is not None:
        check_class_labels(pipe, cfg.class_labels, "harvest.class_labels")
        return list(cfg.class_labels)
    labels = getattr(pipe, "labels", None)
    if not labels:
        raise ValueError(
            "HarvestConfig.class_labels is None but the pipeline has no label map (pipe.labels); "
            "set class_labels, or prompts for a text-conditioned pipeline"
        )
    return sorted(set(labels.values()))


def _plan(pipe: Any, cfg: HarvestConfig, rank: int = 0, world_size: int = 1) -> list[_BatchPlan]:
    """The batches of rank `rank` of `world_size`: every `world_size`-th batch index, from `rank`."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1} (world_size {world_size})")
    classes = class_ids(pipe, cfg)
    plans = []
    for index in range(rank, cfg.num_batches, world_size):
        first = index * cfg.images_per_batch
        count = min(cfg.images_per_batch, cfg.num_images - first)
        labels = [classes[(first + j) % len(classes)] for j in range(count)]
        plans.append(_BatchPlan(index, labels, _batch_seed(cfg.seed, index), first))
    return plans


def resolve_keep_timesteps(pipe: Any, cfg: HarvestConfig) -> list[float] | None:
    """The scheduler timesteps `cfg.keep_timesteps` selects (None = keep every step)."""
    if cfg.keep_timesteps is None:
        return None
    pipe.scheduler.set_timesteps(cfg.num_inference_steps)
    schedule = [float(t) for t in pipe.scheduler.timesteps]
    if isinstance(cfg.keep_timesteps, int):
        n = cfg.keep_timesteps
        if not 1 <= n <= len(schedule):
            raise ValueError(f"keep_timesteps={n}: expected 1..{len(schedule)} (num_inference_steps)")
        return [schedule[i] for i in np.linspace(0, len(schedule) - 1, n).round().astype(int)]
    missing = [t for t in cfg.keep_timesteps if float(t) not in schedule]
    if missing:
        raise ValueError(
            f"keep_timesteps {missing} are not in the scheduler's schedule for "
            f"{cfg.num_inference_steps} steps: {schedule}"
        )
    return [float(t) for t in cfg.keep_timesteps]


def default_tokens_per_image(hooked: HookedDiT, cfg: HarvestConfig) -> int:
    return cfg.tokens_per_image or max(1, hooked.image_tokens // 16)


def _run_batch(pipe: Any, hooked: HookedDiT, cfg: HarvestConfig, plan: _BatchPlan, keep) -> ActivationChunk:
    dtype = getattr(torch, cfg.storage_dtype)
    generator = torch.Generator(device=pipe.device).manual_seed(plan.seed)
    kwargs = dict(cfg.pipeline_kwargs or {})
    if cfg.guidance_scale is not None:
        kwargs["guidance_scale"] = cfg.guidance_scale
    if cfg.prompts is not None:
        kwargs["prompt"] = [cfg.prompts[i] for i in plan.labels]
    else:
        kwargs["class_labels"] = plan.labels
    with hooked.record(
        list(cfg.hook_names),
        tokens_per_image=default_tokens_per_image(hooked, cfg),
        timesteps=keep,
        branch=cfg.branch,
        dtype=dtype,
        device="cpu",
        seed=plan.seed,
    ) as rec:
        pipe(num_inference_steps=cfg.num_inference_steps, generator=generator, output_type="np", **kwargs)
    rows = {name: rec.rows(name) for name in cfg.hook_names}
    for name, r in rows.items():
        images = f"images {plan.first_sample}..{plan.first_sample + len(plan.labels) - 1}"
        check_finite(r["activation"], f"harvest batch {plan.index} ({images}, hook {name})", cfg)
    first = rows[cfg.hook_names[0]]
    for name, other in rows.items():
        if not torch.equal(other["token"], first["token"]) or not torch.equal(other["sample"], first["sample"]):
            raise RuntimeError(f"hook {name} kept other tokens than {cfg.hook_names[0]}; cannot store them as one row")
    labels = torch.tensor(plan.labels, dtype=torch.long)[first["sample"].long()]
    return ActivationChunk(
        activations={name: r["activation"] for name, r in rows.items()},
        timestep=first["timestep"].float(),
        step=first["step"].long(),
        branch=first["branch"].long(),
        sample=first["sample"].long() + plan.first_sample,
        token=first["token"].long(),
        label=labels,
    )


def harvest_chunks(
    pipe: Any, hooked: HookedDiT, cfg: HarvestConfig, progress: bool = True, rank: int = 0, world_size: int = 1
) -> Iterator[ActivationChunk]:
    """Streaming mode: sample batch after batch (this rank's share) and yield their rows, nothing written to disk."""
    keep = resolve_keep_timesteps(pipe, cfg)
    for plan in tqdm(_plan(pipe, cfg, rank, world_size), desc="Harvesting", unit="batch", disable=not progress):
        yield _run_batch(pipe, hooked, cfg, plan, keep)


def _chunk_to_table(chunk: ActivationChunk) -> pa.Table:
    columns: dict[str, pa.Array] = {}
    for name, acts in chunk.activations.items():
        flat = acts.numpy().reshape(-1)
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat), acts.shape[1])
    for key in METADATA_COLUMNS:
        values = getattr(chunk, key).numpy()
        columns[key] = pa.array(values.astype(np.float32 if key == "timestep" else np.int64))
    return pa.table(columns)


def _table_to_chunk(table: pa.Table, hook_names: tuple[str, ...], dtype: torch.dtype) -> ActivationChunk:
    acts = {}
    for name in hook_names:
        column = table.column(name).combine_chunks()
        flat = column.values.to_numpy(zero_copy_only=False)
        acts[name] = torch.from_numpy(flat.reshape(len(column), column.type.list_size).copy()).to(dtype)
    meta = {key: torch.from_numpy(table.column(key).to_numpy().copy()) for key in METADATA_COLUMNS}
    meta["timestep"] = meta["timestep"].float()
    return ActivationChunk(activations=acts, **meta)


def _dataset_card(cfg: HarvestConfig, model: str) -> str:
    return (
        "---\ntags:\n- sae-lens-dit\n- activations\n---\n"
        f"{CARD_TAG}\n\nModel: `{model}`. Hooks: "
        f"{', '.join(f'`{h}`' for h in cfg.hook_names)}. One row per kept token; columns: the hooks' "
        "activations, `timestep` (DDPM scale [0, 1000], 1000 = noise), `step`, `branch` (0 cond, 1 uncond), "
        "`sample`, `token`, `label` (class id, or prompt index).\n\n```python\nimport datasets\n"
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
    mine = _plan(pipe, cfg, rank, world_size)
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
            table = _chunk_to_table(_run_batch(pipe, hooked, cfg, plan, keep))
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


@dataclass
class ShuffleBuffer:
    """Mixes rows across harvest batches before they reach the trainer (deterministic in `seed`).

    Rows of one harvest batch are highly correlated (same images, consecutive steps), so rows are
    pooled until `size` are held, shuffled, and the first half leaves as training batches.
    """

    size: int = 16384
    """Rows held before shuffling; larger mixes better and costs memory."""
    seed: int = 0
    _generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._generator = torch.Generator().manual_seed(self.seed)

    def batches(
        self, chunks: Iterator[ActivationChunk], hook_name: str, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(activations [batch_size, d], timesteps [batch_size]) pairs; a final partial batch is dropped."""
        held_x: list[torch.Tensor] = []
        held_t: list[torch.Tensor] = []
        count = 0
        for chunk in chunks:
            if hook_name not in chunk.activations:
                raise KeyError(f"hook {hook_name!r} not in the harvested activations {sorted(chunk.activations)}")
            held_x.append(chunk.activations[hook_name])
            held_t.append(chunk.timestep)
            count += chunk.num_rows
            if count >= self.size:
                x, t = self._shuffle(held_x, held_t)
                keep = max(batch_size, (len(x) // 2) // batch_size * batch_size)
                out_x, out_t = x[:keep], t[:keep]
                held_x, held_t, count = [x[keep:]], [t[keep:]], len(x) - keep
                for i in range(0, keep - batch_size + 1, batch_size):
                    yield out_x[i : i + batch_size], out_t[i : i + batch_size]
        if count:
            x, t = self._shuffle(held_x, held_t)
            for i in range(0, len(x) - batch_size + 1, batch_size):
                yield x[i : i + batch_size], t[i : i + batch_size]

    def _shuffle(self, xs: list[torch.Tensor], ts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, t = torch.cat(xs), torch.cat(ts)
        perm = torch.randperm(len(x), generator=self._generator)
        return x[perm], t[perm]
