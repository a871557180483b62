"""`sae-lens-dit train` and `sae-lens-dit harvest`: a preset or config file, with flags on top.

Why a module of its own: these two commands share one way of building runner configs (a preset or a
YAML/JSON file, then every flag the user typed, then one config per architecture and hook asked for),
and that logic is worth testing on its own (`configs_from_args`). Every field of `DiTSAERunnerConfig`
and the harvest fields of `HarvestConfig` are flags generated from the dataclasses, so a new field
shows up in `--help` without a second edit.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY, get_sae_training_class

from sae_lens_dit.cli.flags import add_config_flags, overrides_from_flags
from sae_lens_dit.conventions import DEFAULT_HOOK, EVAL_MD, TIDE_ARCHITECTURE
from sae_lens_dit.guards.config import (
    ConfigError,
    check_device,
    check_mapping,
    closest,
    conforms,
    describe,
    read_config_file,
)
from sae_lens_dit.training.harvest import HarvestConfig
from sae_lens_dit.training.runner import DEFAULT_PRESET, PRESETS, DiTSAERunnerConfig, DiTSAETrainingRunner
from sae_lens_dit.training.sublayers import is_pair, sublayer_hooks

HARVEST_FLAGS = (
    "num_images",
    "images_per_batch",
    "num_inference_steps",
    "guidance_scale",
    "class_labels",
    "prompts",
    "tokens_per_image",
    "branch",
    "storage_dtype",
)
"""The `HarvestConfig` fields that are flags of `train` and `harvest` (its seed is `--seed` of `harvest`)."""
_NOT_FLAGS = {"sae", "harvest", "hook_name"}  # nested configs, and the hook is `--hook` (several allowed)


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS), help="Starting configuration")
    parser.add_argument("--hook", nargs="+", help=f"Hook point(s), e.g. {DEFAULT_HOOK}, or a sublayer (blocks.2.mlp)")
    add_config_flags(parser, DiTSAERunnerConfig, skip=_NOT_FLAGS, overrides_only=True)
    add_config_flags(parser, HarvestConfig, only=HARVEST_FLAGS, overrides_only=True)


def add_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="Harvest activations and train SAE(s) through SAELens's SAETrainer")
    train.add_argument("--config", type=Path, help="YAML/JSON runner config (DiTSAERunnerConfig.to_dict layout)")
    _add_run_flags(train)
    train.add_argument(
        "--architecture",
        nargs="+",
        help="Registered SAELens training architecture(s), e.g. tide topk; tide_transcoder with --hook blocks.2.mlp",
    )
    train.add_argument("--k", type=int, help="Active latents per token (TopK-family architectures)")
    train.add_argument("--d-sae", type=int, help="Dictionary size")
    train.add_argument(
        "--d-in", type=int, help="Width of the hook's activations (hooked.d_in(hook); UNet levels differ)"
    )
    train.add_argument("--overwrite", action="store_true", help="Replace an output folder that holds a different run")
    train.set_defaults(run=_train)

    harvest = sub.add_parser(
        "harvest",
        help="Write an activation cache (parquet shards readable by datasets); "
        "under `torchrun --nproc_per_node N` every rank writes its share",
    )
    _add_run_flags(harvest)
    harvest.set_defaults(run=_harvest)


def _base_dict(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "config", None):
        return read_config_file(args.config)
    return json.loads(json.dumps(PRESETS[args.preset]))


def _source(args: argparse.Namespace) -> str:
    """Where a train config came from, for error messages."""
    if getattr(args, "config", None):
        return str(args.config)
    return f"the config (preset {args.preset!r} with the flags given)"


def _field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _sae_fields(architecture: Any) -> set[str]:
    """Fields of a registered training architecture's config; an unknown one is a clear error."""
    if not isinstance(architecture, str) or architecture not in SAE_TRAINING_CLASS_REGISTRY:
        known = sorted(SAE_TRAINING_CLASS_REGISTRY)
        suggestion = closest(str(architecture), known)
        raise ConfigError(
            f"architecture {architecture!r} is not a registered training architecture{suggestion}; registered: {known}"
        )
    return _field_names(get_sae_training_class(architecture)[1])


def _has_field(architecture: Any, name: str) -> bool:
    return architecture in SAE_TRAINING_CLASS_REGISTRY and name in _sae_fields(architecture)


