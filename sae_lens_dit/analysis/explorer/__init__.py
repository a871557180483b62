"""The live feature explorer: paint SAE latents onto a region of a sample and see the edit beside the original.

Why a sub-package: the explorer joins three concerns that change for different reasons. `requests`
checks every untrusted query value against explicit bounds; `engine` runs the model (samples, edits
through `interventions.steer`, latent summaries) and caches images content-addressed in the one folder
it owns; `app` is the Starlette web layer and `index.html` the single page (vanilla JS, no build
step). It receives already-loaded objects: the CLI (`sae-lens-dit serve`) resolves releases, since
analysis may not import the hub. The web dependencies are the optional `app` extra.
"""

from sae_lens_dit.analysis.explorer.app import APP_EXTRA_HINT, create_app
from sae_lens_dit.analysis.explorer.engine import Explorer, png_bytes
from sae_lens_dit.analysis.explorer.requests import BadRequest, Limits, ViewRequest, parse_view

__all__ = ["APP_EXTRA_HINT", "BadRequest", "Explorer", "Limits", "ViewRequest", "create_app", "parse_view", "png_bytes"]
