"""Reading one mapping of an adapter YAML, so that every error names the file and the field path.

Why a module of its own: the adapter schema (`sae_lens_dit.hooking.adapters`) has a dozen sections and
each needs the same checks (unknown keys with the allowed ones, types, choices from a `Literal`);
keeping the reader apart keeps the schema module about the schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args


class AdapterSpecError(ValueError):
    """A spec file is malformed or does not fit the transformer it is applied to."""


class SpecFields:
    """Reads one mapping of a spec file; every error names the file and the field path."""

    def __init__(self, source: Path, path: str, data: Any):
        self.source, self.path = source, path
        if not isinstance(data, dict):
            self.fail("", f"expected a mapping, received {type(data).__name__} {data!r}")
        self.data = data

    def fail(self, key: str, message: str) -> None:
        field = f"{self.path}.{key}" if self.path and key else (self.path or key or "<top level>")
        raise AdapterSpecError(f"adapter spec {self.source}: field {field!r}: {message}; fix the file")

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                self.fail(str(key), f"unknown key; allowed keys are {list(allowed)}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., nullable: bool = False) -> Any:
        if key not in self.data:
            if default is ...:
                self.fail(key, "missing required field")
            return default
        value = self.data[key]
        if value is None and nullable:
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            names = " or ".join(k.__name__ for k in _as_tuple(kind)) + (" or null" if nullable else "")
            self.fail(key, f"expected {names}, received {value!r}")
        return value

    def choice(self, key: str, options: Any, default: Any = ...) -> Any:
        allowed = get_args(options)
        value = self.get(key, str, default)
        if value not in allowed:
            self.fail(key, f"expected one of {list(allowed)}, received {value!r}")
        return value

    def scalars(self, key: str) -> tuple[tuple[str, Any], ...]:
        """A non-empty mapping of scalar values (`match_config`) as (key, value) pairs."""
        fields = self.sub(key)
        if not fields.data:
            self.fail(key, "expected at least one config key (or leave the section out)")
        for name, value in fields.data.items():
            if not isinstance(value, (str, int, float, bool)) and value is not None:
                fields.fail(
                    str(name), f"expected a scalar config value (string, number, bool or null), received {value!r}"
                )
        return tuple((str(name), value) for name, value in fields.data.items())

    def sub(self, key: str) -> SpecFields:
        return SpecFields(self.source, f"{self.path}.{key}" if self.path else key, self.get(key, dict))


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
