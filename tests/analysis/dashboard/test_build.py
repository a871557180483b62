"""Dashboard data against independent references: token->pixel layout vs a real DiT's patch embedding,
index contents vs a hand count of firing tokens and evals' profiles, clean-image predictions vs the
pipeline's own output, incremental rebuilds, and clear errors."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from sae_lens import SAE

import sae_lens_dit  # noqa: F401  (registers the bundled releases)
from sae_lens_dit.analysis.dashboard.build import (
    MANIFEST,
    DashboardConfig,
    build_dashboard,
    nearest_latents,
    preview_window,
    render_thumbnail,
    selectivity,
    token_heatmap,
)
from sae_lens_dit.analysis.evals import LatentTimestepStats, latent_timestep_stats, sample_images
from sae_lens_dit.cli import main
from sae_lens_dit.guards.output_dirs import MARKER
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.backbones import load_tiny_dit
from sae_lens_dit.toy.random_dit import random_dit

RELEASE, SAE_ID = "tide-dit-tiny/digits", "blocks.1.hook_resid_post/tide"
TINY = DashboardConfig(
    num_images=6,
    num_inference_steps=4,
    max_latents=3,
    top_images=3,
    strip_steps=3,
    thumb_size=32,
    batch_size=4,
    edges=(0.0, 500.0, 1000.0),
)


@pytest.fixture(scope="module")
def sae():
    return SAE.from_pretrained(RELEASE, SAE_ID)


@pytest.fixture(scope="module")
def built(sae, tmp_path_factory):
    out = tmp_path_factory.mktemp("dash") / "site"
    return out, build_dashboard([sae], out, TINY, progress=False)


class _Rows(HTMLParser):
    """Each <tr> of table.latents as {attribute: value} plus the data-value of every cell."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-profile" in attrs:
            self.rows.append({**attrs, "cells": []})
        elif tag == "td" and self.rows and "data-value" in attrs:
            self.rows[-1]["cells"].append(attrs["data-value"])


def _independent_codes(sae, cfg: DashboardConfig):
    """(rows, codes): the dashboard's seeded images sampled again, every token of every step recorded with
    HookedDiT.record and encoded with sae.encode, independently of the dashboard's own pass."""
    pipe = load_tiny_dit("digits")
    hooked = HookedDiT(pipe.transformer)
    labels = [int(c) for c in np.resize(np.arange(10), cfg.num_images)]
    with hooked.record([sae.cfg.metadata.hook_name], branch="cond") as rec:
        sample_images(pipe, labels, cfg.seed, cfg.num_inference_steps, None, cfg.batch_size)
    rows = rec.rows(sae.cfg.metadata.hook_name)
    with torch.no_grad(), sae.at_timestep(rows["timestep"]):
        return rows, sae.encode(rows["activation"])


def test_token_heatmap_matches_the_patch_layout_of_a_real_dit():
    """Perturb one input patch of a DiT; the only token that changes at hook_resid_pre of block 0 (patch
    embedding + position) must be the one token_heatmap paints over exactly that patch's pixels."""
    torch.manual_seed(3)
    model = random_dit(num_layers=1, sample_size=12, patch_size=3, num_embeds_ada_norm=8)
    hooked = HookedDiT(model)
    x = torch.randn(1, 4, 12, 12)
    row, col = np.random.default_rng(4).integers(0, 4, size=2)
    bumped = x.clone()
    bumped[:, :, 3 * row : 3 * row + 3, 3 * col : 3 * col + 3] += 1.0
    hook = "blocks.0.hook_resid_pre"
    kwargs = {"timestep": torch.tensor([500]), "class_labels": torch.tensor([1]), "names_filter": hook}
    with torch.no_grad():
        a = hooked.run_with_cache(x, **kwargs)[1][hook][0]
        b = hooked.run_with_cache(bumped, **kwargs)[1][hook][0]
    changed = ((a - b).abs().amax(-1) > 1e-6).float().numpy()  # [16 tokens]
    assert changed.sum() == 1
    pixels = token_heatmap(changed, (4, 4), (12, 12))
    expected = np.zeros((12, 12))
    expected[3 * row : 3 * row + 3, 3 * col : 3 * col + 3] = 1.0
    np.testing.assert_array_equal(pixels, expected)
    # Stretched to a thumbnail, every token covers its own block (np.kron is the reference).
    values = np.random.default_rng(5).random(6)
    stretched = np.kron(values.reshape(2, 3), np.ones((4, 4)))
    np.testing.assert_array_equal(token_heatmap(values, (2, 3), (8, 12)), stretched)
    with pytest.raises(ValueError, match="expected 16 token values"):
        token_heatmap(np.zeros(15), (4, 4), (8, 8))


