"""What a request to the live explorer may ask for, checked field by field before any model runs.

Why a module of its own: the explorer is a web server, so every value it receives is untrusted text
(a query string a user can edit, a link someone shared). Each field is parsed here into a typed
`ViewRequest` with explicit bounds (latent ids in range, finite strengths within `max_strength`,
boxes inside [0, 1], windows within [0, TIMESTEP_MAX], classes the backbone was trained on, seeds
non-negative ints, prompts of bounded length) and anything else is refused with a `BadRequest`
naming the field, what was received and what is allowed: one line the app returns as a 400. The
same query string is the page's URL state, so a shared link re-runs exactly this validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sae_lens_dit.conventions import TIMESTEP_MAX

MAX_SEED = 2**63 - 1
MAX_LATENTS = 16
"""Latents one edit may paint at once."""
MAX_PROMPT_CHARS = 500
EDIT_OPS = ("add", "clamp", "scale", "zero")
"""Operations the explorer offers (swap needs competitor lists, which the page has no control for)."""
FIELDS = ("sae", "class", "prompt", "seed", "latents", "strength", "unit", "op", "box", "window")
"""Every query parameter the explorer reads; any other name is refused (a typo must not be ignored silently)."""


class BadRequest(ValueError):
    """A request the explorer refuses; its message is the one line the client sees (HTTP 400)."""


@dataclass(frozen=True)
class Limits:
    """What the served model and SAEs allow, fixed when the app is created."""

    d_sae: tuple[int, ...]
    """Latents of each served SAE, by index."""
    class_labels: tuple[int, ...] | None
    """Classes the backbone was trained on; None for a text-conditioned pipeline (then `prompt` is used)."""
    max_strength: float = 100.0
    """Largest |strength| accepted, in either unit."""


@dataclass(frozen=True)
class ViewRequest:
    """One validated view: the sample (class or prompt, seed) and, when latents are given, the edit on it."""

    sae: int = 0
    class_label: int | None = None
    prompt: str | None = None
    seed: int = 0
    latents: tuple[int, ...] = ()
    strength: float = 4.0
    unit: str = "typical"
    op: str = "add"
    box: tuple[float, float, float, float] | None = None
    window: tuple[float, float] | str = "auto"

    def sample_key(self) -> dict[str, Any]:
        """The fields that decide the unedited sample (for content addressing)."""
        return {"class": self.class_label, "prompt": self.prompt, "seed": self.seed}


def _one(query: Mapping[str, Any], name: str) -> str | None:
    value = query.get(name)
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise BadRequest(f"{name} given {len(value)} times; give it once")
        value = value[0]
    return str(value).strip()


def _int(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, received {text[:40]!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be in {low}..{high}, received {value}")
    return value


def _floats(name: str, text: str, count: int, layout: str) -> tuple[float, ...]:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise BadRequest(f"{name} must be {layout} (numbers), received {text[:60]!r}") from None
    if len(values) != count:
        raise BadRequest(f"{name} must be {layout} ({count} numbers), received {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise BadRequest(f"{name} must hold finite numbers, received {text[:60]!r}")
    return values


def parse_latents(text: str, d_sae: int) -> tuple[int, ...]:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if not parts:
        raise BadRequest("latents is empty; give one or more latent ids, e.g. latents=12,40")
    if len(parts) > MAX_LATENTS:
        raise BadRequest(f"latents lists {len(parts)} ids; at most {MAX_LATENTS} per edit")
    latents = tuple(_int("latent id", p, 0, MAX_SEED) for p in parts)
    bad = [i for i in latents if i >= d_sae]
    if bad:
        raise BadRequest(f"latent id(s) {bad} out of range: this SAE has {d_sae} latents (0..{d_sae - 1})")
    if len(set(latents)) != len(latents):
        raise BadRequest(f"latents lists an id twice ({text[:60]!r}); give each once")
    return latents


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    if text in ("", "all"):
        return None
    x0, y0, x1, y1 = _floats("box", text, 4, "x0,y0,x1,y1 in fractions of the image")
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise BadRequest(f"box must lie inside [0, 1] with x0 < x1 and y0 < y1, received {x0:g},{y0:g},{x1:g},{y1:g}")
    return x0, y0, x1, y1


def parse_window(text: str) -> tuple[float, float] | str:
    if text == "auto":
        return "auto"
    low, high = _floats("window", text, 2, "auto or LOW,HIGH timesteps")
    if not 0.0 <= low <= high <= TIMESTEP_MAX:
        raise BadRequest(
            f"window must satisfy 0 <= LOW <= HIGH <= {TIMESTEP_MAX:g} (DDPM scale, {TIMESTEP_MAX:g} = noise), "
            f"received {low:g},{high:g}"
        )
    return low, high


def parse_view(query: Mapping[str, Any], limits: Limits) -> ViewRequest:
    """A `ViewRequest` from query parameters (str values, or one-element lists), or `BadRequest`."""
    unknown = sorted(set(query) - set(FIELDS))
    if unknown:
        raise BadRequest(f"unknown parameter(s) {unknown}; the explorer reads {list(FIELDS)}")
    get = {name: _one(query, name) for name in FIELDS}
    fields: dict[str, Any] = {}
    if get["sae"] is not None:
        fields["sae"] = _int("sae", get["sae"], 0, len(limits.d_sae) - 1)
    sae = fields.get("sae", 0)
    if limits.class_labels is not None:
        if get["prompt"]:
            raise BadRequest("this backbone is class-conditional: give class, not prompt")
        if get["class"] is None:
            raise BadRequest(f"class is required; this backbone has classes {_show(limits.class_labels)}")
        label = _int("class", get["class"], 0, MAX_SEED)
        if label not in limits.class_labels:
            raise BadRequest(
                f"class {label} is not one this backbone was trained on; choose from {_show(limits.class_labels)}"
            )
        fields["class_label"] = label
    else:
        if get["class"] is not None:
            raise BadRequest("this backbone is text-conditioned: give prompt, not class")
        prompt = get["prompt"] or ""
        if not prompt or len(prompt) > MAX_PROMPT_CHARS:
            raise BadRequest(f"prompt must be 1..{MAX_PROMPT_CHARS} characters, received {len(prompt)}")
        fields["prompt"] = prompt
    if get["seed"] is not None:
        fields["seed"] = _int("seed", get["seed"], 0, MAX_SEED)
    if get["latents"] is not None and get["latents"] != "":
        fields["latents"] = parse_latents(get["latents"], limits.d_sae[sae])
    if get["strength"] is not None:
        (strength,) = _floats("strength", get["strength"], 1, "a number")
        if abs(strength) > limits.max_strength:
            raise BadRequest(f"strength must be within +-{limits.max_strength:g}, received {strength:g}")
        fields["strength"] = strength
    if get["unit"] is not None:
        if get["unit"] not in ("typical", "raw"):
            raise BadRequest(f"unit must be typical or raw, received {get['unit'][:20]!r}")
        fields["unit"] = get["unit"]
    if get["op"] is not None:
        if get["op"] not in EDIT_OPS:
            raise BadRequest(f"op must be one of {list(EDIT_OPS)}, received {get['op'][:20]!r}")
        fields["op"] = get["op"]
    if get["box"] is not None:
        fields["box"] = parse_box(get["box"])
    if get["window"] is not None:
        fields["window"] = parse_window(get["window"])
    return ViewRequest(**fields)


def _show(labels: Sequence[int]) -> str:
    labels = sorted(labels)
    return str(labels) if len(labels) <= 20 else f"{labels[0]}..{labels[-1]}"
