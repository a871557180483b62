"""`sae-lens-dit`: the command line. One subcommand per job; shared flags are spelled alike.

`sae-lens-dit train` with no arguments runs the default preset end to end: the bundled digits
DiT, a TIDE SAE on one block, and a per-timestep report of held-out reconstruction.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import yaml
from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY, get_sae_training_class
from simple_parsing.docstring import get_attribute_docstring

from sae_lens_dit.analysis.dashboard.build import DashboardConfig
from sae_lens_dit.analysis.evals import EvalConfig
from sae_lens_dit.analysis.interventions import OPERATIONS
from sae_lens_dit.conventions import (
    DEFAULT_HOOK,
    EVAL_JSON,
    EVAL_MD,
    RELEASE_ENTRY_FILENAME,
    TIDE_ARCHITECTURE,
    TIMESTEP_MAX,
)
from sae_lens_dit.guards.config import (
    ConfigError,
    check_device,
    check_mapping,
    closest,
    conforms,
    describe,
    load_sae_folder,
    read_config_file,
)
from sae_lens_dit.guards.output_dirs import check_claimable, claim
from sae_lens_dit.training.harvest import HarvestConfig
from sae_lens_dit.training.runner import DEFAULT_PRESET, PRESETS, DiTSAERunnerConfig, DiTSAETrainingRunner

logger = logging.getLogger("sae_lens_dit")


def _help(cls: type, name: str) -> str:
    """A config field's docstring, so `--help` and the config classes never disagree."""
    return get_attribute_docstring(cls, name).docstring_below or name