def test_thumbnail_overlay_reddens_only_the_firing_token():
    from io import BytesIO

    from PIL import Image

    frame = np.random.default_rng(6).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    heat = np.zeros(4)
    heat[2] = 1.0  # token 2 of a 2x2 grid: bottom-left quarter
    plain = np.asarray(Image.open(BytesIO(render_thumbnail(frame, 8))), dtype=float)
    lit = np.asarray(Image.open(BytesIO(render_thumbnail(frame, 8, heat, (2, 2)))), dtype=float)
    np.testing.assert_array_equal(plain, np.kron(frame, np.ones((2, 2, 1))))
    quarter = np.zeros((8, 8), bool)
    quarter[4:, :4] = True
    np.testing.assert_array_equal(lit[~quarter], plain[~quarter])
    expected = np.round(plain[quarter] * 0.25 + np.array([255.0, 48.0, 0.0]) * 0.75)
    np.testing.assert_allclose(lit[quarter], expected, atol=0.51)


def test_nearest_latents_and_selectivity_match_brute_force():
    w = torch.randn(40, 7)
    found = nearest_latents(w, [3, 17], k=4)
    unit = w.numpy() / np.linalg.norm(w.numpy(), axis=1, keepdims=True)
    for i in (3, 17):
        cos = unit @ unit[i]
        cos[i] = -np.inf
        ids = np.argsort(-cos)[:4]
        assert [j for j, _ in found[i]] == ids.tolist()
        np.testing.assert_allclose([c for _, c in found[i]], cos[ids], atol=1e-5)
    means = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 3.0], [0.0, 2.0, 1.0]])  # [values, latents]
    top, share = selectivity(means)
    assert top[1:].tolist() == [2, 1] and share[0] == 0.0
    np.testing.assert_allclose(share[1:], [2 / 4, 3 / 4])


def test_index_lists_every_latent_with_hand_counted_density_and_evals_profile(sae, built):
    out, build = built
    site = build.sites[SAE_ID]
    parser = _Rows()
    parser.feed((site / "index.html").read_text())
    assert [int(r["cells"][0]) for r in parser.rows] == list(range(sae.cfg.d_sae))
    # Independent pass: the same seeded images, every token of every step, encoded with sae.encode.
    rows, codes = _independent_codes(sae, TINY)
    fires = codes != 0
    density = fires.double().mean(0).numpy()
    np.testing.assert_allclose([float(r["cells"][2]) for r in parser.rows], density, rtol=1e-5, atol=1e-9)
    profile = latent_timestep_stats(sae, rows["activation"], rows["timestep"], TINY.edges).profile()
    assert [r["data-profile"] for r in parser.rows] == profile
    alive = np.nonzero(density > 0)[0][: TINY.max_latents]
    assert sorted(int(p.stem) for p in (site / "latents").glob("*.html")) == sorted(alive.tolist())


