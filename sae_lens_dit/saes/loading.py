"""Validating loaders for SAEs saved in SAELens's format (`cfg.json` + `sae_weights.safetensors`).

SAELens's own loaders trust the files: a `cfg.json` that lacks a field loads with the field's
default, and NaN weights load as they are. These loaders have SAELens's signatures
(`PretrainedSaeDiskLoader`, `PretrainedSaeHuggingfaceLoader`) and refuse, with a message that
names the file, what is wrong and what to do, any folder that would not load as exactly the SAE
that was saved: unreadable or non-JSON `cfg.json`, missing or unregistered `architecture`, a
missing required field, an invalid value, a truncated or corrupt weights file, weights whose names
or shapes differ from what the config implies, NaN or inf weights.

    SAE.load_from_disk(path, converter=validated_disk_loader)
    SAE.from_pretrained(repo_id, sae_id, converter=validated_huggingface_loader)
    load_sae_folder(path, device)   # the same, with the folder and the device checked first
    weights_digest(sae)             # a fingerprint of the weights, for files that name latents by index

`TideSAE` runs the weights checks itself (`check_state_dict`), so even SAELens's default loaders
cannot load a TIDE SAE whose weights disagree with its config.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.utils import EntryNotFoundError
from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME
from sae_lens.loading.pretrained_sae_loaders import (
    handle_config_defaulting,
    read_sae_components_from_disk,
)
from sae_lens.registry import SAE_CLASS_REGISTRY
from sae_lens.saes.sae import SAE, SAEConfig
from safetensors import SafetensorError, safe_open

from sae_lens_dit.guards.config import check_device

_READER_NEEDS = {"dtype"}  # read by SAELens's weights reader, whatever the config class says


class SAEFilesError(ValueError):
    """An SAE folder that would not load as the SAE that was saved."""


def check_state_dict(sae: SAE[Any], state_dict: dict[str, torch.Tensor], where: str = "cfg.json") -> None:
    """Raise `SAEFilesError` unless `state_dict` has exactly `sae`'s parameter names and shapes
    (as its config implies) and only finite values."""
    expected = {name: tensor.shape for name, tensor in sae.state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = [
        f"{name}: weights {tuple(state_dict[name].shape)}, config implies {tuple(shape)}"
        for name, shape in expected.items()
        if name in state_dict and state_dict[name].shape != shape
    ]
    not_finite = [name for name, tensor in state_dict.items() if not torch.isfinite(tensor).all()]
    problems = []
    if missing:
        problems.append(f"missing from the weights: {missing}")
    if unexpected:
        problems.append(f"in the weights but not implied by the config: {unexpected}")
    if wrong_shape:
        problems.append("shape mismatch (" + "; ".join(wrong_shape) + ")")
    if not_finite:
        problems.append(f"NaN or inf in {not_finite}")
    if problems:
        raise SAEFilesError(
            f"{type(sae).__name__} weights do not match {where} (architecture "
            f"{sae.cfg.architecture()!r}, d_in={sae.cfg.d_in}, d_sae={sae.cfg.d_sae}): "
            + "; ".join(problems)
            + ". Fix cfg.json so it describes the weights file, or re-save the SAE."
        )


def validated_disk_loader(
    path: str | Path, device: str = "cpu", cfg_overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """SAELens's disk loader, refusing any folder that would not load as the SAE that was saved."""
    path = Path(path)
    cfg_dict = _read_cfg(path / SAE_CFG_FILENAME)
    cfg_dict["device"] = device
    cfg_dict.update(cfg_overrides or {})
    weights_path = path / SAE_WEIGHTS_FILENAME
    try:
        cfg_dict, state_dict = read_sae_components_from_disk(cfg_dict, weights_path, device=device)
    except (SafetensorError, OSError, RuntimeError) as error:
        raise SAEFilesError(
            f"{weights_path}: cannot read the weights ({type(error).__name__}: {error}); the file is "
            f"missing, truncated or corrupt: download or save it again"
        ) from error
    sae = _sae_on_meta(cfg_dict, path / SAE_CFG_FILENAME)
    defaulted = sorted(field.name for field in fields(sae.cfg) if field.init and field.name not in cfg_dict)
    where = str(path / SAE_CFG_FILENAME)
    if defaulted:
        where += f" (which lacks {defaulted}: their defaults were assumed)"
    check_state_dict(sae, state_dict, where=where)
    return cfg_dict, state_dict


