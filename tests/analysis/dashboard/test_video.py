"""Dashboards of a video transformer's SAE, on a stock WanPipeline built offline from tiny random parts.

The references are independent of the dashboard's own pass: the pipeline's own output video (its decode
of the final latents), the hooks' rows recorded again with `HookedDiT.record` and encoded with
`sae.encode`, and the pipeline called again for the steering preview's unedited sample.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image
from sae_lens import TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from sae_lens_dit.analysis.dashboard.build import build_dashboard
from sae_lens_dit.analysis.dashboard.config import DashboardConfig
from sae_lens_dit.analysis.dashboard.thumbnails import render_thumbnail
from sae_lens_dit.analysis.dashboard.trajectories import sample_trajectories, to_uint8
from sae_lens_dit.analysis.evals import sample_images
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.random_video import TEXT_LENGTH, random_wan_pipeline

HOOK = "blocks.0.hook_resid_post"
PROMPTS = ("a red square", "a blue circle on grey background")
# 5 frames -> 2 latent frames; 64 px -> 8x8 latents -> (1, 2, 2) patches: 2 token frames of 4 x 4
VIDEO = {"height": 64, "width": 64, "num_frames": 5, "max_sequence_length": TEXT_LENGTH}
CFG = DashboardConfig(
    num_images=2,
    num_inference_steps=3,
    prompts=PROMPTS,
    pipeline_kwargs=VIDEO,
    max_latents=3,
    top_images=2,
    strip_steps=2,
    thumb_size=32,
    batch_size=2,
    edges=(0.0, 500.0, 1000.0),
)


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan") / "pipe"
    random_wan_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sae(wan_folder):
    torch.manual_seed(1)
    d_in = random_wan_pipeline().transformer.config.num_attention_heads * 12
    metadata = SAEMetadata(hook_name=HOOK, model_name=str(wan_folder))
    return TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=4 * d_in, k=4, metadata=metadata))


def test_trajectories_know_the_frames_and_decode_as_the_pipeline_does(wan_folder):
    from sae_lens_dit.toy.backbones import load_pipeline

    pipe = load_pipeline(str(wan_folder))
    traj = sample_trajectories(pipe, HookedDiT(pipe.transformer), [HOOK], str(wan_folder), CFG)
    assert traj.token_frames == 2 and traj.grid == (4, 4)
    assert traj.activations[HOOK].shape[:3] == (3, 2, 32)
    # The last step's prediction is the final latent (UniPC has no clean-sample prediction), so decoding it must
    # give the pipeline's own output video (WanPipeline un-normalises with latents_mean / latents_std).
    video = sample_images(pipe, [0, 1], CFG.seed, 3, None, 2, PROMPTS, VIDEO)
    assert video.shape == (2, 5, 64, 64, 3)
    decoded = traj.frames([(2, 0), (2, 1)]).astype(int)
    assert decoded.shape == (2, 5, 64, 64, 3)
    assert np.abs(decoded - to_uint8(video).astype(int)).max() <= 1  # uint8 rounding of the same floats

    # A peak in token frame 1 shows the clip's last decoded frame (frame 1 of 2 = frame 4 of 5) with that frame's heat.
    heat = np.zeros(32, np.float32)
    heat[16 + 5] = 1.0
    picture, frame_heat, frame = traj.at_token_frame(decoded[0].astype(np.uint8), heat)
    assert frame == 1
    np.testing.assert_array_equal(picture, decoded[0, 4])
    np.testing.assert_array_equal(frame_heat, heat[16:])


def test_video_pages_name_the_frame_where_the_latent_fires_most(sae, wan_folder, tmp_path):
    build = build_dashboard([sae], tmp_path / "site", CFG, progress=False)
    pages = sorted((build.sites[f"{HOOK}/topk"] / "latents").glob("*.html"))
    assert pages

    # Independent pass: the same seeded videos, every token of every step recorded on the cond branch, encoded.
    from sae_lens_dit.toy.backbones import load_pipeline

    pipe = load_pipeline(str(wan_folder))
    hooked = HookedDiT(pipe.transformer)
    with hooked.record([HOOK], branch="cond") as rec:
        sample_images(pipe, [0, 1], CFG.seed, 3, None, 2, PROMPTS, VIDEO)
    rows = rec.rows(HOOK)
    with torch.no_grad():
        codes = sae.encode(rows["activation"])
    timesteps = sorted({round(float(t)) for t in rows["timestep"]}, reverse=True)

    checked = 0
    for page in pages:
        latent = int(page.stem)
        top = page.read_text().split("<h2>Through denoising")[0]
        for prompt, t, frame in re.findall(r'alt="([^"]+), t (\d+), frame (\d+), max', top):
            image = PROMPTS.index(prompt)
            step = timesteps.index(int(t))
            at = (rows["sample"] == image) & (rows["step"] == step) & (rows["run"] == 0)
            tokens, values = rows["token"][at], codes[at, latent]
            assert int(frame) == int(tokens[values.argmax()]) // 16
            checked += 1
    assert checked >= 2


def test_a_video_steering_preview_is_a_strip_of_its_frames(sae, wan_folder, tmp_path):
    build = build_dashboard([sae], tmp_path / "site", CFG, progress=False)
    site = build.sites[f"{HOOK}/topk"]
    page = next(p for p in sorted((site / "latents").glob("*.html")) if "<h2>Steering previews</h2>" in p.read_text())
    before = r'<img src="\.\./\.\./([^"]+)" alt="before" width="(\d+)" height="32"'
    src, width = re.search(before, page.read_text()).groups()
    strip = np.asarray(Image.open(site.parent / src).convert("RGB"))
    assert int(width) == 4 * 32 and strip.shape == (32, 4 * 32, 3)  # frames 0, 1, 3, 4 of 5

    # The unedited sample, from the stock pipeline: the page's class cycles prompts; the previews seed each
    # sample's own generator with the dashboard seed.
    label = PROMPTS.index(re.search(r'alt="([^"]+), clamp', page.read_text()).group(1))
    from sae_lens_dit.toy.backbones import load_pipeline

    pipe = load_pipeline(str(wan_folder))
    video = pipe(
        prompt=[PROMPTS[label]],
        generator=[torch.Generator().manual_seed(CFG.seed)],
        num_inference_steps=3,
        output_type="np",
        **VIDEO,
    ).frames[0]
    for tile, frame in enumerate((0, 1, 3, 4)):
        expected = np.asarray(Image.open(io.BytesIO(render_thumbnail(to_uint8(video[frame]), 32))).convert("RGB"))
        np.testing.assert_array_equal(strip[:, 32 * tile : 32 * (tile + 1)], expected)
