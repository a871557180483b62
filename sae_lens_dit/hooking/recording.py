"""Activations recorded over whole sampling runs, each row tagged with its timestep, step, CFG branch,
sample and token position.

Why a recorder of its own rather than `run_with_cache`: a pipeline calls the transformer once per
denoising step (twice for Flux true CFG), the cache of one call would be overwritten by the next,
and full activations of every step do not fit in memory. The recorder keeps, per call, only the
rows and tokens asked for, already detached, subsampled and copied to the storage device and dtype
inside the hook, so memory grows with what is kept.

Step rule: the first call starts run 0 at step 0. After that, a call whose (first row's) timestep
is lower than the previous call's is the next step; an equal timestep is another call of the same
step (Flux true CFG, Heun's second evaluation, SD3 skip-layer guidance); a higher timestep starts a
new sampling run at step 0. Two consecutive runs of a single step at the same timestep therefore
read as one run with two calls. The rule reads t after the adapter's timestep map (project
convention, 1000 = noise), which falls along a run for every family, also where the family's own
value rises (Lumina's 1 - sigma, Mochi's 1000 (1 - sigma), Cosmos 1's EDM c_noise falls but is mapped).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from sae_lens_dit.conventions import BRANCHES, Branch, branch_label, branch_order  # noqa: F401 (BRANCHES re-exported)
from sae_lens_dit.hooking.adapters import GuidanceSpec
from sae_lens_dit.hooking.call_context import CallContext, token_timesteps
from sae_lens_dit.hooking.frames import spread_over_frames

TIMESTEP_ATOL = 0.5
"""A row is kept by a `timesteps` filter when its timestep is within this of a listed value."""
ROW_COLUMNS = ("activation", "timestep", "step", "branch", "sample", "token", "frame", "run")
"""Keys of `Recording.rows(name)`."""


@dataclass(frozen=True)
class _CallMeta:
    """Metadata of one recorded forward call (only its kept rows)."""

    timestep: Tensor  # [batch_kept] float32
    branch: Tensor  # [batch_kept] int64
    sample: Tensor  # [batch_kept] int64
    step: int
    run: int
    frames: int  # token frames of the call (1: an image)


@dataclass
class _Entry:
    call: int
    activation: Tensor  # [batch_kept, tokens_kept, d]
    token: Tensor  # [batch_kept, tokens_kept] int64
    tokens_per_frame: int | None  # the hook's tokens per frame (all for an image; None: not whole frames)
    timestep: Tensor | None = None  # [batch_kept, tokens_kept] float32 where the call has per-token timesteps


class Recording:
    """What `HookedDiT.record` captured: one entry per recorded transformer forward call.

    `rec[name]` stacks the calls into [n_calls, batch_kept, tokens_kept, d] when every call kept the
    same number of rows; otherwise use `rec.rows(name)`, which flattens everything into columns.
    """

    def __init__(self, names: Sequence[str]):
        self.names: tuple[str, ...] = tuple(names)
        self._calls: list[_CallMeta] = []
        self._entries: dict[str, list[_Entry]] = {name: [] for name in self.names}

    def __repr__(self) -> str:
        return f"Recording(names={list(self.names)}, n_calls={self.n_calls})"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    @property
    def n_calls(self) -> int:
        return len(self._calls)

    def __getitem__(self, name: str) -> Tensor:
        entries = self._complete_entries(name)
        return torch.stack([entry.activation for entry in entries])  # [n_calls, batch_kept, tokens_kept, d]

    def token_index(self, name: str) -> Tensor:
        """Token positions of `rec[name]`: [n_calls, batch_kept, tokens_kept] int64."""
        return torch.stack([entry.token for entry in self._complete_entries(name)])

    @property
    def timesteps(self) -> Tensor:
        """[n_calls, batch_kept] float32: t on the DDPM scale [0, 1000], 1000 = pure noise."""
        return self._stack_meta("timestep")

    @property
    def branch(self) -> Tensor:
        """[n_calls, batch_kept] int64: 0 = cond, 1 = uncond, 2 = image_cond (three-way guidance)."""
        return self._stack_meta("branch")

    @property
    def sample_index(self) -> Tensor:
        """[n_calls, batch_kept] int64: the image's index in the pipeline batch (shared by its CFG rows)."""
        return self._stack_meta("sample")

    @property
    def step(self) -> Tensor:
        """[n_calls] int64: denoising step index within its sampling run (see the module docstring)."""
        return torch.tensor([meta.step for meta in self._calls], dtype=torch.long)

    @property
    def frames(self) -> Tensor:
        """[n_calls] int64: token frames of each call (1 for an image; video families with `frames:`)."""
        return torch.tensor([meta.frames for meta in self._calls], dtype=torch.long)

    @property
    def run(self) -> Tensor:
        """[n_calls] int64: which sampling run (pipeline call) each call belongs to."""
        return torch.tensor([meta.run for meta in self._calls], dtype=torch.long)

    def rows(self, name: str) -> dict[str, Tensor]:
        """Flat columns over all calls: activation [R, d] and timestep, step, branch, sample, token, frame (the
        token's video frame: 0 for an image, -1 where a hook's tokens are not whole frames), run [R]."""
        entries = self._entries_of(name)
        columns: dict[str, list[Tensor]] = {key: [] for key in ROW_COLUMNS}
        for entry in entries:
            meta = self._calls[entry.call]
            rows, tokens, width = entry.activation.shape
            columns["activation"].append(entry.activation.reshape(rows * tokens, width))
            columns["token"].append(entry.token.reshape(-1))
            per_frame = entry.tokens_per_frame
            token = entry.token.reshape(-1)
            columns["frame"].append(token // per_frame if per_frame else torch.full_like(token, -1))
            for key in ("timestep", "branch", "sample"):
                columns[key].append(getattr(meta, key)[:, None].expand(rows, tokens).reshape(-1))
            if entry.timestep is not None:  # the tokens' own timesteps (`CallContext.token_timestep`)
                columns["timestep"][-1] = entry.timestep.reshape(-1)
            columns["step"].append(torch.full((rows * tokens,), meta.step, dtype=torch.long))
            columns["run"].append(torch.full((rows * tokens,), meta.run, dtype=torch.long))
        return {key: torch.cat(values) for key, values in columns.items()}

    def _entries_of(self, name: str) -> list[_Entry]:
        if name not in self._entries:
            raise KeyError(f"{name!r} was not recorded; recorded hooks are {list(self.names)}")
        if not self._entries[name]:
            raise ValueError(
                f"nothing was recorded for {name!r} ({self.n_calls} calls kept); run the pipeline inside "
                f"record(), and check the branch and timesteps filters"
            )
        return self._entries[name]

    def _complete_entries(self, name: str) -> list[_Entry]:
        entries = self._entries_of(name)
        if [entry.call for entry in entries] != list(range(self.n_calls)):
            raise ValueError(
                f"{name!r} fired in {len(entries)} of {self.n_calls} recorded calls, so it has no per-call "
                f"axis; use rec.rows({name!r}), which tags every row with its call's metadata"
            )
        self._check_uniform([entry.activation.shape[0] for entry in entries], f"rec[{name!r}]")
        return entries

    def _stack_meta(self, key: str) -> Tensor:
        values = [getattr(meta, key) for meta in self._calls]
        self._check_uniform([len(value) for value in values], f"rec.{key}")
        return torch.stack(values) if values else torch.empty(0, 0)

    @staticmethod
    def _check_uniform(sizes: list[int], what: str) -> None:
        if len(set(sizes)) > 1:
            raise ValueError(
                f"{what}: recorded calls kept different numbers of batch rows ({sorted(set(sizes))}), so they "
                f"do not stack into [n_calls, batch_kept, ...]; use rec.rows(name), which flattens all calls "
                f"into columns (activation, timestep, step, branch, sample, token, run)"
            )


class StepTracker:
    """Assigns run and step indices from the sequence of call timesteps (rule in the module docstring).

    Fed converted t (`CallContext.timestep`), never the raw argument: a reversed raw value would make
    every call a new run.
    """

    def __init__(self) -> None:
        self.run, self.step, self.call_in_step = -1, 0, 0
        self._last: float | None = None

    def advance(self, t: float) -> None:
        if self._last is None or t > self._last:
            self.run, self.step, self.call_in_step = self.run + 1, 0, 0
        elif t < self._last:
            self.step, self.call_in_step = self.step + 1, 0
        else:
            self.call_in_step += 1
        self._last = t


@dataclass
class _CallPlan:
    """What to keep from the call in progress; token positions are drawn once per call and shared by hooks."""

    index: int
    rows: Tensor | None  # [batch_kept] int64 row ids, None = all rows
    sample: Tensor  # [batch_kept] int64
    step: int
    run: int
    frames: int
    token_timestep: Tensor | None = None  # [batch, m] of the whole call (rows not yet selected)
    tokens: dict[tuple[int, str], tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordOptions:
    """What `HookedDiT.record` keeps of each transformer call; checked when built.

    One object rather than six loose arguments: several share a type (two optional sequences, two
    strings), so a positional hand-over could swap them silently.
    """

    tokens_per_image: int | None = None
    """Random token positions kept per image and step, drawn per (seed, run, step, sample); None = all."""
    timesteps: Sequence[float] | None = None
    """Keep only rows within `TIMESTEP_ATOL` of one of these timesteps (DDPM scale [0, 1000]); None = all."""
    branch: Branch = "both"
    """CFG branch whose rows are kept: cond, uncond or both."""
    dtype: torch.dtype = torch.float32
    """dtype of the kept activations."""
    device: str | torch.device = "cpu"
    """Device the kept activations are copied to, inside the hook."""
    seed: int = 0
    """Seeds the token draws."""
    token_fraction: float | None = None
    """Instead of `tokens_per_image`: keep this share of each activation's tokens (at least one), for hooks
    whose token counts differ (UNet levels); drawn the same way."""

    def __post_init__(self) -> None:
        if self.branch not in BRANCHES:
            raise ValueError(f"branch must be one of {list(BRANCHES)}, received {self.branch!r}")
        if self.tokens_per_image is not None and self.tokens_per_image < 1:
            raise ValueError(
                f"tokens_per_image must be a positive int or None (all tokens), received {self.tokens_per_image}"
            )
        if self.token_fraction is not None and not (0 < self.token_fraction <= 1 and self.tokens_per_image is None):
            raise ValueError(
                f"token_fraction must be in (0, 1] and is used instead of tokens_per_image, received "
                f"token_fraction={self.token_fraction}, tokens_per_image={self.tokens_per_image}"
            )


class Recorder:
    """The hook side of `HookedDiT.record`: call-start bookkeeping plus one capture hook per name."""

    def __init__(
        self,
        names: Sequence[str],
        *,
        context: Callable[[], CallContext],
        guidance: GuidanceSpec,
        options: RecordOptions | None = None,
    ):
        options = options if options is not None else RecordOptions()
        self.recording = Recording(names)
        self._context, self._guidance = context, guidance
        self._k, self._branch, self._seed = options.tokens_per_image, options.branch, options.seed
        self._fraction = options.token_fraction
        timesteps = options.timesteps
        self._keep_t = None if timesteps is None else torch.as_tensor(list(timesteps), dtype=torch.float32)
        self._dtype, self._device = options.dtype, torch.device(options.device)
        self._tracker = StepTracker()
        self._plan: _CallPlan | None = None

    def on_call_start(self) -> None:
        """Called by HookedDiT before every transformer forward: decide which rows this call keeps."""
        self._plan = None
        ctx = self._context()
        if ctx.timestep is None:
            raise ValueError(
                "record(): the transformer was called without a timestep, so activations cannot be placed on "
                "the timestep axis; pass `timestep` to the transformer (stock pipelines always do)"
            )
        self._tracker.advance(float(ctx.timestep[0]))
        branch = self._branch_of_call(ctx)
        keep = torch.ones(len(branch), dtype=torch.bool)
        if self._branch != "both":
            keep &= branch == branch_label(self._branch)
        if self._keep_t is not None:
            keep &= ((ctx.timestep[:, None] - self._keep_t[None]).abs() <= TIMESTEP_ATOL).any(dim=1)
        if not keep.any():
            return
        rows = keep.nonzero().squeeze(1)
        frames = ctx.frames or 1
        meta = _CallMeta(
            ctx.timestep[rows], branch[rows], ctx.sample[rows], self._tracker.step, self._tracker.run, frames
        )
        self.recording._calls.append(meta)
        self._plan = _CallPlan(
            index=self.recording.n_calls - 1,
            rows=None if keep.all() else rows,
            sample=meta.sample,
            step=meta.step,
            run=meta.run,
            frames=frames,
            token_timestep=ctx.token_timestep,
        )

    def on_call_end(self) -> None:
        self._plan = None

    def hook(self, name: str) -> Callable[..., None]:
        """The TransformerLens hook function that captures `name` (it never changes the activation)."""
        entries = self.recording._entries[name]

        def capture(activation: Tensor, hook: HookPoint) -> None:  # activation: [batch, tokens, d]
            plan = self._plan
            if plan is None:  # outside a transformer call, or nothing kept from this call
                return
            if entries and entries[-1].call == plan.index:
                raise RuntimeError(f"{name} fired twice in one transformer call; record() expects one firing per call")
            rows, tokens, tokens_on_device = self._positions(plan, activation)
            kept = activation.detach()[rows[:, None], tokens_on_device]  # [batch_kept, tokens_kept, d] (a copy)
            n_tokens = activation.shape[1]
            per_frame = n_tokens // plan.frames if n_tokens % plan.frames == 0 else None
            token_t = None
            if plan.token_timestep is not None:  # [batch, m] -> this hook's tokens -> the kept ones
                token_t = token_timesteps(plan.token_timestep, n_tokens)[rows.cpu()[:, None], tokens]
            entries.append(_Entry(plan.index, kept.to(self._device, self._dtype), tokens, per_frame, token_t))

        return capture

    def _branch_of_call(self, ctx: CallContext) -> Tensor:
        """[batch] branch labels; with separate CFG calls (Flux true CFG) the call order decides."""
        if not self._guidance.separate_calls or self._tracker.call_in_step > 1:
            return ctx.branch
        first, second = branch_order(self._guidance.order)
        return torch.full_like(ctx.branch, second if self._tracker.call_in_step else first)

    def _positions(self, plan: _CallPlan, activation: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(rows on device [batch_kept], tokens on CPU and on device [batch_kept, tokens_kept]), cached per call."""
        n_tokens, device = activation.shape[1], activation.device
        key = (n_tokens, str(device))
        if key not in plan.tokens:
            rows = plan.rows if plan.rows is not None else torch.arange(activation.shape[0])
            tokens = self._draw_tokens(plan, n_tokens)
            plan.tokens[key] = (rows.to(device), tokens, tokens.to(device))
        return plan.tokens[key]

    def _draw_tokens(self, plan: _CallPlan, n_tokens: int) -> Tensor:
        """[batch_kept, k] sorted token positions, drawn per (seed, run, step, sample): reproducible, the cond and
        uncond rows of one image get the same positions, and a video's are spread evenly over its frames."""
        k = self._k if self._fraction is None else max(1, int(n_tokens * self._fraction))
        if k is None:
            return torch.arange(n_tokens).expand(len(plan.sample), n_tokens)
        if k > n_tokens:
            raise ValueError(f"tokens_per_image={k} but the activation has only {n_tokens} tokens per image")
        drawn: dict[int, Tensor] = {}
        for sample in plan.sample.tolist():
            if sample not in drawn:
                generator = torch.Generator().manual_seed(_mix(self._seed, plan.run, plan.step, sample))
                drawn[sample] = spread_over_frames(n_tokens, plan.frames, k, generator)
        return torch.stack([drawn[sample] for sample in plan.sample.tolist()])


def _mix(*values: int) -> int:
    """A deterministic 63-bit seed from a few small ints (same on every platform and process)."""
    seed = 0
    for value in values:
        seed = (seed * 1_000_003 + value + 1) % (2**63 - 1)
    return seed
