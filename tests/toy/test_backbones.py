"""The bundled backbones load offline as plain diffusers models and sample like a stock DiTPipeline."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

from sae_lens_dit import HookedDiT, load_tiny_dit
from sae_lens_dit.toy.backbones import (
    NULL_CLASS,
    TINY_DIT_NAMES,
    load_pipeline,
    load_tiny_classifier,
    measure_shape_factors,
    tiny_dit_dir,
)
from sae_lens_dit.toy.image_sets import SHAPE_KINDS, make_shapes


@pytest.mark.parametrize("name", TINY_DIT_NAMES)
def test_bundled_backbone_is_a_plain_diffusers_dit(name):
    folder = tiny_dit_dir(name)
    model = DiTTransformer2DModel.from_pretrained(folder / "transformer")  # diffusers' own loader
    assert model.config.norm_type == "ada_norm_zero"
    assert model.config.num_embeds_ada_norm == NULL_CLASS  # DiTPipeline's hard-coded null class
    assert (folder / "transformer" / "diffusion_pytorch_model.safetensors").exists()
    assert DDIMScheduler.from_pretrained(folder / "scheduler").config.clip_sample
    metrics = json.loads((folder / "metrics.json").read_text())
    sampling = json.loads((folder / "sampling.json").read_text())
    assert sampling["guidance_scale"] == metrics["guidance_scale"]
    assert (folder / "README.md").exists() and (folder / "samples.png").exists()


@pytest.mark.parametrize("name", TINY_DIT_NAMES)
def test_pipeline_samples_like_dit_pipeline(name):
    pipe = load_tiny_dit(name)
    assert isinstance(pipe, DiTPipeline)
    channels = pipe.transformer.config.in_channels
    size = pipe.transformer.config.sample_size
    gen = torch.Generator().manual_seed(0)
    images = pipe(class_labels=[0, 1], num_inference_steps=3, generator=gen, output_type="np").images
    assert images.shape == (2, size, size, channels)
    assert images.min() >= 0.0 and images.max() <= 1.0
    again = pipe(
        class_labels=[0, 1], num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    np.testing.assert_array_equal(images, again)  # seeded sampling is reproducible
    assert (
        pipe.default_guidance_scale == json.loads((tiny_dit_dir(name) / "sampling.json").read_text())["guidance_scale"]
    )


def test_default_guidance_runs_cfg_and_record_sees_both_branches():
    pipe = load_tiny_dit("digits")
    assert pipe.default_guidance_scale > 1.0  # measured: CFG on, still >= 90% on-class (model card)
    hooked = HookedDiT(pipe.transformer)
    with hooked.record(["blocks.0.hook_resid_post"], tokens_per_image=4) as rec:
        pipe(class_labels=[3, 7], num_inference_steps=5, output_type="np")
    assert rec["blocks.0.hook_resid_post"].shape == (5, 4, 4, 96)
    assert rec.branch[0].tolist() == [0, 0, 1, 1]  # DiTPipeline: conditional half first
    pipe.scheduler.set_timesteps(5)
    torch.testing.assert_close(rec.timesteps[:, 0], pipe.scheduler.timesteps.float())


def test_bundled_digits_classifier_reads_real_digits():
    from sae_lens_dit.toy.image_sets import load_digit_images

    x, y = load_digit_images()
    assert (load_tiny_classifier("digits").predict(torch.from_numpy(x)) == y).mean() > 0.95


def test_shape_factors_measured_from_pixels_match_the_generator():
    batch = make_shapes(200, seed=123)
    images = ((batch.images + 1) / 2).transpose(0, 2, 3, 1)
    got = measure_shape_factors(images)
    hue_err = np.abs((got.hue - batch.hue + 0.5) % 1.0 - 0.5)  # circular distance
    assert np.median(hue_err) < 0.02
    assert np.median(np.abs(got.center - batch.center)) < 0.5  # pixels
    assert np.corrcoef(got.size, batch.size)[0, 1] > 0.9
    assert np.abs(got.background - batch.background).max() < 0.02
    shape_acc = (load_tiny_classifier("shapes").predict(torch.from_numpy(batch.images)) == batch.shape).mean()
    assert shape_acc > 0.95
    assert len(SHAPE_KINDS) == 4


def test_shapes_generator_is_seeded():
    a, b, c = make_shapes(8, seed=1), make_shapes(8, seed=1), make_shapes(8, seed=2)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (8, 3, 16, 16) and a.images.min() >= -1 and a.images.max() <= 1


def test_unknown_backbone_and_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="bundled backbones are"):
        load_tiny_dit("mnist")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_pipeline(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="model_index.json"):
        load_pipeline(str(tmp_path))
