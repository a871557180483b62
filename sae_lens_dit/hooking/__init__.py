"""Hooking diffusers transformers: adapter specs (data), how a call is read, hook sites, HookedDiT, recording.

Nothing here knows an SAE architecture or a training loop: `HookedDiT.saes()` splices any module
that maps activations to activations, and TIDE SAEs get each row's timestep through
`sae_lens_dit.conventions.TimestepConditioned`.
"""
