"""Check user input at load time, before any work, with errors that say what to fix.

Why: configs reach the package as YAML, JSON, CLI flags and Python objects, and every way a wrong
value slipped through used to end in a silently different run or a traceback far from its cause:
a typo'd key dropped by a `from_dict`, `lr: 1e-4` read by YAML as a string, `batch_size: 0`
dividing by zero after the harvest, `--device cuda` on a CPU machine reported as a corrupt file.
These helpers turn each of those into one `ConfigError` (a ValueError) naming the field, what was
expected, what was received and, for unknown keys, the closest valid key. Dataclass configs call
`check_types` and `check_ranges` from `__post_init__`; `from_dict`s call `check_keys`.
"""

from __future__ import annotations

import difflib
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from sae_lens_dit.conventions import TIDE_ARCHITECTURE


class ConfigError(ValueError):
    """A config (file, dict, flag or object) that cannot describe a valid run."""


def closest(name: str, options: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the option most like `name`, or "" when none is close."""
    match = difflib.get_close_matches(str(name), sorted(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_mapping(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys to values, received {type(data).__name__} {data!r:.80}")
    return data


def check_keys(data: Any, allowed: Iterable[str], where: str) -> None:
    """Refuse keys of `data` not in `allowed`, naming the first and the closest allowed key."""
    allowed = set(allowed)
    unknown = sorted((key for key in check_mapping(data, where) if key not in allowed), key=str)
    if unknown:
        first = unknown[0]
        more = f" (and {len(unknown) - 1} more: {unknown[1:]})" if len(unknown) > 1 else ""
        raise ConfigError(
            f"{where}: unknown key {first!r}{closest(first, allowed)}{more}; valid keys are {sorted(allowed)}"
        )


def required_fields(cls: type) -> list[str]:
    """Init fields of dataclass `cls` that have no default."""
    from dataclasses import MISSING

    return [f.name for f in fields(cls) if f.init and f.default is MISSING and f.default_factory is MISSING]


def describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin in (tuple, list):
        inner = args[0] if args else Any
        return f"a list of {describe(inner)}" if len(args) != 2 or args[1] is Ellipsis else f"a list of {len(args)}"
    if origin in (dict, Mapping) or hint is dict:
        return "a mapping"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def conforms(value: Any, hint: Any) -> bool:
    """Whether `value` (as read from YAML/JSON or given in Python) fits the type hint `hint`.

    Numbers: a bool is not an int, an int is a float, a float must be finite. Lists stand for
    tuples. Hints this does not understand are accepted (checked by the class itself, if at all).
    """
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if hint is type(None) or hint is None:
        return value is None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return all(conforms(v, args[0]) for v in value) if args else True
        return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args, strict=True))
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, Mapping)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation this Python cannot evaluate: check nothing
        return {}


def check_types(obj: Any, where: str, skip: Iterable[str] = ()) -> None:
    """Refuse any field of dataclass `obj` whose value does not fit its annotation."""
    assert is_dataclass(obj), obj
    hints, skip = _type_hints(type(obj)), set(skip)
    for f in fields(obj):
        if f.name in skip or f.name not in hints:
            continue
        value, hint = getattr(obj, f.name), hints[f.name]
        if not conforms(value, hint):
            hint_text = ""
            if isinstance(value, str) and _is_number(value):
                hint_text = f" (YAML reads {value} as text: write it with a decimal point, e.g. 1.0e-4)"
            elif isinstance(value, float) and not math.isfinite(value):
                hint_text = " (must be finite)"
            raise ConfigError(
                f"{where}.{f.name}: expected {describe(hint)}, received {type(value).__name__} {value!r:.80}{hint_text}"
            )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_ranges(
    obj: Any, where: str, at_least: Mapping[str, float] | None = None, above: Mapping[str, float] | None = None
) -> None:
    """Refuse numeric fields below their minimum (`at_least`: >=, `above`: >); None values pass."""
    for bounds, op, word in ((at_least or {}, float.__ge__, "at least"), (above or {}, float.__gt__, "greater than")):
        for name, bound in bounds.items():
            value = getattr(obj, name)
            if value is not None and not op(float(value), float(bound)):
                raise ConfigError(f"{where}.{name}={value!r}: must be {word} {bound:g}")


def read_config_file(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A YAML (.yaml/.yml) or JSON file holding one mapping; malformed files name file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} file {path}: cannot read it ({type(err).__name__}: {err})") from None
    try:
        data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{what} file {path}{line}: malformed YAML ({problem})") from None
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{what} file {path}, line {err.lineno} column {err.colno}: malformed JSON ({err.msg})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file {path}: expected a mapping of keys to values, received {type(data).__name__}")
    return data


def check_device(device: str) -> None:
    """Refuse a torch device this machine does not have, saying so (not as a corrupt file later)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device {device!r} is not a torch device ({err}); use e.g. cpu, cuda or cuda:1") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available on this machine; use --device cpu")


def training_sae_config(data: Any, where: str = "sae") -> Any:
    """The SAELens training config the `sae:` section describes, with every key and type checked.

    SAELens's own `from_dict` drops keys it does not know, so a typo there (`d_sea: 3072`) used to
    train with the default; here it is an error naming the closest field of the architecture.
    """
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY, get_sae_training_class

    data = check_mapping(data, where)
    architecture = data.get("architecture", TIDE_ARCHITECTURE)
    if not isinstance(architecture, str) or architecture not in SAE_TRAINING_CLASS_REGISTRY:
        known = sorted(SAE_TRAINING_CLASS_REGISTRY)
        suggestion = closest(str(architecture), known)
        raise ConfigError(
            f"{where}.architecture={architecture!r} is not a registered training architecture{suggestion}; "
            f"registered: {known}"
        )
    cls = get_sae_training_class(architecture)[1]
    check_keys(data, [f.name for f in fields(cls) if f.init] + ["architecture"], f"{where} ({architecture})")
    missing = [name for name in required_fields(cls) if name not in data]
    if missing:
        raise ConfigError(f"{where}: architecture {architecture!r} needs {missing}; add them to the {where} section")
    if "metadata" in data:
        check_mapping(data["metadata"], f"{where}.metadata")
    try:
        cfg = cls.from_dict({**data, "architecture": architecture})
    except (TypeError, ValueError, AssertionError) as err:
        raise ConfigError(f"{where} ({architecture}): {err}") from None
    check_types(cfg, where, skip=("metadata",))
    check_ranges(cfg, where, at_least={"d_in": 1, "d_sae": 1, **({"k": 1} if hasattr(cfg, "k") else {})})
    return cfg
