"""Applying a steering spec through HookedDiT: one hook per SAE that edits its codes inside every call.

Why a module of its own: this is the only code that touches activations during a run, so it is
where the guarantees live. `steer(hooked, saes, spec)` puts one TransformerLens hook per SAE on its
hook point (through `HookedDiT.hooks`) and a call listener (through `HookedDiT.listening`) that
counts denoising steps. Inside a call the hook reads the rows' timestep and branch from
`hooked.call_context`, encodes only the rows an edit touches (TIDE SAEs get their timestep, as in
`HookedDiT.saes`), changes the selected codes, and adds `decode(z_edited) - decode(z)` to the
activation: the error-term splice of `HookedDiT.saes`, but computed from the edited codes alone,
because SAELens decoders are affine in the codes. So every token, row and call an edit does not
touch keeps its activation bit for bit, and an edit costs one encode of the touched rows (none for
`add`) instead of two full SAE passes per call. `use_error_term=False` replaces every row with
the SAE's reconstruction of its edited codes instead. `check_spec` refuses, before any sampling, a
spec that cannot run (unknown hook, missing SAE, latent out of range, normalising SAE).

`steer` also takes one spec per sample of the pipeline's batch: spec i then edits only the rows of
sample i (`CallContext.sample`, both CFG rows of an image), so one pipeline call steers every sample
its own way (dashboard previews batch a different latent per sample so). Rows a sample's spec does
not touch keep their activation bit for bit, as with one spec.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from sae_lens import SAE
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from sae_lens_dit.analysis.interventions.gates import LinearProbe
from sae_lens_dit.analysis.interventions.regions import region_mask
from sae_lens_dit.analysis.interventions.spec import LatentEdit, SteeringSpec
from sae_lens_dit.conventions import branch_label, sae_display_name, timestep_scope
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.hooking.recording import StepTracker
from sae_lens_dit.hooking.splicing import hook_pair


@dataclass
class SteeringTrace:
    """What a `steer` block did: one record per (transformer call, edit) that touched something; with one spec
    per sample, records also name the `sample` whose spec the edit is in (`edit` indexes that spec's edits)."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def touched(self, edit: int | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records if edit is None or r["edit"] == edit]

    def summary(self) -> list[dict[str, Any]]:
        """Per edit (per sample and edit with one spec per sample): calls touched, their step and timestep range,
        and rows x tokens edited."""
        out = []
        for sample, index in sorted({(r.get("sample", -1), r["edit"]) for r in self.records}):
            records = [r for r in self.touched(index) if r.get("sample", -1) == sample]
            out.append(
                {
                    **({} if sample == -1 else {"sample": sample}),
                    "edit": index,
                    "calls": len(records),
                    "steps": sorted({r["step"] for r in records}),
                    "timestep_range": [min(r["timestep"] for r in records), max(r["timestep"] for r in records)],
                    "rows_x_tokens": sum(r["rows"] * r["tokens"] for r in records),
                }
            )
        return out


class _StepCounter:
    """A call listener: the denoising step (and run) of the transformer call in progress; `step` counts from
    `first_step` (the schedule step of the block's first call, for a run resumed mid-schedule)."""

    def __init__(self, hooked: HookedDiT, first_step: int = 0):
        self.hooked, self.tracker, self.first_step = hooked, StepTracker(), first_step

    @property
    def step(self) -> int:
        return self.tracker.step + self.first_step

    def on_call_start(self) -> None:
        timestep = self.hooked.call_context.timestep
        if timestep is not None:
            self.tracker.advance(float(timestep[0]))

    def on_call_end(self) -> None:
        pass


class _Entry(NamedTuple):
    """One edit as a hook applies it: its index in its spec, and the sample it is limited to (None: every row)."""

    index: int
    edit: LatentEdit
    sample: int | None = None


class _SAESteering:
    """The hook function of one SAE's edits (the order of `edits` is the order they apply in)."""

    def __init__(
        self,
        hooked: HookedDiT,
        sae: SAE,
        edits: list[_Entry],
        use_error_term: bool,
        steps: _StepCounter,
        trace: SteeringTrace,
        n_samples: int | None = None,
    ):
        self.hooked, self.sae, self.edits, self.use_error_term = hooked, sae, edits, use_error_term
        self.steps, self.trace, self.n_samples = steps, trace, n_samples
        self.columns = sorted({i for e in edits for i in e.edit.columns})  # edited latents, ascending
        self._index = {latent: j for j, latent in enumerate(self.columns)}
        self._regions: dict[tuple[int, int], Tensor | None] = {}
        self._probes = {
            e.edit.gate.probe: LinearProbe.load(e.edit.gate.probe) for e in edits if e.edit.gate and e.edit.gate.probe
        }
        self._samples = None if n_samples is None else torch.tensor(sorted({e.sample for e in edits}))
        for edit in (e.edit for e in edits):
            probe = self._probes.get(edit.gate.probe) if edit.gate is not None else None
            if probe is not None and probe.hook and probe.hook != edit.hook:
                raise ValueError(
                    f"edit at {edit.hook}: its gate's probe {edit.gate.probe} was fitted on {probe.hook}; "
                    f"fit a probe on {edit.hook}"
                )
        self._needs_codes = not use_error_term or any(
            e.edit.op != "add" or (e.edit.gate is not None and e.edit.gate.latents is not None) for e in edits
        )

    def _region(self, position: int, edit: LatentEdit, n_tokens: int) -> Tensor | None:
        if edit.box is None and edit.mask is None and edit.tokens is None:
            return None  # every token: no token grid needed (video hooks have frames, not one grid)
        key = (position, n_tokens)
        if key not in self._regions:
            self._regions[key] = region_mask(self.hooked.token_grid(n_tokens), edit.box, edit.mask, edit.tokens)
        return self._regions[key]

    def _check_samples(self) -> None:
        """With one spec per sample, the call's batch must hold exactly that many samples."""
        samples = self.hooked.call_context.sample
        n = int(samples.max()) + 1 if len(samples) else 0
        if n != self.n_samples:
            raise ValueError(
                f"steer was given {self.n_samples} per-sample specs but the pipeline's batch holds {n} sample(s); "
                f"give one spec per sample (an empty SteeringSpec() for a sample to leave unedited)"
            )

    def _rows(self, edit: LatentEdit, batch: int, sample: int | None = None) -> Tensor:
        """[batch] bool: rows of the call in progress the edit applies to (only `sample`'s rows when given)."""
        ctx = self.hooked.call_context
        rows = torch.ones(batch, dtype=torch.bool) if sample is None else ctx.sample == sample
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
            if edit.steps is not None and self.steps.step not in edit.steps:
                rows[:] = False
        return rows

    def __call__(self, activation: Tensor, hook: HookPoint) -> Tensor | None:  # activation: [batch, tokens, d]
        batch, n_tokens, _ = activation.shape
        if self.n_samples is not None:
            self._check_samples()
        plans = []
        for position, (index, edit, sample) in enumerate(self.edits):
            rows = self._rows(edit, batch, sample)
            if rows.any():
                plans.append((index, edit, sample, rows, self._region(position, edit, n_tokens)))
        if not plans and self.use_error_term:
            return None
        touched = torch.zeros(batch, dtype=torch.bool)
        for *_, rows, _ in plans:
            touched |= rows
        if not self.use_error_term:  # every row (of a sample with edits here) becomes the SAE's reconstruction
            touched = (
                torch.ones_like(touched)
                if self._samples is None
                else torch.isin(self.hooked.call_context.sample, self._samples)
            )
        idx = touched.nonzero().squeeze(1)  # [r] rows encoded
        sae, device = self.sae, self.sae.device
        x = activation[idx.to(activation.device)].to(device, self.sae.dtype)  # [r, tokens, d]
        ctx = self.hooked.call_context
        codes = None
        if self._needs_codes:
            with torch.no_grad(), timestep_scope(sae, _rows_timestep(ctx, n_tokens, idx, device)):
                codes = sae.encode(x)  # [r, tokens, d_sae]
            old = codes[..., self.columns]
        else:
            old = torch.zeros(len(idx), n_tokens, len(self.columns), device=device, dtype=sae.dtype)
        new = old.clone()
        position = torch.full((batch,), -1, dtype=torch.long)
        position[idx] = torch.arange(len(idx))
        for index, edit, sample, rows, region in plans:
            where = torch.zeros(len(idx), n_tokens, dtype=torch.bool, device=device)
            where[position[rows]] = True if region is None else region.to(device)
            if edit.gate is not None:
                grid = self.hooked.token_grid(n_tokens) if edit.gate.needs_grid else None
                where &= edit.gate.inside(x, codes, self._probes.get(edit.gate.probe), grid).to(device)
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
                    **({} if sample is None else {"sample": sample}),
                    "edit": index,
                    "hook": edit.hook,
                    "step": self.steps.step,
                    "run": self.steps.tracker.run,
                    "timestep": float(ctx.timestep[rows][0]) if ctx.timestep is not None else None,
                    "rows": int(rows.sum()),
                    "tokens": n_tokens if region is None else int(region.sum()),
                    "edited_tokens": changed_tokens,
                }
            )
        out = activation.clone()
        if not self.use_error_term:
            edited = codes.clone()
            edited[..., self.columns] = new
            with (
                torch.no_grad(),
                timestep_scope(sae, _rows_timestep(ctx, n_tokens, idx, device)),
            ):
                out[idx.to(activation.device)] = sae.decode(edited).to(activation.device, activation.dtype)
            return out
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
    read, write = hook_pair(sae)
    if read != write:
        raise ValueError(
            f"SAE {sae_display_name(sae)} is a transcoder (reads {read}, writes {write}); steering edits the "
            f"activation an SAE reconstructs at its own hook, which a transcoder does not: steer an SAE of {write}"
        )
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
    if hooked.spec.guidance.separate_calls and any(edit.branch != "both" for edit in spec.edits):
        raise ValueError(
            f"adapter {hooked.spec.name!r} runs CFG branches as separate calls; branch-limited edits "
            f"are not supported there, use branch: both"
        )
    for hook in spec.hooks:
        _check_sae(by_hook[hook], [(i, edit) for i, edit in enumerate(spec.edits) if edit.hook == hook])
    return by_hook