def test_latent_page_images_exist_and_last_step_prediction_is_the_sample(sae, built):
    out, build = built
    site = build.sites[SAE_ID]
    page = next((site / "latents").glob("*.html")).read_text()
    sources = [s.split('"')[0] for s in page.split('<img src="')[1:]]
    assert len(sources) >= 2 and all((site / "latents" / s).resolve().is_file() for s in sources)
    assert page.count('<svg class="plot"') == 2 and "activations" not in page
    # DDIM's last clean-image prediction is the sample itself, so the captured predictions follow the run.
    from sae_lens_dit.analysis.dashboard.build import sample_trajectories

    pipe = load_tiny_dit("digits")
    traj = sample_trajectories(pipe, HookedDiT(pipe.transformer), [SAE_ID.split("/")[0]], "digits", TINY)
    last = traj.frames([(TINY.num_inference_steps - 1, n) for n in range(TINY.num_images)]) / 255.0
    np.testing.assert_allclose(last, traj.images, atol=1 / 255 + 1e-6)
    assert traj.timesteps.tolist() == pipe.scheduler.timesteps.float().tolist()


def test_rebuild_reuses_every_file_and_removes_only_its_own_stale_pages(sae, tmp_path):
    out = tmp_path / "site"
    first = build_dashboard([sae], out, TINY, progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != MANIFEST}
    (out / "notes.txt").write_text("mine")
    again = build_dashboard([sae], out, TINY, progress=False)
    assert (again.written, again.reused, again.removed) == (0, first.written, 0)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    fewer = build_dashboard([sae], out, DashboardConfig(**{**TINY.__dict__, "max_latents": 1}), progress=False)
    assert fewer.removed > 0 and len(list((fewer.sites[SAE_ID] / "latents").glob("*.html"))) == 1
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert all((out / rel).is_file() for rel in listed)
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == set(listed) | {
        MANIFEST,
        MARKER,
        "notes.txt",
    }


def test_clear_errors(sae, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="did not write"):
        build_dashboard([sae], foreign, TINY, progress=False)
    assert os.listdir(foreign) == ["keep.txt"]
    wrong = SAE.from_pretrained(RELEASE, SAE_ID)
    wrong.cfg.metadata.hook_name = "blocks.9.hook_resid_post"
    with pytest.raises(ValueError, match=r"reads hook 'blocks.9.hook_resid_post', which model 'digits' does not have"):
        build_dashboard([wrong], tmp_path / "a", TINY, progress=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match="num_images must be at least 1"):
        DashboardConfig(num_images=0)
    with pytest.raises(ValueError, match="no SAEs"):
        build_dashboard([], tmp_path / "b", TINY)


def test_cli_refuses_unknown_release_and_empty_image_set(tmp_path, capsys):
    assert main(["dashboard", "--release", "tide-dit-tiny/nope", "--output-dir", str(tmp_path / "x")]) == 2
    assert "unknown release 'tide-dit-tiny/nope'; registered releases are" in capsys.readouterr().err
    argv = ["dashboard", "--release", RELEASE, "--sae-id", SAE_ID, "--output-dir", str(tmp_path / "y")]
    assert main([*argv, "--num-images", "0"]) == 2
    assert "num_images must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_steering_previews_come_from_interventions(built):
    out, build = built
    page = next((build.sites[SAE_ID] / "latents").glob("*.html")).read_text()
    steering = page.split("<h2>Steering previews</h2>")[1]
    sources = [s.split('"')[0] for s in steering.split('<img src="')[1:]]
    assert len(sources) == 4  # (before, +strength) and (before, -strength)
    assert sources[0] == sources[2] and sources[1] != sources[0] and sources[3] != sources[0]


