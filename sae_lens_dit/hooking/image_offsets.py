"""Named rules for where the image starts in each row of a stream the transformer builds itself, for families whose
start depends on the call in a way no forward argument states (`image_offset:` in an adapter YAML, with stacks of
`tokens: image_at_offset`).

Why named rules, not more keys: the one family that needs this computes the start inside its forward from its
config and the text lengths; the rule asks diffusers' own code for the same numbers, so the hooks follow the model
as it changes. A rule returns a [batch] int64 tensor of start positions.

- `bria_fibo2_gist`: Bria FIBO 2's main blocks run on [gist | image | context], with the gist (a Perceiver's
  summary of the prompt) first; when a batch's prompts get different gist counts the padded gist moves last,
  [image | context | gist]. The start is the gist count in the first case and 0 in the second
  (`diffusers.models.transformers.transformer_bria_fibo2.compute_gist_count` gives the counts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

ImageOffsetRule = Callable[[Any, Callable[[str], Any], int], Tensor]
"""(transformer config, forward argument by name, batch) -> [batch] image start per row."""


def bria_fibo2_gist(config: Any, argument: Callable[[str], Any], batch: int) -> Tensor:
    from diffusers.models.transformers.transformer_bria_fibo2 import compute_gist_count

    mask = argument("encoder_attention_mask")
    lengths = mask.sum(dim=1).tolist() if mask is not None else [argument("encoder_hidden_states").shape[2]] * batch
    counts = compute_gist_count(
        lengths,
        min_gist=config.min_num_gist_tokens,
        max_gist=config.max_num_gist_tokens,
        gist_step=config.gist_step,
        min_text_len=config.gist_min_text_len,
        max_text_len=config.gist_max_text_len,
    )
    start = max(counts) if min(counts) == max(counts) else 0  # a padded gist goes after the image
    return torch.full((batch,), start, dtype=torch.long)


IMAGE_OFFSET_RULES: dict[str, tuple[ImageOffsetRule, tuple[str, ...]]] = {
    "bria_fibo2_gist": (bria_fibo2_gist, ("encoder_hidden_states", "encoder_attention_mask")),
}
"""Rule name -> (rule, the forward arguments it reads)."""
