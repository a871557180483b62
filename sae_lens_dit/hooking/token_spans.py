"""Where a block stream's image tokens sit, and how many image tokens a call has.

Why one home: joint single-stream blocks run one sequence in which the image is a contiguous span, at the tail
after the text (`[text | image]`: Chroma, AuraFlow, FLUX.2, OmniGen) or at the head before it (`[image | text]`:
HiDream's single-stream blocks, Z-Image's main layers), and a span may be followed by padding (Z-Image pads its
image tokens to a multiple of 32; HiDream pads non-square images to `max_seq`), or right after each
row's own text when rows carry captions of different lengths (`[text | image | padding]`, Lumina 2's joint blocks:
a row's text length is the row sum of a mask argument, `text_mask:`). The adapter names the span (`tokens:`) and
how to count a call's image tokens from its latents (`image_tokens:`, with the patch size from `image_patch:` where
the config does not call it `patch_size`); `hook_sites.StreamView` cuts the span out exactly.
Latents given as a list of per-sample tensors (Z-Image) are read as a batch of that many rows.
Where a call's image stream also holds reference images around the generated one (FLUX.2 editing:
`[image | references]`, or `[references | image]` in the KV-cache pipeline's first call), their tokens are told
apart by position ids (`image_tokens: ids`): the head and tail spans step over them (`ImageSpan`), so image hooks
see the generated image alone, and a single-stream `[text | image | references]` sequence gives the n tokens after
the text.

>>> count_image_tokens("patches", torch.zeros(2, 16, 8, 6), 2), count_image_tokens("sequence", torch.zeros(2, 9, 4), 1)
(12, 9)
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal, NamedTuple

import torch  # noqa: F401  (the doctests build tensors)
from torch import Tensor

from sae_lens_dit.hooking.spec_fields import AdapterSpecError, SpecFields

TokenSpan = Literal["all", "image_tail", "image_head", "image_after_text", "image_at_offset"]
"""Which tokens of a stream are image tokens: all, the last n (`[text | image]`), the first n (`[image | rest]`) or
the n after each row's text (`[text | image | padding]`, the text's length per row from `text_mask`); a
submodule's n: the block's image input; a joint block stream's n: the call's `ImageCount`. With reference tokens
in the call's image stream (`image_tokens: ids`), the tail span ends before those after the image and the head
span starts after those before it."""
ImageCount = Literal["sequence", "patches", "shapes", "ids"]
"""How a call's image tokens are counted: from its latents, [batch, n, c] (packed) or image latents [batch, c, h, w]
(or [batch, c, 1, h, w]) in patch x patch patches (the patch: `image_patch`, by default `config.patch_size`); or
`shapes`: the (frames, height, width) in tokens of the image being generated, in the first sample's list in the
forward argument named by `image_shapes` (`image_shapes_target` says which entry: Qwen-Image 2.1 lists its condition
images first and the target last; Qwen-Image-Edit the target first, then its reference images); or `ids`: the
tokens whose first position id is 0 in the first row of the forward argument named by `image_ids` ([tokens, k] or
[batch, tokens, k], one per token of the latents; FLUX.2 gives the generated image T = 0 and its reference images
T = 10, 20, ...), the tokens before and after them being references (`image_span_from_ids`)."""
IMAGE_KEYS = (
    "image_offset",
    "image_tokens",
    "image_patch",
    "text_mask",
    "image_shapes",
    "image_shapes_target",
    "image_ids",
    "reference_tokens",
)
"""The top-level adapter keys `parse_image_keys` reads."""
ShapesTarget = Literal["first", "last"]
"""Which entry of a sample's image-shape list is the image being generated."""

_CONFIG_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[\d+\])?$")


def parse_text_mask(top: SpecFields, spans: list[TokenSpan]) -> str | None:
    """The top-level `text_mask` key (a forward argument [batch, text tokens] whose row sums are each row's text
    length), which a stack with `tokens: image_after_text` needs and no other stack uses."""
    needed = "image_after_text" in spans
    if needed and "text_mask" not in top.data:
        top.fail(
            "text_mask", "a stack with tokens: image_after_text needs text_mask (the forward argument masking the text)"
        )
    if "text_mask" in top.data and not needed:
        top.fail("text_mask", "text_mask places tokens: image_after_text spans; no stack has one, so remove it")
    return top.get("text_mask", str) if needed else None


