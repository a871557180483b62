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
would make them; loading one raises `ReleaseNotPublishedError` with those commands. The entries'
schema and validation live in `sae_lens_dit.hub.release_schema`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
from safetensors import safe_open

from sae_lens_dit.conventions import CONCEPTS_DIR, CONCEPTS_INDEX, RELEASES_FILENAME
from sae_lens_dit.hub.release_schema import (
    COMMIT_SHA,
    HOOK_NAME,
    LOADER_PREFIX,
    RELEASE_ID,
    Release,
    ReleaseEntryError,
    ReleaseSAE,
    ReleaseStatus,
    parse_release,
)
from sae_lens_dit.resources import pretrained_dir
from sae_lens_dit.saes.loading import SAEFilesError, validated_disk_loader, validated_huggingface_loader

__all__ = [  # the schema's names are answered here too, as before the split
    "COMMIT_SHA",
    "HOOK_NAME",
    "LOADER_PREFIX",
    "RELEASE_ID",
    "Release",
    "ReleaseEntryError",
    "ReleaseLoader",
    "ReleaseNotCachedError",
    "ReleaseNotPublishedError",
    "ReleaseRegistryWarning",
    "ReleaseSAE",
    "ReleaseStatus",
    "default_releases_file",
    "get_release",
    "release_concepts",
    "list_releases",
    "parse_release",
    "register_releases",
]


class ReleaseRegistryWarning(UserWarning):
    """A `releases.yaml` entry that was skipped because it is malformed."""


class ReleaseNotPublishedError(FileNotFoundError):
    """A registered release whose weights do not exist yet."""


class ReleaseNotCachedError(FileNotFoundError):
    """A Hub release that is neither in the local Hub cache nor downloadable (offline)."""


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
        except ReleaseEntryError as error:
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


def release_concepts(release_id: str) -> Path:
    """The steering-concepts folder of a bundled release (raises, naming the release, when it has none)."""
    release = get_release(release_id)
    folder = pretrained_dir() / release.bundled / CONCEPTS_DIR if release.bundled else None
    if folder is None or not (folder / CONCEPTS_INDEX).exists():
        raise ValueError(f"release {release_id!r} ships no steering concepts; use --spec or --latent")
    return folder
