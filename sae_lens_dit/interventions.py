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

Built on that: `edit` (re-generate one sample with and without a spec), `preview_latent` (one latent
at one strength, for dashboards), latent selection from recorded rows (`selective_latents` and its
class/factor, region and timestep-bucket forms), style/feature transfer from a reference image
(`encode_reference`, `transfer_spec`) and concept suppression (`suppression_spec`).
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

from sae_lens_dit.call_context import COND, UNCOND
from sae_lens_dit.evals import (
    DEFAULT_BUCKET_EDGES,
    latent_timestep_stats,
    sample_images,
    timestep_context,
)
from sae_lens_dit.hooked import HookedDiT
from sae_lens_dit.recording import BRANCHES, Branch, StepTracker
from sae_lens_dit.validation import load_sae_folder, read_config_file

logger = logging.getLogger(__name__)

Operation = Literal["add", "clamp", "scale", "zero"]
OPERATIONS: tuple[str, ...] = get_args(Operation)
"""add: code += value (the activation moves by value x the decoder direction); clamp: code = value;
scale: code *= value; zero: code = 0."""


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
                raise ValueError(f"{where}: timesteps must be a window [low, high] of numbers, received "
                                 f"{self.timesteps!r}")  # fmt: skip
            low, high = (float(v) for v in self.timesteps)
            if not low <= high:
                raise ValueError(f"{where}: timesteps window needs low <= high, received {self.timesteps}")
            object.__setattr__(self, "timesteps", (low, high))
        if self.steps is not None:
            if not self.steps or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.steps):
                raise ValueError(f"{where}: steps must be a non-empty list of step indices (0 = first), received "
                                 f"{self.steps!r}")  # fmt: skip
            object.__setattr__(self, "steps", tuple(self.steps))
        if self.box is not None:
            box = tuple(float(v) for v in self.box)
            if len(box) != 4 or not (0.0 <= box[0] < box[2] <= 1.0 and 0.0 <= box[1] < box[3] <= 1.0):
                raise ValueError(f"{where}: box must be (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, "
                                 f"received {self.box}")  # fmt: skip
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

    def values(self) -> Tensor:
        """[latents] float64: the value of each latent."""
        value = self.value if isinstance(self.value, tuple) else (self.value,) * len(self.latents)
        return torch.tensor(value, dtype=torch.float64)


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "saes": [{k: v for k, v in asdict(s).items() if v is not None} for s in self.saes],
            "edits": [_edit_dict(edit) for edit in self.edits],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SteeringSpec:
        _check_keys(data, {f.name for f in fields(cls)}, "steering spec")
        edits = []
        for i, edit in enumerate(data.get("edits") or []):
            _check_keys(edit, {f.name for f in fields(LatentEdit)}, f"edits[{i}]")
            if "hook" not in edit or "latents" not in edit:
                raise ValueError(f"edits[{i}] needs at least `hook` and `latents`, received {dict(edit)}")
            edits.append(LatentEdit(**{k: tuple(v) if isinstance(v, list) else v for k, v in edit.items()}))
        sources = []
        for i, source in enumerate(data.get("saes") or []):
            _check_keys(source, {f.name for f in fields(SAESource)}, f"saes[{i}]")
            sources.append(SAESource(**source))
        return cls(tuple(edits), tuple(sources))

    def save(self, path: str | Path) -> Path:
        """Write the spec as YAML (.yaml/.yml) or JSON (anything else)."""
        path = Path(path)
        data = self.to_dict()
        path.write_text(yaml.safe_dump(data, sort_keys=False) if _is_yaml(path) else json.dumps(data, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SteeringSpec:
        path = Path(path)
        data = read_config_file(path, "steering spec")
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as err:
            raise ValueError(f"steering spec {path}: {err}") from None

    def load_saes(self, device: str = "cpu") -> list[SAE]:
        return [source.load(device) for source in self.saes]


def _edit_dict(edit: LatentEdit) -> dict[str, Any]:
    defaults = {f.name: f.default for f in fields(LatentEdit)}
    out = {}
    for key, value in asdict(edit).items():
        if key in ("hook", "latents") or value != defaults.get(key):
            out[key] = list(value) if isinstance(value, tuple) else value
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


def token_grid(n_tokens: int, hooked: HookedDiT | None = None) -> tuple[int, int]:
    """(rows, columns) of the token grid of an image with `n_tokens` tokens: the transformer's configured
    grid when it has that many tokens, else a square one."""
    if hooked is not None:
        config = hooked.transformer.config
        size, patch = getattr(config, "sample_size", None), getattr(config, "patch_size", None)
        if size and patch:
            height, width = (size, size) if isinstance(size, int) else size
            if (height // patch) * (width // patch) == n_tokens:
                return height // patch, width // patch
    side = int(round(n_tokens**0.5))
    if side * side != n_tokens:
        raise ValueError(f"cannot lay {n_tokens} tokens out on a grid (not square and not the model's configured "
                         f"size); spatial edits need a known token grid")  # fmt: skip
    return side, side


def region_mask(
    grid: tuple[int, int], box: Sequence[float] | None = None, mask: str | None = None,
    tokens: Sequence[int] | None = None,
) -> Tensor | None:  # fmt: skip
    """[tokens] bool, row-major over the token grid: tokens whose centre is in `box` (x0, y0, x1, y1 in
    fractions of the image), where the mask image, resized to the grid, is brighter than half, or the
    listed `tokens`. None when none is given (every token)."""
    rows, cols = grid
    if tokens is not None:
        if max(tokens) >= rows * cols:
            raise ValueError(f"token position(s) {[i for i in tokens if i >= rows * cols]} out of range; the image "
                             f"has {rows * cols} tokens ({rows} x {cols})")  # fmt: skip
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
            out.append({
                "edit": index, "calls": len(records),
                "steps": sorted({r["step"] for r in records}),
                "timestep_range": [min(r["timestep"] for r in records), max(r["timestep"] for r in records)],
                "rows_x_tokens": sum(r["rows"] * r["tokens"] for r in records),
            })  # fmt: skip
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

    def __init__(self, hooked: HookedDiT, sae: SAE, edits: list[tuple[int, LatentEdit]], use_error_term: bool,
                 steps: _StepCounter, trace: SteeringTrace):  # fmt: skip
        self.hooked, self.sae, self.edits, self.use_error_term = hooked, sae, edits, use_error_term
        self.steps, self.trace = steps, trace
        self.columns = sorted({i for _, edit in edits for i in edit.latents})  # edited latents, ascending
        self._index = {latent: j for j, latent in enumerate(self.columns)}
        self._regions: dict[tuple[int, int], Tensor | None] = {}

    def _region(self, index: int, edit: LatentEdit, n_tokens: int) -> Tensor | None:
        key = (index, n_tokens)
        if key not in self._regions:
            self._regions[key] = region_mask(token_grid(n_tokens, self.hooked), edit.box, edit.mask, edit.tokens)
        return self._regions[key]

    def _rows(self, edit: LatentEdit, batch: int) -> Tensor:
        """[batch] bool: rows of the call in progress the edit applies to."""
        ctx = self.hooked.call_context
        rows = torch.ones(batch, dtype=torch.bool)
        if edit.branch != "both":
            rows &= ctx.branch == (COND if edit.branch == "cond" else UNCOND)
        if edit.timesteps is not None or edit.steps is not None:
            if ctx.timestep is None:
                raise ValueError(f"edit at {edit.hook} is limited to timesteps/steps but the transformer was called "
                                 f"without a timestep")  # fmt: skip
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
        needs_codes = not self.use_error_term or any(edit.op != "add" for _, edit, _, _ in plans)
        codes = None
        if needs_codes:
            timestep = self.hooked.call_context.timestep
            with torch.no_grad(), timestep_context(sae, timestep[idx].to(device) if timestep is not None else None):
                codes = sae.encode(x)  # [r, tokens, d_sae]
            old = codes[..., self.columns]
        else:
            old = torch.zeros(len(idx), n_tokens, len(self.columns), device=device, dtype=sae.dtype)
        new = old.clone()
        position = torch.full((batch,), -1, dtype=torch.long)
        position[idx] = torch.arange(len(idx))
        ctx = self.hooked.call_context
        for index, edit, rows, region in plans:
            where = torch.zeros(len(idx), n_tokens, dtype=torch.bool)
            where[position[rows]] = True if region is None else region
            where = where[..., None].to(device)  # [r, tokens, 1]
            cols = [self._index[i] for i in edit.latents]
            value = edit.values().to(device, sae.dtype)  # [latents]
            current = new[..., cols]
            changed = {"add": current + value, "clamp": value.expand_as(current), "scale": current * value,
                       "zero": torch.zeros_like(current)}[edit.op]  # fmt: skip
            new[..., cols] = torch.where(where, changed, current)
            self.trace.records.append({
                "edit": index, "hook": edit.hook, "step": self.steps.tracker.step, "run": self.steps.tracker.run,
                "timestep": float(ctx.timestep[rows][0]) if ctx.timestep is not None else None,
                "rows": int(rows.sum()), "tokens": n_tokens if region is None else int(region.sum()),
            })  # fmt: skip
        if not self.use_error_term:
            edited = codes.clone()
            edited[..., self.columns] = new
            with torch.no_grad(), timestep_context(sae, ctx.timestep.to(device) if ctx.timestep is not None else None):
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
        bad = [i for i in edit.latents if i >= sae.cfg.d_sae]
        if bad:
            raise ValueError(f"edits[{index}] at {edit.hook}: latent index(es) {bad} out of range; the SAE there "
                             f"has d_sae={sae.cfg.d_sae} latents (0..{sae.cfg.d_sae - 1})")  # fmt: skip


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
        raise ValueError(f"adapter {hooked.spec.name!r} runs CFG branches as separate calls; branch-limited edits "
                         f"are not supported there, use branch: both")  # fmt: skip
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
    pipe: Any, hooked: HookedDiT, saes: Sequence[SAE], spec: SteeringSpec, seed: int,
    use_error_term: bool = True, **pipe_kwargs: Any,
) -> EditResult:  # fmt: skip
    """Re-generate the sample of (`seed`, `pipe_kwargs`) with `spec` applied, beside the unedited one."""
    check_spec(hooked, saes, spec)
    before = generate(pipe, seed, **pipe_kwargs)
    with steer(hooked, saes, spec, use_error_term) as trace:
        after = generate(pipe, seed, **pipe_kwargs)
    untouched = sorted(set(range(len(spec.edits))) - {r["edit"] for r in trace.records})
    for index in untouched:
        e = spec.edits[index]
        logger.warning("edits[%d] at %s (timesteps %s, steps %s, branch %s) matched no step, timestep or row of this "
                       "run and changed nothing; widen its window or steps", index, e.hook, e.timesteps, e.steps,
                       e.branch)  # fmt: skip
    return EditResult(before, after, trace)


def preview_latent(
    pipe: Any, sae: SAE, latent: int, strength: float, seed: int = 0, op: Operation = "add",
    hooked: HookedDiT | None = None, **pipe_kwargs: Any,
) -> EditResult:  # fmt: skip
    """Before/after images of one latent steered at one strength over the whole run (for dashboards).

    `op="add"` moves the activation by `strength` x the latent's decoder direction on every token,
    step and branch; `clamp`/`scale` use `strength` as the value or factor. Pass the pipeline's call
    arguments (class_labels=[3], num_inference_steps=..., ...).
    """
    hooked = hooked if hooked is not None else HookedDiT(pipe.transformer)
    spec = SteeringSpec((LatentEdit(sae.cfg.metadata.hook_name, (latent,), op, strength),))
    return edit(pipe, hooked, [sae], spec, seed, **pipe_kwargs)


def save_grid(path: str | Path, rows: Sequence[np.ndarray], min_size: int = 64) -> Path:
    """Write image rows (each [n, H, W, C] in [0, 1]) as one PNG grid, small images enlarged (nearest)."""
    from PIL import Image

    scale = max(1, -(-min_size // rows[0].shape[1]))
    pad = 2
    strips = []
    for row in rows:
        tiles = [np.pad(np.repeat(np.repeat(img, scale, 0), scale, 1), ((pad, pad), (pad, pad), (0, 0)))
                 for img in np.clip(row, 0.0, 1.0)]  # fmt: skip
        strips.append(np.concatenate(tiles, axis=1))
    grid = (np.concatenate(strips, axis=0) * 255).round().astype(np.uint8)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return Path(path)


# ------------------------------------------------------------------------------------------------
# Choosing latents from recorded rows (`rec.rows(hook)`).


@dataclass(frozen=True)
class LatentChoice:
    """Latents ranked by a selectivity score (highest first) and the score of every latent."""

    latents: list[int]
    scores: Tensor  # [d_sae] float64


def record_samples(
    pipe: Any, hooked: HookedDiT, hook: str, class_labels: Sequence[int], seed: int, num_inference_steps: int = 50,
    guidance_scale: float | None = None, batch_size: int = 100, tokens_per_image: int | None = None,
    branch: Branch = "cond",
) -> tuple[dict[str, Tensor], np.ndarray]:  # fmt: skip
    """Sample `class_labels` (as `evals.sample_images` does) while recording `hook`: (rows, images).

    Rows get an extra column `image`, the index into `class_labels` (and into the images) of their sample.
    """
    with hooked.record([hook], tokens_per_image=tokens_per_image, branch=branch, seed=seed) as rec:
        images = sample_images(pipe, class_labels, seed, num_inference_steps, guidance_scale, batch_size)
    rows = rec.rows(hook)
    rows["image"] = rows["run"] * batch_size + rows["sample"]
    return rows, images


def selective_latents(
    sae: SAE, rows: Mapping[str, Tensor], positive: Tensor, n: int, bucket: int | None = None,
    edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
) -> LatentChoice:  # fmt: skip
    """The `n` latents whose mean activation is highest on `positive` rows [R] relative to the others.

    Score: mean over timestep buckets (`evals.latent_timestep_stats`) of (mean activation on the
    positive rows - mean on the rest), so every stage of denoising counts alike; with `bucket`, that
    bucket's difference only. Only latents with a positive score are returned.
    """
    positive = torch.as_tensor(positive, dtype=torch.bool)
    if positive.all() or not positive.any():
        raise ValueError(f"selective_latents needs positive and negative rows, received {int(positive.sum())} of "
                         f"{len(positive)} positive")  # fmt: skip
    x, t = rows["activation"], rows["timestep"]
    pos = latent_timestep_stats(sae, x[positive], t[positive], edges)
    neg = latent_timestep_stats(sae, x[~positive], t[~positive], edges)
    diff = pos.mean_activation - neg.mean_activation  # [buckets, d_sae]
    present = (pos.rows > 0) & (neg.rows > 0)
    if bucket is not None:
        present &= torch.arange(len(present)) == bucket
    if not present.any():
        raise ValueError(
            f"no timestep bucket {'' if bucket is None else f'({bucket}) '}holds both positive and "
            f"negative rows; rows per bucket: positive {pos.rows.tolist()}, negative {neg.rows.tolist()}"
        )
    return _ranked(diff[present].mean(0), n)


def _ranked(scores: Tensor, n: int) -> LatentChoice:
    return LatentChoice(list(_top_positive(scores, n)), scores)


def latents_for_images(
    sae: SAE, rows: Mapping[str, Tensor], positive_images: np.ndarray | Tensor, n: int, bucket: int | None = None,
) -> LatentChoice:  # fmt: skip
    """Latents selective for a set of images (a class: `labels == c`; a factor value:
    `factors["colour"] == 2`), given as a bool per image of `record_samples` (rows' `image` column)."""
    positive = torch.as_tensor(np.asarray(positive_images), dtype=torch.bool)[rows["image"]]
    return selective_latents(sae, rows, positive, n, bucket)


def latents_for_region(
    sae: SAE, rows: Mapping[str, Tensor], n: int, box: Sequence[float] | None = None, mask: str | None = None,
    hooked: HookedDiT | None = None,
) -> LatentChoice:  # fmt: skip
    """Latents selective for the tokens inside a box or mask image (see `region_mask`)."""
    n_tokens = int(rows["token"].max()) + 1
    region = region_mask(token_grid(n_tokens, hooked), box, mask)
    if region is None:
        raise ValueError("latents_for_region needs a box or a mask image")
    return selective_latents(sae, rows, region[rows["token"]], n)


def latents_for_bucket(
    sae: SAE, rows: Mapping[str, Tensor], bucket: int, n: int, edges: Sequence[float] = DEFAULT_BUCKET_EDGES
) -> LatentChoice:
    """Latents that fire more in timestep bucket `bucket` ([edges[b], edges[b+1])) than in the rest."""
    if not 0 <= bucket < len(edges) - 1:
        raise ValueError(f"bucket must be in 0..{len(edges) - 2} for edges {list(edges)}, received {bucket}")
    stats = latent_timestep_stats(sae, rows["activation"], rows["timestep"], edges)
    others = [b for b in range(len(edges) - 1) if b != bucket and stats.rows[b] > 0]
    if stats.rows[bucket] == 0 or not others:
        raise ValueError(f"latents_for_bucket needs rows in bucket {bucket} and in another bucket; rows per bucket: "
                         f"{stats.rows.tolist()}")  # fmt: skip
    scores = stats.mean_activation[bucket] - stats.mean_activation[others].mean(0)
    return _ranked(scores, n)


# ------------------------------------------------------------------------------------------------
# Style / feature transfer and concept suppression.


@dataclass(frozen=True)
class ReferenceLatents:
    """SAE codes of one reference image noised to one timestep per bucket of `edges`."""

    hook: str
    edges: tuple[float, ...]
    timesteps: Tensor  # [buckets] float32, where the reference was noised to (project convention)
    codes: Tensor  # [buckets, tokens, d_sae]


@torch.no_grad()
def encode_reference(
    pipe: Any, hooked: HookedDiT, sae: SAE, image: Tensor, seed: int = 0,
    edges: Sequence[float] = DEFAULT_BUCKET_EDGES, **transformer_kwargs: Any,
) -> ReferenceLatents:  # fmt: skip
    """Noise `image` ([C, H, W] in the pipeline's pixel range [-1, 1]) with the scheduler's own `add_noise`
    to the middle of each timestep bucket, run the transformer once on the batch (extra arguments, e.g.
    class_labels=tensor, go to it) and read the SAE's codes at its hook."""
    hook = sae.cfg.metadata.hook_name
    x0 = image[None].to(pipe.device, pipe.transformer.dtype)
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "encode"):  # a latent-space pipeline: encode like its training data
        x0 = vae.encode(x0).latent_dist.mean * vae.config.scaling_factor
    mids = [(lo + hi) / 2.0 for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    train_steps = pipe.scheduler.config.num_train_timesteps
    raw = torch.tensor([min(round(m * train_steps / 1000.0), train_steps - 1) for m in mids], dtype=torch.long)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0)
    noisy = pipe.scheduler.add_noise(x0.expand(len(raw), *x0.shape[1:]), noise.expand(len(raw), *x0.shape[1:]), raw)
    kwargs = {k: v.expand(len(raw), *v.shape[1:]) if isinstance(v, Tensor) and v.shape[:1] == (1,) else v
              for k, v in transformer_kwargs.items()}  # fmt: skip
    with hooked.record([hook]) as rec:
        hooked.transformer(noisy, timestep=raw.to(pipe.device), **kwargs)
    acts, timesteps = rec[hook][0], rec.timesteps[0]  # [buckets, tokens, d], [buckets]
    with timestep_context(sae, timesteps.to(sae.device)):
        codes = sae.encode(acts.to(sae.device, sae.dtype))
    return ReferenceLatents(hook, tuple(float(e) for e in edges), timesteps, codes.cpu())


TransferMode = Literal["pooled", "per_token"]


def transfer_spec(
    reference: ReferenceLatents, n: int, mode: TransferMode = "pooled", baseline: Tensor | None = None,
    op: Operation = "clamp", gain: float = 1.0, box: Sequence[float] | None = None, branch: Branch = "both",
) -> SteeringSpec:  # fmt: skip
    """Inject the reference's top `n` latents per timestep bucket into another generation, each limited
    to that bucket's timestep window.

    `pooled`: latents ranked by their mean code over the reference's tokens (minus `baseline`
    [buckets, d_sae], e.g. `latent_timestep_stats(...).mean_activation` of ordinary samples with the
    same edges, so latents every image uses are skipped), injected on every token (or `box`) at
    `gain` x their mean code where they fire. `per_token`: each token's own top `n` latents (code minus
    baseline), injected at that token at `gain` x its code there (one edit per bucket and token).
    """
    if mode not in get_args(TransferMode):
        raise ValueError(f"mode must be one of {list(get_args(TransferMode))}, received {mode!r}")
    codes = reference.codes.double()  # [buckets, tokens, d_sae]
    base = baseline.double() if baseline is not None else torch.zeros(codes.shape[0], codes.shape[-1])
    edits = []
    for b, window in enumerate(zip(reference.edges[:-1], reference.edges[1:], strict=True)):
        if mode == "pooled":
            fires = codes[b] > 0
            strength = codes[b].sum(0) / fires.sum(0).clamp_min(1)  # [d_sae] mean code where it fires
            latents = _top_positive(codes[b].mean(0) - base[b], n)
            if latents:
                values = tuple(gain * float(strength[i]) for i in latents)
                edits.append(LatentEdit(reference.hook, latents, op, values, timesteps=window,
                                        box=tuple(box) if box is not None else None, branch=branch))  # fmt: skip
            continue
        for token, token_codes in enumerate(codes[b]):
            latents = [i for i in _top_positive(token_codes - base[b], n) if token_codes[i] > 0]
            if latents:
                values = tuple(gain * float(token_codes[i]) for i in latents)
                edits.append(LatentEdit(reference.hook, latents, op, values, timesteps=window, tokens=(token,),
                                        branch=branch))  # fmt: skip
    return SteeringSpec(tuple(edits))


def _top_positive(scores: Tensor, n: int) -> tuple[int, ...]:
    order = torch.argsort(scores, descending=True, stable=True)[:n]
    return tuple(int(i) for i in order if scores[i] > 0)


def suppression_spec(hook: str, latents: Sequence[int], branch: Branch = "both") -> SteeringSpec:
    """Zero `latents` of the SAE at `hook` at every timestep, step and token (safe generation: pick them
    with `latents_for_images` for the concept to remove)."""
    return SteeringSpec((LatentEdit(hook, tuple(latents), "zero", branch=branch),))
