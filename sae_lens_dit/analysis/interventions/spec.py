"""The steering spec: which SAE latents to change, how, when, where and on which CFG branch, as plain data.

Why a module of its own: a spec is what a user writes (YAML/JSON), what a concept folder stores and
what a benchmark records, so it must be readable, checkable and round-trippable without a model, an
SAE or a pipeline. A `SteeringSpec` lists `LatentEdit`s (each validated on construction, errors naming
the field and the fix) and, optionally, the `SAESource`s their SAEs come from; specs compose with `+`
and edits at one hook apply in order. File paths inside a spec (mask images, gate probes) are written
relative to the spec file and read against it, so a spec folder can be moved whole. Applying a spec
is `steering.steer`; turning its box/mask/tokens into token masks is `regions.region_mask`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import yaml
from sae_lens import SAE
from torch import Tensor

from sae_lens_dit.analysis.interventions.gates import Gate
from sae_lens_dit.conventions import BRANCHES, Branch
from sae_lens_dit.guards.config import check_keys, read_config_file
from sae_lens_dit.saes.loading import load_sae_folder, weights_digest

Operation = Literal["add", "clamp", "scale", "zero", "swap"]
OPERATIONS: tuple[str, ...] = get_args(Operation)
"""add: code += value (the activation moves by value x the decoder direction); clamp: code = value;
scale: code *= value; zero: code = 0; swap: clamp the latents to value and zero the `competitors`."""
Unit = Literal["raw", "typical"]
UNITS: tuple[str, ...] = get_args(Unit)
"""raw: values are code values; typical: values are multiples of each latent's typical active value
(`LatentEdit.typical`, from `selection.LatentSelection.typical`)."""


@dataclass(frozen=True)
class LatentEdit:
    """One change to some latents of the SAE at `hook`, limited in time, space and CFG branch."""

    hook: str
    """Hook point of the SAE whose latents change, e.g. blocks.1.hook_resid_post."""
    latents: tuple[int, ...]
    """Latent indices (0 <= i < d_sae)."""
    op: Operation = "add"
    """add | clamp | scale | zero (see OPERATIONS)."""
    value: float | tuple[float, ...] = 0.0
    """Strength (add), target (clamp) or factor (scale); one number, or one per latent. Unused by zero."""
    timesteps: tuple[float, float] | None = None
    """Inclusive window [low, high] of timesteps (DDPM scale, 1000 = noise); None = every timestep."""
    steps: tuple[int, ...] | None = None
    """Denoising step indices of each pipeline run (0 = first, noisiest); None = every step."""
    box: tuple[float, float, float, float] | None = None
    """(x0, y0, x1, y1) in fractions of the image; a token is inside when its centre is. None = everywhere."""
    mask: str | None = None
    """Path of a mask image (any size; resized to the token grid; inside where brighter than half)."""
    tokens: tuple[int, ...] | None = None
    """Token positions (row-major over the token grid) to edit; None = everywhere."""
    branch: Branch = "both"
    """CFG branch(es) to edit: cond, uncond or both."""
    gate: Gate | None = None
    """Per-token gate decided in each call from the unedited activation (see gates.Gate); ANDed with box/mask/tokens."""
    unit: Unit = "raw"
    """raw: value is in code units; typical: value is a multiple of each latent's `typical` active value."""
    typical: tuple[float, ...] | None = None
    """Typical active value of each latent (needed with unit: typical; from a LatentSelection)."""
    competitors: tuple[int, ...] = ()
    """Latents zeroed by op swap (e.g. those selective for the other values of the factor)."""

    def __post_init__(self) -> None:
        where = f"edit at {self.hook!r}"
        latents = (self.latents,) if isinstance(self.latents, int) else tuple(self.latents)
        if not latents or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in latents):
            raise ValueError(f"{where}: latents must be a non-empty list of non-negative ints, received {self.latents}")
        object.__setattr__(self, "latents", latents)
        if self.op not in OPERATIONS:
            raise ValueError(f"{where}: op must be one of {list(OPERATIONS)}, received {self.op!r}")
        values = self.value if isinstance(self.value, (list, tuple)) else (self.value,)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise ValueError(f"{where}: value must be a finite number or a list of them, received {self.value!r}")
        if isinstance(self.value, (list, tuple)):
            value = tuple(float(v) for v in self.value)
            if len(value) != len(latents):
                raise ValueError(f"{where}: {len(value)} values for {len(latents)} latents; give one or one per latent")
            object.__setattr__(self, "value", value)
        if self.timesteps is not None:
            if len(self.timesteps) != 2 or not all(_is_finite_number(v) for v in self.timesteps):
                raise ValueError(
                    f"{where}: timesteps must be a window [low, high] of numbers, received {self.timesteps!r}"
                )
            low, high = (float(v) for v in self.timesteps)
            if not low <= high:
                raise ValueError(f"{where}: timesteps window needs low <= high, received {self.timesteps}")
            object.__setattr__(self, "timesteps", (low, high))
        if self.steps is not None:
            if not self.steps or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.steps):
                raise ValueError(
                    f"{where}: steps must be a non-empty list of step indices (0 = first), received {self.steps!r}"
                )
            object.__setattr__(self, "steps", tuple(self.steps))
        if self.box is not None:
            box = tuple(float(v) for v in self.box)
            if len(box) != 4 or not (0.0 <= box[0] < box[2] <= 1.0 and 0.0 <= box[1] < box[3] <= 1.0):
                raise ValueError(
                    f"{where}: box must be (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, "
                    f"received {self.box}"
                )
            object.__setattr__(self, "box", box)
        if sum(v is not None for v in (self.box, self.mask, self.tokens)) > 1:
            raise ValueError(f"{where}: give one of box, mask or tokens, not several")
        if self.tokens is not None:
            tokens = tuple(int(i) for i in self.tokens)
            if not tokens or min(tokens) < 0:
                raise ValueError(f"{where}: tokens must be a non-empty list of token positions, received {self.tokens}")
            object.__setattr__(self, "tokens", tokens)
        if self.mask is not None and not Path(self.mask).exists():
            raise FileNotFoundError(f"{where}: mask image {self.mask} does not exist")
        if self.branch not in BRANCHES:
            raise ValueError(f"{where}: branch must be one of {list(BRANCHES)}, received {self.branch!r}")
        if self.gate is not None and not isinstance(self.gate, Gate):  # a mapping, or refused saying what it needs
            object.__setattr__(self, "gate", Gate.from_dict(self.gate))
        if self.unit not in UNITS:
            raise ValueError(f"{where}: unit must be one of {list(UNITS)}, received {self.unit!r}")
        if self.typical is not None:
            typical = tuple(self.typical)
            if len(typical) != len(latents) or not all(_is_finite_number(v) and v >= 0 for v in typical):
                raise ValueError(
                    f"{where}: typical needs one non-negative number per latent ({len(latents)}), "
                    f"received {self.typical!r}"
                )
            object.__setattr__(self, "typical", tuple(float(v) for v in typical))
        if self.unit == "typical" and self.typical is None and self.op not in ("scale", "zero"):
            raise ValueError(f"{where}: unit typical needs `typical` (one value per latent, from a LatentSelection)")
        competitors = tuple(self.competitors or ())
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in competitors):
            raise ValueError(f"{where}: competitors must be latent indices, received {self.competitors!r}")
        if set(competitors) & set(latents):
            raise ValueError(
                f"{where}: latents {sorted(set(competitors) & set(latents))} are both targets and competitors"
            )
        if competitors and self.op != "swap":
            raise ValueError(f"{where}: competitors are only used by op swap, received op {self.op!r}")
        object.__setattr__(self, "competitors", competitors)

    def values(self) -> Tensor:
        """[latents] float64: the code value (add, clamp, swap) or factor (scale) of each latent."""
        value = self.value if isinstance(self.value, tuple) else (self.value,) * len(self.latents)
        value = torch.tensor(value, dtype=torch.float64)
        if self.unit == "typical" and self.op not in ("scale", "zero"):
            value = value * torch.tensor(self.typical, dtype=torch.float64)
        return value

    @property
    def columns(self) -> tuple[int, ...]:
        """Every latent the edit reads or writes: its latents, then its competitors."""
        return self.latents + self.competitors


