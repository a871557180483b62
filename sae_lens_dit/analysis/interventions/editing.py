"""Interventions: steer SAE latents inside any stock diffusers pipeline, and measure the effect.

A `SteeringSpec` is data (YAML/JSON): which SAEs, and a list of `LatentEdit`s, each saying which
latents of the SAE at one hook to change, how (`add` to the code, which moves the activation along
the decoder direction; `clamp` to a value; `scale`; `zero`), when (a timestep window and/or a list
of denoising steps), where (a box or a mask image over the token grid) and on which CFG branch.
Specs compose with `+`; edits at one hook apply in order.

How an edit is applied. `steer(hooked, saes, spec)` puts one TransformerLens hook per SAE on its
hook point (through `HookedDiT.hooks`) and a call listener (through `HookedDiT.listening`) that
counts denoising steps. Inside a call the hook reads the rows' timestep and branch from
`hooked.call_context`, encodes only the rows an edit touches (TIDE SAEs get their timestep, as in
`HookedDiT.saes`), changes the selected codes, and adds `decode(z_edited) - decode(z)` to the
activation: the error-term splice of `HookedDiT.saes`, but computed from the edited codes alone,
because SAELens decoders are affine in the codes. So every token, row and call an edit does not
touch keeps its activation bit for bit, and an edit costs one encode of the touched rows (none for
`add`) instead of two full SAE passes per call. `use_error_term=False` replaces every row with
the SAE's reconstruction of its edited codes instead.

An edit can be gated per token (`gates.Gate`: where latents fire or a linear probe says the
concept is, decided in each call from the unedited activation), given in units of each latent's
typical active value (`unit: typical`), and `swap` a factor's value (clamp the targets, zero their
competitors). Built on that: `edit` (re-generate one sample with and without a spec) and
`preview_latent` (one latent, for dashboards). Choosing what to edit lives beside it: `selection`
(selective latents), `gates`, `windows` (when an edit takes hold), `recipes` (transfer,
suppression, swaps) and `concepts` (named, tuned specs such as hue=2).
Timesteps follow the package convention: DDPM scale [0, 1000], 1000 = pure noise.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import yaml
from sae_lens import SAE
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from sae_lens_dit.analysis.interventions.gates import Gate, LinearProbe
from sae_lens_dit.conventions import BRANCHES, Branch, branch_label, timestep_scope
from sae_lens_dit.guards.config import load_sae_folder, read_config_file
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.hooking.recording import StepTracker

logger = logging.getLogger(__name__)

Operation = Literal["add", "clamp", "scale", "zero", "swap"]
OPERATIONS: tuple[str, ...] = get_args(Operation)
"""add: code += value (the activation moves by value x the decoder direction); clamp: code = value;
scale: code *= value; zero: code = 0; swap: clamp the latents to value and zero the `competitors`."""
Unit = Literal["raw", "typical"]
UNITS: tuple[str, ...] = get_args(Unit)
"""raw: values are code values; typical: values are multiples of each latent's typical active value
(`LatentEdit.typical`, from `selection.LatentSelection.typical`)."""


# ------------------------------------------------------------------------------------------------
# The spec: plain data, validated on construction, YAML/JSON round trip.


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
    """Where an SAE of a spec comes from: a release id and SAE id (SAE.from_pretrained), or a folder."""

    release: str | None = None
    sae_id: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.release is None or self.sae_id is None):
            raise ValueError(f"an SAE source is either release + sae_id or path, received {asdict(self)}")

    def load(self, device: str = "cpu") -> SAE:
        if self.path is not None:
            return load_sae_folder(self.path, device=device)
        return SAE.from_pretrained(self.release, self.sae_id, device=device)


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
        _check_keys(data, {f.name for f in fields(cls)}, "steering spec")
        edits = []
        for i, edit in enumerate(data.get("edits") or []):
            _check_keys(edit, {f.name for f in fields(LatentEdit)}, f"edits[{i}]")
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
            _check_keys(source, {f.name for f in fields(SAESource)}, f"saes[{i}]")
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


def _check_keys(data: Any, allowed: set[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping, received {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(allowed)}")


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


# ------------------------------------------------------------------------------------------------
# Applying a spec through HookedDiT.


def region_mask(
    grid: tuple[int, int],
    box: Sequence[float] | None = None,
    mask: str | None = None,
    tokens: Sequence[int] | None = None,
) -> Tensor | None:
    """[tokens] bool, row-major over the token grid: tokens whose centre is in `box` (x0, y0, x1, y1 in
    fractions of the image), where the mask image, resized to the grid, is brighter than half, or the
    listed `tokens`. None when none is given (every token)."""
    rows, cols = grid
    if tokens is not None:
        if max(tokens) >= rows * cols:
            raise ValueError(
                f"token position(s) {[i for i in tokens if i >= rows * cols]} out of range; the image "
                f"has {rows * cols} tokens ({rows} x {cols})"
            )
        inside = torch.zeros(rows * cols, dtype=torch.bool)
        inside[list(tokens)] = True
        return inside
    if box is not None:
        ys = (torch.arange(rows, dtype=torch.float64) + 0.5) / rows
        xs = (torch.arange(cols, dtype=torch.float64) + 0.5) / cols
        inside_y = (ys >= box[1]) & (ys < box[3])
        inside_x = (xs >= box[0]) & (xs < box[2])
        return (inside_y[:, None] & inside_x[None, :]).reshape(-1)
    if mask is not None:
        from PIL import Image

        image = Image.open(mask).convert("L").resize((cols, rows), Image.Resampling.BOX)
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0 > 0.5).reshape(-1)
    return None


@dataclass
class SteeringTrace:
    """What a `steer` block did: one record per (transformer call, edit) that touched something."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def touched(self, edit: int | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records if edit is None or r["edit"] == edit]

    def summary(self) -> list[dict[str, Any]]:
        """Per edit: calls touched, their step and timestep range, and rows x tokens edited."""
        out = []
        for index in sorted({r["edit"] for r in self.records}):
            records = self.touched(index)
            out.append(
                {
                    "edit": index,
                    "calls": len(records),
                    "steps": sorted({r["step"] for r in records}),
                    "timestep_range": [min(r["timestep"] for r in records), max(r["timestep"] for r in records)],
                    "rows_x_tokens": sum(r["rows"] * r["tokens"] for r in records),
                }
            )
        return out


