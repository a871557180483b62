"""Tiny random backbones of the families whose pipelines pass a reversed or non-affine timestep.

Configs are diffusers' own model-test configs (tests/models/transformers/test_models_transformer_*.py).
Each `Family` also carries the test's *own* description of where activations live and of the raw
timestep its pipeline passes at a noise level, written independently of `adapters/*.yaml`, so the
tests compare HookedDiT with plain torch hooks and with the pipelines' formulas, not with the spec.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from diffusers import CosmosTransformer3DModel, Lumina2Transformer2DModel, LuminaNextDiT2DModel, MochiTransformer3DModel
from torch import Tensor, nn


@dataclass
class Family:
    name: str  # the adapter the class must get
    build: Callable[[], nn.Module]
    inputs: Callable[[int, Tensor], dict[str, Any]]  # (batch, raw timestep [batch]) -> forward kwargs
    stacks: dict[str, str]  # hook-name prefix -> ModuleList attribute
    image_index: int | None  # where the block output holds the image stream (None: the output is it)
    text_index: int | None
    submodules: dict[str, tuple[str, int | None]]  # hook -> (dotted submodule path, output tuple index)
    raw_at: Callable[[float], float]  # the raw timestep the family's pipeline passes at noise level `sigma`
    t_at: Callable[[float], float]  # the project's t (1000 = noise) at that noise level

    def make(self) -> nn.Module:
        torch.manual_seed(0)
        return self.build().eval()

    def run(self, model: nn.Module, inputs: dict[str, Any]) -> Tensor:
        with torch.no_grad():
            return model(**inputs, return_dict=False)[0]


def _lumina2() -> nn.Module:
    return Lumina2Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        hidden_size=24,
        num_layers=2,
        num_refiner_layers=2,
        num_attention_heads=3,
        num_kv_heads=1,
        multiple_of=2,
        ffn_dim_multiplier=None,
        norm_eps=1e-5,
        scaling_factor=1.0,
        axes_dim_rope=(4, 2, 2),
        axes_lens=(128, 128, 128),
        cap_feat_dim=32,
    )


def _lumina2_inputs(batch: int, t: Tensor) -> dict[str, Any]:
    mask = torch.ones(batch, 16, dtype=torch.bool)
    mask[0, 10:] = False  # ragged caption lengths: the joint rows differ, the noise refiner's do not
    return {
        "hidden_states": torch.randn(batch, 4, 16, 16),
        "encoder_hidden_states": torch.randn(batch, 16, 32),
        "timestep": t,
        "encoder_attention_mask": mask,
    }


def _lumina_next() -> nn.Module:
    return LuminaNextDiT2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        hidden_size=24,
        num_layers=2,
        num_attention_heads=3,
        num_kv_heads=1,
        multiple_of=16,
        ffn_dim_multiplier=None,
        norm_eps=1e-5,
        learn_sigma=False,
        qk_norm=True,
        cross_attention_dim=32,
        scaling_factor=1.0,
    )


def _lumina_next_inputs(batch: int, t: Tensor) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(batch, 4, 16, 16),
        "encoder_hidden_states": torch.randn(batch, 16, 32),
        "timestep": t,
        "encoder_mask": torch.ones(batch, 16),
        "image_rotary_emb": torch.randn(384, 384, 4),
        "cross_attention_kwargs": {},
    }


def _mochi() -> nn.Module:
    return MochiTransformer3DModel(
        patch_size=2,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        pooled_projection_dim=16,
        in_channels=4,
        out_channels=None,
        qk_norm="rms_norm",
        text_embed_dim=16,
        time_embed_dim=4,
        activation_fn="swiglu",
        max_sequence_length=16,
    )


def _mochi_inputs(batch: int, t: Tensor) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(batch, 4, 2, 16, 16),
        "encoder_hidden_states": torch.randn(batch, 16, 16),
        "timestep": t,
        "encoder_attention_mask": torch.ones(batch, 16, dtype=torch.bool),
    }


def _cosmos1() -> nn.Module:
    return CosmosTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=2,
        mlp_ratio=2,
        text_embed_dim=16,
        adaln_lora_dim=4,
        max_size=(4, 32, 32),
        patch_size=(1, 2, 2),
        rope_scale=(2.0, 1.0, 1.0),
        # diffusers' test config has True; the padding-mask resize needs torchvision, which this
        # environment lacks, and it only adds an input channel before the blocks.
        concat_padding_mask=False,
        extra_pos_embed_type="learnable",
    )


def _cosmos_inputs(batch: int, t: Tensor) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(batch, 4, 1, 16, 16),
        "timestep": t,
        "encoder_hidden_states": torch.randn(batch, 12, 16),
        "attention_mask": torch.ones(batch, 12),
        "fps": 30,
    }


def _flow(sigma: float) -> float:
    return 1000.0 * sigma


FAMILIES = {
    "lumina2": Family(
        "lumina2",
        _lumina2,
        _lumina2_inputs,
        {"noise_refiner": "noise_refiner"},
        None,
        None,
        {"attn": ("attn", None), "mlp": ("feed_forward", None)},
        raw_at=lambda sigma: 1 - sigma,  # Lumina2Pipeline: 1 - t / num_train_timesteps, t = 1000 sigma
        t_at=_flow,
    ),
    "lumina_next": Family(
        "lumina_next",
        _lumina_next,
        _lumina_next_inputs,
        {"blocks": "layers"},
        None,
        None,
        {"attn": ("attn2.to_out.0", None), "mlp": ("feed_forward", None)},
        raw_at=lambda sigma: 1 - sigma,  # LuminaText2ImgPipeline: the same reversal
        t_at=_flow,
    ),
    "mochi": Family(
        "mochi",
        _mochi,
        _mochi_inputs,
        {"blocks": "transformer_blocks"},
        0,
        1,
        {"attn": ("attn1", 0), "mlp": ("ff", None)},
        raw_at=lambda sigma: 1000 * (1 - sigma),  # invert_sigmas scheduler: timesteps = 1000 (1 - sigma)
        t_at=_flow,
    ),
    "cosmos1": Family(
        "cosmos1",
        _cosmos1,
        _cosmos_inputs,
        {"blocks": "transformer_blocks"},
        None,
        None,
        {"attn": ("attn1", None), "cross_attn": ("attn2", None), "mlp": ("ff", None)},
        raw_at=lambda sigma: 0.25 * math.log(sigma),  # EDMEulerScheduler.precondition_noise (EDM sigma)
        t_at=lambda sigma: 1000.0 * sigma / (1.0 + sigma),  # flow time of equal SNR
    ),
}


@pytest.fixture(params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> Family:
    return FAMILIES[request.param]


@pytest.fixture
def families() -> dict[str, Family]:
    return FAMILIES


def _module_at(root: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _capture(family: Family, model: nn.Module, inputs: dict[str, Any]) -> dict[str, Tensor]:
    """Every block input / output / submodule output seen by plain torch hooks, by hook name."""
    seen: dict[str, Tensor] = {}
    handles = []
    for prefix, attribute in family.stacks.items():
        for i, block in enumerate(getattr(model, attribute)):

            def pre(module, args, kwargs, key=f"{prefix}.{i}"):
                seen[f"{key}.hook_resid_pre"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

            def post(module, args, output, key=f"{prefix}.{i}"):
                image = output if family.image_index is None else output[family.image_index]
                seen[f"{key}.hook_resid_post"] = image
                seen[f"{key}.hook_update"] = image - seen[f"{key}.hook_resid_pre"]  # output minus input
                if family.image_index is None:
                    return
                if not getattr(module, "context_pre_only", False):  # Mochi's last block keeps the text as is
                    seen[f"{key}.hook_txt_resid_post"] = output[family.text_index]

            handles += [block.register_forward_pre_hook(pre, with_kwargs=True), block.register_forward_hook(post)]
            for hook, (path, index) in family.submodules.items():

                def sub(module, args, output, key=f"{prefix}.{i}.{hook}.hook_out", index=index):
                    seen[key] = output if index is None else output[index]

                handles.append(_module_at(block, path).register_forward_hook(sub))
                if hook == "mlp":  # mlp.hook_in: the MLP's own (first) input argument

                    def sub_in(module, args, kwargs, key=f"{prefix}.{i}.mlp.hook_in"):
                        seen[key] = args[0] if args else next(iter(kwargs.values()))

                    handles.append(_module_at(block, path).register_forward_pre_hook(sub_in, with_kwargs=True))
    try:
        family.run(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.fixture
def capture() -> Callable[[Family, nn.Module, dict[str, Any]], dict[str, Tensor]]:
    """(family, model, inputs) -> {hook name: activation} from independent torch forward hooks."""
    return _capture
