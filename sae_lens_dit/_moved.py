"""Old flat module paths (before 0.2) as aliases of their new homes in the sub-packages.

Why: user code and notebooks import `sae_lens_dit.runner`, `sae_lens_dit.evals` and so on. Those
modules now live in sub-packages whose names are the architecture (`training/`, `analysis/`, ...).
A meta-path finder answers each old name with the module at its new path (the same module object,
so monkeypatching and `isinstance` agree) and warns once with the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

MOVED: dict[str, str] = {
    "adapters": "hooking.adapters",
    "call_context": "hooking.call_context",
    "hook_sites": "hooking.hook_sites",
    "hooked": "hooking.hooked",
    "recording": "hooking.recording",
    "registry": "saes.registration",
    "harvest": "training.harvest",
    "distributed": "training.distributed",
    "runner": "training.runner",
    "evals": "analysis.evals",
    "interventions": "analysis.interventions",
    "selection": "analysis.interventions.selection",
    "gates": "analysis.interventions.gates",
    "windows": "analysis.interventions.windows",
    "recipes": "analysis.interventions.recipes",
    "concepts": "analysis.interventions.concepts",
    "shape_concepts": "analysis.interventions.shape_concepts",
    "dashboard": "analysis.dashboard.build",
    "dashboard_files": "analysis.dashboard.files",
    "dashboard_html": "analysis.dashboard.html",
    "releases": "hub.releases",
    "publish": "hub.publish",
    "backbones": "toy.backbones",
    "image_sets": "toy.image_sets",
    "validation": "guards.config",
    "output_dirs": "guards.output_dirs",
}
"""Old module name (under `sae_lens_dit.`) -> new module path (under `sae_lens_dit.`). `guards` kept its
name: it is now a package that re-exports the old module's functions."""


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):  # noqa: ANN001 - importlib's signature
        module = importlib.import_module(self.target)
        self._own_spec = module.__spec__  # importlib overwrites __spec__ with the alias's; put it back below
        return module

    def exec_module(self, module) -> None:  # noqa: ANN001 - the target module is already executed
        module.__spec__ = self._own_spec


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - importlib's signature
        package, _, name = fullname.rpartition(".")
        if package != "sae_lens_dit" or name not in MOVED:
            return None
        new = f"sae_lens_dit.{MOVED[name]}"
        warnings.warn(f"`{fullname}` moved to `{new}`; import it from there", DeprecationWarning, stacklevel=3)
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    """Answer the old module paths (idempotent)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
