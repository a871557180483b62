"""The live explorer on the bundled shapes backbone and a release SAE (8 steps): an edit painted into a box
changes the image inside the box more than outside (at t <= 400; edits at high noise spread over the
whole image), and the exported spec replays to the same image through `interventions.edit` and through
`sae-lens-dit edit --spec`."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from sae_lens_dit.analysis.explorer import png_bytes
from sae_lens_dit.analysis.interventions import SteeringSpec, edit
from sae_lens_dit.cli import main

BOX = (0.0, 0.0, 0.5, 0.5)


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64) / 255.0


def _query(client) -> str:
    latents = client.get("/api/latents?sae=0").json()["latents"]
    top = max(latents, key=lambda row: row["firing"])["id"]
    return f"class=1&seed=3&latents={top}&strength=4&box={','.join(map(str, BOX))}&window=0,400"


def test_a_box_edit_changes_the_inside_most(shapes):
    client, *_ = shapes
    body = client.get(f"/api/edit?{_query(client)}").json()
    change = np.abs(_pixels(client.get(body["after"]).content) - _pixels(client.get(body["before"]).content))
    change = change.mean(-1) if change.ndim == 3 else change  # [H, W]
    h, w = change.shape
    inside = np.zeros((h, w), dtype=bool)
    inside[: int(BOX[3] * h), : int(BOX[2] * w)] = True
    assert change[inside].mean() > 2 * change[~inside].mean() and change[inside].mean() > 0.01


def test_the_exported_spec_replays_in_python_and_the_cli(shapes, tmp_path):
    client, pipe, hooked, sae, _ = shapes
    query = _query(client)
    body = client.get(f"/api/edit?{query}").json()
    text = client.get(f"/api/spec.yaml?{query}").text
    spec_file = tmp_path / "edit.yaml"
    spec_file.write_text(text)
    spec = SteeringSpec.load(spec_file)
    after = client.get(body["after"]).content
    replay = edit(pipe, hooked, [sae], spec, 3, class_labels=[1], num_inference_steps=8)
    assert png_bytes(replay.after[0]) == after
    # the command the YAML's header names, with the app's steps
    command = next(line for line in text.splitlines() if line.startswith("# sae-lens-dit edit")).split()[2:]
    command = [str(spec_file) if a == "edit.yaml" else str(tmp_path / "out") if a == "edit-out" else a for a in command]
    assert main(command) == 0
    grid = np.asarray(Image.open(tmp_path / "out" / "after.png"))
    image = _pixels(after)
    scale = (grid.shape[0] - 4) // image.shape[0]  # save_grid: nearest upscaling, 2 px padding
    assert np.array_equal(grid[2:-2:scale, 2:-2:scale] / 255.0, image)
