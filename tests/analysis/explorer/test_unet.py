"""The live explorer over a UNet pipeline (stock SDXL of tiny random parts): prompts, and the token grid of each
SAE's own level (the UNet's levels have 16x16, 8x8 and 4x4 tokens at a 16x16 latent; counted here by hand)."""

from __future__ import annotations

import pytest
import torch
from sae_lens import TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.random_unet import random_sd_pipeline

pytest.importorskip("starlette")


def _sae(d_in: int, hook: str) -> TopKSAE:
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=4 * d_in, k=2, metadata=SAEMetadata(hook_name=hook)))
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.normal_(0, 0.5)
    return sae


def test_each_sae_gets_the_grid_of_its_level_and_edits_take_prompts(tmp_path):
    from starlette.testclient import TestClient

    from sae_lens_dit.analysis.explorer import create_app

    pipe = random_sd_pipeline("sdxl")
    pipe.set_progress_bar_config(disable=True)
    hooked = HookedDiT.from_pipeline(pipe)
    hooks = ["down.2.1.hook_update", "up.1.0.hook_resid_post"]  # level 2 (4x4 tokens), level 1 (8x8)
    saes = [_sae(hooked.d_in(hook), hook) for hook in hooks]
    client = TestClient(create_app(pipe, hooked, saes, tmp_path / "cache", num_inference_steps=2))
    info = client.get("/api/info").json()
    assert info["classes"] is None
    assert [s["token_grid"] for s in info["saes"]] == [[4, 4], [8, 8]]
    edit = client.get("/api/edit?sae=1&prompt=a%20red%20square&seed=1&latents=0,1&strength=20&unit=raw&window=0,1000")
    assert edit.status_code == 200, edit.text
    assert edit.json()["spec"]["edits"][0]["hook"] == hooks[1]
    refused = client.get("/api/edit?sae=0&prompt=a%20cat&latents=0&unit=raw&box=0,0,0.1,0.1&window=0,1000")
    assert refused.status_code == 400 and "4x4 token grid" in refused.text  # a box between token centres
