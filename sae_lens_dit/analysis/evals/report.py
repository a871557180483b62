"""Reading an evaluation as a person does: Markdown tables of one `evaluate` report, and PNG plots of
each metric against the timestep for several reports side by side.

Why its own module: presentation changes more often than the metrics, and it reads only the JSON
report (the layout `results.write_eval_files` documents), so a report loaded back from `eval.json`
formats and plots the same as a fresh one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sae_lens_dit.analysis.evals.latents import LatentUsage
from sae_lens_dit.analysis.evals.probes import summarize_factors


def _bucket_label(row: dict[str, Any]) -> str:
    return f"{row['t_low']:.0f}-{row['t_high']:.0f}"


def format_report(report: dict[str, Any]) -> str:
    """Markdown (and terminal) tables of one `evaluate` report."""
    lines = [
        f"### {report['sae']} on {report['model']} ({report['heldout_images']} held-out images)",
        "",
        "| t bucket | branch | explained var | cosine | L0 | dead | dense | loss recovered (zero) | "
        "loss recovered (mean) |",
        "|" + "---|" * 9,
    ]
    for rec, den in zip(report["reconstruction"], report["denoising"], strict=True):
        lines.append(
            f"| {_bucket_label(rec)} | {rec['branch']} | {rec['explained_variance']:.4f} | {rec['cosine']:.4f} | "
            f"{rec['l0']:.1f} | {rec['dead_latents']} | {rec['dense_latents']} | {den['recovered_vs_zero']:.4f} | "
            f"{den['recovered_vs_mean']:.4f} |"
        )
    profile = report["timestep_profile"]
    lines += ["", "Latent timestep profiles: " + ", ".join(f"{k} {v}" for k, v in profile.items())]
    if "latent_usage" in report:
        u = report["latent_usage"]
        lines.append(
            f"Latents over every held-out row (all buckets, both CFG branches): "
            f"{LatentUsage(u['rows'], u['d_sae'], u['dead'], u['dense']).summary()}"
        )
    if "generation" in report:
        g = report["generation"]
        lines.append(
            f"Spliced generation ({g['samples']} samples): pixel MSE {g['pixel_mse']:.4g}, classifier agreement "
            f"{g['classifier_agreement']:.3f}, on-class {g['on_class_clean']:.3f} -> {g['on_class_spliced']:.3f}, "
            f"Frechet distance {g['frechet_distance']:.3f} (noise floor {g['frechet_floor']:.3f})"
        )
    if "interpretability" in report:
        lines += [
            "",
            "| t bucket | factor | best AUROC: SAE | neurons | rotation | latents to 0.9: SAE | neurons | "
            "rotation | class probe: SAE | neurons |",
            "|" + "---|" * 10,
        ]
        for bucket in report["interpretability"]:
            probe = bucket["probe_accuracy"]
            for family, s in summarize_factors(bucket).items():
                lines.append(
                    f"| {_bucket_label(bucket)} | {family} | {s['sae_best_auroc']:.3f} | {s['neurons_best_auroc']:.3f}"
                    f" | {s['rotation_best_auroc']:.3f} | {s['sae_median_features_to_target']:g} | "
                    f"{s['neurons_median_features_to_target']:g} | {s['rotation_median_features_to_target']:g} | "
                    f"{probe['sae']:.3f} | {probe['neurons']:.3f} |"
                )
    return "\n".join(lines)


def plot_reports(
    reports: Sequence[dict[str, Any]], out_dir: str | Path, labels: Sequence[str] | None = None
) -> list[Path]:
    """PNG plots of each metric against the timestep (cond branch), one line per report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = list(labels or [r["sae"] for r in reports])
    mid = lambda row: (row["t_low"] + row["t_high"]) / 2  # noqa: E731
    panels = [
        ("explained_variance", "reconstruction", "explained_variance", "explained variance"),
        ("cosine", "reconstruction", "cosine", "cosine similarity"),
        ("loss_recovered", "denoising", "recovered_vs_mean", "denoising loss recovered (vs mean ablation)"),
    ]
    paths = []
    for filename, section, key, ylabel in panels:
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        for report, label in zip(reports, labels, strict=True):
            rows = [r for r in report[section] if r["branch"] == "cond"]
            ax.plot([mid(r) for r in rows], [r[key] for r in rows], marker="o", label=label)
        ax.set_xlabel("timestep (1000 = noise)")
        ax.set_ylabel(ylabel)
        ax.invert_xaxis()
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out_dir / f"{filename}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths
