"""Backbone adapters: one declarative YAML per diffusers transformer family, loaded into `AdapterSpec`.

Why data and not code: every family differs only in a handful of facts (where the block lists are, which
output element carries image tokens, where the raw timestep enters and in what units and direction
(`TimestepSpec`: affine, reversed, or EDM's log sigma), how classifier-free guidance lays out the batch,
where a video's frames are (`hooking.frames`), and, when two families share a class, which config tells
them apart (`match_config`). Writing those facts down once, and validating them on load, keeps hooking
code generic and makes a new backbone mostly a new file in `adapters/`. The specs know nothing about
hooks; `sae_lens_dit.hooking.hooked` reads them.

>>> spec = load_spec(adapters_dir() / "dit.yaml")
>>> spec.name, spec.stacks[0].prefix, spec.stacks[0].module
('dit', 'blocks', 'transformer_blocks')
"""

from __future__ import annotations

import difflib
import logging
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import Tensor, nn

from sae_lens_dit.conventions import TIMESTEP_MAX
from sae_lens_dit.hooking.frames import FramesSpec, parse_frames
from sae_lens_dit.hooking.guidance_layout import CfgDetect, GuidanceSpec, guidance_key, parse_guidance  # noqa: F401
from sae_lens_dit.hooking.spec_fields import AdapterSpecError, SpecFields
from sae_lens_dit.hooking.token_spans import (
    IMAGE_KEYS,
    ImageCount,
    ShapesTarget,
    TokenSpan,
    check_submodule_spans,
    parse_image_keys,
)
from sae_lens_dit.resources import adapters_dir

logger = logging.getLogger(__name__)

Layout = Literal["tokens", "channels_first", "sequence_first"]
"""Stream or output layout: [batch, tokens, d], [batch, d, height, width], or [tokens, batch, d] (ERNIE-Image)."""
TimestepMap = Literal["affine", "edm_log_sigma"]
"""How the (affine-scaled) raw timestep becomes t: as is, or read as EDM's c_noise = 0.25 ln(sigma)."""


_ABSENT = object()


@dataclass(frozen=True)
class TimestepSpec:
    """Where the raw timestep enters the transformer and how it maps to the project convention.

    Convention: float t on the DDPM training scale [0, 1000], 1000 = pure noise, decreasing along a
    sampling run (step counting relies on that). Two steps, both read from the `timestep:` section:

    1. affine: `u = offset + raw * scale / transformer.config[divide_by_config]` (no division when
       that is None). A reversed map (the family's 0 = noise) has a negative scale and an offset:
       Lumina's `1 - sigma` is `offset: 1000, scale: -1000`, Mochi's `1000 (1 - sigma)` is
       `offset: 1000, scale: -1`.
    2. `map`: `affine` keeps u. `edm_log_sigma` reads u as EDM's c_noise = 0.25 ln(sigma) (Karras et
       al. 2022, diffusers' EDMEulerScheduler.precondition_noise; Cosmos 1) and returns the flow-matching
       time of equal signal-to-noise ratio, t = 1000 sigma / (1 + sigma): x0 + sigma eps, divided by
       1 + sigma, is the flow interpolation (1 - s) x0 + s eps with s = sigma / (1 + sigma), and
       t = 1000 s is how the package reads every flow model (Cosmos 2 pipelines pass exactly this s to
       the same transformer class). EDM's sigma in [0.002, 80] lands on t in [2.0, 987.7].

    >>> import torch
    >>> lumina = TimestepSpec("timestep", -1000.0, None, offset=1000.0)  # raw = 1 - sigma
    >>> lumina.to_convention(torch.tensor([1.0, 0.25, 0.0], dtype=torch.float64), 1.0).tolist()
    [0.0, 750.0, 1000.0]
    >>> edm = TimestepSpec("timestep", 1.0, None, map="edm_log_sigma")  # raw = 0.25 ln(sigma)
    >>> [round(t, 6) for t in edm.to_convention(0.25 * torch.tensor([80.0, 3.0, 1.0]).double().log(), 1.0).tolist()]
    [987.654321, 750.0, 500.0]
    """

    argument: str
    scale: float
    divide_by_config: str | None
    offset: float = 0.0
    map: TimestepMap = "affine"

    def to_convention(self, raw: Tensor, divisor: float) -> Tensor:
        """t in the project convention for raw values as the transformer received them (float64 in and out)."""
        u = raw * self.scale / divisor
        if self.offset:  # skipped at 0 so that affine specs without an offset compute exactly as before
            u = self.offset + u
        if self.map == "edm_log_sigma":
            sigma = torch.exp(4.0 * u)  # c_noise = 0.25 ln(sigma)
            u = TIMESTEP_MAX * sigma / (1.0 + sigma)
        return u


