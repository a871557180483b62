"""Content-addressed cache of a dashboard build's expensive data, kept inside the dashboard folder.

Why: sampling the backbone (and sampling the steering previews) is most of a build; a rebuild with
unchanged inputs should sample nothing. Each cache file is named by a hash of everything that
determines its content (a digest of the backbone's weights and configs, or of the SAE's, the hooks,
seed, steps, guidance, number of images, batch size, device and `FORMAT`), and repeats that hash in
its safetensors metadata, which is checked on load: a changed input gives another name, so the cache
never returns stale data; an unreadable or mismatched file is a miss and is recomputed. Files go
through `SiteFiles`, so they are listed in the manifest, confined to the folder, and removed by the
first build that no longer uses them. Tensors only, in safetensors (no pickle); other values travel
as JSON in the metadata.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import Tensor

from sae_lens_dit.analysis.dashboard.files import SiteFiles
from sae_lens_dit.guards.output_dirs import confined

FOLDER = "cache"
"""Cache files live under `<output>/cache/`."""
FORMAT = 3
"""Bumped whenever what a cache file holds, or how it is computed, changes: old files then miss. 2: previews
sampled in batches (one latent per sample) and stored as [H, W, C]; summaries from one encoder-only pass. 3: previews
resumed at their window's first step from the unedited sample's latents (`interventions.resume`)."""
META = "sae_lens_dit.dashboard"
"""The one metadata entry: JSON {"key": the key the file was written under (checked on load), "values": ...}. One
entry, because safetensors writes a metadata map in no fixed order and cache files must be byte-stable."""


def digest(*parts: Any) -> str:
    """sha256 (hex) of JSON-serialisable `parts` (other values by `repr`), with the cache `FORMAT`."""
    text = json.dumps([FORMAT, *parts], sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def module_digest(*modules: Any) -> str:
    """sha256 of modules' weights (every state-dict tensor: name, dtype, shape, bytes) and their configs."""
    h = hashlib.sha256()
    for module in modules:
        if module is None:
            h.update(b"none")
            continue
        h.update(type(module).__name__.encode())
        config = getattr(module, "config", None) or getattr(module, "cfg", None)
        if config is not None:
            h.update(_config_text(config).encode())
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _config_text(config: Any) -> str:
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    elif hasattr(config, "__dict__"):
        config = vars(config)
    return json.dumps(config, sort_keys=True, default=repr)


class Cache:
    """Cache files of one build, read and written through its `SiteFiles`."""

    def __init__(self, files_: SiteFiles):
        self.files = files_
        self.hits = self.misses = 0

    def load(self, rel: str, key: str) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
        """(tensors, JSON metadata) of the cache file `rel` if it exists and was written under `key`; else None.
        A hit is kept (listed in this build's manifest)."""
        path = confined(self.files.root, f"{FOLDER}/{rel}", "the dashboard cache")
        if not path.is_file() or not self.files.owns(f"{FOLDER}/{rel}"):
            self.misses += 1
            return None
        data = path.read_bytes()
        try:
            tensors = load_bytes(data)
            meta = json.loads(_metadata(data)[META])
            values = meta["values"]
        except Exception:  # noqa: BLE001 - a damaged or foreign file is a miss, recomputed and overwritten
            self.misses += 1
            return None
        if meta.get("key") != key:
            self.misses += 1
            return None
        self.files.keep(f"{FOLDER}/{rel}", data)
        self.hits += 1
        return tensors, values

    def save(self, rel: str, key: str, tensors: dict[str, Tensor], values: dict[str, Any] | None = None) -> None:
        """Write `tensors` (and JSON `values`) as the cache file `rel` under `key` (unchanged bytes are reused)."""
        ordered = {name: tensors[name].detach().cpu().contiguous() for name in sorted(tensors)}
        meta = {META: json.dumps({"key": key, "values": values or {}}, sort_keys=True)}
        self.files.write(f"{FOLDER}/{rel}", save_bytes(ordered, metadata=meta))


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of safetensors bytes (the JSON header after its 8-byte length)."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]).get("__metadata__") or {}


def source_digest() -> str:
    """sha256 of the dashboard package's own code and assets: a page drawn by other code is never reused."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in {".py", ".js", ".css"}):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


class PageCache:
    """Which latent pages of one SAE a build may keep as they are: page path -> (key of everything the page
    is drawn from, sha256 of its bytes). A page is kept when its key matches and the file on disk still holds
    those bytes; the images it references are kept with it. Stored as a tensor-less cache file."""

    def __init__(self, cache: Cache, key: str):
        self.cache, self.key, self.rel = cache, key, f"pages/{key[:24]}.safetensors"
        hit = cache.load(self.rel, key)
        self.old: dict[str, list[str]] = hit[1].get("pages", {}) if hit else {}
        self.new: dict[str, list[str]] = {}

    def reuse(self, rel: str, key: str) -> bool:
        """Keep the page at `rel` (and its images) if it was drawn from `key` and is unchanged on disk."""
        files = self.cache.files
        if self.old.get(rel, [None])[0] != key or not files.owns(rel):
            return False
        path = confined(files.root, rel, "the dashboard")
        data = path.read_bytes() if path.is_file() else b""
        if hashlib.sha256(data).hexdigest() != self.old[rel][1]:
            return False
        images = [
            PurePosixPath(rel).parent.joinpath(src).as_posix()
            for src in re.findall(r'<img src="([^"]+)"', data.decode())
        ]
        images = [posixpath.normpath(i) for i in images]
        paths = [confined(files.root, i, "the dashboard") for i in images]
        if not all(files.owns(i) and p.is_file() for i, p in zip(images, paths, strict=True)):
            return False
        files.keep(rel, data)
        for i, p in zip(images, paths, strict=True):
            if i not in files.files:
                files.keep(i, p.read_bytes())
        self.new[rel] = self.old[rel]
        return True

    def add(self, rel: str, key: str, data: bytes) -> None:
        self.new[rel] = [key, hashlib.sha256(data).hexdigest()]

    def save(self) -> None:
        """Write the page list unless it is the one loaded (then the loaded file is kept)."""
        if self.new != self.old:
            self.cache.save(self.rel, self.key, {}, {"pages": self.new})