def validated_huggingface_loader(
    repo_id: str,
    folder_name: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
    revision: str | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor | None]:
    """SAELens's Hub loader (the `upload_saes_to_huggingface` layout), validated as
    `validated_disk_loader`; `revision` pins a commit (None = main); `HF_HUB_OFFLINE=1` reads the
    local Hub cache."""
    cfg_path = hf_hub_download(
        repo_id, f"{folder_name}/{SAE_CFG_FILENAME}", revision=revision, force_download=force_download
    )
    hf_hub_download(repo_id, f"{folder_name}/{SAE_WEIGHTS_FILENAME}", revision=revision, force_download=force_download)
    try:
        sparsity_path = hf_hub_download(
            repo_id, f"{folder_name}/{SPARSITY_FILENAME}", revision=revision, force_download=force_download
        )
    except EntryNotFoundError:
        sparsity_path = None
    cfg_dict, state_dict = validated_disk_loader(Path(cfg_path).parent, device, cfg_overrides)
    log_sparsity = None
    if sparsity_path is not None:
        with safe_open(sparsity_path, framework="pt", device=device) as file:  # type: ignore[no-untyped-call]
            log_sparsity = file.get_tensor("sparsity")
    return cfg_dict, state_dict, log_sparsity


def _read_cfg(cfg_path: Path) -> dict[str, Any]:
    try:
        cfg_dict = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SAEFilesError(
            f"{cfg_path}: cannot read the SAE config ({type(error).__name__}: {error}); download or save it again"
        ) from error
    if not isinstance(cfg_dict, dict):
        raise SAEFilesError(f"{cfg_path}: expected a JSON object, got {type(cfg_dict).__name__}")
    architecture = cfg_dict.get("architecture")
    if architecture not in SAE_CLASS_REGISTRY:
        raise SAEFilesError(
            f"{cfg_path}: architecture {architecture!r} is not registered with SAELens; known: "
            f"{sorted(SAE_CLASS_REGISTRY)}. Fix the 'architecture' field, or import the package "
            f"that registers it (`import sae_lens_dit` for 'tide')"
        )
    cfg_class = SAE_CLASS_REGISTRY[architecture][1]
    required = {
        field.name
        for field in fields(cfg_class)
        if field.init and field.default is MISSING and field.default_factory is MISSING
    }
    missing = sorted((required | _READER_NEEDS) - set(cfg_dict))
    if missing:
        raise SAEFilesError(
            f"{cfg_path}: fields required by architecture {architecture!r} are missing: {missing}; "
            f"add them with the values the SAE was trained with"
        )
    return cfg_dict


def _sae_on_meta(cfg_dict: dict[str, Any], cfg_path: Path) -> SAE[Any]:
    """The SAE `cfg_dict` describes, without memory, to compare the weights against."""
    try:
        cfg = SAEConfig.from_dict({**handle_config_defaulting(dict(cfg_dict)), "device": "meta"})
        return SAE_CLASS_REGISTRY[cfg.architecture()][0](cfg)
    except Exception as error:  # any registered class may refuse its config in its own way
        raise SAEFilesError(
            f"{cfg_path}: invalid SAE config ({type(error).__name__}: {error}); fix the field it names"
        ) from error


def load_sae_folder(folder: str | Path, device: str = "cpu") -> SAE[Any]:
    """The SAE saved in `folder` (SAELens's layout) through `validated_disk_loader`: a missing folder,
    a cfg.json that is not a mapping, truncated weights, weights that disagree with the config or
    hold NaN/inf are refused with a message naming the file; an absent device is reported as such,
    not as a corrupt file."""
    check_device(device)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"SAE folder {folder} does not exist")
    if not (folder / SAE_CFG_FILENAME).is_file():
        raise FileNotFoundError(f"not an SAE folder (no {SAE_CFG_FILENAME}): {folder}")
    return SAE.load_from_disk(str(folder), device=device, converter=validated_disk_loader)


def weights_digest(sae: SAE[Any]) -> str:
    """A short fingerprint of `sae`'s weights (sha256 of every parameter and buffer as float32, by name).

    A steering spec names latents by index; the index means a feature only for the weights it was chosen
    on. Specs store this digest next to their SAE source so a retrained SAE is refused, not silently edited.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(sae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
