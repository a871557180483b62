"""Per-row metadata of one transformer forward call: timestep, CFG branch and sample index.

Why from the transformer's own call: blocks of some families never see the raw timestep (PixArt
and Sana blocks get an adaLN modulation vector under the name `timestep`), and only the
transformer's arguments show how the pipeline laid out the batch. A forward pre-hook with
kwargs reads them (through `ArgSlot`) whether the pipeline passed them by keyword or by position.

Conventions (the same for every backbone):
- timestep: float t on the DDPM training scale [0, 1000], 1000 = pure noise, whatever the family
  passes (`TimestepSpec.to_convention`: `offset + raw * scale / config[divide_by_config]`, then the
  named `map`; reversed maps such as Lumina's 1 - sigma and EDM's 0.25 ln(sigma) come out the same way).
- branch: 0 = cond, 1 = uncond; all 0 for a call without classifier-free guidance; 2 = image_cond, the third
  part of three-way guidance (OmniGen with input images, `guidance_layout`).
- sample: index of the image in the pipeline's batch; the CFG rows of one image share it.
- per-token timesteps: where a pipeline passes one t per token or per frame ([batch, m], or any shape with
  more than one value per row: Wan 2.2 TI2V's first-frame tokens at 0, LTX and Sana-Video image-to-video,
  SkyReels-V2 diffusion forcing), `token_timestep` keeps them as [batch, m]
  and `timestep` holds each row's largest (the noise level of the tokens being generated); hooks spread
  them over their tokens with `timestep_at`, so recordings, harvests and TIDE splices get each token's own t.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sae_lens_dit.conventions import COND, UNCOND, CfgOrder, branch_order  # noqa: F401 (COND, UNCOND re-exported)
from sae_lens_dit.hooking.adapters import AdapterSpec, AdapterSpecError
from sae_lens_dit.hooking.guidance_layout import is_given, parts_equal, thirds_layout
from sae_lens_dit.hooking.image_offsets import IMAGE_OFFSET_RULES
from sae_lens_dit.hooking.token_spans import (
    batch_view,
    count_from_shapes,
    count_image_tokens,
    image_span_from_ids,
    patch_size_of,
)


@dataclass(frozen=True)
class CallContext:
    """Metadata of every batch row of one forward call, on the CPU."""

    timestep: Tensor | None  # [batch] float32, project convention; None if the call had no timestep
    branch: Tensor  # [batch] int64, 0 = cond, 1 = uncond, 2 = image_cond
    sample: Tensor  # [batch] int64
    image_tokens: int | None = None  # image tokens per row, where the spec counts them (`image_tokens:`)
    frames: int | None = None  # token frames of a video call, where the spec has `frames:`; None for images
    token_timestep: Tensor | None = None  # [batch, m] float32: per-token (or per-frame) t; None: one t per row
    image_offset: Tensor | None = None  # [batch] int64: where each row's image starts (`text_mask:`); None: fixed
    image_margins: tuple[int, int] = (0, 0)  # references before / after the image (image_ids, reference_tokens)

    def timestep_at(self, n_tokens: int) -> Tensor | None:
        """t for a hook with `n_tokens` image tokens per row: [batch, n_tokens] where the call has per-token or
        per-frame timesteps (`token_timesteps`), else `timestep` [batch]."""
        return self.timestep if self.token_timestep is None else token_timesteps(self.token_timestep, n_tokens)


def token_timesteps(per_token: Tensor, n_tokens: int) -> Tensor:
    """[batch, m] timesteps (per token, or per frame: m values, frame-major, each covering n_tokens / m
    consecutive tokens) -> [batch, n_tokens]."""
    m = per_token.shape[1]
    if n_tokens % m:
        raise ValueError(
            f"the transformer call has {m} timesteps per row (per token or per frame) but this hook has "
            f"{n_tokens} tokens, not a multiple of {m}, so its tokens cannot be given their own timestep"
        )
    return per_token.repeat_interleave(n_tokens // m, dim=1)


class ArgSlot:
    """One forward argument of a module, found by keyword or by its position in the signature.

    Blocks are called positionally (Sana, gradient checkpointing), by keyword (SD3, Flux) or mixed
    (DiT, PixArt), and pipelines call transformers either way; reading through the signature covers
    all three. The one reader of call arguments: `CallReader` and the hook sites both use it.
    """

    def __init__(self, module: nn.Module, name: str):
        params = list(inspect.signature(module.forward).parameters)
        if name not in params:
            raise ValueError(f"{type(module).__name__}.forward has no argument {name!r}; its arguments are {params}")
        self.name, self.position = name, params.index(name)

    def get(self, args: tuple, kwargs: dict[str, Any]) -> Any:
        """The argument's value in one call, by keyword or by position; None when the call left it out."""
        if self.name in kwargs:
            return kwargs[self.name]
        return args[self.position] if self.position < len(args) else None

    def replace(self, args: tuple, kwargs: dict[str, Any], value: Any) -> tuple[tuple, dict[str, Any]]:
        """The call's (args, kwargs) with this argument set to `value`, where the call passed it."""
        if self.name in kwargs:
            return args, {**kwargs, self.name: value}
        return (*args[: self.position], value, *args[self.position + 1 :]), kwargs


