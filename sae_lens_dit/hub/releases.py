"""The pretrained-dictionary registry: `pretrained/releases.yaml`, merged into SAELens's directory.

SAELens resolves `SAE.from_pretrained(release, sae_id)` through two module-level tables: the
functools-cached dict returned by `get_pretrained_saes_directory()` (release -> repo id, SAE id ->
folder, expected metrics, loader name) and `NAMED_PRETRAINED_SAE_LOADERS` (loader name -> function).
`register_releases` validates each entry of `releases.yaml` on its own, adds the valid ones to both
tables (one loader per release, named `sae_lens_dit:<release id>`, which knows where the release's
files are) and reports each malformed entry as a `ReleaseRegistryWarning` naming the release and
field. It never raises and never touches SAELens's own releases, so a bad entry costs that entry
only. Calling it again replaces this package's entries (idempotent). Should anyone clear SAELens's
directory cache, calling `register_releases()` again puts the entries back.

A release's source is a folder bundled in the wheel (`pretrained/<folder>/<sae path>/cfg.json`)
or a Hub repo pinned to a commit (read through `huggingface_hub`: its cache, `HF_HUB_OFFLINE`,
`force_download`). Releases with status "not yet published" are listed with the commands that
would make them; loading one raises `ReleaseNotPublishedError` with those commands.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import yaml
from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError
from sae_lens.constants import SAE_CFG_FILENAME, SPARSITY_FILENAME
from sae_lens.loading.pretrained_sae_loaders import (
    NAMED_PRETRAINED_SAE_CONFIG_GETTERS,
    NAMED_PRETRAINED_SAE_LOADERS,
    get_sae_lens_config_from_disk,
)
from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup, get_pretrained_saes_directory
from sae_lens.registry import SAE_CLASS_REGISTRY
from safetensors import safe_open

from sae_lens_dit.conventions import RELEASES_FILENAME, TIMESTEP_CONVENTION, Branch
from sae_lens_dit.hooking.adapters import shipped_specs
from sae_lens_dit.resources import pretrained_dir
from sae_lens_dit.saes.loading import SAEFilesError, validated_disk_loader, validated_huggingface_loader

LOADER_PREFIX = "sae_lens_dit:"
"""A release's loader is registered in SAELens as `sae_lens_dit:<release id>`."""

ReleaseStatus = Literal["published", "not yet published"]
RELEASE_ID = re.compile(r"^tide-[a-z0-9]+(-[a-z0-9]+)*/[A-Za-z0-9][A-Za-z0-9._-]*$")
"""Release ids follow `tide-<backbone>/<variant>`."""
HOOK_NAME = re.compile(r"^(blocks|single_blocks)\.\d+\.([a-z_]+\.)?hook_[a-z_]+$")
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


class ReleaseRegistryWarning(UserWarning):
    """A `releases.yaml` entry that was skipped because it is malformed."""


class ReleaseNotPublishedError(FileNotFoundError):
    """A registered release whose weights do not exist yet."""


class ReleaseNotCachedError(FileNotFoundError):
    """A Hub release that is neither in the local Hub cache nor downloadable (offline)."""


class _EntryError(ValueError):
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


# -- parsing and validation -------------------------------------------------------------------------
def _get(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = "", nullable: bool = False):
    name = f"{where}{key}"
    if key not in data:
        raise _EntryError(name, "missing")
    value = data[key]
    if value is None and nullable:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind == (int, float)):  # YAML true is no metric
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _EntryError(name, f"expected {expected}{' or null' if nullable else ''}, received {value!r}")
    return value