@contextmanager
def steer(
    hooked: HookedDiT,
    saes: Sequence[SAE],
    spec: SteeringSpec | Sequence[SteeringSpec],
    use_error_term: bool = True,
    first_step: int = 0,
) -> Iterator[SteeringTrace]:
    """Apply `spec` to every transformer call made inside the block (e.g. a whole pipeline run).

    `saes` are the SAEs the edits refer to, one per hook (`sae.cfg.metadata.hook_name`); with the
    error term (default) only what the edits touch changes, bit for bit. A list of specs gives one spec
    per sample of the pipeline's batch (spec i edits sample i's rows only; the batch must hold exactly
    that many samples). Yields the trace of what was edited. Hooks are removed on exit, also when the
    pipeline raises. `first_step`: the schedule step of the block's first transformer call, for a run resumed
    mid-schedule (`resume.steer_resumed`): edits limited by `steps` and the trace count steps from it.

    >>> with steer(hooked, [sae], SteeringSpec([LatentEdit("blocks.1.hook_resid_post", [7], "add", 4.0)])):
    ...     images = pipe(class_labels=[3], output_type="np").images  # doctest: +SKIP
    >>> specs = [SteeringSpec([LatentEdit("blocks.1.hook_resid_post", [i], "add", 4.0)]) for i in (7, 9)]
    >>> with steer(hooked, [sae], specs):  # sample 0 steers latent 7, sample 1 latent 9
    ...     images = pipe(class_labels=[3, 3], output_type="np").images  # doctest: +SKIP
    """
    if isinstance(spec, SteeringSpec):
        entries, n_samples = [_Entry(i, edit) for i, edit in enumerate(spec.edits)], None
    else:
        specs = list(spec)
        if not specs or not all(isinstance(s, SteeringSpec) for s in specs):
            raise ValueError(
                f"steer takes a SteeringSpec or a non-empty list of them (one per sample), received {spec!r}"
            )
        entries = [_Entry(i, edit, n) for n, s in enumerate(specs) for i, edit in enumerate(s.edits)]
        n_samples = len(specs)
    by_hook = check_spec(hooked, saes, SteeringSpec(tuple(e.edit for e in entries)))
    trace, steps = SteeringTrace(), _StepCounter(hooked, first_step)
    fwd_hooks = []
    for hook in dict.fromkeys(e.edit.hook for e in entries):
        edits = [e for e in entries if e.edit.hook == hook]
        fwd_hooks.append((hook, _SAESteering(hooked, by_hook[hook], edits, use_error_term, steps, trace, n_samples)))
    if not fwd_hooks:
        yield trace
        return
    with hooked.listening(steps), hooked.hooks(fwd_hooks=fwd_hooks):
        yield trace


def _rows_timestep(ctx: Any, n_tokens: int, idx: Tensor, device: torch.device) -> Tensor | None:
    """The encoded rows' timesteps: [rows], or [rows, tokens] where the call has per-token timesteps."""
    timestep = ctx.timestep_at(n_tokens)
    return timestep[idx].to(device) if timestep is not None else None