class CallReader:
    """Turns the arguments of one transformer forward call into a `CallContext`, as its spec says."""

    def __init__(self, spec: AdapterSpec, transformer: nn.Module):
        self.spec = spec
        guidance = spec.guidance
        params = list(inspect.signature(transformer.forward).parameters)
        wanted = [spec.latents, spec.timestep.argument]
        if guidance.detect == "class_label":
            wanted.append(guidance.class_argument)
        optional = (spec.text_mask, spec.image_shapes, spec.image_ids, spec.reference_tokens, guidance.thirds_when)
        wanted += [name for name in optional if name is not None]
        missing = [name for name in wanted if name not in params]
        if missing:
            raise AdapterSpecError(
                f"adapter {spec.name!r}: {type(transformer).__name__}.forward has no argument(s) {missing}; "
                f"its arguments are {params}; fix {spec.source}"
            )
        self._latents = ArgSlot(transformer, spec.latents)
        self._raw_timestep = ArgSlot(transformer, spec.timestep.argument)
        self._class_labels: ArgSlot | None = None
        self._text_mask = ArgSlot(transformer, spec.text_mask) if spec.text_mask is not None else None
        self._image_shapes = ArgSlot(transformer, spec.image_shapes) if spec.image_shapes is not None else None
        self._image_ids = ArgSlot(transformer, spec.image_ids) if spec.image_ids is not None else None
        self._references = ArgSlot(transformer, spec.reference_tokens) if spec.reference_tokens is not None else None
        self._offset_rule = None
        if spec.image_offset is not None:
            rule, names = IMAGE_OFFSET_RULES[spec.image_offset]
            slots = {name: ArgSlot(transformer, name) for name in names}
            self._offset_rule = (rule, slots, getattr(transformer, "config", None))
        self._thirds_when = ArgSlot(transformer, guidance.thirds_when) if guidance.thirds_when is not None else None
        self._divisor = 1.0
        if spec.timestep.divide_by_config is not None:
            self._divisor = float(_config_value(spec, transformer, spec.timestep.divide_by_config))
        self._null_class = None
        self._patch = 1
        if spec.image_tokens == "patches":
            self._patch = patch_size_of(spec.image_patch, getattr(transformer, "config", None), str(spec.source))
        if guidance.detect == "class_label":
            self._class_labels = ArgSlot(transformer, guidance.class_argument)
            self._null_class = int(_config_value(spec, transformer, guidance.null_class_config))
        frames = spec.frames
        self._frames_argument = ArgSlot(transformer, frames.argument) if frames and frames.argument else None
        self._temporal_patch = (
            frames.temporal_patch_of(getattr(transformer, "config", None), str(spec.source)) if frames else 1
        )

    def context(self, args: tuple, kwargs: dict[str, Any]) -> CallContext:
        guidance = self.spec.guidance
        latents = self._latents.get(args, kwargs)  # a tensor [batch, ...], or a list of per-sample tensors
        batch, row = batch_view(latents, self.spec.latents)  # row: [1, ...], shaped like one row of the latents
        rows = torch.arange(batch)
        branch = torch.zeros(batch, dtype=torch.long)
        doubled = _doubled_layout(batch, guidance.order)  # [batch] branch of a CFG-doubled batch
        is_doubled = False
        tripled = (  # three-way guidance: [cond | uncond | image_cond] (OmniGen with input images)
            self._thirds_when is not None
            and is_given(self._thirds_when.get(args, kwargs))
            and parts_equal(latents, batch, 3)
        )
        if tripled and guidance.thirds is not None:
            branch, rows = thirds_layout(batch, guidance.thirds), rows % (batch // 3)
        elif guidance.detect == "equal_halves" and doubled is not None:
            is_doubled = parts_equal(latents, batch, 2)
        elif self._class_labels is not None:
            labels = self._class_labels.get(args, kwargs)
            if labels is not None:
                branch = (torch.as_tensor(labels).reshape(-1).cpu() == self._null_class).long().expand(batch)
                is_doubled = doubled is not None and torch.equal(branch, doubled)
        n_image = count_image_tokens(self.spec.image_tokens, row, self._patch)
        if self._image_shapes is not None:
            shapes = self._image_shapes.get(args, kwargs)
            n_image = count_from_shapes(shapes, self.spec.image_shapes, self.spec.image_shapes_target)
        margins = (0, 0)
        if self._image_ids is not None:  # [references | image | references], told apart by position ids
            span = image_span_from_ids(self._image_ids.get(args, kwargs), self.spec.image_ids, row.shape[1])
            n_image, margins = span.n, (span.before, span.after)
        if self._references is not None:  # [image | references]: references in an argument of their own (FLUX.3)
            references = self._references.get(args, kwargs)
            margins = (0, int(references.shape[1]) if references is not None else 0)
        frames = self._frames(row, args, kwargs)
        timestep, per_token = self._timestep(args, kwargs, batch)
        offset = self._image_offset(args, kwargs, batch)
        if is_doubled:
            return CallContext(timestep, doubled, rows % (batch // 2), n_image, frames, per_token, offset, margins)
        return CallContext(timestep, branch.clone(), rows, n_image, frames, per_token, offset, margins)

    def _image_offset(self, args: tuple, kwargs: dict[str, Any], batch: int) -> Tensor | None:
        """[batch] where each row's image starts: its text length (the row sums of the `text_mask` argument), or
        what the spec's named `image_offset` rule says."""
        if self._offset_rule is not None:
            rule, slots, config = self._offset_rule
            return rule(config, lambda name: slots[name].get(args, kwargs), batch)
        if self._text_mask is None:
            return None
        mask = self._text_mask.get(args, kwargs)
        if mask is None:
            return None
        mask = torch.as_tensor(mask).detach().cpu()
        if mask.ndim != 2 or mask.shape[0] != batch:
            raise ValueError(
                f"adapter {self.spec.name!r}: text_mask {self.spec.text_mask!r} has shape {tuple(mask.shape)}; "
                f"expected [batch={batch}, text tokens]"
            )
        return mask.bool().sum(1)

    def _frames(self, latents: Tensor, args: tuple, kwargs: dict[str, Any]) -> int | None:
        """Token frames of the call (`hooking.frames`); None for a family without `frames:` or an image call."""
        if self.spec.frames is None:
            return None
        argument = self._frames_argument.get(args, kwargs) if self._frames_argument is not None else None
        return self.spec.frames.count(latents, argument, self._temporal_patch)

    def _timestep(self, args: tuple, kwargs: dict[str, Any], batch: int) -> tuple[Tensor | None, Tensor | None]:
        """(t per row [batch], per-token t [batch, m] or None) of the call."""
        raw = self._raw_timestep.get(args, kwargs)
        if raw is None:
            return None, None
        raw = torch.as_tensor(raw).detach().to("cpu", torch.float64)
        if raw.ndim >= 2 and raw.shape[0] == batch and raw[0].numel() > 1:  # one t per token or per frame
            per_token = self.spec.timestep.to_convention(raw.reshape(batch, -1), self._divisor).float()
            return per_token.amax(dim=1), per_token
        t = self.spec.timestep.to_convention(raw.reshape(-1), self._divisor).float()  # [1] or [batch]
        if t.numel() not in (1, batch):
            raise ValueError(
                f"adapter {self.spec.name!r}: the transformer got {t.numel()} timestep values for a batch of "
                f"{batch} (shape {tuple(raw.shape)}); expected one, one per row, or [batch, tokens or frames]"
            )
        return (t.expand(batch).clone() if t.numel() == 1 else t), None


def _doubled_layout(batch: int, order: CfgOrder) -> Tensor | None:
    """Branch labels of a CFG-doubled batch in the given order; None for an odd batch."""
    if batch % 2:
        return None
    return torch.tensor(branch_order(order)).repeat_interleave(batch // 2)


def _config_value(spec: AdapterSpec, transformer: nn.Module, key: str | None) -> Any:
    config = getattr(transformer, "config", None)
    value = getattr(config, key, None) if config is not None and key is not None else None
    if value is None:
        raise AdapterSpecError(
            f"adapter {spec.name!r}: {type(transformer).__name__}.config has no value for {key!r}; fix {spec.source}"
        )
    return value
