"""Diffusion's answer to "CE loss recovered": the model's own denoising loss with the SAE spliced in.

Held-out images are noised with the scheduler to one timestep per image in every bucket and run
once per CFG branch (`heldout_pass`). On those rows the protocol measures reconstruction per bucket
and branch (`heldout_reconstruction`) and the noise-prediction loss with the SAE replacing the hook
against zero- and mean-ablation (`spliced_denoising`).

Why its own module: the held-out pass is the one expensive, backbone-dependent step of the
protocol; it is built once per backbone and hook and every SAE (and the probes in `probes`) is
scored against the same noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from sae_lens_dit.analysis.evals.reconstruction import bucket_metrics, reconstruct
from sae_lens_dit.conventions import BRANCH_NAMES, DEFAULT_BUCKET_EDGES, TIMESTEP_MAX
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.image_sets import LabelledImages

Conditioning = Callable[[torch.Tensor], dict[str, Any]]
"""Row indices of a held-out pass -> the denoiser's keyword arguments for those rows, besides the latents and
the timestep (`class_labels` for a DiT; the prompt embeddings a text pipeline computed, `prompted`)."""


def _empty() -> torch.Tensor:
    return torch.empty(0)


@dataclass
class HeldoutPass:
    """Held-out images noised (the scheduler's own `add_noise`) to one random timestep per image and
    bucket, run through the denoiser once per CFG branch (cond = the image's class or prompt, uncond = the
    null class or the negative prompt). Built once per backbone and hook; every SAE scored against it sees
    the same noise.

    Rows are (bucket, branch, image) in that order. `loss_*` is the model's own training loss per row
    (MSE of its prediction against `target`: the noise, or v for v-prediction models): clean, with the hook
    zero-ablated, and with it mean-ablated (replaced by the per-token-position mean over the rows of the
    same bucket and branch).
    """

    hook_name: str
    edges: tuple[float, ...]
    images: LabelledImages
    noisy: torch.Tensor  # [rows, C, H, W]
    noise: torch.Tensor  # [rows, C, H, W] what the prediction is scored against (the noise, or v)
    timestep: torch.Tensor  # [rows]
    conditioning: Conditioning
    bucket: torch.Tensor  # [rows]
    branch: torch.Tensor  # [rows] 0 = cond, 1 = uncond
    image_index: torch.Tensor  # [rows] into `images`
    hook_name_out: str | None = None
    """A transcoder's output hook (e.g. `blocks.2.mlp.hook_out` for input `blocks.2.mlp.hook_in`): recorded as
    `activation_out`, and the hook the ablations replace (zero or mean MLP output). None: an SAE's one hook."""
    # Filled by `with_losses`:
    activation: torch.Tensor = field(default_factory=_empty)  # [rows, tokens, d]
    loss_clean: torch.Tensor = field(default_factory=_empty)  # [rows]
    loss_zero: torch.Tensor = field(default_factory=_empty)  # [rows]
    loss_mean: torch.Tensor = field(default_factory=_empty)  # [rows]
    activation_out: torch.Tensor | None = None  # [rows, tokens, d_out] at hook_name_out

    @property
    def target(self) -> torch.Tensor:
        """What a reconstruction is scored against: the output hook's activations (a transcoder), else the input's."""
        return self.activation if self.activation_out is None else self.activation_out

    def groups(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        """(bucket, branch, row mask) for every non-empty group."""
        for b in range(len(self.edges) - 1):
            for br in range(len(BRANCH_NAMES)):
                mask = (self.bucket == b) & (self.branch == br)
                if mask.any():
                    yield b, br, mask


def _noise_losses(pred: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    pred = pred[:, : noise.shape[1]]  # DiTs with learned sigma predict [noise, variance]
    return (pred.float() - noise).pow(2).flatten(1).mean(1)


@torch.no_grad()
def _losses_with(hooked: HookedDiT, hp: HeldoutPass, rows: torch.Tensor, fwd_hooks: list, batch_size: int):
    out = []
    for i in range(0, len(rows), batch_size):
        idx = rows[i : i + batch_size]
        inputs = {hooked.spec.latents: hp.noisy[idx], hooked.spec.timestep.argument: hp.timestep[idx]}
        with hooked.hooks(fwd_hooks=fwd_hooks):
            pred = hooked.transformer(**inputs, **hp.conditioning(idx))
        out.append(_noise_losses(pred.sample, hp.noise[idx]))
    return torch.cat(out)


@torch.no_grad()
def heldout_pass(
    pipe,
    hooked: HookedDiT,
    hook_name: str,
    images: LabelledImages,
    edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
    seed: int = 0,
    batch_size: int = 256,
    hook_name_out: str | None = None,
) -> HeldoutPass:
    """Noise `images` to one timestep per image in each bucket and record clean/ablated losses at `hook_name`
    (at `hook_name_out`, recorded as well, for a transcoder that reads one hook and writes another)."""
    hooked.check_hook_names([hook_name] + ([hook_name_out] if hook_name_out else []))
    if len(images) == 0:
        raise ValueError("no held-out images to evaluate on")
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.from_numpy(images.images).float()
    n = len(x0)
    null = getattr(hooked.transformer.config, "num_embeds_ada_norm", None)
    if type(hooked.transformer).__name__ != "DiTTransformer2DModel" or null is None:
        raise ValueError(
            f"the held-out evaluation needs a class-conditional DiT (DiTTransformer2DModel), not "
            f"{type(hooked.transformer).__name__}; text-conditioned backbones are evaluated on harvested rows "
            "with reconstruction_by_bucket"
        )
    noisy, noise, timestep, labels, bucket, branch, index = [], [], [], [], [], [], []
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        t = torch.randint(int(lo), max(int(hi), int(lo) + 1), (n,), generator=gen).clamp_max(int(TIMESTEP_MAX) - 1)
        eps = torch.randn(x0.shape, generator=gen)
        xt = pipe.scheduler.add_noise(x0, eps, t)
        for br in range(len(BRANCH_NAMES)):
            y = torch.from_numpy(images.labels).long() if br == 0 else torch.full((n,), null, dtype=torch.long)
            noisy.append(xt), noise.append(eps), timestep.append(t), labels.append(y)
            bucket.append(torch.full((n,), b)), branch.append(torch.full((n,), br)), index.append(torch.arange(n))
    device, dtype = hooked.transformer.device, hooked.transformer.dtype
    class_labels = torch.cat(labels).to(device)  # [rows], the null class on uncond rows
    hp = HeldoutPass(
        hook_name,
        tuple(float(e) for e in edges),
        images,
        torch.cat(noisy).to(device, dtype),
        torch.cat(noise).to(device),
        torch.cat(timestep).to(device),
        lambda idx: {"class_labels": class_labels[idx]},
        torch.cat(bucket),
        torch.cat(branch),
        torch.cat(index),
        hook_name_out,
    )
    return with_losses(hooked, hp, batch_size)


def with_losses(hooked: HookedDiT, hp: HeldoutPass, batch_size: int) -> HeldoutPass:
    """Fill `hp`'s activations and clean, zero- and mean-ablated losses at its hook (one pass per kind)."""
    device, dtype = hooked.transformer.device, hooked.transformer.dtype
    read, write = hp.hook_name, hp.hook_name_out or hp.hook_name
    rows = torch.arange(len(hp.timestep))
    captured: dict[str, list[torch.Tensor]] = {read: [], write: []}
    record = [(name, lambda a, hook: captured[hook.name].append(a.float().cpu())) for name in captured]
    hp.loss_clean = _losses_with(hooked, hp, rows, record, batch_size)
    hp.activation = torch.cat(captured[read])
    if write != read:
        hp.activation_out = torch.cat(captured[write])
    # Ablations replace what the SAE or transcoder writes (for a transcoder: the MLP's whole output).
    hp.loss_zero = _losses_with(hooked, hp, rows, [(write, lambda a, hook: torch.zeros_like(a))], batch_size)
    hp.loss_mean = torch.empty_like(hp.loss_clean)
    for _, _, mask in hp.groups():
        mean = hp.target[mask].mean(0).to(device, dtype)  # [tokens, d]
        hp.loss_mean[mask] = _losses_with(
            hooked, hp, mask.nonzero().squeeze(1), [(write, lambda a, hook, m=mean: m.expand_as(a))], batch_size
        )
    return hp


def _recovered(ablated: float, spliced: float, clean: float) -> float:
    gap = ablated - clean
    return float("nan") if gap == 0 else (ablated - spliced) / gap


@torch.no_grad()
def spliced_denoising(sae, hooked: HookedDiT, hp: HeldoutPass, batch_size: int = 256) -> list[dict[str, Any]]:
    """Per bucket and branch: the model's loss with `sae` replacing the hook (no error term; a list of SAEs or
    transcoders replaces each of their hooks at once, e.g. every MLP for a replacement model), and the
    denoising loss recovered against zero- and mean-ablation: (L_ablated - L_spliced) / (L_ablated - L_clean)."""
    with hooked.saes(sae if isinstance(sae, (list, tuple)) else [sae], use_error_term=False):
        spliced = _losses_with(hooked, hp, torch.arange(len(hp.timestep)), [], batch_size)
    out = []
    for b, br, mask in hp.groups():
        clean, zero, mean, spl = (float(v[mask].mean()) for v in (hp.loss_clean, hp.loss_zero, hp.loss_mean, spliced))
        out.append(
            {
                "t_low": hp.edges[b],
                "t_high": hp.edges[b + 1],
                "branch": BRANCH_NAMES[br],
                "loss_clean": clean,
                "loss_spliced": spl,
                "loss_zero_ablated": zero,
                "loss_mean_ablated": mean,
                "recovered_vs_zero": _recovered(zero, spl, clean),
                "recovered_vs_mean": _recovered(mean, spl, clean),
            }
        )
    return out


@torch.no_grad()
def heldout_reconstruction(sae, hp: HeldoutPass) -> list[dict[str, Any]]:
    """`bucket_metrics` of `sae` on the held-out pass's activations, per bucket and CFG branch (all tokens); a
    transcoder's reconstruction of its input hook is scored against its output hook."""
    out = []
    for b, br, mask in hp.groups():
        x = hp.activation[mask]  # [images, tokens, d]
        t = hp.timestep[mask].cpu().repeat_interleave(x.shape[1]).float()
        x = x.flatten(0, 1).to(sae.device, sae.dtype)
        x_hat, acts = reconstruct(sae, x, t.to(sae.device))
        y = hp.target[mask].flatten(0, 1)  # the input itself, or a transcoder's output
        metrics = bucket_metrics(y, x_hat.cpu(), acts.cpu(), hp.edges[b], hp.edges[b + 1])
        out.append({**metrics.to_dict(), "branch": BRANCH_NAMES[br]})
    return out