class _StepCounter:
    """A call listener: the denoising step (and run) of the transformer call in progress."""

    def __init__(self, hooked: HookedDiT):
        self.hooked, self.tracker = hooked, StepTracker()

    def on_call_start(self) -> None:
        timestep = self.hooked.call_context.timestep
        if timestep is not None:
            self.tracker.advance(float(timestep[0]))

    def on_call_end(self) -> None:
        pass


class _SAESteering:
    """The hook function of one SAE's edits (the order of `edits` is the order they apply in)."""

    def __init__(
        self,
        hooked: HookedDiT,
        sae: SAE,
        edits: list[tuple[int, LatentEdit]],
        use_error_term: bool,
        steps: _StepCounter,
        trace: SteeringTrace,
    ):
        self.hooked, self.sae, self.edits, self.use_error_term = hooked, sae, edits, use_error_term
        self.steps, self.trace = steps, trace
        self.columns = sorted({i for _, edit in edits for i in edit.columns})  # edited latents, ascending
        self._index = {latent: j for j, latent in enumerate(self.columns)}
        self._regions: dict[tuple[int, int], Tensor | None] = {}
        self._probes = {e.gate.probe: LinearProbe.load(e.gate.probe) for _, e in edits if e.gate and e.gate.probe}
        for _, edit in edits:
            probe = self._probes.get(edit.gate.probe) if edit.gate is not None else None
            if probe is not None and probe.hook and probe.hook != edit.hook:
                raise ValueError(
                    f"edit at {edit.hook}: its gate's probe {edit.gate.probe} was fitted on {probe.hook}; "
                    f"fit a probe on {edit.hook}"
                )
        self._needs_codes = not use_error_term or any(
            edit.op != "add" or (edit.gate is not None and edit.gate.latents is not None) for _, edit in edits
        )

    def _region(self, index: int, edit: LatentEdit, n_tokens: int) -> Tensor | None:
        key = (index, n_tokens)
        if key not in self._regions:
            self._regions[key] = region_mask(self.hooked.token_grid(n_tokens), edit.box, edit.mask, edit.tokens)
        return self._regions[key]

    def _rows(self, edit: LatentEdit, batch: int) -> Tensor:
        """[batch] bool: rows of the call in progress the edit applies to."""
        ctx = self.hooked.call_context
        rows = torch.ones(batch, dtype=torch.bool)
        if edit.branch != "both":
            rows &= ctx.branch == branch_label(edit.branch)
        if edit.timesteps is not None or edit.steps is not None:
            if ctx.timestep is None:
                raise ValueError(
                    f"edit at {edit.hook} is limited to timesteps/steps but the transformer was called "
                    f"without a timestep"
                )
            if edit.timesteps is not None:
                rows &= (ctx.timestep >= edit.timesteps[0]) & (ctx.timestep <= edit.timesteps[1])
            if edit.steps is not None and self.steps.tracker.step not in edit.steps:
                rows[:] = False
        return rows

    def __call__(self, activation: Tensor, hook: HookPoint) -> Tensor | None:  # activation: [batch, tokens, d]
        batch, n_tokens, _ = activation.shape
        plans = []
        for index, edit in self.edits:
            rows = self._rows(edit, batch)
            if rows.any():
                plans.append((index, edit, rows, self._region(index, edit, n_tokens)))
        if not plans and self.use_error_term:
            return None
        touched = torch.zeros(batch, dtype=torch.bool)
        for _, _, rows, _ in plans:
            touched |= rows
        if not self.use_error_term:
            touched[:] = True
        idx = touched.nonzero().squeeze(1)  # [r] rows encoded
        sae, device = self.sae, self.sae.device
        x = activation[idx.to(activation.device)].to(device, self.sae.dtype)  # [r, tokens, d]
        ctx = self.hooked.call_context
        codes = None
        if self._needs_codes:
            timestep = ctx.timestep
            with torch.no_grad(), timestep_scope(sae, timestep[idx].to(device) if timestep is not None else None):
                codes = sae.encode(x)  # [r, tokens, d_sae]
            old = codes[..., self.columns]
        else:
            old = torch.zeros(len(idx), n_tokens, len(self.columns), device=device, dtype=sae.dtype)
        new = old.clone()
        position = torch.full((batch,), -1, dtype=torch.long)
        position[idx] = torch.arange(len(idx))
        for index, edit, rows, region in plans:
            where = torch.zeros(len(idx), n_tokens, dtype=torch.bool, device=device)
            where[position[rows]] = True if region is None else region.to(device)
            if edit.gate is not None:
                where &= edit.gate.inside(x, codes, self._probes.get(edit.gate.probe)).to(device)
            changed_tokens = int(where.sum())
            where = where[..., None]  # [r, tokens, 1]
            cols = [self._index[i] for i in edit.latents]
            value = edit.values().to(device, sae.dtype)  # [latents]
            current = new[..., cols]
            changed = {
                "add": current + value,
                "clamp": value.expand_as(current),
                "swap": value.expand_as(current),
                "scale": current * value,
                "zero": torch.zeros_like(current),
            }[edit.op]
            new[..., cols] = torch.where(where, changed, current)
            if edit.competitors:
                rivals = [self._index[i] for i in edit.competitors]
                new[..., rivals] = torch.where(where, torch.zeros_like(new[..., rivals]), new[..., rivals])
            self.trace.records.append(
                {
                    "edit": index,
                    "hook": edit.hook,
                    "step": self.steps.tracker.step,
                    "run": self.steps.tracker.run,
                    "timestep": float(ctx.timestep[rows][0]) if ctx.timestep is not None else None,
                    "rows": int(rows.sum()),
                    "tokens": n_tokens if region is None else int(region.sum()),
                    "edited_tokens": changed_tokens,
                }
            )
        if not self.use_error_term:
            edited = codes.clone()
            edited[..., self.columns] = new
            with torch.no_grad(), timestep_scope(sae, ctx.timestep.to(device) if ctx.timestep is not None else None):
                return sae.decode(edited).to(activation.device, activation.dtype)
        out = activation.clone()
        out[idx.to(activation.device)] += decoder_delta(sae, new - old, self.columns).to(
            activation.device, activation.dtype
        )
        return out


