"""Interventions: edits of SAE latents inside a sampling run, and the steering recipe built on them
(latent selection, gates, timestep windows, recipes, named concepts)."""
