"""`sae-lens-dit`: the command line. One subcommand per job; shared flags are spelled alike.

`sae-lens-dit train` with no arguments runs the default preset end to end: the bundled digits
DiT, a TIDE SAE on one block, and a per-timestep report of held-out reconstruction.

Layout: `training` (train, harvest), `analysis` (eval, dashboard, edit), `serve` (the live explorer),
`hub` (releases, publish); flags that mirror a config dataclass are generated from it (`flags`). No
library module imports this package.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from sae_lens_dit.cli import analysis, hub, serve, training
from sae_lens_dit.cli.training import configs_from_args
from sae_lens_dit.guards.config import check_device

__all__ = ["build_parser", "configs_from_args", "main"]

logger = logging.getLogger("sae_lens_dit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sae-lens-dit",
        description=__doc__.split("\n\nLayout")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Log at INFO level; show an error's traceback")
    sub = parser.add_subparsers(dest="command", required=True)
    training.add_commands(sub)
    analysis.add_commands(sub)
    hub.add_commands(sub)
    serve.add_commands(sub)
    return parser


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
