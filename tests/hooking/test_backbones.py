"""HookedDiT on every supported backbone, checked against plain torch hooks on the real modules.

Tolerance: none. Hooked and reference runs perform the same float operations in the same order
on CPU, so every comparison is exact (torch.equal).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sae_lens_dit import HookedDiT
from sae_lens_dit.hooking.adapters import adapter_for


def _block_streams(backbone: Any, output: Any) -> tuple[Tensor, Tensor | None]:
    if backbone.image_index is None:
        return output, None
    return output[backbone.image_index], output[backbone.text_index]


def _capture_blocks(backbone: Any, model: nn.Module, inputs: dict) -> dict[str, Tensor | None]:
    """Block inputs / outputs / submodule outputs seen by independent torch hooks, by hook name."""
    seen: dict[str, Tensor | None] = {}
    handles = []
    for prefix in backbone.stacks:
        for i, block in enumerate(backbone.blocks(model, prefix)):

            def pre(module, args, kwargs, key=f"{prefix}.{i}"):
                seen[f"{key}.hook_resid_pre"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

            def post(module, args, output, key=f"{prefix}.{i}"):
                image, text = _block_streams(backbone, output)
                seen[f"{key}.hook_resid_post"], seen[f"{key}.hook_txt_resid_post"] = image, text
                seen[f"{key}.hook_update"] = image - seen[f"{key}.hook_resid_pre"]  # output minus input

            handles += [block.register_forward_pre_hook(pre, with_kwargs=True), block.register_forward_hook(post)]
            for suffix, (attribute, index, image_part) in backbone.submodules.get(prefix, {}).items():
                module = getattr(block, attribute)
                if module is None:
                    continue

                def sub(module, args, output, key=f"{prefix}.{i}.{suffix}.hook_out", index=index, part=image_part):
                    seen[key] = part(output if index is None else output[index])

                handles.append(module.register_forward_hook(sub))
                if suffix == "mlp":  # mlp.hook_in: the MLP's own (first) input argument

                    def sub_in(module, args, kwargs, key=f"{prefix}.{i}.mlp.hook_in", part=image_part):
                        seen[key] = part(args[0] if args else next(iter(kwargs.values())))

                    handles.append(module.register_forward_pre_hook(sub_in, with_kwargs=True))
    try:
        backbone.run(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_adapter_is_chosen_from_the_class(backbone):
    model = backbone.make()
    expected = {"sd3.5": "sd3"}.get(backbone.name, backbone.name)
    assert adapter_for(model).name == expected
    assert HookedDiT(model).spec.name == expected


def test_idle_hooked_model_leaves_the_transformer_untouched(backbone, torch_hooks_left):
    model = backbone.make()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    names_before = {id(module): module.__dict__.get("name", "<unset>") for module in model.modules()}
    inputs = backbone.inputs(2)
    reference = backbone.run(model, inputs)

    hooked = HookedDiT(model)
    with torch.no_grad():
        out = hooked(**inputs, return_dict=False)[0]
    assert torch.equal(out, reference)
    assert torch.equal(backbone.run(model, inputs), reference)
    assert torch_hooks_left(model) == []
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    # TransformerLens setup() names every module it walks: none of the transformer's may change.
    assert {id(module): module.__dict__.get("name", "<unset>") for module in model.modules()} == names_before


def test_caching_every_hook_keeps_the_output_exact(backbone, torch_hooks_left):
    model = backbone.make()
    hooked = HookedDiT(model)
    inputs = backbone.inputs(2)
    reference = backbone.run(model, inputs)
    with torch.no_grad():
        out, cache = hooked.run_with_cache(**inputs, return_dict=False)
    assert torch.equal(out[0], reference)
    assert set(cache) == set(hooked.hook_names)
    assert torch_hooks_left(model) == []


def test_hook_points_see_what_independent_torch_hooks_see(backbone):
    model = backbone.make()
    hooked = HookedDiT(model)
    inputs = backbone.inputs(2)
    seen = _capture_blocks(backbone, model, inputs)
    with torch.no_grad():
        _, cache = hooked.run_with_cache(**inputs)
    for name in hooked.hook_names:
        assert seen[name] is not None, name
        assert torch.equal(cache[name], seen[name]), name
    expected = {name for name, value in seen.items() if value is not None}
    assert set(hooked.hook_names) == expected


def _replace(x: Tensor) -> Tensor:
    return x * -0.5 + 0.25


def _reference_with_replaced(backbone: Any, model: nn.Module, inputs: dict, name: str) -> Tensor:
    """The model output with the activation `name` replaced by hand through a plain torch hook."""
    prefix, index, rest = name.split(".", 2)
    block = backbone.blocks(model, prefix)[int(index)]
    if rest == "hook_resid_post":

        def hook(module, args, output):
            if backbone.image_index is None:
                return _replace(output)
            streams = list(output)
            streams[backbone.image_index] = _replace(streams[backbone.image_index])
            return tuple(streams)

        handle = block.register_forward_hook(hook)
    elif rest == "hook_resid_pre":

        def pre(module, args, kwargs):
            if "hidden_states" in kwargs:
                return args, {**kwargs, "hidden_states": _replace(kwargs["hidden_states"])}
            return (_replace(args[0]), *args[1:]), kwargs

        handle = block.register_forward_pre_hook(pre, with_kwargs=True)
    else:  # "<sub>.hook_out": replace the image tokens of the submodule output, wherever they sit
        attribute, index, image_part = backbone.submodules[prefix][rest.split(".")[0]]

        def sub(module, args, output):
            full = (output if index is None else output[index]).clone()
            view = image_part(full)
            view.copy_(_replace(view))  # image_part returns a view of `full`
            return full if index is None else (*output[:index], full, *output[index + 1 :])

        handle = getattr(block, attribute).register_forward_hook(sub)
    try:
        return backbone.run(model, inputs)
    finally:
        handle.remove()


def _names_to_replace(backbone: Any, hooked: HookedDiT) -> list[str]:
    names = []
    for prefix, attribute in backbone.stacks.items():
        last = len(getattr(hooked.transformer, attribute)) - 1
        names += [f"{prefix}.{last}.hook_resid_post", f"{prefix}.0.hook_resid_pre"]
        names += [f"{prefix}.0.{suffix}.hook_out" for suffix in backbone.submodules.get(prefix, {})]
    return [name for name in names if name in hooked.hook_dict]


def test_replacing_hook_equals_replacing_by_hand(backbone, torch_hooks_left):
    model = backbone.make()
    hooked = HookedDiT(model)
    inputs = backbone.inputs(2)
    clean = backbone.run(model, inputs)
    for name in _names_to_replace(backbone, hooked):
        expected = _reference_with_replaced(backbone, model, inputs, name)
        with torch.no_grad():
            out = hooked.run_with_hooks(**inputs, return_dict=False, fwd_hooks=[(name, lambda x, hook: _replace(x))])
        assert torch.equal(out[0], expected), name
        assert not torch.equal(out[0], clean), name
    assert torch_hooks_left(model) == []


def test_zero_ablation_changes_the_output(backbone):
    model = backbone.make()
    hooked = HookedDiT(model)
    inputs = backbone.inputs(2)
    clean = backbone.run(model, inputs)
    last_text = f"single_blocks.{len(getattr(model, 'single_transformer_blocks', [])) - 1}.hook_txt_resid_post"
    for name in hooked.hook_names:
        if name == last_text:
            continue  # Flux discards the last single-stream block's text output itself
        with torch.no_grad():
            out = hooked.run_with_hooks(
                **inputs, return_dict=False, fwd_hooks=[(name, lambda x, hook: torch.zeros_like(x))]
            )
        assert not torch.equal(out[0], clean), name