def decoder_delta(sae: SAE, code_change: Tensor, latents: Sequence[int]) -> Tensor:
    """decode(z + dz) - decode(z) for an SAE whose decoder is affine in its codes: dz [..., len(latents)]
    on the columns `latents` -> [..., d_in]. Exactly zero where dz is zero."""
    w_dec = sae.W_dec[list(latents)].detach()  # [latents, d_in]
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        code_change = code_change / w_dec.norm(dim=-1)
    return code_change @ w_dec


def _check_sae(sae: SAE, edits: list[tuple[int, LatentEdit]]) -> None:
    if sae.cfg.normalize_activations != "none":
        raise ValueError(
            f"SAE at {sae.cfg.metadata.hook_name}: steering needs a decoder affine in the codes, but it normalises "
            f"activations at run time ({sae.cfg.normalize_activations!r}); fold the normalisation into the weights "
            f"(sae.fold_activation_norm_scaling_factor) or use an SAE trained without it"
        )
    for index, edit in edits:
        gated = list(edit.gate.latents) if edit.gate is not None and edit.gate.latents is not None else []
        bad = [i for i in [*edit.columns, *gated] if i >= sae.cfg.d_sae]
        if bad:
            raise ValueError(
                f"edits[{index}] at {edit.hook}: latent index(es) {bad} out of range; the SAE there "
                f"has d_sae={sae.cfg.d_sae} latents (0..{sae.cfg.d_sae - 1})"
            )


