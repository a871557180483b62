"""Training transcoders on a sublayer pair: `hook_name="blocks.2.mlp"` names the MLP's input and output hooks.

Why its own module: an SAE trains on one hook's rows, a transcoder on two (the sublayer's input
`<sublayer>.hook_in` and output `<sublayer>.hook_out`, recorded with the same row metadata). The
runner keeps one code path by turning every harvest chunk into *training rows*: one hook's
activations for an SAE, `transcoder_rows(input, output)` = [rows, d_in + d_out] for a transcoder
(`saes.tide_transcoder`). What differs after that, the data-dependent start and the held-out
report (explained variance of the sublayer's *output*, per timestep bucket), lives here.

>>> sublayer_hooks("blocks.2.mlp"), sublayer_hooks("blocks.2.hook_resid_post")
(('blocks.2.mlp.hook_in', 'blocks.2.mlp.hook_out'), ('blocks.2.hook_resid_post',))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sae_lens_dit.analysis.evals import BucketMetrics, LatentUsage, latent_usage, reconstruct, reconstruction_by_bucket
from sae_lens_dit.analysis.evals.reconstruction import bucket_masks, bucket_metrics
from sae_lens_dit.conventions import DEFAULT_BUCKET_EDGES, sublayer_pair
from sae_lens_dit.saes.data_init import BDecInit, centre_of, rescales_by_decoder_norm
from sae_lens_dit.saes.tide_transcoder import transcoder_rows


def is_pair(hook_name: str) -> bool:
    """Whether `hook_name` names a sublayer (`blocks.2.mlp`) rather than one hook point (`...hook_*`)."""
    return not hook_name.rsplit(".", 1)[-1].startswith("hook")


def sublayer_hooks(hook_name: str) -> tuple[str, ...]:
    """The hooks a run on `hook_name` harvests: (input, output) for a sublayer, else the hook itself."""
    return sublayer_pair(hook_name) if is_pair(hook_name) else (hook_name,)


def is_transcoder(sae_cfg: Any) -> bool:
    """Whether an SAE config describes a transcoder (it has an output width `d_out`)."""
    return hasattr(sae_cfg, "d_out")


def training_rows(activations: Mapping[str, torch.Tensor], hook_name: str) -> torch.Tensor:
    """A chunk's training rows for `hook_name`: the hook's [rows, d], or for a sublayer
    `transcoder_rows(input, output)` = [rows, d_in + d_out]."""
    if hook_name in activations:
        return activations[hook_name]
    hooks = sublayer_hooks(hook_name)
    missing = [h for h in hooks if h not in activations]
    if missing:
        raise KeyError(f"hooks {missing} not in the harvested activations {sorted(activations)}")
    return activations[hooks[0]] if len(hooks) == 1 else transcoder_rows(*(activations[h] for h in hooks))


def check_sae_fits(sae_cfg: Any, hook_name: str, widths: Mapping[str, int], model: str) -> None:
    """One clear error when the SAE's kind or widths do not match the hook(s) it trains on."""
    hooks = sublayer_hooks(hook_name)
    if is_pair(hook_name) != is_transcoder(sae_cfg):
        raise ValueError(
            f"hook {hook_name!r} names "
            + (
                f"a sublayer pair {list(hooks)}, which only a transcoder trains on; use --architecture tide_transcoder"
                if is_pair(hook_name)
                else f"one hook point, but {sae_cfg.architecture()} is a transcoder: name a sublayer, e.g. blocks.2.mlp"
            )
        )
    wanted = {"d_in": widths[hooks[0]]} | ({"d_out": widths[hooks[1]]} if len(hooks) == 2 else {})
    have = {name: getattr(sae_cfg, name) for name in wanted}
    if have != wanted:
        given = ", ".join(f"{k}={v}" for k, v in have.items())
        carried = " and ".join(f"{h} carries {widths[h]}-dim activations" for h in hooks)
        raise ValueError(
            f"SAE {given} but on {model!r} {carried}; set " + ", ".join(f"{k}={v}" for k, v in wanted.items())
        )


def input_half(sae: Any, rows: torch.Tensor) -> torch.Tensor:
    """The part of training rows the SAE encodes: all of it, or a transcoder's first d_in columns."""
    return rows[..., : sae.cfg.d_in]


@torch.no_grad()
def init_transcoder_from_rows(
    sae: Any, rows: torch.Tensor, b_dec_init: BDecInit, scaling_factor: float | None, unit_decoder: bool
) -> dict[str, float]:
    """`saes.data_init.init_from_rows` for a transcoder: b_dec (output space) at the centre of the MLP
    outputs, and, where codes scale with the decoder norm, unit-norm decoder rows and encoder columns."""
    target = rows[:, sae.cfg.d_in :].float() * (scaling_factor if scaling_factor is not None else 1.0)
    if not torch.isfinite(target).all():
        raise ValueError("init_transcoder_from_rows: the training rows hold non-finite values")
    centre = centre_of(target, b_dec_init)
    sae.b_dec.data.copy_(centre.to(sae.b_dec.dtype))
    if unit_decoder and rescales_by_decoder_norm(sae):
        sae.W_dec.data /= sae.W_dec.data.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        sae.W_enc.data /= sae.W_enc.data.norm(dim=0, keepdim=True).clamp_min(1e-12)
    return {"b_dec_norm": float(centre.norm()), "centred_row_norm": float((target - centre).norm(dim=1).mean())}


@torch.no_grad()
def metrics_by_bucket(
    sae: Any,
    rows: torch.Tensor,
    timestep: torch.Tensor,
    batch_size: int = 8192,
    edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
) -> list[BucketMetrics]:
    """Held-out metrics per timestep bucket; for a transcoder, of its output (skip included) against the
    MLP output, so `explained_variance` is the MLP output's."""
    if not is_transcoder(sae.cfg):
        return reconstruction_by_bucket(sae, rows, timestep, edges, batch_size=batch_size)
    x, y = rows.split([sae.cfg.d_in, sae.cfg.d_out], dim=-1)
    parts = [
        reconstruct(sae, x[i : i + batch_size], timestep[i : i + batch_size]) for i in range(0, len(x), batch_size)
    ]
    y_hat, feature_acts = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return [
        bucket_metrics(y[mask], y_hat[mask], feature_acts[mask], lo, hi)
        for lo, hi, mask in zip(edges[:-1], edges[1:], bucket_masks(timestep, edges), strict=True)
        if mask.any()
    ]


def metrics_by_frame(
    sae: Any, rows: torch.Tensor, timestep: torch.Tensor, frame: torch.Tensor | None
) -> list[tuple[int, BucketMetrics]]:
    """(frame, metrics over every timestep) per video frame of held-out rows, in frame order; empty for images
    (one frame) or where the frame is unknown (None, or -1: a hook whose tokens are not whole frames)."""
    if frame is None:
        return []
    frames = sorted(int(f) for f in frame.unique() if f >= 0)
    if len(frames) < 2:
        return []
    whole = (DEFAULT_BUCKET_EDGES[0], DEFAULT_BUCKET_EDGES[-1])
    return [(f, metrics_by_bucket(sae, rows[frame == f], timestep[frame == f], edges=whole)[0]) for f in frames]


def usage(sae: Any, rows: torch.Tensor, timestep: torch.Tensor) -> LatentUsage:
    """Dead and dense latents over held-out training rows (a transcoder encodes their input half)."""
    return latent_usage(sae, input_half(sae, rows), timestep)
