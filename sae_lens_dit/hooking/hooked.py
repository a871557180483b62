"""HookedDiT: TransformerLens hook points on any supported diffusers diffusion transformer.

Why this shape. Researchers want `run_with_cache` / `run_with_hooks` / `hooks()` exactly as in
TransformerLens, on the very transformer a stock diffusers pipeline holds. Hooks are global state
(the `HookedRootModule` docstring explains the footgun), so every temporary hook is removed when
its context exits, also when the pipeline raises. Three traps shape the implementation:

- The transformer is not a submodule of HookedDiT. `HookedRootModule.setup()` writes `.name` on
  every module it walks (and over a pipeline it would overwrite `Upsample2D.name`, which that
  module branches on); the HookPoints live in HookedDiT's own small tree instead, named
  `blocks.{i}.hook_resid_post` etc., and nothing inside the transformer is touched.
- Blocks are never replaced or wrapped (DiT's final layer reads `transformer_blocks[0].norm1.emb`,
  state-dict keys must not change). Torch forward (pre-)hooks on the real modules call the
  HookPoints, and only while a HookPoint has a hook: an idle HookedDiT leaves no hook behind.
- The raw timestep is read from the transformer's own forward arguments (PixArt and Sana blocks
  never see it), with a pre-hook that accepts positional and keyword calls alike.

Hook names (image-token streams are [batch, tokens, d_model]):
    blocks.{i}.hook_resid_pre, blocks.{i}.hook_resid_post   image residual stream in / out
    blocks.{i}.hook_update                                  the block's update: hook_resid_post - hook_resid_pre
    blocks.{i}.hook_txt_resid_post                          text stream out (SD3, Flux joint blocks)
    blocks.{i}.attn.hook_out, blocks.{i}.mlp.hook_out       submodule outputs, before gating
    blocks.{i}.mlp.hook_in                                  the MLP's input, after the block's norm and modulation
    single_blocks.{i}.…                                     Flux single-stream blocks
    down.{i}.{j}.…, mid.{j}.…, up.{i}.{j}.…                 UNet Transformer2DModels (`adapters/sd_unet.yaml`),
    down.{i}.{j}.blocks.{k}.…                               and the transformer blocks inside them
Extra submodule hooks (cross_attn, attn2) are listed in each `adapters/*.yaml`.

>>> from diffusers import DiTTransformer2DModel
>>> model = DiTTransformer2DModel(num_layers=1, num_attention_heads=2, attention_head_dim=4, in_channels=4,
...     out_channels=8, sample_size=8, patch_size=2, num_embeds_ada_norm=8, norm_type="ada_norm_zero")
>>> hooked = HookedDiT(model)
>>> hooked.hook_names  # doctest: +NORMALIZE_WHITESPACE
['blocks.0.hook_resid_pre', 'blocks.0.hook_resid_post', 'blocks.0.hook_update', 'blocks.0.attn.hook_out',
 'blocks.0.mlp.hook_in', 'blocks.0.mlp.hook_out']
>>> out, cache = hooked.run_with_cache(torch.randn(2, 4, 8, 8), timestep=torch.tensor([10, 500]),
...     class_labels=torch.tensor([1, 8]), names_filter="blocks.0.hook_resid_post")
>>> cache["blocks.0.hook_resid_post"].shape
torch.Size([2, 16, 8])
"""

from __future__ import annotations

import difflib
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from sae_lens import SAE
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from transformer_lens.hook_points import NamesFilter
from transformer_lens.HookedRootModule import HookedRootModule

from sae_lens_dit.conventions import Branch
from sae_lens_dit.hooking.adapters import AdapterSpec, AdapterSpecError, StackSpec, adapter_for
from sae_lens_dit.hooking.block_tree import (
    INPUT_HOOKED,
    BlockHooks,
    attach,
    block_width,
    own_hook_points,
    resolve_blocks,
    submodule_at,
)
from sae_lens_dit.hooking.call_context import ArgSlot, CallContext, CallReader
from sae_lens_dit.hooking.hook_sites import (
    BlockInputSite,
    BlockOutputSite,
    BlockStreams,
    Site,
    StreamView,
    SubmoduleInputSite,
    SubmoduleSite,
)
from sae_lens_dit.hooking.recording import Recorder, Recording, RecordOptions
from sae_lens_dit.hooking.splicing import hook_pair, splice_hooks
from sae_lens_dit.hooking.token_grid import configured_grid, resolution_levels, spatial_patch, token_grid

