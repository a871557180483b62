"""SAEs grouped by the backbone they were trained on, each group with its pipeline loaded and every
SAE checked against it (the hook exists, `d_in` is the hook's width).

Why one module: the evaluation protocol and the dashboards both take SAEs of possibly several
backbones and hooks and run each backbone once for all of its SAEs. The grouping, the loading and
the checks were written in both, with different errors; they live here once, under both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sae_lens_dit.conventions import sae_display_name
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.hooking.splicing import hook_pair


@dataclass(frozen=True)
class Backbone:
    """One backbone's pipeline, its `HookedDiT` and the SAEs trained on it (in the order given)."""

    model: str
    """The backbone as its SAEs name it (`cfg.metadata.model_name`): a bundled name, a folder or a Hub id."""
    saes: list[Any]
    pipe: Any
    hooked: HookedDiT

    @property
    def hooks(self) -> list[str]:
        """The hooks the SAEs read, each once, in the SAEs' order."""
        return list(dict.fromkeys(sae.cfg.metadata.hook_name for sae in self.saes))

    @property
    def hook_pairs(self) -> list[tuple[str, str]]:
        """(hook read, hook written) of every SAE, each pair once: equal for an SAE, a transcoder's input and
        output hooks (`hooking.splicing.hook_pair`)."""
        return list(dict.fromkeys(hook_pair(sae) for sae in self.saes))


def saes_by_backbone(saes: Sequence[Any]) -> dict[str, list[Any]]:
    """`saes` grouped by the model they name (`cfg.metadata.model_name`), in order of first appearance."""
    groups: dict[str, list[Any]] = {}
    for sae in saes:
        model = getattr(sae.cfg.metadata, "model_name", None)
        if not model or not sae.cfg.metadata.hook_name:
            raise ValueError(
                f"SAE {sae_display_name(sae)} does not name its model and hook in cfg.metadata "
                "(model_name, hook_name); set them, as sae-lens-dit train does"
            )
        groups.setdefault(model, []).append(sae)
    return groups


def check_sae_fits(sae: Any, hooked: HookedDiT, model: str) -> None:
    """Refuse an SAE whose hook `model` does not have, or whose `d_in` is not that hook's width."""
    hook = sae.cfg.metadata.hook_name
    if hook not in hooked.hook_dict:
        try:
            hooked.check_hook_names([hook])
        except ValueError as err:
            raise ValueError(
                f"SAE {sae_display_name(sae)} reads hook {hook!r}, which model {model!r} does not have: {err}"
            ) from None
    if sae.cfg.d_in != hooked.d_in(hook):
        raise ValueError(
            f"SAE {sae_display_name(sae)} has d_in={sae.cfg.d_in} but hook {hook!r} of {model!r} carries "
            f"{hooked.d_in(hook)}-dimensional activations: the SAE was trained on another backbone or hook"
        )
    out = hook_pair(sae)[1]
    if out != hook:  # a transcoder: it writes d_out-wide rows into its output hook
        hooked.check_hook_names([out])
        if getattr(sae.cfg, "d_out", None) != hooked.d_in(out):
            raise ValueError(
                f"transcoder {sae_display_name(sae)} has d_out={getattr(sae.cfg, 'd_out', None)} but its output hook "
                f"{out!r} of {model!r} carries {hooked.d_in(out)}-dimensional activations"
            )


def load_backbones(saes: Sequence[Any], device: str = "cpu") -> Iterator[Backbone]:
    """Each backbone `saes` name, in turn: its pipeline loaded on `device` (`toy.backbones.load_pipeline`),
    wrapped in `HookedDiT`, every SAE of it checked (`check_sae_fits`). A generator, so that one backbone at
    a time is loaded; `list(load_backbones(...))` checks every SAE before any work starts."""
    from sae_lens_dit.toy.backbones import load_pipeline

    for model, group in saes_by_backbone(saes).items():
        pipe = load_pipeline(model, device=device)
        hooked = HookedDiT.from_pipeline(pipe)
        for sae in group:
            check_sae_fits(sae, hooked, model)
        yield Backbone(model, group, pipe, hooked)
