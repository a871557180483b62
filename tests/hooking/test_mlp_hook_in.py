"""`<prefix>.{i}.mlp.hook_in`: the MLP's input as the block computes it, checked against plain torch hooks.

Reference: an independent `register_forward_pre_hook` on the real MLP module (the test's own
description of where the image tokens sit, from `conftest.py`, not the adapter spec), and
the MLP module called by hand on a replaced input. Tolerance: none (same float ops in the same order).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from sae_lens_dit import HookedDiT


def _all(backbones: dict[str, Any]) -> list[Any]:
    """The conftest backbones (the `tokens: image_tail` MLP of CogVideoX and the other families is checked
    against a torch pre-hook in `tests/hooking/families/test_families.py`)."""
    return list(backbones.values())


def _with_mlp(backbones: dict[str, Any]) -> list[Any]:
    return [b for b in _all(backbones) if any("mlp" in subs for subs in b.submodules.values())]


def _first_arg(args: tuple, kwargs: dict[str, Any]) -> Tensor:
    return args[0] if args else next(iter(kwargs.values()))


def _mlp_sites(backbone: Any, model: nn.Module) -> list[tuple[str, nn.Module, Any]]:
    """(hook name, mlp module, full input -> image tokens view) for every block with an MLP."""
    sites = []
    for prefix, subs in backbone.submodules.items():
        if "mlp" not in subs:
            continue
        attribute, _, image_part = subs["mlp"]
        for i, block in enumerate(backbone.blocks(model, prefix)):
            sites.append((f"{prefix}.{i}.mlp.hook_in", getattr(block, attribute), image_part))
    return sites


def _replace(x: Tensor) -> Tensor:
    return x * -0.5 + 0.25


def test_every_adapter_with_mlp_hook_out_gets_mlp_hook_in(backbones):
    for backbone in _all(backbones):
        hooked = HookedDiT(backbone.make())
        outs = {name.removesuffix(".hook_out") for name in hooked.hook_names if name.endswith("mlp.hook_out")}
        ins = {name.removesuffix(".hook_in") for name in hooked.hook_names if name.endswith("mlp.hook_in")}
        assert outs == ins, backbone.name


def _check_capture(backbone: Any, torch_hooks_left: Any) -> None:
    model = backbone.make()
    hooked = HookedDiT(model)
    inputs = backbone.inputs(2)
    sites = _mlp_sites(backbone, model)
    seen: dict[str, Tensor] = {}
    handles = [
        module.register_forward_pre_hook(
            lambda m, args, kwargs, name=name, part=part: seen.__setitem__(name, part(_first_arg(args, kwargs))),
            with_kwargs=True,
        )
        for name, module, part in sites
    ]
    try:
        with torch.no_grad():
            _, cache = hooked.run_with_cache(**inputs, names_filter=[name for name, _, _ in sites])
    finally:
        for handle in handles:
            handle.remove()
    assert sites and set(cache) == set(seen), backbone.name
    for name in seen:
        assert cache[name].ndim == 3 and cache[name].shape[0] == 2, (backbone.name, name)
        assert torch.equal(cache[name], seen[name]), (backbone.name, name)
    assert torch_hooks_left(model) == []


def test_hook_in_equals_an_independent_pre_hook_capture(backbones, torch_hooks_left):
    for backbone in _with_mlp(backbones):
        _check_capture(backbone, torch_hooks_left)


def _check_replace(backbone: Any, block: int, torch_hooks_left: Any) -> None:
    model = backbone.make()
    hooked = HookedDiT(model)
    inputs = backbone.inputs(2)
    sites = _mlp_sites(backbone, model)
    name, mlp, part = sites[block % len(sites)]
    got: dict[str, Any] = {}

    def pre(m, args, kwargs):  # registered before HookedDiT's: sees the block's own (clean) input
        got["clean_in"] = _first_arg(args, kwargs)

    def post(m, args, output):
        got["out"] = output

    handles = [mlp.register_forward_pre_hook(pre, with_kwargs=True)]
    try:
        with torch.no_grad(), hooked.hooks(fwd_hooks=[(name, lambda x, hook: _replace(x))]):
            assert mlp._forward_pre_hooks  # the site is installed while the hook is active
            handles.append(mlp.register_forward_hook(post))
            out = backbone.run(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    replaced = got["clean_in"].clone()
    view = part(replaced)
    view.copy_(_replace(view))  # part() returns a view of the MLP's own input layout
    with torch.no_grad():
        by_hand = mlp(replaced)
    assert torch.equal(got["out"], by_hand), (backbone.name, name)
    assert not torch.equal(out, backbone.run(model, inputs)), (backbone.name, name)
    assert torch_hooks_left(model) == []


@pytest.mark.parametrize("block", [0, -1])
def test_replacing_hook_in_changes_the_mlp_output_as_calling_the_mlp_by_hand(backbones, torch_hooks_left, block):
    for backbone in _with_mlp(backbones):
        _check_replace(backbone, block, torch_hooks_left)


def test_recording_the_pair_keeps_the_same_rows_and_tokens(backbones):
    """`record([mlp.hook_in, mlp.hook_out])` keeps the same token positions for both hooks: each kept output
    row is the MLP applied to the kept input row (DiT's MLP acts per token)."""
    backbone = backbones["dit"]
    model = backbone.make()
    hooked = HookedDiT(model)
    names = ["blocks.1.mlp.hook_in", "blocks.1.mlp.hook_out"]
    with hooked.record(names, tokens_per_image=5) as rec:
        for _ in range(2):
            backbone.run(model, backbone.inputs(3))
    x, y = rec[names[0]], rec[names[1]]  # [calls, batch, tokens kept, d]
    assert x.shape[:3] == y.shape[:3] == (2, 3, 5)
    with torch.no_grad():
        torch.testing.assert_close(model.transformer_blocks[1].ff(x), y, rtol=0, atol=1e-6)
