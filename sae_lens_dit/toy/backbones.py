"""The bundled tiny backbones: class-conditional pixel-space DiTs, their pipeline and classifiers.

Each backbone lives in `pretrained/tiny-dit-<name>/` as a diffusers folder set (`transformer/`,
`scheduler/`, `classifier/`) written by `scripts/train_tiny_dit.py`, plus `sampling.json` with the
guidance scale chosen by measurement. There is no VAE (the model works on pixels), so the pipeline
is a stock `DiTPipeline` with an identity VAE; every DiT hook and `HookedDiT.record` behave exactly
as with any other DiTPipeline.
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from sae_lens_dit.resources import pretrained_dir

TinyDiTName = Literal["digits", "shapes"]
TINY_DIT_NAMES: tuple[str, ...] = get_args(TinyDiTName)
NULL_CLASS = 1000
"""DiTPipeline hard-codes class 1000 as the CFG null class, so the tiny DiTs use it too."""


def tiny_dit_dir(name: str) -> Path:
    """Folder of a bundled backbone; an unknown name lists the known ones."""
    if name not in TINY_DIT_NAMES:
        raise ValueError(f"unknown tiny DiT {name!r}; bundled backbones are {list(TINY_DIT_NAMES)}")
    return pretrained_dir() / f"tiny-dit-{name}"


class IdentityVAE(ModelMixin, ConfigMixin):
    """Stands in for the VAE of a pixel-space DiT: `decode(x).sample` is `x` itself."""

    @register_to_config
    def __init__(self, scaling_factor: float = 1.0):
        super().__init__()
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        return DecoderOutput(sample=z) if return_dict else (z,)


class TinyDiTPipeline(DiTPipeline):
    """A `DiTPipeline` whose default guidance scale is the one measured for its backbone.

    DiTPipeline's default of 4.0 over-saturates tiny pixel-space models; everything else,
    including the sampling loop, is DiTPipeline's own.
    """

    default_guidance_scale: float = 4.0

    def __call__(self, class_labels, guidance_scale: float | None = None, **kwargs):
        if guidance_scale is None:
            guidance_scale = self.default_guidance_scale
        return super().__call__(class_labels, guidance_scale=guidance_scale, **kwargs)


class TinyClassifier(ModelMixin, ConfigMixin):
    """A small CNN that labels bundled-backbone images; its penultimate layer gives the
    features for Fréchet distances. Input: [batch, channels, size, size] in [-1, 1]."""

    @register_to_config
    def __init__(self, in_channels: int = 1, image_size: int = 8, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Flatten(),
            nn.Linear(2 * width * (image_size // 4) ** 2, 64),
            nn.GELU(),
        )
        self.head = nn.Linear(64, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)  # [batch, 64]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # [batch, num_classes]

    @torch.no_grad()
    def embed(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Penultimate features [n, 64] (the space of the evaluation's Frechet distance); inputs as `predict`."""
        return self.features(_as_model_input(images, self)).cpu().double().numpy()

    @torch.no_grad()
    def predict(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class ids for images given as [-1, 1] NCHW tensors or pipeline `np` output (NHWC, [0, 1])."""
        return self(_as_model_input(images, self)).argmax(-1).cpu().numpy()


def _as_model_input(images: np.ndarray | torch.Tensor, model: nn.Module) -> torch.Tensor:
    if isinstance(images, np.ndarray):  # pipeline output: [n, H, W, C] in [0, 1]
        images = torch.from_numpy(images).permute(0, 3, 1, 2) * 2.0 - 1.0
    return images.to(next(model.parameters()).device, torch.float32)


def load_tiny_dit(
    name: TinyDiTName = "digits", device: str | torch.device = "cpu", torch_dtype: torch.dtype = torch.float32
) -> TinyDiTPipeline:
    """The bundled trained backbone `name` as a DiTPipeline-compatible pipeline, offline.

    >>> pipe = load_tiny_dit("digits")
    >>> pipe(class_labels=[3], num_inference_steps=2, output_type="np").images.shape
    (1, 8, 8, 1)
    """
    folder = tiny_dit_dir(name)
    transformer = DiTTransformer2DModel.from_pretrained(folder / "transformer", torch_dtype=torch_dtype)
    scheduler = DDIMScheduler.from_pretrained(folder / "scheduler")
    sampling = json.loads((folder / "sampling.json").read_text())
    id2label = {int(k): v for k, v in sampling["id2label"].items()}
    pipe = TinyDiTPipeline(transformer=transformer, vae=IdentityVAE(), scheduler=scheduler, id2label=id2label)
    pipe.default_guidance_scale = float(sampling["guidance_scale"])
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_tiny_classifier(name: TinyDiTName = "digits") -> TinyClassifier:
    """The classifier bundled with backbone `name` (digits: the digit; shapes: the shape kind)."""
    return TinyClassifier.from_pretrained(tiny_dit_dir(name) / "classifier").eval()


@dataclass(frozen=True)
class MeasuredFactors:
    """Factors of shapes images measured from pixels (foreground = far from the border colour)."""

    hue: np.ndarray  # [n] in [0, 1)
    size: np.ndarray  # [n] half-width in pixels, from the foreground area
    center: np.ndarray  # [n, 2] (x, y) in pixels
    background: np.ndarray  # [n] grey level in [0, 1]


def measure_shape_factors(images: np.ndarray, threshold: float = 0.25) -> MeasuredFactors:
    """Colour, size, position and background of shapes images, given as [n, H, W, 3] in [0, 1]."""
    n, h, w, _ = images.shape
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    bg = np.median(border, axis=1)  # [n, 3]
    dist = np.abs(images - bg[:, None, None]).max(-1)  # [n, H, W]
    weight = np.clip(dist / threshold, 0.0, 1.0) * (dist > threshold / 2)
    area = weight.sum((1, 2)) + 1e-6
    ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    center = np.stack([(weight * xs).sum((1, 2)) / area, (weight * ys).sum((1, 2)) / area], 1)
    mean_rgb = (weight[..., None] * images).sum((1, 2)) / area[:, None]
    hue = np.array([colorsys.rgb_to_hsv(*np.clip(c, 0, 1))[0] for c in mean_rgb])
    return MeasuredFactors(hue=hue, size=np.sqrt(area) / 2.0, center=center, background=bg.mean(-1))


def shape_tokens(images: np.ndarray, grid: tuple[int, int], threshold: float = 0.25) -> np.ndarray:
    """[n, tokens] bool, row-major over the token grid: tokens whose patch is mostly foreground (far from the
    border colour, as in `measure_shape_factors`) in shapes images [n, H, W, 3] in [0, 1]."""
    n, h, w, _ = images.shape
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    dist = np.abs(images - np.median(border, axis=1)[:, None, None]).max(-1)  # [n, H, W]
    rows, cols = grid
    patches = (dist > threshold / 2).reshape(n, rows, h // rows, cols, w // cols).mean((2, 4))
    return (patches >= 0.5).reshape(n, rows * cols)


def load_pipeline(model: str, device: str | torch.device = "cpu"):
    """A DiT pipeline from a bundled backbone name, a local diffusers folder or a Hub repo id.

    Refuses clearly, before any download, when a local path does not exist or a Hub id is asked
    for while offline and not cached.
    """
    from diffusers import DiffusionPipeline
    from huggingface_hub.constants import HF_HUB_OFFLINE

    name = model.removeprefix("tiny-dit-")
    if name in TINY_DIT_NAMES:
        return load_tiny_dit(name, device=device)  # type: ignore[arg-type]
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").exists():
            raise ValueError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
        pipe = DiffusionPipeline.from_pretrained(path)
    elif model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise FileNotFoundError(
            f"model {model!r}: no such folder, and not a Hub repo id (owner/name); bundled backbones are "
            f"{list(TINY_DIT_NAMES)}"
        )
    else:
        try:
            pipe = DiffusionPipeline.from_pretrained(model, local_files_only=HF_HUB_OFFLINE)
        except Exception as err:  # diffusers raises several types for "not cached"
            if not HF_HUB_OFFLINE:
                raise
            raise OSError(
                f"model {model!r} is not in the Hugging Face cache and HF_HUB_OFFLINE=1: download it on a "
                "machine with Hub access (huggingface-cli download) or unset HF_HUB_OFFLINE"
            ) from err
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
