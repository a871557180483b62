"""Where the data folders `adapters/` and `pretrained/` are, in a wheel and in a checkout alike.

The wheel installs them inside the package (`sae_lens_dit/_data/...`); an editable checkout keeps
them at the repository root. Both are data, never imported as Python.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@cache
def _data_dir(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"sae_lens_dit: data folder {name!r} not found in the wheel ({_PACKAGE / '_data'}) or the "
        f"checkout ({_PACKAGE.parent}); reinstall the package with `pip install .`"
    )


def adapters_dir() -> Path:
    return _data_dir("adapters")


def pretrained_dir() -> Path:
    return _data_dir("pretrained")
