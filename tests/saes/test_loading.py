"""Damaged SAE folders give a clear error, never a silently different SAE (hypothesis properties).

Each property damages one saved TIDE SAE folder and loads it through SAELens's default loader and
through `validated_disk_loader`. Loading must fail, or give exactly the saved SAE's outputs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sae_lens import SAE
from sae_lens.registry import SAE_CLASS_REGISTRY
from safetensors.torch import load_file, save_file

from sae_lens_dit import TideTrainingSAE
from sae_lens_dit.saes.loading import SAEFilesError, validated_disk_loader

PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
X = torch.randn(6, 16)
T = torch.tensor([0.0, 0.0, 333.0, 333.0, 999.0, 999.0])
OUTPUT_CHANGING = {  # cfg.json fields the weights pin down, or that change the outputs
    "architecture",
    "d_in",
    "d_sae",
    "k",
    "rescale_acts_by_decoder_norm",
    "apply_b_dec_to_input",
    "normalize_activations",
    "timestep_embed_dim",
    "timestep_hidden_dim",
}
ATTEMPTS = {"sae_lens": {}, "validated": {"converter": validated_disk_loader}}


@pytest.fixture(scope="module")
def saved(train_tide, tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """A trained TIDE folder (non-default MLP widths, so a missing width shows) and its outputs."""
    sae: TideTrainingSAE = train_tide()
    folder = tmp_path_factory.mktemp("tide")
    sae.save_inference_model(folder)
    return folder, sae(X, timestep=T).detach()


@contextmanager
def _copy_of(folder: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(shutil.copytree(folder, Path(tmp) / "sae"))


def _edit_cfg(folder: Path, edit) -> None:
    cfg = json.loads((folder / "cfg.json").read_text())
    edit(cfg)
    (folder / "cfg.json").write_text(json.dumps(cfg))


def _load_or_error(folder: Path, expected: torch.Tensor) -> dict[str, Exception | None]:
    """Per loader: the error it raised, or None if it loaded an SAE with the expected outputs."""
    results: dict[str, Exception | None] = {}
    for name, kwargs in ATTEMPTS.items():
        try:
            loaded = SAE.load_from_disk(folder, **kwargs)
        except Exception as error:  # any error is fine here: it is not a silent load
            results[name] = error
            continue
        torch.testing.assert_close(loaded(X, timestep=T), expected, rtol=0, atol=1e-6)
        results[name] = None
    return results


def test_the_intact_folder_loads(saved) -> None:
    assert _load_or_error(*saved) == {"sae_lens": None, "validated": None}


@PROPERTY
@given(data=st.data())
def test_missing_cfg_fields_fail_or_change_nothing(saved, data) -> None:
    folder, expected = saved
    keys = sorted(json.loads((folder / "cfg.json").read_text()))
    dropped = data.draw(st.sets(st.sampled_from(keys), min_size=1))
    with _copy_of(folder) as copy:
        _edit_cfg(copy, lambda cfg: [cfg.pop(key) for key in dropped])
        results = _load_or_error(copy, expected)
    error = results["validated"]
    if error is not None:
        assert isinstance(error, SAEFilesError)
        assert any(key in str(error) for key in dropped), error
    if dropped & OUTPUT_CHANGING:
        assert isinstance(error, SAEFilesError), "the validated loader must refuse"
    # SAELens fills these when the config also lacks its version (in metadata): legacy handling
    sae_lens_fills = {"apply_b_dec_to_input", "normalize_activations"} if "metadata" in dropped else set()
    if dropped & (OUTPUT_CHANGING - sae_lens_fills):
        assert results["sae_lens"] is not None, "SAELens's loader must refuse too"


@PROPERTY
@given(field=st.sampled_from(["d_in", "d_sae"]), value=st.integers(1, 300))
def test_wrong_dimensions_are_refused(saved, field, value) -> None:
    folder, expected = saved
    if value == {"d_in": 16, "d_sae": 64}[field]:
        return
    with _copy_of(folder) as copy:
        _edit_cfg(copy, lambda cfg: cfg.update({field: value}))
        results = _load_or_error(copy, expected)
    assert all(isinstance(error, ValueError) and field in str(error) for error in results.values()), results


@PROPERTY
@given(architecture=st.one_of(st.text(max_size=12), st.sampled_from(sorted(SAE_CLASS_REGISTRY))))
def test_unknown_or_other_architectures_are_refused(saved, architecture) -> None:
    folder, expected = saved
    if architecture == "tide":
        return
    with _copy_of(folder) as copy:
        _edit_cfg(copy, lambda cfg: cfg.update({"architecture": architecture}))
        results = _load_or_error(copy, expected)
    assert all(error is not None for error in results.values()), results
    assert isinstance(results["validated"], SAEFilesError)
    if architecture not in SAE_CLASS_REGISTRY:
        assert "not registered" in str(results["validated"]) and "tide" in str(results["validated"])


@PROPERTY
@given(data=st.data(), value=st.sampled_from([float("nan"), float("inf"), float("-inf")]))
def test_non_finite_weights_are_refused(saved, data, value) -> None:
    folder, expected = saved
    weights = load_file(folder / "sae_weights.safetensors")
    name = data.draw(st.sampled_from(sorted(weights)))
    index = data.draw(st.integers(0, weights[name].numel() - 1))
    weights[name].view(-1)[index] = value
    with _copy_of(folder) as copy:
        save_file(weights, copy / "sae_weights.safetensors")
        results = _load_or_error(copy, expected)
    for error in results.values():
        assert isinstance(error, ValueError) and "NaN or inf" in str(error) and name in str(error)


@PROPERTY
@given(fraction=st.floats(0.0, 0.9999))
def test_truncated_weights_are_refused(saved, fraction) -> None:
    folder, expected = saved
    content = (folder / "sae_weights.safetensors").read_bytes()
    with _copy_of(folder) as copy:
        (copy / "sae_weights.safetensors").write_bytes(content[: int(fraction * len(content))])
        with pytest.raises(SAEFilesError, match="truncated"):
            validated_disk_loader(copy)
        with pytest.raises(Exception):  # noqa: B017 (SAELens raises safetensors' own error)
            SAE.load_from_disk(copy)


@PROPERTY
@given(text=st.one_of(st.text(max_size=40), st.builds(json.dumps, st.lists(st.integers()))))
def test_unreadable_cfg_is_refused(saved, text: Any) -> None:
    folder, _ = saved
    with _copy_of(folder) as copy:
        (copy / "cfg.json").write_text(text)
        with pytest.raises(SAEFilesError, match="cfg.json"):
            validated_disk_loader(copy)


def test_load_sae_folder_checks_folder_and_device_before_loading(saved, tmp_path) -> None:
    from sae_lens_dit.guards.config import ConfigError
    from sae_lens_dit.saes.loading import load_sae_folder

    folder, expected = saved
    torch.testing.assert_close(load_sae_folder(folder)(X, timestep=T), expected, rtol=0, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="SAE folder .* does not exist"):
        load_sae_folder(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"not an SAE folder \(no cfg.json\)"):
        load_sae_folder(tmp_path)
    with pytest.raises(ConfigError, match="not a torch device"):
        load_sae_folder(folder, device="gpu0")
