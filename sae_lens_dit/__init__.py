"""sae-lens-dit: diffusion transformers as first-class citizens of SAELens.

Importing the package registers the `tide` architecture and the releases of `pretrained/` with
SAELens (idempotent), so `SAE.from_pretrained` and SAELens's trainer see them.
"""

from sae_lens_dit.adapters import AdapterSpec
from sae_lens_dit.backbones import load_tiny_dit
from sae_lens_dit.hooked import HookedDiT
from sae_lens_dit.recording import Recording

__all__ = ["AdapterSpec", "HookedDiT", "Recording", "load_tiny_dit"]
