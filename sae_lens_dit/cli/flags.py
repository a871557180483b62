"""Command-line flags generated from config dataclasses, with each field's docstring as its help.

Why: the configs (`EvalConfig`, `DashboardConfig`, `DiTSAERunnerConfig`, `HarvestConfig`) already
document every field, and copying fields into argparse by hand meant a new field needed a second edit
and the two drifted. One field becomes one flag, `--field-name`, typed from its annotation:

- `int`, `float`, `str`, and `X | None` of them: one value;
- a `Literal[...]`: one of its values (`choices`);
- `tuple[T, ...]`: one or more values;
- `bool`: a switch that flips the default (`--no-steering` for a field that defaults to True);
- `dict[str, Any]`: one JSON object (`--pipeline-kwargs '{"height": 64, "num_frames": 5}'`).

Fields of other types (nested configs, other dicts, unions of several types) get no flag; a subcommand that
needs them adds its own. Field docstrings are read with simple_parsing, as SAELens does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from simple_parsing.docstring import get_attribute_docstring

_SCALARS = (int, float, str)


def field_help(cls: type, name: str) -> str:
    """A config field's docstring (the text under it), so `--help` and the config classes never disagree."""
    return get_attribute_docstring(cls, name).docstring_below or name.replace("_", " ")


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _optional_inner(hint: Any) -> Any:
    """`X` of `X | None` (or `Optional[X]`); the hint itself otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else None
    return hint


def _flag_kwargs(hint: Any, default: Any) -> dict[str, Any] | None:
    """argparse keyword arguments for one field, or None when the field's type has no flag form."""
    inner = _optional_inner(hint)
    if inner is bool:
        return {"action": "store_const", "const": not default}
    if inner in _SCALARS:
        return {"type": inner}
    if typing.get_origin(inner) is Literal:
        choices = typing.get_args(inner)
        if all(isinstance(c, str) for c in choices):
            return {"choices": choices}
        return None
    if typing.get_origin(inner) is tuple:
        args = typing.get_args(inner)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
            return {"type": args[0], "nargs": "+"}
    if typing.get_origin(inner) is dict and typing.get_args(inner) == (str, Any):
        return {"type": json_object, "metavar": "JSON"}
    return None


def json_object(text: str) -> dict[str, Any]:
    """A flag value that must be a JSON object (argparse reports the error and exits 2)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err.msg}); give an object such as '{{\"height\": 64}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"height\": 64}}', received {text!r}")
    return value


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: Iterable[str] = (),
    only: Iterable[str] | None = None,
    overrides_only: bool = False,
    extra_help: Mapping[str, str] | None = None,
) -> list[str]:
    """Add one flag per field of the dataclass `cls` that has a flag form; returns the field names added.

    With `overrides_only`, every flag defaults to None (unset), so `overrides_from_flags` can apply only
    what the user typed on top of a preset or config file; otherwise flags default to the field's default.
    A bool field's flag is `--no-<name>` when the field defaults to True.
    """
    hints = typing.get_type_hints(cls)
    skipped, wanted = set(skip), None if only is None else set(only)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skipped or (wanted is not None and f.name not in wanted) or not f.init:
            continue
        default = _default(f)
        kwargs = _flag_kwargs(hints[f.name], default)
        if kwargs is None:
            if wanted is not None:
                raise TypeError(f"{cls.__name__}.{f.name}: type {hints[f.name]} has no command-line form")
            continue
        name = f.name
        if _optional_inner(hints[f.name]) is bool and default is True:
            name = "no_" + f.name
        help_text = field_help(cls, f.name) + (" " + extra_help[f.name] if extra_help and f.name in extra_help else "")
        if name != f.name:
            help_text = f"Turn off (default on): {help_text}"
        if not overrides_only and "action" not in kwargs and default is not None:
            help_text += f" (default: {_show(default)})"
        parser.add_argument(
            flag_name(name),
            dest=f.name,
            default=None if overrides_only or "action" in kwargs else default,
            help=help_text,
            **kwargs,
        )
        added.append(f.name)
    return added


def _show(value: Any) -> str:
    return " ".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def overrides_from_flags(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """{field: value} of the flags among `names` the user gave (tuples for multi-value flags)."""
    out = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def config_from_flags(cls: type, args: argparse.Namespace) -> Any:
    """An instance of the dataclass `cls` from the flags `add_config_flags` added (unset ones keep the field
    default)."""
    return cls(**overrides_from_flags(args, [f.name for f in dataclasses.fields(cls) if f.init]))