@dataclass(frozen=True)
class SAESource:
    """Where an SAE of a spec comes from: a release id and SAE id (SAE.from_pretrained), or a folder.
    `weights`: the `weights_digest` of the SAE the spec's latent ids were chosen on; loading any other
    weights under that name is refused (the ids would name other features)."""

    release: str | None = None
    sae_id: str | None = None
    path: str | None = None
    weights: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.release is None or self.sae_id is None):
            raise ValueError(f"an SAE source is either release + sae_id or path, received {asdict(self)}")

    def load(self, device: str = "cpu") -> SAE:
        if self.path is not None:
            sae = load_sae_folder(self.path, device=device)
        else:
            sae = SAE.from_pretrained(self.release, self.sae_id, device=device)
        if self.weights is not None and weights_digest(sae) != self.weights:
            where = self.path or f"{self.release} {self.sae_id}"
            raise ValueError(
                f"the SAE {where} is not the one this spec was built on (weights {weights_digest(sae)}, spec "
                f"says {self.weights}), so its latent ids name other features; rebuild the spec on these weights "
                "(scripts/build_concepts.py for concepts), or delete its `weights:` line to apply it anyway"
            )
        return sae


@dataclass(frozen=True)
class SteeringSpec:
    """Edits plus (optionally) where their SAEs come from; `a + b` composes (edits of `a` first)."""

    edits: tuple[LatentEdit, ...] = ()
    saes: tuple[SAESource, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "edits", tuple(self.edits))
        object.__setattr__(self, "saes", tuple(self.saes))

    def __add__(self, other: SteeringSpec) -> SteeringSpec:
        return SteeringSpec(self.edits + other.edits, self.saes + tuple(s for s in other.saes if s not in self.saes))

    @property
    def hooks(self) -> list[str]:
        return list(dict.fromkeys(edit.hook for edit in self.edits))

    def to_dict(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """Plain data; file paths (masks, gate probes) under `relative_to` are written relative to it."""
        edits = [_edit_dict(edit) for edit in self.edits]
        if relative_to is not None:
            edits = [_map_paths(edit, lambda p: _relative(p, Path(relative_to))) for edit in edits]
        return {"saes": [{k: v for k, v in asdict(s).items() if v is not None} for s in self.saes], "edits": edits}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: str | Path | None = None) -> SteeringSpec:
        """The spec of `to_dict`'s layout; relative file paths (masks, gate probes) are read against `base`."""
        check_keys(data, {f.name for f in fields(cls)}, "steering spec")
        edits = []
        for i, edit in enumerate(data.get("edits") or []):
            check_keys(edit, {f.name for f in fields(LatentEdit)}, f"edits[{i}]")
            if "hook" not in edit or "latents" not in edit:
                raise ValueError(f"edits[{i}] needs at least `hook` and `latents`, received {dict(edit)}")
            if base is not None:
                edit = _map_paths(edit, lambda p: p if Path(p).is_absolute() else str(Path(base) / p))
            try:
                edits.append(LatentEdit(**{k: tuple(v) if isinstance(v, list) else v for k, v in edit.items()}))
            except (ValueError, TypeError) as err:
                raise ValueError(f"edits[{i}]: {err}") from None
        sources = []
        for i, source in enumerate(data.get("saes") or []):
            check_keys(source, {f.name for f in fields(SAESource)}, f"saes[{i}]")
            sources.append(SAESource(**source))
        return cls(tuple(edits), tuple(sources))

    def save(self, path: str | Path) -> Path:
        """Write the spec as YAML (.yaml/.yml) or JSON (anything else)."""
        path = Path(path)
        data = self.to_dict(relative_to=path.parent)
        path.write_text(yaml.safe_dump(data, sort_keys=False) if _is_yaml(path) else json.dumps(data, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SteeringSpec:
        path = Path(path)
        data = read_config_file(path, "steering spec")
        try:
            return cls.from_dict(data, base=path.parent)
        except (ValueError, TypeError) as err:
            raise ValueError(f"steering spec {path}: {err}") from None

    def load_saes(self, device: str = "cpu") -> list[SAE]:
        return [source.load(device) for source in self.saes]


def _map_paths(edit: Mapping[str, Any], change: Any) -> dict[str, Any]:
    """A copy of an edit's dict with `change` applied to its file paths (mask, gate probe)."""
    out = dict(edit)
    if isinstance(out.get("mask"), str):
        out["mask"] = change(out["mask"])
    gate = out.get("gate")
    if isinstance(gate, Mapping) and isinstance(gate.get("probe"), str):
        out["gate"] = {**gate, "probe": change(gate["probe"])}
    return out


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return path


def _edit_dict(edit: LatentEdit) -> dict[str, Any]:
    defaults = {f.name: f.default for f in fields(LatentEdit)}
    out = {}
    for f in fields(LatentEdit):
        value = getattr(edit, f.name)
        if f.name in ("hook", "latents") or value != defaults.get(f.name):
            out[f.name] = (
                value.to_dict() if isinstance(value, Gate) else list(value) if isinstance(value, tuple) else value
            )
    return out


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")