def _check_keys(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _EntryError(f"{where}{unknown[0]}", f"unknown field; allowed fields are {sorted(allowed)}")


def _parse_sae(data: Any, index: int, status: str) -> ReleaseSAE:
    where = f"saes[{index}]."
    if not isinstance(data, dict):
        raise _EntryError(f"saes[{index}]", f"expected a mapping, received {data!r}")
    _check_keys(data, _SAE_KEYS, where)
    metrics = {
        key: _get(data, key, (int, float), where, nullable=True)
        for key in (*_METRICS, *(k for k in _OPTIONAL_METRICS if k in data))
    }
    if status == "published":
        for key in ("variance_explained", "l0"):
            if metrics[key] is None:
                raise _EntryError(f"{where}{key}", "a published release needs its measured value, received null")
    hook = _get(data, "hook", str, where)
    if not HOOK_NAME.match(hook):
        raise _EntryError(f"{where}hook", f"expected a HookedDiT hook name like blocks.3.hook_resid_post, got {hook!r}")
    architecture = _get(data, "architecture", str, where)
    if architecture not in SAE_CLASS_REGISTRY:
        raise _EntryError(
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
        raise _EntryError("id", f"expected tide-<backbone>/<variant> (e.g. tide-dit-tiny/digits), got {release_id!r}")
    if not isinstance(data, dict):
        raise _EntryError("(entry)", f"expected a mapping of fields, received {data!r}")
    _check_keys(data, _RELEASE_KEYS, "")
    status = _get(data, "status", str)
    if status not in get_args(ReleaseStatus):
        raise _EntryError("status", f"expected one of {get_args(ReleaseStatus)}, received {status!r}")
    source = _parse_source(_get(data, "source", dict), status, root)
    cfg_branch = _get(data, "cfg_branch", str)
    if cfg_branch not in get_args(Branch):
        raise _EntryError("cfg_branch", f"expected one of {get_args(Branch)}, received {cfg_branch!r}")
    convention = _get(data, "timestep_convention", str)
    if convention != TIMESTEP_CONVENTION:
        raise _EntryError(
            "timestep_convention", f"expected {TIMESTEP_CONVENTION!r} (what HookedDiT feeds SAEs), got {convention!r}"
        )
    adapter = _get(data, "adapter", str)
    adapters = sorted(spec.name for spec in shipped_specs())
    if adapter not in adapters:
        raise _EntryError("adapter", f"expected a shipped adapter {adapters}, received {adapter!r}")
    raw_saes = _get(data, "saes", list)
    if not raw_saes:
        raise _EntryError("saes", "expected at least one SAE")
    saes = tuple(_parse_sae(sae, i, status) for i, sae in enumerate(raw_saes))
    for key in ("id", "path"):
        values = [getattr(sae, key) for sae in saes]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise _EntryError(f"saes[].{key}", f"must be unique within the release, repeated: {duplicates}")
    if source.get("bundled") is not None:
        for i, sae in enumerate(saes):
            if not (root / source["bundled"] / sae.path / SAE_CFG_FILENAME).is_file():
                raise _EntryError(f"saes[{i}].path", f"no {SAE_CFG_FILENAME} in {root / source['bundled'] / sae.path}")
    links = data.get("links") or {}
    if not isinstance(links, dict) or not all(isinstance(v, str) for v in links.values()):
        raise _EntryError("links", f"expected a mapping of name -> URL, received {links!r}")
    publish_command = _get(data, "publish_command", str, nullable=True) if "publish_command" in data else None
    if source.get("repo_id") and status != "published" and publish_command is None:
        raise _EntryError("publish_command", "an unpublished Hub release needs the command that publishes it")
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
        raise _EntryError("source", f"expected exactly one of 'bundled' or 'hub', received {sorted(source)}")
    if kinds == ["bundled"]:
        folder = _get(source, "bundled", str, "source.")
        if status != "published":
            raise _EntryError("status", f"a bundled release is published by definition, received {status!r}")
        if not (root / folder).is_dir():
            raise _EntryError("source.bundled", f"folder {root / folder} does not exist")
        return {"bundled": folder}
    hub = _get(source, "hub", dict, "source.")
    _check_keys(hub, {"repo_id", "revision"}, "source.hub.")
    repo_id = _get(hub, "repo_id", str, "source.hub.")
    if repo_id.count("/") != 1:
        raise _EntryError("source.hub.repo_id", f"expected owner/name, received {repo_id!r}")
    revision = _get(hub, "revision", str, "source.hub.", nullable=True)
    if status == "published" and (revision is None or not COMMIT_SHA.match(revision)):
        raise _EntryError(
            "source.hub.revision", f"a published Hub release is pinned to a 40-hex commit sha, received {revision!r}"
        )
    return {"repo_id": repo_id, "revision": revision}


# -- loading the weights ----------------------------------------------------------------------------
def _read_log_sparsity(path: Path, device: str) -> torch.Tensor | None:
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt", device=device) as file:  # type: ignore[no-untyped-call]
        return file.get_tensor("sparsity")


@dataclass(frozen=True)
class ReleaseLoader:
    """SAELens's `PretrainedSaeHuggingfaceLoader` for one release: bundled folder, pinned Hub commit,
    or a clear error for a release that is not published yet. Every SAE goes through the validating
    loaders, and its cfg.json must name the hook and architecture the registry promises."""

    release: Release

    def __call__(
        self,
        repo_id: str,
        folder_name: str,
        device: str = "cpu",
        force_download: bool = False,
        cfg_overrides: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor | None]:
        expected = self.release.sae_by_path(folder_name)
        if self.release.bundled is not None:
            folder = pretrained_dir() / self.release.bundled / folder_name
            cfg_dict, state_dict = validated_disk_loader(folder, device, cfg_overrides)
            log_sparsity = _read_log_sparsity(folder / SPARSITY_FILENAME, device)
        else:
            self._check_published(expected)
            try:
                cfg_dict, state_dict, log_sparsity = validated_huggingface_loader(
                    repo_id, folder_name, device, force_download, cfg_overrides, revision=self.release.revision
                )
            except LocalEntryNotFoundError as error:
                raise self._not_cached(folder_name) from error
        self._check_matches(cfg_dict, expected)
        return cfg_dict, state_dict, log_sparsity

    def config(
        self,
        repo_id: str,
        folder_name: str,
        device: str | None = None,
        force_download: bool = False,
        cfg_overrides: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """SAELens's `PretrainedSaeConfigHuggingfaceLoader` for the release (cfg.json only)."""
        expected = self.release.sae_by_path(folder_name)
        if self.release.bundled is not None:
            return get_sae_lens_config_from_disk(
                pretrained_dir() / self.release.bundled / folder_name, device, cfg_overrides
            )
        self._check_published(expected)
        try:
            path = hf_hub_download(
                repo_id,
                f"{folder_name}/{SAE_CFG_FILENAME}",
                revision=self.release.revision,
                force_download=force_download,
            )
        except LocalEntryNotFoundError as error:
            raise self._not_cached(folder_name) from error
        return get_sae_lens_config_from_disk(Path(path).parent, device, cfg_overrides)

    def _check_published(self, sae: ReleaseSAE) -> None:
        if self.release.status == "published":
            return
        raise ReleaseNotPublishedError(
            f"release {self.release.id!r} (SAE {sae.id!r}) is registered but not yet published: no weights exist in "
            f"{self.release.repo_id} yet. To make them, train on a GPU with\n    {self.release.training_command}\n"
            f"then publish with\n    {self.release.publish_command}\n"
            f"and load the folder meanwhile with SAE.load_from_disk(<output folder>)."
        )

    def _not_cached(self, folder_name: str) -> ReleaseNotCachedError:
        return ReleaseNotCachedError(
            f"release {self.release.id!r}: {self.release.repo_id}@{self.release.revision} "
            f"{folder_name}/ is not in the Hub cache ({constants.HF_HUB_CACHE}) and cannot be downloaded "
            f"(HF_HUB_OFFLINE={int(constants.HF_HUB_OFFLINE)}). Download it once online "
            f"(`hf download {self.release.repo_id} --revision {self.release.revision}`), or point HF_HUB_CACHE "
            f"at a cache that holds it."
        )

    def _check_matches(self, cfg_dict: dict[str, Any], sae: ReleaseSAE) -> None:
        hook = (cfg_dict.get("metadata") or {}).get("hook_name", cfg_dict.get("hook_name"))
        received = {"architecture": cfg_dict.get("architecture"), "hook": hook}
        expected = {"architecture": sae.architecture, "hook": sae.hook}
        if received != expected:
            raise SAEFilesError(
                f"release {self.release.id!r} SAE {sae.id!r}: the registry promises {expected} but its cfg.json "
                f"says {received}; fix releases.yaml or the release's files"
            )


# -- registration -----------------------------------------------------------------------------------
_REGISTERED: dict[str, Release] = {}


def default_releases_file() -> Path:
    return pretrained_dir() / RELEASES_FILENAME


def register_releases(path: str | Path | None = None) -> dict[str, Release]:
    """Validate `releases.yaml` (default: the shipped one) and register its releases with SAELens,
    replacing the ones this package registered before. Each malformed entry is skipped with a
    `ReleaseRegistryWarning` naming its release id and field; nothing raises."""
    source = Path(path) if path is not None else default_releases_file()
    releases = _read_releases(source)
    directory = get_pretrained_saes_directory()
    for release_id in _REGISTERED:
        directory.pop(release_id, None)
        NAMED_PRETRAINED_SAE_LOADERS.pop(LOADER_PREFIX + release_id, None)
        NAMED_PRETRAINED_SAE_CONFIG_GETTERS.pop(LOADER_PREFIX + release_id, None)
    _REGISTERED.clear()
    for release in releases:
        if release.id in directory:
            _warn(source, release.id, "id", "SAELens already has a release of this name; entry skipped")
            continue
        loader = ReleaseLoader(release)
        directory[release.id] = release.lookup()
        NAMED_PRETRAINED_SAE_LOADERS[LOADER_PREFIX + release.id] = loader
        NAMED_PRETRAINED_SAE_CONFIG_GETTERS[LOADER_PREFIX + release.id] = loader.config
        _REGISTERED[release.id] = release
    return dict(_REGISTERED)


def _read_releases(source: Path) -> list[Release]:
    try:
        data = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as error:
        _warn(source, "(all)", "(file)", f"cannot read it ({type(error).__name__}: {error}); no release registered")
        return []
    if not isinstance(data, dict):
        _warn(source, "(all)", "(file)", f"expected a mapping of release id -> entry, received {type(data).__name__}")
        return []
    releases = []
    for release_id, entry in data.items():
        try:
            releases.append(parse_release(release_id, entry, source.parent))
        except _EntryError as error:
            _warn(source, release_id, "", str(error))
    return releases


def _warn(source: Path, release_id: Any, field_name: str, problem: str) -> None:
    where = f"field {field_name!r}: " if field_name else ""
    warnings.warn(
        f"{source}: release {release_id!r} skipped: {where}{problem}. Fix the entry; the other releases "
        f"and SAELens's own are unaffected.",
        ReleaseRegistryWarning,
        stacklevel=3,
    )


def list_releases() -> dict[str, list[str]]:
    """{release id: [sae ids]} for every registered release, bundled and Hub (including the ones
    not yet published; `get_release(id).status` tells which)."""
    return {release_id: [sae.id for sae in release.saes] for release_id, release in _REGISTERED.items()}


def get_release(release_id: str) -> Release:
    """A registered release; an unknown id lists the known ones."""
    if release_id not in _REGISTERED:
        raise ValueError(f"unknown release {release_id!r}; registered releases are {sorted(_REGISTERED)}")
    return _REGISTERED[release_id]
