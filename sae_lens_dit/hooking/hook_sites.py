"""Torch hooks on the real diffusers modules that route activations through HookedDiT's HookPoints.

Why not wrap blocks: DiT's final layer reads `transformer_blocks[0].norm1.emb`, diffusers' own
hook helpers look blocks up by class, and state-dict keys must not change. So a *site* registers
plain forward (pre-)hooks on an existing module, and only while one of its HookPoints has a
TransformerLens hook: with no hook active the transformer carries no hook of ours at all and runs
exactly as before. When installed, a site passes the activation through its HookPoint and splices
back whatever the HookPoint returns (a new tensor replaces the activation; None keeps it).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.utils import BaseOutput
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from transformer_lens.hook_points import HookPoint

from sae_lens_dit.hooking.adapters import Layout, SubmoduleSpec
from sae_lens_dit.hooking.call_context import ArgSlot


class DiTHookPoint(HookPoint):
    """A HookPoint that tells its site when hooks come and go, so torch hooks exist only while needed."""

    def __init__(self) -> None:
        super().__init__()
        self.site: Site | None = None

    def add_hook(self, *args: Any, **kwargs: Any) -> None:
        super().add_hook(*args, **kwargs)
        if self.site is not None:
            self.site.refresh()

    def remove_hooks(self, *args: Any, **kwargs: Any) -> None:
        super().remove_hooks(*args, **kwargs)
        if self.site is not None:
            self.site.refresh()

    @property
    def active(self) -> bool:
        return bool(self.fwd_hooks or self.bwd_hooks)


class Site(ABC):
    """Installs its torch hooks while any of its HookPoints has a hook; `on_change(installed)` hears each switch."""

    def __init__(self, hook_points: list[DiTHookPoint], on_change: Callable[[bool], None]):
        self.hook_points = hook_points
        self._on_change = on_change
        self._handles: list[RemovableHandle] = []
        for hook_point in hook_points:
            hook_point.site = self

    @property
    def installed(self) -> bool:
        return bool(self._handles)

    def refresh(self) -> None:
        wanted = any(hook_point.active for hook_point in self.hook_points)
        if wanted and not self._handles:
            self._handles = self._register()
            self._on_change(True)
        elif not wanted and self._handles:
            for handle in self._handles:
                handle.remove()
            self._handles = []
            self._on_change(False)

    @abstractmethod
    def _register(self) -> list[RemovableHandle]:
        """Register the torch hooks on the real modules; return their handles."""


def _checked(new: Any, old: Tensor, hook_point: HookPoint) -> Tensor:
    """A hook's replacement, if it has the activation's shape (anything else would break the model)."""
    if not isinstance(new, Tensor) or new.shape != old.shape:
        received = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
        raise ValueError(
            f"hook on {hook_point.name} returned {received}; expected a tensor of the activation's shape "
            f"{tuple(old.shape)}; return None to keep the activation or a tensor of the same shape to replace it"
        )
    return new


def as_tokens(full: Tensor, layout: Layout) -> Tensor:
    """The image stream as hooks see it, [batch, tokens, d]: `channels_first` [batch, d, h, w] is flattened
    row-major and transposed, `sequence_first` [tokens, batch, d] transposed (exact relayouts; `from_tokens` undoes
    them)."""
    if layout == "channels_first":
        return full.flatten(2).transpose(1, 2)
    return full.transpose(0, 1) if layout == "sequence_first" else full


def from_tokens(tokens: Tensor, like: Tensor, layout: Layout) -> Tensor:
    """`tokens` [batch, tokens, d] back in the layout and shape of `like`."""
    if layout == "channels_first":
        return tokens.transpose(1, 2).reshape(like.shape)
    return tokens.transpose(0, 1) if layout == "sequence_first" else tokens


@dataclass
class StreamView:
    """How a hook sees a block's image stream: relaid from `layout` to [batch, tokens, d], and, for a joint stream,
    cut to the call's `image_count()` image tokens: the last ones of [text | image], or the first ones of
    [image | rest] when `at_head` (`hooking.token_spans`), each past the reference tokens `image_margins()` counts
    after and before the image. `back` puts a replacement of the view into the full stream, `rest` / `back_rest`
    read and replace the other tokens (the text, and any padding or references); all are exact."""

    layout: Layout = "tokens"
    image_count: Callable[[], int | None] | None = None
    at_head: bool = False
    image_offset: Callable[[], Tensor | None] | None = None
    """Where each row's image span starts ([batch]; `tokens: image_after_text`); None: at the tail or head."""
    image_margins: Callable[[], tuple[int, int]] | None = None
    """(reference tokens before, after) the image in the call's image stream (`image_tokens: ids`); None: (0, 0)."""

    def view(self, full: Tensor) -> Tensor:
        tokens = as_tokens(full, self.layout)
        return tokens if self.image_count is None else self._split(tokens)[0]

    def back(self, full: Tensor, y: Tensor) -> Tensor:
        if self.image_count is not None:
            y = self._join(y, self._split(as_tokens(full, self.layout))[1])
        return from_tokens(y, full, self.layout)

    def rest(self, full: Tensor) -> Tensor:
        """The tokens of a joint stream beside the image span (the text, and any padding)."""
        return self._split(as_tokens(full, self.layout))[1]

    def back_rest(self, full: Tensor, y: Tensor) -> Tensor:
        image = self._split(as_tokens(full, self.layout))[0]
        return from_tokens(self._join(image, y), full, self.layout)

    def _split(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(image span, rest) of a joint stream [batch, tokens, d]."""
        n = self._count(tokens)
        inside = self._per_row(n, tokens.shape[1], tokens.device)
        if inside is not None:
            batch, length, d = tokens.shape
            return tokens[inside].view(batch, n, d), tokens[~inside].view(batch, length - n, d)
        start, length = self._start(n, tokens.shape[1]), tokens.shape[1]
        if start == 0 or start + n == length:  # the image at one end: the rest is a view, as the image is
            rest = tokens[:, n:] if start == 0 else tokens[:, :start]
        else:  # [references | image | references], or [text | image | references]
            rest = torch.cat([tokens[:, :start], tokens[:, start + n :]], dim=1)
        return tokens[:, start : start + n], rest

    def _join(self, image: Tensor, rest: Tensor) -> Tensor:
        inside = self._per_row(image.shape[1], image.shape[1] + rest.shape[1], image.device)
        if inside is not None:
            out = image.new_empty(image.shape[0], inside.shape[1], image.shape[2])
            out[inside], out[~inside] = image.reshape(-1, image.shape[2]), rest.reshape(-1, rest.shape[2])
            return out
        start = self._start(image.shape[1], image.shape[1] + rest.shape[1])
        return torch.cat([rest[:, :start], image, rest[:, start:]], dim=1)

    def _start(self, n: int, length: int) -> int:
        """Where the image span starts in a stream of `length` tokens: after the references before the image (at the
        head), or n tokens before the references after it (at the tail)."""
        before, after = self.image_margins() if self.image_margins is not None else (0, 0)
        start = before if self.at_head else length - n - after
        if start < 0 or start + n > length:
            raise ValueError(
                f"a joint stream of {length} tokens cannot hold {n} image tokens with {before} reference tokens "
                f"before and {after} after them; check `image_tokens` and `image_ids` in the adapter spec"
            )
        return start

    def _per_row(self, n: int, length: int, device: torch.device) -> Tensor | None:
        """[batch, length] bool, each row's image span [offset, offset + n), where spans start per row."""
        offset = self.image_offset() if self.image_offset is not None else None
        if offset is None:
            return None
        if int(offset.max()) + n > length:
            raise ValueError(
                f"a joint [text | image | padding] stream of {length} tokens cannot hold {n} image tokens after "
                f"texts of {offset.tolist()} tokens; check `text_mask` and `image_tokens` in the adapter spec"
            )
        position = torch.arange(length, device=device)
        start = offset.to(device)[:, None]
        return (position >= start) & (position < start + n)

    def _count(self, tokens: Tensor) -> int:
        n = self.image_count()
        if not n or n > tokens.shape[1]:
            layout = "[image | rest]" if self.at_head else "[text | image]"
            raise ValueError(
                f"a joint {layout} stream of {tokens.shape[1]} tokens but the call has {n} image tokens; "
                f"check `image_tokens` in the adapter spec"
            )
        return n


def _streams(output: Any) -> list[Any]:
    """A block's output tuple as a list (diffusers' `BaseOutput` by its fields, as `output[i]` reads it)."""
    return list(output.to_tuple()) if isinstance(output, BaseOutput) else list(output)


def _rebuilt(output: Any, streams: list[Any]) -> Any:
    """`output` with its streams replaced, in its own type."""
    if isinstance(output, BaseOutput):
        return type(output)(**dict(zip(output.keys(), streams, strict=True)))
    return type(output)(streams) if isinstance(output, list) else tuple(streams)


class BlockInputSite(Site):
    """`hook_resid_pre`: the image stream entering a block, read with a forward pre-hook."""

    def __init__(
        self,
        block: nn.Module,
        slot: ArgSlot,
        hook_point: DiTHookPoint,
        on_change: Callable[[bool], None],
        view: StreamView | None = None,
    ):
        super().__init__([hook_point], on_change)
        self.block, self.slot, self.hook_point = block, slot, hook_point
        self.stream = view if view is not None else StreamView()

    def _register(self) -> list[RemovableHandle]:
        return [self.block.register_forward_pre_hook(self._pre, with_kwargs=True)]

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict] | None:
        full = self.slot.get(args, kwargs)
        x = self.stream.view(full)  # [batch, tokens, d_model]
        y = self.hook_point(x)
        if y is x:
            return None
        return self.slot.replace(args, kwargs, self.stream.back(full, _checked(y, x, self.hook_point)))


