"""The files of a dashboard site: written only when their bytes change, removed only when ours.

Why a separate module: a dashboard folder is rebuilt in place (images are named by a hash of their
content, so a rebuild reuses them), and the rules that keep a rebuild from touching anything else
(the ownership marker, a manifest of what the last build wrote, a journal of what a build in
progress is writing, paths confined to the folder) are independent of what the pages show.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

from sae_lens_dit.guards.output_dirs import check_claimable, claim, confined

MANIFEST = "manifest.json"
"""Lists every file a build wrote (path -> sha256); only these are ever replaced or removed."""
JOURNAL = ".manifest.pending"
"""Paths a build in progress is writing (one a line), so a killed build's files are known too."""
KIND = "dashboard"
"""The job kind in the folder's ownership marker (`output_dirs.MARKER`)."""


class SiteFiles:
    """The files of one dashboard build under `root`, with counts of what was written and reused.

    The folder is claimed (`output_dirs.claim`, marker first) before the first file is written, and
    each path is added to a hidden journal before its file is, so a build that is killed or fails
    midway leaves a folder the next build adopts: it removes what the broken build wrote and no
    longer produces. Only paths confined to `root` are ever replaced or removed.
    """

    def __init__(self, root: Path):
        self.root = root
        adopted = check_claimable(root, KIND, legacy=(MANIFEST,), flag="--output-dir")
        self._old: set[str] = set()
        if adopted:
            self._old = set(self._read_manifest()) | set(self._read_journal())
        self.files: dict[str, str] = {}
        self.written = self.reused = self.removed = 0
        self._journal = None

    def _read_manifest(self) -> list[str]:
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            return []
        try:
            listed = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{manifest} is not a dashboard manifest ({err}); delete it, or choose a new --output-dir"
            ) from None
        if not isinstance(listed, dict):
            raise ValueError(f"{manifest}: 'files' must map paths to hashes; choose a new --output-dir")
        for rel in listed:
            confined(self.root, rel, str(manifest))
        return list(listed)

    def _read_journal(self) -> list[str]:
        journal = self.root / JOURNAL
        lines = journal.read_text().splitlines() if journal.is_file() else []
        for rel in lines:
            confined(self.root, rel, str(journal))
        return lines

    def write(self, rel: str, data: bytes) -> str:
        """Write `data` at `rel` unless the file already holds exactly these bytes; returns `rel`."""
        path = confined(self.root, rel, "the dashboard")
        if self._journal is None:
            claim(self.root, KIND, legacy=(MANIFEST,))
            self._journal = (self.root / JOURNAL).open("a")
        if rel not in self.files and rel not in self._old:
            self._journal.write(rel + "\n")
            self._journal.flush()
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            self.reused += 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            self.written += 1
        self.files[rel] = hashlib.sha256(data).hexdigest()
        return rel

    def owns(self, rel: str) -> bool:
        """Whether `rel` was written by this build or listed by an earlier one (never a file put there by hand)."""
        return rel in self.files or rel in self._old

    def keep(self, rel: str, data: bytes) -> str:
        """Record the file at `rel`, already holding `data` (just read from it), as produced by this build."""
        confined(self.root, rel, "the dashboard")
        self.reused += 1
        self.files[rel] = hashlib.sha256(data).hexdigest()
        return rel

    def image(self, png: bytes, folder: str) -> str:
        """Store a PNG under `folder`, named by its content hash (identical images are stored once)."""
        rel = f"{folder}/{hashlib.sha256(png).hexdigest()[:20]}.png"
        return rel if rel in self.files else self.write(rel, png)

    def finish(self) -> None:
        """Remove files of earlier (or broken) builds that this build did not produce, then write the
        manifest and drop the journal."""
        for rel in sorted(self._old - set(self.files)):
            path = confined(self.root, rel)
            if path.is_file():
                path.unlink()
                self.removed += 1
        for rel in self._old:  # a killed build may have left a file half written
            confined(self.root, rel).with_name(PurePosixPath(rel).name + ".tmp").unlink(missing_ok=True)
        text = json.dumps({"files": dict(sorted(self.files.items()))}, indent=1)
        tmp = self.root / f".{MANIFEST}.tmp"
        tmp.write_text(text + "\n")
        tmp.replace(self.root / MANIFEST)
        if self._journal is not None:
            self._journal.close()
        (self.root / JOURNAL).unlink(missing_ok=True)
