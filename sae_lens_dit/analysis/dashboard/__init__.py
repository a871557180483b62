"""Static HTML dashboards of SAE latents with a timestep axis: the build, the page markup, and the
files the build writes (with its manifest). `build_dashboard(saes, output_dir, DashboardConfig())`
is the entry point; the modules are listed in `build`'s docstring."""

from sae_lens_dit.analysis.dashboard.build import DashboardBuild, build_dashboard
from sae_lens_dit.analysis.dashboard.config import DashboardConfig

__all__ = ["DashboardBuild", "DashboardConfig", "build_dashboard"]