def _saes_by_hook(saes: Sequence[SAE]) -> dict[str, SAE]:
    by_hook: dict[str, SAE] = {}
    for sae in saes:
        hook = sae.cfg.metadata.hook_name
        if hook in by_hook:
            raise ValueError(f"two SAEs read {hook}; steering takes one SAE per hook point")
        by_hook[hook] = sae
    return by_hook


def check_spec(hooked: HookedDiT, saes: Sequence[SAE], spec: SteeringSpec) -> dict[str, SAE]:
    """Raise, saying what to fix, unless every edit of `spec` can run on `hooked` with `saes`; the SAEs by hook."""
    by_hook = _saes_by_hook(saes)
    hooked.check_hook_names(spec.hooks)
    missing = [hook for hook in spec.hooks if hook not in by_hook]
    if missing:
        raise ValueError(f"spec edits hook(s) {missing} but no SAE given reads them; the SAEs read {list(by_hook)}")
    if hooked.spec.cfg.separate_calls and any(edit.branch != "both" for edit in spec.edits):
        raise ValueError(
            f"adapter {hooked.spec.name!r} runs CFG branches as separate calls; branch-limited edits "
            f"are not supported there, use branch: both"
        )
    for hook in spec.hooks:
        _check_sae(by_hook[hook], [(i, edit) for i, edit in enumerate(spec.edits) if edit.hook == hook])
    return by_hook


@contextmanager
def steer(
    hooked: HookedDiT, saes: Sequence[SAE], spec: SteeringSpec, use_error_term: bool = True
) -> Iterator[SteeringTrace]:
    """Apply `spec` to every transformer call made inside the block (e.g. a whole pipeline run).

    `saes` are the SAEs the edits refer to, one per hook (`sae.cfg.metadata.hook_name`); with the
    error term (default) only what the edits touch changes, bit for bit. Yields the trace of what
    was edited. Hooks are removed on exit, also when the pipeline raises.

    >>> with steer(hooked, [sae], SteeringSpec([LatentEdit("blocks.1.hook_resid_post", [7], "add", 4.0)])):
    ...     images = pipe(class_labels=[3], output_type="np").images  # doctest: +SKIP
    """
    by_hook = check_spec(hooked, saes, spec)
    trace, steps = SteeringTrace(), _StepCounter(hooked)
    fwd_hooks = []
    for hook in spec.hooks:
        edits = [(i, edit) for i, edit in enumerate(spec.edits) if edit.hook == hook]
        fwd_hooks.append((hook, _SAESteering(hooked, by_hook[hook], edits, use_error_term, steps, trace)))
    if not fwd_hooks:
        yield trace
        return
    with hooked.listening(steps), hooked.hooks(fwd_hooks=fwd_hooks):
        yield trace


