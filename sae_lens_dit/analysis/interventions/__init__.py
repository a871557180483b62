"""Interventions: edits of SAE latents inside a sampling run, and the steering recipe built on them
(latent selection, gates, timestep windows, recipes, named concepts)."""

from sae_lens_dit.analysis.interventions.editing import (
    OPERATIONS,
    EditResult,
    LatentEdit,
    Operation,
    SAESource,
    SteeringSpec,
    SteeringTrace,
    Unit,
    check_spec,
    decoder_delta,
    edit,
    generate,
    preview_latent,
    region_mask,
    save_grid,
    steer,
)

__all__ = [
    "EditResult",
    "LatentEdit",
    "OPERATIONS",
    "Operation",
    "SAESource",
    "SteeringSpec",
    "SteeringTrace",
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
