"""sae-lens-dit: diffusion transformers as first-class citizens of SAELens.

Importing the package registers the `tide` architecture and the releases of `pretrained/` with
SAELens (idempotent), so `SAE.from_pretrained` and SAELens's trainer see them.
"""

from sae_lens_dit import _moved
from sae_lens_dit.hooking.adapters import AdapterSpec
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.hooking.recording import Recording
from sae_lens_dit.hub.releases import list_releases, register_releases
from sae_lens_dit.saes import TideSAE, TideSAEConfig, TideTrainingSAE, TideTrainingSAEConfig
from sae_lens_dit.saes.registration import register_tide_architecture
from sae_lens_dit.toy.backbones import load_tiny_dit
from sae_lens_dit.training.runner import DiTSAERunnerConfig, DiTSAETrainingRunner

_moved.install()
register_tide_architecture()
register_releases()

__all__ = [
    "AdapterSpec",
    "DiTSAERunnerConfig",
    "DiTSAETrainingRunner",
    "HookedDiT",
    "Recording",
    "TideSAE",
    "TideSAEConfig",
    "TideTrainingSAE",
    "TideTrainingSAEConfig",
    "list_releases",
    "load_tiny_dit",
]
