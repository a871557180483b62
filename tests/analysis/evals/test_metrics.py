"""Evaluation metrics against hand computations and independent references, on fresh random inputs."""

import numpy as np
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from scipy import linalg
from sklearn.metrics import roc_auc_score

from sae_lens_dit.analysis.evals import (
    EARLY_T,
    LATE_T,
    auroc,
    factor_value_scores,
    frechet_distance,
    latent_timestep_stats,
    probe_accuracy,
)


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(200, 5)).astype(float)  # many ties
    positive = rng.random(200) < 0.3
    expected = [roc_auc_score(positive, scores[:, j]) for j in range(5)]
    np.testing.assert_allclose(auroc(scores, positive), expected, atol=1e-12)


def test_planted_latent_gets_auroc_one_and_is_found_alone():
    rng = np.random.default_rng(2)
    values = rng.integers(0, 4, size=300)
    features = np.abs(rng.normal(size=(300, 50))) * (rng.random((300, 50)) < 0.2)  # sparse noise latents
    features[:, 17] = (values == 2) * rng.uniform(0.5, 2.0, size=300)  # fires exactly on value 2
    scores = factor_value_scores(features, values == 2)
    assert scores == {"best_auroc": 1.0, "best_feature": 17, "features_to_target": 1}
    ids = np.arange(100, 150)
    assert factor_value_scores(features, values == 2, ids)["best_feature"] == 117


def test_features_to_target_counts_a_split_factor():
    """A factor carried by two latents, each firing on half of its images, needs both (neither alone reaches 0.9)."""
    rng = np.random.default_rng(3)
    positive = np.arange(400) % 2 == 0
    features = rng.normal(scale=0.01, size=(400, 10))
    features[positive & (np.arange(400) % 4 == 0), 3] += 1.0
    features[positive & (np.arange(400) % 4 == 2), 6] += 1.0
    scores = factor_value_scores(features, positive)
    assert 0.65 < scores["best_auroc"] < 0.9  # about 0.75: one latent sees half the positives
    assert scores["features_to_target"] == 2


def test_frechet_distance_matches_symmetric_formula():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(loc=0.5, size=(250, 6)) @ rng.normal(size=(6, 6))
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = linalg.sqrtm(ca).real
    cross = np.trace(linalg.sqrtm(root_a @ cb @ root_a).real)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb) - 2 * cross
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_probe_separates_separable_classes_and_refuses_singletons():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 40)
    features = rng.normal(size=(120, 8)) + 5 * np.eye(8)[labels]
    assert probe_accuracy(features, labels) == 1.0
    with pytest.raises(ValueError, match="at least 2 images per class"):
        probe_accuracy(features[:81], labels[:81])


def test_latent_timestep_stats_by_hand():
    """A ReLU SAE whose latent 0 copies input 0 and latent 1 copies input 1: frequencies are countable by hand."""
    sae = StandardSAE(StandardSAEConfig(d_in=2, d_sae=3))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        for p in (sae.b_enc, sae.b_dec, sae.W_dec):
            p.zero_()
    t = torch.tensor([100.0, 150.0, 500.0, 700.0, 900.0, 950.0])
    x = torch.tensor([[1.0, 2.0], [0.0, 4.0], [0.0, 0.0], [3.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    stats = latent_timestep_stats(sae, x, t, edges=(0.0, LATE_T, EARLY_T, 1000.0))
    assert stats.rows.tolist() == [2, 1, 3]
    expected_freq = [[0.5, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    expected_mean = [[0.5, 3.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]
    torch.testing.assert_close(stats.frequency, torch.tensor(expected_freq, dtype=torch.float64))
    torch.testing.assert_close(stats.mean_activation, torch.tensor(expected_mean, dtype=torch.float64))
    # latent 0: early share 1.0 / 1.5 < PROFILE_SHARE -> persistent; latent 1 fires only late; latent 2 never
    assert stats.profile() == ["persistent", "late", "dead"]


def test_no_live_features_score_as_chance():
    values = np.arange(20) % 2
    assert factor_value_scores(np.zeros((20, 0)), values == 1) == {
        "best_auroc": 0.5,
        "best_feature": None,
        "features_to_target": None,
    }
    assert probe_accuracy(np.zeros((20, 0)), np.array([0] * 15 + [1] * 5)) == 0.75
