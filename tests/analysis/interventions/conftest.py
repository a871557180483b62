"""Shared fixtures of the steering tests: a tiny random DiT pipeline (16 tokens of width 8 at
blocks.0.hook_resid_post) and tiny random SAEs of every architecture that hook reads."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from sae_lens_dit import TideSAE, TideSAEConfig
from sae_lens_dit.toy.backbones import TinyDiTPipeline
from sae_lens_dit.toy.random_dit import random_dit_pipeline

TINY_HOOK = "blocks.0.hook_resid_post"
TINY_D, TINY_D_SAE = 8, 32


@pytest.fixture
def pipe() -> TinyDiTPipeline:
    return random_dit_pipeline()


def _randomise(sae: SAE) -> SAE:
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.normal_(0, 0.5)
    return sae


def tiny_sae(kind: str = "topk", hook: str = TINY_HOOK) -> SAE:
    """A random SAE reading `hook` (d_in 8, d_sae 32): topk (k 4, decoder-norm rescaling), standard (ReLU) or tide."""
    metadata = SAEMetadata(hook_name=hook)
    if kind == "topk":
        cfg = TopKSAEConfig(d_in=TINY_D, d_sae=TINY_D_SAE, k=4, rescale_acts_by_decoder_norm=True, metadata=metadata)
        return _randomise(TopKSAE(cfg))
    if kind == "standard":
        return _randomise(StandardSAE(StandardSAEConfig(d_in=TINY_D, d_sae=TINY_D_SAE, metadata=metadata)))
    if kind == "tide":
        cfg = TideSAEConfig(
            d_in=TINY_D,
            d_sae=TINY_D_SAE,
            k=4,
            rescale_acts_by_decoder_norm=True,
            apply_b_dec_to_input=True,
            normalize_activations="none",
            metadata=metadata,
        )
        sae = _randomise(TideSAE(cfg))
        with torch.no_grad():  # keep the timestep terms O(1), so float32 hand computations stay within 1e-5
            for parameter in sae.timestep_mlp.parameters():
                parameter.mul_(0.1)
        return sae
    raise ValueError(f"unknown tiny SAE kind {kind!r}")


@pytest.fixture
def make_sae() -> Callable[..., SAE]:
    """`make_sae(kind="topk", hook=...)`: a fresh random tiny SAE (see `tiny_sae`)."""
    return tiny_sae


def capture_block0(transformer, inputs: dict) -> torch.Tensor:
    """Output of transformer block 0 for `transformer(**inputs)`, as a plain torch forward hook registered last
    (so after any steering hook) sees it: the independent reference of the steering tests."""
    store: list[torch.Tensor] = []
    handle = transformer.transformer_blocks[0].register_forward_hook(
        lambda _m, _a, out: store.append(out.detach().clone())
    )
    try:
        with torch.no_grad():
            transformer(**inputs)
    finally:
        handle.remove()
    return store[-1]


@pytest.fixture
def block0_output() -> Callable[..., torch.Tensor]:
    return capture_block0
