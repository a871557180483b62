"""Adapter specs: the shipped YAMLs load, malformed ones are refused naming file and field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from diffusers import DiTTransformer2DModel
from torch import nn

from sae_lens_dit.hooking.adapters import AdapterSpecError, adapter_for, load_spec, shipped_specs
from sae_lens_dit.resources import adapters_dir

EXPECTED = {
    "dit": ["DiTTransformer2DModel"],
    "pixart": ["PixArtTransformer2DModel"],
    "sd3": ["SD3Transformer2DModel"],
    "flux": ["FluxTransformer2DModel"],
    "sana": ["SanaTransformer2DModel"],
}


def test_every_shipped_spec_loads_and_claims_its_classes():
    specs = {spec.name: spec for spec in shipped_specs()}
    # Other families' files come and go with their own tests; these five must stay as they are.
    assert {name: list(specs[name].transformer_classes) for name in EXPECTED} == EXPECTED
    for name in EXPECTED:  # affine maps without an offset: t computed exactly as before the reversed maps
        assert specs[name].timestep.offset == 0.0 and specs[name].timestep.map == "affine"
    flux = specs["flux"]
    assert [stack.prefix for stack in flux.stacks] == ["blocks", "single_blocks"]
    assert flux.timestep.scale == 1000.0 and flux.guidance.separate_calls
    assert specs["dit"].guidance.order == "cond_first" and specs["pixart"].guidance.order == "uncond_first"
    assert specs["sana"].timestep.divide_by_config == "timestep_scale"


def test_subclasses_of_a_supported_class_use_its_adapter():
    class MyDiT(DiTTransformer2DModel):
        pass

    model = MyDiT(
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        in_channels=4,
        out_channels=8,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=8,
        norm_type="ada_norm_zero",
    )
    assert adapter_for(model).name == "dit"


def _dit_yaml() -> dict:
    return yaml.safe_load((adapters_dir() / "dit.yaml").read_text())


def _drop(key: str):
    def edit(data: dict) -> None:
        del data[key]

    return edit


def _set(*path_and_value):
    *path, value = path_and_value

    def edit(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


MALFORMED = [
    (_drop("latents"), r"field 'latents': missing required field"),
    (
        _set("guidance", "detect", "halves"),
        r"field 'guidance.detect': expected one of \['class_label', 'equal_halves', 'none'\]",
    ),
    (_set("guidance", "null_class_config", None), r"field 'guidance.detect': detect='class_label' needs"),
    (_drop("guidance"), r"field 'guidance': missing required field"),
    (lambda data: data.update(cfg=data["guidance"]), r"field 'cfg': both 'cfg' \(the old name\) and 'guidance'"),
    (_set("stack", []), r"field 'stack': unknown key; allowed keys are"),
    (_set("stacks", 0, "image_output", "one"), r"field 'stacks\[0\].image_output': expected int or null"),
    (_set("stacks", 0, "prefix", "my-blocks"), r"field 'stacks\[0\].prefix': expected dotted Python identifiers"),
    (_set("stacks", 0, "prefix", "*.blocks"), r"field 'stacks\[0\].prefix': expected dotted Python identifiers"),
    (_set("stacks", 0, "prefix", "blocks.*"), r"field 'stacks\[0\].prefix': 'blocks.\*' has more `\*` than"),
    (
        _set("stacks", 0, "layout", "nchw"),
        r"field 'stacks\[0\].layout': expected one of \['tokens'",
    ),
    (_set("stacks", 0, "update", "yes"), r"field 'stacks\[0\].update': expected bool"),
    (_set("stacks", 0, "submodules", "mlp", "layout", "nchw"), r"field 'stacks\[0\].submodules.mlp.layout'"),
    (
        _set("stacks", 0, "submodules", "mlp", "optional", 1),
        r"field 'stacks\[0\].submodules.mlp.optional': expected bool",
    ),
    (_set("timestep", "scale", True), r"field 'timestep.scale': expected int or float"),
    (_set("timestep", "scale", 0), r"field 'timestep.scale': expected a non-zero number"),
    (_set("timestep", "scale", -1000), r"field 'timestep.scale': a negative scale \(-1000.0\) is a reversed map"),
    (_set("timestep", "offset", "1000"), r"field 'timestep.offset': expected int or float"),
    (
        _set("timestep", "map", "edm"),
        r"field 'timestep.map': expected one of \['affine', 'edm_log_sigma'\], received 'edm'",
    ),
    (
        lambda data: data["timestep"].update(map="edm_log_sigma", scale=1000),
        r"field 'timestep.map': map 'edm_log_sigma' reads the raw timestep .* remove scale, offset",
    ),
    (_set("timestep", "ofset", 1000), r"field 'timestep.ofset': unknown key; allowed keys are \['argument'"),
    (_set("match_config", {}), r"field 'match_config': expected at least one config key"),
    (_set("match_config", {"sizes": [1, 2]}), r"field 'match_config.sizes': expected a scalar config value"),
    (_set("match_config", "learnable"), r"field 'match_config': expected dict"),
    (_set("transformer_classes", []), r"field 'transformer_classes': expected a non-empty list"),
    (lambda data: data["stacks"].append(copy.deepcopy(data["stacks"][0])), r"field 'stacks': prefixes must be unique"),
    (
        _set("stacks", 0, "tokens", "image_middle"),
        r"field 'stacks\[0\].tokens': expected one of \['all', 'image_tail', 'image_head', 'image_after_text', "
        r"'image_at_offset'\]",
    ),
    (_set("stacks", 0, "tokens", "image_head"), r"field 'image_tokens': a stack with tokens: image_tail, image_head"),
    (
        lambda data: data.update(image_tokens="patches") or data["stacks"][0].update(tokens="image_after_text"),
        r"field 'text_mask': a stack with tokens: image_after_text needs text_mask",
    ),
    (_set("text_mask", "encoder_attention_mask"), r"field 'text_mask': text_mask places tokens: image_after_text"),
    (_set("image_tokens", "shapes"), r"field 'image_shapes': image_tokens: shapes needs image_shapes"),
    (_set("image_shapes", "img_shapes"), r"field 'image_shapes': image_shapes is read for `image_tokens: shapes`"),
    (_set("image_shapes_target", "first"), r"field 'image_shapes_target': image_shapes_target is read for"),
    (
        lambda data: data.update(image_tokens="shapes", image_shapes="img_shapes", image_shapes_target="middle"),
        r"field 'image_shapes_target': expected one of \['first', 'last'\]",
    ),
    (_set("image_tokens", "ids"), r"field 'image_ids': image_tokens: ids needs image_ids \(the forward argument"),
    (_set("image_ids", "img_ids"), r"field 'image_ids': image_ids is read for `image_tokens: ids`; remove it"),
    (
        lambda data: data.update(image_tokens="ids", image_ids=["img_ids"]),
        r"field 'image_ids': expected str, received \['img_ids'\]",
    ),
    (
        lambda data: (
            data.update(image_tokens="ids", image_ids="img_ids", text_mask="encoder_attention_mask")
            or data["stacks"][0].update(tokens="image_after_text")
        ),
        r"field 'image_tokens': tokens: image_after_text places each row's image after its text_mask; it cannot",
    ),
    (
        _set("image_tokens", "position_ids"),
        r"field 'image_tokens': expected one of \['sequence', 'patches', 'shapes', 'ids'\]",
    ),
    (
        lambda data: (
            data.update(image_tokens="patches")
            or data["stacks"][0].update(tokens="image_head")
            or data["stacks"][0]["submodules"]["mlp"].update(tokens="image_tail")
        ),
        r"field 'stacks\[0\].submodules.mlp.tokens': the stack's stream is cut with tokens: image_head",
    ),
    (_set("stacks", 0, "text", "no"), r"field 'stacks\[0\].text': expected bool"),
    (_set("image_patch", 2), r"field 'image_patch': image_patch is the patch size of `image_tokens: patches`"),
    (
        lambda data: data.update(image_tokens="patches", image_patch="all_patch_size(0)"),
        r"field 'image_patch': expected a config key like patch_size or all_patch_size\[0\]",
    ),
    (
        lambda data: data.update(image_tokens="patches", image_patch=0),
        r"field 'image_patch': expected a positive int or a config value name",
    ),
    (
        lambda data: data.update(image_tokens="patches") or data["stacks"][0].update(tokens="image_at_offset"),
        r"field 'image_offset': a stack with tokens: image_at_offset needs image_offset, one of \['bria_fibo2_gist'\]",
    ),
    (
        lambda data: (
            data.update(image_tokens="patches", image_offset="gist")
            or data["stacks"][0].update(tokens="image_at_offset")
        ),
        r"field 'image_offset': expected one of \['bria_fibo2_gist'\], received 'gist'",
    ),
    (
        _set("image_offset", "bria_fibo2_gist"),
        r"field 'image_offset': image_offset places tokens: image_at_offset spans; no stack has one",
    ),
    (
        _set("reference_tokens", "image_cond_hidden_states"),
        r"field 'reference_tokens': reference_tokens needs the image counted as image_tokens: sequence or patches",
    ),
    (
        lambda data: data["guidance"].update(thirds=["cond", "uncond"], thirds_when="class_labels"),
        r"field 'guidance.thirds': expected three row labels out of \['cond', 'uncond', 'image_cond'\]",
    ),
    (
        lambda data: data["guidance"].update(thirds=["cond", "uncond", "image"], thirds_when="class_labels"),
        r"field 'guidance.thirds': expected three row labels",
    ),
    (
        lambda data: data["guidance"].update(thirds=["cond", "uncond", "image_cond"]),
        r"field 'guidance.thirds_when': thirds and thirds_when go together",
    ),
]


@pytest.mark.parametrize(("edit", "message"), MALFORMED)
def test_malformed_spec_names_the_file_and_the_field(tmp_path: Path, edit, message):
    data = _dit_yaml()
    edit(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(AdapterSpecError, match=message) as error:
        load_spec(path)
    assert str(path) in str(error.value) and "fix the file" in str(error.value)


def test_old_cfg_section_still_loads_with_a_warning_naming_file_and_new_key(tmp_path: Path):
    data = _dit_yaml()
    data["cfg"] = data.pop("guidance")
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.warns(DeprecationWarning, match=f"adapter spec {path}: the section 'cfg' is now called 'guidance'"):
        old = load_spec(path)
    shipped = load_spec(adapters_dir() / "dit.yaml")
    assert old.guidance == shipped.guidance and old.guidance.detect == "class_label"
    data["cfg"]["detect"] = "halves"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(AdapterSpecError, match=r"field 'cfg.detect'"), pytest.warns(DeprecationWarning):
        load_spec(path)


def test_old_python_names_answer_with_a_warning():
    import sae_lens_dit.hooking.adapters as adapters

    spec = load_spec(adapters_dir() / "dit.yaml")
    with pytest.warns(DeprecationWarning, match="AdapterSpec.guidance"):
        assert spec.cfg is spec.guidance
    with pytest.warns(DeprecationWarning, match="GuidanceSpec"):
        assert adapters.CfgSpec is adapters.GuidanceSpec


def test_invalid_yaml_names_the_file(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(AdapterSpecError, match=f"adapter spec {path}: not valid YAML"):
        load_spec(path)


def test_reversed_and_edm_maps_give_t_on_the_project_scale(tmp_path: Path):
    data = _dit_yaml()
    data["timestep"].update(offset=1000, scale=-1000)  # raw = 1 - sigma (Lumina)
    path = tmp_path / "reversed.yaml"
    path.write_text(yaml.safe_dump(data))
    reversed_map = load_spec(path).timestep
    assert (reversed_map.offset, reversed_map.scale, reversed_map.map) == (1000.0, -1000.0, "affine")
    raw = torch.tensor([1.0, 0.75, 0.0], dtype=torch.float64)
    assert reversed_map.to_convention(raw, 1.0).tolist() == [0.0, 250.0, 1000.0]
    data["timestep"] = {"argument": "timestep", "map": "edm_log_sigma"}
    path.write_text(yaml.safe_dump(data))
    edm = load_spec(path).timestep
    sigma = torch.tensor([80.0, 1.0, 0.002], dtype=torch.float64)
    t = edm.to_convention(0.25 * sigma.log(), 1.0)
    torch.testing.assert_close(t, 1000 * sigma / (1 + sigma))
    assert t[1].item() == pytest.approx(500.0)


def test_affine_specs_compute_t_exactly_as_before():
    """The old formula, `(raw * scale / divisor).float()` in float64, bit for bit."""
    raw = torch.rand(64, dtype=torch.float64) * 1000
    for spec in shipped_specs():
        if spec.name in EXPECTED:
            for divisor in (1.0, 3.0):
                old = (raw * spec.timestep.scale / divisor).float()
                assert torch.equal(spec.timestep.to_convention(raw, divisor).float(), old)


def _cosmos(extra_pos_embed_type):
    from diffusers import CosmosTransformer3DModel

    return CosmosTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=1,
        mlp_ratio=2,
        text_embed_dim=16,
        adaln_lora_dim=4,
        max_size=(4, 32, 32),
        concat_padding_mask=False,
        extra_pos_embed_type=extra_pos_embed_type,
    )


def _claiming_specs(tmp_path: Path, *match_configs):
    """Copies of cosmos1.yaml, one per match_config (None = no match_config section)."""
    specs = []
    for i, match in enumerate(match_configs):
        data = yaml.safe_load((adapters_dir() / "cosmos1.yaml").read_text())
        data["name"] = f"cosmos_{i}"
        data.pop("match_config")
        if match is not None:
            data["match_config"] = match
        path = tmp_path / f"cosmos_{i}.yaml"
        path.write_text(yaml.safe_dump(data))
        specs.append(load_spec(path))
    return tuple(specs)


def test_match_config_picks_between_specs_of_one_class(tmp_path: Path, monkeypatch):
    import sae_lens_dit.hooking.adapters as adapters

    assert adapter_for(_cosmos("learnable")).name == "cosmos1"
    specs = _claiming_specs(tmp_path, {"extra_pos_embed_type": "learnable"}, None)
    monkeypatch.setattr(adapters, "shipped_specs", lambda: specs)
    assert adapter_for(_cosmos("learnable")).name == "cosmos_0"
    assert adapter_for(_cosmos(None)).name == "cosmos_1"  # the spec without match_config is the fallback

    specs = _claiming_specs(tmp_path, {"extra_pos_embed_type": "learnable"})
    monkeypatch.setattr(adapters, "shipped_specs", lambda: specs)
    with pytest.raises(AdapterSpecError, match=r"its config \{'extra_pos_embed_type': None\} fits none") as error:
        adapter_for(_cosmos(None))
    assert "cosmos_0.yaml" in str(error.value)

    specs = _claiming_specs(tmp_path, None, None)
    monkeypatch.setattr(adapters, "shipped_specs", lambda: specs)
    with pytest.raises(AdapterSpecError, match=r"2 adapters fit CosmosTransformer3DModel.*give each a `match_config`"):
        adapter_for(_cosmos(None))


def test_unknown_class_names_the_closest_adapters():
    class Lumina3Transformer2DModel(nn.Module):
        pass

    class PixArtSigmaTransformer(nn.Module):
        pass

    with pytest.raises(AdapterSpecError) as error:
        adapter_for(Lumina3Transformer2DModel())
    message = str(error.value)
    assert message.startswith("no adapter for Lumina3Transformer2DModel; closest adapters: 'lumina2'")
    assert "'lumina2' (Lumina2Transformer2DModel)" in message and str(adapters_dir()) in message
    assert message.endswith("docs/adapters.md in the sae-lens-dit repository")
    with pytest.raises(AdapterSpecError, match=r"closest adapters: 'pixart' \(PixArtTransformer2DModel\)"):
        adapter_for(PixArtSigmaTransformer())
