"""Where a spec's blocks are, the HookPoints each block gets, and where they hang in HookedDiT's own tree.

Why a module of its own: diffusion transformers keep their blocks in one list (`transformer_blocks`),
UNets in nested lists with gaps (`down_blocks.{i}.attentions.{j}`, where some levels have no attention,
and each of those holds its own `transformer_blocks.{k}`). `resolve_blocks` turns a stack's module path
(`*` = every index of a list) into (hook prefix, block) pairs, and `place` hangs each block's HookPoints
at that prefix, so that TransformerLens names them `down.1.0.hook_resid_post` without HookedDiT ever
owning, wrapping or renaming a module of the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from torch import nn

from sae_lens_dit.hooking.hook_sites import DiTHookPoint
from sae_lens_dit.hooking.spec_fields import AdapterSpecError

if TYPE_CHECKING:
    from sae_lens_dit.hooking.adapters import AdapterSpec, StackSpec


def resolve_blocks(spec: AdapterSpec, stack: StackSpec, root: nn.Module) -> list[tuple[str, nn.Module]]:
    """(hook prefix, block) for every block `stack.module` reaches from `root`, in module order. A stack that reaches
    no block raises, naming the ModuleLists the model does have, unless the stack is `optional`.
    """
    parts = stack.module.split(".")
    found: list[tuple[tuple[int, ...], nn.Module]] = []

    def walk(module: Any, depth: int, indices: tuple[int, ...]) -> None:
        if depth == len(parts):
            if isinstance(module, nn.ModuleList):  # a path ending at a list walks its items
                found.extend((indices + (i,), child) for i, child in enumerate(module))
            elif indices and isinstance(module, nn.Module):
                found.append((indices, module))
            return
        if parts[depth] == "*":
            if isinstance(module, nn.ModuleList):
                for i, child in enumerate(module):
                    walk(child, depth + 1, indices + (i,))
            return
        walk(getattr(module, parts[depth], None), depth + 1, indices)

    walk(root, 0, ())
    if not found and not stack.optional:
        lists = [name for name, child in root.named_modules() if isinstance(child, nn.ModuleList)][:12]
        raise AdapterSpecError(
            f"adapter {spec.name!r}: no ModuleList at {stack.module!r} of {type(root).__name__}; found ModuleLists "
            f"{lists}; fix {spec.source}"
        )
    return [(hook_prefix(stack.prefix, indices, spec), block) for indices, block in found]


def hook_prefix(template: str, indices: tuple[int, ...], spec: Any) -> str:
    """`template` with each `*` replaced by the next index and the remaining indices appended.

    >>> hook_prefix("down", (1, 0), None), hook_prefix("down.*.*.blocks", (1, 0, 2), None)
    ('down.1.0', 'down.1.0.blocks.2')
    """
    rest = list(indices)
    parts = []
    for part in template.split("."):
        if part == "*":
            if not rest:
                raise AdapterSpecError(
                    f"adapter {spec.name!r}: prefix {template!r} has more `*` than its module path has indices; "
                    f"fix {spec.source}"
                )
            part = str(rest.pop(0))
        parts.append(part)
    return ".".join(parts + [str(i) for i in rest])


def attach(root: nn.Module, entries: list[tuple[str, nn.Module]]) -> None:
    """Hang each module at its dotted path under `root`, creating plain containers on the way.

    A container whose children are numbered 0, 1, 2, ... is a ModuleList (so `hooked.blocks[3]` works);
    one with gaps is a ModuleDict (`hooked.down["1"]` where a UNet's down block 0 has no attention). A
    path may run through a module placed by another entry (a UNet block's inner `blocks`).
    """
    tree: dict[str, list] = {}  # name -> [module or None, children]
    for path, module in entries:
        node = tree
        *parents, leaf = path.split(".")
        for name in parents:
            node = node.setdefault(name, [None, {}])[1]
        slot = node.setdefault(leaf, [None, {}])
        if slot[0] is not None:
            raise AdapterSpecError(f"two blocks resolve to the hook prefix {path!r}; give their stacks other prefixes")
        slot[0] = module
    for name, (module, children) in tree.items():
        root.add_module(name, _make(module, children))


def _make(module: nn.Module | None, children: dict[str, list]) -> nn.Module:
    """`module` (or a new container when None) with its children hung under it."""
    if module is None:
        if list(children) == [str(i) for i in range(len(children))]:
            return nn.ModuleList(_make(child, grandchildren) for child, grandchildren in children.values())
        module = nn.ModuleDict()
    for name, (child, grandchildren) in children.items():
        module.add_module(name, _make(child, grandchildren))
    return module


def submodule_at(block: nn.Module, path: str, spec: AdapterSpec) -> nn.Module | None:
    """The module at a dotted attribute path of a block (None where the block has it set to None)."""
    current: Any = block
    for part in path.split("."):
        if not hasattr(current, part):
            children = [name for name, _ in block.named_children()]
            raise AdapterSpecError(
                f"adapter {spec.name!r}: {type(block).__name__} has no submodule {path!r}; its children are "
                f"{children}; fix {spec.source}"
            )
        current = getattr(current, part)
    if current is not None and not isinstance(current, nn.Module):
        raise AdapterSpecError(
            f"adapter {spec.name!r}: {type(block).__name__}.{path} is not a module; fix {spec.source}"
        )
    return current


def block_width(block: nn.Module, stack: StackSpec, spec: AdapterSpec) -> int | None:
    """The width the stack's `width` attribute gives this block; None = the transformer's inner dimension."""
    if stack.width is None:
        return None
    width = getattr(block, stack.width, None)
    if not isinstance(width, int):
        raise AdapterSpecError(
            f"adapter {spec.name!r}: {type(block).__name__}.{stack.width} is {width!r}, not a width; point "
            f"`width` at an int attribute of the block in {spec.source}"
        )
    return width


INPUT_HOOKED = ("mlp",)
"""Submodule hooks that also get `hook_in` (the submodule's input, for transcoders)."""


class SubmoduleHooks(nn.Module):
    def __init__(self, with_input: bool) -> None:
        super().__init__()
        if with_input:
            self.hook_in = DiTHookPoint()  # [batch, tokens, d] image tokens, after the block's norm and modulation
        self.hook_out = DiTHookPoint()  # [batch, tokens, d] image tokens, before gating


class BlockHooks(nn.Module):
    """The HookPoints of one real block; a sibling of the block, never a wrapper around it."""

    def __init__(self, has_text: bool, submodules: Iterable[str], has_update: bool = False):
        super().__init__()
        self.hook_resid_pre = DiTHookPoint()  # [batch, tokens, d_model]
        self.hook_resid_post = DiTHookPoint()  # [batch, tokens, d_model]
        if has_update:
            self.hook_update = DiTHookPoint()  # [batch, tokens, d_model]: hook_resid_post - hook_resid_pre
        if has_text:
            self.hook_txt_resid_post = DiTHookPoint()  # [batch, text_tokens, d_model]
        for name in submodules:
            self.add_module(name, SubmoduleHooks(with_input=name in INPUT_HOOKED))


def own_hook_points(hooks: BlockHooks) -> Iterator[DiTHookPoint]:
    """The HookPoints of one block (its own and its submodules'), not those of blocks nested under it."""
    for child in hooks.children():
        if isinstance(child, DiTHookPoint):
            yield child
        elif isinstance(child, SubmoduleHooks):
            yield from (point for point in child.children() if isinstance(point, DiTHookPoint))