@dataclass(frozen=True)
class SubmoduleSpec:
    """A submodule whose output gets `<prefix>.{i}.<hook>.hook_out` (read before any gating)."""

    hook: str
    module: str
    output_index: int | None
    layout: Layout
    tokens: TokenSpan
    optional: bool
    """If true, blocks where the module is None (e.g. SD3's attn2 outside dual layers) get no hook."""


@dataclass(frozen=True)
class StackSpec:
    """The blocks at one module path of the transformer, numbered in hook names by their list indices.

    `module` is a dotted path; `*` walks every item of a list, branches that lack the rest of the path
    are skipped (SD's last down block has no `attentions`), and a path ending at a ModuleList walks its
    items too. `prefix` names the blocks: each `*` in it takes the next index, the rest are appended.
    `transformer_blocks` under prefix `blocks` gives `blocks.{i}`; `down_blocks.*.attentions.*` under `down`
    gives `down.{i}.{j}`; `down_blocks.*.attentions.*.transformer_blocks` under `down.*.*.blocks` gives
    `down.{i}.{j}.blocks.{k}`.
    """

    prefix: str
    module: str
    input: str
    """Block forward argument carrying the image stream; read by name or by signature position."""
    image_output: int | None
    """Index of the image stream in the block's output tuple; None when the output is the tensor."""
    text_output: int | None
    text_off_attribute: str | None
    """Blocks whose attribute of this name is true return no text stream (SD3's last block)."""
    submodules: tuple[SubmoduleSpec, ...]
    layout: Layout = "tokens"
    """The block's image stream in and out: [batch, tokens, d], or [batch, d, h, w] (UNet Transformer2DModels),
    which every hook sees as [batch, h * w, d]."""
    width: str | None = None
    """Block attribute holding the stream's width where it differs per block (UNet levels); None = the
    transformer's inner dimension."""
    update: bool = True
    """Whether blocks get `hook_update` (output minus input of the image stream); false where they differ in shape."""
    optional: bool = False
    """If true, a transformer where the module path reaches no block (a UNet without a mid block) is fine."""
    tokens: TokenSpan = "all"
    """`image_tail` / `image_head`: the stream is one joint [text | image] / [image | rest] sequence (`token_spans`);
    image hooks see the call's image tokens at that end (past any references, `image_tokens: ids`),
    `hook_txt_resid_post` the rest (text, any padding or references)."""
    text: bool = True  # joint stacks: whether the rest gets hook_txt_resid_post (false where it is padding alone)


