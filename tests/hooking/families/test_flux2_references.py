"""FLUX.2 image editing: reference-image tokens share the image stream with the generated image (issue 17).

Flux2Pipeline and Flux2KleinPipeline call the transformer with `hidden_states = cat([latents, image_latents])` and
`img_ids = cat([latent_ids, image_latent_ids])`: the generated image's ids have T = 0, the references' T = 10, 20, ...
The double-stream blocks' image stream is then [image | references] and the single-stream blocks' sequence
[text | image | references]; Flux2KleinKVPipeline's first call puts the references first. References here are
independent of `adapters/flux2.yaml`: torch hooks on the blocks, cut at positions written out below.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers.models.transformers.transformer_flux2 import Flux2KVAttnProcessor, Flux2KVParallelSelfAttnProcessor

from sae_lens_dit import HookedDiT

TEXT, IMAGE, REFERENCE = 6, 16, 4  # the flux2_edit family: 6 text tokens, a generated 4x4 grid, a 2x2 reference
DOUBLE_HOOKS = ["hook_resid_post", "attn.hook_out", "mlp.hook_out"]
SINGLE_HOOKS = ["hook_resid_post", "attn.hook_out"]


def _block_outputs(seen_with, hooked: HookedDiT, inputs: dict, hooks: list) -> dict[str, torch.Tensor]:
    """What the first double and first single block return (after HookedDiT's hooks edit it): the double block's
    image stream and text stream, and the single block's joint sequence."""
    model = hooked.transformer
    return seen_with(
        hooked,
        inputs,
        hooks,
        [
            (model.transformer_blocks[0], lambda out: {"image": out[1], "text": out[0]}),
            (model.single_transformer_blocks[0], lambda out: {"joint": out}),
        ],
    )


def _zero(name: str) -> list:
    return [(name, lambda x, hook: torch.zeros_like(x))]


def _check_edits(seen_with, hooked: HookedDiT, inputs: dict, image: slice, references: slice) -> None:
    """Zeroing each image hook of block 0 and single block 0 changes the generated tokens of that block's output and
    leaves the reference tokens and the text bit-identical."""
    clean = _block_outputs(seen_with, hooked, inputs, [])
    for hook in DOUBLE_HOOKS:
        edited = _block_outputs(seen_with, hooked, inputs, _zero(f"blocks.0.{hook}"))
        assert not torch.equal(edited["image"][:, image], clean["image"][:, image]), hook
        assert torch.equal(edited["image"][:, references], clean["image"][:, references]), hook
        assert torch.equal(edited["text"], clean["text"]), hook
    joint_image = slice(TEXT + image.start, TEXT + image.stop)
    joint_references = slice(TEXT + references.start, TEXT + references.stop)
    for hook in SINGLE_HOOKS:
        edited = _block_outputs(seen_with, hooked, inputs, _zero(f"single_blocks.0.{hook}"))
        assert not torch.equal(edited["joint"][:, joint_image], clean["joint"][:, joint_image]), hook
        assert torch.equal(edited["joint"][:, joint_references], clean["joint"][:, joint_references]), hook
        assert torch.equal(edited["joint"][:, :TEXT], clean["joint"][:, :TEXT]), hook


def test_flux2_reference_tokens_are_not_recorded_and_stay_untouched(families, seen_with):
    family = families["flux2_edit"]
    hooked = HookedDiT(family.make())
    inputs = family.inputs(2)
    assert inputs["hidden_states"].shape[1] == IMAGE + REFERENCE
    context = hooked.read_call((), inputs)
    assert (context.image_tokens, context.image_margins) == (IMAGE, (0, REFERENCE))
    two_d = hooked.read_call((), {**inputs, "img_ids": inputs["img_ids"][0]})  # [tokens, 4], as the model reads it
    assert (two_d.image_tokens, two_d.image_margins) == (IMAGE, (0, REFERENCE))
    clean = _block_outputs(seen_with, hooked, inputs, [])
    names = ["blocks.0.hook_resid_post", "single_blocks.0.hook_resid_post"]
    with hooked.record(names) as rec, torch.no_grad():
        hooked(**inputs, return_dict=False)
    assert rec[names[0]].shape[-2] == rec[names[1]].shape[-2] == IMAGE
    assert torch.equal(rec[names[0]].reshape(2, IMAGE, -1), clean["image"][:, :IMAGE])
    assert torch.equal(rec[names[1]].reshape(2, IMAGE, -1), clean["joint"][:, TEXT : TEXT + IMAGE])
    _check_edits(seen_with, hooked, inputs, slice(0, IMAGE), slice(IMAGE, IMAGE + REFERENCE))


def test_flux2_kv_cache_extract_call_cuts_the_image_after_the_references(families, seen_with):
    """Flux2KleinKVPipeline's first call: [references | image] in hidden_states and img_ids, kv_cache_mode
    "extract" with the KV attention processors the pipeline sets; its later calls pass the image alone."""
    family = families["flux2_edit"]
    model = family.make()
    for block in model.transformer_blocks:
        block.attn.set_processor(Flux2KVAttnProcessor())
    for block in model.single_transformer_blocks:
        block.attn.set_processor(Flux2KVParallelSelfAttnProcessor())
    hooked = HookedDiT(model)
    edit = family.inputs(2)
    order = torch.cat([torch.arange(IMAGE, IMAGE + REFERENCE), torch.arange(IMAGE)])  # references first
    inputs = {
        **edit,
        "hidden_states": edit["hidden_states"][:, order],
        "img_ids": edit["img_ids"][:, order],
        "kv_cache_mode": "extract",
        "num_ref_tokens": REFERENCE,
    }
    context = hooked.read_call((), inputs)
    assert (context.image_tokens, context.image_margins) == (IMAGE, (REFERENCE, 0))
    clean = _block_outputs(seen_with, hooked, inputs, [])
    with torch.no_grad():
        _, cache = hooked.run_with_cache(**inputs, return_dict=False, names_filter=lambda name: "hook_resid" in name)
    assert torch.equal(cache["blocks.0.hook_resid_post"], clean["image"][:, REFERENCE:])
    assert torch.equal(cache["single_blocks.0.hook_resid_post"], clean["joint"][:, TEXT + REFERENCE :])
    _check_edits(seen_with, hooked, inputs, slice(REFERENCE, REFERENCE + IMAGE), slice(0, REFERENCE))
    with (
        torch.no_grad()
    ):  # the references attend only to themselves here: an edit leaves the cache the later calls read
        _, clean_cache = hooked.transformer(**inputs, return_dict=False)
        with hooked.hooks(fwd_hooks=_zero("blocks.0.hook_resid_post")):
            _, edited_cache = hooked.transformer(**inputs, return_dict=False)
    layers = zip(
        clean_cache.double_block_caches + clean_cache.single_block_caches,
        edited_cache.double_block_caches + edited_cache.single_block_caches,
        strict=True,
    )
    assert all(torch.equal(a, b) for clean, edited in layers for a, b in zip(clean.get(), edited.get(), strict=True))


def test_flux2_without_references_hooks_every_token_as_before(families):
    """No reference: every token has T = 0, so the hooks see what `image_tokens: sequence` with an uncut
    double-stream stack (the adapter before references were told apart) saw, bit for bit."""
    family = families["flux2"]
    hooked = HookedDiT(family.make())
    inputs = family.inputs(2)
    context = hooked.read_call((), inputs)
    assert (context.image_tokens, context.image_margins) == (IMAGE, (0, 0))
    double, single = hooked.spec.stacks
    uncut = [dataclasses.replace(sub, tokens="all") for sub in double.submodules]
    before = dataclasses.replace(
        hooked.spec,
        image_tokens="sequence",
        image_ids=None,
        stacks=(dataclasses.replace(double, tokens="all", submodules=tuple(uncut)), single),
    )
    with torch.no_grad():
        out, cache = hooked.run_with_cache(**inputs, return_dict=False)
        old_out, old_cache = HookedDiT(hooked.transformer, spec=before).run_with_cache(**inputs, return_dict=False)
    names = set(cache.keys())
    assert torch.equal(out[0], old_out[0]) and names == set(old_cache.keys()) and len(names) > 10
    for name in names:
        assert torch.equal(cache[name], old_cache[name]), name


def _shifted(ids: torch.Tensor) -> torch.Tensor:
    shifted = ids.clone()
    shifted[..., 0] += 10
    return shifted


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (  # the generated image's ids split around the reference's: no one run of T = 0
            lambda ids: torch.cat([ids[:, :8], ids[:, IMAGE:], ids[:, 8:IMAGE]], dim=1),
            r"position ids 'img_ids' have first coordinate 0 at tokens \[0, .*, 7, 12, .*\]; expected one contiguous",
        ),
        (_shifted, r"position ids 'img_ids' have first coordinate 0 at tokens \[\]"),
        (lambda ids: ids[:, :10], r"'img_ids' is \(2, 10, 4\); expected \[tokens, k\] or \[batch, tokens, k\]"),
        (lambda ids: ids[..., 0], r"'img_ids' is \(2, 20\); expected .* one row per token of the 20 latent tokens"),
    ],
)
def test_flux2_position_ids_that_mark_no_one_image_are_refused_naming_the_argument(families, ids, message):
    family = families["flux2_edit"]
    hooked = HookedDiT(family.make())
    inputs = family.inputs(2)
    with pytest.raises(ValueError, match=message):
        hooked.read_call((), {**inputs, "img_ids": ids(inputs["img_ids"])})
