"""The schema of `pretrained/releases.yaml`: one `Release` per entry, each validated on its own.

Why a module of its own: the entries are data with two readers, registration with SAELens
(`sae_lens_dit.hub.releases`) and `publish`, which writes an entry and checks it as the registry
will. Parsing changes no SAELens table and loads no weights; every error is a `ReleaseEntryError`
naming the field, so the registry can skip just that entry.

A release's source is a folder bundled in the wheel (`pretrained/<folder>/<sae path>/cfg.json`)
or a Hub repo pinned to a commit; releases with status "not yet published" carry the commands
that would make them.

>>> RELEASE_ID.match("tide-dit-tiny/digits") is not None, RELEASE_ID.match("dit/digits") is not None
(True, False)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from sae_lens.constants import SAE_CFG_FILENAME
from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup
from sae_lens.registry import SAE_CLASS_REGISTRY

from sae_lens_dit.conventions import TIMESTEP_CONVENTION, Branch
from sae_lens_dit.hooking.adapters import shipped_specs

LOADER_PREFIX = "sae_lens_dit:"
"""A release's loader is registered in SAELens as `sae_lens_dit:<release id>`."""

ReleaseStatus = Literal["published", "not yet published"]
RELEASE_ID = re.compile(r"^tide-[a-z0-9]+(-[a-z0-9]+)*/[A-Za-z0-9][A-Za-z0-9._-]*$")
"""Release ids follow `tide-<backbone>/<variant>`."""
HOOK_NAME = re.compile(r"^[a-z][a-z_0-9]*(\.\d+)+(\.[a-z][a-z_0-9]*(\.\d+)*)*\.hook_[a-z_]+$")
"""A HookedDiT hook name: a stack prefix, its indices, optional sub-parts, a `hook_*` leaf (`blocks.3.hook_resid_post`,
`single_blocks.0.attn.hook_out`, a UNet's `down.2.1.hook_update` or `up.0.1.blocks.0.mlp.hook_in`)."""
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_RELEASE_KEYS = {
    "status",
    "source",
    "model",
    "backbone",
    "adapter",
    "timestep_convention",
    "cfg_branch",
    "harvest",
    "saes",
    "links",
    "training_command",
    "publish_command",
}
_METRICS = ("variance_explained", "l0", "denoising_loss_recovered")  # required (null until measured)
_OPTIONAL_METRICS = ("dead_fraction", "dense_fraction")  # may be left out
_SAE_KEYS = {"id", "path", "hook", "architecture", *_METRICS, *_OPTIONAL_METRICS}


class ReleaseEntryError(ValueError):
    """A `releases.yaml` entry that is malformed; the message names the field."""

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"field {field_name!r}: {problem}")


@dataclass(frozen=True)
class ReleaseSAE:
    """One dictionary of a release."""

    id: str
    """The `sae_id` of `SAE.from_pretrained(release, sae_id)`."""
    path: str
    """Folder of its cfg.json and weights inside the release's bundled folder or Hub repo."""
    hook: str
    """Hook point it reads (`HookedDiT` hook name)."""
    architecture: str
    """SAELens architecture of its cfg.json (tide, topk, ...)."""
    variance_explained: float | None
    """Expected mean held-out explained variance over timestep buckets (None until measured)."""
    l0: float | None
    """Expected active latents per token."""
    denoising_loss_recovered: float | None
    """Expected share of the backbone's denoising loss recovered with the SAE spliced in (None until measured)."""
    dead_fraction: float | None = None
    """Share of latents that never fire on fresh samples (every timestep, both CFG branches; None until measured)."""
    dense_fraction: float | None = None
    """Share of latents firing on more than 10% of those rows (None until measured)."""


