"""`sae-lens-dit serve`: the live feature explorer, a local web app over a release's (or folders') SAEs.

Why a module of its own: `serve` is the one command with optional dependencies (starlette and
uvicorn, the `app` extra) and a long-running server, so it checks for them first and says which
extra to install (exit 2, one line), before loading any model. It resolves what the app cannot:
releases (analysis may not import the hub), the backbone they were trained on, and where each SAE
comes from (written into exported specs, so `sae-lens-dit edit --spec` replays them). The app binds to
127.0.0.1 unless `--host` says otherwise and writes only inside `--cache-dir`.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from sae_lens_dit.cli.analysis import add_sae_source

DEFAULT_CACHE = Path("~/.cache/sae-lens-dit/explorer")


def add_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser(
        "serve",
        help="A local web app to paint SAE latents onto a region of a sample and compare it with the "
        "original; edits export as steering specs (needs the app extra: pip install 'sae-lens-dit[app]')",
    )
    add_sae_source(serve)
    serve.add_argument("--host", default="127.0.0.1", help="Address to bind (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=7860, help="Port (default: 7860)")
    serve.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"Folder the app owns: cached images and latent summaries, nothing else (default: {DEFAULT_CACHE})",
    )
    serve.add_argument("--model", help="Backbone (default: the release's model, else the SAE's model_name)")
    serve.add_argument("--num-inference-steps", type=int, default=20, help="Denoising steps of every sample")
    serve.add_argument("--max-strength", type=float, default=100.0, help="Largest |strength| a request may ask for")
    serve.add_argument(
        "--max-cache-mb",
        type=float,
        default=512.0,
        help="Size the cached images may reach; beyond it the least recently used are removed (default: 512)",
    )
    serve.add_argument("--device", default="cpu", help="Torch device")
    serve.set_defaults(run=_serve)


def missing_extra() -> list[str]:
    return [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]


def _serve(args: argparse.Namespace) -> None:
    missing = missing_extra()
    if missing:
        raise ValueError(f"the live explorer needs {' and '.join(missing)}: pip install 'sae-lens-dit[app]'")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, received {args.port}")
    if not 1 <= args.num_inference_steps <= 1000:
        raise ValueError(f"--num-inference-steps must be in 1..1000, received {args.num_inference_steps}")
    import uvicorn
    from sae_lens import SAE

    from sae_lens_dit.analysis.explorer import create_app
    from sae_lens_dit.analysis.interventions import SAESource
    from sae_lens_dit.guards.output_dirs import check_claimable
    from sae_lens_dit.hooking.hooked import HookedDiT
    from sae_lens_dit.hub.releases import get_release
    from sae_lens_dit.saes.loading import load_sae_folder
    from sae_lens_dit.toy.backbones import load_pipeline

    cache_dir = args.cache_dir.expanduser()
    check_claimable(cache_dir, "serve", flag="--cache-dir")  # refuse a foreign folder before loading anything
    if args.sae:
        saes = [load_sae_folder(folder, device=args.device) for folder in args.sae]
        sources = [SAESource(path=str(folder.resolve())) for folder in args.sae]
        names = [str(folder) for folder in args.sae]
        model = args.model or saes[0].cfg.metadata.model_name
    else:
        release = get_release(args.release)
        ids = args.sae_id or [sae.id for sae in release.saes]
        saes = [SAE.from_pretrained(args.release, sae_id, device=args.device) for sae_id in ids]
        sources = [SAESource(release=args.release, sae_id=sae_id) for sae_id in ids]
        names, model = list(ids), args.model or release.model
    if not model:
        raise ValueError("cannot tell the backbone: give --model (a bundled name, a diffusers folder or a Hub id)")
    pipe = load_pipeline(model, device=args.device)
    pipe.set_progress_bar_config(disable=True)
    app = create_app(
        pipe,
        HookedDiT.from_pipeline(pipe),
        saes,
        cache_dir,
        sources=sources,
        names=names,
        model=model,
        num_inference_steps=args.num_inference_steps,
        max_strength=args.max_strength,
        max_cache_mb=args.max_cache_mb,
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {args.host} lets other machines reach the app (it has no authentication)", flush=True)
    print(f"sae-lens-dit live explorer: http://{host}:{args.port}/  (cache: {cache_dir}; Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
