"""`sae_lens_dit.analysis.interventions.selection` against independent hand computations.

What is checked against what:
- `select_latents` scores (every latent's `all_scores`, the chosen latents, their `score`, `bucket_score` and
  `typical`) against a hand computation from the SAE's own `encode` on fresh random rows with planted
  directions: per timestep bucket, each group's (image's, or (image, inside/outside)'s) mean code, then the
  mean over target groups minus the mean over rest groups (mean_diff) or the pairwise Mann-Whitney
  statistic with ties counted half (auroc), averaged over the buckets that hold rows; `typical` against
  `torch.quantile` of the non-zero codes on the target (gated) rows; `avoid` against a hand computation of
  each latent's best score for the avoided factor, on a planted latent that must be excluded.
- `latents_for_bucket` against the pooled per-bucket mean codes; `encode_rows` against `sae.encode` with
  each row's timestep; `record_samples` / `record_noised` against plain torch forward hooks on the
  transformer block, with the pipeline's own seeding and the scheduler's alphas_cumprod by hand.
- `LatentSelection` JSON round trip (equality, NaN kept) and refusal of unknown keys.

Tolerances: scores and typical values are float64 over float32 codes: atol 1e-9 where the codes are the
same float32 encode of the same rows, 1e-6 where the SAE is a TIDE SAE, 1e-5 on codes of rows encoded in
other batches (float32 matmuls of other shapes); activations recorded vs. captured by hand: torch.equal
(same forward), 1e-5 where the noising is recomputed by hand.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from torch import Tensor

from sae_lens_dit import HookedDiT, TideSAE
from sae_lens_dit.analysis.interventions.regions import region_mask
from sae_lens_dit.analysis.interventions.selection import (
    LatentSelection,
    encode_rows,
    latents_for_bucket,
    record_contrast,
    record_noised,
    record_samples,
    select_latents,
)
from sae_lens_dit.analysis.interventions.windows import resolve_window

HOOK = "blocks.0.hook_resid_post"
D, D_SAE = 8, 32
EDGES = (0.0, 200.0, 400.0, 600.0, 800.0, 1000.0)
TIMES = (100.0, 300.0, 700.0, 900.0)  # bucket 2 (400-600) never gets a row


def _rows(n_images: int, seed: int, keep: float = 0.7) -> dict[str, Tensor]:
    """Random rows of `n_images` images x 16 tokens x TIMES; a random `keep` share of them, so groups differ in size
    (a pooled mean and a mean of group means then differ)."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.arange(n_images).repeat_interleave(16 * len(TIMES))
    timestep = torch.tensor(TIMES).repeat_interleave(16).repeat(n_images)
    token = torch.arange(16).repeat(n_images * len(TIMES))
    x = torch.randn(len(image), D, generator=generator)
    kept = torch.rand(len(image), generator=generator) < keep
    return {"activation": x[kept], "timestep": timestep[kept], "token": token[kept], "image": image[kept]}


def _plant(sae: SAE, rows: dict[str, Tensor], latent: int, where: Tensor, strength: float = 3.0) -> None:
    """Make `latent` the one that reads a direction: triple its encoder row's norm, then add `strength` x its unit
    encoder direction to the rows `where` (it then gains 3x more there than any latent of a random SAE)."""
    with torch.no_grad():
        sae.W_enc[:, latent] *= 3.0
    direction = sae.W_enc[:, latent].detach()
    rows["activation"][where] += strength * direction / direction.norm()


def _codes(sae: SAE, rows: dict[str, Tensor]) -> Tensor:
    with torch.no_grad():
        if isinstance(sae, TideSAE):
            return sae.encode(rows["activation"], timestep=rows["timestep"]).double()
        return sae.encode(rows["activation"]).double()


