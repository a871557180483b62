"""sae-lens-dit: diffusion transformers as first-class citizens of SAELens.

Importing the package registers the `tide` architecture and the releases of `pretrained/` with
SAELens (idempotent), so `SAE.from_pretrained` and SAELens's trainer see them.
"""

from sae_lens_dit.adapters import AdapterSpec
from sae_lens_dit.backbones import load_tiny_dit
from sae_lens_dit.hooked import HookedDiT
from sae_lens_dit.recording import Recording
from sae_lens_dit.registry import register_tide_architecture
from sae_lens_dit.releases import list_releases, register_releases
from sae_lens_dit.runner import DiTSAERunnerConfig, DiTSAETrainingRunner
from sae_lens_dit.saes import TideSAE, TideSAEConfig, TideTrainingSAE, TideTrainingSAEConfig

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
