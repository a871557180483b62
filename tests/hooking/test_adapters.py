"""Adapter specs: the shipped YAMLs load, malformed ones are refused naming file and field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from diffusers import DiTTransformer2DModel

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
    assert {name: list(spec.transformer_classes) for name, spec in specs.items()} == EXPECTED
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
    (_set("stacks", 0, "prefix", "my-blocks"), r"field 'stacks\[0\].prefix': expected a Python identifier"),
    (_set("stacks", 0, "submodules", "mlp", "layout", "nchw"), r"field 'stacks\[0\].submodules.mlp.layout'"),
    (
        _set("stacks", 0, "submodules", "mlp", "optional", 1),
        r"field 'stacks\[0\].submodules.mlp.optional': expected bool",
    ),
    (_set("timestep", "scale", True), r"field 'timestep.scale': expected int or float"),
    (_set("transformer_classes", []), r"field 'transformer_classes': expected a non-empty list"),
    (lambda data: data["stacks"].append(copy.deepcopy(data["stacks"][0])), r"field 'stacks': prefixes must be unique"),
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