def parse_image_keys(top: SpecFields, spans: list[TokenSpan]) -> dict[str, Any]:
    """`image_tokens`, `image_patch`, `text_mask` and `image_shapes`, checked against the stacks' token spans."""
    count, patch = parse_image_tokens(top, spans)
    if count == "shapes" and "image_shapes" not in top.data:
        top.fail("image_shapes", "image_tokens: shapes needs image_shapes (the forward argument listing image shapes)")
    if "image_shapes" in top.data and count != "shapes":
        top.fail("image_shapes", "image_shapes is read for `image_tokens: shapes`; remove it or count shapes")
    if "image_shapes_target" in top.data and count != "shapes":
        top.fail("image_shapes_target", "image_shapes_target is read for `image_tokens: shapes`; remove it")
    shapes = top.get("image_shapes", str) if count == "shapes" else None
    return {
        "image_tokens": count,
        "image_patch": patch,
        "text_mask": parse_text_mask(top, spans),
        "image_shapes": shapes,
        "image_shapes_target": top.choice("image_shapes_target", ShapesTarget, "last"),
        "image_ids": parse_image_ids(top, count, spans),
        "reference_tokens": parse_reference_tokens(top, count, spans),
        "image_offset": parse_image_offset(top, spans),
    }


def parse_image_offset(top: SpecFields, spans: list[TokenSpan]) -> str | None:
    """The top-level `image_offset` key: the named rule (`hooking.image_offsets`) that places `tokens:
    image_at_offset` spans, which need it and which nothing else uses."""
    from sae_lens_dit.hooking.image_offsets import IMAGE_OFFSET_RULES

    needed = "image_at_offset" in spans
    if needed and "image_offset" not in top.data:
        top.fail(
            "image_offset",
            f"a stack with tokens: image_at_offset needs image_offset, one of {list(IMAGE_OFFSET_RULES)}",
        )
    if "image_offset" in top.data and not needed:
        top.fail("image_offset", "image_offset places tokens: image_at_offset spans; no stack has one, so remove it")
    return top.choice("image_offset", Literal[tuple(IMAGE_OFFSET_RULES)]) if needed else None  # type: ignore[misc]


def parse_reference_tokens(top: SpecFields, count: ImageCount | None, spans: list[TokenSpan]) -> str | None:
    """The top-level `reference_tokens` key: a forward argument [batch, tokens, c] of reference-image tokens the
    transformer appends after the image in its streams (FLUX.3's `image_cond_hidden_states`); head and tail spans
    step over its token count (`CallContext.image_margins`)."""
    if "reference_tokens" not in top.data:
        return None
    if count not in ("sequence", "patches"):
        top.fail("reference_tokens", "reference_tokens needs the image counted as image_tokens: sequence or patches")
    if "image_after_text" in spans:
        top.fail("reference_tokens", "tokens: image_after_text places each row's image itself; remove reference_tokens")
    return top.get("reference_tokens", str)


def parse_image_ids(top: SpecFields, count: ImageCount | None, spans: list[TokenSpan]) -> str | None:
    """The top-level `image_ids` key (the forward argument of position ids), which `image_tokens: ids` needs."""
    if count == "ids" and "image_ids" not in top.data:
        top.fail(
            "image_ids",
            "image_tokens: ids needs image_ids (the forward argument of position ids, [tokens, k] or [batch, tokens, "
            "k], whose first coordinate is 0 on the generated image's tokens)",
        )
    if "image_ids" in top.data and count != "ids":
        top.fail("image_ids", "image_ids is read for `image_tokens: ids`; remove it or count ids")
    if count == "ids" and "image_after_text" in spans:
        top.fail(
            "image_tokens",
            "tokens: image_after_text places each row's image after its text_mask; it cannot also step over the "
            "reference tokens image_tokens: ids finds; count sequence or patches there",
        )
    return top.get("image_ids", str) if count == "ids" else None


class ImageSpan(NamedTuple):
    """Where the generated image sits in a call's image stream: n tokens after `before` reference tokens and
    followed by `after` more."""

    n: int
    before: int
    after: int


def image_span_from_ids(ids: Any, name: str, stream: int) -> ImageSpan:
    """The generated image's span in an image stream of `stream` tokens: the one run of tokens whose first position
    id is 0, in the first row of `ids` ([tokens, k] or [batch, tokens, k]; FLUX.2's transformer reads only that row).

    >>> ids = torch.tensor([[10, 0, 0], [10, 0, 1], [0, 0, 0], [0, 0, 1], [0, 1, 0], [20, 0, 0]])
    >>> image_span_from_ids(ids, "img_ids", 6), image_span_from_ids(ids[None, 2:5], "img_ids", 3)
    (ImageSpan(n=3, before=2, after=1), ImageSpan(n=3, before=0, after=0))
    """
    first = ids[0] if isinstance(ids, Tensor) and ids.ndim == 3 else ids
    if not isinstance(first, Tensor) or first.ndim != 2 or first.shape[0] != stream:
        shape = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(
            f"the position ids argument {name!r} is {shape}; expected [tokens, k] or [batch, tokens, k] with one row "
            f"per token of the {stream} latent tokens (fix `image_ids` in the adapter spec)"
        )
    where = (first[:, 0].detach().cpu() == 0).nonzero().flatten()
    if where.numel() == 0 or int(where[-1] - where[0]) + 1 != where.numel():
        raise ValueError(
            f"the position ids {name!r} have first coordinate 0 at tokens {where.tolist()}; expected one contiguous "
            f"run (the generated image), with the reference images' tokens before or after it"
        )
    return ImageSpan(where.numel(), int(where[0]), stream - int(where[-1]) - 1)


