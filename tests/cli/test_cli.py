"""The `sae-lens-dit` command line: presets, flags, several SAEs from one harvest, clear errors."""

import json

import pytest
import yaml
from sae_lens import SAE

from sae_lens_dit.cli import build_parser, configs_from_args, main
from sae_lens_dit.training.runner import PRESETS


def _configs(*argv):
    return configs_from_args(build_parser().parse_args(["train", *argv]))


def test_no_arguments_is_the_default_preset():
    (cfg,) = _configs()
    expected = PRESETS["dit-tiny-digits"]
    assert cfg.model == "digits"
    assert cfg.sae.architecture() == "tide"
    assert (cfg.sae.d_in, cfg.sae.d_sae, cfg.sae.k) == (96, 1536, expected["sae"]["k"])
    assert cfg.hook_name == expected["hook_name"]
    assert cfg.output_dir == expected["output_dir"]


def test_flags_override_the_preset():
    (cfg,) = _configs(
        "--preset",
        "dit-tiny-shapes",
        "--k",
        "4",
        "--seed",
        "7",
        "--output-dir",
        "x",
        "--hook",
        "blocks.3.hook_resid_post",
    )
    assert (cfg.model, cfg.sae.k, cfg.seed, cfg.output_dir) == ("shapes", 4, 7, "x")
    assert cfg.hook_name == "blocks.3.hook_resid_post"
    assert cfg.harvest.hook_names == ("blocks.3.hook_resid_post",)


def test_several_architectures_and_hooks_share_one_cached_harvest():
    cfgs = _configs(
        "--architecture",
        "tide",
        "standard",
        "--hook",
        "blocks.0.hook_resid_post",
        "blocks.3.hook_resid_post",
        "--output-dir",
        "out",
    )
    assert [(c.sae.architecture(), c.hook_name) for c in cfgs] == [
        ("tide", "blocks.0.hook_resid_post"),
        ("tide", "blocks.3.hook_resid_post"),
        ("standard", "blocks.0.hook_resid_post"),
        ("standard", "blocks.3.hook_resid_post"),
    ]
    assert {c.data_mode for c in cfgs} == {"cached"}
    assert {c.cache_dir for c in cfgs} == {"out/activations"}
    assert {c.harvest for c in cfgs} == {cfgs[0].harvest}  # one harvest serves all four
    assert len({c.output_dir for c in cfgs}) == 4
    assert not hasattr(cfgs[2].sae, "k")  # standard SAEs have no k; the flag is not forced on them


def test_train_from_a_config_file_end_to_end(tmp_path, capsys):
    config = {
        "model": "digits",
        "hook_name": "blocks.1.hook_resid_post",
        "sae": {"architecture": "tide", "d_in": 96, "d_sae": 192, "k": 8},
        "harvest": {
            "hook_names": ["blocks.1.hook_resid_post"],
            "num_images": 16,
            "images_per_batch": 8,
            "num_inference_steps": 4,
        },
        "eval_images": 8,
        "training_tokens": 64 * 10,
        "batch_size": 64,
        "shuffle_buffer": 256,
        "wandb_mode": "disabled",
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "explained var" in out and "| 0-200 |" in out
    assert SAE.load_from_disk(str(tmp_path / "run")).cfg.architecture() == "tide"
    assert json.loads((tmp_path / "run" / "runner_cfg.json").read_text())["harvest"]["num_images"] == 16


def test_bad_input_is_a_clear_error_and_exit_code_2(tmp_path, capsys):
    assert main(["train", "--model", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--preset", "no-such-preset"])
