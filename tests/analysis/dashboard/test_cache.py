"""Dashboards of several SAEs from one recorded sampling run, cached in the dashboard folder: pipeline calls
counted with a spy on the bundled pipeline class, rebuilds compared byte for byte, changed inputs against a
fresh build in another folder (the cache never returns stale data), and every cross-link resolved on disk."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import torch
from diffusers import DiTTransformer2DModel
from sae_lens import SAE
from safetensors import safe_open

import sae_lens_dit  # noqa: F401  (registers the bundled releases)
from sae_lens_dit.analysis.dashboard.build import MANIFEST, DashboardConfig, build_dashboard
from sae_lens_dit.analysis.dashboard.cache import FOLDER
from sae_lens_dit.analysis.dashboard.trajectories import trajectories_key
from sae_lens_dit.toy.backbones import load_tiny_dit

RELEASE = "tide-dit-tiny/digits"
IDS = ("blocks.1.hook_resid_post/tide", "blocks.1.hook_resid_post/topk", "blocks.3.hook_resid_post/tide")
CFG = DashboardConfig(
    num_images=6,
    num_inference_steps=3,
    max_latents=2,
    top_images=2,
    strip_steps=2,
    thumb_size=16,
    batch_size=4,
    edges=(0.0, 500.0, 1000.0),
)


@pytest.fixture(scope="module")
def saes():
    return [SAE.from_pretrained(RELEASE, i) for i in IDS]


@pytest.fixture
def calls(monkeypatch):
    """Every pipeline call of the bundled backbones' pipeline class (sampling runs and steering previews)."""
    cls = type(load_tiny_dit("digits"))
    seen: list[int] = []
    real = cls.__call__

    def spy(self, class_labels, *args, **kwargs):
        seen.append(len(class_labels))
        return real(self, class_labels, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", spy)
    return seen


@pytest.fixture
def forwards(monkeypatch):
    """Every forward call of the DiT transformer: the pipeline's steps and the steering previews' steps (resumed
    in the package's own loop, `interventions.resume`, which does not call the pipeline)."""
    real = DiTTransformer2DModel.forward
    seen: list[int] = []

    @functools.wraps(real)  # hooks read the call's arguments through forward's signature
    def spy(self, *args, **kwargs):
        seen.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DiTTransformer2DModel, "forward", spy)
    return seen


def _cfg(**changes) -> DashboardConfig:
    return DashboardConfig(**{**CFG.__dict__, **changes})


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _pages(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in _snapshot(root).items() if k.endswith(".html")}


def test_saes_of_one_backbone_share_one_recorded_run(saes, calls, tmp_path):
    build_dashboard(saes, tmp_path / "site", _cfg(steering=False), progress=False)
    assert calls == [4, 2]  # one run of 6 images in batches of 4 records both hooks for all three SAEs
    runs = list((tmp_path / "site" / FOLDER / "trajectories").iterdir())
    assert len(runs) == 1
    names = sorted(p.name.rsplit("-", 1)[0] for p in runs[0].iterdir() if p.name != "samples.safetensors")
    assert names == ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]  # one file per hook, both recorded


def test_rebuild_samples_nothing_and_gives_byte_identical_pages(saes, calls, forwards, tmp_path):
    out = tmp_path / "site"
    first = build_dashboard(saes, out, CFG, progress=False)
    assert calls == [4, 2] and len(forwards) > 2 * CFG.num_inference_steps  # the sampling run and the previews
    before = _snapshot(out)
    calls.clear()
    forwards.clear()
    again = build_dashboard(saes, out, CFG, progress=False)
    assert calls == [] and forwards == []
    assert (again.written, again.removed) == (0, 0) and again.reused == first.written
    assert _snapshot(out) == before


@pytest.mark.parametrize("change", [{"seed": 1}, {"num_images": 5}])
def test_a_changed_input_misses_the_cache_and_matches_a_fresh_build(saes, calls, tmp_path, change):
    out = tmp_path / "site"
    build_dashboard(saes[:2], out, _cfg(steering=False), progress=False)
    old = set(json.loads((out / MANIFEST).read_text())["files"])
    calls.clear()
    build_dashboard(saes[:2], out, _cfg(steering=False, **change), progress=False)
    assert calls  # sampled again
    new = set(json.loads((out / MANIFEST).read_text())["files"])
    old_cache, new_cache = {f for f in old if f.startswith(FOLDER)}, {f for f in new if f.startswith(FOLDER)}
    assert old_cache.isdisjoint(new_cache)  # every cached tensor depends on the sampling run
    assert not any((out / f).exists() for f in old_cache)  # the old run's files are gone
    fresh = tmp_path / "fresh"
    build_dashboard(saes[:2], fresh, _cfg(steering=False, **change), progress=False)
    assert _pages(out) == _pages(fresh)