@dataclass(frozen=True)
class AdapterSpec:
    """Everything `HookedDiT` needs to know about one backbone family, as read from its YAML."""

    name: str
    source: Path
    description: str
    transformer_classes: tuple[str, ...]
    latents: str
    """Forward argument holding the latents; its first dimension is the batch."""
    timestep: TimestepSpec
    guidance: GuidanceSpec
    """Classifier-free guidance layout (named `guidance`: everywhere else in the package `cfg` is a config)."""
    stacks: tuple[StackSpec, ...]
    image_tokens: ImageCount | None = None
    """How to count a call's image tokens (for stacks with `tokens: image_tail` or `image_head`); None: not needed."""
    image_patch: int | str = "patch_size"  # image_tokens patches: a number or a config value (all_patch_size[0])
    text_mask: str | None = None
    """Forward argument whose row sums place `tokens: image_after_text` spans (each row's text length)."""
    image_shapes: str | None = None  # `image_tokens: shapes`: the forward argument listing each sample's image shapes
    image_shapes_target: ShapesTarget = "last"  # which entry of a sample's shape list is the image being generated
    image_ids: str | None = None  # `image_tokens: ids`: the forward argument of position ids (T = 0: generated image)
    reference_tokens: str | None = None  # forward argument of reference tokens appended after the image (FLUX.3)
    image_offset: str | None = None  # named rule placing `tokens: image_at_offset` spans (`hooking.image_offsets`)
    match_config: tuple[tuple[str, Any], ...] = ()
    """(config key, value) pairs the transformer's config must hold for this spec to apply; lets two specs
    claim one class whose pipelines feed it differently (Cosmos 1 and Cosmos 2). Empty = any config."""
    frames: FramesSpec | None = None
    """Where a video call's frame count is (`hooking.frames`); None: the family's tokens are one image."""

    def matches(self, transformer: nn.Module) -> bool:
        """True when every `match_config` pair holds on the transformer's config."""
        config = getattr(transformer, "config", None)
        return all(getattr(config, key, _ABSENT) == value for key, value in self.match_config)

    @property
    def cfg(self) -> GuidanceSpec:
        """Deprecated name of `guidance`."""
        warnings.warn("AdapterSpec.cfg is now AdapterSpec.guidance", DeprecationWarning, stacklevel=2)
        return self.guidance


def _timestep(fields: SpecFields) -> TimestepSpec:
    fields.check_keys(("argument", "scale", "offset", "divide_by_config", "map"))
    scale = float(fields.get("scale", (int, float), 1.0))
    offset = float(fields.get("offset", (int, float), 0.0))
    kind = fields.choice("map", TimestepMap, "affine")
    if scale == 0:
        fields.fail("scale", "expected a non-zero number (t = offset + raw * scale / divisor)")
    if scale < 0 and offset <= 0:
        fields.fail(
            "scale",
            f"a negative scale ({scale}) is a reversed map and needs a positive offset, so that t stays in "
            f"[0, 1000] with 1000 = noise: t = offset + raw * scale (for raw = 1 - sigma write offset: 1000, "
            f"scale: -1000)",
        )
    if kind == "edm_log_sigma" and (scale != 1.0 or offset != 0.0 or fields.data.get("divide_by_config")):
        fields.fail(
            "map",
            "map 'edm_log_sigma' reads the raw timestep as EDM's c_noise = 0.25 ln(sigma) as is; "
            "remove scale, offset and divide_by_config",
        )
    return TimestepSpec(
        argument=fields.get("argument", str),
        scale=scale,
        divide_by_config=fields.get("divide_by_config", str, None, nullable=True),
        offset=offset,
        map=kind,
    )


def _submodule(fields: SpecFields, hook: str) -> SubmoduleSpec:
    fields.check_keys(("module", "output_index", "layout", "tokens", "optional"))
    index = fields.get("output_index", int, None, nullable=True)
    if index is not None and index < 0:
        fields.fail("output_index", f"expected a non-negative index, received {index}")
    return SubmoduleSpec(
        hook=hook,
        module=fields.get("module", str),
        output_index=index,
        layout=fields.choice("layout", Layout, "tokens"),
        tokens=fields.choice("tokens", TokenSpan, "all"),
        optional=fields.get("optional", bool, False),
    )


