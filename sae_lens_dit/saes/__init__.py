"""SAE architectures for diffusion transformers (plain SAELens classes; no backbone, no data source)."""

from sae_lens_dit.saes.sparse_topk import SparseTopKTrainingSAE, SparseTopKTrainingSAEConfig
from sae_lens_dit.saes.tide_sae import (
    BatchTimestepReceiver,
    TideSAE,
    TideSAEConfig,
    TideTrainingSAE,
    TideTrainingSAEConfig,
    feed_timesteps,
)
from sae_lens_dit.saes.tide_transcoder import (
    TideTrainingTranscoder,
    TideTrainingTranscoderConfig,
    TideTranscoder,
    TideTranscoderConfig,
    transcoder_rows,
)

__all__ = [
    "BatchTimestepReceiver",
    "SparseTopKTrainingSAE",
    "SparseTopKTrainingSAEConfig",
    "TideSAE",
    "TideSAEConfig",
    "TideTrainingSAE",
    "TideTrainingSAEConfig",
    "TideTrainingTranscoder",
    "TideTrainingTranscoderConfig",
    "TideTranscoder",
    "TideTranscoderConfig",
    "feed_timesteps",
    "transcoder_rows",
]
