"""The data-dependent start of an SAE (`saes.data_init`) against independent references."""

import numpy as np
import pytest
import torch
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
from scipy.optimize import minimize

from sae_lens_dit.analysis.evals import DENSE_THRESHOLD, latent_usage
from sae_lens_dit.saes import TideTrainingSAE, TideTrainingSAEConfig
from sae_lens_dit.saes.data_init import geometric_median, init_from_rows


def _rows(seed: int, n: int = 400, d: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(n, d, generator=g) + 5.0  # offset: a large mean, as in DiT residuals
    rows[: n // 20] += 40.0  # 5% outliers pull the mean, barely the median
    return rows


@pytest.mark.parametrize("seed", [11, 12])
def test_geometric_median_minimises_summed_distance_like_scipy(seed):
    rows = _rows(seed)
    x = rows.double().numpy()
    reference = minimize(
        lambda m: np.linalg.norm(x - m, axis=1).sum(),
        x.mean(0),
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-9, "maxiter": 40000, "maxfev": 40000},
    ).x
    ours = geometric_median(rows.double()).numpy()
    cost = lambda m: np.linalg.norm(x - m, axis=1).sum()  # noqa: E731
    assert cost(ours) <= cost(reference) + 1e-6  # at least as good as the generic optimiser
    np.testing.assert_allclose(ours, reference, atol=1e-3)
    assert np.linalg.norm(ours - 5.0) < np.linalg.norm(x.mean(0) - 5.0)  # robust to the outliers


def test_topk_start_codes_are_projections_on_unit_decoder_rows():
    torch.manual_seed(3)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=6, d_sae=24, k=3))  # SAELens starts the decoder at norm 0.1
    rows = _rows(4)
    report = init_from_rows(sae, rows, "geometric_median")
    torch.testing.assert_close(sae.b_dec.data, geometric_median(rows), rtol=0, atol=1e-6)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(24), rtol=0, atol=1e-6)
    torch.testing.assert_close(sae.W_enc.data, sae.W_dec.data.T, rtol=0, atol=0)
    x = rows[:5]
    projections = (x - sae.b_dec.data) @ sae.W_dec.data.T  # hand computation: centred input on each direction
    codes = sae.encode(x)
    picked = codes != 0
    torch.testing.assert_close(codes[picked], projections[picked], rtol=1e-5, atol=1e-5)
    assert report["b_dec_norm"] == pytest.approx(float(geometric_median(rows).norm()), rel=1e-6)


def test_b_dec_is_set_in_the_trainers_scaled_space_and_tide_starts_the_same_way():
    sae = TideTrainingSAE(TideTrainingSAEConfig(d_in=6, d_sae=24, k=3))
    rows = _rows(5)
    init_from_rows(sae, rows, "mean", scaling_factor=0.5)
    torch.testing.assert_close(sae.b_dec.data, rows.mean(0) * 0.5, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(24), rtol=0, atol=1e-6)


def test_architectures_without_decoder_norm_rescaling_keep_their_decoder():
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=6, d_sae=24))
    before = sae.W_dec.data.clone()
    init_from_rows(sae, _rows(6), "zeros")
    assert torch.equal(sae.W_dec.data, before)
    assert torch.equal(sae.b_dec.data, torch.zeros(6))


def test_bad_rows_and_methods_are_refused():
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=6, d_sae=24, k=3))
    with pytest.raises(ValueError, match="d_in=6"):
        init_from_rows(sae, torch.randn(10, 5))
    with pytest.raises(ValueError, match="non-finite"):
        init_from_rows(sae, torch.full((10, 6), float("nan")))
    with pytest.raises(ValueError, match="b_dec_init='median'"):
        init_from_rows(sae, torch.randn(10, 6), "median")  # type: ignore[arg-type]


def test_latent_usage_counts_dead_and_dense_latents_like_a_hand_count():
    torch.manual_seed(7)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=6, d_sae=24, k=2))
    x = torch.randn(3000, 6)
    usage = latent_usage(sae, x, torch.zeros(3000), batch_size=700)
    with torch.no_grad():
        rate = (sae.encode(x) != 0).float().mean(0)
    assert usage.rows == 3000
    assert usage.dead == int((rate == 0).sum())
    assert usage.dense == int((rate > DENSE_THRESHOLD).sum())
    assert usage.dead_fraction == usage.dead / 24
