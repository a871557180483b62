"""The hook functions `HookedDiT.saes()` splices SAEs and transcoders in with.

Why a module of its own: an SAE replaces one activation with its reconstruction, a transcoder
replaces a sublayer's output with its reconstruction *from the sublayer's input*, so it needs two
hooks that cooperate within one forward call (the input hook keeps the input, the output hook
uses it). Both kinds get each batch row's timestep (each token's, where the call has per-token or
per-frame timesteps: `CallContext.timestep_at`) when they are timestep-conditioned (TIDE), and
both may keep the model exact with an error term. SAELens's conventions decide which is which
(`HookedSAETransformer.add_sae`): `cfg.metadata.hook_name` is the hook an SAE reads, and
`cfg.metadata.hook_name_out`, when set and different, the hook a transcoder writes, e.g.
`blocks.{i}.mlp.hook_in` -> `blocks.{i}.mlp.hook_out`. No SAE class is imported: SAELens's own
transcoders splice the same way as TIDE's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from sae_lens import SAE
from sae_lens.saes.sae import _disable_hooks
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from sae_lens_dit.conventions import TimestepConditioned, timestep_scope
from sae_lens_dit.hooking.call_context import CallContext

Hook = Callable[[Tensor, HookPoint], Tensor | None]


def hook_pair(sae: SAE[Any]) -> tuple[str, str]:
    """(hook the SAE reads, hook it writes): equal for an SAE, (hook_name, hook_name_out) for a transcoder."""
    metadata = sae.cfg.metadata
    return metadata.hook_name, metadata.hook_name_out or metadata.hook_name


def splice_hooks(
    saes: Sequence[SAE[Any]], use_error_term: bool, context: Callable[[], CallContext]
) -> list[tuple[str, Hook]]:
    """(hook name, hook function) pairs that splice `saes` in, in order; `context()` is the call in progress."""
    hooks: list[tuple[str, Hook]] = []
    for sae in saes:
        read, write = hook_pair(sae)
        if read == write:
            hooks.append((read, _sae_hook(sae, use_error_term, context)))
        else:
            kept = _KeptInput(sae, read)
            hooks += [(read, kept.keep), (write, _transcoder_hook(sae, kept, use_error_term, context))]
    return hooks


def _reconstruct(
    sae: SAE[Any], x: Tensor, like: Tensor, use_error_term: bool, context: Callable[[], CallContext]
) -> Tensor:
    """The SAE's output for x, in `like`'s device and dtype; with the error term, `like + (sae(x) - sae_clean(x))`,
    where the clean pass runs with the SAE's own hook points bypassed."""
    x = x.to(sae.device, sae.dtype)
    with _timestep_scope(sae, context, like):
        out = sae(x)
        if use_error_term:
            with torch.no_grad(), _disable_hooks(sae):
                clean = sae(x)
    if use_error_term:
        return like.detach() + (out - clean).to(like.device, like.dtype)
    return out.to(like.device, like.dtype)


def _sae_hook(sae: SAE[Any], use_error_term: bool, context: Callable[[], CallContext]) -> Hook:
    def splice(activation: Tensor, hook: HookPoint) -> Tensor:  # activation: [batch, tokens, d]
        _check_width(activation, sae.cfg.d_in, "d_in", sae, hook)
        return _reconstruct(sae, activation, activation, use_error_term, context)

    return splice


class _KeptInput:
    """The transcoder's input, kept by the input hook until the output hook of the same block call uses it."""

    def __init__(self, sae: SAE[Any], name: str):
        self.sae, self.name = sae, name
        self.value: Tensor | None = None

    def keep(self, activation: Tensor, hook: HookPoint) -> None:  # [batch, tokens, d_in]
        _check_width(activation, self.sae.cfg.d_in, "d_in", self.sae, hook)
        self.value = activation

    def take(self, hook: HookPoint) -> Tensor:
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError(
                f"transcoder writing {hook.name} found no input from {self.name} in this call: its input hook must "
                f"run before its output hook in the same block (set cfg.metadata.hook_name to the sublayer's input)"
            )
        return value


def _transcoder_hook(sae: SAE[Any], kept: _KeptInput, use_error_term: bool, context: Callable[[], CallContext]) -> Hook:
    def splice(activation: Tensor, hook: HookPoint) -> Tensor:  # activation: [batch, tokens, d_out]
        x = kept.take(hook)  # [batch, tokens, d_in]
        _check_width(activation, getattr(sae.cfg, "d_out", sae.cfg.d_in), "d_out", sae, hook)
        if x.shape[:-1] != activation.shape[:-1]:
            raise ValueError(
                f"transcoder input {kept.name} {tuple(x.shape)} and output {hook.name} {tuple(activation.shape)} "
                f"differ in batch or tokens; a transcoder needs one input per output token"
            )
        return _reconstruct(sae, x, activation, use_error_term, context)

    return splice


def _check_width(activation: Tensor, width: int, what: str, sae: SAE[Any], hook: HookPoint) -> None:
    if activation.shape[-1] != width:
        raise ValueError(
            f"SAE with {what}={width} spliced at {hook.name}, whose activations are "
            f"{activation.shape[-1]}-dimensional: use an SAE trained on this model's {hook.name}"
        )


def _timestep_scope(sae: SAE[Any], context: Callable[[], CallContext], activation: Tensor) -> Any:
    if not isinstance(sae, TimestepConditioned):
        return nullcontext()
    timestep = context().timestep_at(activation.shape[1])  # [batch], or [batch, tokens] (per-token timesteps)
    if timestep is None:
        raise ValueError(
            f"SAE at {sae.cfg.metadata.hook_name} needs a timestep (it is timestep-conditioned) but the "
            f"transformer was called without one; pass `timestep` to the transformer"
        )
    return timestep_scope(sae, timestep.to(activation.device))
