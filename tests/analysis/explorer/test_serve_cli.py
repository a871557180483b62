"""`sae-lens-dit serve`: defaults (127.0.0.1:7860), the missing-extra message, a foreign cache folder refused,
and a full start on the bundled shapes release with uvicorn replaced by a stub that hands back the app."""

from __future__ import annotations

import pytest
import yaml

from sae_lens_dit.cli import build_parser, main, serve

RELEASE = ["serve", "--release", "tide-dit-tiny/shapes", "--sae-id", "blocks.1.hook_resid_post/tide"]


def test_defaults_bind_to_this_machine_only():
    args = build_parser().parse_args(RELEASE)
    assert (args.host, args.port, args.num_inference_steps) == ("127.0.0.1", 7860, 20)


def test_without_the_app_extra_it_says_what_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(serve, "missing_extra", lambda: ["starlette", "uvicorn"])
    assert main([*RELEASE, "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'sae-lens-dit[app]'" in err
    assert not (tmp_path / "cache").exists()


def test_a_foreign_cache_folder_is_refused(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    assert main([*RELEASE, "--cache-dir", str(tmp_path)]) == 2
    assert "holds files that sae-lens-dit serve did not write" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_serve_starts_the_app_and_prints_its_url(monkeypatch, capsys, tmp_path):
    pytest.importorskip("uvicorn")
    from starlette.testclient import TestClient

    started = {}
    monkeypatch.setattr("uvicorn.run", lambda app, host, port, **kw: started.update(app=app, host=host, port=port))
    assert main([*RELEASE, "--cache-dir", str(tmp_path / "cache"), "--num-inference-steps", "4", "--port", "7999"]) == 0
    assert "http://127.0.0.1:7999/" in capsys.readouterr().out
    assert (started["host"], started["port"]) == ("127.0.0.1", 7999)
    client = TestClient(started["app"])
    info = client.get("/api/info").json()
    assert info["model"] == "shapes" and [c["name"] for c in info["classes"]] == [
        "circle",
        "square",
        "triangle",
        "cross",
    ]
    spec = yaml.safe_load(client.get("/api/spec.yaml?class=0&latents=5&unit=raw&window=0,500").text)
    assert spec["saes"] == [{"release": "tide-dit-tiny/shapes", "sae_id": "blocks.1.hook_resid_post/tide"}]
