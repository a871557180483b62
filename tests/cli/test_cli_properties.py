"""Property test: generated bad configs, specs and SAE folders, fed to the command line, always end in
one clear line and exit 2 before any work; never a traceback, never a run (issue 18, "Must show")."""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sae_lens_dit.cli as cli
import sae_lens_dit.cli.training as cli_training
from sae_lens_dit.analysis.interventions import SteeringSpec

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
INTS = {
    "": ["training_tokens", "batch_size", "shuffle_buffer", "eval_images", "seed", "n_checkpoints"],
    "sae": ["d_in", "d_sae", "k"],
    "harvest": ["num_images", "images_per_batch", "num_inference_steps"],
}
COUNTS = {
    "": ["training_tokens", "batch_size", "shuffle_buffer", "eval_images", "dead_feature_window"],
    "sae": ["d_in", "d_sae", "k"],
    "harvest": ["num_images", "images_per_batch", "num_inference_steps"],
}
FLOATS = {"": ["lr"], "harvest": ["guidance_scale"], "sae": ["aux_loss_coefficient"]}
STRINGS = {"": ["model", "hook_name", "wandb_project"]}  # output_dir: the flag replaces it
CHOICES = {"": ["data_mode", "wandb_mode"], "harvest": ["branch", "storage_dtype"]}
KEYS = {
    "": set(VALID) | {"eval_images", "shuffle_buffer", "lr", "seed", "output_dir", "device", "data_mode"},
    "sae": {"architecture", "d_in", "d_sae", "k"},
    "harvest": set(VALID["harvest"]),
}

names = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)
not_int = st.one_of(
    st.text(max_size=8),
    st.booleans(),
    st.floats().filter(lambda f: f != int(f) if f == f and abs(f) != float("inf") else True),
    st.lists(st.integers(), max_size=2),
    st.none(),
)
not_float = st.one_of(
    st.text(max_size=8), st.booleans(), st.sampled_from([float("nan"), float("inf")]), st.lists(st.floats(), max_size=2)
)
not_str = st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False), st.lists(st.text(), min_size=1))


def _field(table):
    return st.sampled_from([(section, name) for section, names_ in table.items() for name in names_])


def _set(data, section, key, value):
    (data[section] if section else data)[key] = value
    return data


@st.composite
def bad_configs(draw):
    data = json.loads(json.dumps(VALID))
    kind = draw(st.sampled_from(["unknown key", "int", "count", "float", "str", "choice"]))
    if kind == "unknown key":
        section = draw(st.sampled_from(["", "sae", "harvest"]))
        key = draw(names.filter(lambda k, s=section: k not in KEYS[s] and k not in _all_fields(s)))
        return _set(data, section, key, draw(st.integers()))
    table, values = {
        "int": (INTS, not_int),
        "count": (COUNTS, st.integers(max_value=0)),
        "float": (FLOATS, not_float),
        "str": (STRINGS, not_str),
        "choice": (CHOICES, st.text(max_size=10)),
    }[kind]
    section, key = draw(_field(table))
    value = draw(values)
    if kind == "choice" and value in (
        "streaming",
        "cached",
        "offline",
        "online",
        "disabled",
        "both",
        "cond",
        "uncond",
        "float32",
        "float16",
    ):
        value += "x"
    if kind == "int" and section == "" and key == "n_checkpoints" and value is None:
        value = "none"
    return _set(data, section, key, value)


def _all_fields(section: str) -> set[str]:
    from dataclasses import fields

    from sae_lens_dit.saes import TideTrainingSAEConfig
    from sae_lens_dit.training.harvest import HarvestConfig
    from sae_lens_dit.training.runner import DiTSAERunnerConfig

    cls = {"": DiTSAERunnerConfig, "sae": TideTrainingSAEConfig, "harvest": HarvestConfig}[section]
    return {f.name for f in fields(cls)}


class _NoRun:
    def __init__(self, *args, **kwargs):
        raise AssertionError("a bad config reached the runner")


