"""JoyImage Edit and Edit Plus: the image being generated shares the image stream with reference images, first.

JoyImageEditPipeline passes [batch, items, channels, 1, height, width] latents, the references first and the image
being generated last; the transformer moves the generated image to the front and flattens the items into one
image stream, [generated | references]: `adapters/joyimage.yaml` cuts its head (one item's patches).
JoyImageEditPlusPipeline passes patch rows [target | references | padding] whose lengths `shape_list` gives per
sample, the target first: `adapters/joyimage_edit_plus.yaml` cuts the target's tokens. References here are torch
forward hooks on the first block, cut at positions written out below.
"""

from __future__ import annotations

import pytest
import torch

from sae_lens_dit import HookedDiT

IMAGE, REFERENCES = 16, 2  # the joyimage family: 8x8 latents in 2x2 patches per item; two reference images here
HOOKS = ["hook_resid_post", "attn.hook_out", "mlp.hook_out"]


def _edit(family, b: int = 2) -> dict:
    return {**family.inputs(b), "hidden_states": torch.randn(b, REFERENCES + 1, 4, 1, 8, 8)}


def _edit_plus(family) -> dict:
    """Two rows: the 4x4 target, then a 4x4 reference (row 0) or a 2x2 one and 12 padding patches (row 1)."""
    return {
        **family.inputs(2),
        "hidden_states": torch.randn(2, 2 * IMAGE, 4, 1, 2, 2),
        "shape_list": [[(1, 4, 4), (1, 4, 4)], [(1, 4, 4), (1, 2, 2)]],
    }


def _outputs(seen_with, hooked: HookedDiT, inputs: dict, hooks: list) -> dict[str, torch.Tensor]:
    """The first block's image and text outputs and its attention / image feed-forward outputs, after HookedDiT's
    hooks edited them."""
    block = hooked.transformer.double_blocks[0]
    taps = [
        (block, lambda out: {"image": out[0], "text": out[1]}),
        (block.attn, lambda out: {"attn": out[0]}),
        (block.img_mlp, lambda out: {"mlp": out}),
    ]
    return seen_with(hooked, inputs, hooks, taps)


@pytest.mark.parametrize("name", ["joyimage", "joyimage_edit_plus"])
def test_joyimage_records_the_generated_image_and_not_the_references(families, seen_with, name):
    hooked = HookedDiT(families[name].make())
    inputs = _edit(families[name]) if name == "joyimage" else _edit_plus(families[name])
    assert hooked.read_call((), inputs).image_tokens == IMAGE
    clean = _outputs(seen_with, hooked, inputs, [])
    assert clean["image"].shape[1] == ((REFERENCES + 1) * IMAGE if name == "joyimage" else 2 * IMAGE)
    names = [f"blocks.0.{hook}" for hook in HOOKS]
    with torch.no_grad():
        _, cache = hooked.run_with_cache(**inputs, names_filter=names)
    for name, key in zip(names, ("image", "attn", "mlp"), strict=True):
        assert torch.equal(cache[name], clean[key][:, :IMAGE]), name


@pytest.mark.parametrize("name", ["joyimage", "joyimage_edit_plus"])
def test_joyimage_edits_leave_the_references_and_the_text_untouched(families, seen_with, name):
    hooked = HookedDiT(families[name].make())
    inputs = _edit(families[name]) if name == "joyimage" else _edit_plus(families[name])
    clean = _outputs(seen_with, hooked, inputs, [])
    for name, key in zip([f"blocks.0.{hook}" for hook in HOOKS], ("image", "attn", "mlp"), strict=True):
        edited = _outputs(seen_with, hooked, inputs, [(name, lambda act, hook: torch.zeros_like(act))])
        assert torch.equal(edited[key][:, :IMAGE], torch.zeros_like(edited[key][:, :IMAGE])), name
        assert torch.equal(edited[key][:, IMAGE:], clean[key][:, IMAGE:]), name  # the references (and padding)
    edited = _outputs(seen_with, hooked, inputs, [("blocks.0.hook_resid_post", lambda act, hook: act * 0)])
    assert torch.equal(edited["text"], clean["text"])


def test_joyimage_without_references_hooks_every_token_as_before(families, seen_with):
    family = families["joyimage"]
    hooked = HookedDiT(family.make())
    inputs = family.inputs(2)  # one item: text-to-image
    clean = _outputs(seen_with, hooked, inputs, [])
    with torch.no_grad():
        _, cache = hooked.run_with_cache(**inputs, names_filter="blocks.0.hook_resid_post")
    assert torch.equal(cache["blocks.0.hook_resid_post"], clean["image"])
