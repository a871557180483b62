"""`import sae_lens_dit` registers TIDE with SAELens, idempotently, leaving SAELens's own entries."""

from __future__ import annotations

import importlib

import pytest
import sae_lens.registry as sae_lens_registry
from sae_lens.loading.pretrained_sae_loaders import NAMED_PRETRAINED_SAE_LOADERS
from sae_lens.saes.temporal_sae import TemporalSAE

import sae_lens_dit
import sae_lens_dit.saes.registration as registry
import sae_lens_dit.saes.tide_sae as tide_module
from sae_lens_dit import TideSAE, TideSAEConfig, TideTrainingSAE, TideTrainingSAEConfig
from sae_lens_dit.conventions import TIDE_ARCHITECTURE
from sae_lens_dit.saes.loading import validated_huggingface_loader


@pytest.fixture
def restore_registries():
    """Put SAELens's registries and our reloaded modules back as they were, for the other tests."""
    tables = (sae_lens_registry.SAE_CLASS_REGISTRY, sae_lens_registry.SAE_TRAINING_CLASS_REGISTRY)
    namespaces = (vars(tide_module), vars(registry), vars(sae_lens_dit))
    saved = [dict(table) for table in tables], [dict(namespace) for namespace in namespaces]
    yield
    for table, content in zip(tables, saved[0], strict=True):
        table.clear()
        table.update(content)
    for namespace, content in zip(namespaces, saved[1], strict=True):
        namespace.update(content)


def test_import_registers_tide_and_keeps_temporal() -> None:
    assert TIDE_ARCHITECTURE == "tide"
    assert sae_lens_registry.get_sae_class("tide") == (TideSAE, TideSAEConfig)
    assert sae_lens_registry.get_sae_training_class("tide") == (TideTrainingSAE, TideTrainingSAEConfig)
    assert sae_lens_registry.get_sae_class("temporal")[0] is TemporalSAE
    assert NAMED_PRETRAINED_SAE_LOADERS[registry.LOADER] is validated_huggingface_loader


def test_repeated_registration_and_reimport_never_raise(restore_registries) -> None:
    before = dict(sae_lens_registry.SAE_CLASS_REGISTRY)
    registry.register_tide_architecture()
    registry.register_tide_architecture()
    importlib.reload(sae_lens_dit)
    after = dict(sae_lens_registry.SAE_CLASS_REGISTRY)
    assert after == before
    # a reloaded module defines new classes with the same names: they replace the old ones
    reloaded = importlib.reload(tide_module)
    importlib.reload(registry).register_tide_architecture()
    assert sae_lens_registry.get_sae_class("tide") == (reloaded.TideSAE, reloaded.TideSAEConfig)
    assert sae_lens_registry.get_sae_class("temporal")[0] is TemporalSAE


def test_another_package_owning_the_name_is_a_clear_error(restore_registries) -> None:
    sae_lens_registry.SAE_CLASS_REGISTRY["tide"] = sae_lens_registry.SAE_CLASS_REGISTRY["topk"]
    with pytest.raises(ValueError, match="already registered by.*TopKSAE"):
        registry.register_tide_architecture()
