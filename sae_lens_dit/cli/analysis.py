"""`sae-lens-dit eval`, `dashboard` and `edit`: the analysis commands, on SAEs from a release or a folder.

Why a module of its own: the three commands share how SAEs are named on the command line (`--release R
[--sae-id ...]` or `--sae FOLDER ...`). `eval` and `dashboard` take every field of their config
dataclass as a flag, generated from it (`cli.flags`), so `--help` is the field docstrings and a new
field needs no second edit; `edit` has no config class and declares its flags here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sae_lens_dit.analysis.dashboard.build import DashboardConfig
from sae_lens_dit.analysis.evals import EvalConfig
from sae_lens_dit.analysis.interventions import OPERATIONS
from sae_lens_dit.cli.flags import add_config_flags, config_from_flags
from sae_lens_dit.conventions import TIDE_ARCHITECTURE, TIMESTEP_MAX
from sae_lens_dit.guards.output_dirs import check_claimable, claim
from sae_lens_dit.saes.loading import load_sae_folder

_FID_WARNING = "Loading it runs the file's code, like any TorchScript or pickle: pass only files you trust."


def add_commands(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "eval",
        help="The evaluation protocol: per-timestep reconstruction, spliced generation, "
        "ground-truth factors, probes; JSON, markdown and PNG plots",
    )
    add_sae_source(evaluate)
    evaluate.add_argument("--output-dir", required=True, type=Path, help="Folder for eval.json, eval.md and plots")
    add_config_flags(evaluate, EvalConfig, extra_help={"fid_features": _FID_WARNING})
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
    add_config_flags(dashboard, DashboardConfig)
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
    from sae_lens_dit.analysis.evals import evaluate, format_report, plot_reports, write_eval_files

    cfg = config_from_flags(EvalConfig, args)
    check_claimable(args.output_dir, "eval")
    reports = evaluate(load_saes(args), cfg)
    claim(args.output_dir, "eval")
    text = "\n\n".join(format_report(r) for r in reports)
    json_path, md_path = write_eval_files(args.output_dir, reports, cfg, text)
    plots = plot_reports(reports, args.output_dir)
    print(text)
    print(f"\nwrote {json_path}, {md_path.name} and {len(plots)} plots")


def _dashboard(args: argparse.Namespace) -> None:
    from sae_lens_dit.analysis.dashboard.build import build_dashboard
    from sae_lens_dit.hub.releases import get_release

    if args.release:
        get_release(args.release)  # an unknown release lists the known ones
    cfg = config_from_flags(DashboardConfig, args)
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
        from sae_lens_dit.analysis.interventions.concepts import load_concept
        from sae_lens_dit.hub.releases import release_concepts

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
        pipe, HookedDiT.from_pipeline(pipe), saes, spec, args.seed, use_error_term=not args.no_error_term, **kwargs
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
