"""`sae-lens-dit edit` on the bundled digits backbone and SAE, with 2 denoising steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sae_lens_dit.analysis.interventions.spec import LatentEdit, SteeringSpec
from sae_lens_dit.cli import main

BASE = ["edit", "--release", "tide-dit-tiny/digits", "--class-labels", "1", "7", "--num-inference-steps", "2"]
HOOK = "blocks.3.hook_resid_post"


def test_edit_writes_grids_and_json(tmp_path):
    spec = SteeringSpec((LatentEdit(HOOK, (5, 9), "add", 32.0, steps=(1,)),)).save(tmp_path / "spec.yaml")
    assert main([*BASE, "--spec", str(spec), "--seed", "3", "--output-dir", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "edit.json").read_text())
    assert report["edited"][0]["steps"] == [1] and report["saes"][0]["architecture"] == "tide"
    assert SteeringSpec.from_dict(report["spec"]) == SteeringSpec.load(spec)
    before = np.asarray(Image.open(tmp_path / "out" / "before.png"))
    grid = np.asarray(Image.open(tmp_path / "out" / "edit.png"))
    assert grid.shape[0] == 2 * before.shape[0] and np.array_equal(grid[: before.shape[0]], before)
    assert report["mean_abs_pixel_change"] > 0


def test_edit_errors_are_clear(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main([*BASE, "--hook", HOOK, "--latent", "1536", "--output-dir", out]) == 2
    assert "latent index(es) [1536] out of range" in capsys.readouterr().err
    assert main([*BASE, "--hook", "blocks.7.hook_resid_post", "--latent", "1", "--output-dir", out]) == 2
    assert "has no SAE at ['blocks.7.hook_resid_post']" in capsys.readouterr().err
    assert main([*BASE, "--latent", "1", "--output-dir", out]) == 2
    assert "--latent needs --hook" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _concepts(folder):
    from sae_lens_dit.analysis.interventions.concepts import write_concepts
    from sae_lens_dit.analysis.interventions.spec import SAESource

    spec = SteeringSpec(
        (LatentEdit(HOOK, (5, 9), "clamp", 2.0, timesteps=(500.0, 1000.0), unit="typical", typical=(1.5, 0.5)),),
        (SAESource(release="tide-dit-tiny/digits", sae_id=f"{HOOK}/tide"),),
    )
    write_concepts(folder, {"class=7": (spec, "toward a seven", {"window": [500, 1000]})})
    return spec


def test_edit_toward_a_named_concept_replays_its_spec_and_overrides(tmp_path, capsys):
    spec = _concepts(tmp_path / "concepts")
    args = [*BASE, "--toward", "class=7", "--concepts", str(tmp_path / "concepts"), "--seed", "2"]
    assert main([*args, "--output-dir", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "edit.json").read_text())
    assert SteeringSpec.from_dict(report["spec"]).edits == spec.edits
    assert report["windows"] == [[500.0, 1000.0]] and report["saes"][0]["hook"] == HOOK
    assert main([*args, "--value", "3", "--window", "0", "400", "--output-dir", str(tmp_path / "b")]) == 0
    edit = SteeringSpec.from_dict(json.loads((tmp_path / "b" / "edit.json").read_text())["spec"]).edits[0]
    assert (edit.value, edit.timesteps, edit.typical) == (3.0, (0.0, 400.0), (1.5, 0.5))
    capsys.readouterr()
    assert (
        main(
            [*BASE, "--toward", "hue=9", "--concepts", str(tmp_path / "concepts"), "--output-dir", str(tmp_path / "c")]
        )
        == 2
    )
    assert "unknown concept 'hue=9'" in capsys.readouterr().err
    assert main([*BASE, "--toward", "class=7", "--output-dir", str(tmp_path / "d")]) == 2
    assert "ships no steering concepts" in capsys.readouterr().err
    assert main([*args, "--window", "700", "100", "--output-dir", str(tmp_path / "e")]) == 2
    assert "--window needs 0 <= LOW <= HIGH" in capsys.readouterr().err


def test_bundled_shapes_concepts_load_and_name_what_the_release_has(tmp_path):
    from sae_lens_dit.analysis.interventions.concepts import list_concepts, load_concept
    from sae_lens_dit.analysis.interventions.gates import LinearProbe
    from sae_lens_dit.hub.releases import get_release, release_concepts

    folder = release_concepts("tide-dit-tiny/shapes")
    index = list_concepts(folder)
    assert {f"hue={b}" for b in range(6)} | {"position=left", "position=right", "size=larger", "size=smaller"} <= set(
        index
    )
    hooks = {sae.id: sae.hook for sae in get_release("tide-dit-tiny/shapes").saes}
    for name, entry in index.items():
        spec = load_concept(folder, name)
        assert {s.sae_id for s in spec.saes} <= set(hooks) and spec.edits, name
        assert all(s.weights for s in spec.saes), name  # pinned to the weights the latents were chosen on
        assert [sae.cfg.metadata.hook_name for sae in spec.load_saes()] == [hooks[s.sae_id] for s in spec.saes]
        for edit in spec.edits:
            if edit.gate is not None:
                assert LinearProbe.load(edit.gate.probe).hook == edit.hook
            if edit.unit == "typical" and edit.op != "zero":
                assert len(edit.typical) == len(edit.latents) and min(edit.typical) > 0
        if name.startswith("hue="):
            assert [list(e.timesteps) for e in spec.edits] == [entry["measured"]["window"]]
    out = tmp_path / "hue"
    args = [
        "edit",
        "--release",
        "tide-dit-tiny/shapes",
        "--toward",
        "hue=2",
        "--class-labels",
        "0",
        "1",
        "--num-inference-steps",
        "3",
        "--output-dir",
        str(out),
    ]
    assert main(args) == 0
    report = json.loads((out / "edit.json").read_text())
    assert report["windows"] == [index["hue=2"]["measured"]["window"]]


def test_load_concept_overrides_strength_of_setting_edits_and_every_window(tmp_path):
    from sae_lens_dit.analysis.interventions.concepts import load_concept, write_concepts

    edits = (
        LatentEdit(HOOK, (1,), "clamp", 2.0, timesteps=(300.0, 700.0)),
        LatentEdit(HOOK, (2,), "scale", 0.5),
        LatentEdit(HOOK, (3,), "zero", timesteps=(0.0, 1000.0)),
        LatentEdit(HOOK, (4,), "add", 1.0),
    )
    write_concepts(tmp_path, {"hue=1": (SteeringSpec(edits), "test", {})})
    assert load_concept(tmp_path, "hue=1") == SteeringSpec(edits)
    spec = load_concept(tmp_path, "hue=1", value=3.0, window=[100, 200])
    assert [e.value for e in spec.edits] == [3.0, 0.5, 0.0, 3.0]  # scale keeps its factor, zero has none
    assert [e.timesteps for e in spec.edits] == [(100.0, 200.0)] * 4
    with pytest.raises(ValueError, match="low <= high"):
        load_concept(tmp_path, "hue=1", window=(700, 100))
