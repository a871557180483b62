"""Train an SAE on DiT activations through SAELens's `SAETrainer`.

The runner checks everything it can before any long work (model, hook, `d_in`, output folder),
then harvests activations (streaming, or into a reusable on-disk cache), mixes them in a shuffle
buffer, and hands SAETrainer a data provider of bare activation batches. The timesteps of each
batch travel beside it through `feed_timesteps` (the seam documented in `saes.tide_sae`). Every
registered SAELens training architecture trains this way; the plain ones ignore the timestep.

Output, in SAELens's format: `cfg.json` (metadata: model, hook, timestep convention, harvest
settings), `sae_weights.safetensors`, `sparsity.safetensors`, `runner_cfg.json`, plus
`eval.json`/`eval.md` (held-out reconstruction per timestep bucket). Checkpoints go to
`checkpoints/<samples>/` and a run started again with the same config resumes from the newest.

Under `torchrun` / `accelerate launch` the same runner trains with data parallelism
(`sae_lens_dit.training.distributed`): every rank harvests (or reads) its share of the harvest batches and
feeds `batch_size / world_size` rows per step to a `DistributedSAETrainer`, so `batch_size` and
`training_tokens` keep their single-process meaning; rank 0 alone evaluates, saves and logs to wandb.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from itertools import count
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import wandb
from sae_lens import LoggingConfig, SAETrainer, TrainingSAE, TrainingSAEConfig
from sae_lens.config import SAETrainerConfig
from sae_lens.constants import RUNNER_CFG_FILENAME, SPARSITY_FILENAME, TRAINER_STATE_FILENAME
from sae_lens.registry import get_sae_training_class
from safetensors.torch import save_file

from sae_lens_dit.analysis.evals import (
    BucketMetrics,
    LatentUsage,
    format_bucket_table,
    latent_usage,
    reconstruction_by_bucket,
)
from sae_lens_dit.conventions import (
    DATA_STATE_FILENAME,
    DEFAULT_HOOK,
    EVAL_JSON,
    EVAL_MD,
    TIDE_ARCHITECTURE,
    TIMESTEP_CONVENTION,
)
from sae_lens_dit.guards.config import ConfigError, check_keys, check_ranges, check_types, training_sae_config
from sae_lens_dit.guards.data import finite_batches
from sae_lens_dit.guards.output_dirs import check_claimable, claim
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.saes import feed_timesteps
from sae_lens_dit.saes.data_init import BDecInit, init_from_rows
from sae_lens_dit.toy.backbones import load_pipeline
from sae_lens_dit.training.distributed import DistributedSAETrainer, harvest_to_cache, init_from_env
from sae_lens_dit.training.harvest import (
    ActivationChunk,
    HarvestConfig,
    ShuffleBuffer,
    class_ids,
    harvest_chunks,
    read_cache,
    resolve_keep_timesteps,
)

logger = logging.getLogger(__name__)

DataMode = Literal["streaming", "cached"]
WandbMode = Literal["offline", "online", "disabled"]


FALLBACK_LR = 4e-4
DEFAULT_LR: dict[str, float] = {
    TIDE_ARCHITECTURE: 1e-3,
    "topk": 4e-4,
    "topk_sparse": 4e-4,
    "batchtopk": 4e-4,
    "standard": 4e-3,
}
"""Learning rate per training architecture when `lr` is None, from the recipe sweep (d_sae 1536, k 16,
2M rows in batches of 4096 on the bundled backbones: `benchmarks/results/recipe_sweep_*.md`); others 4e-4."""


@dataclass
class DiTSAERunnerConfig:
    """Everything one SAE training run needs; `to_dict`/`from_dict` round-trip through JSON/YAML."""

    sae: TrainingSAEConfig
    """The SAE to train: a config of any registered SAELens training architecture (d_in must match the hook)."""
    model: str = "digits"
    """Bundled backbone name (digits, shapes), a local diffusers pipeline folder, or a Hub repo id."""
    hook_name: str = DEFAULT_HOOK
    """Hook point whose activations the SAE reconstructs."""
    harvest: HarvestConfig = field(default_factory=HarvestConfig)
    """Training activations: what to sample and what to keep (its hook_names must include hook_name)."""
    eval_images: int = 64
    """Held-out images (new seeds) for the per-timestep evaluation and the dead/dense latent count."""
    data_mode: DataMode = "streaming"
    """streaming: harvest while training; cached: write/read an on-disk cache first (reusable)."""
    cache_dir: str | None = None
    """Activation cache for cached mode; None = <output_dir>/activations."""
    training_tokens: int = 1_000_000
    """Activation rows to train on (several passes over the harvest if it holds fewer)."""
    batch_size: int = 4096
    """Rows per training step."""
    shuffle_buffer: int = 65536
    """Rows mixed across harvest batches before training batches are drawn."""
    lr: float | None = None
    """Adam learning rate; None = the architecture's measured default (`DEFAULT_LR`, else 4e-4)."""
    lr_warm_up_steps: int = 0
    """Linear warm-up steps."""
    lr_decay_steps: int = 0
    """Steps of linear decay to lr_end at the end of training."""
    lr_end: float | None = None
    """Final learning rate of the decay; None = lr / 10."""
    dead_feature_window: int = 20
    """Steps without firing after which a latent counts as dead and AuxK trains it. It must be short against the
    run: at 200 of the preset's 488 steps AuxK barely acted (recipe sweep); 20 steps of 4096 rows is 82k rows."""
    b_dec_init: BDecInit = "geometric_median"
    """Where b_dec starts: the geometric_median or mean of `init_rows` training rows, or zeros (SAELens's
    start). DiT activations are mostly their mean; from zeros most latents never fire (see saes.data_init)."""
    unit_decoder_init: bool = True
    """For SAEs whose codes scale with the decoder norm (TopK family, TIDE): start with unit-norm decoder
    rows and the encoder as their transpose, so a fresh latent's code is its projection (SAELens starts at
    norm 0.1: codes 100x too small, most latents die). Other architectures keep their own start."""
    init_rows: int = 65536
    """Training rows read before the first step for b_dec_init (and the input scale)."""
    feature_sampling_window: int = 500
    """Steps per window of latent-frequency statistics."""
    n_checkpoints: int = 0
    """Checkpoints written during training (resumable)."""
    device: str = "cpu"
    """Device for the backbone and the SAE."""
    seed: int = 0
    """Seeds SAE initialisation and the shuffle buffer; the harvest has its own seed."""
    output_dir: str = "runs/tide-digits"
    """Folder for the trained SAE, checkpoints, evaluation and (cached mode) activations."""
    wandb_mode: WandbMode = "offline"
    """wandb mode; offline keeps the run under <output_dir>/wandb with no network."""
    wandb_project: str = "sae-lens-dit"
    """wandb project name."""
    wandb_log_frequency: int = 10
    """Training steps between wandb logs."""

    def __post_init__(self) -> None:
        check_types(self, "config")
        counts = (
            "eval_images",
            "training_tokens",
            "batch_size",
            "shuffle_buffer",
            "dead_feature_window",
            "feature_sampling_window",
            "wandb_log_frequency",
            "init_rows",
        )
        at_least = {
            **dict.fromkeys(counts, 1),
            **dict.fromkeys(("lr_warm_up_steps", "lr_decay_steps", "lr_end", "n_checkpoints"), 0),
        }
        check_ranges(self, "config", above={"lr": 0}, at_least=at_least)
        for name, value, options in (
            ("data_mode", self.data_mode, DataMode),
            ("wandb_mode", self.wandb_mode, WandbMode),
            ("b_dec_init", self.b_dec_init, BDecInit),
        ):
            if value not in get_args(options):
                raise ValueError(f"DiTSAERunnerConfig.{name}={value!r}; expected one of {get_args(options)}")
        if self.hook_name not in self.harvest.hook_names:
            raise ValueError(
                f"hook_name {self.hook_name!r} is not among harvest.hook_names {list(self.harvest.hook_names)}; "
                "add it there"
            )
        if self.training_tokens < self.batch_size:
            raise ValueError(f"training_tokens ({self.training_tokens}) < batch_size ({self.batch_size})")

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("sae", "harvest")}
        return {**data, "sae": self.sae.to_dict(), "harvest": self.harvest.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiTSAERunnerConfig:
        check_keys(data, [f.name for f in fields(cls)], "config")
        data = dict(data)
        if "sae" not in data:
            raise ConfigError("config: the `sae` section is missing; give at least architecture, d_in and d_sae")
        sae = data.pop("sae")
        if not isinstance(sae, TrainingSAEConfig):
            sae = training_sae_config(sae)
        harvest = data.pop("harvest", {})
        if not isinstance(harvest, HarvestConfig):
            harvest = HarvestConfig.from_dict(harvest)
        return cls(sae=sae, harvest=harvest, **data)

    @property
    def learning_rate(self) -> float:
        """`lr`, or the SAE architecture's measured default when it is None."""
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.sae.architecture(), FALLBACK_LR)

    def trainer_config(self) -> SAETrainerConfig:
        return SAETrainerConfig(
            total_training_samples=self.training_tokens // self.batch_size * self.batch_size,
            train_batch_size_samples=self.batch_size,
            lr=self.learning_rate,
            lr_end=self.learning_rate / 10 if self.lr_end is None else self.lr_end,
            lr_warm_up_steps=self.lr_warm_up_steps,
            lr_decay_steps=self.lr_decay_steps,
            device=self.device,
            dead_feature_window=self.dead_feature_window,
            feature_sampling_window=self.feature_sampling_window,
            n_checkpoints=self.n_checkpoints,
            checkpoint_path=str(Path(self.output_dir) / "checkpoints"),
            logger=LoggingConfig(
                log_to_wandb=self.wandb_mode != "disabled",
                wandb_project=self.wandb_project,
                wandb_log_frequency=self.wandb_log_frequency,
                log_weights_to_wandb=False,
            ),
        )