@dataclass(frozen=True)
class Release:
    """One entry of `releases.yaml`."""

    id: str
    status: ReleaseStatus
    model: str
    """Backbone as `DiTSAERunnerConfig.model` names it (bundled name or Hub repo id)."""
    backbone: str
    """Human description of the backbone."""
    adapter: str
    """Name of the adapter spec (`adapters/<name>.yaml`) that hooks the backbone."""
    timestep_convention: str
    cfg_branch: Branch
    """CFG branch(es) the training activations came from."""
    harvest: dict[str, Any]
    """Harvest settings (`HarvestConfig.to_dict()` layout)."""
    saes: tuple[ReleaseSAE, ...]
    training_command: str
    """The command that trained the release (or, when not yet published, trains it)."""
    bundled: str | None = None
    """Folder under `pretrained/` holding the release (bundled releases)."""
    repo_id: str | None = None
    """Hub repo holding the release (Hub releases)."""
    revision: str | None = None
    """Hub commit the release is pinned to."""
    publish_command: str | None = None
    """The command that publishes it (Hub releases)."""
    links: dict[str, str] = field(default_factory=dict)

    def sae(self, sae_id: str) -> ReleaseSAE:
        for sae in self.saes:
            if sae.id == sae_id:
                return sae
        raise ValueError(f"release {self.id!r} has no SAE {sae_id!r}; its SAE ids are {[s.id for s in self.saes]}")

    def sae_by_path(self, path: str) -> ReleaseSAE:
        for sae in self.saes:
            if sae.path == path:
                return sae
        raise ValueError(
            f"release {self.id!r} has no SAE folder {path!r}; its folders are {[s.path for s in self.saes]}"
        )

    def lookup(self) -> PretrainedSAELookup:
        """The entry as SAELens's directory holds releases."""
        return PretrainedSAELookup(
            release=self.id,
            repo_id=self.repo_id or self.id,
            model=self.model,
            conversion_func=LOADER_PREFIX + self.id,
            saes_map={sae.id: sae.path for sae in self.saes},
            expected_var_explained={s.id: s.variance_explained for s in self.saes if s.variance_explained is not None},
            expected_l0={s.id: s.l0 for s in self.saes if s.l0 is not None},
            neuronpedia_id={},
            norm_scaling_factor={},
            config_overrides=None,
        )


def _get(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = "", nullable: bool = False):
    name = f"{where}{key}"
    if key not in data:
        raise ReleaseEntryError(name, "missing")
    value = data[key]
    if value is None and nullable:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind == (int, float)):  # YAML true is no metric
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ReleaseEntryError(name, f"expected {expected}{' or null' if nullable else ''}, received {value!r}")
    return value


