"""Data parallelism on torch.distributed: sharded harvests and SAELens's SAETrainer across ranks.

Why this shape. Large backbones (DiT-XL, PixArt-XL, Flux) need billions of tokens, so harvesting
and training must spread over GPUs, with a launcher users already have: `torchrun` or
`accelerate launch`, which both start one process per GPU and describe it in the environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). `init_from_env` joins that process
group (NCCL on GPUs, gloo on CPUs); without those variables everything runs as one process.

- Harvest: rank r of n samples the harvest batches whose index is r modulo n (`harvest.py`
  derives every batch's labels, noise and token draws from its index alone), so the union of the
  ranks' rows equals a single-process harvest with the same seed, and each rank writes its own
  atomic shards into the one cache folder. `harvest_to_cache` adds the barrier and the check that
  every rank's shards are there.
- Training: `DistributedSAETrainer` is SAELens's `SAETrainer` with three seams used, so SAELens's
  trainer, configs, losses and save format stay as they are. Each parameter's gradient is
  averaged over the ranks as soon as backward accumulates it (before SAETrainer clips the norm),
  so with per-rank batches of equal size, whose losses are batch means, every rank takes the step
  one process would take on the union of the batches. After each step the dead-latent statistics
  are merged (firing counts summed, "steps since fired" = the minimum over ranks), so AuxK and
  the logged sparsity see the union too; logged scalars are averaged over ranks; only rank 0
  writes checkpoints. DDP is not used because SAETrainer calls `sae.training_forward_pass`, not
  `forward`, which is where DDP would start its gradient synchronisation.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from sae_lens import SAETrainer
from sae_lens.saes.sae import TrainStepOutput
from torch import nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.training.activation_cache import check_cache_complete, write_cache
from sae_lens_dit.training.harvest import HarvestConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """This process's place among the ranks (rank 0 of 1 when not launched by torchrun/accelerate)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that saves, evaluates and logs to wandb."""
        return self.rank == 0

    def device(self, device: str) -> str:
        """The device of this rank: a bare "cuda" becomes this process's GPU, `cuda:<LOCAL_RANK>`."""
        return f"cuda:{self.local_rank}" if self.enabled and device == "cuda" else device

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_from_env(device: str = "cpu") -> DistributedContext:
    """Join the process group that torchrun / accelerate launch describe in the environment.

    Uses a group that is already initialised (e.g. by accelerate); otherwise starts one with the
    env:// rendezvous, NCCL for CUDA devices and gloo for the CPU. No WORLD_SIZE (or 1): one process.
    """
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistributedContext(dist.get_rank(), dist.get_world_size(), local)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistributedContext()
    missing = [key for key in ("RANK", "MASTER_ADDR", "MASTER_PORT") if key not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; start the command with "
            "`torchrun --nproc_per_node N ...` or `accelerate launch ...`, which set them"
        )
    ctx = DistributedContext(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(ctx.local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    logger.info("rank %d of %d joined the process group (%s)", ctx.rank, world_size, dist.get_backend())
    return ctx


def shutdown() -> None:
    """Leave the process group, if this process is in one (the CLI calls this when a job ends)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def harvest_to_cache(
    pipe: Any, hooked: HookedDiT, cfg: HarvestConfig, output_dir: str | Path, ctx: DistributedContext, model: str = ""
) -> Path:
    """Every rank writes its shards of one cache; returns once the whole cache is complete.

    A rank that fails logs its rank and shard and raises; torchrun then stops the others and
    exits non-zero. The same command again resumes from every rank's complete shards.
    """
    if ctx.world_size > cfg.num_batches:
        logger.warning(
            "%d ranks but only %d harvest batches: ranks %d.. have nothing to sample (lower images_per_batch)",
            ctx.world_size,
            cfg.num_batches,
            cfg.num_batches,
        )
    out = write_cache(pipe, hooked, cfg, output_dir, model=model, rank=ctx.rank, world_size=ctx.world_size)
    ctx.barrier()
    check_cache_complete(out)
    return out


def all_reduce_gradients(module: nn.Module) -> list[RemovableHandle]:
    """Average each parameter's gradient over the ranks as soon as backward has accumulated it.

    Every rank must run the same architecture, so the same parameters get gradients in the same
    order. gloo has no averaging all-reduce, hence the sum and the division.
    """
    world_size = dist.get_world_size()

    def average(param: torch.Tensor) -> None:
        dist.all_reduce(param.grad)
        param.grad.div_(world_size)

    return [p.register_post_accumulate_grad_hook(average) for p in module.parameters() if p.requires_grad]


class DistributedSAETrainer(SAETrainer):
    """SAETrainer across the ranks of the current process group (see the module docstring).

    Build it on every rank with the same `SAETrainerConfig`; `train_batch_size_samples` and
    `total_training_samples` count the global batch and the global total, as for one process,
    while each rank's data provider yields `train_batch_size_samples / world_size` rows per step.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.world_size = dist.get_world_size()
        self.rank = dist.get_rank()
        if self.cfg.train_batch_size_samples % self.world_size:
            raise ValueError(
                f"batch size {self.cfg.train_batch_size_samples} is not divisible by the {self.world_size} ranks; "
                "choose a multiple of the number of processes"
            )
        with torch.no_grad():
            for tensor in self.sae.state_dict().values():  # every rank starts from rank 0's weights
                dist.broadcast(tensor, src=0)
        self._gradient_hooks = all_reduce_gradients(self.sae)

    @override
    def fit(self):
        normalize = self.sae.cfg.normalize_activations
        if normalize == "covariance_whitening" and self.activation_scaler.whitening is None:
            raise ValueError(
                "normalize_activations='covariance_whitening' is estimated per process and would differ between "
                "ranks; train it in one process, or use 'expected_average_only_in' or 'none'"
            )
        if normalize == "expected_average_only_in" and self.activation_scaler.scaling_factor is None:
            self.activation_scaler.estimate_scaling_factor(
                d_in=self.sae.cfg.d_in,
                data_provider=self.data_provider,
                n_batches_for_norm_estimate=self.cfg.n_batches_for_norm_estimate,
            )
            root_d = self.sae.cfg.d_in**0.5  # the scale is sqrt(d_in) / mean norm: average the norms
            mean_norm = torch.tensor(root_d / self.activation_scaler.scaling_factor, device=self.act_freq_scores.device)
            dist.all_reduce(mean_norm)
            self.activation_scaler.scaling_factor = root_d / (mean_norm.item() / self.world_size)
        try:
            return super().fit()
        finally:
            for handle in self._gradient_hooks:
                handle.remove()

    @override
    def step(self, batch: torch.Tensor) -> TrainStepOutput:
        """One step on this rank's batch; gradients and dead-latent statistics cover all ranks' batches."""
        freq_before = self.act_freq_scores.clone()
        output = super().step(batch)
        self.n_training_samples += (self.world_size - 1) * batch.shape[0]
        fired = self.act_freq_scores - freq_before
        dist.all_reduce(fired)
        self.act_freq_scores = freq_before + fired
        # 0 where a latent fired on any rank, else the shared count + 1 on every rank: the minimum.
        dist.all_reduce(self.n_forward_passes_since_fired, op=dist.ReduceOp.MIN)
        return output

    @override
    def build_train_step_log_dict(self, output: TrainStepOutput, n_training_samples: int) -> dict[str, Any]:
        """SAELens's step log with losses and metrics averaged over the ranks."""
        log = super().build_train_step_log_dict(output, n_training_samples)
        keys = sorted(k for k, v in log.items() if k.startswith(("losses/", "metrics/")) and isinstance(v, int | float))
        values = torch.tensor([float(log[k]) for k in keys], dtype=torch.float64, device=self.act_freq_scores.device)
        dist.all_reduce(values)
        log.update(zip(keys, (values / self.world_size).tolist(), strict=True))
        return log

    @override
    def save_checkpoint(
        self, checkpoint_name: str, base_path: Path | str | None = None, wandb_aliases: list[str] | None = None
    ) -> None:
        """Rank 0 writes the checkpoint (every rank holds the same weights and statistics)."""
        if self.rank == 0:
            super().save_checkpoint(checkpoint_name, base_path=base_path, wandb_aliases=wandb_aliases)
