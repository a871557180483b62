"""The package layout stays what the README describes: dependencies point one way, modules stay small.

Reference: the source files themselves, parsed with `ast` (every `import` and `from ... import`,
including the ones inside functions), against the layer table below, which is the one the README
and DESIGN.md draw. A new upward import, a module past 450 lines or a module without its "why"
docstring fails here with the file and line to fix.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sae_lens_dit"

ALLOWED: dict[str, set[str]] = {
    "conventions": set(),
    "resources": set(),
    "_moved": set(),
    "guards": {"conventions"},
    "saes": {"conventions", "guards"},
    "toy": {"conventions", "resources"},
    "hooking": {"conventions", "resources", "guards"},
    "analysis": {"conventions", "resources", "guards", "saes", "hooking", "toy"},
    "hub": {"conventions", "resources", "guards", "saes", "hooking", "analysis"},
    "training": {"conventions", "resources", "guards", "saes", "hooking", "toy", "analysis"},
    "cli": {"conventions", "resources", "guards", "saes", "hooking", "toy", "hub", "analysis", "training"},
}
"""Top-level part of the package -> the parts it may import (besides itself). The package root
(`sae_lens_dit/__init__.py`) may import anything; nothing imports the CLI."""

ANALYSIS_ALLOWED: dict[str, set[str]] = {
    "backbone_groups": set(),
    "evals": {"backbone_groups"},
    "interventions": {"evals"},
    "dashboard": {"backbone_groups", "evals", "interventions"},
    "explorer": {"backbone_groups", "evals", "interventions", "dashboard"},
}
"""Inside `analysis/`: the evaluation protocol knows no interventions or dashboards; dashboards show both."""

MAX_LINES = 450


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_data" not in p.parts)


def _part(path: Path) -> tuple[str, str | None]:
    """(top-level part, analysis sub-part) of a module file, e.g. ('analysis', 'evals')."""
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    top = rel[0]
    return top, rel[1] if top == "analysis" and len(rel) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module under sae_lens_dit) of every import of the package in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "sae_lens_dit":
                out += [(node.lineno, f"sae_lens_dit.{alias.name}") for alias in node.names]
            elif node.module.startswith("sae_lens_dit."):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("sae_lens_dit.")]
    return out


def _target(module: str) -> tuple[str, str | None]:
    parts = module.split(".")[1:]
    return parts[0], parts[1] if parts[0] == "analysis" and len(parts) > 1 else None


def test_dependencies_point_one_way():
    wrong = []
    for path in _modules():
        top, sub = _part(path)
        if path == PACKAGE / "__init__.py":
            continue
        for line, module in _imports(path):
            target, target_sub = _target(module)
            ok = target == top or target in ALLOWED[top]
            if ok and top == target == "analysis" and sub and target_sub and sub != target_sub:
                ok = target_sub in ANALYSIS_ALLOWED.get(sub, set())
            if not ok:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not wrong, "imports against the layer table of tests/test_layout.py:\n" + "\n".join(wrong)


def test_every_part_is_in_the_layer_table():
    parts = {_part(p)[0] for p in _modules() if p != PACKAGE / "__init__.py"}
    assert parts <= set(ALLOWED), f"parts missing from the layer table: {sorted(parts - set(ALLOWED))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_are_small_and_say_why(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {lines} lines; split it along its topics"
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path.relative_to(PACKAGE.parent)} has no module docstring saying why it exists"
