"""Trained TIDE SAEs survive SAELens's save/load paths unchanged (max abs diff <= 1e-5)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import sae_lens.training.upload_saes_to_huggingface as upload_module
import torch
from sae_lens import SAE
from sae_lens.training.upload_saes_to_huggingface import upload_saes_to_huggingface

from sae_lens_dit import TideSAE, TideTrainingSAE
from sae_lens_dit.saes.loading import validated_disk_loader, validated_huggingface_loader

TIMESTEPS = (0.0, 250.5, 999.0, torch.tensor([0.0, 10.0, 10.0, 500.0, 999.0, 999.0, 3.0, 700.0]))
VARIANTS = {  # name: (config overrides, trainer overrides)
    "rescale": ({"rescale_acts_by_decoder_norm": True}, {}),
    "no-rescale": ({"rescale_acts_by_decoder_norm": False}, {}),
    "rescale+norm-scaling": (
        {"rescale_acts_by_decoder_norm": True, "normalize_activations": "expected_average_only_in"},
        {"n_batches_for_norm_estimate": 2},
    ),
}


class _AsTrained:
    """The SAE as it was at the end of training, before SAETrainer folded the input scaling factor
    c into it: on raw activations x it computes sae(c x) / c."""

    def __init__(self, sae: TideTrainingSAE) -> None:
        self.sae, self.factor = sae, 1.0
        fold = sae.fold_activation_norm_scaling_factor

        def snapshot_then_fold(scaling_factor: float) -> None:
            self.sae, self.factor = copy.deepcopy(sae), scaling_factor
            fold(scaling_factor)

        sae.fold_activation_norm_scaling_factor = snapshot_then_fold  # type: ignore[method-assign]

    def __call__(self, x: torch.Tensor, timestep: Any) -> torch.Tensor:
        return self.sae(x * self.factor, timestep=timestep) / self.factor


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def trained(request, train_tide) -> tuple[TideTrainingSAE, _AsTrained]:
    """(the SAE SAETrainer returned, the same SAE as it was trained)."""
    cfg, trainer = VARIANTS[request.param]
    as_trained: list[_AsTrained] = []
    sae = train_tide(trainer=trainer, on_init=lambda sae: as_trained.append(_AsTrained(sae)), **cfg)
    assert (as_trained[0].factor != 1.0) == (cfg.get("normalize_activations") is not None)
    with torch.no_grad():  # decoder norms far from 1, so that folding them matters
        for model in {id(sae): sae, id(as_trained[0].sae): as_trained[0].sae}.values():
            model.W_dec.mul_(torch.linspace(0.3, 3.0, sae.cfg.d_sae)[:, None])
    return sae, as_trained[0]


def _assert_same_outputs(loaded: SAE[Any], trained: tuple[TideTrainingSAE, _AsTrained]) -> None:
    assert isinstance(loaded, TideSAE)
    x = torch.randn(8, 16) * 2
    sae, as_trained = trained
    for t in TIMESTEPS:
        torch.testing.assert_close(loaded(x, timestep=t), sae(x, timestep=t), rtol=0, atol=1e-5)
        torch.testing.assert_close(loaded(x, timestep=t), as_trained(x, timestep=t), rtol=0, atol=1e-5)
        # (codes of a rescale_acts_by_decoder_norm SAE are in input units: folding c divides them by c)
        torch.testing.assert_close(loaded.encode(x, timestep=t), sae.encode(x, timestep=t), rtol=0, atol=1e-5)


def _fold_options(sae: TideTrainingSAE) -> list[bool]:
    return [False, True] if sae.cfg.rescale_acts_by_decoder_norm else [False]


def test_inference_model_round_trips_through_load_from_disk(trained, tmp_path: Path) -> None:
    trained[0].save_inference_model(tmp_path)
    for fold in _fold_options(trained[0]):
        for converter in ({}, {"converter": validated_disk_loader}):
            _assert_same_outputs(SAE.load_from_disk(tmp_path, fold_W_dec_norm=fold, **converter), trained)
    if not trained[0].cfg.rescale_acts_by_decoder_norm:
        with pytest.raises(NotImplementedError):
            SAE.load_from_disk(tmp_path, fold_W_dec_norm=True)


def test_training_checkpoint_round_trips(trained, tmp_path: Path) -> None:
    trained[0].save_model(tmp_path)
    _assert_same_outputs(SAE.load_from_disk(tmp_path), trained)
    reloaded = TideTrainingSAE.load_from_disk(tmp_path)
    assert isinstance(reloaded, TideTrainingSAE)
    x = torch.randn(8, 16)
    torch.testing.assert_close(reloaded(x, timestep=300.0), trained[0](x, timestep=300.0), rtol=0, atol=1e-5)


class _LocalHub:
    """Stands in for HfApi: `upload_folder` writes what SAELens uploads into a local Hub cache,
    laid out as huggingface_hub lays out downloads, so `hf_hub_download` finds it offline."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache

    def repo_info(self, repo_id: str) -> None:
        return None

    def upload_folder(self, folder_path, path_in_repo, repo_id, allow_patterns, **_: Any) -> None:
        repo = self.cache / f"models--{repo_id.replace('/', '--')}"
        commit = "0" * 40
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        target = repo / "snapshots" / commit / path_in_repo
        target.mkdir(parents=True, exist_ok=True)
        for pattern in allow_patterns:
            for file in Path(folder_path).glob(pattern):
                shutil.copy(file, target / file.name)


def test_hub_layout_round_trips_through_from_pretrained(trained, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(upload_module, "HfApi", lambda: _LocalHub(tmp_path / "hub"))
    assert huggingface_hub.constants.HF_HUB_OFFLINE
    trained[0].save_inference_model(tmp_path / "inference")
    upload_saes_to_huggingface(
        {"blocks.2.hook_resid_post": tmp_path / "inference", "training-checkpoint": trained[0]},
        hf_repo_id="someone/tide-test",
        add_default_readme=False,
        show_progress=False,
    )
    for sae_id in ("blocks.2.hook_resid_post", "training-checkpoint"):
        for fold in _fold_options(trained[0]):
            for converter in ({}, {"converter": validated_huggingface_loader}):
                loaded = SAE.from_pretrained("someone/tide-test", sae_id, fold_W_dec_norm=fold, **converter)
                _assert_same_outputs(loaded, trained)
