"""`cli.flags`: flags generated from config dataclasses, checked against the dataclasses themselves.

The reference is the dataclass: its fields (every one with a flag form must be a flag), its field
docstrings (the help) and its defaults (unset flags keep them); values typed on the command line
must arrive with the field's type.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Literal

import pytest

from sae_lens_dit.analysis.dashboard.build import DashboardConfig
from sae_lens_dit.analysis.evals import EvalConfig
from sae_lens_dit.cli import build_parser
from sae_lens_dit.cli.flags import add_config_flags, config_from_flags, overrides_from_flags


@dataclasses.dataclass
class _Toy:
    count: int = 3
    """How many."""
    rate: float | None = None
    """A rate; None = automatic."""
    mode: Literal["fast", "slow"] = "fast"
    """Which mode."""
    ids: tuple[int, ...] | None = None
    """Ids to keep."""
    enabled: bool = True
    """Do the thing."""
    verbose: bool = False
    """Say more."""
    table: dict[str, int] = dataclasses.field(default_factory=dict)
    """No flag form."""


def _parser(**kwargs) -> tuple[argparse.ArgumentParser, list[str]]:
    parser = argparse.ArgumentParser(exit_on_error=False)
    return parser, add_config_flags(parser, _Toy, **kwargs)


def test_every_field_with_a_flag_form_is_a_flag_with_its_docstring_as_help():
    parser, added = _parser()
    assert added == ["count", "rate", "mode", "ids", "enabled", "verbose"]  # `table` (a dict) has no flag form
    helps = {a.dest: a.help for a in parser._actions if a.dest != "help"}
    assert helps["count"] == "How many. (default: 3)"
    assert helps["enabled"] == "Turn off (default on): Do the thing."
    assert "--no-enabled" in parser.format_help() and "--verbose" in parser.format_help()


def test_values_arrive_typed_and_unset_flags_keep_the_defaults():
    parser, _ = _parser()
    args = parser.parse_args(["--count", "7", "--rate", "0.5", "--mode", "slow", "--ids", "4", "2", "--no-enabled"])
    assert config_from_flags(_Toy, args) == _Toy(count=7, rate=0.5, mode="slow", ids=(4, 2), enabled=False)
    assert config_from_flags(_Toy, parser.parse_args([])) == _Toy()
    assert config_from_flags(_Toy, parser.parse_args(["--verbose"])).verbose is True


def test_a_value_outside_a_literal_is_refused():
    parser, _ = _parser()
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parser.parse_args(["--mode", "medium"])


def test_overrides_only_reports_just_what_was_typed():
    parser, added = _parser(overrides_only=True)
    assert overrides_from_flags(parser.parse_args([]), added) == {}
    assert overrides_from_flags(parser.parse_args(["--count", "1", "--ids", "5"]), added) == {"count": 1, "ids": (5,)}


def test_asking_for_a_field_without_a_flag_form_is_an_error():
    with pytest.raises(TypeError, match="_Toy.table"):
        _parser(only=["table"])


@pytest.mark.parametrize(("command", "cls"), [("eval", EvalConfig), ("dashboard", DashboardConfig)])
def test_eval_and_dashboard_take_every_config_field(command, cls):
    """A new field of EvalConfig / DashboardConfig is a flag without a second edit: the parser's flags are
    exactly the dataclass's fields (plus the SAE source and the output folder)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    dests = {a.dest for a in sub._actions} - {"help", "release", "sae", "sae_id", "output_dir"}
    assert dests == {f.name for f in dataclasses.fields(cls)}