def _stack(fields: SpecFields) -> StackSpec:
    fields.check_keys(
        (
            "prefix",
            "module",
            "input",
            "image_output",
            "text_output",
            "text_off_attribute",
            "submodules",
            "layout",
            "width",
            "update",
            "optional",
            "tokens",
            "text",
        )
    )
    subs = fields.sub("submodules") if "submodules" in fields.data else None
    prefix, module = fields.get("prefix", str), fields.get("module", str)
    segments = prefix.split(".")
    if not all(part.isidentifier() or part == "*" for part in segments) or not segments[0].isidentifier():
        fields.fail(
            "prefix",
            f"expected dotted Python identifiers, each hook-name segment, where `*` stands for an index of "
            f"`module` (e.g. 'down.*.*.blocks'), starting with an identifier; received {prefix!r}",
        )
    if not all(part.isidentifier() or part == "*" for part in module.split(".")):
        fields.fail("module", f"expected a dotted attribute path, `*` for every index of a list; received {module!r}")
    if segments.count("*") > module.split(".").count("*"):
        fields.fail("prefix", f"{prefix!r} has more `*` than the module path {module!r} has indices to fill them")
    submodules = tuple(_submodule(subs.sub(hook), hook) for hook in subs.data) if subs else ()
    tokens = check_submodule_spans(fields, fields.choice("tokens", TokenSpan, "all"), submodules)
    return StackSpec(
        prefix=prefix,
        module=fields.get("module", str),
        input=fields.get("input", str),
        image_output=fields.get("image_output", int, None, nullable=True),
        text_output=fields.get("text_output", int, None, nullable=True),
        text_off_attribute=fields.get("text_off_attribute", str, None, nullable=True),
        submodules=submodules,
        layout=fields.choice("layout", Layout, "tokens"),
        width=fields.get("width", str, None, nullable=True),
        update=fields.get("update", bool, True),
        optional=fields.get("optional", bool, False),
        tokens=tokens,
        text=fields.get("text", bool, True),
    )


def load_spec(path: str | Path) -> AdapterSpec:
    """Read and validate one adapter YAML; a malformed file raises `AdapterSpecError` naming the field."""
    source = Path(path)
    try:
        data = yaml.safe_load(source.read_text())
    except yaml.YAMLError as error:
        raise AdapterSpecError(f"adapter spec {source}: not valid YAML ({error}); fix the file") from error
    top = SpecFields(source, "", data)
    top.check_keys(
        (
            "name",
            "description",
            "transformer_classes",
            "match_config",
            "latents",
            "timestep",
            "guidance",
            "stacks",
            "cfg",
            *IMAGE_KEYS,  # image_tokens, image_patch, text_mask, image_shapes, image_shapes_target, image_ids, ...
            "frames",
        )
    )
    classes = top.get("transformer_classes", list)
    if not classes or not all(isinstance(c, str) for c in classes):
        top.fail("transformer_classes", f"expected a non-empty list of class names, received {classes!r}")
    stacks = top.get("stacks", list)
    if not stacks:
        top.fail("stacks", "expected at least one block list")
    parsed = tuple(_stack(SpecFields(source, f"stacks[{i}]", stack)) for i, stack in enumerate(stacks))
    image_keys = parse_image_keys(top, [stack.tokens for stack in parsed])  # image_tokens, image_patch, ...
    prefixes = [stack.prefix for stack in parsed]
    if len(set(prefixes)) != len(prefixes):
        top.fail("stacks", f"prefixes must be unique, received {prefixes}")
    return AdapterSpec(
        name=top.get("name", str),
        source=source,
        description=top.get("description", str, ""),
        transformer_classes=tuple(classes),
        latents=top.get("latents", str),
        timestep=_timestep(top.sub("timestep")),
        guidance=parse_guidance(top.sub(guidance_key(top))),
        stacks=parsed,
        match_config=top.scalars("match_config") if "match_config" in top.data else (),
        **image_keys,
        frames=parse_frames(top.sub("frames")) if "frames" in top.data else None,
    )