def test_steering_previews_clamp_strength_x_median_code_inside_the_half_peak_frequency_window(
    sae, tmp_path, monkeypatch
):
    """The specs the previews run, against an independent pass over the same seeded images (every token of
    every step encoded with sae.encode): clamp value = strength x torch.quantile(non-zero codes, 0.5); window =
    the bucket edges around the peak firing frequency, every bucket inside at least half the peak, the ones
    just outside below it; zero in the same window; on every token and branch."""
    from sae_lens_dit.analysis.interventions import steering  # where the previews look up `steer`

    seen, calls = [], []
    real_steer = steering.steer

    def spy(hooked, saes, spec, *args, **kwargs):  # one spec per sample present (a resumed sample's spec recurs)
        calls.append(spec)
        specs = [spec] if isinstance(spec, steering.SteeringSpec) else spec
        seen.extend(s for s in specs if s.edits and not any(s is t for t in seen))
        return real_steer(hooked, saes, spec, *args, **kwargs)

    monkeypatch.setattr(steering, "steer", spy)
    edges = (0.0, 200.0, 400.0, 600.0, 800.0, 1000.0)  # DDIM 5 steps: t = 800, 600, 400, 200, 0, one per bucket
    cfg = DashboardConfig(**{**TINY.__dict__, "num_inference_steps": 5, "edges": edges, "steering_strength": 3.0})
    build = build_dashboard([sae], tmp_path / "site", cfg, progress=False)
    rows, codes = _independent_codes(sae, cfg)
    pages = sorted(int(p.stem) for p in (build.sites[SAE_ID] / "latents").glob("*.html"))
    assert len(seen) == 2 * len(pages) > 0
    assert all(isinstance(c, list) and 1 <= len(c) <= cfg.batch_size for c in calls)  # batches of one spec per sample
    by_latent = {(s.edits[0].latents, s.edits[0].op): s for s in seen}
    for latent in pages:
        more, less = by_latent[(latent,), "clamp"], by_latent[(latent,), "zero"]
        column = codes[:, latent]
        typical = torch.quantile(column[column != 0].double(), 0.5)
        t = rows["timestep"]  # at most 800: no row sits on the closed end of the last bucket
        frequency = [
            float((column[(t >= lo) & (t < hi)] != 0).double().mean())
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        ]
        (clamp,), (zero,) = more.edits, less.edits
        assert (clamp.latents, clamp.op, zero.latents, zero.op) == ((latent,), "clamp", (latent,), "zero")
        torch.testing.assert_close(clamp.values(), 3.0 * typical[None], rtol=1e-5, atol=0)
        assert clamp.timesteps == zero.timesteps and clamp.timesteps[0] in edges and clamp.timesteps[1] in edges
        inside = [b for b in range(5) if clamp.timesteps[0] <= edges[b] < clamp.timesteps[1]]
        peak = max(frequency)
        assert frequency.index(peak) in inside and all(frequency[b] >= peak / 2 for b in inside)
        assert all(frequency[b] < peak / 2 for b in (inside[0] - 1, inside[-1] + 1) if 0 <= b < 5)
        for e in (clamp, zero):
            assert (e.box, e.mask, e.tokens, e.gate, e.steps, e.branch) == (None, None, None, None, None, "both")
        page = (build.sites[SAE_ID] / "latents" / f"{latent}.html").read_text()
        span = f"t {clamp.timesteps[0]:g}-{clamp.timesteps[1]:g}"
        assert f"clamp 3x typical ({float(typical):.3g}), {span}" in page and f"zero, {span}" in page


