"""The rules users rely on, in one place: config input checked before any work (`config`), data a run
must not use stopped where it appears (`data`), and output folders that belong to the user
(`output_dirs`)."""

from sae_lens_dit.guards.data import check_class_labels, check_finite, finite_batches

__all__ = ["check_class_labels", "check_finite", "finite_batches"]
