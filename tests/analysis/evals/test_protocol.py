"""The evaluation protocol on the bundled digits DiT: every metric against a hand computation or the
unhooked model, with a perfect SAE (identity through ReLU) and an all-zero SAE as the two ends."""

import json

import numpy as np
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig

from sae_lens_dit.analysis.evals import (
    BRANCH_NAMES,
    heldout_pass,
    heldout_reconstruction,
    interpretability_by_bucket,
    sample_images,
    spliced_denoising,
    spliced_generation,
)
from sae_lens_dit.cli import main
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.toy.backbones import load_tiny_classifier, load_tiny_dit
from sae_lens_dit.toy.image_sets import training_split

HOOK = "blocks.1.hook_resid_post"


def relu_sae(perfect: bool) -> StandardSAE:
    """d_sae = 2 d_in: latents ReLU(x) and ReLU(-x), decoded back to x (perfect) or to zero."""
    sae = StandardSAE(StandardSAEConfig(d_in=96, d_sae=192))
    sae.cfg.metadata.hook_name, sae.cfg.metadata.model_name = HOOK, "digits"
    eye = torch.eye(96)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0) if perfect else torch.zeros(192, 96))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


@pytest.fixture(scope="module")
def setup():
    pipe = load_tiny_dit("digits")
    hooked = HookedDiT(pipe.transformer)
    held = training_split("digits")[1].take(12)
    return pipe, hooked, heldout_pass(pipe, hooked, HOOK, held, seed=3, batch_size=64)


def test_heldout_pass_layout_and_clean_loss_equal_the_unhooked_model(setup):
    pipe, _, hp = setup
    class_labels = hp.conditioning(torch.arange(len(hp.timestep)))["class_labels"]
    n_buckets = len(hp.edges) - 1
    assert len(hp.timestep) == n_buckets * len(BRANCH_NAMES) * 12
    for b, br, mask in hp.groups():
        t = hp.timestep[mask]
        assert ((t >= hp.edges[b]) & (t <= hp.edges[b + 1])).all()
        assert (class_labels[mask] == 1000).all() == (br == 1)
    with torch.no_grad():
        pred = pipe.transformer(hp.noisy, timestep=hp.timestep, class_labels=class_labels).sample
    expected = (pred - hp.noise).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(hp.loss_clean, expected, rtol=1e-5, atol=1e-7)
    assert hp.activation.shape == (len(hp.timestep), 64, 96)


def test_mean_ablation_equals_a_plain_torch_hook(setup):
    pipe, _, hp = setup
    b, br, mask = next(iter(hp.groups()))
    mean = hp.activation[mask].mean(0)
    handle = pipe.transformer.transformer_blocks[1].register_forward_hook(lambda m, i, o: mean.expand_as(o))
    try:
        with torch.no_grad():
            labels = hp.conditioning(mask.nonzero().squeeze(1))["class_labels"]
            pred = pipe.transformer(hp.noisy[mask], timestep=hp.timestep[mask], class_labels=labels)
    finally:
        handle.remove()
    expected = (pred.sample - hp.noise[mask]).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(hp.loss_mean[mask], expected, rtol=1e-5, atol=1e-7)
    assert (hp.loss_zero > hp.loss_clean).float().mean() > 0.9  # ablating a block hurts


def test_perfect_sae_explains_everything_and_recovers_the_whole_loss(setup):
    _, hooked, hp = setup
    sae = relu_sae(perfect=True)
    for row in heldout_reconstruction(sae, hp):
        assert row["explained_variance"] == pytest.approx(1.0, abs=1e-5)
        assert row["cosine"] == pytest.approx(1.0, abs=1e-5)
    for row in spliced_denoising(sae, hooked, hp):
        assert row["loss_spliced"] == pytest.approx(row["loss_clean"], rel=1e-4)
        assert row["recovered_vs_zero"] == pytest.approx(1.0, abs=1e-3)
        assert row["recovered_vs_mean"] == pytest.approx(1.0, abs=1e-3)


def test_zero_sae_scores_as_the_zero_ablation(setup):
    _, hooked, hp = setup
    for row in spliced_denoising(relu_sae(perfect=False), hooked, hp):
        assert row["loss_spliced"] == pytest.approx(row["loss_zero_ablated"], rel=1e-5)
        assert row["recovered_vs_zero"] == pytest.approx(0.0, abs=1e-4)


def test_spliced_generation_of_a_perfect_sae_does_not_drift(setup):
    pipe, hooked, _ = setup
    labels = list(range(10)) * 2
    clean = sample_images(pipe, labels, seed=0, num_inference_steps=4)
    reference = sample_images(pipe, labels, seed=1, num_inference_steps=4)
    drift = spliced_generation(
        relu_sae(perfect=True),
        pipe,
        hooked,
        labels,
        clean,
        reference,
        load_tiny_classifier("digits"),
        num_inference_steps=4,
    )
    assert drift.pixel_mse < 1e-9
    assert drift.classifier_agreement == 1.0
    assert drift.frechet_distance < 1e-3 * drift.frechet_floor
    zero = spliced_generation(
        relu_sae(perfect=False),
        pipe,
        hooked,
        labels,
        clean,
        reference,
        load_tiny_classifier("digits"),
        num_inference_steps=4,
    )
    assert zero.pixel_mse > 100 * max(drift.pixel_mse, 1e-12)


def test_factor_scores_on_shapes_cover_every_family():
    pipe = load_tiny_dit("shapes")
    hooked = HookedDiT(pipe.transformer)
    held = training_split("shapes")[1].take(48)
    hp = heldout_pass(pipe, hooked, HOOK, held, edges=(0.0, 500.0, 1000.0))
    sae = StandardSAE(StandardSAEConfig(d_in=96, d_sae=128))
    buckets = interpretability_by_bucket(sae, hp)
    assert [b["t_low"] for b in buckets] == [0.0, 500.0]
    for kind in ("sae", "neurons", "rotation"):
        assert set(buckets[0]["factors"][kind]) == {"class", "colour", "size", "x", "y"}
    scores = [v["best_auroc"] for fam in buckets[0]["factors"]["neurons"].values() for v in fam.values()]
    assert all(0.5 <= s <= 1.0 for s in scores)


def test_cli_eval_on_a_bundled_release(tmp_path):
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--release",
            "tide-dit-tiny/digits",
            "--sae-id",
            f"{HOOK}/tide",
            "--output-dir",
            str(out),
            "--num-images",
            "16",
            "--num-samples",
            "10",
            "--num-inference-steps",
            "4",
            "--no-factors",
        ]
    )
    assert code == 0
    result = json.loads((out / "eval.json").read_text())
    (report,) = result["reports"]
    assert report["architecture"] == "tide" and report["hook"] == HOOK
    ev = [row["explained_variance"] for row in report["reconstruction"]]
    assert len(ev) == 10 and min(ev) > 0.8  # the release card reports 0.97 on average
    assert 0.0 <= report["generation"]["classifier_agreement"] <= 1.0
    assert sum(report["timestep_profile"].values()) == 1536
    assert np.array(report["latent_stats"]["frequency"]).shape == (5, 1536)
    assert {p.name for p in out.glob("*.png")} == {"explained_variance.png", "cosine.png", "loss_recovered.png"}


def test_cli_eval_refuses_a_folder_that_is_not_an_sae(tmp_path, capsys):
    assert main(["eval", "--sae", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == 2
    assert "no cfg.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
