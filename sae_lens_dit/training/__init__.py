"""Training: harvesting activations across the denoising trajectory, the activation cache, the runner
and its presets, and data-parallel runs under torchrun. Training is SAELens's own `SAETrainer`."""
