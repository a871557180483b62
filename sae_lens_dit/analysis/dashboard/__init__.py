"""Static HTML dashboards of SAE latents with a timestep axis: the build, the page markup, and the
files the build writes (with its manifest)."""
