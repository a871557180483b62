"""How classifier-free guidance lays out a transformer's batch: the `guidance:` section of an adapter YAML, and the
row labels (`conventions.COND`, `UNCOND`, `IMAGE_COND`) a call's rows get from it.

Why its own module: the layout is the one thing only the pipeline knows, and each family says it differently: a
batch doubled into two equal halves (most), a null class label on the uncond rows (DiT), two separate calls per
step (true CFG), or OmniGen's three-way guidance, which with input images triples the batch into [cond (text and
images) | uncond | image_cond (the input images without the text)]. Reading the third part as cond rows (or
splitting a tripled batch in halves) gives silently wrong branch labels, so the schema names it.

```yaml
guidance:
  detect: equal_halves
  order: cond_first
  thirds: [cond, uncond, image_cond]   # the label of each third of a tripled batch
  thirds_when: input_img_latents       # ... which the call has when this argument is given and not empty
```
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from sae_lens_dit.conventions import ROW_LABELS, CfgOrder
from sae_lens_dit.hooking.spec_fields import SpecFields

CfgDetect = Literal["class_label", "equal_halves", "none"]
"""How uncond rows are found: by a null class label, by identical batch halves, or never."""


@dataclass(frozen=True)
class GuidanceSpec:
    """How classifier-free guidance lays out the transformer's batch (`guidance:` in `adapters/*.yaml`)."""

    detect: CfgDetect
    order: CfgOrder
    class_argument: str | None
    """class_label only: forward argument holding the class labels."""
    null_class_config: str | None
    """class_label only: config key holding the null class id."""
    separate_calls: bool
    """True CFG as two forward calls per step at the same timestep (Flux); `order` says which is first."""
    thirds: tuple[int, int, int] | None = None
    """Three-way guidance: the row label of each third of a batch of three equal thirds (OmniGen with input
    images: cond, uncond, image_cond)."""
    thirds_when: str | None = None
    """The forward argument whose being given (not None, not empty) marks a tripled batch (OmniGen:
    `input_img_latents`); the thirds must also hold equal latents."""


KEYS = ("detect", "order", "class_argument", "null_class_config", "separate_calls", "thirds", "thirds_when")
"""The keys of a `guidance:` section."""


def parse_guidance(fields: SpecFields) -> GuidanceSpec:
    """The `guidance:` section, checked: unknown keys, labels and half-given pairs are one error naming the file."""
    fields.check_keys(KEYS)
    thirds = fields.get("thirds", list, None, nullable=True)
    if thirds is not None and (len(thirds) != 3 or any(name not in ROW_LABELS for name in thirds)):
        fields.fail("thirds", f"expected three row labels out of {list(ROW_LABELS)}, received {thirds!r}")
    spec = GuidanceSpec(
        detect=fields.choice("detect", CfgDetect),
        order=fields.choice("order", CfgOrder),
        class_argument=fields.get("class_argument", str, None, nullable=True),
        null_class_config=fields.get("null_class_config", str, None, nullable=True),
        separate_calls=fields.get("separate_calls", bool, False),
        thirds=tuple(ROW_LABELS[name] for name in thirds) if thirds is not None else None,  # type: ignore[arg-type]
        thirds_when=fields.get("thirds_when", str, None, nullable=True),
    )
    if spec.detect == "class_label" and (spec.class_argument is None or spec.null_class_config is None):
        fields.fail("detect", "detect='class_label' needs class_argument and null_class_config")
    if (spec.thirds is None) != (spec.thirds_when is None):
        fields.fail("thirds" if spec.thirds is None else "thirds_when", "thirds and thirds_when go together")
    return spec


def guidance_key(top: SpecFields) -> str:
    """`guidance`, or the section's old name `cfg` (still read, with a DeprecationWarning naming the file)."""
    if "cfg" not in top.data:
        return "guidance"
    if "guidance" in top.data:
        top.fail("cfg", "both 'cfg' (the old name) and 'guidance' are given; keep only 'guidance'")
    warnings.warn(
        f"adapter spec {top.source}: the section 'cfg' is now called 'guidance'; rename it in the file "
        f"(the old name will stop loading in a later release)",
        DeprecationWarning,
        stacklevel=3,
    )
    return "cfg"


def parts_equal(latents: Any, batch: int, parts: int) -> bool:
    """Whether the batch splits into `parts` equal runs of the same latents (a CFG-doubled or -tripled batch);
    `latents` is a tensor [batch, ...] or a list of per-sample tensors."""
    if batch % parts or batch < parts:
        return False
    size = batch // parts
    runs = [latents[i * size : (i + 1) * size] for i in range(parts)]
    if isinstance(latents, Tensor):
        return all(torch.equal(runs[0], run) for run in runs[1:])
    return all(torch.equal(a, b) for run in runs[1:] for a, b in zip(runs[0], run, strict=True))


def is_given(value: Any) -> bool:
    """A forward argument that is there: not None and, for a sequence, mapping or tensor, not empty."""
    if value is None:
        return False
    if isinstance(value, Tensor):
        return value.numel() > 0
    return not hasattr(value, "__len__") or len(value) > 0


def thirds_layout(batch: int, thirds: tuple[int, int, int]) -> Tensor:
    """[batch] row labels of a batch of three equal thirds."""
    return torch.tensor(thirds).repeat_interleave(batch // 3)