def configs_from_args(args: argparse.Namespace) -> list[DiTSAERunnerConfig]:
    """One runner config per (architecture, hook) asked for; several share one harvest."""
    base = _base_dict(args)
    _check_shape(base, _source(args))
    harvest = base.setdefault("harvest", {})
    harvest.update(
        {k: list(v) if isinstance(v, tuple) else v for k, v in overrides_from_flags(args, HARVEST_FLAGS).items()}
    )
    hooks = args.hook or [base.get("hook_name", DEFAULT_HOOK)]
    recorded = [name for hook in hooks for name in sublayer_hooks(hook)]  # a sublayer (blocks.2.mlp): its in and out
    harvest["hook_names"] = list(
        dict.fromkeys([*harvest.get("hook_names", []), *recorded] if not args.hook else recorded)
    )
    base.update(overrides_from_flags(args, _field_names(DiTSAERunnerConfig) - _NOT_FLAGS))
    sae = base.setdefault("sae", {})
    check_mapping(sae, f"{_source(args)}: sae")
    for flag in ("k", "d_sae", "d_in"):
        if getattr(args, flag, None) is not None:
            sae[flag] = getattr(args, flag)
    own = sae.get("architecture", TIDE_ARCHITECTURE)
    architectures = getattr(args, "architecture", None) or [own]
    several = len(architectures) * len(hooks) > 1
    if several:  # one harvest on disk, read by every SAE
        base["data_mode"] = "cached"
        base["cache_dir"] = base.get("cache_dir") or str(Path(base.get("output_dir", "runs/sae")) / "activations")
    configs = []
    for architecture in architectures:
        for hook in hooks:
            sae_dict = {**sae, "architecture": architecture}
            if architecture != own:  # --architecture replaced the config's: drop the fields only its own has
                others = _sae_fields(own) - _sae_fields(architecture)
                sae_dict = {k: v for k, v in sae_dict.items() if k not in others}
            if is_pair(hook) and "d_out" not in sae_dict and _has_field(architecture, "d_out"):
                sae_dict["d_out"] = sae_dict.get("d_in")  # a DiT sublayer writes what it reads: d_model wide
            cfg = {**base, "sae": sae_dict, "hook_name": hook}
            if several:
                cfg["output_dir"] = str(Path(base.get("output_dir", "runs/sae")) / f"{architecture}-{hook}")
            try:
                configs.append(DiTSAERunnerConfig.from_dict(cfg))
            except ValueError as err:
                raise ConfigError(f"{_source(args)}: {err}") from None
    return configs


def _check_shape(base: dict[str, Any], source: str) -> None:
    """The parts of a config this module reads before `DiTSAERunnerConfig.from_dict` checks the rest."""
    harvest = check_mapping(base.get("harvest", {}), f"{source}: harvest")
    for where, data, key, hint in (
        ("config", base, "hook_name", str),
        ("config", base, "output_dir", str),
        ("config", base, "cache_dir", str | None),
        ("harvest", harvest, "hook_names", list[str]),
    ):
        if key in data and not conforms(data[key], hint):
            raise ConfigError(f"{source}: {where}.{key}: expected {describe(hint)}, received {data[key]!r:.80}")


def _train(args: argparse.Namespace) -> None:
    from sae_lens_dit.training.distributed import shutdown

    configs = configs_from_args(args)
    for cfg in configs:
        check_device(cfg.device)
    try:
        for cfg in configs:
            runner = DiTSAETrainingRunner(cfg, overwrite=args.overwrite)
            runner.run()
            if runner.dist.is_main:
                print((Path(cfg.output_dir) / EVAL_MD).read_text())
                print(f"saved {cfg.sae.architecture()} SAE to {cfg.output_dir}")
    finally:
        shutdown()


def _harvest(args: argparse.Namespace) -> None:
    from sae_lens_dit.hooking.hooked import HookedDiT
    from sae_lens_dit.toy.backbones import load_pipeline
    from sae_lens_dit.training.distributed import harvest_to_cache, init_from_env, shutdown

    args.config = None
    cfg = configs_from_args(args)[0]
    check_device(cfg.device)
    harvest_cfg = replace(cfg.harvest, seed=cfg.harvest.seed if args.seed is None else args.seed)
    output = args.output_dir or str(Path(cfg.output_dir) / "activations")
    ctx = init_from_env(cfg.device)
    try:
        pipe = load_pipeline(cfg.model, device=ctx.device(cfg.device))
        hooked = HookedDiT.from_pipeline(pipe)
        out = harvest_to_cache(pipe, hooked, harvest_cfg, output, ctx, model=cfg.model)
    finally:
        shutdown()
    if ctx.is_main:
        ranks = f" from {ctx.world_size} processes" if ctx.enabled else ""
        print(
            f"wrote {harvest_cfg.num_batches} shards{ranks} to {out}; "
            f"read them with datasets.load_dataset({str(out)!r})"
        )
