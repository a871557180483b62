"""Every family the adapter schema hooks exactly, each on a tiny random config (see conftest.py).

Four claims per class, each against a reference that does not read `adapters/*.yaml`:
- exact: every hook HookedDiT lists equals (torch.equal) what a plain torch hook on the same
  module captures (`hook_update`: the block's image output minus its input, wherever the two have one
  shape), and caching every hook leaves the model output bit-identical;
- image tokens only: zeroing an image-token hook changes the block's image stream and leaves its
  text stream (where the block has one) bit-identical;
- the timestep read inside a hook equals the scheduler's t on the [0, 1000] scale (1000 = noise)
  when the transformer is called with what the family's pipeline passes for that step;
- CFG: a batch doubled as the pipelines double it is labelled [uncond | cond] ([cond | uncond] for OmniGen) with
  shared sample indices; families whose pipelines make separate cond / uncond calls get them labelled per call;
  families without guidance get every row labelled cond.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from sae_lens_dit import HookedDiT
from sae_lens_dit.hooking.adapters import adapter_for


def _joint(stack: Any, x: Tensor) -> tuple[Tensor, Tensor]:
    """(image, rest) of a joint stream: [image | rest] for a stack whose image comes first, [text | image | rest]
    for one whose image starts at `image_start`, else [text | image]."""
    n = stack.joint_image_tokens
    if stack.sequence_first:  # [tokens, batch, d] as [batch, tokens, d]
        x = x.transpose(0, 1)
    if stack.image_start is not None:
        start = stack.image_start
        return x[:, start : start + n], torch.cat([x[:, :start], x[:, start + n :]], dim=1)
    return (x[:, :n], x[:, n:]) if stack.image_first else (x[:, x.shape[1] - n :], x[:, : x.shape[1] - n])


def _streams(stack: Any, output: Any) -> tuple[Tensor, Tensor | None]:
    if stack.image_index is None:
        return _joint(stack, output) if stack.joint_image_tokens else (output, None)  # one joint sequence, or image
    image = output[stack.image_index]  # an image stream, cut to its image span where it holds more
    text = output[stack.text_index] if stack.text_index is not None else None
    return (_joint(stack, image)[0] if stack.joint_image_tokens else image), text


def _optional_absent(block: nn.Module, attribute: str) -> bool:
    """Whether the block's submodule at `attribute` is None (a module some blocks of a stack have)."""
    parent, _, name = attribute.rpartition(".")
    return getattr(block.get_submodule(parent) if parent else block, name, None) is None


