"""Releases of pretrained dictionaries (`pretrained/releases.yaml`, registered with SAELens) and
publishing a trained SAE to the Hugging Face Hub."""
