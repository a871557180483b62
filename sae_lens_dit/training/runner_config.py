"""The settings of one SAE training run (`DiTSAERunnerConfig`); where a setting is None, the architecture's
measured recipe (`training.recipe`) fills it in.

Why its own module: the config is data that the runner, the presets, the CLI (which generates its
`train` flags from the field docstrings) and saved runs (`runner_cfg.json`) all share, while the
runner is the machinery that acts on it. It nests the SAE's own SAELens config and the harvest's
config rather than repeating their fields, and checks itself before any long work starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from sae_lens import LoggingConfig, TrainingSAEConfig
from sae_lens.config import SAETrainerConfig

from sae_lens_dit.conventions import DEFAULT_HOOK
from sae_lens_dit.guards.config import ConfigError, check_keys, check_ranges, check_types, training_sae_config
from sae_lens_dit.saes.data_init import BDecInit, DecoderDirections
from sae_lens_dit.training.harvest import HarvestConfig
from sae_lens_dit.training.recipe import (
    DEFAULT_LR,
    FALLBACK_LR,
    DecoderNorm,
    InputScale,
    Recipe,
    recipe_for,
)
from sae_lens_dit.training.sublayers import is_transcoder, sublayer_hooks

__all__ = ["DEFAULT_LR", "FALLBACK_LR", "DataMode", "DiTSAERunnerConfig", "WandbMode"]

DataMode = Literal["streaming", "cached"]
WandbMode = Literal["offline", "online", "disabled"]


@dataclass
class DiTSAERunnerConfig:
    """Everything one SAE training run needs; `to_dict`/`from_dict` round-trip through JSON/YAML."""

    sae: TrainingSAEConfig
    """The SAE to train: a config of any registered SAELens training architecture (d_in must match the hook)."""
    model: str = "digits"
    """Bundled backbone name (digits, shapes), a local diffusers pipeline folder, or a Hub repo id."""
    hook_name: str = DEFAULT_HOOK
    """Hook point whose activations the SAE reconstructs; for a transcoder the sublayer (blocks.2.mlp: it reads
    blocks.2.mlp.hook_in and writes blocks.2.mlp.hook_out)."""
    harvest: HarvestConfig = field(default_factory=HarvestConfig)
    """Training activations: what to sample and what to keep (its hook_names must include hook_name, or both hooks
    of a sublayer)."""
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
    b_dec_init: BDecInit | None = None
    """Where b_dec starts: the geometric_median or mean of `init_rows` training rows, or zeros (SAELens's
    start). DiT activations are mostly their mean; from zeros most latents never fire (see saes.data_init).
    None = the architecture's recipe (`training.recipe`: mean for TopK and BatchTopK, else geometric_median)."""
    unit_decoder_init: bool = True
    """For SAEs whose codes scale with the decoder norm (TopK family, TIDE): start with unit-norm decoder
    rows and the encoder as their transpose, so a fresh latent's code is its projection (SAELens starts at
    norm 0.1: codes 100x too small, most latents die). Other architectures keep their own start."""
    decoder_directions: DecoderDirections | None = None
    """With unit_decoder_init, where the decoder rows point: sae_lens (its kaiming-uniform draw) or gaussian
    (uniform on the sphere). None = the architecture's recipe (gaussian for TopK and BatchTopK, else sae_lens)."""
    input_scale: InputScale | None = None
    """sae: inputs as the SAE's normalize_activations says; unit: one factor that gives training rows centred
    on b_dec's start a mean norm of 1 (folded into the saved weights). None = the architecture's recipe (unit
    for TopK and BatchTopK, else sae)."""
    decoder_norm: DecoderNorm | None = None
    """sae: the decoder norm as the SAE's config holds it; unit_rows: decoder rows set back to unit norm after
    every step. None = the architecture's recipe (unit_rows for TopK and BatchTopK, else sae)."""
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
            if value is not None and value not in get_args(options):
                raise ValueError(f"DiTSAERunnerConfig.{name}={value!r}; expected one of {get_args(options)}")
        self._check_recipe()
        missing = [h for h in sublayer_hooks(self.hook_name) if h not in self.harvest.hook_names]
        if missing:
            raise ValueError(
                f"hook_name {self.hook_name!r} needs {missing}, not among harvest.hook_names "
                f"{list(self.harvest.hook_names)}; add it there"
            )
        if self.training_tokens < self.batch_size:
            raise ValueError(f"training_tokens ({self.training_tokens}) < batch_size ({self.batch_size})")

    def _check_recipe(self) -> None:
        recipe = self.recipe
        if recipe.input_scale == "unit" and self.sae.normalize_activations != "none":
            raise ValueError(
                f"input_scale='unit' scales the inputs itself, but sae.normalize_activations is "
                f"{self.sae.normalize_activations!r}; set one of them: input_scale: sae, or normalize_activations: none"
            )
        if is_transcoder(self.sae) and (recipe.input_scale, recipe.decoder_directions) != ("sae", "sae_lens"):
            raise ValueError(
                "input_scale='unit' and decoder_directions='gaussian' are for SAEs, not transcoders (their input "
                "and output differ); leave both None or set input_scale: sae, decoder_directions: sae_lens"
            )

    @property
    def recipe(self) -> Recipe:
        """The training recipe this run applies: the architecture's (`training.recipe.recipe_for`), with every
        field set here (not None) in its place."""
        base = recipe_for(self.sae.architecture())
        given = {
            name: getattr(self, name)
            for name in ("b_dec_init", "input_scale", "decoder_directions", "decoder_norm")
            if getattr(self, name) is not None
        }
        return replace(base, **given)

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
