"""Guards against silently wrong results: data a run must not use, stopped where it appears.

Why: a class label the backbone was never trained on is sampled from an untrained embedding, and a
NaN activation trains an all-NaN SAE; both used to finish with exit 0 and a plausible-looking
output. These checks run where the data is made (harvest, edit) and where it is consumed
(training batches), and name the batch and a likely cause.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


def check_class_labels(pipe: Any, labels: Any, where: str = "class_labels") -> None:
    """Refuse class labels the backbone was not trained on: those outside its label map
    (`pipe.labels`), else outside its class embedding (`num_embeds_ada_norm`). Sampling them would
    use an untrained embedding and give a plausible-looking but meaningless image."""
    known = getattr(pipe, "labels", None)
    if known:
        valid = sorted(set(known.values()))
        described = f"its label map has classes {valid}" if len(valid) <= 20 else f"its map has {len(valid)} classes"
    else:
        n = getattr(getattr(getattr(pipe, "transformer", None), "config", None), "num_embeds_ada_norm", None)
        if not isinstance(n, int):
            return  # no class embedding to check against (e.g. a text-conditioned pipeline)
        valid, described = range(n), f"its class embedding has classes 0..{n - 1}"
    bad = [label for label in labels if isinstance(label, bool) or not isinstance(label, int) or label not in valid]
    if bad:
        raise ValueError(
            f"{where}: {bad[:5]} not classes this backbone was trained on ({described}); choose from those"
        )


def check_finite(acts: torch.Tensor, where: str, cfg: Any = None) -> None:
    """Stop at the first non-finite activation: an SAE trained on it is all NaN, and a cache holding
    it poisons every run that reads it."""
    bad = ~torch.isfinite(acts)
    if bool(bad.any()):
        causes = ["a guidance scale far too large", "a backbone run in half precision", "a corrupt cache"]
        if cfg is not None:
            causes = [f"guidance_scale={cfg.guidance_scale} far too large (try <= 10)", "a backbone in half precision"]
            if cfg.storage_dtype == "float16":
                causes.insert(1, "storage_dtype float16 overflowing (it holds |x| <= 65504: use float32)")
        likely = ", ".join(causes[:-1]) + " or " + causes[-1]
        raise ValueError(
            f"{where}: {int(bad.sum())} of {bad.numel()} activation values are NaN or inf; likely cause: {likely}. "
            "Nothing after this batch was used"
        )


def finite_batches(
    pairs: Iterator[tuple[torch.Tensor, torch.Tensor]], hook_name: str
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Pass (activations, timesteps) training batches through, stopping at one with NaN/inf values."""
    for index, (x, t) in enumerate(pairs):
        check_finite(x, f"training batch {index} (hook {hook_name})")
        yield x, t
