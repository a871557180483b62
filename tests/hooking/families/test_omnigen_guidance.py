"""OmniGen's three-way guidance: with input images OmniGenPipeline triples the batch into [cond | uncond |
image_cond] (`torch.cat([latents] * 3)`, the input images' latents in `input_img_latents`); without them it doubles
it into [cond | uncond] and passes an empty `input_img_latents`.

Reference: the block's output read by an independent torch forward hook, cut to the image (the last 16 tokens of
OmniGen's [condition | time token | image] sequence), and the row labels written out by hand.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from sae_lens_dit import HookedDiT
from sae_lens_dit.conventions import COND, IMAGE_COND, UNCOND

IMAGE = 16  # 8x8 latents in 2x2 patches
HOOK = "blocks.0.hook_resid_post"


def _repeat(inputs: dict, b: int, parts: int) -> dict:
    """The pipeline's batch of `parts` copies: every per-row tensor repeated, the input images' latents as given."""
    return {k: torch.cat([v] * parts) if isinstance(v, Tensor) and v.shape[0] == b else v for k, v in inputs.items()}


def _block_image(seen_with, hooked: HookedDiT, inputs: dict) -> Tensor:
    """The first block's output, cut to the image."""
    return seen_with(hooked, inputs, [], [(hooked.transformer.layers[0], lambda out: {"out": out})])["out"][:, -IMAGE:]


def test_a_tripled_batch_with_input_images_is_labelled_cond_uncond_image_cond(families, seen_with):
    family = families["omnigen"]
    hooked = HookedDiT(family.make())
    b = 2
    inputs = _repeat(family.inputs(b), b, 3)
    context = hooked.read_call((), inputs)
    assert context.branch.tolist() == [COND, COND, UNCOND, UNCOND, IMAGE_COND, IMAGE_COND]
    assert context.sample.tolist() == [0, 1, 0, 1, 0, 1]

    clean = _block_image(seen_with, hooked, inputs)
    for branch, rows in (("cond", slice(0, 2)), ("uncond", slice(2, 4))):
        with hooked.record([HOOK], branch=branch) as rec, torch.no_grad():
            hooked(**inputs, return_dict=False)
        assert torch.equal(rec[HOOK].reshape(2, IMAGE, -1), clean[rows])  # the image_cond rows are not in either
    with hooked.record([HOOK], branch="both") as rec, torch.no_grad():
        hooked(**inputs, return_dict=False)
    assert rec.branch.tolist() == [[COND, COND, UNCOND, UNCOND, IMAGE_COND, IMAGE_COND]]
    assert torch.equal(rec[HOOK].reshape(6, IMAGE, -1), clean)


def test_text_to_image_and_distinct_samples_keep_their_labels(families):
    family = families["omnigen"]
    hooked = HookedDiT(family.make())
    text_only = {**_repeat(family.inputs(2), 2, 2), "input_img_latents": [], "input_image_sizes": {}}
    context = hooked.read_call((), text_only)  # [cond | uncond]: no input images, doubled
    assert context.branch.tolist() == [COND, COND, UNCOND, UNCOND] and context.sample.tolist() == [0, 1, 0, 1]
    distinct = family.inputs(6)  # six different samples with an input image: no guidance layout at all
    context = hooked.read_call((), distinct)
    assert context.branch.tolist() == [COND] * 6 and context.sample.tolist() == list(range(6))


def test_without_the_thirds_keys_a_tripled_batch_reads_as_cond_rows(families):
    """What the adapter reported before `thirds` (the silently wrong labels the keys fix)."""
    family = families["omnigen"]
    hooked = HookedDiT(family.make())
    spec = hooked.spec
    old = dataclasses.replace(spec, guidance=dataclasses.replace(spec.guidance, thirds=None, thirds_when=None))
    context = HookedDiT(family.make(), spec=old).read_call((), _repeat(family.inputs(2), 2, 3))
    assert context.branch.tolist() == [COND] * 6
