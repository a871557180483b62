"""Output folders belong to the user: write only into an empty folder or one this package marked.

Why a marker. Every job (train, harvest, dashboard, eval, edit) writes into a folder the user
names, and a typo'd `--output-dir` must never cost them a file: a folder that already holds an SAE
from elsewhere, their own `README.md`, a half-built dashboard. So the first file a job writes into
a folder is `MARKER` (`.sae-lens-dit.json`, hidden, so `datasets` and browsers ignore it), naming
the kind of job that owns the folder. Afterwards the job may replace its own files there, and a
rerun of the same kind (resume, rebuild, `--overwrite`) is allowed; anything else is refused
before any work, with one line that says what to do.

Folders written before markers existed are recognised by a file only that job writes (a
`runner_cfg.json`, a `harvest_config.json`, a dashboard `manifest.json`) and adopted. Every path
the package deletes is checked by `confined` to lie inside the folder it owns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

MARKER = ".sae-lens-dit.json"
"""The ownership marker: {"written_by": "sae-lens-dit", "kind": <job>}."""
_TMP_PREFIX = f"{MARKER}."


class ForeignFolderError(FileExistsError):
    """An output folder holds files this package did not write (or another job's files)."""


def owner(folder: str | Path) -> str | None:
    """The job kind recorded in `folder`'s marker, or None when it has no (readable) marker."""
    path = Path(folder) / MARKER
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record.get("kind") if isinstance(record, dict) and record.get("written_by") == "sae-lens-dit" else None


def _foreign_entries(folder: Path) -> list[str]:
    """Entries of `folder` that stop a new claim: anything but our marker (or its temporary file)
    and sub-folders that carry their own marker (e.g. `activations/` from `sae-lens-dit harvest`)."""
    foreign = []
    for entry in sorted(folder.iterdir()):
        if entry.name == MARKER or entry.name.startswith(_TMP_PREFIX):
            continue
        if entry.is_dir() and not entry.is_symlink() and owner(entry) is not None:
            continue
        foreign.append(entry.name)
    return foreign


def check_claimable(folder: str | Path, kind: str, legacy: Iterable[str] = (), flag: str = "--output-dir") -> bool:
    """Raise `ForeignFolderError` unless a job of `kind` may write into `folder`; writes nothing.

    True when `folder` is already this kind's (marker, or a `legacy` file of a pre-marker run),
    False when it is new or empty (a claim will make it ours).
    """
    folder = Path(folder)
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise ForeignFolderError(f"{folder} is a file, not a folder; choose another {flag}")
    found = owner(folder)
    if found == kind:
        return True
    if found is not None:
        raise ForeignFolderError(
            f"{folder} belongs to `sae-lens-dit {found}`, not `sae-lens-dit {kind}`; choose another {flag}"
        )
    if any((folder / name).is_file() for name in legacy):
        return True
    foreign = _foreign_entries(folder)
    if foreign:
        shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
        raise ForeignFolderError(
            f"{folder} holds files that sae-lens-dit {kind} did not write ({shown}); nothing was changed: "
            f"choose a new or empty {flag}"
        )
    return False


def claim(folder: str | Path, kind: str, legacy: Iterable[str] = (), flag: str = "--output-dir") -> Path:
    """Make `folder` a `kind` folder of this package: create it and write the marker first.

    Refuses (ForeignFolderError, nothing written) a folder that holds files we did not write or
    that belongs to another kind of job. Safe to call from several processes on one folder.
    """
    folder = Path(folder)
    check_claimable(folder, kind, legacy, flag)
    if owner(folder) != kind:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{_TMP_PREFIX}{os.getpid()}.tmp"  # per process: ranks may claim at once
        tmp.write_text(json.dumps({"written_by": "sae-lens-dit", "kind": kind}) + "\n")
        os.replace(tmp, folder / MARKER)
    return folder


def confined(root: str | Path, rel: str, source: str = "manifest") -> Path:
    """`root / rel`, refusing (ValueError) a `rel` that is absolute or leads outside `root`.

    `source` names where `rel` was read from, for the message. Symbolic links are resolved, so a
    link inside the folder that points outside it is refused too.
    """
    if not isinstance(rel, str) or not rel:
        raise ValueError(f"{source} lists {rel!r}, which is not a relative path; refusing to touch it")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or PureWindowsPath(rel).is_absolute() or PureWindowsPath(rel).drive or ".." in pure.parts:
        raise ValueError(f"{source} lists {rel!r}, a path outside its folder; refusing to touch it")
    root = Path(root)
    path = root / pure
    base = root.resolve()
    if not path.resolve().is_relative_to(base) or path.resolve() == base:
        raise ValueError(f"{source} lists {rel!r}, which resolves outside {root}; refusing to touch it")
    return path
