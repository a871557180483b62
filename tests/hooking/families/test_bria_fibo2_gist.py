"""Bria FIBO 2's main blocks: the stream is [gist | image | context images], or [image | context images | gist] when
the batch's prompts get different gist counts (diffusers pads the gist and moves it last). `image_offset:
bria_fibo2_gist` follows it. References: a torch forward hook on the first main block, cut at positions written
out below (8 gist tokens for a 6-token prompt and 4 for a 2-token one under the tiny config; 16 image tokens).
"""

from __future__ import annotations

import pytest
import torch

from sae_lens_dit import HookedDiT

IMAGE, GIST = 16, 8
HOOKS = ["blocks.0.hook_resid_post", "blocks.0.attn.hook_out", "blocks.0.mlp.hook_out"]


def _inputs(family, padded: bool) -> dict:
    inputs = family.inputs(2)
    mask = torch.ones(2, 6, dtype=torch.bool)
    if padded:
        mask[1, 2:] = False  # the second prompt is 2 tokens long: 4 gist tokens, padded to 8 and moved last
    return {**inputs, "encoder_attention_mask": mask}


def _block_stream(seen_with, hooked: HookedDiT, inputs: dict, hooks: list) -> torch.Tensor:
    """The first main block's output stream, after HookedDiT's hooks edited it."""
    return seen_with(hooked, inputs, hooks, [(hooked.transformer.layers[0], lambda out: {"out": out})])["out"]


@pytest.mark.parametrize(("padded", "start"), [(False, GIST), (True, 0)])
def test_the_main_blocks_record_the_image_wherever_the_gist_puts_it(families, seen_with, padded, start):
    hooked = HookedDiT(families["bria_fibo2"].make())
    inputs = _inputs(families["bria_fibo2"], padded)
    assert hooked.read_call((), inputs).image_offset.tolist() == [start, start]
    clean = _block_stream(seen_with, hooked, inputs, [])
    with torch.no_grad():
        _, cache = hooked.run_with_cache(**inputs, names_filter=HOOKS[0])
    assert torch.equal(cache[HOOKS[0]], clean[:, start : start + IMAGE])
    zeroed = _block_stream(seen_with, hooked, inputs, [(HOOKS[0], lambda act, hook: torch.zeros_like(act))])
    assert torch.equal(zeroed[:, start : start + IMAGE], torch.zeros_like(zeroed[:, start : start + IMAGE]))
    outside = torch.ones(clean.shape[1], dtype=torch.bool)
    outside[start : start + IMAGE] = False
    assert torch.equal(zeroed[:, outside], clean[:, outside])  # the gist and the context images, untouched
