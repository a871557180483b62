"""The per-architecture training recipe (`training.recipe`): how a config resolves it and what the runner does
with it, against hand computations on the same rows."""

import json
from pathlib import Path

import pytest
import torch
from sae_lens.registry import get_sae_training_class
from safetensors.torch import load_file

import sae_lens_dit  # noqa: F401  (registers tide, topk_sparse)
from sae_lens_dit.saes.data_init import init_from_rows
from sae_lens_dit.training.harvest import harvest_chunks
from sae_lens_dit.training.recipe import DIT_RECIPE, PLAIN_TOPK_RECIPE, hold_unit_decoder_rows, recipe_for
from sae_lens_dit.training.runner import DiTSAERunnerConfig, DiTSAETrainingRunner

TOPK = {"architecture": "topk", "d_in": 96, "d_sae": 192, "k": 8}


def _topk_sae(d_in: int = 12, d_sae: int = 40):
    sae_cls, cfg_cls = get_sae_training_class("topk")
    return sae_cls(cfg_cls(d_in=d_in, d_sae=d_sae, k=4, rescale_acts_by_decoder_norm=False))


def test_each_architecture_gets_its_measured_recipe_and_set_fields_win(tiny_run_dict):
    assert recipe_for("topk") == recipe_for("topk_sparse") == recipe_for("batchtopk") == PLAIN_TOPK_RECIPE
    assert recipe_for("tide") == recipe_for("jumprelu") == DIT_RECIPE
    assert DiTSAERunnerConfig.from_dict(tiny_run_dict).recipe == DIT_RECIPE
    topk = DiTSAERunnerConfig.from_dict({**tiny_run_dict, "sae": TOPK})
    assert topk.recipe == PLAIN_TOPK_RECIPE
    mixed = DiTSAERunnerConfig.from_dict({**tiny_run_dict, "sae": TOPK, "b_dec_init": "zeros", "decoder_norm": "sae"})
    assert (mixed.recipe.b_dec_init, mixed.recipe.decoder_norm) == ("zeros", "sae")
    assert (mixed.recipe.input_scale, mixed.recipe.decoder_directions) == ("unit", "gaussian")
    assert mixed.to_dict()["input_scale"] is None  # saved as given: None still means "the architecture's"


def test_conflicting_or_unknown_recipe_fields_are_refused(tiny_run_dict):
    normalised = {**TOPK, "normalize_activations": "expected_average_only_in"}
    with pytest.raises(ValueError, match="input_scale: sae, or normalize_activations: none"):
        DiTSAERunnerConfig.from_dict({**tiny_run_dict, "sae": normalised})
    assert DiTSAERunnerConfig.from_dict({**tiny_run_dict, "sae": normalised, "input_scale": "sae"}).recipe
    with pytest.raises(ValueError, match="decoder_norm: expected one of 'sae', 'unit_rows' or null"):
        DiTSAERunnerConfig.from_dict({**tiny_run_dict, "decoder_norm": "rows"})
    transcoder = {"architecture": "tide_transcoder", "d_in": 96, "d_out": 96, "d_sae": 192, "k": 8}
    run = {**tiny_run_dict, "sae": transcoder, "hook_name": "blocks.1.mlp"}
    run["harvest"] = {**run["harvest"], "hook_names": ["blocks.1.mlp.hook_in", "blocks.1.mlp.hook_out"]}
    with pytest.raises(ValueError, match="not transcoders"):
        DiTSAERunnerConfig.from_dict({**run, "decoder_directions": "gaussian"})


def test_gaussian_directions_are_the_seeded_normal_draw_at_unit_norm():
    sae = _topk_sae()
    sae.cfg.rescale_acts_by_decoder_norm = True
    rows = torch.randn(300, 12) + 3.0
    torch.manual_seed(7)
    init_from_rows(sae, rows, "mean", directions="gaussian")
    torch.manual_seed(7)
    draw = torch.randn(40, 12)  # independent reference: the same draw by hand
    torch.testing.assert_close(sae.W_dec.data, draw / draw.norm(dim=1, keepdim=True), rtol=0, atol=1e-6)
    torch.testing.assert_close(sae.W_enc.data, sae.W_dec.data.T, rtol=0, atol=0)
    torch.testing.assert_close(sae.b_dec.data, rows.mean(0), rtol=0, atol=1e-5)


def test_unit_rows_hold_after_every_optimiser_step_until_removed():
    sae = _topk_sae()
    optimizer = torch.optim.Adam(sae.parameters(), lr=0.05)
    handle = hold_unit_decoder_rows(optimizer, sae)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(40), rtol=0, atol=1e-6)  # also at once
    for _ in range(3):
        x = torch.randn(64, 12)
        loss = (sae.decode(sae.encode(x)) - x).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(40), rtol=0, atol=1e-6)
    handle.remove()
    x = torch.randn(64, 12)
    (sae.decode(sae.encode(x)) - x).pow(2).sum().backward()
    optimizer.step()
    assert (sae.W_dec.norm(dim=1) - 1).abs().max() > 1e-3  # without the hook Adam moves the norms


def test_topk_run_starts_and_trains_on_the_plain_recipe(tiny_run_dict):
    cfg = DiTSAERunnerConfig.from_dict({**tiny_run_dict, "sae": TOPK, "init_rows": 500})
    runner = DiTSAETrainingRunner(cfg)
    sae_lens_start = runner.sae.W_dec.data.clone()
    factor = runner._init_from_data()
    # independent reference: the same harvest's first 500 rows, centred on their mean, at mean norm 1
    rows = torch.cat(
        [c.activations[cfg.hook_name] for c in harvest_chunks(runner.pipe, runner.hooked, cfg.harvest, progress=False)]
    ).float()[:500]
    expected = 1.0 / float((rows - rows.mean(0)).norm(dim=-1).mean())
    assert factor == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(runner.sae.b_dec.data, rows.mean(0) * expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(runner.sae.W_dec.norm(dim=-1), torch.ones(192), rtol=0, atol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(runner.sae.W_dec.data, sae_lens_start, dim=-1)
    assert cosine.abs().max() < 0.9  # redrawn, not SAELens's rows rescaled

    DiTSAETrainingRunner(DiTSAERunnerConfig.from_dict({**cfg.to_dict(), "init_rows": 500})).run()
    out = Path(cfg.output_dir)
    saved = load_file(str(out / "sae_weights.safetensors"))
    # SAELens folds the input factor into the saved weights (W_dec / factor): every row at one norm shows the
    # rows were held at unit norm through the last step; the saved SAE reads raw activations.
    norms = saved["W_dec"].norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, norms.mean().item()), rtol=1e-4, atol=0)
    assert json.loads((out / "cfg.json").read_text())["normalize_activations"] == "none"
    # 30 steps: well above b_dec alone (0) and far from a wrongly folded factor (negative)
    assert json.loads((out / "eval.json").read_text())["reports"][0]["mean_explained_variance"] > 0.2
