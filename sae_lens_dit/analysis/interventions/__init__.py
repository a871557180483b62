"""Interventions: edits of SAE latents inside a sampling run, and the steering recipe built on them.

Why a package: steering is a chain of small, separately testable steps. The generic machinery:
`spec` (what to change, as YAML/JSON data), `regions` (box/mask/tokens -> token masks), `steering`
(the hooks that apply a spec inside any stock pipeline), `editing` (the same sample with and without
a spec, previews, image grids), `resume` (steered samples started at their first edited step from the
unedited sample's latents, in the package's one denoising loop). Choosing what to edit: `selection`
(selective latents), `gates` (per-token gates), `windows` (when an edit takes hold), `recipes` (swap,
transfer, suppression) and `concepts` (named, tuned specs such as hue=2). `shape_concepts` is the
recipe tuned for the bundled shapes backbone, built on the generic pieces.
"""

from sae_lens_dit.analysis.interventions.editing import EditResult, edit, generate, preview_latent, save_grid
from sae_lens_dit.analysis.interventions.regions import region_mask
from sae_lens_dit.analysis.interventions.spec import (
    OPERATIONS,
    UNITS,
    LatentEdit,
    Operation,
    SAESource,
    SteeringSpec,
    Unit,
)
from sae_lens_dit.analysis.interventions.steering import SteeringTrace, check_spec, decoder_delta, steer

__all__ = [
    "EditResult",
    "LatentEdit",
    "OPERATIONS",
    "Operation",
    "SAESource",
    "SteeringSpec",
    "SteeringTrace",
    "UNITS",
    "Unit",
    "check_spec",
    "decoder_delta",
    "edit",
    "generate",
    "preview_latent",
    "region_mask",
    "save_grid",
    "steer",
]
