"""Harvest DiT activations across the denoising trajectory: what is sampled, batch by batch.

One *harvest batch* is one pipeline call: `images_per_batch` class labels, sampled with a seed
derived from (harvest seed, batch index), recorded with `HookedDiT.record`. Everything about a
batch is a function of its index, so a cache can be resumed batch by batch and a streaming run
sees exactly the rows a cached run stores. Rows keep their metadata (timestep, denoising step,
CFG branch, sample id, token position, label) all the way to the SAE: the timestep leaves this
module as an explicit tensor beside each training batch (see `ShuffleBuffer.batches`).

Streaming (`harvest_chunks`) yields the batches' rows as they are sampled; the on-disk cache of
the same rows (`write_cache`, `read_cache`) lives in `sae_lens_dit.training.activation_cache`,
whose names this module still answers.

Data parallelism needs nothing more: rank `r` of `n` takes the batches whose index is `r` modulo
`n` (`rank`/`world_size` arguments), so the union of the ranks' rows is, by construction, exactly
the rows of a single-process harvest with the same seed, and every rank writes its own shards into
the same folder (`sae_lens_dit.training.distributed` runs this under `torchrun`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_lens_dit.conventions import DEFAULT_HOOK, Branch
from sae_lens_dit.guards.config import check_keys, check_ranges, check_types
from sae_lens_dit.guards.data import check_class_labels, check_finite
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.training.sublayers import training_rows

logger = logging.getLogger(__name__)

StorageDtype = Literal["float32", "float16"]


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
    branch: torch.Tensor  # [rows] int, 0 = cond, 1 = uncond, 2 = image_cond (`conventions.IMAGE_COND`)
    sample: torch.Tensor  # [rows] int, global image id
    token: torch.Tensor  # [rows] int, token position in the image
    label: torch.Tensor  # [rows] int, the class asked for (or the prompt's index)
    frame: torch.Tensor | None = None  # [rows] int, the token's video frame (0: an image; None: an older cache)

    @property
    def num_rows(self) -> int:
        return len(self.timestep)


@dataclass
class BatchPlan:
    """One harvest batch: its index, the conditions of its images, its seed and its first image's id."""

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


def plan_batches(pipe: Any, cfg: HarvestConfig, rank: int = 0, world_size: int = 1) -> list[BatchPlan]:
    """The batches of rank `rank` of `world_size`: every `world_size`-th batch index, from `rank`."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1} (world_size {world_size})")
    classes = class_ids(pipe, cfg)
    plans = []
    for index in range(rank, cfg.num_batches, world_size):
        first = index * cfg.images_per_batch
        count = min(cfg.images_per_batch, cfg.num_images - first)
        labels = [classes[(first + j) % len(classes)] for j in range(count)]
        plans.append(BatchPlan(index, labels, _batch_seed(cfg.seed, index), first))
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


DEFAULT_TOKEN_FRACTION = 1 / 16
"""Share of each image's tokens a harvest keeps per step when `tokens_per_image` is None (the paper's choice)."""


def sample_batch(
    pipe: Any, hooked: HookedDiT, cfg: HarvestConfig, plan: BatchPlan, keep: list[float] | None
) -> ActivationChunk:
    """Run the pipeline for one planned batch and return its recorded rows (`keep`: the timesteps kept)."""
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
        tokens_per_image=cfg.tokens_per_image,
        token_fraction=None if cfg.tokens_per_image else DEFAULT_TOKEN_FRACTION,
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
        frame=first["frame"].long(),
    )


def harvest_chunks(
    pipe: Any, hooked: HookedDiT, cfg: HarvestConfig, progress: bool = True, rank: int = 0, world_size: int = 1
) -> Iterator[ActivationChunk]:
    """Streaming mode: sample batch after batch (this rank's share) and yield their rows, nothing written to disk."""
    keep = resolve_keep_timesteps(pipe, cfg)
    for plan in tqdm(plan_batches(pipe, cfg, rank, world_size), desc="Harvesting", unit="batch", disable=not progress):
        yield sample_batch(pipe, hooked, cfg, plan, keep)


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
        """(training rows [batch_size, d], timesteps [batch_size]) pairs; a final partial batch is dropped. A sublayer
        `hook_name` (`blocks.2.mlp`) gives transcoder rows [batch_size, d_in + d_out] (`sublayers.training_rows`)."""
        held_x: list[torch.Tensor] = []
        held_t: list[torch.Tensor] = []
        count = 0
        for chunk in chunks:
            held_x.append(training_rows(chunk.activations, hook_name))  # a sublayer: its (input, output) rows
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


_MOVED_TO_CACHE = (
    "CARD_TAG",
    "METADATA_COLUMNS",
    "check_cache_complete",
    "read_cache",
    "read_cache_config",
    "write_cache",
)


def __getattr__(name: str) -> Any:
    """The activation cache's names, answered here as before they moved to `activation_cache`. Looked up
    lazily because that module builds on this one (it stores the batches sampled here)."""
    if name in _MOVED_TO_CACHE:
        from sae_lens_dit.training import activation_cache

        return getattr(activation_cache, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
