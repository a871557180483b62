"""Bad input to the command line is one clear line on stderr and exit 2, never a traceback and never
a silently different run; `-v` adds the traceback (issue 18, "Raw tracebacks", "Silently wrong")."""

from __future__ import annotations

import pytest
import yaml

from sae_lens_dit.cli import build_parser, configs_from_args, main

VALID = {
    "model": "digits",
    "hook_name": "blocks.1.hook_resid_post",
    "sae": {"architecture": "tide", "d_in": 96, "d_sae": 192, "k": 8},
    "harvest": {
        "hook_names": ["blocks.1.hook_resid_post"],
        "num_images": 4,
        "images_per_batch": 2,
        "num_inference_steps": 2,
    },
    "training_tokens": 128,
    "batch_size": 64,
}


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _train_config(tmp_path, text: str, name: str = "run.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    return ["train", "--config", str(path), "--output-dir", str(tmp_path / "out")]


def _with(**changes) -> str:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = data
        for parent in parents:
            target = target[parent]
        target[key] = value
    return yaml.safe_dump(data)


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        ({"sae__d_sea": 3072}, ["unknown key 'd_sea'", "did you mean 'd_sae'"]),
        ({"modle": "digits"}, ["unknown key 'modle'", "did you mean 'model'"]),
        ({"harvest__num_imgs": 4}, ["unknown key 'num_imgs'", "did you mean 'num_images'"]),
        ({"batch_size": 0}, ["batch_size=0", "at least 1"]),
        ({"batch_size": "big"}, ["batch_size", "expected int", "'big'"]),
        ({"lr": "1e-4"}, ["lr", "expected float", "decimal point"]),
        ({"seed": [1]}, ["seed", "expected int"]),
        ({"sae__d_in": "x"}, ["sae.d_in", "expected int"]),
        ({"sae__architecture": "tied"}, ["'tied'", "did you mean 'tide'"]),
        ({"sae": 5}, ["sae", "expected a mapping"]),
        ({"harvest__num_inference_steps": 0}, ["num_inference_steps=0", "at least 1"]),
        ({"harvest__guidance_scale": float("nan")}, ["guidance_scale", "finite"]),
        ({"data_mode": "cache"}, ["data_mode", "'streaming'"]),
    ],
)
def test_config_mistakes_are_one_line_naming_the_file_and_field(tmp_path, capsys, change, fragments):
    assert main(_train_config(tmp_path, _with(**change))) == 2
    _one_line_error(capsys, "run.yaml", *fragments)
    assert not (tmp_path / "out").exists()


def test_malformed_yaml_and_json_name_the_file_and_line(tmp_path, capsys):
    assert main(_train_config(tmp_path, "model: digits\nsae: {d_in: 96, d_sae: 10\n")) == 2
    _one_line_error(capsys, "run.yaml, line 3", "malformed YAML")
    assert main(_train_config(tmp_path, '{"sae": {"d_in": 96,}}', "run.json")) == 2
    _one_line_error(capsys, "run.json, line 1", "malformed JSON")
    assert main(_train_config(tmp_path, "- a list\n")) == 2
    _one_line_error(capsys, "run.yaml", "expected a mapping")


def test_sae_typo_is_never_silently_dropped_but_another_architectures_keys_are(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(_with(sae__kk=4))
    for extra in ([], ["--architecture", "standard"]):  # also when --architecture replaces the config's
        with pytest.raises(ValueError, match="unknown key 'kk'"):
            configs_from_args(build_parser().parse_args(["train", "--config", str(path), *extra]))
    (cfg,) = configs_from_args(build_parser().parse_args(["train", "--architecture", "standard"]))
    assert cfg.sae.architecture() == "standard"  # the preset's k belongs to tide: left out, as before


def test_flags_with_bad_values_and_devices(tmp_path, capsys):
    assert main(["train", "--k", "0", "--output-dir", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "k must be in [1")
    assert main(["train", "--architecture", "tied", "--output-dir", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "did you mean 'tide'")
    assert main(["train", "--device", "cuda:0" if _no_cuda() else "cuda:99", "--output-dir", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "device 'cuda")
    assert main(["eval", "--release", "tide-dit-tiny/digits", "--device", "gpu", "--output-dir", str(tmp_path)]) == 2
    _one_line_error(capsys, "'gpu' is not a torch device")
    assert not (tmp_path / "o").exists()


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


def test_verbose_adds_the_traceback(tmp_path, capsys):
    argv = _train_config(tmp_path, _with(batch_size=0))
    assert main(["-v", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("sae-lens-dit train: error:")
