"""The explorer's model side: samples, edits and latent summaries, cached content-addressed in one folder.

Why a module of its own, apart from the web app: this is everything that touches the model, so it
can be tested and benchmarked without a server, and the app stays a thin layer of routes. An
`Explorer` holds the already-loaded pipeline, `HookedDiT` and SAEs (the CLI resolves releases;
analysis may not import the hub), and:

- turns a validated `ViewRequest` into the `SteeringSpec` it means (`spec_for`): strength in units of
  each latent's typical active value or raw, region as a box, window LOW,HIGH or `auto` resolved to
  explicit timesteps, so the exported YAML replays the same image with `sae-lens-dit edit --spec`;
- generates the original and the edited sample with `interventions.generate`/`steer`, exactly as
  `interventions.edit` does, and writes each as a PNG named by the SHA-256 of everything that decides
  it (model and SAE fingerprints, spec, seed, call arguments): a repeated view samples nothing, and
  an edit of a cached original runs one sampling pass instead of two;
- summarises every latent of an SAE once (`summary`: firing rate, typical active value, mean code per
  timestep bucket) from one recorded run over a few classes; `auto` windows and typical units use it.

It writes only inside `cache_dir`, which it claims with `guards.output_dirs.claim` (kind "serve"),
atomically (temporary file, then `os.replace`). One lock serialises model use: hooks on a shared
`HookedDiT` must not interleave between requests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from sae_lens import SAE

from sae_lens_dit.analysis.explorer.requests import BadRequest, Limits, ViewRequest
from sae_lens_dit.analysis.interventions import LatentEdit, SAESource, SteeringSpec, check_spec, generate, steer
from sae_lens_dit.analysis.interventions.regions import region_mask
from sae_lens_dit.analysis.interventions.selection import TYPICAL_PERCENTILE
from sae_lens_dit.analysis.interventions.windows import auto_window
from sae_lens_dit.conventions import DEFAULT_BUCKET_EDGES, timestep_scope
from sae_lens_dit.guards.output_dirs import claim
from sae_lens_dit.hooking.hooked import HookedDiT, denoiser

CACHE_KIND = "serve"
SUMMARY_CLASSES = 8
"""Classes (one sample each) of the run that summarises an SAE's latents."""
SUMMARY_TOKENS = 64
"""Token positions kept per image and step in that run (all of them on small backbones)."""