def _check_one_line_exit_2(code: int, err: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    assert lines[0].startswith("sae-lens-dit ") and ": error: " in lines[0]


@SETTINGS
@given(config=bad_configs(), as_json=st.booleans())
def test_generated_bad_train_configs_are_one_line_errors(config, as_json, capsys, monkeypatch):
    monkeypatch.setattr(cli_training, "DiTSAETrainingRunner", _NoRun)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("run.json" if as_json else "run.yaml")
        path.write_text(json.dumps(config) if as_json else yaml.safe_dump(config))
        code = cli.main(["train", "--config", str(path), "--output-dir", str(Path(tmp) / "out")])
        _check_one_line_exit_2(code, capsys.readouterr().err)
        assert not (Path(tmp) / "out").exists()


@SETTINGS
@given(text=st.text(max_size=60))
def test_arbitrary_text_as_a_config_or_spec_is_a_one_line_error(text, capsys, monkeypatch):
    monkeypatch.setattr(cli_training, "DiTSAETrainingRunner", _NoRun)
    monkeypatch.setattr(SteeringSpec, "load_saes", _NoRun)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "file.yaml"
        path.write_text(text)
        _check_one_line_exit_2(cli.main(["train", "--config", str(path)]), capsys.readouterr().err)
        argv = ["edit", "--spec", str(path), "--release", "tide-dit-tiny/digits", "--output-dir", f"{tmp}/o"]
        _check_one_line_exit_2(cli.main(argv), capsys.readouterr().err)


bad_edit_fields = st.one_of(
    st.fixed_dictionaries(
        {
            "latents": st.one_of(
                st.just([]),
                st.lists(st.integers(max_value=-1), min_size=1),
                st.text(max_size=4),
                st.lists(st.text(), min_size=1),
            )
        }
    ),
    st.fixed_dictionaries({"op": st.text(max_size=6).filter(lambda o: o not in ("add", "clamp", "scale", "zero"))}),
    st.fixed_dictionaries(
        {
            "value": st.one_of(
                not_float.filter(lambda v: not isinstance(v, list)), st.lists(st.floats(), min_size=3, max_size=3)
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "timesteps": st.one_of(
                st.lists(st.floats(0, 1000), min_size=3, max_size=3), st.just([900.0, 100.0]), st.just(["a", "b"])
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "steps": st.one_of(
                st.just([]), st.lists(st.integers(max_value=-1), min_size=1), st.lists(st.text(min_size=1), min_size=1)
            )
        }
    ),
    st.fixed_dictionaries({"box": st.lists(st.floats(-1, 2), max_size=5)}),
    st.fixed_dictionaries({"branch": st.text(max_size=6).filter(lambda b: b not in ("both", "cond", "uncond"))}),
    st.dictionaries(
        names.filter(
            lambda k: (
                k not in ("hook", "latents", "op", "value", "timesteps", "steps", "box", "mask", "tokens", "branch")
            )
        ),
        st.integers(),
        min_size=1,
    ),
)


@SETTINGS
@given(change=bad_edit_fields, as_json=st.booleans())
def test_generated_bad_specs_are_one_line_errors(change, as_json, capsys, monkeypatch):
    monkeypatch.setattr(SteeringSpec, "load_saes", _NoRun)
    edit = {"hook": "blocks.1.hook_resid_post", "latents": [1, 2], "value": [1.0, 2.0], **change}
    if "box" in change and change["box"] and len(change["box"]) == 4:
        x0, y0, x1, y1 = change["box"]
        if 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1:  # a valid box drawn by chance: make it invalid
            edit["box"] = [x1, y0, x0, y1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("spec.json" if as_json else "spec.yaml")
        data = {"edits": [edit]}
        path.write_text(json.dumps(data) if as_json else yaml.safe_dump(data))
        argv = ["edit", "--spec", str(path), "--release", "tide-dit-tiny/digits", "--output-dir", f"{tmp}/o"]
        _check_one_line_exit_2(cli.main(argv), capsys.readouterr().err)


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@pytest.mark.parametrize("command", ["eval", "dashboard"])
@SETTINGS
@given(
    cfg=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"architecture": st.sampled_from(["tide", "topk"]), "d_in": json_values, "d_sae": json_values}
        ),
    ),
    weights=st.one_of(st.none(), st.binary(max_size=64)),
)
def test_generated_bad_sae_folders_are_one_line_errors(command, cfg, weights, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "sae"
        folder.mkdir()
        (folder / "cfg.json").write_text(json.dumps(cfg))
        if weights is not None:
            (folder / "sae_weights.safetensors").write_bytes(weights)
        code = cli.main([command, "--sae", str(folder), "--output-dir", f"{tmp}/out"])
        _check_one_line_exit_2(code, capsys.readouterr().err)
        assert not Path(f"{tmp}/out").exists()
