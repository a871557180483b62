"""Train an SAE on DiT activations through SAELens's `SAETrainer`.

The runner checks everything it can before any long work (model, hook, `d_in`, output folder),
then harvests activations (streaming, or into a reusable on-disk cache), mixes them in a shuffle
buffer, and hands SAETrainer a data provider of bare activation batches. The timesteps of each
batch travel beside it through `feed_timesteps` (the seam documented in `saes.tide_sae`). Every
registered SAELens training architecture trains this way; the plain ones ignore the timestep.
A transcoder trains the same way on a sublayer (`hook_name="blocks.2.mlp"`): its rows are the MLP's input and
output side by side, its report the MLP output's explained variance (`training.sublayers`).

Output, in SAELens's format: `cfg.json` (metadata: model, hook, timestep convention, harvest
settings), `sae_weights.safetensors`, `sparsity.safetensors`, `runner_cfg.json`, plus
`eval.json`/`eval.md` (held-out reconstruction per timestep bucket, in the one layout of
`analysis.evals.write_eval_files`). Checkpoints go to
`checkpoints/<samples>/` and a run started again with the same config resumes from the newest.

Under `torchrun` / `accelerate launch` the same runner trains with data parallelism
(`sae_lens_dit.training.distributed`): every rank harvests (or reads) its share of the harvest batches and
feeds `batch_size / world_size` rows per step to a `DistributedSAETrainer`, so `batch_size` and
`training_tokens` keep their single-process meaning; rank 0 alone evaluates, saves and logs to wandb.

The run's settings are `runner_config.DiTSAERunnerConfig`, its named starting points
`presets.preset_config`; both are re-exported here, where they were importable before.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, replace
from itertools import count
from pathlib import Path
from typing import Any

import torch
import wandb
from sae_lens import SAETrainer, TrainingSAE, TrainingSAEConfig
from sae_lens.constants import RUNNER_CFG_FILENAME, SPARSITY_FILENAME, TRAINER_STATE_FILENAME
from sae_lens.registry import get_sae_training_class
from safetensors.torch import save_file

from sae_lens_dit.analysis.evals import (
    BucketMetrics,
    LatentUsage,
    format_bucket_table,
    format_frame_table,
    write_eval_files,
)
from sae_lens_dit.conventions import DATA_STATE_FILENAME, DEFAULT_BUCKET_EDGES, TIMESTEP_CONVENTION, sae_id
from sae_lens_dit.guards.data import finite_batches
from sae_lens_dit.guards.output_dirs import check_claimable, claim
from sae_lens_dit.hooking.hooked import HookedDiT, denoiser
from sae_lens_dit.saes import feed_timesteps
from sae_lens_dit.saes.data_init import centre_of, init_from_rows
from sae_lens_dit.toy.backbones import load_pipeline
from sae_lens_dit.training.distributed import DistributedSAETrainer, harvest_to_cache, init_from_env
from sae_lens_dit.training.harvest import (
    ActivationChunk,
    ShuffleBuffer,
    class_ids,
    harvest_chunks,
    read_cache,
    resolve_keep_timesteps,
)
from sae_lens_dit.training.presets import DEFAULT_PRESET, PRESETS, preset_config
from sae_lens_dit.training.recipe import hold_unit_decoder_rows, unit_scaling_factor
from sae_lens_dit.training.runner_config import DEFAULT_LR, FALLBACK_LR, DataMode, DiTSAERunnerConfig, WandbMode
from sae_lens_dit.training.sublayers import (
    check_sae_fits,
    init_transcoder_from_rows,
    input_half,
    is_transcoder,
    metrics_by_bucket,
    metrics_by_frame,
    sublayer_hooks,
    training_rows,
    usage,
)

__all__ = [
    "DEFAULT_LR",
    "DEFAULT_PRESET",
    "FALLBACK_LR",
    "PRESETS",
    "DataMode",
    "DiTSAERunnerConfig",
    "DiTSAETrainingRunner",
    "WandbMode",
    "check_trainer_state",
    "preset_config",
]

logger = logging.getLogger(__name__)

HELDOUT_SEED_OFFSET = 1_000_003
"""The held-out harvest's seed is the training harvest's plus this: the same settings on new images."""


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
        self.hooked = HookedDiT.from_pipeline(self.pipe)
        self._check_inputs()
        torch.manual_seed(cfg.seed)
        sae_cls = get_sae_training_class(cfg.sae.architecture())[0]
        self.sae: TrainingSAE = sae_cls(self._with_metadata(cfg.sae)).to(self.device)
        self.eval_metrics: list[BucketMetrics] = []
        self.usage: LatentUsage | None = None
        self.frame_metrics: list[tuple[int, BucketMetrics]] = []  # video harvests: held-out metrics per frame
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
        widths = {hook: self.hooked.d_in(hook) for hook in sublayer_hooks(self.cfg.hook_name)}
        check_sae_fits(self.cfg.sae, self.cfg.hook_name, widths, self.cfg.model)

    def _with_metadata(self, sae_cfg: TrainingSAEConfig) -> TrainingSAEConfig:
        sae_cfg = copy.deepcopy(sae_cfg)  # the caller's config stays as it was
        meta = sae_cfg.metadata
        meta.model_name = self.cfg.model
        meta.model_class_name = type(denoiser(self.pipe)).__name__
        hooks = sublayer_hooks(self.cfg.hook_name)  # a transcoder: reads the first, writes the second (SAELens's way)
        meta.hook_name = hooks[0]
        if len(hooks) == 2:
            meta.hook_name_out = hooks[1]
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

    def _heldout(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Held-out (rows, timesteps, video frames): the same harvest settings, another seed, `eval_images` images."""
        h = self.cfg.harvest
        eval_cfg = replace(
            h,
            seed=h.seed + HELDOUT_SEED_OFFSET,
            num_images=self.cfg.eval_images,
            images_per_batch=min(h.images_per_batch, self.cfg.eval_images),
        )
        chunks = list(harvest_chunks(self.pipe, self.hooked, eval_cfg, progress=False))
        x = torch.cat([training_rows(c.activations, self.cfg.hook_name) for c in chunks]).float()
        known = all(c.frame is not None for c in chunks)
        frame = torch.cat([c.frame for c in chunks]).to(self.device) if known else None
        return x.to(self.device), torch.cat([c.timestep for c in chunks]).to(self.device), frame

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
                evaluator=lambda sae, _data, scaler: self._wandb_eval(sae, scaler, *heldout[:2]) if main else {},
                save_checkpoint_fn=lambda checkpoint_path: self._save_data_state(checkpoint_path, provider),
            )
            if scaling_factor is not None:  # the factor b_dec was set in; the trainer then skips its estimate
                trainer.activation_scaler.scaling_factor = scaling_factor
            if self.cfg.recipe.decoder_norm == "unit_rows":
                hold_unit_decoder_rows(trainer.optimizer, self.sae)
            if resume_from is not None:
                logger.info("resuming from checkpoint %s", resume_from)
                check_trainer_state(resume_from)
                trainer.load_trainer_state(resume_from)
                self.sae.load_weights_from_checkpoint(resume_from)
            sae = trainer.fit()
            if main:
                self.eval_metrics = metrics_by_bucket(sae, *heldout[:2])
                self.frame_metrics = metrics_by_frame(sae, *heldout)
                self.usage = usage(sae, *heldout[:2])
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
            rows.append(training_rows(chunk.activations, self.cfg.hook_name).float())
            n += len(rows[-1])
            if n >= self.cfg.init_rows:
                break
        chunks.close()  # a streaming harvest removes its hooks
        x = torch.cat(rows)[: self.cfg.init_rows].to(self.device)
        recipe = self.cfg.recipe
        scaling_factor = None
        if self.sae.cfg.normalize_activations == "expected_average_only_in":
            scaling_factor = self.sae.cfg.d_in**0.5 / self._rank_mean(input_half(self.sae, x).norm(dim=-1).mean())
        elif recipe.input_scale == "unit":  # an SAE (not a transcoder): the config refuses the others
            scaling_factor = unit_scaling_factor(
                self._rank_mean((x - centre_of(x, recipe.b_dec_init)).norm(dim=-1).mean())
            )
        if is_transcoder(self.sae.cfg):
            self.init_report = init_transcoder_from_rows(
                self.sae, x, recipe.b_dec_init, scaling_factor, self.cfg.unit_decoder_init
            )
        else:
            self.init_report = init_from_rows(
                self.sae, x, recipe.b_dec_init, scaling_factor, self.cfg.unit_decoder_init, recipe.decoder_directions
            )
        logger.info("SAE initialised from %d training rows (%s): %s", len(x), recipe, self.init_report)
        return scaling_factor

    def _rank_mean(self, value: torch.Tensor) -> float:
        """`value` averaged over the ranks under torchrun; itself otherwise."""
        if self.dist.enabled:
            torch.distributed.all_reduce(value)
            value = value / self.dist.world_size
        return float(value)

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
        metrics = metrics_by_bucket(sae, scaler(x), t)
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
        write_eval_files(out, [self._eval_report()], self._eval_settings(), self._eval_markdown())

    def _eval_report(self) -> dict[str, Any]:
        """The held-out report, one SAE's entry of the `eval.json` layout (`analysis.evals.results`)."""
        hook, saved_as = self.cfg.hook_name, self.cfg.sae.get_inference_config_class().architecture()
        metrics = self.eval_metrics
        return {
            "sae": sae_id(hook, saved_as),  # the id of the saved SAE, whose cfg.json names the inference architecture
            "model": self.cfg.model,
            "hook": hook,
            "architecture": saved_as,
            "d_sae": self.cfg.sae.d_sae,
            "trained_as": self.cfg.sae.architecture(),
            "heldout_images": self.cfg.eval_images,
            "buckets": [m.to_dict() for m in metrics],
            "mean_explained_variance": sum(m.explained_variance for m in metrics) / len(metrics),
            "latent_usage": self.usage.to_dict() if self.usage else None,
            **({"frames": [{"frame": f, **m.to_dict()} for f, m in self.frame_metrics]} if self.frame_metrics else {}),
            "init": self.init_report,
            "recipe": asdict(self.cfg.recipe),  # as applied (the config's None fields resolved)
        }

    def _eval_settings(self) -> dict[str, Any]:
        """What the held-out report was measured on: a harvest of the training settings on new seeds."""
        h = self.cfg.harvest
        return {
            "eval_images": self.cfg.eval_images,
            "harvest_seed": h.seed + HELDOUT_SEED_OFFSET,
            "num_inference_steps": h.num_inference_steps,
            "branch": h.branch,
            "edges": list(DEFAULT_BUCKET_EDGES),
        }

    def _eval_markdown(self) -> str:
        what = " output, reconstructed from its input" if is_transcoder(self.cfg.sae) else ""
        title = f"{self.cfg.sae.architecture()} on {self.cfg.model} {self.cfg.hook_name}{what} (held-out)"
        table = format_bucket_table(self.eval_metrics, title)
        if self.usage:
            branch = self.cfg.harvest.branch
            table += f"\n\nLatents: {self.usage.summary()} (held-out, every timestep, CFG branch: {branch})"
        if self.frame_metrics:
            table += "\n\n" + format_frame_table(self.frame_metrics)
        return table