def _bucket(timestep: Tensor) -> Tensor:
    return (timestep // 200).long().clamp_max(4)  # EDGES by hand (no row sits on an edge)


def _hand_scores(
    codes: Tensor, bucket: Tensor, group: Tensor, targets: list[int], rests: list[int], method: str
) -> Tensor:
    """[buckets, d_sae]: per bucket, the groups' mean codes contrasted target vs rest; nan where a side is empty."""
    out = torch.full((len(EDGES) - 1, codes.shape[1]), float("nan"), dtype=torch.float64)
    for b in range(len(EDGES) - 1):
        means = {
            g: codes[(group == g) & (bucket == b)].mean(0)
            for g in targets + rests
            if ((group == g) & (bucket == b)).any()
        }
        pos = [means[g] for g in targets if g in means]
        neg = [means[g] for g in rests if g in means]
        if not pos or not neg:
            continue
        pos, neg = torch.stack(pos), torch.stack(neg)
        if method == "mean_diff":
            out[b] = pos.mean(0) - neg.mean(0)
        else:  # Mann-Whitney: share of (target, rest) pairs where the target group is higher, ties half
            greater = (pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()
            out[b] = greater.mean((0, 1))
    return out


def _over_buckets(per_bucket: Tensor) -> Tensor:
    return per_bucket[~per_bucket.isnan().all(1)].mean(0)


def _ranked(score: Tensor, n: int, floor: float = 0.0) -> list[int]:
    return [i for i in sorted(range(len(score)), key=lambda i: -float(score[i])) if score[i] > floor][:n]


@pytest.mark.parametrize("kind", ["standard", "tide"])
@pytest.mark.parametrize("gated", [False, True], ids=["all-rows", "gated"])
@pytest.mark.parametrize("rest", ["others", "subset"])
def test_mean_diff_is_the_mean_of_image_means_per_bucket(make_sae, kind, gated, rest):
    sae = make_sae(kind)
    rows = _rows(10, seed=11)
    target_images = np.arange(10) < 4
    _plant(sae, rows, 11, torch.as_tensor(target_images)[rows["image"]])
    rest_images = None if rest == "others" else np.isin(np.arange(10), [5, 7, 8, 9])
    gate = torch.rand(len(rows["image"]), generator=torch.Generator().manual_seed(5)) < 0.5 if gated else None
    if gated:  # image 2 keeps no gated row at t=700: that group must drop out of bucket 3, not count as zero
        gate &= ~((rows["image"] == 2) & (rows["timestep"] == 700.0))
    selection = select_latents(sae, rows, 5, target_images=target_images, rest_images=rest_images, gate=gate)

    keep = torch.ones(len(rows["image"]), dtype=torch.bool) if gate is None else gate
    codes = _codes(sae, rows)
    rests = [5, 7, 8, 9] if rest == "subset" else list(range(4, 10))
    per_bucket = _hand_scores(
        codes[keep], _bucket(rows["timestep"])[keep], rows["image"][keep], [0, 1, 2, 3], rests, "mean_diff"
    )
    expected = _over_buckets(per_bucket)
    tol = 1e-6 if kind == "tide" else 1e-9
    torch.testing.assert_close(selection.all_scores, expected, atol=tol, rtol=0)
    chosen = _ranked(expected, 5)
    assert list(selection.latents) == chosen and selection.latents[0] == 11
    np.testing.assert_allclose(selection.score, expected[chosen].numpy(), atol=tol, rtol=0)
    assert all(math.isnan(v) for v in selection.bucket_score[2])  # no row in 400-600
    for b in (0, 1, 3, 4):
        np.testing.assert_allclose(selection.bucket_score[b], per_bucket[b, chosen].numpy(), atol=tol, rtol=0)
    on_target = torch.as_tensor(target_images)[rows["image"]] & keep
    typical = [float(torch.quantile(c[c > 0], 0.5)) for c in codes[on_target][:, chosen].T]
    np.testing.assert_allclose(selection.typical, typical, atol=tol, rtol=0)
    assert selection.hook == HOOK and selection.method == "mean_diff" and selection.edges == EDGES


def test_auroc_is_the_mann_whitney_statistic_with_ties_half(make_sae):
    sae = make_sae("standard")
    with torch.no_grad():
        sae.b_enc[0] = -100.0  # never fires: every group mean is 0, all pairs tie -> exactly 0.5
        sae.b_enc[1] = -2.5  # fires rarely: some groups' means are 0, tied across target and rest
    rows = _rows(12, seed=12)
    target_images = np.isin(np.arange(12), [0, 3, 4, 8, 10])
    _plant(sae, rows, 7, torch.as_tensor(target_images)[rows["image"]], strength=1.0)
    selection = select_latents(sae, rows, 32, target_images=target_images, method="auroc")

    codes = _codes(sae, rows)
    per_bucket = _hand_scores(
        codes, _bucket(rows["timestep"]), rows["image"], [0, 3, 4, 8, 10], [1, 2, 5, 6, 7, 9, 11], "auroc"
    )
    expected = _over_buckets(per_bucket)
    torch.testing.assert_close(selection.all_scores, expected, atol=1e-9, rtol=0)
    assert float(expected[0]) == 0.5 and 0.5 not in (float(s) for s in selection.score)
    group_means = torch.stack([codes[(rows["image"] == i) & (rows["timestep"] == 100.0), 1].mean() for i in range(12)])
    assert (group_means == 0).sum() >= 2 and 0 < float(expected[1]) < 1  # the tie path is exercised
    assert list(selection.latents) == _ranked(expected, 32, floor=0.5) and selection.method == "auroc"
    assert float(expected[7]) > 0.9  # the planted latent separates the images


def test_target_rows_contrast_inside_and_outside_of_each_image(make_sae):
    sae = make_sae("standard")
    rows = _rows(6, seed=13)
    inside = region_mask((4, 4), box=(0.0, 0.0, 0.5, 0.5))[rows["token"]]  # what replaced latents_for_region
    assert torch.equal(inside, (rows["token"] % 4 < 2) & (rows["token"] < 8))  # the top-left 2 x 2 tokens
    _plant(sae, rows, 20, inside)
    selection = select_latents(sae, rows, 3, target_rows=inside.numpy(), buckets=[0, 3])

    codes = _codes(sae, rows)
    group = rows["image"] * 2 + inside.long()
    per_bucket = _hand_scores(
        codes, _bucket(rows["timestep"]), group, [1, 3, 5, 7, 9, 11], [0, 2, 4, 6, 8, 10], "mean_diff"
    )
    expected = per_bucket[[0, 3]].mean(0)  # only the buckets asked for
    torch.testing.assert_close(selection.all_scores, expected, atol=1e-9, rtol=0)
    assert list(selection.latents) == _ranked(expected, 3) and selection.latents[0] == 20
    typical = [float(torch.quantile(c[c > 0], 0.5)) for c in codes[inside][:, list(selection.latents)].T]
    np.testing.assert_allclose(selection.typical, typical, atol=1e-9, rtol=0)

    one_image = {k: v for k, v in rows.items() if k != "image"}  # no image column: all rows are one image
    alone = select_latents(sae, one_image, 3, target_rows=inside)
    pooled = _over_buckets(_hand_scores(codes, _bucket(rows["timestep"]), inside.long(), [1], [0], "mean_diff"))
    torch.testing.assert_close(alone.all_scores, pooled, atol=1e-9, rtol=0)


def _two_axis_sae() -> SAE:
    """A ReLU SAE whose latent 3 reads x[0] and latent 4 reads x[1] alone; no other latent reads x[0] or x[1]."""
    sae = StandardSAE(StandardSAEConfig(d_in=D, d_sae=D_SAE, metadata=SAEMetadata(hook_name=HOOK)))
    with torch.no_grad():
        w = torch.randn(D_SAE, D, generator=torch.Generator().manual_seed(4))
        w[:, :2] = 0.0
        w[3], w[4] = torch.eye(D)[0], torch.eye(D)[1]
        sae.W_dec.copy_(w)
        sae.W_enc.copy_(w.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_avoid_excludes_a_latent_more_selective_for_the_kept_factor():
    sae = _two_axis_sae()
    rows = _rows(8, seed=14)
    rows["activation"] *= 0.3
    hue = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    shape = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    rows["activation"][:, 0] += 2.0 * torch.as_tensor(hue == 0)[rows["image"]]  # latent 3: the hue
    rows["activation"][:, 1] += 4.0 * torch.as_tensor(shape == 0)[rows["image"]]  # latent 4: the shape, 3/4 on target
    selection = select_latents(sae, rows, 2, target_images=hue == 0, avoid={"shape": shape})

    codes, bucket = _codes(sae, rows), _bucket(rows["timestep"])
    target = _over_buckets(_hand_scores(codes, bucket, rows["image"], [0, 1, 2, 3], [4, 5, 6, 7], "mean_diff"))
    by_shape = []  # per value of the kept factor: that value's images against the others
    for value in (0, 1):
        same, other = [i for i in range(8) if shape[i] == value], [i for i in range(8) if shape[i] != value]
        by_shape.append(_over_buckets(_hand_scores(codes, bucket, rows["image"], same, other, "mean_diff")))
    blocked = torch.maximum(*by_shape) >= target
    ranked = _ranked(target, D_SAE)
    assert ranked[:2] == [3, 4] or ranked[:2] == [4, 3]  # without avoid, both planted latents are chosen
    assert selection.excluded == tuple(i for i in ranked[:2] if blocked[i]) == (4,)
    assert list(selection.latents) == [i for i in ranked if not blocked[i]][:2] and selection.latents[0] == 3
    assert 4 not in selection.latents
    torch.testing.assert_close(selection.all_scores, target, atol=1e-9, rtol=0)


def test_typical_follows_the_percentile(make_sae):
    sae = make_sae("standard")
    rows = _rows(6, seed=15)
    target_images = np.arange(6) < 3
    _plant(sae, rows, 9, torch.as_tensor(target_images)[rows["image"]])
    gate = rows["token"] < 10
    selection = select_latents(sae, rows, 4, target_images=target_images, gate=gate, percentile=90.0)
    on_target = torch.as_tensor(target_images)[rows["image"]] & gate
    codes = _codes(sae, rows)[on_target][:, list(selection.latents)]
    expected = [float(torch.quantile(c[c > 0], 0.9)) for c in codes.T]
    np.testing.assert_allclose(selection.typical, expected, atol=1e-9, rtol=0)
    assert len(selection.latents) == 4


def test_select_latents_errors_are_clear(make_sae):
    sae = make_sae("standard")
    rows = _rows(10, seed=16)
    target = np.arange(10) < 5
    cases = [
        ({"target_images": target, "target_rows": np.ones(len(rows["image"]), bool)}, "takes one of target_images"),
        ({}, "takes one of target_images"),
        ({"target_images": np.ones(10, bool)}, "needs target and rest groups, received 10 target and 0 rest"),
        ({"target_images": target, "rest_images": target}, "received 5 target and 0 rest"),
        ({"target_rows": np.ones(5, bool)}, f"target_rows has 5 entries for {len(rows['image'])} rows"),
        ({"target_images": target[:3]}, "target_images has 3 entries but rows come from 10 images"),
        ({"target_images": target, "method": "gini"}, "method must be one of ['mean_diff', 'auroc']"),
        ({"target_images": target, "buckets": [2]}, "no timestep bucket holds both target and rest rows"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            select_latents(sae, rows, 3, **kwargs)
    no_image = {k: v for k, v in rows.items() if k != "image"}
    with pytest.raises(ValueError, match=re.escape("needs rows with an `image` column")):
        select_latents(sae, no_image, 3, target_images=target)


def test_latents_for_bucket_is_the_bucket_mean_minus_the_other_buckets(make_sae):
    sae = make_sae("standard")
    rows = _rows(5, seed=17)
    late = rows["timestep"] == 900.0
    _plant(sae, rows, 5, late)
    selection = latents_for_bucket(sae, rows, bucket=4, n=3, edges=EDGES)

    codes = _codes(sae, rows)
    means = {t: codes[rows["timestep"] == t].mean(0) for t in TIMES}  # pooled over images and tokens
    expected = means[900.0] - torch.stack([means[100.0], means[300.0], means[700.0]]).mean(0)
    torch.testing.assert_close(selection.all_scores, expected, atol=1e-9, rtol=0)
    assert list(selection.latents) == _ranked(expected, 3) and selection.latents[0] == 5
    typical = [float(torch.quantile(c[c > 0], 0.5)) for c in codes[late][:, list(selection.latents)].T]
    np.testing.assert_allclose(selection.typical, typical, atol=1e-9, rtol=0)
    # per bucket: the same score computed for that bucket (its mean minus the other buckets'), nan where empty
    for b, t in zip((0, 1, 3, 4), TIMES, strict=True):
        others = torch.stack([means[o] for o in TIMES if o != t]).mean(0)
        np.testing.assert_allclose(
            selection.bucket_score[b], (means[t] - others)[list(selection.latents)].numpy(), atol=1e-9, rtol=0
        )
    assert all(math.isnan(v) for v in selection.bucket_score[2])
    assert resolve_window(selection, "auto") == (800.0, 1000.0)  # the window of a bucket selection is its bucket
    with pytest.raises(ValueError, match=re.escape("bucket must be in 0..4")):
        latents_for_bucket(sae, rows, bucket=5, n=3, edges=EDGES)
    with pytest.raises(ValueError, match=re.escape("needs rows in bucket 2 and in another bucket")):
        latents_for_bucket(sae, rows, bucket=2, n=3, edges=EDGES)


def test_encode_rows_gives_each_row_its_timestep(make_sae):
    sae = make_sae("tide")
    rows = _rows(3, seed=18)
    parts = list(encode_rows(sae, rows, batch_size=50))
    assert [p.start for p, _ in parts] == list(range(0, len(rows["image"]), 50))
    torch.testing.assert_close(torch.cat([c for _, c in parts]), _codes(sae, rows), atol=1e-5, rtol=0)


def test_selection_round_trips_through_json(make_sae, tmp_path):
    sae = make_sae("standard")
    rows = _rows(6, seed=19)
    _plant(sae, rows, 2, rows["image"] < 3)
    edges = (0.0, 500.0, 1000.0)  # every bucket holds rows: no nan, so the loaded selection compares equal
    selection = select_latents(sae, rows, 4, target_images=np.arange(6) < 3, edges=edges, avoid={"k": np.arange(6) % 2})
    selection = selection.with_window((0.0, 500.0), [0.8, 0.1])
    loaded = LatentSelection.load(selection.save(tmp_path / "selection.json"))
    assert loaded == selection and loaded.all_scores is None
    assert loaded.window == (0.0, 500.0) and loaded.commitment == (0.8, 0.1) and isinstance(loaded.latents, tuple)

    with_nan = LatentSelection(HOOK, (1,), (0.5,), (0.2,), ((0.2,), (float("nan"),)), edges=edges)
    again = LatentSelection.load(with_nan.save(tmp_path / "nan.json"))
    assert math.isnan(again.bucket_score[1][0]) and again.bucket_score[0] == (0.2,) and again.latents == (1,)

    (tmp_path / "bad.json").write_text('{"hook": "h", "latents": [1], "typical": [1.0], "score": [1.0], "gain": 2}')
    with pytest.raises(ValueError, match=r"bad\.json: .*unknown key 'gain'"):
        LatentSelection.load(tmp_path / "bad.json")


def _capture(module: torch.nn.Module, store: list[Tensor]):
    return module.register_forward_hook(lambda _m, _a, out: store.append(out.detach().clone()))


def test_record_samples_rows_match_forward_hooks_and_images(pipe):
    hooked = HookedDiT(pipe.transformer)
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    labels = [1, 2, 3]
    rows, images = record_samples(pipe, hooked, hooks, labels, seed=4, num_inference_steps=2, batch_size=2)
    single, single_images = record_samples(pipe, hooked, hooks[1], labels, seed=4, num_inference_steps=2, batch_size=2)

    stores: list[list[Tensor]] = [[], []]
    handles = [_capture(pipe.transformer.transformer_blocks[i], stores[i]) for i in (0, 1)]
    expected_images, expected_image = [], []
    try:
        for start in (0, 2):  # evals.sample_images's seeding: one generator per batch
            batch = labels[start : start + 2]
            generator = torch.Generator().manual_seed(4 * 100_003 + start)
            expected_images.append(
                pipe(class_labels=batch, num_inference_steps=2, generator=generator, output_type="np").images
            )
            expected_image += [(start + torch.arange(len(batch))).repeat_interleave(16)] * 2  # 2 calls per run
    finally:
        for handle in handles:
            handle.remove()
    np.testing.assert_array_equal(images, np.concatenate(expected_images))
    np.testing.assert_array_equal(single_images, images)
    for i, hook in enumerate(hooks):
        cond = [out[: len(out) // 2].reshape(-1, D) for out in stores[i]]  # CFG-doubled calls, cond rows first
        assert torch.equal(rows[hook]["activation"], torch.cat(cond))
        assert torch.equal(rows[hook]["image"], torch.cat(expected_image))
        assert (rows[hook]["branch"] == 0).all()
    assert set(single) >= {"activation", "image"} and torch.equal(single["activation"], rows[hooks[1]]["activation"])


def test_record_noised_rows_match_a_hand_noising(pipe):
    hooked = HookedDiT(pipe.transformer)
    images = torch.rand(3, 4, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    labels = torch.tensor([1, 5, 7])
    rows = record_noised(pipe, hooked, HOOK, images, seed=3, edges=(0, 500, 1000), batch_size=2, class_labels=labels)

    generator = torch.Generator().manual_seed(3)
    raw = torch.tensor([250, 750])
    alphas = pipe.scheduler.alphas_cumprod
    store: list[Tensor] = []
    expected_image, expected_t = [], []
    handle = _capture(pipe.transformer.transformer_blocks[0], store)
    try:
        with torch.no_grad():
            for start in (0, 2):
                x0 = images[start : start + 2]
                n = len(x0)
                noise = torch.randn((2, n, 4, 8, 8), generator=generator)
                noisy = torch.cat(
                    [alphas[t].sqrt() * x0 + (1 - alphas[t]).sqrt() * noise[k] for k, t in enumerate(raw.tolist())]
                )
                pipe.transformer(
                    noisy, timestep=raw.repeat_interleave(n), class_labels=labels[start : start + 2].repeat(2)
                )
                expected_image.append((start + torch.arange(n)).repeat(2).repeat_interleave(16))
                expected_t.append(raw.float().repeat_interleave(n * 16))
    finally:
        handle.remove()
    torch.testing.assert_close(rows["activation"], torch.cat([out.reshape(-1, D) for out in store]), atol=1e-5, rtol=0)
    assert torch.equal(rows["image"], torch.cat(expected_image))
    assert torch.equal(rows["timestep"], torch.cat(expected_t))
    assert torch.equal(rows["token"], torch.arange(16).repeat(2 * 3))


def test_record_contrast_of_two_class_sets_is_record_samples_with_a_target_mask(pipe):
    hooked = HookedDiT(pipe.transformer)
    rows, images, target = record_contrast(
        pipe, hooked, HOOK, target=[3], rest=[5, 6], per_condition=2, seed=9, num_inference_steps=2, batch_size=3
    )
    expected_rows, expected_images = record_samples(
        pipe, hooked, HOOK, [3, 3, 5, 5, 6, 6], seed=9, num_inference_steps=2, batch_size=3
    )
    np.testing.assert_array_equal(images, expected_images)
    assert torch.equal(rows["activation"], expected_rows["activation"])
    assert target.tolist() == [True, True, False, False, False, False]


def test_record_contrast_of_two_prompt_sets_asks_the_pipeline_for_those_prompts():
    from sae_lens_dit.toy.random_unet import random_sd_pipeline

    pipe = random_sd_pipeline("sd")
    pipe.set_progress_bar_config(disable=True)
    asked: list[list[str]] = []
    encode = pipe.encode_prompt

    def spy(prompt, *args, **kwargs):
        asked.append(list(prompt))
        return encode(prompt, *args, **kwargs)

    pipe.encode_prompt = spy
    hooked = HookedDiT.from_pipeline(pipe)
    hook = next(name for name in hooked.hook_names if name.endswith("hook_resid_post"))
    rows, images, target = record_contrast(
        pipe, hooked, hook, ["a red square"], ["a blue circle"], per_condition=2, seed=1, num_inference_steps=2
    )
    assert asked == [["a red square", "a red square", "a blue circle", "a blue circle"]]
    assert target.tolist() == [True, True, False, False] and len(images) == 4
    assert sorted(rows["image"].unique().tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="both class ids or both prompts"):
        record_contrast(pipe, hooked, hook, ["a red square"], [3], per_condition=1, seed=1)