# ------------------------------------------------------------------------------------------------
# Editing: the same sample with and without a spec.


@dataclass(frozen=True)
class EditResult:
    """Images of one sampling call without (`before`) and with (`after`) the spec, [n, H, W, C] in [0, 1]."""

    before: np.ndarray
    after: np.ndarray
    trace: SteeringTrace


def generate(pipe: Any, seed: int, **pipe_kwargs: Any) -> np.ndarray:
    """`pipe(**pipe_kwargs)` as `np` images [n, H, W, C], from a generator seeded with `seed` (so a call with
    the same seed and arguments re-generates the same sample); pass class_labels=... or prompt=...."""
    generator = torch.Generator(pipe.device).manual_seed(seed)
    return pipe(generator=generator, output_type="np", **pipe_kwargs).images


def edit(
    pipe: Any,
    hooked: HookedDiT,
    saes: Sequence[SAE],
    spec: SteeringSpec,
    seed: int,
    use_error_term: bool = True,
    **pipe_kwargs: Any,
) -> EditResult:
    """Re-generate the sample of (`seed`, `pipe_kwargs`) with `spec` applied, beside the unedited one."""
    check_spec(hooked, saes, spec)
    before = generate(pipe, seed, **pipe_kwargs)
    with steer(hooked, saes, spec, use_error_term) as trace:
        after = generate(pipe, seed, **pipe_kwargs)
    untouched = sorted(set(range(len(spec.edits))) - {r["edit"] for r in trace.records})
    for index in untouched:
        e = spec.edits[index]
        logger.warning(
            "edits[%d] at %s (timesteps %s, steps %s, branch %s) matched no step, timestep or row of this "
            "run and changed nothing; widen its window or steps",
            index,
            e.hook,
            e.timesteps,
            e.steps,
            e.branch,
        )
    return EditResult(before, after, trace)


def preview_latent(
    pipe: Any,
    sae: SAE,
    latent: int,
    strength: float,
    seed: int = 0,
    op: Operation = "add",
    hooked: HookedDiT | None = None,
    *,
    typical: float | None = None,
    window: tuple[float, float] | None = None,
    **pipe_kwargs: Any,
) -> EditResult:
    """Before/after images of one latent steered on every token and branch (for dashboards).

    `op="add"` moves the activation by `strength` x the latent's decoder direction; `clamp`/`scale` use
    `strength` as the value or factor, `zero` ignores it. With `typical` (the latent's typical active value)
    add and clamp values are `strength` x typical (`unit: typical`). `window` ([low, high] timesteps, DDPM
    scale) limits the edit in time; None = the whole run. Pass the pipeline's call arguments
    (class_labels=[3], num_inference_steps=..., ...).
    """
    hooked = hooked if hooked is not None else HookedDiT(pipe.transformer)
    unit = {"unit": "typical", "typical": (typical,)} if typical is not None else {}
    spec = SteeringSpec((LatentEdit(sae.cfg.metadata.hook_name, (latent,), op, strength, timesteps=window, **unit),))
    return edit(pipe, hooked, [sae], spec, seed, **pipe_kwargs)


def save_grid(path: str | Path, rows: Sequence[np.ndarray], min_size: int = 64) -> Path:
    """Write image rows (each [n, H, W, C] in [0, 1]) as one PNG grid, small images enlarged (nearest)."""
    from PIL import Image

    scale = max(1, -(-min_size // rows[0].shape[1]))
    pad = 2
    strips = []
    for row in rows:
        tiles = [
            np.pad(np.repeat(np.repeat(img, scale, 0), scale, 1), ((pad, pad), (pad, pad), (0, 0)))
            for img in np.clip(row, 0.0, 1.0)
        ]
        strips.append(np.concatenate(tiles, axis=1))
    grid = (np.concatenate(strips, axis=0) * 255).round().astype(np.uint8)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return Path(path)
