"""The evaluation protocol on a transcoder (reads `blocks.2.mlp.hook_in`, writes `blocks.2.mlp.hook_out`), digits DiT.

A transcoder replaces the MLP, so its reconstruction is scored against the MLP's output and the denoising loss
it recovers is measured against the MLP zero- and mean-ablated. References: plain torch hooks on the block's
feed-forward module (its input and output, and its output replaced by zeros), and the transcoder called by
hand on the captured input. Tolerances: 1e-6 relative where the same float ops run in another order.
"""

import pytest
import torch
from sae_lens.saes.sae import SAEMetadata

from sae_lens_dit.analysis.evals import EvalConfig, evaluate, heldout_pass, heldout_reconstruction, spliced_denoising
from sae_lens_dit.analysis.evals.reconstruction import reconstruct
from sae_lens_dit.hooking.hooked import HookedDiT
from sae_lens_dit.saes import TideTranscoder, TideTranscoderConfig
from sae_lens_dit.toy.backbones import load_tiny_dit
from sae_lens_dit.toy.image_sets import training_split

READ, WRITE = "blocks.2.mlp.hook_in", "blocks.2.mlp.hook_out"


def _transcoder(zero_decoder: bool = False, block: int = 2, skip: bool = False, knots: int = 0) -> TideTranscoder:
    cfg = TideTranscoderConfig(
        d_in=96,
        d_out=96,
        d_sae=384,
        k=8,
        skip=skip,
        skip_timestep_knots=knots,
        rescale_acts_by_decoder_norm=False,
        normalize_activations="none",
        timestep_embed_dim=16,
        timestep_hidden_dim=8,
        timestep_decoder_bias=not zero_decoder,  # the zero one writes exactly zero at every timestep
        metadata=SAEMetadata(
            hook_name=f"blocks.{block}.mlp.hook_in", hook_name_out=f"blocks.{block}.mlp.hook_out", model_name="digits"
        ),
    )
    torch.manual_seed(4)
    tc = TideTranscoder(cfg).eval()
    with torch.no_grad():
        for parameter in tc.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.1)
        if zero_decoder:
            for name, parameter in tc.named_parameters():
                if "dec" in name:
                    parameter.zero_()
    return tc


@pytest.fixture(scope="module")
def setup():
    pipe = load_tiny_dit("digits")
    hooked = HookedDiT(pipe.transformer)
    held = training_split("digits")[1].take(6)
    return pipe, hooked, heldout_pass(pipe, hooked, READ, held, (0.0, 500.0, 1000.0), 5, 64, hook_name_out=WRITE)


def _run(pipe, hp, replace_output=None):
    """(ff inputs, ff outputs, losses) of the unhooked model on the pass's rows, the ff output optionally replaced."""
    ff = pipe.transformer.transformer_blocks[2].ff
    seen = {"in": [], "out": []}
    pre = ff.register_forward_pre_hook(lambda m, args: seen["in"].append(args[0]))
    post = ff.register_forward_hook(lambda m, args, out: seen["out"].append(out) or replace_output)
    try:
        with torch.no_grad():
            labels = hp.conditioning(torch.arange(len(hp.timestep)))["class_labels"]
            pred = pipe.transformer(hp.noisy, timestep=hp.timestep, class_labels=labels).sample
    finally:
        pre.remove(), post.remove()
    loss = (pred[:, : hp.noise.shape[1]] - hp.noise).pow(2).flatten(1).mean(1)
    return seen["in"][0], seen["out"][0], loss


def test_the_pass_records_the_mlps_input_and_output_and_ablates_the_output(setup):
    pipe, _, hp = setup
    x_in, y_out, clean = _run(pipe, hp)
    assert torch.equal(hp.activation, x_in) and torch.equal(hp.activation_out, y_out)
    torch.testing.assert_close(hp.loss_clean, clean, rtol=1e-6, atol=1e-8)
    _, _, zeroed = _run(pipe, hp, replace_output=torch.zeros_like(y_out))
    torch.testing.assert_close(hp.loss_zero, zeroed, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("skip", "knots"), [(False, 0), (True, 0), (True, 3)])
def test_reconstruction_is_scored_against_the_mlp_output(setup, skip, knots):
    """Against the transcoder's own forward (what splicing writes), skip term included (timestep-dependent with
    knots): the protocol once scored a skip transcoder without it (explained variance -0.66 for 0.99)."""
    _, _, hp = setup
    tc = _transcoder(skip=skip, knots=knots)
    report = heldout_reconstruction(tc, hp)
    b, br, mask = next(iter(hp.groups()))
    x = hp.activation[mask].flatten(0, 1)
    t = hp.timestep[mask].repeat_interleave(hp.activation.shape[1]).float()
    with torch.no_grad():
        y_hat = tc(x, timestep=t).double()
    torch.testing.assert_close(reconstruct(tc, x, t)[0].double(), y_hat, rtol=0, atol=1e-5)
    y = hp.activation_out[mask].flatten(0, 1).double()
    assert report[0]["mse"] == pytest.approx(float((y - y_hat).pow(2).mean()), rel=1e-6)
    assert report[0]["mse"] != pytest.approx(float((x.double() - y_hat).pow(2).mean()), rel=1e-3)


def test_a_transcoder_that_writes_zeros_recovers_nothing_against_zero_ablation(setup):
    _, hooked, hp = setup
    rows = spliced_denoising(_transcoder(zero_decoder=True), hooked, hp, batch_size=64)
    for row in rows:
        assert row["loss_spliced"] == pytest.approx(row["loss_zero_ablated"], rel=1e-6)
        assert row["recovered_vs_zero"] == pytest.approx(0.0, abs=1e-5)


def test_several_transcoders_replace_their_mlps_at_once(setup):
    pipe, hooked, hp = setup
    both = [_transcoder(zero_decoder=True, block=1), _transcoder(zero_decoder=True, block=2)]
    spliced = spliced_denoising(both, hooked, hp, batch_size=64)
    blocks = pipe.transformer.transformer_blocks
    handles = [blocks[i].ff.register_forward_hook(lambda m, a, out: torch.zeros_like(out)) for i in (1, 2)]
    try:
        with torch.no_grad():
            labels = hp.conditioning(torch.arange(len(hp.timestep)))["class_labels"]
            pred = pipe.transformer(hp.noisy, timestep=hp.timestep, class_labels=labels).sample
    finally:
        for handle in handles:
            handle.remove()
    by_hand = (pred[:, : hp.noise.shape[1]] - hp.noise).pow(2).flatten(1).mean(1)  # both MLPs write zeros
    for (_, _, mask), row in zip(hp.groups(), spliced, strict=True):
        assert row["loss_spliced"] == pytest.approx(float(by_hand[mask].mean()), rel=1e-5)


def test_evaluate_reports_both_hooks():
    cfg = EvalConfig(num_images=4, num_samples=0, factors=False, edges=(0.0, 500.0, 1000.0), batch_size=64)
    report = evaluate([_transcoder()], cfg)[0]
    assert (report["hook"], report["hook_out"]) == (READ, WRITE)
    assert report["sae"] == "blocks.2.mlp/tide_transcoder"  # the sublayer, as the runner's eval.json names it
    assert {row["branch"] for row in report["denoising"]} == {"cond", "uncond"}