@cache
def shipped_specs() -> tuple[AdapterSpec, ...]:
    """Every spec in `adapters/`, validated (cached: the folder is read once per process)."""
    specs = tuple(load_spec(path) for path in sorted(adapters_dir().glob("*.yaml")))
    logger.debug("loaded %d adapter specs from %s", len(specs), adapters_dir())
    return specs


def adapter_for(transformer: nn.Module) -> AdapterSpec:
    """The spec whose `transformer_classes` names the transformer's class (or a base class of it).

    Several specs may claim one class when each has a `match_config`; the spec whose `match_config`
    holds wins, and a spec without one is the fallback. Ambiguity raises, naming the files.
    """
    specs = shipped_specs()
    for cls in type(transformer).__mro__:
        claims = [spec for spec in specs if cls.__name__ in spec.transformer_classes]
        if claims:
            return _pick(claims, transformer, cls.__name__)
    raise AdapterSpecError(_no_adapter_message(type(transformer).__name__, specs))


def _pick(claims: list[AdapterSpec], transformer: nn.Module, class_name: str) -> AdapterSpec:
    """One spec out of those claiming `class_name`, by their `match_config`."""
    matching = [spec for spec in claims if spec.match_config and spec.matches(transformer)]
    fallback = [spec for spec in claims if not spec.match_config]
    chosen = matching or fallback
    if len(chosen) == 1:
        return chosen[0]
    files = [str(spec.source) for spec in chosen]
    if chosen:
        raise AdapterSpecError(
            f"{len(chosen)} adapters fit {class_name}: {files}; give each a `match_config` that tells them apart "
            f"(config keys of the transformer) or merge them into one file"
        )
    wanted = {spec.name: dict(spec.match_config) for spec in claims}
    config = getattr(transformer, "config", None)
    seen = {key: getattr(config, key, None) for conditions in wanted.values() for key in conditions}
    raise AdapterSpecError(
        f"no adapter for this {class_name}: its config {seen} fits none of the match_config sections {wanted} "
        f"({[str(spec.source) for spec in claims]}); add a spec for it to {adapters_dir()}"
    )


def _stem(name: str) -> str:
    """A class or adapter name without the words every transformer class shares, for fuzzy matching."""
    stem = name.lower()
    for word in ("transformer", "model", "2d", "3d", "dit"):
        stem = stem.replace(word, "")
    return stem or name.lower()


ADAPTERS_DOC = (
    "How to add a family in one YAML file, with a worked example, and every class of diffusers with its status (and "
    "why a class has no adapter): docs/adapters.md in the sae-lens-dit repository"
)


def _no_adapter_message(class_name: str, specs: tuple[AdapterSpec, ...]) -> str:
    by_stem = {_stem(spec.name): spec for spec in specs}
    by_stem.update({_stem(name): spec for spec in specs for name in spec.transformer_classes})
    close = difflib.get_close_matches(_stem(class_name), list(by_stem), n=6, cutoff=0.4)
    nearest = list({by_stem[stem].name: by_stem[stem] for stem in close}.values())[:3]
    listed = ", ".join(f"{spec.name!r} ({', '.join(spec.transformer_classes)})" for spec in nearest)
    hint = f"closest adapters: {listed}" if nearest else "no adapter has a similar name"
    supported = sorted(name for spec in specs for name in spec.transformer_classes)
    return (
        f"no adapter for {class_name}; {hint}. Supported transformer classes: {supported}. To add one, write a new "
        f"YAML in {adapters_dir()} (copy the closest spec and list {class_name!r} under transformer_classes; "
        f"every key is explained in the comments of the shipped files). {ADAPTERS_DOC}"
    )


def __getattr__(name: str) -> Any:
    if name == "CfgSpec":  # the old name of GuidanceSpec
        warnings.warn("sae_lens_dit.hooking.adapters.CfgSpec is now GuidanceSpec", DeprecationWarning, stacklevel=2)
        return GuidanceSpec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
