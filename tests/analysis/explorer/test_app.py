"""The live explorer's routes on a tiny random DiT: pages, summaries, edits, exported specs, refusals, and
writes confined to the cache folder (content-addressed, so a repeated view samples nothing)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from sae_lens_dit.analysis.explorer import png_bytes
from sae_lens_dit.analysis.interventions import SteeringSpec, edit
from sae_lens_dit.guards.output_dirs import MARKER, owner

EDIT = "/api/edit?class=3&seed=5&latents=1,7&strength=2&unit=raw&box=0,0,0.5,1&window=0,1000"


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)


def test_page_info_and_latents(tiny):
    client, _, _, _, cache = tiny
    page = client.get("/")
    assert page.status_code == 200 and "live explorer" in page.text and "history.replaceState" in page.text
    info = client.get("/api/info").json()
    assert info["token_grid"] == [4, 4] and info["saes"][0]["d_sae"] == 32 and len(info["classes"]) == 1000
    latents = client.get("/api/latents?sae=0").json()["latents"]
    assert [row["id"] for row in latents] == list(range(32))
    assert all(0 <= row["firing"] <= 1 and row["typical"] >= 0 and len(row["profile"]) == 5 for row in latents)
    assert owner(cache) == "serve"


def test_edit_returns_before_and_after_and_caches_them(tiny):
    client, *_, cache = tiny
    original = client.get("/api/original?class=3&seed=5").json()["image"]
    result = client.get(EDIT)
    assert result.status_code == 200, result.text
    body = result.json()
    assert body["before"] == original and body["after"] != original
    assert body["edited"] and body["spec"]["edits"][0]["box"] == [0.0, 0.0, 0.5, 1.0]
    after = client.get(body["after"])
    assert after.status_code == 200 and after.headers["content-type"] == "image/png"
    assert not np.array_equal(_pixels(after.content), _pixels(client.get(original).content))
    images = sorted(p.name for p in (cache / "images").iterdir())
    inodes = {p: p.stat().st_ino for p in (cache / "images").iterdir()}  # a rewrite (os.replace) gives a new inode
    assert client.get(EDIT).json()["after"] == body["after"]  # same view: served from the cache
    assert sorted(p.name for p in (cache / "images").iterdir()) == images
    assert {p: p.stat().st_ino for p in (cache / "images").iterdir()} == inodes


def test_the_cache_keeps_to_its_size_removing_the_least_recently_used(tiny):
    from starlette.testclient import TestClient

    from sae_lens_dit.analysis.explorer import create_app

    client, pipe, hooked, sae, cache = tiny

    def original(seed: int) -> str:  # the cached file's name (the API answers with its URL path)
        return client.get(f"/api/original?class=3&seed={seed}").json()["image"].rsplit("/", 1)[-1]

    first = original(0)
    size = (cache / "images" / first).stat().st_size
    foreign = cache / "images" / "notes.txt"
    foreign.write_text("not the explorer's")
    limit_mb = 2.5 * size / 2**20  # room for two images
    client = TestClient(create_app(pipe, hooked, [sae], cache, num_inference_steps=4, max_cache_mb=limit_mb))
    names = [original(seed) for seed in (1, 2)]
    original(0)  # used again: now the most recent
    latest = original(3)
    kept = {p.name for p in (cache / "images").iterdir()}
    assert {first, latest} <= kept and names[0] not in kept  # the least recently used went first
    assert foreign.exists()  # only files of the explorer's own naming are removed
    assert sum(p.stat().st_size for p in (cache / "images").iterdir() if p != foreign) <= limit_mb * 2**20


def test_exported_spec_replays_to_the_same_bytes(tiny):
    client, pipe, hooked, sae, _ = tiny
    top = max(client.get("/api/latents?sae=0").json()["latents"], key=lambda row: row["firing"])["id"]
    for query in (EDIT, f"/api/edit?class=3&seed=5&latents={top}&strength=3&box=0.25,0.25,1,1"):  # typical + auto
        body = client.get(query).json()
        text = client.get(query.replace("/api/edit", "/api/spec.yaml")).text
        assert text.startswith("# sae-lens-dit live explorer edit") and "sae-lens-dit edit --spec edit.yaml" in text
        spec = SteeringSpec.from_dict(yaml.safe_load(text))
        assert spec.to_dict() == body["spec"] and spec.edits[0].timesteps is not None
        replay = edit(pipe, hooked, [sae], spec, 5, class_labels=[3], num_inference_steps=4)
        assert png_bytes(replay.after[0]) == client.get(body["after"]).content
        assert png_bytes(replay.before[0]) == client.get(body["before"]).content


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("latents=32", "latent id(s) [32] out of range"),
        ("latents=1&strength=nan", "strength must hold finite numbers"),
        ("latents=1&box=0,0,1.2,1", "box must lie inside [0, 1]"),
        ("latents=1&window=0,1200", "window must satisfy 0 <= LOW <= HIGH <= 1000"),
        ("latents=1&class=1000", "class 1000 is not one this backbone was trained on"),
        ("latents=1&seed=x", "seed must be an integer"),
        ("latents=1&box=0.3,0.3,0.35,0.35", "holds no token centre of the 4x4 token grid"),
        ("", "no latents to edit"),
    ],
)
def test_bad_edits_are_400_with_one_line(tiny, query, message):
    client, *_ = tiny
    q = query if "class=" in query else f"class=3&{query}"
    response = client.get(f"/api/edit?{q}")
    assert response.status_code == 400
    assert message in response.text and response.text.count("\n") == 1


def test_other_routes_refuse_bad_input(tiny):
    client, *_ = tiny
    assert client.get("/api/original?seed=1").status_code == 400  # no class
    assert client.get("/api/latents?sae=1").status_code == 400
    assert client.get("/api/latents?sae=-1").status_code == 400
    assert client.get("/images/..%2F..%2Fetc%2Fpasswd").status_code in (400, 404)
    assert "64 hex digits" in client.get("/images/abc.png").text
    assert client.get("/images/" + "0" * 64 + ".png").status_code == 404
    assert client.get("/api/spec.yaml?class=3&latents=99").status_code == 400


def test_nothing_is_written_outside_the_cache(tiny, tmp_path, monkeypatch):
    client, _, _, _, cache = tiny
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = {p for p in tmp_path.rglob("*")}
    client.get("/api/latents?sae=0")
    client.get(EDIT)
    client.get(EDIT.replace("/api/edit", "/api/spec.yaml"))
    client.get("/api/edit?class=1&seed=2&latents=3&strength=1&window=auto")
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(p.is_relative_to(cache) for p in new), sorted(map(str, new - {*cache.rglob("*")}))
    assert not any(p.name.endswith(".tmp") for p in new)
    assert os.listdir(work) == []
    assert (cache / MARKER).is_file()
