"""FLUX.3 image-to-image: the reference images' tokens (`image_cond_hidden_states`) share the joint single blocks'
content stream with the generated image, after it: [image | references], and [text | image | references] inside
their attention and feed-forward (diffusers' Flux3Transformer2DModel). `reference_tokens:` in adapters/flux3.yaml
steps over them. References here are torch forward hooks on the blocks, cut at positions written out below.
"""

from __future__ import annotations

import torch

from sae_lens_dit import HookedDiT

TEXT, IMAGE, REFERENCE = 6, 16, 8  # the flux3 family: 6 text tokens, a 4x4 grid; 8 reference tokens added here
SINGLE = ["hook_resid_post", "attn.hook_out", "mlp.hook_out"]


def _i2i(family, b: int = 2) -> dict:
    return {
        **family.inputs(b),
        "image_cond_hidden_states": torch.randn(b, REFERENCE, 4),
        "image_cond_ids": torch.randn(REFERENCE, 4),
    }


def _outputs(seen_with, hooked: HookedDiT, inputs: dict, hooks: list) -> dict[str, torch.Tensor]:
    """The first single block's content and text outputs and its attention / feed-forward outputs over
    [text | content], after HookedDiT's hooks edited them."""
    block = hooked.transformer.single_transformer_blocks[0]
    taps = [
        (block, lambda out: {"text": out[0], "content": out[1]}),
        (block.attn, lambda out: {"attn": out}),
        (block.ff, lambda out: {"mlp": out}),
    ]
    return seen_with(hooked, inputs, hooks, taps)


def test_flux3_records_the_image_and_not_its_references(families, seen_with):
    family = families["flux3"]
    hooked = HookedDiT(family.make())
    inputs = _i2i(family)
    context = hooked.read_call((), inputs)
    assert (context.image_tokens, context.image_margins) == (IMAGE, (0, REFERENCE))
    clean = _outputs(seen_with, hooked, inputs, [])
    assert clean["content"].shape[1] == IMAGE + REFERENCE and clean["attn"].shape[1] == TEXT + IMAGE + REFERENCE
    names = [f"single_blocks.0.{hook}" for hook in SINGLE]
    with torch.no_grad():
        _, cache = hooked.run_with_cache(**inputs, names_filter=names)
    assert torch.equal(cache[names[0]], clean["content"][:, :IMAGE])
    assert torch.equal(cache[names[1]], clean["attn"][:, TEXT : TEXT + IMAGE])
    assert torch.equal(cache[names[2]], clean["mlp"][:, TEXT : TEXT + IMAGE])


def test_flux3_edits_of_the_image_leave_text_and_references_untouched(families, seen_with):
    family = families["flux3"]
    hooked = HookedDiT(family.make())
    inputs = _i2i(family)
    clean = _outputs(seen_with, hooked, inputs, [])
    zero = [("single_blocks.0.hook_resid_post", lambda act, hook: torch.zeros_like(act))]
    edited = _outputs(seen_with, hooked, inputs, zero)
    assert torch.equal(edited["content"][:, :IMAGE], torch.zeros_like(clean["content"][:, :IMAGE]))
    assert torch.equal(edited["content"][:, IMAGE:], clean["content"][:, IMAGE:])  # the references
    assert torch.equal(edited["text"], clean["text"])
    for sub in ("attn", "mlp"):
        edited = _outputs(seen_with, hooked, inputs, [(f"single_blocks.0.{sub}.hook_out", lambda act, hook: act * 0)])
        out = edited[sub]
        assert torch.equal(out[:, TEXT : TEXT + IMAGE], torch.zeros_like(out[:, TEXT : TEXT + IMAGE])), sub
        assert torch.equal(out[:, :TEXT], clean[sub][:, :TEXT]), sub
        assert torch.equal(out[:, TEXT + IMAGE :], clean[sub][:, TEXT + IMAGE :]), sub


def test_flux3_without_references_hooks_the_whole_content_as_before(families, seen_with):
    family = families["flux3"]
    hooked = HookedDiT(family.make())
    inputs = family.inputs(2)
    assert hooked.read_call((), inputs).image_margins == (0, 0)
    clean = _outputs(seen_with, hooked, inputs, [])
    names = [f"single_blocks.0.{hook}" for hook in SINGLE]
    with torch.no_grad():
        _, cache = hooked.run_with_cache(**inputs, names_filter=names)
    assert torch.equal(cache[names[0]], clean["content"])
    assert torch.equal(cache[names[1]], clean["attn"][:, TEXT:])