logger = logging.getLogger(__name__)


class CallListener(Protocol):
    """Told when a transformer forward call starts and ends (the recorder is one)."""

    def on_call_start(self) -> None: ...

    def on_call_end(self) -> None: ...


@dataclass
class _CallState:
    """The transformer call in progress (a plain object: nn.Module attribute writes are slow)."""

    args: tuple[tuple, dict[str, Any]] | None = None
    context: CallContext | None = None


class HookedDiT(HookedRootModule):
    """A diffusers diffusion transformer with TransformerLens hook points; the adapter comes from its class.

    `forward(*args, **kwargs)` is the transformer's own forward. The transformer is held, not owned:
    keep using it in its pipeline; `hooked.to(...)` and `hooked.train(...)` pass through to it.
    """

    def __init__(self, transformer: nn.Module, spec: AdapterSpec | None = None):
        super().__init__()
        self.__dict__["transformer"] = transformer  # not a submodule: setup() must not walk it
        self.spec = spec if spec is not None else adapter_for(transformer)
        self._reader = CallReader(self.spec, transformer)
        self._sites: list[Site] = []
        self._installed_sites = 0
        self._listeners: list[CallListener] = []
        self._call_handles: list[RemovableHandle] = []
        self._call = _CallState()
        placed: list[tuple[str, nn.Module]] = []
        widths: list[tuple[BlockHooks, int | None]] = []
        for stack in self.spec.stacks:
            for prefix, block in resolve_blocks(self.spec, stack, transformer):
                hooks = self._hooks_for(stack, block)
                placed.append((prefix, hooks))
                widths.append((hooks, block_width(block, stack, self.spec)))
        attach(self, placed)
        self.setup()
        self._widths = {point.name: width for hooks, width in widths for point in own_hook_points(hooks)}
        logger.debug(
            "HookedDiT(%s): adapter %r, %d hook points", type(transformer).__name__, self.spec.name, len(self.hook_dict)
        )

    @classmethod
    def from_pipeline(cls, pipe: Any) -> HookedDiT:
        """HookedDiT on a diffusers pipeline's denoiser: `pipe.transformer`, or `pipe.unet` (SD, SDXL)."""
        return cls(denoiser(pipe))

    def _hooks_for(self, stack: StackSpec, block: nn.Module) -> BlockHooks:
        """Build one block's HookPoints and their (not yet installed) sites."""
        try:
            slot = ArgSlot(block, stack.input)
        except ValueError as error:
            raise AdapterSpecError(f"adapter {self.spec.name!r}: {error}; fix {self.spec.source}") from None
        text_off = stack.text_off_attribute is not None and getattr(block, stack.text_off_attribute, False)
        joint_text = stack.tokens != "all" and stack.text and stack.text_output is None  # the rest of a joint stream
        has_text = joint_text or (stack.text_output is not None and not text_off)
        submodules = {sub.hook: submodule_at(block, sub.module, self.spec) for sub in stack.submodules}
        present = [sub for sub in stack.submodules if submodules[sub.hook] is not None or not sub.optional]
        for sub in present:
            if submodules[sub.hook] is None:
                raise AdapterSpecError(
                    f"adapter {self.spec.name!r}: {type(block).__name__}.{sub.module} is None; mark it "
                    f"`optional: true` or point `module` elsewhere in {self.spec.source}"
                )
        hooks = BlockHooks(has_text, [sub.hook for sub in present], has_update=stack.update)
        on_change = self._site_switched
        joint = self._call_image_tokens if stack.tokens != "all" else None  # a joint stream, cut to its image span
        per_row = stack.tokens in ("image_after_text", "image_at_offset")
        offset = self._call_image_offset if per_row else None  # spans placed per row
        margins = self._call_image_margins if joint is not None else None  # references around the image
        view = StreamView(stack.layout, joint, stack.tokens == "image_head", offset, margins)
        streams = BlockStreams(
            image_index=stack.image_output,
            image_hook=hooks.hook_resid_post,
            text_index=stack.text_output,
            text_hook=hooks.hook_txt_resid_post if has_text else None,
            update_hook=hooks.hook_update if stack.update else None,
            slot=slot,
            view=view,
        )
        self._sites += [
            BlockInputSite(block, slot, hooks.hook_resid_pre, on_change, view),
            BlockOutputSite(block, streams, on_change),
        ]
        for sub in present:
            parts = (block, submodules[sub.hook], sub, slot)
            hook_point = getattr(hooks, sub.hook).hook_out
            self._sites.append(SubmoduleSite(*parts, hook_point, on_change, joint, offset, margins))
            if sub.hook in INPUT_HOOKED:
                hook_in = getattr(hooks, sub.hook).hook_in
                self._sites.append(SubmoduleInputSite(*parts, hook_in, on_change, joint, offset, margins))
        return hooks

    # ----------------------------------------------------------------------------------------------
    # The transformer's own call: timestep and CFG metadata for hooks that need them.

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.transformer(*args, **kwargs)

    def to(self, *args: Any, **kwargs: Any) -> HookedDiT:
        self.transformer.to(*args, **kwargs)
        return self

    def train(self, mode: bool = True) -> HookedDiT:
        self.transformer.train(mode)
        return super().train(mode)

    @property
    def hook_names(self) -> list[str]:
        return list(self.hook_dict)

    @property
    def d_model(self) -> int:
        """Width of every hook point's activations (the transformer's inner dimension); an error for a model
        whose hooks differ in width (UNet levels): use `d_in(hook_name)` there."""
        widths = set(self._widths.values()) - {None}
        if len(widths) > 1:
            raise ValueError(
                f"the hooks of this {type(self.transformer).__name__} differ in width ({sorted(widths)}); "
                f"use hooked.d_in(hook_name) for the width at one hook"
            )
        return widths.pop() if widths else self._inner_dim()

    def d_in(self, hook_name: str) -> int:
        """Width of the activations at one hook (an SAE there has `cfg.d_in` equal to it)."""
        self.check_hook_names([hook_name])
        width = self._widths.get(hook_name)
        return self._inner_dim() if width is None else width

    def _inner_dim(self) -> int:
        config = self.transformer.config
        width = getattr(self.transformer, "inner_dim", None)
        return int(width or config.num_attention_heads * config.attention_head_dim)

    @property
    def image_tokens(self) -> int:
        """Image tokens per image at the transformer's configured resolution: (sample_size / patch_size)^2."""
        grid = configured_grid(self.transformer.config)
        if grid is None or getattr(self.transformer.config, "patch_size", None) is None:
            raise ValueError(
                f"{type(self.transformer).__name__}.config has no sample_size/patch_size, so its image token count "
                f"depends on the input resolution (and, in a UNet, on the level); read it from an activation "
                f"instead (its dimension 1)"
            )
        return grid[0] * grid[1]

    def token_grid(self, n_tokens: int, latent_size: tuple[int, int] | None = None) -> tuple[int, int]:
        """(rows, columns) of the row-major grid of an image with `n_tokens` image tokens: token i sits
        at row i // columns, column i % columns. Read from the latent's (height, width) when given (then only
        from it), else the configured sample size, else a square grid; in a UNet at whichever level has
        `n_tokens` tokens (`hooking.token_grid`). An error when none has (spatial edits need the grid)."""
        config = self.transformer.config
        patch, levels = spatial_patch(config), resolution_levels(config)
        return token_grid(n_tokens, latent_size, patch, levels, configured_grid(config))

    @property
    def call_context(self) -> CallContext:
        """Timestep, CFG branch and sample index per batch row of the forward call in progress.

        Available inside hook functions (and to `record` / `saes`); computed once per call.
        """
        call = self._call
        if call.args is None:
            raise RuntimeError(
                "call_context is only available while the transformer runs with a hook of this HookedDiT "
                "active (inside a hook function, record() or saes())"
            )
        if call.context is None:
            call.context = self._reader.context(*call.args)
        return call.context

    def _call_image_tokens(self) -> int | None:
        return self.call_context.image_tokens

    def _call_image_offset(self) -> Tensor | None:
        return self.call_context.image_offset

    def _call_image_margins(self) -> tuple[int, int]:
        return self.call_context.image_margins

    def read_call(self, args: tuple, kwargs: dict[str, Any]) -> CallContext:
        """The `CallContext` of a transformer call given its arguments (as a forward pre-hook receives them)."""
        return self._reader.context(args, kwargs)

    def _site_switched(self, installed: bool) -> None:
        self._installed_sites += 1 if installed else -1
        self._refresh_call_hooks()

    def _refresh_call_hooks(self) -> None:
        """Keep the transformer-level hooks installed exactly while some site or listener needs them."""
        wanted = bool(self._listeners) or self._installed_sites > 0
        if wanted and not self._call_handles:
            self._call_handles = [
                self.transformer.register_forward_pre_hook(self._call_started, with_kwargs=True),
                self.transformer.register_forward_hook(self._call_ended, always_call=True),
            ]
        elif not wanted and self._call_handles:
            for handle in self._call_handles:
                handle.remove()
            self._call_handles = []

    def _call_started(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self._call.args, self._call.context = (args, kwargs), None
        for listener in self._listeners:
            listener.on_call_start()

    def _call_ended(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._call.args, self._call.context = None, None
        for listener in self._listeners:
            listener.on_call_end()

    @contextmanager
    def listening(self, listener: CallListener) -> Iterator[None]:
        """Tell `listener` when each transformer call starts and ends while the block runs (per-call state
        such as the denoising step lives there; `call_context` is readable from `on_call_start`)."""
        self._listeners.append(listener)
        self._refresh_call_hooks()
        try:
            yield
        finally:
            self._listeners.remove(listener)
            self._refresh_call_hooks()

    # ----------------------------------------------------------------------------------------------
    # TransformerLens API, with hook names checked up front.

    def check_hook_names(self, names: Iterable[str | Callable[[str], bool]]) -> None:
        """Raise with the closest valid names for every string that is not a hook name of this model."""
        for name in names:
            if isinstance(name, str) and name not in self.hook_dict:
                close = difflib.get_close_matches(name, self.hook_dict, n=5, cutoff=0.5)
                suffixes = sorted({hook.split(".", 2)[-1] for hook in self.hook_dict})
                raise ValueError(
                    f"unknown hook name {name!r} for HookedDiT({type(self.transformer).__name__}); "
                    f"closest valid names: {close}; this model has {len(self.hook_dict)} hook points named "
                    f"<stack>.<i>.<suffix> with suffixes {suffixes} (see hooked.hook_names)"
                )

    def add_hook(self, name: str | Callable[[str], bool], hook: Callable, *args: Any, **kwargs: Any) -> None:
        self.check_hook_names([name])
        super().add_hook(name, hook, *args, **kwargs)

    @contextmanager
    def hooks(
        self,
        fwd_hooks: Sequence[tuple[str | Callable, Callable]] = (),
        bwd_hooks: Sequence[tuple[str | Callable, Callable]] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
    ) -> Iterator[HookedDiT]:
        self.check_hook_names([name for name, _ in [*fwd_hooks, *bwd_hooks]])
        with super().hooks(list(fwd_hooks), list(bwd_hooks), reset_hooks_end, clear_contexts) as model:
            yield model

    def get_caching_hooks(self, names_filter: NamesFilter = None, *args: Any, **kwargs: Any) -> tuple[dict, list, list]:
        self._check_names_filter(names_filter)
        return super().get_caching_hooks(names_filter, *args, **kwargs)

    def add_caching_hooks(self, names_filter: NamesFilter = None, *args: Any, **kwargs: Any) -> dict:
        self._check_names_filter(names_filter)
        return super().add_caching_hooks(names_filter, *args, **kwargs)

    def _check_names_filter(self, names_filter: NamesFilter) -> None:
        if isinstance(names_filter, str):
            self.check_hook_names([names_filter])
        elif isinstance(names_filter, (list, tuple)):
            self.check_hook_names(names_filter)

    # ----------------------------------------------------------------------------------------------
    # Timestep-aware recording and SAE splicing over whole pipeline runs.

    @contextmanager
    def record(
        self,
        names: Sequence[str],
        tokens_per_image: int | None = None,
        timesteps: Sequence[float] | None = None,
        branch: Branch = "both",
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        seed: int = 0,
        token_fraction: float | None = None,
    ) -> Iterator[Recording]:
        """Record `names` over every transformer call made inside the block (e.g. a whole pipeline run).

        Keeps `tokens_per_image` random token positions per image and step (seeded by
        (seed, run, step, sample); all tokens if None), only rows of `branch` and, if given, only
        rows whose timestep is within 0.5 of one of `timesteps` (project convention: DDPM scale
        [0, 1000], 1000 = pure noise). Kept activations are detached, copied to `device` in `dtype`
        inside the hook. `token_fraction` instead keeps that share of each activation's tokens (hooks of
        different UNet levels have different token counts). The hooks are removed on exit, also when the
        pipeline raises.
        """
        names = [names] if isinstance(names, str) else list(names)
        if not names or not all(isinstance(name, str) for name in names):
            raise ValueError(f"record() takes hook names (strings from hooked.hook_names), got {names!r}")
        self.check_hook_names(names)
        options = RecordOptions(
            tokens_per_image=tokens_per_image,
            timesteps=timesteps,
            branch=branch,
            dtype=dtype,
            device=device,
            seed=seed,
            token_fraction=token_fraction,
        )
        recorder = Recorder(names, context=lambda: self.call_context, guidance=self.spec.guidance, options=options)
        with self.listening(recorder), self.hooks(fwd_hooks=[(name, recorder.hook(name)) for name in names]):
            yield recorder.recording

    @contextmanager
    def saes(self, saes: Sequence[SAE], use_error_term: bool = True) -> Iterator[HookedDiT]:
        """Splice SAEs in at their `cfg.metadata.hook_name`: the activation is replaced by the SAE's output.

        With `use_error_term`, the output is `x + (sae(x) - sae_clean(x))`, where the clean pass runs
        with the SAE's own hook points bypassed: exactly `x` until a hook on the SAE (e.g. on
        `hook_sae_acts_post`) edits something, and the edit's effect otherwise; gradients flow through
        the SAE as in SAELens's error-term mode. Transcoders (SAELens's convention: `hook_name` is the
        input hook, `hook_name_out` the output hook, e.g. `blocks.{i}.mlp.hook_in` -> `mlp.hook_out`)
        replace the output with their reconstruction from the input (error term: output +
        (tc(in) - tc_clean(in))). Timestep-conditioned SAEs and transcoders (TIDE;
        `conventions.TimestepConditioned`) get the current call's timestep per batch row, [batch].
        Each SAE's `use_error_term` is restored on exit.
        """
        hook_names = [name for sae in saes for name in hook_pair(sae)]
        if not all(isinstance(name, str) for name in hook_names):
            raise ValueError(f"every SAE must name its hook in cfg.metadata.hook_name; got {hook_names}")
        self.check_hook_names(hook_names)
        previous = [sae.use_error_term for sae in saes]
        hooks = splice_hooks(saes, use_error_term, lambda: self.call_context)
        try:
            for sae in saes:
                sae.use_error_term = False  # the splice computes the error term itself, exactly
            with self.hooks(fwd_hooks=hooks):
                yield self
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # SAELens warns when it is set to True
                for sae, value in zip(saes, previous, strict=True):
                    sae.use_error_term = value


def denoiser(pipe: Any) -> nn.Module:
    """The network a diffusers pipeline denoises with: its `transformer`, else its `unet`."""
    for name in ("transformer", "unet"):
        module = getattr(pipe, name, None)
        if isinstance(module, nn.Module):
            return module
    raise ValueError(
        f"{type(pipe).__name__} has neither a `transformer` nor a `unet`; pass the denoising network itself to "
        f"HookedDiT(...)"
    )