def count_from_shapes(shapes: Any, name: str, target: ShapesTarget = "last") -> int:
    """Image tokens of the image being generated: the product of the `target` (first or last) (frames, height,
    width) of the first sample's shape list in the `name` argument. A sample given as one (frames, height, width)
    tuple instead of a list (Qwen-Image's model accepts both) is that image.

    >>> count_from_shapes([[(1, 4, 4), (1, 2, 2)]], "img_shapes", "first"), count_from_shapes([(1, 4, 4)], "x")
    (16, 16)
    """
    try:
        sample = shapes[0]
        one_image = len(sample) > 0 and all(isinstance(size, int) for size in sample)
        return math.prod(int(size) for size in (sample if one_image else sample[0 if target == "first" else -1]))
    except (TypeError, IndexError, ValueError):
        raise ValueError(
            f"the {name!r} argument is {shapes!r}; expected a per-sample list of (frames, height, width) tuples in "
            f"tokens, the image being generated {target} (fix `image_shapes` in the adapter spec)"
        ) from None


def parse_image_tokens(top: SpecFields, spans: list[TokenSpan]) -> tuple[ImageCount | None, int | str]:
    """The top-level `image_tokens` and `image_patch` keys, checked against the stacks' token spans."""
    count = top.choice("image_tokens", ImageCount, None) if "image_tokens" in top.data else None
    if count is None and any(span != "all" for span in spans):
        top.fail(
            "image_tokens",
            "a stack with tokens: image_tail, image_head, image_after_text or image_at_offset needs image_tokens "
            "(sequence or patches)",
        )
    patch = top.get("image_patch", (int, str), "patch_size")
    if "image_patch" in top.data and count != "patches":
        top.fail("image_patch", "image_patch is the patch size of `image_tokens: patches`; remove it or count patches")
    if isinstance(patch, int) and patch < 1:
        top.fail("image_patch", f"expected a positive int or a config value name, received {patch}")
    if isinstance(patch, str) and not _CONFIG_REF.match(patch):
        top.fail("image_patch", f"expected a config key like patch_size or all_patch_size[0], received {patch!r}")
    return count, patch


def check_submodule_spans(fields: SpecFields, stack_span: TokenSpan, submodules: tuple[Any, ...]) -> TokenSpan:
    """`stack_span`, once every submodule of a joint stack (`tokens` other than all) has the same span or all."""
    for sub in submodules:
        if stack_span != "all" and sub.tokens not in ("all", stack_span):
            fields.fail(
                f"submodules.{sub.hook}.tokens",
                f"the stack's stream is cut with tokens: {stack_span}, so its submodules' joint outputs are too; "
                f"write tokens: {stack_span} (or all, for a submodule that sees the image alone), not {sub.tokens}",
            )
    return stack_span


def patch_size_of(patch: int | str, config: Any, source: str) -> int:
    """The patch size an `image_patch` value gives for one transformer's config."""
    if isinstance(patch, int):
        return patch
    key, _, index = patch.partition("[")
    value = getattr(config, key, None) if config is not None else None
    if index and isinstance(value, (list, tuple)):
        value = value[int(index[:-1])] if int(index[:-1]) < len(value) else None
    if not isinstance(value, int) or value < 1:
        raise AdapterSpecError(
            f"adapter spec {source}: image_patch {patch!r} does not name a positive int config value of "
            f"{type(config).__name__} (found {value!r}); fix the file"
        )
    return value


def batch_view(latents: Any, name: str) -> tuple[int, Tensor]:
    """(rows, a [1, ...] tensor shaped like one row) of the latents argument: a tensor [batch, ...], or a list of
    per-sample tensors of one shape (Z-Image), which is read as a batch of len(list) rows."""
    if isinstance(latents, Tensor):
        return int(latents.shape[0]), latents[:1]
    rows = list(latents) if isinstance(latents, (list, tuple)) else []
    if not rows or not all(isinstance(row, Tensor) and row.shape == rows[0].shape for row in rows):
        shapes = [tuple(row.shape) if isinstance(row, Tensor) else type(row).__name__ for row in rows]
        raise ValueError(
            f"the latents argument {name!r} is {type(latents).__name__} {shapes if rows else ''}; expected a tensor "
            f"[batch, ...] or a list of per-sample tensors of one shape (nested lists, as Z-Image's omni mode passes, "
            f"and samples of different sizes have no one image-token count per call)"
        )
    return len(rows), rows[0][None]


def count_image_tokens(count: ImageCount | None, row: Tensor, patch: int) -> int | None:
    """Image tokens per row from one row's latents [1, ...] (None: the spec does not count them)."""
    if count == "sequence":  # packed [batch, n, c]
        return int(row.shape[1])
    if count == "patches":  # [batch, c, h, w] in patch x patch patches
        return int((row.shape[-2] // patch) * (row.shape[-1] // patch))
    return None
