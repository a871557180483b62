"""Evaluation of diffusion SAEs along the denoising trajectory.

Every metric is reported per timestep bucket, because a DiT's activations change character from
pure noise (t = 1000) to a clean image (t = 0) and an average over the trajectory hides where an
SAE fails. Timesteps follow the package convention: DDPM scale [0, 1000], 1000 = pure noise.

The protocol (`evaluate`, `sae-lens-dit eval`), diffusion's answer to "CE loss recovered":
held-out images are noised with the scheduler to one timestep per image in every bucket and run
once per CFG branch (`heldout_pass`); on those rows it measures reconstruction, the model's own
denoising loss with the SAE spliced in against zero- and mean-ablation (`spliced_denoising`),
latents scored against known factors next to raw neurons and a random rotation, and class probes
(`interpretability_by_bucket`), and per-latent timestep profiles (`latent_timestep_stats`). Samples
drawn with and without the SAE in the loop measure generation drift (`spliced_generation`).

One module per topic: `reconstruction` (rows -> per-bucket metrics), `latents` (dead, dense and
timestep profiles), `denoising` (the held-out pass and loss recovered), `generation` (spliced
sampling, Frechet distance), `probes` (ground-truth factors), `protocol` (`EvalConfig`,
`evaluate`), `report` (Markdown and plots) and `results` (the one `eval.json` layout). Every name
is re-exported here, where it was importable before the split.
"""

from sae_lens_dit.analysis.evals.denoising import (
    BRANCH_NAMES,
    HeldoutPass,
    heldout_pass,
    heldout_reconstruction,
    spliced_denoising,
)
from sae_lens_dit.analysis.evals.generation import (
    FeatureFn,
    GenerationDrift,
    frechet_distance,
    sample_images,
    spliced_generation,
    torchscript_features,
)
from sae_lens_dit.analysis.evals.latents import (
    EARLY_T,
    LATE_T,
    PROFILE_SHARE,
    LatentTimestepStats,
    LatentUsage,
    latent_timestep_stats,
    latent_usage,
)
from sae_lens_dit.analysis.evals.probes import (
    AUROC_TARGET,
    MAX_COMBINED,
    auroc,
    factor_scores,
    factor_value_scores,
    interpretability_by_bucket,
    probe_accuracy,
    summarize_factors,
)
from sae_lens_dit.analysis.evals.prompted import prompted_heldout_pass
from sae_lens_dit.analysis.evals.protocol import EvalConfig, evaluate
from sae_lens_dit.analysis.evals.reconstruction import (
    DENSE_THRESHOLD,
    BucketMetrics,
    bucket_masks,
    bucket_metrics,
    format_bucket_table,
    format_frame_table,
    reconstruct,
    reconstruction_by_bucket,
)
from sae_lens_dit.analysis.evals.report import format_report, plot_reports
from sae_lens_dit.analysis.evals.results import EvalResults, read_eval_file, write_eval_files
from sae_lens_dit.conventions import DEFAULT_BUCKET_EDGES, PROFILES, TimestepProfile

__all__ = [
    "AUROC_TARGET",
    "BRANCH_NAMES",
    "DEFAULT_BUCKET_EDGES",
    "DENSE_THRESHOLD",
    "EARLY_T",
    "LATE_T",
    "MAX_COMBINED",
    "PROFILES",
    "PROFILE_SHARE",
    "BucketMetrics",
    "EvalConfig",
    "EvalResults",
    "FeatureFn",
    "GenerationDrift",
    "HeldoutPass",
    "LatentTimestepStats",
    "LatentUsage",
    "TimestepProfile",
    "auroc",
    "bucket_masks",
    "bucket_metrics",
    "evaluate",
    "factor_scores",
    "factor_value_scores",
    "format_bucket_table",
    "format_frame_table",
    "format_report",
    "frechet_distance",
    "heldout_pass",
    "heldout_reconstruction",
    "interpretability_by_bucket",
    "prompted_heldout_pass",
    "latent_timestep_stats",
    "latent_usage",
    "plot_reports",
    "probe_accuracy",
    "read_eval_file",
    "reconstruct",
    "reconstruction_by_bucket",
    "sample_images",
    "spliced_denoising",
    "spliced_generation",
    "summarize_factors",
    "torchscript_features",
    "write_eval_files",
]