def test_resumed_previews_equal_the_stock_pipeline_from_step_zero(sae, tmp_path, monkeypatch):
    """Every cached preview (resumed at its window's first step from the unedited sample's latents) against the
    stock pipeline sampling the same class from the same seed from step 0 inside `steer` with the same spec
    (atol 1e-5 on images in [0, 1]); some windows open after step 0, so resuming was exercised."""
    from safetensors.torch import load_file

    from sae_lens_dit.analysis.interventions import steering
    from sae_lens_dit.analysis.interventions.resume import first_edited_step

    seen = []
    real_steer = steering.steer

    def spy(hooked, saes, spec, *args, **kwargs):  # the previews pass lists; the reference below one spec
        seen.extend(s for s in (spec if isinstance(spec, list) else []) if s.edits and not any(s is t for t in seen))
        return real_steer(hooked, saes, spec, *args, **kwargs)

    monkeypatch.setattr(steering, "steer", spy)
    edges = (0.0, 200.0, 400.0, 600.0, 800.0, 1000.0)
    cfg = DashboardConfig(**{**TINY.__dict__, "num_inference_steps": 5, "edges": edges, "max_latents": 4})
    build_dashboard([sae], tmp_path / "site", cfg, progress=False)
    (path,) = (tmp_path / "site" / "cache" / "previews").glob("*.safetensors")
    stored = load_file(path)
    by_latent = {(s.edits[0].latents[0], s.edits[0].op): s for s in seen}
    pipe = load_tiny_dit("digits")
    hooked = HookedDiT(pipe.transformer)
    steps = [(800.0,), (600.0,), (400.0,), (200.0,), (0.0,)]
    starts = []
    for name, image in stored.items():
        kind, *rest = name.split(".")
        label = int(rest[-1])
        kwargs = {"class_labels": [label], "num_inference_steps": 5, "output_type": "np"}
        generator = torch.Generator().manual_seed(cfg.seed)
        if kind == "before":
            reference = pipe(generator=generator, **kwargs).images[0]
        else:
            spec = by_latent[int(rest[1]), rest[0]]
            starts.append(first_edited_step(spec, steps))
            with steering.steer(hooked, [sae], spec):
                reference = pipe(generator=generator, **kwargs).images[0]
        np.testing.assert_allclose(image.numpy(), reference, atol=1e-5, rtol=0)
    assert len(starts) == len(seen) > 0 and max(starts) > 0


def test_preview_window_bridges_buckets_no_step_fell_in():
    """Hand-made per-bucket stats: buckets 1 and 3 reach half of the peak (bucket 3), bucket 2 had no rows."""
    frequency = torch.zeros(6, 2)
    frequency[:, 1] = torch.tensor([0.1, 0.3, 0.0, 0.5, 0.2, 0.0])
    rows = torch.tensor([10, 10, 0, 10, 10, 0])
    stats = LatentTimestepStats(tuple(range(0, 700, 100)), rows, frequency, frequency)
    assert preview_window(stats, 1) == (100.0, 400.0)
    frequency[:, 1] = torch.tensor([0.1, 0.3, 0.0, 0.5, 0.4, 0.0])  # bucket 5 (empty) extends the window's end
    assert preview_window(stats, 1) == (100.0, 600.0)
    frequency[:, 1] = torch.tensor([0.1, 0.2, 0.0, 0.5, 0.1, 0.0])  # 0.2 < 0.25: the empty bucket does not join
    assert preview_window(stats, 1) == (300.0, 400.0)
    with pytest.raises(ValueError, match="no bucket has a positive value"):
        preview_window(stats, 0)


def test_a_transcoders_pages_have_no_steering_previews(tmp_path):
    """Steering refuses transcoders (an edit at the read hook would land on the MLP's input), so their pages are built
    without previews instead of showing wrong ones; the SAE beside it keeps its previews."""
    tc = SAE.from_pretrained("tide-dit-tiny/digits-transcoders", "blocks.1.mlp/tide_transcoder")
    sae = SAE.from_pretrained(RELEASE, SAE_ID)
    build = build_dashboard([tc, sae], tmp_path / "site", TINY, progress=False)
    tc_pages = list((build.sites["blocks.1.mlp/tide_transcoder"] / "latents").glob("*.html"))
    sae_pages = list((build.sites[SAE_ID] / "latents").glob("*.html"))
    assert tc_pages and sae_pages
    assert not any("<h2>Steering previews</h2>" in page.read_text() for page in tc_pages)
    assert any("<h2>Steering previews</h2>" in page.read_text() for page in sae_pages)