def fingerprint(module: torch.nn.Module, config: Any = None) -> str:
    """A short hash of a module's configuration and weights (per tensor: shape, sum, sum of squares)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().double()
            digest.update(f"{name}{tuple(t.shape)}{float(t.sum()):.17g}{float((t * t).sum()):.17g}".encode())
    return digest.hexdigest()[:32]


def png_bytes(image: np.ndarray) -> bytes:
    """One pipeline image [H, W, C] in [0, 1] as PNG bytes (8 bit, rounded), as the explorer serves it."""
    from PIL import Image

    pixels = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def class_labels_of(pipe: Any) -> tuple[int, ...] | None:
    """Classes the backbone was trained on (label map, else class embedding); None when text-conditioned."""
    known = getattr(pipe, "labels", None)
    if known:
        return tuple(sorted(set(known.values())))
    n = getattr(getattr(getattr(pipe, "transformer", None), "config", None), "num_embeds_ada_norm", None)
    return tuple(range(n)) if isinstance(n, int) else None


class Explorer:
    """Samples and edits for the live explorer (see the module docstring); all writes go to `cache_dir`."""

    def __init__(
        self,
        pipe: Any,
        hooked: HookedDiT,
        saes: Sequence[SAE],
        cache_dir: str | Path,
        *,
        sources: Sequence[SAESource | None] | None = None,
        names: Sequence[str] | None = None,
        model: str | None = None,
        num_inference_steps: int = 20,
        max_strength: float = 100.0,
        max_cache_mb: float = 512.0,
    ):
        if not saes:
            raise ValueError("the explorer needs at least one SAE")
        self.pipe, self.hooked, self.saes = pipe, hooked, list(saes)
        self.sources = list(sources) if sources is not None else [None] * len(self.saes)
        self.names = list(names) if names is not None else [_sae_name(s) for s in self.saes]
        if len(self.sources) != len(self.saes) or len(self.names) != len(self.saes):
            raise ValueError(f"{len(self.saes)} SAEs but {len(self.sources)} sources and {len(self.names)} names")
        for sae in self.saes:
            hooked.check_hook_names([sae.cfg.metadata.hook_name])
        self.model, self.steps = model, int(num_inference_steps)
        labels = class_labels_of(pipe)
        self.limits = Limits(tuple(int(s.cfg.d_sae) for s in self.saes), labels, float(max_strength))
        if not max_cache_mb > 0:
            raise ValueError(f"max_cache_mb must be positive, received {max_cache_mb}")
        self.max_cache_bytes = int(max_cache_mb * 2**20)
        self._cache_bytes: int | None = None  # size of images/, known after the first scan
        self.cache_dir = claim(cache_dir, CACHE_KIND, flag="--cache-dir")
        (self.cache_dir / "images").mkdir(exist_ok=True)
        (self.cache_dir / "summaries").mkdir(exist_ok=True)
        self.lock = threading.Lock()
        self.model_key = fingerprint(denoiser(pipe), dict(denoiser(pipe).config))
        self.sae_keys = [fingerprint(sae, sae.cfg.to_dict()) for sae in self.saes]
        self._summaries: dict[int, dict[str, Any]] = {}
        self._grids: dict[int, tuple[int, int]] = {}

    # --- what the page needs to know -----------------------------------------------------------

    def token_grid(self, index: int = 0) -> tuple[int, int]:
        """(rows, columns) of the tokens at SAE `index`'s hook, at the pipeline's default resolution: measured
        once from a one-step sample (a UNet's levels differ), then kept."""
        if index not in self._grids:
            hook = self.saes[index].cfg.metadata.hook_name
            seen: list[int] = []
            kwargs = self.call_kwargs(ViewRequest(class_label=self._any_label(), prompt="a photo"))
            with (
                self.lock,
                torch.no_grad(),
                self.hooked.hooks(fwd_hooks=[(hook, lambda x, hook: seen.append(x.shape[1]))]),
            ):
                generate(self.pipe, 0, **{**kwargs, "num_inference_steps": 1})
            self._grids[index] = self.hooked.token_grid(seen[0])
        return self._grids[index]

    def _any_label(self) -> int | None:
        labels = self.limits.class_labels
        return labels[0] if labels else None

    def info(self) -> dict[str, Any]:
        names = {v: k for k, v in (getattr(self.pipe, "labels", None) or {}).items()}
        labels = self.limits.class_labels
        return {
            "model": self.model,
            "num_inference_steps": self.steps,
            "token_grid": list(self.token_grid()),
            "classes": None if labels is None else [{"id": c, "name": names.get(c, str(c))} for c in labels[:1000]],
            "saes": [
                {
                    "index": i,
                    "name": n,
                    "hook": s.cfg.metadata.hook_name,
                    "d_sae": int(s.cfg.d_sae),
                    "token_grid": list(self.token_grid(i)),
                }
                for i, (n, s) in enumerate(zip(self.names, self.saes, strict=True))
            ],
            "max_strength": self.limits.max_strength,
            "bucket_edges": list(DEFAULT_BUCKET_EDGES),
        }

    # --- sampling ---------------------------------------------------------------------------------

    def call_kwargs(self, view: ViewRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"num_inference_steps": self.steps}
        if view.class_label is not None:
            kwargs["class_labels"] = [view.class_label]
        else:
            kwargs["prompt"] = [view.prompt]
        return kwargs

    def _key(self, **parts: Any) -> str:
        return hashlib.sha256(json.dumps({"model": self.model_key, **parts}, sort_keys=True).encode()).hexdigest()

    def image_path(self, name: str) -> Path:
        """The cached image `name` (64 hex digits + .png); anything else is refused."""
        stem = name.removesuffix(".png")
        if len(stem) != 64 or not name.endswith(".png") or any(c not in "0123456789abcdef" for c in stem):
            raise BadRequest(f"image names are 64 hex digits + .png, received {name[:80]!r}")
        return self.cache_dir / "images" / name

    def _write(self, path: Path, data: bytes, keep: Sequence[Path] = ()) -> None:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        if path.parent == self.cache_dir / "images":
            self._cache_bytes = (self._cache_bytes or 0) + len(data) if self._cache_bytes is not None else None
            if self._cache_bytes is None or self._cache_bytes > self.max_cache_bytes:  # first write, or maybe over
                self._prune(keep=(path, *keep))

    def _used(self, path: Path) -> None:
        """Mark a cached file as just used (its mtime), so that pruning removes the least recently used first."""
        os.utime(path)

    def _prune(self, keep: Sequence[Path] = ()) -> None:
        """Remove the least recently used cached images (and edit records) until the folder is within
        `max_cache_bytes`; only names of our own form (64 hex digits) in `images/`, never the ones in `keep`."""
        files = [
            (entry.stat().st_mtime, entry.stat().st_size, entry)
            for entry in (self.cache_dir / "images").iterdir()
            if entry.is_file() and not entry.is_symlink() and _is_cache_name(entry.name)
        ]
        total = sum(size for _, size, _ in files)
        for _, size, entry in sorted(files, key=lambda item: item[0]):
            if total <= self.max_cache_bytes:
                break
            if entry not in keep:
                entry.unlink(missing_ok=True)
                total -= size
        self._cache_bytes = total  # exact after a scan; kept up to date by `_write` until it may be over again

    def original(self, view: ViewRequest) -> str:
        """Name of the cached PNG of the unedited sample of `view` (sampled when not cached)."""
        name = self._key(kind="original", sample=view.sample_key(), call=self.call_kwargs(view)) + ".png"
        path = self.image_path(name)
        if path.exists():
            self._used(path)
        else:
            with self.lock, torch.no_grad():
                images = generate(self.pipe, view.seed, **self.call_kwargs(view))
            self._write(path, png_bytes(images[0]))
        return name

    def edited(self, view: ViewRequest) -> dict[str, Any]:
        """Names of the original and edited PNGs of `view`, the spec applied and what it changed."""
        spec = self.spec_for(view)
        before = self.original(view)
        sae = self.saes[view.sae]
        key = self._key(
            kind="edited",
            sae=self.sae_keys[view.sae],
            spec=spec.to_dict(),
            sample=view.sample_key(),
            call=self.call_kwargs(view),
        )
        after, meta_path = key + ".png", self.cache_dir / "images" / f"{key}.json"
        if not self.image_path(after).exists() or not meta_path.exists():
            with self.lock, torch.no_grad(), steer(self.hooked, [sae], spec) as trace:
                images = generate(self.pipe, view.seed, **self.call_kwargs(view))
            edited = trace.summary()
            if not edited:
                raise BadRequest(
                    f"the edit matched no denoising step (window {list(spec.edits[0].timesteps or [])}); widen it"
                )
            keep = (self.image_path(before), self.image_path(after), meta_path)
            self._write(self.image_path(after), png_bytes(images[0]), keep)
            self._write(meta_path, json.dumps({"edited": edited}).encode(), keep)
        else:
            self._used(self.image_path(after))
            self._used(meta_path)
        meta = json.loads(meta_path.read_text())
        return {"before": before, "after": after, "spec": spec.to_dict(), **meta}

    # --- the spec of a view -------------------------------------------------------------------

    def spec_for(self, view: ViewRequest) -> SteeringSpec:
        """The `SteeringSpec` of `view`'s edit: explicit timesteps, typical values written out."""
        if not view.latents:
            raise BadRequest("no latents to edit; pick one or more, e.g. latents=12")
        sae = self.saes[view.sae]
        if view.box is not None and not bool(region_mask(self.token_grid(view.sae), box=view.box).any()):
            rows, cols = self.token_grid(view.sae)
            raise BadRequest(f"box {list(view.box)} holds no token centre of the {rows}x{cols} token grid; enlarge it")
        window = view.window
        unit: dict[str, Any] = {}
        if view.unit == "typical" and view.op in ("add", "clamp"):
            typical = [self.summary(view.sae)["typical"][i] for i in view.latents]
            silent = [i for i, t in zip(view.latents, typical, strict=True) if not t > 0]
            if silent:
                raise BadRequest(
                    f"latent(s) {silent} never fired in the summary run, so they have no typical value; use unit=raw"
                )
            unit = {"unit": "typical", "typical": tuple(typical)}
        if window == "auto":
            profile = self.summary(view.sae)["profile"]
            curve = [sum(profile[i][b] for i in view.latents) for b in range(len(DEFAULT_BUCKET_EDGES) - 1)]
            try:
                window = auto_window(curve, DEFAULT_BUCKET_EDGES)
            except ValueError:
                raise BadRequest(
                    f"latent(s) {list(view.latents)} never fired in the summary run, so no auto window; give LOW,HIGH"
                ) from None
        try:
            edit = LatentEdit(
                sae.cfg.metadata.hook_name, view.latents, view.op, view.strength, timesteps=window, box=view.box, **unit
            )
            check_spec(self.hooked, [sae], SteeringSpec((edit,)))
        except ValueError as err:
            raise BadRequest(str(err)) from None
        source = self.sources[view.sae]
        return SteeringSpec((edit,), (source,) if source is not None else ())

    def spec_yaml(self, view: ViewRequest) -> str:
        """The spec of `view` as YAML, headed by the `sae-lens-dit edit` command that replays it."""
        spec = self.spec_for(view)
        call = self.call_kwargs(view)
        target = (
            f"--class-labels {view.class_label}"
            if view.class_label is not None
            else f"--prompt {shlex.quote(view.prompt or '')}"
        )
        model = f" --model {self.model}" if self.model else ""
        sae = "" if self.sources[view.sae] is not None else " --sae SAE_FOLDER"
        header = (
            f"# sae-lens-dit live explorer edit ({self.names[view.sae]}); replay with:\n"
            f"# sae-lens-dit edit --spec edit.yaml{model}{sae} {target} --seed {view.seed} "
            f"--num-inference-steps {call['num_inference_steps']} --output-dir edit-out\n"
        )
        return header + yaml.safe_dump(spec.to_dict(), sort_keys=False)

    # --- latent summaries ---------------------------------------------------------------------------

    def summary(self, index: int) -> dict[str, Any]:
        """Per latent of SAE `index`: firing rate, typical active value and mean code per timestep bucket,
        from one run over up to SUMMARY_CLASSES classes (seed 0), cached in memory and on disk."""
        if index in self._summaries:
            return self._summaries[index]
        labels = list((self.limits.class_labels or ())[:SUMMARY_CLASSES])
        key = self._key(kind="summary", sae=self.sae_keys[index], labels=labels, steps=self.steps, v=1)
        path = self.cache_dir / "summaries" / f"{key}.json"
        if path.exists():
            self._summaries[index] = json.loads(path.read_text())
            return self._summaries[index]
        sae = self.saes[index]
        hook = sae.cfg.metadata.hook_name
        kwargs: dict[str, Any] = {"num_inference_steps": self.steps}
        kwargs.update({"class_labels": labels} if labels else {"prompt": ["a photo"]})
        rows, cols = self.token_grid(index)
        keep = SUMMARY_TOKENS if rows * cols > SUMMARY_TOKENS else None
        with self.lock, torch.no_grad():
            with self.hooked.record([hook], tokens_per_image=keep, branch="cond") as rec:
                generate(self.pipe, 0, **kwargs)
            acts, times = rec[hook], rec.timesteps  # [calls, batch, tokens, d], [calls, batch]
            edges = torch.tensor(DEFAULT_BUCKET_EDGES, dtype=torch.float64)
            d_sae = int(sae.cfg.d_sae)
            sums = torch.zeros(len(edges) - 1, d_sae, dtype=torch.float64)
            counts = torch.zeros(len(edges) - 1, dtype=torch.float64)
            codes_all = []
            for call in range(acts.shape[0]):
                t = times[call].to(sae.device)
                with timestep_scope(sae, t):
                    codes = sae.encode(acts[call].to(sae.device, sae.dtype)).double().cpu()  # [batch, tokens, d_sae]
                bucket = int(
                    (torch.bucketize(times[call][:1].double(), edges, right=True) - 1).clamp(0, len(edges) - 2)
                )
                sums[bucket] += codes.sum((0, 1))
                counts[bucket] += codes.shape[0] * codes.shape[1]
                codes_all.append(codes.reshape(-1, d_sae))
        codes = torch.cat(codes_all)
        profile = (sums / counts.clamp_min(1)[:, None]).T  # [d_sae, buckets]
        active = codes > 0
        typical = []
        for j in range(d_sae):
            values = codes[active[:, j], j]
            typical.append(float(torch.quantile(values, TYPICAL_PERCENTILE / 100.0)) if len(values) else 0.0)
        summary = {
            "firing": [round(float(v), 6) for v in active.double().mean(0)],
            "typical": [round(v, 6) for v in typical],
            "profile": [[round(float(v), 6) for v in row] for row in profile],
            "bucket_edges": list(DEFAULT_BUCKET_EDGES),
            "classes": labels,
        }
        self._write(path, json.dumps(summary).encode())
        self._summaries[index] = json.loads(path.read_text())
        return self._summaries[index]

    def latents(self, index: int) -> dict[str, Any]:
        summary = self.summary(index)
        rows = [
            {"id": i, "firing": f, "typical": t, "profile": p}
            for i, (f, t, p) in enumerate(zip(summary["firing"], summary["typical"], summary["profile"], strict=True))
        ]
        return {"sae": index, "name": self.names[index], "bucket_edges": summary["bucket_edges"], "latents": rows}


def _is_cache_name(name: str) -> bool:
    """A file name the explorer writes into `images/`: 64 hex digits and .png or .json."""
    stem, _, suffix = name.partition(".")
    return suffix in ("png", "json") and len(stem) == 64 and all(c in "0123456789abcdef" for c in stem)


def _sae_name(sae: SAE) -> str:
    return f"{sae.cfg.metadata.hook_name}/{sae.cfg.architecture()}"