def _capture(family: Any, model: nn.Module, inputs: dict) -> dict[str, Tensor | None]:
    """Block inputs / outputs / submodule image tokens seen by independent torch hooks, by hook name."""
    seen: dict[str, Tensor | None] = {}
    handles = []
    for prefix, stack in family.stacks.items():
        for i, block in enumerate(model.get_submodule(stack.attribute)):

            def pre(module, args, kwargs, key=f"{prefix}.{i}", stack=stack):
                x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
                seen[f"{key}.hook_resid_pre"] = _joint(stack, x)[0] if stack.joint_image_tokens else x

            def post(module, args, output, key=f"{prefix}.{i}", stack=stack):
                image, text = _streams(stack, output)
                seen[f"{key}.hook_resid_post"] = image
                if image.shape == seen[f"{key}.hook_resid_pre"].shape:  # the update: output minus input
                    seen[f"{key}.hook_update"] = image - seen[f"{key}.hook_resid_pre"]
                if text is not None and stack.text:
                    seen[f"{key}.hook_txt_resid_post"] = text

            handles += [block.register_forward_pre_hook(pre, with_kwargs=True), block.register_forward_hook(post)]
            for suffix, (attribute, index, image_part) in stack.submodules.items():
                if _optional_absent(block, attribute):  # e.g. cross-attention on some blocks only
                    continue

                def sub(module, args, output, key=f"{prefix}.{i}.{suffix}.hook_out", index=index, part=image_part):
                    assert key not in seen, f"{key}: the module ran twice in one block call"
                    seen[key] = part(output if index is None else output[index])

                handles.append(block.get_submodule(attribute).register_forward_hook(sub))
                if suffix == "mlp":  # mlp.hook_in: the MLP's own (first) input, the same image tokens

                    def sub_in(module, args, kwargs, key=f"{prefix}.{i}.mlp.hook_in", part=image_part):
                        assert key not in seen, f"{key}: the module ran twice in one block call"
                        seen[key] = part(args[0] if args else next(iter(kwargs.values())))

                    handles.append(block.get_submodule(attribute).register_forward_pre_hook(sub_in, with_kwargs=True))
    try:
        family.run(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_the_adapter_is_chosen_from_the_class(family):
    model = family.make()
    assert adapter_for(model).name == family.adapter
    assert HookedDiT(model).spec.name == family.adapter


def test_every_hook_equals_an_independent_torch_hook(family):
    model = family.make()
    hooked = HookedDiT(model)
    inputs = family.inputs(2)
    reference = family.run(model, inputs)
    seen = _capture(family, model, inputs)
    with torch.no_grad():
        out, cache = hooked.run_with_cache(**inputs, return_dict=False)
    assert torch.equal(family.sample(out), reference)  # caching every hook changes nothing
    assert set(hooked.hook_names) == set(seen)
    for name in hooked.hook_names:
        assert cache[name].ndim == 3 and cache[name].shape[0] == 2, name  # [batch, tokens, d]
        assert torch.equal(cache[name], seen[name]), name
    assert [name for name, module in model.named_modules() if module._forward_hooks or module._forward_pre_hooks] == []


def _block_output(family: Any, hooked: HookedDiT, inputs: dict, prefix: str, index: int, hooks: list) -> tuple:
    """(image, text) streams block `index` of `prefix` returns, after HookedDiT's hooks edit them, and the
    model output."""
    stack = family.stacks[prefix]
    block = hooked.transformer.get_submodule(stack.attribute)[index]
    seen = {}
    with hooked.hooks(fwd_hooks=hooks):
        # Registered after HookedDiT's own torch hook, so it sees the output as the next block does.
        handle = block.register_forward_hook(lambda module, args, output: seen.update(out=_streams(stack, output)))
        try:
            out = family.run(hooked.transformer, inputs)
        finally:
            handle.remove()
    return (*seen["out"], out)


def test_zeroing_an_image_hook_leaves_the_text_stream_untouched(family):
    hooked = HookedDiT(family.make())
    inputs = family.inputs(2)
    for prefix, stack in family.stacks.items():
        last = len(hooked.transformer.get_submodule(stack.attribute)) - 1
        for index in (0, last):
            clean_image, clean_text, clean_out = _block_output(family, hooked, inputs, prefix, index, [])
            names = [f"{prefix}.{index}.hook_resid_post"]
            names += [f"{prefix}.{index}.{suffix}.hook_out" for suffix in stack.submodules]
            names = [name for name in names if name in hooked.hook_dict]  # optional submodules some blocks lack
            for name in names:
                zero = [(name, lambda x, hook: torch.zeros_like(x))]
                image, text, out = _block_output(family, hooked, inputs, prefix, index, zero)
                assert not torch.equal(image, clean_image), name
                assert not torch.equal(out, clean_out), name
                if name.endswith("hook_resid_post"):
                    assert torch.equal(image, torch.zeros_like(image)), name
                if clean_text is not None:
                    assert torch.equal(text, clean_text), name


def _first_hook(family: Any) -> str:
    return f"{next(iter(family.stacks))}.0.hook_resid_post"  # blocks.0 (the noise refiner where only it is hooked)


def test_the_timestep_is_the_scheduler_step_on_the_ddpm_scale(family):
    hooked = HookedDiT(family.make())
    scheduler = family.scheduler()
    scheduler.set_timesteps(4)
    seen = []

    def read(x, hook):
        seen.append(hooked.call_context.timestep)

    for step in (0, 2):
        t = scheduler.timesteps[step]
        inputs = {**family.inputs(2), family.timestep_argument: family.pipeline_timestep(t, 2)}
        with torch.no_grad():
            hooked.run_with_hooks(**inputs, return_dict=False, fwd_hooks=[(_first_hook(family), read)])
        expected = torch.full((2,), float(t))
        assert 0.0 <= float(t) <= 1000.0
        assert torch.allclose(seen[-1], expected, rtol=0, atol=1e-3), (step, seen[-1], t)
    assert seen[0][0] > seen[1][0]  # 1000 = noise: the timestep falls as sampling proceeds


def test_cfg_branches_are_labelled_as_the_pipelines_lay_them_out(family):
    hooked = HookedDiT(family.make())
    name = _first_hook(family)
    inputs = family.inputs(2)
    latents = inputs[family.latents_argument]
    first_twice = latents[:1] * 2 if isinstance(latents, list) else torch.cat([latents[:1], latents[:1]])
    if family.cfg == "none":
        # No guidance: even two identical latents in one batch are two cond samples.
        same = {**inputs, family.latents_argument: first_twice}
        contexts = []
        hook = [(name, lambda x, hook: contexts.append(hooked.call_context))]
        with torch.no_grad():
            hooked.run_with_hooks(**same, return_dict=False, fwd_hooks=hook)
        assert contexts[0].branch.tolist() == [0, 0] and contexts[0].sample.tolist() == [0, 1]
    elif family.cfg == "equal_halves":
        # The pipeline's torch.cat([latents] * 2) with [negative | positive] text: same latents in both halves.
        doubled = {**inputs, family.latents_argument: first_twice}
        contexts = []
        for call in (doubled, inputs):
            hook = [(name, lambda x, hook: contexts.append(hooked.call_context))]
            with torch.no_grad():
                hooked.run_with_hooks(**call, return_dict=False, fwd_hooks=hook)
        expected = [0, 1] if family.cond_first else [1, 0]  # most pipelines put uncond first
        assert contexts[0].branch.tolist() == expected and contexts[0].sample.tolist() == [0, 0]
        assert contexts[1].branch.tolist() == [0, 0] and contexts[1].sample.tolist() == [0, 1]  # distinct latents
    else:
        # The pipeline's cond call, then its negative-prompt call, at the same timestep; two steps.
        with hooked.record([name], tokens_per_image=2) as rec, torch.no_grad():
            for t in (900.0, 900.0, 400.0, 400.0):
                timestep = torch.full((1,), t)
                hooked(**{**inputs, family.timestep_argument: family.pipeline_timestep(timestep, 2)}, return_dict=False)
        assert rec.branch.tolist() == [[0, 0], [1, 1], [0, 0], [1, 1]]
        assert rec.step.tolist() == [0, 0, 1, 1] and rec.sample_index.tolist() == [[0, 1]] * 4
        assert torch.allclose(rec.timesteps, torch.tensor([[900.0] * 2] * 2 + [[400.0] * 2] * 2), rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", ["wan", "ltx"])
def test_video_hooks_are_flat_frame_major_tokens(families, name):
    """Video families patchify [frames, height, width] into one token axis, frame-major: the hook's token
    count is frames * (height / p) * (width / p)."""
    family = families[name]
    hooked = HookedDiT(family.make())
    with torch.no_grad():
        _, cache = hooked.run_with_cache(**family.inputs(1), names_filter="blocks.0.hook_resid_post")
    assert cache["blocks.0.hook_resid_post"].shape[:2] == (1, 2 * 4 * 4)


def test_qwenimage_edit_reference_tokens_are_not_recorded_and_stay_untouched(families):
    """Qwen-Image-Edit joins the reference image's tokens after the generated image's in `hidden_states`, and
    img_shapes lists the generated grid first: the image hooks see the 16 generated tokens only, and replacing a
    hook's output leaves the reference positions of the block output exactly as they were."""
    family = families["qwenimage_edit"]
    hooked = HookedDiT(family.make())
    inputs = family.inputs(2)
    assert inputs["hidden_states"].shape[1] == 20 and hooked.read_call((), inputs).image_tokens == 16
    block = hooked.transformer.transformer_blocks[0]
    for name in ("blocks.0.hook_resid_post", "blocks.0.mlp.hook_out", "blocks.0.attn.hook_out"):
        outputs = []
        for hooks in ([], [(name, lambda x, hook: torch.zeros_like(x))]):
            with torch.no_grad(), hooked.hooks(fwd_hooks=hooks):  # registered after HookedDiT's: the edited output
                handle = block.register_forward_hook(lambda module, args, output, seen=outputs: seen.append(output[1]))
                try:
                    family.run(hooked.transformer, inputs)
                finally:
                    handle.remove()
        clean, edited = outputs
        assert torch.equal(edited[:, 16:], clean[:, 16:]), name  # the reference tokens
        assert not torch.equal(edited[:, :16], clean[:, :16]), name
    plain = families["qwenimage"]
    assert HookedDiT(plain.make()).read_call((), plain.inputs(1)).image_tokens == 16  # one entry: every token


def test_why_cogview4_and_sana_video_have_no_mlp_hook(families):
    """CogView4 runs its one `ff` twice per block (image, then text); Sana-Video's `ff` returns
    [batch, frames, height, width, d]. Neither is an image-token output the current schema can hook."""
    outputs: dict[str, list[Tensor]] = {"cogview4": [], "sana_video": []}
    for name, seen in outputs.items():
        family = families[name]
        model = family.make()
        handle = model.transformer_blocks[0].ff.register_forward_hook(lambda m, a, out, seen=seen: seen.append(out))
        try:
            family.run(model, family.inputs(1))
        finally:
            handle.remove()
    image_tokens = 4 * 4  # 8x8 latent, 2x2 patches
    assert [tuple(out.shape[:2]) for out in outputs["cogview4"]] == [(1, image_tokens), (1, 6)]
    assert outputs["sana_video"][0].shape[:4] == (1, 2, 4, 4) and outputs["sana_video"][0].ndim == 5


def test_history_tokens_are_recorded_with_the_video(families):
    """Documented limit of the current schema (adapters/hunyuan_video.yaml, adapters/helios.yaml): Framepack and
    Helios prepend compressed history tokens to the section's own tokens, and the block hooks carry both; Helios's
    cross-attention runs on the section's tokens only."""
    shapes = {}
    for name in ("hunyuan_video_framepack", "helios"):
        family = families[name]
        hooked = HookedDiT(family.make())
        names = [n for n in ("blocks.0.hook_resid_pre", "blocks.0.cross_attn.hook_out") if n in hooked.hook_names]
        with torch.no_grad():
            _, cache = hooked.run_with_cache(**family.inputs(1), names_filter=names)
        shapes[name] = {n: cache[n].shape[1] for n in names}
    assert shapes["hunyuan_video_framepack"]["blocks.0.hook_resid_pre"] == 11 + 3 * 2 * 2  # history | 3 frames of 2x2
    assert shapes["helios"]["blocks.0.hook_resid_pre"] == 21 + 2 * 4 * 4  # history | 2 frames of 4x4
    assert shapes["helios"]["blocks.0.cross_attn.hook_out"] == 2 * 4 * 4


def test_video_frames_are_read_and_frame_major(family, check_video_frames):
    model = family.make()
    if adapter_for(model).frames is None:
        pytest.skip("not a video family (no frames: section)")
    check_video_frames(model, family.inputs(1), family.run)


def test_tokens_per_image_are_spread_evenly_over_a_videos_frames(families):
    family = families["wan"]
    model = family.make()
    hooked = HookedDiT(model)
    with torch.no_grad(), hooked.record(["blocks.0.hook_resid_post"], tokens_per_image=5, seed=3) as rec:
        family.run(model, family.inputs(2))
    rows = rec.rows("blocks.0.hook_resid_post")
    for sample in (0, 1):
        counts = rows["frame"][rows["sample"] == sample].bincount(minlength=2)
        assert sorted(counts.tolist()) == [2, 3]  # 5 tokens over 2 frames: as even as 5 allows


def _per_token_case(families: dict, name: str) -> tuple[Any, dict, Tensor, Tensor]:
    """(family, inputs, raw timestep [1, m], expected t per image token [1, 32]) for a call whose pipeline passes
    one timestep per token (Wan 2.2 TI2V: first-frame tokens at 0; LTX and Sana-Video image-to-video) or per
    frame (SkyReels-V2 diffusion forcing, SANA-WM, AnyFlow), all already t on the [0, 1000] scale. The test configs
    have 2 frames of 4 x 4 tokens, frame-major."""
    family = families[name]
    inputs = family.inputs(1)
    if name == "skyreels_v2":  # one t per latent frame, the first frame ahead of the second
        raw = torch.tensor([[250.0, 800.0]])
        inputs["enable_diffusion_forcing"] = True
        return family, {**inputs, "timestep": raw}, raw, raw.repeat_interleave(16, dim=1)
    if name == "anyflow":  # AnyFlowPipeline video-to-video: [batch, frames], the context frame at 0
        raw = torch.tensor([[0.0, 700.0]])
        return family, {**inputs, "timestep": raw}, raw, raw.repeat_interleave(16, dim=1)
    if name == "sana_wm":  # SanaWMPipeline: [batch, 1, frames], the conditioning first frame at 0
        raw = torch.tensor([[[0.0, 700.0]]])
        return family, {**inputs, "timestep": raw}, raw, raw[:, 0].repeat_interleave(16, dim=1)
    raw = torch.full((1, 32), 700.0)
    raw[:, :16] = 0.0  # the conditioning frame's tokens are clean
    return family, {**inputs, "timestep": raw}, raw, torch.where(torch.arange(32) < 16, 0.0, 700.0)[None]


@pytest.mark.parametrize("name", ["wan", "skyreels_v2", "ltx", "sana_video", "sana_wm", "anyflow"])
def test_per_token_timesteps_reach_every_recorded_row(families, name):
    family, inputs, _, expected = _per_token_case(families, name)
    model = family.make()
    reference = family.run(model, inputs)
    hooked = HookedDiT(model)
    hook = "blocks.0.hook_resid_post"
    with torch.no_grad(), hooked.record([hook], tokens_per_image=None) as rec:
        out = family.run(model, inputs)
    assert torch.equal(out, reference)
    assert rec.timesteps.tolist() == [[expected.max().item()]]  # a row's t: its noisiest tokens'
    rows = rec.rows(hook)
    torch.testing.assert_close(rows["timestep"], expected[0, rows["token"]], rtol=0, atol=1e-3)


def _random_tide(hooked: HookedDiT, hook: str, seed: int) -> Any:
    """A random TIDE SAE at `hook` whose timestep terms are far from identity, so a wrong t shows."""
    from sae_lens_dit.saes.tide_sae import TideSAE, TideSAEConfig

    torch.manual_seed(seed)
    config = dict(apply_b_dec_to_input=True, normalize_activations="none", rescale_acts_by_decoder_norm=False)
    sae = TideSAE(TideSAEConfig(d_in=hooked.d_in(hook), d_sae=48, k=4, **config))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        for parameter in sae.timestep_mlp.parameters():
            parameter.normal_(0, 0.3)
    sae.cfg.metadata.hook_name = hook
    return sae


@pytest.mark.parametrize("name", ["wan", "skyreels_v2"])
def test_a_tide_sae_spliced_into_a_per_token_call_gets_each_tokens_timestep(families, name):
    family, inputs, _, expected = _per_token_case(families, name)
    model = family.make()
    hooked = HookedDiT(model)
    hook = "blocks.0.hook_resid_post"
    sae = _random_tide(hooked, hook, seed=1)
    seen: dict[str, Tensor] = {}

    def replace(module, args, output):  # independent reference: the block output through sae(x, t per token)
        seen["x"] = output.detach().clone()
        return sae(output, timestep=expected.to(output.dtype))

    handle = model.blocks[0].register_forward_hook(replace)
    try:
        reference = family.run(model, inputs)
    finally:
        handle.remove()
    with torch.no_grad(), hooked.saes([sae], use_error_term=False):
        spliced = family.run(model, inputs)
    torch.testing.assert_close(spliced, reference, rtol=0, atol=0)
    with torch.no_grad():  # and a per-row t (the row's max) would have given another output
        per_row = sae(seen["x"], timestep=expected.amax(dim=1))
    assert not torch.allclose(per_row, sae(seen["x"], timestep=expected))


def test_hidream_non_square_padding_is_cut_from_the_image_hooks(families):
    """HiDream pads a non-square image's tokens to config.max_resolution's count (here 256) before its blocks; the
    image hooks (`tokens: image_head`) see the real tokens only, the first (8 / 2) * (16 / 2) = 32."""
    family = families["hidream"]
    model = family.make()
    hooked = HookedDiT(model)
    inputs = {**family.inputs(1), "hidden_states": torch.randn(1, 4, 8, 16)}
    seen = {}
    handle = model.double_stream_blocks[0].register_forward_hook(lambda module, args, out: seen.update(out=out[0]))
    names = ["blocks.0.hook_resid_post", "single_blocks.0.hook_resid_pre", "single_blocks.0.hook_txt_resid_post"]
    try:
        with torch.no_grad():
            _, cache = hooked.run_with_cache(**inputs, names_filter=names)
    finally:
        handle.remove()
    assert seen["out"].shape[1] == 256  # [image | padding], the double-stream blocks' image stream
    assert torch.equal(cache["blocks.0.hook_resid_post"], seen["out"][:, :32])
    assert cache["single_blocks.0.hook_resid_pre"].shape[1] == 32
    assert cache["single_blocks.0.hook_txt_resid_post"].shape[1] == 256 - 32 + 3 * 8  # padding, then the text


def test_z_image_nested_latents_are_refused_naming_the_argument(families):
    """Z-Image's omni mode passes nested lists ([condition images..., target] per sample) and lays its rows out
    [caption | images | SigLIP]: no single image span, so the call is refused rather than recorded wrong."""
    family = families["z_image"]
    hooked = HookedDiT(family.make())
    inputs = {**family.inputs(1), "x": [[torch.randn(16, 1, 8, 8), torch.randn(16, 1, 8, 8)]]}
    with pytest.raises(ValueError, match="the latents argument 'x' is list"):
        hooked.read_call((), inputs)  # what the hooks read at the call's first hook
    assert hooked.read_call((), family.inputs(3)).image_tokens == 16  # a flat list: 3 rows of 4 x 4 tokens


def test_steering_a_tide_sae_in_a_per_token_call_encodes_each_token_at_its_own_timestep(families):
    from sae_lens_dit.analysis.interventions.spec import LatentEdit, SteeringSpec
    from sae_lens_dit.analysis.interventions.steering import steer

    family, inputs, _, expected = _per_token_case(families, "wan")
    model = family.make()
    hooked = HookedDiT(model)
    hook = "blocks.0.hook_resid_post"
    sae = _random_tide(hooked, hook, seed=2)

    def edited(module, args, output):  # reference: encode at each token's t, add 2 to latent 5, decode at that t
        codes = sae.encode(output, timestep=expected)
        codes[..., 5] += 2.0
        return sae.decode(codes, timestep=expected)

    handle = model.blocks[0].register_forward_hook(edited)
    try:
        with torch.no_grad():
            reference = family.run(model, inputs)
    finally:
        handle.remove()
    spec = SteeringSpec([LatentEdit(hook, [5], "add", 2.0)])
    with torch.no_grad(), steer(hooked, [sae], spec, use_error_term=False):
        steered = family.run(model, inputs)
    torch.testing.assert_close(steered, reference, rtol=1e-5, atol=1e-5)


def test_qwenimage21_counts_the_target_from_img_shapes_not_the_latents(families):
    """The latents hold the condition image (4 tokens) and the target (16); the hooks see the 16 of the target
    only, and an img_shapes that is not a list of (frames, height, width) is refused naming the argument."""
    family = families["qwenimage21"]
    model = family.make()
    hooked = HookedDiT(model)
    inputs = family.inputs(2)
    assert inputs["hidden_states"].shape[1] == 20 and hooked.read_call((), inputs).image_tokens == 16
    inputs["img_shapes"] = [[]] * 2
    with pytest.raises(ValueError, match="the 'img_shapes' argument is .*expected a per-sample list of"):
        hooked.read_call((), inputs)