def check_trainer_state(checkpoint: Path) -> None:
    """Refuse a checkpoint whose trainer state needs more than plain tensors to load (SAELens's
    `load_trainer_state` reads it with `torch.load`; this reads it first with `weights_only=True`)."""
    try:
        torch.load(checkpoint / TRAINER_STATE_FILENAME, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means: do not resume from it
        raise ValueError(
            f"{checkpoint / TRAINER_STATE_FILENAME} does not load as plain tensors ({type(err).__name__}); "
            "delete that checkpoint folder to resume from an earlier one, or start over in a new --output-dir"
        ) from None


class _CountingProvider:
    """Yields bare activation batches for SAETrainer and counts them, so a resumed run can skip
    exactly the batches the interrupted one consumed."""

    def __init__(self, batches: Iterator[torch.Tensor], skip: int = 0):
        self.consumed = 0
        self._batches = batches
        for _ in range(skip):
            next(self._batches)
            self.consumed += 1

    def __iter__(self) -> _CountingProvider:
        return self

    def __next__(self) -> torch.Tensor:
        batch = next(self._batches)
        self.consumed += 1
        return batch


class DiTSAETrainingRunner:
    """`DiTSAETrainingRunner(cfg).run()` trains, evaluates and saves one SAE.

    `overwrite=True` replaces an output folder that holds a different run; without it such a
    folder is an error, and a folder holding the same run is resumed.
    """

    def __init__(self, cfg: DiTSAERunnerConfig, overwrite: bool = False):
        self.cfg = cfg
        self.output_dir = Path(cfg.output_dir)
        self.dist = init_from_env(cfg.device)
        self.device = self.dist.device(cfg.device)
        self._check_output_dir(overwrite)
        self.pipe = load_pipeline(cfg.model, device=self.device)
        self.hooked = HookedDiT(self.pipe.transformer)
        self._check_inputs()
        torch.manual_seed(cfg.seed)
        sae_cls = get_sae_training_class(cfg.sae.architecture())[0]
        self.sae: TrainingSAE = sae_cls(self._with_metadata(cfg.sae)).to(self.device)
        self.eval_metrics: list[BucketMetrics] = []
        self.usage: LatentUsage | None = None
        self.init_report: dict[str, float] = {}

    # -- checks before any long work -------------------------------------------------------------
    def _check_output_dir(self, overwrite: bool) -> None:
        """Claim the output folder (`output_dirs`): new, empty or a run of ours; a folder holding files
        we did not write is refused even with `overwrite`, which replaces only a different run of ours."""
        check_claimable(self.output_dir, "train", legacy=(RUNNER_CFG_FILENAME,))
        existing = self.output_dir / RUNNER_CFG_FILENAME
        different = existing.exists() and json.loads(existing.read_text()) != json.loads(json.dumps(self.cfg.to_dict()))
        self.dist.barrier()  # every rank has decided before rank 0 may remove the folder
        if different and not overwrite:
            raise FileExistsError(
                f"{self.output_dir} already holds a different run ({existing}); pick another --output-dir, "
                "or pass --overwrite to replace it"
            )
        if self.dist.is_main:  # a new run, the same run (resumed) or, with overwrite, a fresh start
            if different:
                shutil.rmtree(self.output_dir)
            claim(self.output_dir, "train", legacy=(RUNNER_CFG_FILENAME,))
        self.dist.barrier()

    def _check_distributed(self) -> None:
        world, harvest = self.dist.world_size, self.cfg.harvest
        if self.cfg.batch_size % world:
            raise ValueError(
                f"batch_size {self.cfg.batch_size} is not divisible by the {world} processes; each rank takes "
                "batch_size / world_size rows per step: choose a multiple"
            )
        if harvest.num_batches < world:
            raise ValueError(
                f"the harvest has {harvest.num_batches} batches for {world} processes, so some ranks would have no "
                f"data; lower images_per_batch ({harvest.images_per_batch}) or raise num_images ({harvest.num_images})"
            )

    def _check_inputs(self) -> None:
        self._check_distributed()
        self.hooked.check_hook_names(self.cfg.harvest.hook_names)
        class_ids(self.pipe, self.cfg.harvest)
        resolve_keep_timesteps(self.pipe, self.cfg.harvest)
        d_model = self.hooked.d_model
        if self.cfg.sae.d_in != d_model:
            raise ValueError(
                f"SAE d_in={self.cfg.sae.d_in} but hook {self.cfg.hook_name!r} of {self.cfg.model!r} carries "
                f"{d_model}-dim activations; set d_in={d_model}"
            )

    def _with_metadata(self, sae_cfg: TrainingSAEConfig) -> TrainingSAEConfig:
        sae_cfg = copy.deepcopy(sae_cfg)  # the caller's config stays as it was
        meta = sae_cfg.metadata
        meta.model_name = self.cfg.model
        meta.model_class_name = type(self.pipe.transformer).__name__
        meta.hook_name = self.cfg.hook_name
        meta.timestep_convention = TIMESTEP_CONVENTION
        meta.harvest = self.cfg.harvest.to_dict()
        meta.adapter = self.hooked.spec.name
        return sae_cfg

    # -- data --------------------------------------------------------------------------------------
    def _chunks(self, passes: int | None = None) -> Iterator[ActivationChunk]:
        """The harvest's chunks, pass after pass (training may want more rows than one harvest); `passes`
        limits them (the data-dependent start reads at most one)."""
        cache = self._ensure_cache() if self.cfg.data_mode == "cached" else None
        for epoch in count() if passes is None else range(passes):
            if cache is not None:
                yield from read_cache(cache, self.dist.rank, self.dist.world_size)
                continue
            if epoch == 1:
                logger.warning("streaming harvest exhausted: sampling the same images again (epoch 2)")
            yield from harvest_chunks(
                self.pipe,
                self.hooked,
                self.cfg.harvest,
                progress=self.dist.is_main,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
            )

    def _ensure_cache(self) -> Path:
        """The run's activation cache, written (or completed) now by every rank; one made with other
        harvest settings is refused by `write_cache`, so the SAE's metadata always names its real data."""
        cache = Path(self.cfg.cache_dir) if self.cfg.cache_dir else self.output_dir / "activations"
        return harvest_to_cache(self.pipe, self.hooked, self.cfg.harvest, cache, self.dist, model=self.cfg.model)

    def _data_provider(self, skip: int) -> _CountingProvider:
        """This rank's batches: its share of the harvest, its own shuffle, batch_size / world_size rows."""
        buffer = ShuffleBuffer(size=self.cfg.shuffle_buffer, seed=self.cfg.seed + self.dist.rank)
        rows = self.cfg.batch_size // self.dist.world_size
        pairs = ((x.float(), t) for x, t in buffer.batches(self._chunks(), self.cfg.hook_name, rows))
        pairs = finite_batches(pairs, self.cfg.hook_name)
        return _CountingProvider(feed_timesteps(pairs, self.sae), skip=skip)

    def _heldout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out rows: the same harvest settings with a different seed and `eval_images` images."""
        h = self.cfg.harvest
        eval_cfg = replace(
            h,
            seed=h.seed + 1_000_003,
            num_images=self.cfg.eval_images,
            images_per_batch=min(h.images_per_batch, self.cfg.eval_images),
        )
        chunks = list(harvest_chunks(self.pipe, self.hooked, eval_cfg, progress=False))
        x = torch.cat([c.activations[self.cfg.hook_name] for c in chunks]).float()
        return x.to(self.device), torch.cat([c.timestep for c in chunks]).to(self.device)

    # -- training ----------------------------------------------------------------------------------
    def run(self) -> TrainingSAE:
        main = self.dist.is_main  # with several ranks, only rank 0 evaluates, saves and logs
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if main:
            (self.output_dir / RUNNER_CFG_FILENAME).write_text(json.dumps(self.cfg.to_dict(), indent=2))
        heldout = self._heldout() if main else None
        trainer_cfg = replace(self.cfg.trainer_config(), device=self.device)
        if trainer_cfg.logger.log_to_wandb:
            os.environ.setdefault("WANDB_SILENT", "true")
            wandb.init(
                project=self.cfg.wandb_project,
                config=self.cfg.to_dict(),
                dir=str(self.output_dir),
                mode=self.cfg.wandb_mode if main else "disabled",
                name=self.output_dir.name,
            )
        try:
            resume_from = self._latest_checkpoint()
            skip = json.loads((resume_from / DATA_STATE_FILENAME).read_text())["batches"] if resume_from else 0
            scaling_factor = None if resume_from else self._init_from_data()
            provider = self._data_provider(skip)
            trainer = (DistributedSAETrainer if self.dist.enabled else SAETrainer)(
                cfg=trainer_cfg,
                sae=self.sae,
                data_provider=provider,
                evaluator=lambda sae, _data, scaler: self._wandb_eval(sae, scaler, *heldout) if main else {},
                save_checkpoint_fn=lambda checkpoint_path: self._save_data_state(checkpoint_path, provider),
            )
            if scaling_factor is not None:  # the factor b_dec was set in; the trainer then skips its estimate
                trainer.activation_scaler.scaling_factor = scaling_factor
            if resume_from is not None:
                logger.info("resuming from checkpoint %s", resume_from)
                check_trainer_state(resume_from)
                trainer.load_trainer_state(resume_from)
                self.sae.load_weights_from_checkpoint(resume_from)
            sae = trainer.fit()
            if main:
                self.eval_metrics = reconstruction_by_bucket(sae, *heldout)
                self.usage = latent_usage(sae, *heldout)
                self._save_final(sae, trainer)
                if trainer_cfg.logger.log_to_wandb:
                    wandb.log({f"final/{k}": v for k, v in self._bucket_log(self.eval_metrics).items()})
            self.dist.barrier()  # the run ends on every rank once rank 0 has saved it
            return sae
        finally:
            if trainer_cfg.logger.log_to_wandb:
                wandb.finish()

    def _init_from_data(self) -> float | None:
        """Data-dependent start (`saes.data_init`) from the first `init_rows` training rows; returns the
        input scaling factor when the SAE normalises its inputs (b_dec is set in that space). Under
        torchrun every rank computes it from its own rows (the scale's norms averaged over ranks) and
        the trainer then copies rank 0's weights to all."""
        rows, n = [], 0
        chunks = self._chunks(passes=1)
        for chunk in chunks:
            rows.append(chunk.activations[self.cfg.hook_name].float())
            n += len(rows[-1])
            if n >= self.cfg.init_rows:
                break
        chunks.close()  # a streaming harvest removes its hooks
        x = torch.cat(rows)[: self.cfg.init_rows].to(self.device)
        scaling_factor = None
        if self.sae.cfg.normalize_activations == "expected_average_only_in":
            mean_norm = x.norm(dim=-1).mean()
            if self.dist.enabled:
                torch.distributed.all_reduce(mean_norm)
                mean_norm = mean_norm / self.dist.world_size
            scaling_factor = self.sae.cfg.d_in**0.5 / float(mean_norm)
        self.init_report = init_from_rows(self.sae, x, self.cfg.b_dec_init, scaling_factor, self.cfg.unit_decoder_init)
        logger.info("SAE initialised from %d training rows: %s", len(x), self.init_report)
        return scaling_factor

    def _latest_checkpoint(self) -> Path | None:
        root = self.output_dir / "checkpoints"
        done = (
            [p for p in root.glob("*") if p.name.isdigit() and (p / DATA_STATE_FILENAME).exists()]
            if root.exists()
            else []
        )
        return max(done, key=lambda p: int(p.name)) if done else None

    def _save_data_state(self, checkpoint_path: Path | None, provider: _CountingProvider) -> None:
        if checkpoint_path is not None:
            (checkpoint_path / DATA_STATE_FILENAME).write_text(json.dumps({"batches": provider.consumed}))

    @staticmethod
    def _bucket_log(metrics: list[BucketMetrics]) -> dict[str, float]:
        log = {}
        for m in metrics:
            tag = f"t{m.t_low:.0f}-{m.t_high:.0f}"
            log.update({f"{tag}/explained_variance": m.explained_variance, f"{tag}/mse": m.mse, f"{tag}/l0": m.l0})
        return log

    def _wandb_eval(self, sae, scaler, x: torch.Tensor, t: torch.Tensor) -> dict[str, float]:
        metrics = reconstruction_by_bucket(sae, scaler(x), t)
        return {f"eval/{k}": v for k, v in self._bucket_log(metrics).items()}

    def _save_final(self, sae: TrainingSAE, trainer: SAETrainer) -> None:
        out = self.output_dir
        bad = [name for name, tensor in sae.state_dict().items() if not torch.isfinite(tensor).all()]
        if bad:
            raise ValueError(
                f"the trained SAE has non-finite weights ({', '.join(bad)}); nothing was saved to {out}. Lower lr, or "
                "check the harvest (an absurd guidance scale gives huge activations)"
            )
        sae.save_inference_model(str(out))
        save_file({"sparsity": trainer.log_feature_sparsity}, out / SPARSITY_FILENAME)
        report = {
            "hook_name": self.cfg.hook_name,
            "architecture": self.cfg.sae.architecture(),
            "buckets": [m.to_dict() for m in self.eval_metrics],
            "mean_explained_variance": sum(m.explained_variance for m in self.eval_metrics) / len(self.eval_metrics),
            "latent_usage": self.usage.to_dict() if self.usage else None,
            "init": self.init_report,
        }
        (out / EVAL_JSON).write_text(json.dumps(report, indent=2))
        title = f"{self.cfg.sae.architecture()} on {self.cfg.model} {self.cfg.hook_name} (held-out)"
        table = format_bucket_table(self.eval_metrics, title)
        if self.usage:
            branch = self.cfg.harvest.branch
            table += f"\n\nLatents: {self.usage.summary()} (held-out, every timestep, CFG branch: {branch})"
        (out / EVAL_MD).write_text(table + "\n")


PRESETS: dict[str, dict[str, Any]] = {
    "dit-tiny-digits": {
        "model": "digits",
        "hook_name": DEFAULT_HOOK,
        "sae": {"architecture": TIDE_ARCHITECTURE, "d_in": 96, "d_sae": 1536, "k": 16},
        "harvest": {
            "hook_names": [DEFAULT_HOOK],
            "num_images": 640,
            "images_per_batch": 32,
            "num_inference_steps": 50,
            "branch": "both",
        },
        "eval_images": 256,  # 102,400 held-out rows (both branches): dead latents counted on >= 100k rows
        "training_tokens": 2_000_000,
        "data_mode": "cached",  # harvest once (sampling dominates on CPU), train several passes
        "output_dir": "runs/tide-digits",
    },
    # DiT-XL/2 at 256 px: 32x32x4 latents, patch 2 -> 256 tokens of width 1152, 28 blocks; the
    # paper's settings (16x dictionary, 1/16 of the tokens per image and step). Needs a GPU and
    # the Hub (or a cached copy of facebook/DiT-XL-2-256).
    "dit-xl-2-256": {
        "model": "facebook/DiT-XL-2-256",
        "hook_name": "blocks.13.hook_resid_post",
        "sae": {"architecture": TIDE_ARCHITECTURE, "d_in": 1152, "d_sae": 18432, "k": 64},
        "harvest": {
            "hook_names": ["blocks.13.hook_resid_post"],
            "num_images": 50_000,
            "images_per_batch": 64,
            "num_inference_steps": 50,
            "guidance_scale": 4.0,
            "branch": "both",
            "storage_dtype": "float16",
        },
        "training_tokens": 200_000_000,
        "batch_size": 4096,
        "dead_feature_window": 1000,  # 4M rows, as the 10M-token window of Gao et al. 2024 at this scale
        "data_mode": "cached",
        "device": "cuda",
        "output_dir": "runs/tide-dit-xl-2-256",
    },
}
PRESETS["dit-tiny-shapes"] = {**PRESETS["dit-tiny-digits"], "model": "shapes", "output_dir": "runs/tide-shapes"}
DEFAULT_PRESET = "dit-tiny-digits"


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def preset_config(name: str = DEFAULT_PRESET, **overrides: Any) -> DiTSAERunnerConfig:
    """A preset's config with nested overrides, e.g. `preset_config("dit-tiny-digits", sae={"k": 8})`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets are {sorted(PRESETS)}")
    return DiTSAERunnerConfig.from_dict(_merge(PRESETS[name], overrides))
