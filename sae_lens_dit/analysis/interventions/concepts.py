"""Named steering concepts: what a user asks for ("hue=2", "position=left", "class=7"), stored as steering specs.

Why: a researcher wants to say "make the shape hue bin 2" or "move it left", not to pick latent ids,
strengths, gates and timestep windows by hand. Those choices are measured once (selective latents,
a gate probe, a window from a commitment curve, a strength tuned on seeds kept apart from the
evaluation) and written down as ordinary `SteeringSpec` files, so `sae-lens-dit edit --toward hue=2`
replays exactly what a benchmark measured and a user can open, read and change the YAML.

A concept folder (`concepts/` inside a bundled release folder, or any folder a builder wrote):

    index.json          {name: {"spec": file, "description": ..., "measured": {...}}, ...}
    <name>.yaml         a SteeringSpec naming its SAEs by release id; gate probes by relative path
    probes/*.safetensors

`load_concept` applies command-line overrides (`value` in units of each latent's typical value,
`window` as "auto" = the measured one, or [low, high]).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from sae_lens_dit.analysis.interventions.spec import SteeringSpec
from sae_lens_dit.analysis.interventions.windows import WindowArg, fixed_window
from sae_lens_dit.conventions import CONCEPTS_INDEX

_NAME = re.compile(r"^[a-z_]+=[A-Za-z0-9_.-]+$")


def concept_file(name: str) -> str:
    """File name of concept `name` ("hue=2" -> "hue-2.yaml")."""
    if not _NAME.match(name):
        raise ValueError(f"a concept name is factor=value (e.g. hue=2, position=left), received {name!r}")
    return name.replace("=", "-") + ".yaml"


def write_concepts(folder: str | Path, concepts: Mapping[str, tuple[SteeringSpec, str, Mapping[str, Any]]]) -> Path:
    """Write each (spec, description, measured numbers) under its name, plus the index; returns the index path.
    Probe files the specs name should already be inside `folder` (they are written relative to it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = {}
    for name, (spec, description, measured) in concepts.items():
        spec.save(folder / concept_file(name))
        index[name] = {"spec": concept_file(name), "description": description, "measured": dict(measured)}
    path = folder / CONCEPTS_INDEX
    path.write_text(json.dumps(index, indent=1))
    return path


def list_concepts(folder: str | Path) -> dict[str, dict[str, Any]]:
    """{name: index entry} of a concept folder."""
    path = Path(folder) / CONCEPTS_INDEX
    if not path.exists():
        raise FileNotFoundError(
            f"{folder} holds no concepts ({CONCEPTS_INDEX} missing); build them with scripts/build_concepts.py"
        )
    return json.loads(path.read_text())


def load_concept(folder: str | Path, name: str, value: float | None = None, window: WindowArg = "auto") -> SteeringSpec:
    """The spec of concept `name`; `value` replaces the strength of every edit that sets latents (clamp, add,
    swap: in the units the spec uses), `window` [low, high] replaces every edit's timestep window."""
    concepts = list_concepts(folder)
    if name not in concepts:
        raise ValueError(f"unknown concept {name!r}; {folder} has {sorted(concepts)}")
    spec = SteeringSpec.load(Path(folder) / concepts[name]["spec"])
    timesteps = None if window in (None, "auto") else fixed_window(window)
    edits = []
    for edit in spec.edits:
        if value is not None and edit.op in ("clamp", "add", "swap"):
            edit = replace(edit, value=float(value))
        if timesteps is not None:
            edit = replace(edit, timesteps=timesteps)
        edits.append(edit)
    return SteeringSpec(tuple(edits), spec.saes)
