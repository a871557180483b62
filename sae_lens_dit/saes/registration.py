"""Registration of this package's SAE architectures and loader with SAELens.

SAELens looks architectures and loaders up in plain module-level dicts; registering a name twice
raises there. `register_tide_architecture` is idempotent: calling it again (or re-importing
`sae_lens_dit`, or reloading its modules) never raises, and SAELens's own entries (its unrelated
`temporal` architecture included) stay as they are.
"""

from __future__ import annotations

import logging
from typing import Any

from sae_lens import register_sae_class, register_sae_training_class
from sae_lens.loading.pretrained_sae_loaders import (
    NAMED_PRETRAINED_SAE_CONFIG_GETTERS,
    NAMED_PRETRAINED_SAE_LOADERS,
    get_sae_lens_config_from_hf,
)
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY

from sae_lens_dit.conventions import TIDE_ARCHITECTURE, TIDE_TRANSCODER_ARCHITECTURE
from sae_lens_dit.saes.loading import validated_huggingface_loader
from sae_lens_dit.saes.sparse_topk import SPARSE_ARCHITECTURE, SparseTopKTrainingSAE, SparseTopKTrainingSAEConfig
from sae_lens_dit.saes.tide_sae import TideSAE, TideSAEConfig, TideTrainingSAE, TideTrainingSAEConfig
from sae_lens_dit.saes.tide_transcoder import (
    TideTrainingTranscoder,
    TideTrainingTranscoderConfig,
    TideTranscoder,
    TideTranscoderConfig,
)

logger = logging.getLogger(__name__)

"""SAELens architecture name of TIDE SAEs (the `architecture` field of their cfg.json)."""

LOADER = "sae_lens_dit"
"""Name of the validating Hub loader in SAELens's `NAMED_PRETRAINED_SAE_LOADERS` (a release's
`conversion_func`)."""


def register_tide_architecture() -> None:
    """Register TideSAE / TideTrainingSAE under `TIDE_ARCHITECTURE`, the TIDE transcoders under
    `TIDE_TRANSCODER_ARCHITECTURE`, the sparse-step TopK training SAE
    under `SPARSE_ARCHITECTURE` (training only: it saves as SAELens `topk`) and the validating
    loader under `LOADER` with SAELens; idempotent."""
    _register(SAE_CLASS_REGISTRY, register_sae_class, TIDE_ARCHITECTURE, TideSAE, TideSAEConfig)
    _register(
        SAE_TRAINING_CLASS_REGISTRY,
        register_sae_training_class,
        TIDE_ARCHITECTURE,
        TideTrainingSAE,
        TideTrainingSAEConfig,
    )
    _register(
        SAE_CLASS_REGISTRY, register_sae_class, TIDE_TRANSCODER_ARCHITECTURE, TideTranscoder, TideTranscoderConfig
    )
    _register(
        SAE_TRAINING_CLASS_REGISTRY,
        register_sae_training_class,
        TIDE_TRANSCODER_ARCHITECTURE,
        TideTrainingTranscoder,
        TideTrainingTranscoderConfig,
    )
    _register(
        SAE_TRAINING_CLASS_REGISTRY,
        register_sae_training_class,
        SPARSE_ARCHITECTURE,
        SparseTopKTrainingSAE,
        SparseTopKTrainingSAEConfig,
    )
    NAMED_PRETRAINED_SAE_LOADERS[LOADER] = validated_huggingface_loader
    NAMED_PRETRAINED_SAE_CONFIG_GETTERS[LOADER] = get_sae_lens_config_from_hf


def _register(registry: dict[str, Any], register: Any, name: str, sae_class: type, cfg_class: type) -> None:
    current = registry.get(name)
    if current == (sae_class, cfg_class):
        return
    if current is not None:
        if _qualified_names(current) != _qualified_names((sae_class, cfg_class)):
            raise ValueError(
                f"SAELens architecture {name!r} is already registered by "
                f"{_qualified_names(current)}; sae_lens_dit cannot register "
                f"{_qualified_names((sae_class, cfg_class))} under the same name. Uninstall or stop "
                f"importing the other package."
            )
        logger.debug("re-registering reloaded %s classes", name)
        del registry[name]
    register(name, sae_class, cfg_class)


def _qualified_names(classes: tuple[type, ...]) -> list[str]:
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in classes]
