"""`docs/adapters.md`'s coverage table is generated from the shipped adapters and must not go stale.

Reference: the generator itself run in `--check` mode on the committed page; a new adapter without a
regenerated table fails here with the command to run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_coverage_table_matches_the_shipped_adapters():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "adapter_coverage.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
