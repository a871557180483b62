"""TIDE's forward maths, timestep handling, options and SAELens behaviours (hooks, folding)."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import DiTTransformer2DModel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig

from sae_lens_dit import TideSAE, TideSAEConfig, TideTrainingSAE, TideTrainingSAEConfig
from sae_lens_dit.toy.random_dit import random_dit

SMALL = {"d_in": 16, "d_sae": 64, "k": 4, "timestep_embed_dim": 32, "timestep_hidden_dim": 24}
INFERENCE = {"rescale_acts_by_decoder_norm": True, "apply_b_dec_to_input": True, "normalize_activations": "none"}


def _step_input(x: torch.Tensor) -> TrainStepInput:
    return TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0, is_logging_step=False)


@pytest.fixture(scope="module")
def trained(train_tide) -> TideTrainingSAE:
    return train_tide()


@pytest.mark.parametrize("rescale", [True, False])
def test_fresh_tide_is_exactly_topk(rescale: bool) -> None:
    tide = TideTrainingSAE(TideTrainingSAEConfig(**SMALL, rescale_acts_by_decoder_norm=rescale))
    topk = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=16, d_sae=64, k=4, rescale_acts_by_decoder_norm=rescale))
    topk.load_state_dict({k: v for k, v in tide.state_dict().items() if not k.startswith("timestep_mlp")})
    tide_inf = TideSAE(TideSAEConfig(**SMALL, **{**INFERENCE, "rescale_acts_by_decoder_norm": rescale}))
    topk_inf = TopKSAE(TopKSAEConfig(d_in=16, d_sae=64, k=4, rescale_acts_by_decoder_norm=rescale))
    topk_inf.load_state_dict(topk.state_dict())
    tide_inf.load_state_dict(tide.state_dict())
    x = torch.randn(32, 16)
    for t in (0.0, 500.0, torch.linspace(0, 1000, 32)):
        assert torch.equal(tide.encode(x, timestep=t), topk.encode(x))
        assert torch.equal(tide(x, timestep=t), topk(x))
        assert torch.equal(tide_inf(x, timestep=t), topk_inf(x))
    tide.receive_batch_timesteps(torch.full((32,), 7.0))
    ours, theirs = tide.training_forward_pass(_step_input(x)), topk.training_forward_pass(_step_input(x))
    assert torch.equal(ours.loss, theirs.loss)


def test_gradients_reach_the_whole_timestep_mlp() -> None:
    sae = TideTrainingSAE(TideTrainingSAEConfig(**SMALL))
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
    x, t = torch.randn(64, 16), torch.rand(64) * 1000
    grads = []
    for _ in range(2):
        sae.receive_batch_timesteps(t)
        sae.training_forward_pass(_step_input(x)).loss.backward()
        grads.append({name: p.grad.clone() for name, p in sae.timestep_mlp.named_parameters()})
        optimizer.step()
        optimizer.zero_grad()
    per_term = grads[0]["heads.weight"].view(3, 16, -1).abs().sum(dim=(1, 2))  # scale, shift, decoder_bias
    assert (per_term > 0).all()
    # the heads start at zero, so the hidden layers learn from the second step on
    assert grads[0]["linear_1.weight"].abs().sum() == 0
    assert all(grad.abs().sum() > 0 for grad in grads[1].values())


def test_l0_is_k_at_every_timestep(trained: TideTrainingSAE) -> None:
    x = torch.randn(128, 16) * 3
    for t in (0.0, 999.0, torch.rand(128) * 1000):
        assert ((trained.encode(x, timestep=t) != 0).sum(-1) == 4).all()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.integers(1, 4),
    tokens=st.integers(1, 5),
    data=st.data(),
)
def test_timestep_per_leading_index_equals_one_call_per_item(trained, batch, tokens, data) -> None:
    t = torch.tensor(data.draw(st.lists(st.sampled_from([0.0, 17.0, 500.0, 999.0]), min_size=batch, max_size=batch)))
    x = torch.randn(batch, tokens, 16)
    together = trained(x, timestep=t)
    one_by_one = torch.stack([trained(x[i], timestep=float(t[i])) for i in range(batch)])
    torch.testing.assert_close(together, one_by_one, rtol=0, atol=1e-6)
    flat = trained(x.reshape(-1, 16), timestep=t.repeat_interleave(tokens)).reshape(batch, tokens, 16)
    torch.testing.assert_close(together, flat, rtol=0, atol=1e-6)
    torch.testing.assert_close(trained(x, timestep=t[:1]), trained(x, timestep=t[0]), rtol=0, atol=0)


def test_timestep_changes_the_output(trained) -> None:
    x = torch.randn(8, 16)
    assert not torch.allclose(trained(x, timestep=0.0), trained(x, timestep=999.0))


def test_no_timestep_is_an_error_never_a_default(trained) -> None:
    x = torch.randn(4, 16)
    for call in (lambda: trained(x), lambda: trained.encode(x), lambda: trained.decode(torch.rand(4, 64))):
        with pytest.raises(ValueError, match="needs the denoising timestep.*at_timestep"):
            call()


def test_terms_that_are_off_need_no_timestep() -> None:
    decoder_only = TideSAE(TideSAEConfig(**SMALL, **INFERENCE, timestep_scale=False, timestep_shift=False))
    z = decoder_only.encode(torch.randn(4, 16))
    with pytest.raises(ValueError, match="decode"):
        decoder_only.decode(z)
    encoder_only = TideSAE(TideSAEConfig(**SMALL, **INFERENCE, timestep_decoder_bias=False))
    assert encoder_only.decode(torch.rand(4, 64)).shape == (4, 16)
    assert encoder_only.state_dict()["timestep_mlp.heads.weight"].shape == (2 * 16, 24)  # scale, shift


def test_decode_reuses_the_timestep_its_codes_were_encoded_at(trained) -> None:
    x, t = torch.randn(6, 16), torch.tensor([0.0, 0.0, 400.0, 400.0, 999.0, 999.0])
    z = trained.encode(x, timestep=t)
    torch.testing.assert_close(trained.decode(z), trained(x, timestep=t), rtol=0, atol=0)
    z[:, 0] = 0  # in-place edits keep the timestep
    torch.testing.assert_close(trained.decode(z), trained.decode(z, timestep=t), rtol=0, atol=0)
    with pytest.raises(ValueError, match="decode"):
        trained.decode(z * 2)  # a new tensor carries none


def test_at_timestep_serves_sae_lens_style_calls_and_nests(trained) -> None:
    x = torch.randn(4, 16)
    with trained.at_timestep(100.0):
        outer = trained(x)
        with trained.at_timestep(torch.tensor(900.0)):
            torch.testing.assert_close(trained(x), trained(x, timestep=900.0), rtol=0, atol=0)
        torch.testing.assert_close(trained(x), outer, rtol=0, atol=0)
        torch.testing.assert_close(trained(x, timestep=5.0), trained.forward(x, 5.0), rtol=0, atol=0)
    torch.testing.assert_close(outer, trained(x, timestep=100.0), rtol=0, atol=0)
    with pytest.raises(ValueError):
        trained(x)


@pytest.mark.parametrize(
    ("timestep", "message"),
    [
        (-1.0, r"\[0, 1000\]"),
        (1000.5, r"\[0, 1000\]"),
        (float("nan"), r"\[0, 1000\]"),
        (torch.zeros(3), "does not fit"),
        (torch.zeros(4, 2), "does not fit"),
        (torch.zeros(4, 1, 1), "does not fit"),
    ],
)
def test_bad_timesteps_are_rejected(trained, timestep, message) -> None:
    with pytest.raises(ValueError, match=message):
        trained(torch.randn(4, 16), timestep=timestep)


def test_hook_points_and_error_term(trained) -> None:
    x, t = torch.randn(5, 16), 300.0
    _, cache = trained.run_with_cache(x, timestep=t)
    for name in ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_output"):
        assert name in cache
    torch.testing.assert_close(cache["hook_sae_output"], trained(x, timestep=t))
    inference = TideSAE(TideSAEConfig(**SMALL, **INFERENCE))
    inference.load_state_dict(trained.state_dict())
    inference.use_error_term = True
    out, cache = inference.run_with_cache(x, timestep=t)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)
    torch.testing.assert_close(cache["hook_sae_error"], x - trained(x, timestep=t), rtol=0, atol=1e-5)

    def ablate(acts, hook):
        return torch.zeros_like(acts)

    ablated = inference.run_with_hooks(x, timestep=t, fwd_hooks=[("hook_sae_acts_post", ablate)])
    # with the error term the output is the ablated reconstruction plus the clean error
    expected = inference.decode(torch.zeros(5, 64), timestep=t) + cache["hook_sae_error"]
    torch.testing.assert_close(ablated, expected, rtol=0, atol=1e-5)


def test_fold_W_dec_norm_keeps_outputs(trained) -> None:
    inference = TideSAE(TideSAEConfig(**SMALL, **INFERENCE))
    inference.load_state_dict(trained.state_dict())
    with torch.no_grad():
        inference.W_dec.mul_(torch.rand(64, 1) + 0.5)
    x, t = torch.randn(16, 16), torch.rand(16) * 1000
    before = inference(x, timestep=t)
    inference.fold_W_dec_norm()
    torch.testing.assert_close(inference(x, timestep=t), before, rtol=0, atol=1e-5)
    unscaled = TideSAE(TideSAEConfig(**SMALL, **{**INFERENCE, "rescale_acts_by_decoder_norm": False}))
    with pytest.raises(NotImplementedError):
        unscaled.fold_W_dec_norm()


@pytest.mark.parametrize("apply_b_dec_to_input", [True, False])
def test_folding_the_input_scaling_factor_keeps_outputs(trained, apply_b_dec_to_input) -> None:
    sae = copy.deepcopy(trained)
    sae.cfg.apply_b_dec_to_input = apply_b_dec_to_input
    x, t, c = torch.randn(16, 16), torch.rand(16) * 1000, 3.7
    before = sae(x * c, timestep=t) / c  # the SAE trained on activations scaled by c
    sae.fold_activation_norm_scaling_factor(c)
    torch.testing.assert_close(sae(x, timestep=t), before, rtol=1e-5, atol=1e-5)


def test_sparse_activations_give_the_dense_result(trained) -> None:
    sparse = TideTrainingSAE(TideTrainingSAEConfig(**SMALL, use_sparse_activations=True))
    sparse.load_state_dict(trained.state_dict())
    x, t = torch.randn(8, 16), torch.rand(8) * 1000
    for sae in (sparse, trained):
        sae.receive_batch_timesteps(t)
    ours = sparse.training_forward_pass(_step_input(x))
    theirs = trained.training_forward_pass(_step_input(x))
    torch.testing.assert_close(ours.sae_out, theirs.sae_out, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"timestep_embed_dim": 7}, "timestep_embed_dim"),
        ({"timestep_hidden_dim": 0}, "timestep_hidden_dim"),
        ({"k": 65}, "k must be"),
        ({"normalize_activations": "covariance_whitening"}, "covariance_whitening"),
        ({"k_aux": 0}, "k_aux"),
        ({"normalize_activations": "layer_norm"}, "AuxK"),
    ],
)
def test_bad_config_values_are_rejected(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        TideTrainingSAEConfig(**{**SMALL, **overrides})


def test_inference_config_requires_every_output_changing_setting() -> None:
    with pytest.raises(TypeError, match="k"):
        TideSAEConfig(
            d_in=16,
            d_sae=64,
            rescale_acts_by_decoder_norm=True,
            apply_b_dec_to_input=True,
            normalize_activations="none",
        )


def test_whitening_cannot_be_folded(trained) -> None:
    with pytest.raises(NotImplementedError, match="whitening"):
        copy.deepcopy(trained).fold_activation_whitening(torch.zeros(16), torch.eye(16), torch.eye(16))


def test_aux_loss_uses_k_aux_and_coefficient() -> None:
    x = torch.randn(32, 16)
    losses = {}
    for k_aux, coefficient in ((2, 1.0), (8, 1.0), (8, 0.5)):
        torch.manual_seed(0)
        sae = TideTrainingSAE(TideTrainingSAEConfig(**SMALL, k_aux=k_aux, aux_loss_coefficient=coefficient))
        sae.receive_batch_timesteps(torch.zeros(32))
        step = TrainStepInput(x, {}, torch.ones(64, dtype=torch.bool), 0, False)
        losses[k_aux, coefficient] = sae.training_forward_pass(step).losses["auxiliary_reconstruction_loss"]
    assert losses[2, 1.0] != losses[8, 1.0] and losses[8, 1.0] > 0
    torch.testing.assert_close(losses[8, 0.5], losses[8, 1.0] / 2)


def _tiny_dit(**overrides) -> DiTTransformer2DModel:
    return random_dit(**{"num_embeds_ada_norm": 8, **overrides})


def test_init_from_dit_block_copies_the_timestep_embedder() -> None:
    dit = _tiny_dit()
    sae = TideTrainingSAE(TideTrainingSAEConfig(**{**SMALL, "timestep_embed_dim": 256, "timestep_hidden_dim": 8}))
    fresh = copy.deepcopy(sae)
    sae.init_from_dit_block(dit, block_index=1)
    emb = dit.transformer_blocks[1].norm1.emb
    t = torch.tensor([0.0, 321.0, 999.0])
    expected = torch.nn.functional.silu(emb.timestep_embedder(emb.time_proj(t)))
    torch.testing.assert_close(sae.timestep_mlp.features(t), expected, rtol=0, atol=1e-6)
    x = torch.randn(4, 16)
    torch.testing.assert_close(sae(x, timestep=500.0), fresh(x, timestep=500.0), rtol=0, atol=0)
    block_only = copy.deepcopy(fresh)
    block_only.init_from_dit_block(dit.transformer_blocks[1])
    torch.testing.assert_close(block_only.timestep_mlp.linear_2.weight, sae.timestep_mlp.linear_2.weight)


def test_init_from_dit_block_refuses_what_does_not_fit() -> None:
    dit = _tiny_dit()
    wrong_width = TideTrainingSAE(TideTrainingSAEConfig(**{**SMALL, "timestep_embed_dim": 256}))
    with pytest.raises(ValueError, match="timestep_hidden_dim=8"):
        wrong_width.init_from_dit_block(dit)
    wrong_embedding = TideTrainingSAE(TideTrainingSAEConfig(**{**SMALL, "timestep_hidden_dim": 8}))
    with pytest.raises(ValueError, match="timestep_embed_dim=256"):
        wrong_embedding.init_from_dit_block(dit)
    with pytest.raises(ValueError, match="norm1.emb.timestep_embedder"):
        wrong_embedding.init_from_dit_block(torch.nn.Linear(2, 2))


def test_the_timestep_mlp_runs_once_per_pass_and_per_distinct_timestep(trained, monkeypatch) -> None:
    calls = []
    features = trained.timestep_mlp.features
    monkeypatch.setattr(trained.timestep_mlp, "features", lambda values: calls.append(len(values)) or features(values))
    x, t = torch.randn(64, 16), torch.tensor([0.0, 500.0, 999.0]).repeat(22)[:64]
    trained(x, timestep=t)
    trained.receive_batch_timesteps(t)
    trained.training_forward_pass(_step_input(x))
    trained.decode(trained.encode(x, timestep=t))
    assert calls == [3, 3, 3]


def test_tide_saes_are_timestep_conditioned_and_topk_is_not() -> None:
    from sae_lens_dit.conventions import TimestepConditioned

    assert isinstance(TideSAE(TideSAEConfig(**SMALL, **INFERENCE)), TimestepConditioned)
    assert isinstance(TideTrainingSAE(TideTrainingSAEConfig(**SMALL)), TimestepConditioned)
    assert not isinstance(TopKSAE(TopKSAEConfig(d_in=16, d_sae=64, k=4)), TimestepConditioned)


@pytest.mark.parametrize("normalization", ["constant_norm_rescale", "layer_norm"])
def test_both_training_configs_refuse_normalizations_that_break_auxk(normalization) -> None:
    from sae_lens_dit.saes import SparseTopKTrainingSAEConfig

    for config in (TideTrainingSAEConfig, SparseTopKTrainingSAEConfig):
        with pytest.raises(ValueError, match=f"{config.__name__}: normalize_activations='{normalization}'.*AuxK"):
            config(d_in=16, d_sae=64, k=4, normalize_activations=normalization)