def _check_keys(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ReleaseEntryError(f"{where}{unknown[0]}", f"unknown field; allowed fields are {sorted(allowed)}")


def _parse_sae(data: Any, index: int, status: str) -> ReleaseSAE:
    where = f"saes[{index}]."
    if not isinstance(data, dict):
        raise ReleaseEntryError(f"saes[{index}]", f"expected a mapping, received {data!r}")
    _check_keys(data, _SAE_KEYS, where)
    metrics = {
        key: _get(data, key, (int, float), where, nullable=True)
        for key in (*_METRICS, *(k for k in _OPTIONAL_METRICS if k in data))
    }
    if status == "published":
        for key in ("variance_explained", "l0"):
            if metrics[key] is None:
                raise ReleaseEntryError(f"{where}{key}", "a published release needs its measured value, received null")
    hook = _get(data, "hook", str, where)
    if not HOOK_NAME.match(hook):
        raise ReleaseEntryError(
            f"{where}hook",
            f"expected a HookedDiT hook name like blocks.3.hook_resid_post or down.2.1.hook_update, got {hook!r}",
        )
    architecture = _get(data, "architecture", str, where)
    if architecture not in SAE_CLASS_REGISTRY:
        raise ReleaseEntryError(
            f"{where}architecture",
            f"{architecture!r} is not registered with SAELens; known: {sorted(SAE_CLASS_REGISTRY)}",
        )
    return ReleaseSAE(
        id=_get(data, "id", str, where),
        path=_get(data, "path", str, where),
        hook=hook,
        architecture=architecture,
        variance_explained=metrics["variance_explained"],
        l0=metrics["l0"],
        denoising_loss_recovered=metrics["denoising_loss_recovered"],
        dead_fraction=metrics.get("dead_fraction"),
        dense_fraction=metrics.get("dense_fraction"),
    )


def parse_release(release_id: Any, data: Any, root: Path) -> Release:
    """One validated entry; raises ValueError naming the field. Bundled folders are looked for in `root`."""
    if not isinstance(release_id, str) or not RELEASE_ID.match(release_id):
        raise ReleaseEntryError(
            "id", f"expected tide-<backbone>/<variant> (e.g. tide-dit-tiny/digits), got {release_id!r}"
        )
    if not isinstance(data, dict):
        raise ReleaseEntryError("(entry)", f"expected a mapping of fields, received {data!r}")
    _check_keys(data, _RELEASE_KEYS, "")
    status = _get(data, "status", str)
    if status not in get_args(ReleaseStatus):
        raise ReleaseEntryError("status", f"expected one of {get_args(ReleaseStatus)}, received {status!r}")
    source = _parse_source(_get(data, "source", dict), status, root)
    cfg_branch = _get(data, "cfg_branch", str)
    if cfg_branch not in get_args(Branch):
        raise ReleaseEntryError("cfg_branch", f"expected one of {get_args(Branch)}, received {cfg_branch!r}")
    convention = _get(data, "timestep_convention", str)
    if convention != TIMESTEP_CONVENTION:
        raise ReleaseEntryError(
            "timestep_convention", f"expected {TIMESTEP_CONVENTION!r} (what HookedDiT feeds SAEs), got {convention!r}"
        )
    adapter = _get(data, "adapter", str)
    adapters = sorted(spec.name for spec in shipped_specs())
    if adapter not in adapters:
        raise ReleaseEntryError("adapter", f"expected a shipped adapter {adapters}, received {adapter!r}")
    raw_saes = _get(data, "saes", list)
    if not raw_saes:
        raise ReleaseEntryError("saes", "expected at least one SAE")
    saes = tuple(_parse_sae(sae, i, status) for i, sae in enumerate(raw_saes))
    for key in ("id", "path"):
        values = [getattr(sae, key) for sae in saes]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise ReleaseEntryError(f"saes[].{key}", f"must be unique within the release, repeated: {duplicates}")
    if source.get("bundled") is not None:
        for i, sae in enumerate(saes):
            if not (root / source["bundled"] / sae.path / SAE_CFG_FILENAME).is_file():
                raise ReleaseEntryError(
                    f"saes[{i}].path", f"no {SAE_CFG_FILENAME} in {root / source['bundled'] / sae.path}"
                )
    links = data.get("links") or {}
    if not isinstance(links, dict) or not all(isinstance(v, str) for v in links.values()):
        raise ReleaseEntryError("links", f"expected a mapping of name -> URL, received {links!r}")
    publish_command = _get(data, "publish_command", str, nullable=True) if "publish_command" in data else None
    if source.get("repo_id") and status != "published" and publish_command is None:
        raise ReleaseEntryError("publish_command", "an unpublished Hub release needs the command that publishes it")
    return Release(
        id=release_id,
        status=status,
        model=_get(data, "model", str),
        backbone=_get(data, "backbone", str),
        adapter=adapter,
        timestep_convention=convention,
        cfg_branch=cfg_branch,
        harvest=_get(data, "harvest", dict),
        saes=saes,
        training_command=_get(data, "training_command", str),
        publish_command=publish_command,
        links=dict(links),
        **source,
    )


def _parse_source(source: dict[str, Any], status: str, root: Path) -> dict[str, str | None]:
    kinds = sorted(set(source) & {"bundled", "hub"})
    if len(kinds) != 1 or set(source) - {"bundled", "hub"}:
        raise ReleaseEntryError("source", f"expected exactly one of 'bundled' or 'hub', received {sorted(source)}")
    if kinds == ["bundled"]:
        folder = _get(source, "bundled", str, "source.")
        if status != "published":
            raise ReleaseEntryError("status", f"a bundled release is published by definition, received {status!r}")
        if not (root / folder).is_dir():
            raise ReleaseEntryError("source.bundled", f"folder {root / folder} does not exist")
        return {"bundled": folder}
    hub = _get(source, "hub", dict, "source.")
    _check_keys(hub, {"repo_id", "revision"}, "source.hub.")
    repo_id = _get(hub, "repo_id", str, "source.hub.")
    if repo_id.count("/") != 1:
        raise ReleaseEntryError("source.hub.repo_id", f"expected owner/name, received {repo_id!r}")
    revision = _get(hub, "revision", str, "source.hub.", nullable=True)
    if status == "published" and (revision is None or not COMMIT_SHA.match(revision)):
        raise ReleaseEntryError(
            "source.hub.revision", f"a published Hub release is pinned to a 40-hex commit sha, received {revision!r}"
        )
    return {"repo_id": repo_id, "revision": revision}