def _add_shared(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", help=_help(DiTSAERunnerConfig, "output_dir"))
    parser.add_argument("--seed", type=int, help=_help(DiTSAERunnerConfig, "seed"))
    parser.add_argument("--model", help=_help(DiTSAERunnerConfig, "model"))
    parser.add_argument("--hook", nargs="+", help=f"Hook point(s), e.g. {DEFAULT_HOOK}")
    parser.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS), help="Starting configuration")
    parser.add_argument("--num-images", type=int, help="Images to sample for the harvest")
    parser.add_argument("--num-inference-steps", type=int, help="Denoising steps per image")
    parser.add_argument("--device", help=_help(DiTSAERunnerConfig, "device"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sae-lens-dit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Log at INFO level; show an error's traceback")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="Harvest activations and train SAE(s) through SAELens's SAETrainer")
    _add_shared(train)
    train.set_defaults(run=_train)
    train.add_argument("--config", type=Path, help="YAML/JSON runner config (DiTSAERunnerConfig.to_dict layout)")
    train.add_argument("--architecture", nargs="+", help="Registered SAELens training architecture(s), e.g. tide topk")
    train.add_argument("--k", type=int, help="Active latents per token (TopK-family architectures)")
    train.add_argument("--d-sae", type=int, help="Dictionary size")
    train.add_argument("--training-tokens", type=int, help=_help(DiTSAERunnerConfig, "training_tokens"))
    train.add_argument("--data-mode", choices=("streaming", "cached"), help=_help(DiTSAERunnerConfig, "data_mode"))
    train.add_argument("--cache-dir", help=_help(DiTSAERunnerConfig, "cache_dir"))
    train.add_argument(
        "--wandb-mode", choices=("offline", "online", "disabled"), help=_help(DiTSAERunnerConfig, "wandb_mode")
    )
    train.add_argument("--overwrite", action="store_true", help="Replace an output folder that holds a different run")

    harvest = sub.add_parser(
        "harvest",
        help="Write an activation cache (parquet shards readable by datasets); "
        "under `torchrun --nproc_per_node N` every rank writes its share",
    )
    _add_shared(harvest)
    harvest.add_argument("--images-per-batch", type=int, help=_help(HarvestConfig, "images_per_batch"))
    harvest.set_defaults(run=_harvest)

    evaluate = sub.add_parser(
        "eval",
        help="The evaluation protocol: per-timestep reconstruction, spliced generation, "
        "ground-truth factors, probes; JSON, markdown and PNG plots",
    )
    add_sae_source(evaluate)
    evaluate.add_argument("--output-dir", required=True, type=Path, help="Folder for eval.json, eval.md and plots")
    evaluate.add_argument("--seed", type=int, default=0, help=_help(EvalConfig, "seed"))
    evaluate.add_argument("--device", default="cpu", help=_help(EvalConfig, "device"))
    evaluate.add_argument("--num-images", type=int, default=EvalConfig.num_images, help=_help(EvalConfig, "num_images"))
    evaluate.add_argument(
        "--num-samples", type=int, default=EvalConfig.num_samples, help=_help(EvalConfig, "num_samples")
    )
    evaluate.add_argument(
        "--num-inference-steps",
        type=int,
        default=EvalConfig.num_inference_steps,
        help=_help(EvalConfig, "num_inference_steps"),
    )
    evaluate.add_argument("--guidance-scale", type=float, help=_help(EvalConfig, "guidance_scale"))
    evaluate.add_argument(
        "--fid-features",
        help=_help(EvalConfig, "fid_features") + " Loading it runs the file's "
        "code, like any TorchScript or pickle: pass only files you trust.",
    )
    evaluate.add_argument("--no-factors", action="store_true", help="Skip factor AUROCs and probes")
    evaluate.set_defaults(run=_eval)

    dashboard = sub.add_parser(
        "dashboard",
        help="A static HTML site per SAE: every latent against the timestep, "
        "top images with token heatmaps, class and factor breakdowns",
    )
    add_sae_source(dashboard)
    dashboard.add_argument(
        "--output-dir",
        required=True,
        type=Path,
        help="Folder of the site: new, empty, or an earlier dashboard to update",
    )
    for name in ("num_images", "num_inference_steps", "max_latents", "top_images", "strip_steps", "thumb_size"):
        dashboard.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            default=getattr(DashboardConfig, name),
            help=_help(DashboardConfig, name),
        )
    dashboard.add_argument("--latents", nargs="+", type=int, help=_help(DashboardConfig, "latents"))
    dashboard.add_argument("--guidance-scale", type=float, help=_help(DashboardConfig, "guidance_scale"))
    dashboard.add_argument("--seed", type=int, default=0, help=_help(DashboardConfig, "seed"))
    dashboard.add_argument("--device", default="cpu", help=_help(DashboardConfig, "device"))
    dashboard.add_argument("--no-steering", action="store_true", help="Skip the steering previews")
    dashboard.set_defaults(run=_dashboard)

    edit = sub.add_parser(
        "edit",
        help="Re-generate samples with SAE latents steered (a spec, or --latent); "
        "before/after PNG grids and a JSON of what was edited",
    )
    edit.add_argument("--release", help="Release id of the SAE(s) (sae-lens-dit releases lists them)")
    edit.add_argument(
        "--sae-id",
        nargs="+",
        help="SAE id(s) within --release; default: the TIDE SAE at --hook or at each of the spec's hooks",
    )
    edit.add_argument("--sae", nargs="+", type=Path, help="SAE folder(s) in SAELens's layout, instead of --release")
    edit.add_argument(
        "--hook", help="Hook of the SAE for --latent (and to pick --release's SAE), e.g. blocks.1.hook_resid_post"
    )
    edit.add_argument("--spec", type=Path, help="Steering spec, YAML or JSON (SteeringSpec.to_dict layout)")
    edit.add_argument("--latent", nargs="+", type=int, help="Latent(s) to steer at --hook, instead of a spec")
    edit.add_argument(
        "--toward",
        nargs="+",
        metavar="CONCEPT",
        help="Named concept(s) of --release (or --concepts), e.g. hue=2, position=left, size=larger; "
        "a wrong name lists the available ones",
    )
    edit.add_argument("--concepts", type=Path, help="Concept folder for --toward (default: the release's own)")
    edit.add_argument(
        "--window",
        nargs="+",
        metavar="T",
        help="auto (the measured window of each concept; the default) or LOW HIGH timesteps "
        "(DDPM scale, 1000 = noise) for every edit",
    )
    edit.add_argument("--op", default="add", choices=OPERATIONS, help="Operation for --latent")
    edit.add_argument(
        "--value",
        type=float,
        help="--latent: strength (add, default 8), value (clamp) or factor (scale); --toward: "
        "strength in units of each latent's typical value (default: the tuned one)",
    )
    edit.add_argument("--class-labels", nargs="+", type=int, help="Class labels to sample (class-conditional DiTs)")
    edit.add_argument("--prompt", nargs="+", help="Prompt(s) to sample (text-conditioned pipelines)")
    edit.add_argument("--seed", type=int, default=0, help="Seed of the sample to re-generate")
    edit.add_argument(
        "--output-dir", required=True, type=Path, help="New folder for before.png, after.png, edit.png and edit.json"
    )
    edit.add_argument("--model", help="Backbone (default: the release's model, else the SAE's model_name)")
    edit.add_argument("--num-inference-steps", type=int, default=50, help="Denoising steps")
    edit.add_argument("--guidance-scale", type=float, help="CFG scale (default: the pipeline's)")
    edit.add_argument("--no-error-term", action="store_true", help="Replace activations by the SAE's reconstruction")
    edit.add_argument("--device", default="cpu", help="Torch device")
    edit.set_defaults(run=_edit)

    releases = sub.add_parser("releases", help="List the pretrained releases registered with SAE.from_pretrained")
    releases.add_argument("--release", help="Show one release in full (every field of its entry)")
    releases.set_defaults(run=_releases)

    publish = sub.add_parser("publish", help="Runner output folder(s) -> a Hub repo in SAELens's layout, with a card")
    publish.add_argument(
        "--sae", nargs="+", required=True, type=Path, help="Runner output folder(s) (sae-lens-dit train)"
    )
    publish.add_argument("--repo-id", required=True, help="Hub repo to publish to, owner/name")
    publish.add_argument("--release", help="Release id of the releases.yaml entry; default tide-<model>/<repo name>")
    publish.add_argument("--output-dir", required=True, type=Path, help="New folder for the repo's files")
    publish.add_argument("--dry-run", action="store_true", help="Write the folder only; upload nothing")
    publish.set_defaults(run=_publish)
    return parser


def _base_dict(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "config", None):
        return read_config_file(args.config)
    return json.loads(json.dumps(PRESETS[args.preset]))


def _source(args: argparse.Namespace) -> str:
    """Where a train config came from, for error messages."""
    if getattr(args, "config", None):
        return str(args.config)
    return f"the config (preset {args.preset!r} with the flags given)"


def _sae_fields(architecture: Any) -> set[str]:
    """Fields of a registered training architecture's config; an unknown one is a clear error."""
    if not isinstance(architecture, str) or architecture not in SAE_TRAINING_CLASS_REGISTRY:
        known = sorted(SAE_TRAINING_CLASS_REGISTRY)
        suggestion = closest(str(architecture), known)
        raise ConfigError(
            f"architecture {architecture!r} is not a registered training architecture{suggestion}; registered: {known}"
        )
    return _field_names(get_sae_training_class(architecture)[1])


def configs_from_args(args: argparse.Namespace) -> list[DiTSAERunnerConfig]:
    """One runner config per (architecture, hook) asked for; several share one harvest."""
    base = _base_dict(args)
    _check_shape(base, _source(args))
    harvest = base.setdefault("harvest", {})
    for flag, key in (("num_images", "num_images"), ("num_inference_steps", "num_inference_steps")):
        if getattr(args, flag) is not None:
            harvest[key] = getattr(args, flag)
    hooks = args.hook or [base.get("hook_name", DEFAULT_HOOK)]
    harvest["hook_names"] = list(dict.fromkeys([*harvest.get("hook_names", []), *hooks])) if not args.hook else hooks
    for flag in ("output_dir", "seed", "model", "device"):
        if getattr(args, flag) is not None:
            base[flag] = getattr(args, flag)
    for flag in ("training_tokens", "data_mode", "cache_dir", "wandb_mode"):
        if getattr(args, flag, None) is not None:
            base[flag] = getattr(args, flag)
    sae = base.setdefault("sae", {})
    check_mapping(sae, f"{_source(args)}: sae")
    for flag in ("k", "d_sae"):
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


def _field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


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
    if args.images_per_batch is not None:
        harvest_cfg = replace(harvest_cfg, images_per_batch=args.images_per_batch)
    output = args.output_dir or str(Path(cfg.output_dir) / "activations")
    ctx = init_from_env(cfg.device)
    try:
        pipe = load_pipeline(cfg.model, device=ctx.device(cfg.device))
        hooked = HookedDiT(pipe.transformer)
        out = harvest_to_cache(pipe, hooked, harvest_cfg, output, ctx, model=cfg.model)
    finally:
        shutdown()
    if ctx.is_main:
        ranks = f" from {ctx.world_size} processes" if ctx.enabled else ""
        print(
            f"wrote {harvest_cfg.num_batches} shards{ranks} to {out}; "
            f"read them with datasets.load_dataset({str(out)!r})"
        )


def add_sae_source(parser: argparse.ArgumentParser) -> None:
    """`--release R [--sae-id ID ...]` or `--sae FOLDER ...`: the SAEs a subcommand works on."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--release", help="A release id (sae-lens-dit releases lists them)")
    source.add_argument("--sae", nargs="+", type=Path, help="SAE folder(s) in SAELens's layout (cfg.json + weights)")
    parser.add_argument("--sae-id", nargs="+", help="SAE id(s) within --release; default: all of them")


def load_saes(args: argparse.Namespace) -> list:
    """The SAEs named by `add_sae_source`'s flags, loaded through SAELens."""
    from sae_lens import SAE

    from sae_lens_dit.hub.releases import get_release

    if args.sae:
        return [load_sae_folder(folder) for folder in args.sae]
    ids = args.sae_id or [sae.id for sae in get_release(args.release).saes]
    return [SAE.from_pretrained(args.release, sae_id) for sae_id in ids]


def _eval(args: argparse.Namespace) -> None:
    from sae_lens_dit.analysis.evals import evaluate, format_report, plot_reports

    cfg = EvalConfig(
        num_images=args.num_images,
        num_samples=args.num_samples,
        guidance_scale=args.guidance_scale,
        num_inference_steps=args.num_inference_steps,
        fid_features=args.fid_features,
        factors=not args.no_factors,
        seed=args.seed,
        device=args.device,
    )
    check_claimable(args.output_dir, "eval")
    reports = evaluate(load_saes(args), cfg)
    claim(args.output_dir, "eval")
    (args.output_dir / EVAL_JSON).write_text(json.dumps({"config": asdict(cfg), "reports": reports}, indent=1))
    text = "\n\n".join(format_report(r) for r in reports)
    (args.output_dir / EVAL_MD).write_text(text + "\n")
    plots = plot_reports(reports, args.output_dir)
    print(text)
    print(f"\nwrote {args.output_dir / 'eval.json'}, eval.md and {len(plots)} plots")


def _dashboard(args: argparse.Namespace) -> None:
    from sae_lens_dit.analysis.dashboard.build import build_dashboard
    from sae_lens_dit.hub.releases import get_release

    if args.release:
        get_release(args.release)  # an unknown release lists the known ones
    cfg = DashboardConfig(
        num_images=args.num_images,
        num_inference_steps=args.num_inference_steps,
        max_latents=args.max_latents,
        top_images=args.top_images,
        strip_steps=args.strip_steps,
        thumb_size=args.thumb_size,
        latents=tuple(args.latents) if args.latents else None,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        device=args.device,
        steering=not args.no_steering,
    )
    build = build_dashboard(load_saes(args), args.output_dir, cfg)
    print(
        f"dashboard: {build.written} files written, {build.reused} unchanged, {build.removed} removed; "
        f"open {build.index.resolve().as_uri()}"
    )


def _window_arg(values: list[str] | None) -> Any:
    """--window: None/["auto"] -> "auto"; [LOW, HIGH] -> (low, high)."""
    if not values or values == ["auto"]:
        return "auto"
    try:
        low, high = (float(v) for v in values)
    except ValueError:
        raise ValueError(f"--window takes auto or two timesteps LOW HIGH, received {' '.join(values)}") from None

    if not 0.0 <= low <= high <= TIMESTEP_MAX:
        raise ValueError(f"--window needs 0 <= LOW <= HIGH <= {TIMESTEP_MAX:g} (DDPM scale), received {low} {high}")
    return low, high


def _edit(args: argparse.Namespace) -> None:
    from sae_lens import SAE

    from sae_lens_dit.analysis.interventions import LatentEdit, SteeringSpec, edit, save_grid
    from sae_lens_dit.guards.data import check_class_labels
    from sae_lens_dit.hooking.hooked import HookedDiT
    from sae_lens_dit.hub.releases import get_release
    from sae_lens_dit.toy.backbones import load_pipeline

    if sum(x is not None for x in (args.spec, args.latent, args.toward)) != 1:
        raise ValueError("give one of --spec FILE, --latent N [N ...] (with --hook) or --toward CONCEPT")
    if args.latent is not None and not args.hook:
        raise ValueError("--latent needs --hook (the hook of the SAE whose latents to steer)")
    window = _window_arg(args.window)
    if args.toward:
        from sae_lens_dit.analysis.interventions.concepts import load_concept, release_concepts

        if args.concepts is None and not args.release:
            raise ValueError("--toward needs --release (whose concepts to use) or --concepts DIR")
        folder = args.concepts if args.concepts is not None else release_concepts(args.release)
        spec = SteeringSpec()
        for name in args.toward:
            spec = spec + load_concept(folder, name, args.value, window)
    elif args.spec:
        spec = SteeringSpec.load(args.spec)
    else:
        timesteps = None if window == "auto" else window
        value = 8.0 if args.value is None else args.value
        spec = SteeringSpec((LatentEdit(args.hook, tuple(args.latent), args.op, value, timesteps=timesteps),))
    if not spec.edits:
        raise ValueError(f"steering spec {args.spec} has no edits: list at least one under `edits`")
    if (args.output_dir / "edit.json").exists():
        raise FileExistsError(f"{args.output_dir} already holds an edit (edit.json); choose a new --output-dir")
    check_claimable(args.output_dir, "edit")
    saes = spec.load_saes(args.device)
    if args.sae:
        saes += [load_sae_folder(folder, device=args.device) for folder in args.sae]
    elif args.release and not args.toward:  # a concept names its own SAEs
        release = get_release(args.release)
        hooks = [args.hook] if args.hook else spec.hooks
        ids = args.sae_id or [sae.id for sae in release.saes if sae.hook in hooks]
        if not args.sae_id and len(ids) > len(hooks):  # several architectures at one hook: prefer TIDE
            ids = [
                sae.id for sae in release.saes if sae.hook in hooks and sae.architecture == TIDE_ARCHITECTURE
            ] or ids[:1]
        if not ids:
            raise ValueError(
                f"release {args.release!r} has no SAE at {hooks}; its SAEs read "
                f"{sorted({sae.hook for sae in release.saes})}"
            )
        saes += [SAE.from_pretrained(args.release, sae_id, device=args.device) for sae_id in ids]
    if not saes:
        raise ValueError("no SAE to steer: give --release (with --hook or --sae-id), --sae, or `saes` in the spec")
    model = args.model or (get_release(args.release).model if args.release else saes[0].cfg.metadata.model_name)
    pipe = load_pipeline(model, device=args.device)
    kwargs: dict[str, Any] = {"num_inference_steps": args.num_inference_steps}
    if args.guidance_scale is not None:
        kwargs["guidance_scale"] = args.guidance_scale
    if args.prompt:
        kwargs["prompt"] = args.prompt
    else:
        kwargs["class_labels"] = args.class_labels or [0]
        check_class_labels(pipe, kwargs["class_labels"], "--class-labels")
    result = edit(
        pipe, HookedDiT(pipe.transformer), saes, spec, args.seed, use_error_term=not args.no_error_term, **kwargs
    )
    claim(args.output_dir, "edit")
    save_grid(args.output_dir / "before.png", [result.before])
    save_grid(args.output_dir / "after.png", [result.after])
    save_grid(args.output_dir / "edit.png", [result.before, result.after])
    change = float(abs(result.after.astype("float64") - result.before).mean())
    report = {
        "model": model,
        "seed": args.seed,
        "call": {k: v for k, v in kwargs.items()},
        "saes": [
            {"hook": sae.cfg.metadata.hook_name, "architecture": sae.cfg.architecture(), "d_sae": sae.cfg.d_sae}
            for sae in saes
        ],
        "spec": spec.to_dict(),
        "use_error_term": not args.no_error_term,
        "edited": result.trace.summary(),
        "windows": [list(e.timesteps) if e.timesteps else None for e in spec.edits],
        "mean_abs_pixel_change": change,
    }
    (args.output_dir / "edit.json").write_text(json.dumps(report, indent=1))
    print(
        f"edited {len(result.after)} image(s), mean |pixel change| {change:.4f}; wrote before.png, after.png, "
        f"edit.png (top: before, bottom: after) and edit.json to {args.output_dir}"
    )


def _releases(args: argparse.Namespace) -> None:
    from sae_lens_dit.hub.releases import get_release, list_releases

    if args.release:
        release = get_release(args.release)
        print(yaml.safe_dump({release.id: asdict(release)}, sort_keys=False, width=1000))
        return
    rows = [("release", "status", "source", "sae id", "explained var", "L0", "dead", "dense")]
    for release_id in list_releases():
        release = get_release(release_id)
        source = f"bundled ({release.bundled})" if release.bundled else f"hub {release.repo_id}"
        source += f"@{release.revision[:12]}" if release.revision else ""
        for sae in release.saes:
            values = (sae.variance_explained, sae.l0, sae.dead_fraction, sae.dense_fraction)
            metrics = [f"{value:.4g}" if value is not None else "-" for value in values]
            rows.append((release.id, release.status, source, sae.id, *metrics))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print('\nLoad one with: import sae_lens_dit; SAE.from_pretrained("<release>", "<sae id>")')


def _publish(args: argparse.Namespace) -> None:
    from sae_lens_dit.hub.publish import publish

    out, revision = publish(args.sae, args.repo_id, args.output_dir, release_id=args.release, dry_run=args.dry_run)
    if revision is None:
        print(f"wrote {out} (dry run: nothing uploaded); its files are exactly what would go to {args.repo_id}")
    else:
        print(f"published {out} to https://huggingface.co/{args.repo_id} at commit {revision}")
    print(f"releases.yaml entry to add (also in {out / RELEASE_ENTRY_FILENAME}):\n")
    print((out / RELEASE_ENTRY_FILENAME).read_text())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        if getattr(args, "device", None):
            check_device(args.device)
        args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, OSError) as err:
        return _fail(args, err)
    return 0  # anything else is a bug, not bad input: its traceback is what to report


def _fail(args: argparse.Namespace, err: BaseException) -> int:
    """Report bad input as one line on stderr (the traceback too with -v); returns exit code 2."""
    if args.verbose:
        traceback.print_exception(err)
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(str(text).split()) or type(err).__name__
    print(f"sae-lens-dit {args.command}: error: {text}", file=sys.stderr)
    return 2
