"""Per-row metadata of one transformer forward call: timestep, CFG branch and sample index.

Why from the transformer's own call: blocks of some families never see the raw timestep (PixArt
and Sana blocks get an adaLN modulation vector under the name `timestep`), and only the
transformer's arguments show how the pipeline laid out the batch. A forward pre-hook with
kwargs reads them whether the pipeline passed them by keyword or by position.

Conventions (the same for every backbone):
- timestep: float t on the DDPM training scale [0, 1000], 1000 = pure noise
  (`raw * spec.timestep.scale / config[divide_by_config]`).
- branch: 0 = cond, 1 = uncond; all 0 for a call without classifier-free guidance.
- sample: index of the image in the pipeline's batch; both CFG rows of one image share it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sae_lens_dit.conventions import COND, UNCOND, CfgOrder, branch_order  # noqa: F401 (COND, UNCOND re-exported)
from sae_lens_dit.hooking.adapters import AdapterSpec, AdapterSpecError


@dataclass(frozen=True)
class CallContext:
    """Metadata of every batch row of one forward call, on the CPU."""

    timestep: Tensor | None  # [batch] float32, project convention; None if the call had no timestep
    branch: Tensor  # [batch] int64, 0 = cond, 1 = uncond
    sample: Tensor  # [batch] int64


class CallReader:
    """Turns the arguments of one transformer forward call into a `CallContext`, as its spec says."""

    def __init__(self, spec: AdapterSpec, transformer: nn.Module):
        self.spec = spec
        params = list(inspect.signature(transformer.forward).parameters)
        wanted = [spec.latents, spec.timestep.argument]
        if spec.cfg.detect == "class_label":
            wanted.append(spec.cfg.class_argument)
        missing = [name for name in wanted if name not in params]
        if missing:
            raise AdapterSpecError(
                f"adapter {spec.name!r}: {type(transformer).__name__}.forward has no argument(s) {missing}; "
                f"its arguments are {params}; fix {spec.source}"
            )
        self._positions = {name: params.index(name) for name in wanted}
        self._divisor = 1.0
        if spec.timestep.divide_by_config is not None:
            self._divisor = float(_config_value(spec, transformer, spec.timestep.divide_by_config))
        self._null_class = None
        if spec.cfg.detect == "class_label":
            self._null_class = int(_config_value(spec, transformer, spec.cfg.null_class_config))

    def argument(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        """A forward argument by keyword or by position; None when the call left it out."""
        if name in kwargs:
            return kwargs[name]
        position = self._positions[name]
        return args[position] if position < len(args) else None

    def context(self, args: tuple, kwargs: dict[str, Any]) -> CallContext:
        latents = self.argument(self.spec.latents, args, kwargs)
        batch = latents.shape[0]
        rows = torch.arange(batch)
        branch = torch.zeros(batch, dtype=torch.long)
        doubled = _doubled_layout(batch, self.spec.cfg.order)  # [batch] branch of a CFG-doubled batch
        is_doubled = False
        if self.spec.cfg.detect == "equal_halves" and doubled is not None:
            is_doubled = torch.equal(latents[: batch // 2], latents[batch // 2 :])
        elif self.spec.cfg.detect == "class_label":
            labels = self.argument(self.spec.cfg.class_argument, args, kwargs)
            if labels is not None:
                branch = (torch.as_tensor(labels).reshape(-1).cpu() == self._null_class).long().expand(batch)
                is_doubled = doubled is not None and torch.equal(branch, doubled)
        if is_doubled:
            return CallContext(self._timestep(args, kwargs, batch), doubled, rows % (batch // 2))
        return CallContext(self._timestep(args, kwargs, batch), branch.clone(), rows)

    def _timestep(self, args: tuple, kwargs: dict[str, Any], batch: int) -> Tensor | None:
        raw = self.argument(self.spec.timestep.argument, args, kwargs)
        if raw is None:
            return None
        t = torch.as_tensor(raw).detach().to("cpu", torch.float64).reshape(-1)
        t = (t * self.spec.timestep.scale / self._divisor).float()  # [1] or [batch]
        return t.expand(batch).clone() if t.numel() == 1 else t


def _doubled_layout(batch: int, order: CfgOrder) -> Tensor | None:
    """Branch labels of a CFG-doubled batch in the given order; None for an odd batch."""
    if batch % 2:
        return None
    return torch.tensor(branch_order(order)).repeat_interleave(batch // 2)


def _config_value(spec: AdapterSpec, transformer: nn.Module, key: str | None) -> Any:
    config = getattr(transformer, "config", None)
    value = getattr(config, key, None) if config is not None and key is not None else None
    if value is None:
        raise AdapterSpecError(
            f"adapter {spec.name!r}: {type(transformer).__name__}.config has no value for {key!r}; fix {spec.source}"
        )
    return value