def test_cache_key_follows_weights_and_settings():
    pipe = load_tiny_dit("digits")
    key = trajectories_key(pipe, "digits", CFG)
    assert trajectories_key(pipe, "digits", CFG) == key
    for change in ({"seed": 1}, {"num_inference_steps": 4}, {"guidance_scale": 2.0}, {"batch_size": 3}):
        assert trajectories_key(pipe, "digits", _cfg(**change)) != key
    with torch.no_grad():
        next(pipe.transformer.parameters()).view(-1)[0] += 1e-3
    assert trajectories_key(pipe, "digits", CFG) != key


def test_a_damaged_or_foreign_cache_file_is_recomputed(saes, calls, tmp_path):
    out = tmp_path / "site"
    build_dashboard(saes[:1], out, _cfg(steering=False), progress=False)
    pages = _pages(out)
    samples = next((out / FOLDER / "trajectories").glob("*/samples.safetensors"))
    samples.write_bytes(b"not a safetensors file")
    calls.clear()
    build_dashboard(saes[:1], out, _cfg(steering=False), progress=False)
    assert calls and _pages(out) == pages
    with safe_open(str(samples), "pt") as f:  # rewritten, valid again
        assert "predictions" in list(f.keys())
    page = next(out.glob("*/latents/*.html"))  # a page edited on disk is drawn again, not kept
    page.write_text("edited")
    image = next(out.glob("*/img/*.png"))
    image.unlink()
    build_dashboard(saes[:1], out, _cfg(steering=False), progress=False)
    assert _pages(out) == pages and image.is_file()


def test_cache_files_are_safetensors_inside_the_folder_and_in_its_manifest(saes, tmp_path):
    out = tmp_path / "site"
    build_dashboard(saes, out, CFG, progress=False)
    listed = json.loads((out / MANIFEST).read_text())["files"]
    on_disk = {str(p.relative_to(out)) for p in (out / FOLDER).rglob("*") if p.is_file()}
    assert on_disk and on_disk <= set(listed)
    kinds = {rel.split("/")[1] for rel in on_disk}
    assert kinds == {"trajectories", "summaries", "previews", "pages"}
    for rel in on_disk:
        assert rel.endswith(".safetensors")
        with safe_open(str(out / rel), "pt") as f:
            assert f.keys() or "/pages/" in rel  # the page lists are tensor-less (metadata only)
        assert (out / rel).resolve().is_relative_to(out.resolve())
    # First alive latents differ between SAEs: a sibling without that latent's page is linked by its index.
    for page in out.glob("*/latents/*.html"):
        same = re.search(r'<p class="nav same-latent">(.*?)</p>', page.read_text()).group(1)
        hrefs = re.findall(r'href="([^"]+)"', same)
        assert len(hrefs) == len(saes) - 1 and all((page.parent / h).resolve().is_file() for h in hrefs)
        assert all(h.endswith((f"/latents/{page.name}", "/index.html")) for h in hrefs)


def test_cross_links_reach_the_same_latent_in_every_sibling_sae(saes, tmp_path):
    out = tmp_path / "site"
    build = build_dashboard(saes, out, _cfg(steering=False, latents=(0, 5, 7)), progress=False)
    for site in build.sites.values():
        for page in (site / "latents").glob("*.html"):
            text = page.read_text()
            same = re.search(r'<p class="nav same-latent">(.*?)</p>', text).group(1)
            hrefs = re.findall(r'href="([^"]+)"', same)
            assert len(hrefs) == len(saes) - 1
            for href in hrefs:
                target = (page.parent / href).resolve()
                assert target.is_file() and target.name == page.name  # every SAE has pages for 0, 5 and 7
                assert target.parent.parent != site.resolve()
    index = (out / "index.html").read_text()
    folders = re.findall(r'<tr data-folder="([^"]+)" data-name="[^"]+" data-pages="([^"]*)"', index)
    assert len(folders) == len(saes)
    for folder, pages in folders:
        assert pages.split() == ["0", "5", "7"]
        assert all((out / folder / "latents" / f"{i}.html").is_file() for i in pages.split())
    grid = index.split('<table class="grid">')[1].split("</table>")[0]
    assert grid.count("<tr><td>") == 2  # two hooks (layers); tide and topk columns
    hrefs = [h for h in re.findall(r'href="([^"]+)"', index) if not h.startswith("data:")]
    assert len(hrefs) > 2 * len(saes) and all((out / href).is_file() for href in hrefs)