@dataclass
class BlockStreams:
    """What a block returns and which hooks read it: the image stream at `image_index` (None: the output is
    the image tensor), optionally a text stream, and `hook_update` (image output minus the block's image input,
    read through `slot`)."""

    image_index: int | None
    image_hook: DiTHookPoint
    text_index: int | None = None
    text_hook: DiTHookPoint | None = None
    update_hook: DiTHookPoint | None = None
    slot: ArgSlot | None = None
    view: StreamView = field(default_factory=StreamView)


class BlockOutputSite(Site):
    """`hook_update`, `hook_resid_post` and `hook_txt_resid_post`: the streams a block returns.

    The update is read first, on the block's own output: `u = post - pre` with `pre` the input the block
    actually received (after any `hook_resid_pre` replacement); a replacement `u'` makes the output
    `post + (u' - u)`. `hook_resid_post` then sees that output.
    """

    def __init__(self, block: nn.Module, streams: BlockStreams, on_change: Callable[[bool], None]):
        hooks = [streams.image_hook, streams.text_hook, streams.update_hook]
        super().__init__([hook for hook in hooks if hook is not None], on_change)
        self.block, self.streams = block, streams

    def _register(self) -> list[RemovableHandle]:
        return [self.block.register_forward_hook(self._post, with_kwargs=True)]

    def _post(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        s = self.streams
        streams = [output] if s.image_index is None else _streams(output)
        image = 0 if s.image_index is None else s.image_index
        changed = False
        if s.update_hook is not None and s.update_hook.active:
            streams[image], changed = self._update(streams[image], s.slot.get(args, kwargs))
        x = s.view.view(streams[image])  # [batch, tokens, d_model]
        y = s.image_hook(x)
        if y is not x:
            streams[image], changed = s.view.back(streams[image], _checked(y, x, s.image_hook)), True
        if s.text_hook is not None and s.text_index is None:  # a joint stream: the text is the rest of it
            x = s.view.rest(streams[image])  # [batch, text_tokens, d_model]
            y = s.text_hook(x)
            if y is not x:
                streams[image], changed = s.view.back_rest(streams[image], _checked(y, x, s.text_hook)), True
        elif s.text_hook is not None and streams[s.text_index] is not None:  # SD3's last block returns no text
            x = streams[s.text_index]  # [batch, text_tokens, d_model]
            y = s.text_hook(x)
            if y is not x:
                streams[s.text_index], changed = _checked(y, x, s.text_hook), True
        if not changed:
            return None
        return streams[0] if s.image_index is None else _rebuilt(output, streams)

    def _update(self, full: Tensor, block_input: Tensor) -> tuple[Tensor, bool]:
        s = self.streams
        post, pre = s.view.view(full), s.view.view(block_input)
        if post.shape != pre.shape:
            raise ValueError(
                f"{s.update_hook.name}: the block's image output {tuple(post.shape)} and input {tuple(pre.shape)} "
                f"differ in shape, so it has no update; set `update: false` on its stack in the adapter spec"
            )
        u = post - pre  # [batch, tokens, d_model]
        v = s.update_hook(u)
        if v is u:
            return full, False
        return s.view.back(full, post + (_checked(v, u, s.update_hook) - u)), True


class SubmoduleSite(Site):
    """`<sub>.hook_out`: a submodule's image-token output (attention, MLP), before the block gates it."""

    def __init__(
        self,
        block: nn.Module,
        submodule: nn.Module,
        spec: SubmoduleSpec,
        slot: ArgSlot,
        hook_point: DiTHookPoint,
        on_change: Callable[[bool], None],
        image_count: Callable[[], int | None] | None = None,
        image_offset: Callable[[], Tensor | None] | None = None,
        image_margins: Callable[[], tuple[int, int]] | None = None,
    ):
        super().__init__([hook_point], on_change)
        self.block, self.submodule, self.spec, self.slot, self.hook_point = block, submodule, spec, slot, hook_point
        # `image_tail` / `image_head`: the submodule sees [text | image] / [image | rest]; its image tokens are as many
        # as the call has (`image_count`, a joint block) or as the block's own image input has (counted by a pre-hook).
        self._counts_input = spec.tokens != "all" and image_count is None
        self._input_tokens = 0
        count = (lambda: self._input_tokens) if self._counts_input else image_count
        self._view = StreamView(
            spec.layout,
            count if spec.tokens != "all" else None,
            spec.tokens == "image_head",
            image_offset,
            None if self._counts_input else image_margins,  # the call's references; a block input is all image
        )

    def _register(self) -> list[RemovableHandle]:
        handles = [self._register_on_submodule()]
        if self._counts_input:
            handles.append(self.block.register_forward_pre_hook(self._count_image_tokens, with_kwargs=True))
        return handles

    def _count_image_tokens(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self._input_tokens = self.slot.get(args, kwargs).shape[1]

    def _register_on_submodule(self) -> RemovableHandle:
        return self.submodule.register_forward_hook(self._post)

    def _post(self, module: nn.Module, args: tuple, output: Any) -> Any:
        index = self.spec.output_index
        full = output if index is None else output[index]  # [batch, tokens, d] (or [batch, d, h, w])
        x = self._view.view(full)
        y = self.hook_point(x)
        if y is x:
            return None
        y = self._view.back(full, _checked(y, x, self.hook_point))
        return y if index is None else (*output[:index], y, *output[index + 1 :])


class SubmoduleInputSite(SubmoduleSite):
    """`mlp.hook_in`: the image tokens a submodule receives, as the block computes them (after its norm and
    modulation), read and replaced with a forward pre-hook on the submodule's first forward argument."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # SubmoduleSite's arguments
        super().__init__(*args, **kwargs)
        first = next(iter(inspect.signature(self.submodule.forward).parameters))
        self.arg = ArgSlot(self.submodule, first)

    def _register_on_submodule(self) -> RemovableHandle:
        return self.submodule.register_forward_pre_hook(self._pre, with_kwargs=True)

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict] | None:
        full = self.arg.get(args, kwargs)  # [batch, tokens, d] (or [batch, d, h, w])
        x = self._view.view(full)
        y = self.hook_point(x)
        if y is x:
            return None
        return self.arg.replace(args, kwargs, self._view.back(full, _checked(y, x, self.hook_point)))
