"""Fixtures of the live-explorer tests: an app over a tiny random DiT (16 tokens, width 8) and a tiny random
TopK SAE at blocks.0.hook_resid_post, 4 denoising steps; and one over the bundled shapes backbone with a
release SAE, 8 steps. Each app owns a fresh cache folder under `tmp_path`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sae_lens import SAE, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from sae_lens_dit.analysis.interventions import SAESource
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.random_dit import random_dit_pipeline

pytest.importorskip("starlette")
pytest.importorskip("httpx")

TINY_HOOK = "blocks.0.hook_resid_post"
TINY_D_SAE = 32
SHAPES_RELEASE, SHAPES_SAE = "tide-dit-tiny/shapes", "blocks.1.hook_resid_post/tide"


def tiny_sae() -> SAE:
    """A random TopK SAE (d_in 8, d_sae 32, k 4) reading TINY_HOOK."""
    cfg = TopKSAEConfig(d_in=8, d_sae=TINY_D_SAE, k=4, metadata=SAEMetadata(hook_name=TINY_HOOK))
    sae = TopKSAE(cfg)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.normal_(0, 0.5)
    return sae


@pytest.fixture
def tiny(tmp_path: Path):
    """(client, pipe, hooked, sae, cache_dir) of an app over the tiny random DiT."""
    from starlette.testclient import TestClient

    from sae_lens_dit.analysis.explorer import create_app

    torch.manual_seed(0)
    pipe = random_dit_pipeline()
    hooked, sae = HookedDiT(pipe.transformer), tiny_sae()
    cache = tmp_path / "cache"
    app = create_app(pipe, hooked, [sae], cache, num_inference_steps=4)
    return TestClient(app), pipe, hooked, sae, cache


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """(client, pipe, hooked, sae, cache_dir) of an app over the bundled shapes backbone and a release SAE."""
    from starlette.testclient import TestClient

    from sae_lens_dit import load_tiny_dit
    from sae_lens_dit.analysis.explorer import create_app

    pipe = load_tiny_dit("shapes")
    pipe.set_progress_bar_config(disable=True)
    sae = SAE.from_pretrained(SHAPES_RELEASE, SHAPES_SAE)
    hooked = HookedDiT(pipe.transformer)
    cache = tmp_path_factory.mktemp("shapes") / "cache"
    app = create_app(
        pipe,
        hooked,
        [sae],
        cache,
        sources=[SAESource(release=SHAPES_RELEASE, sae_id=SHAPES_SAE)],
        model="shapes",
        num_inference_steps=8,
    )
    return TestClient(app), pipe, hooked, sae, cache
