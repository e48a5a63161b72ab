"""The planning flags are generated from ``PruneConfig``'s fields: a new field gets its flag,
its default, its help and its place in the config without an edit to the command line."""

from __future__ import annotations

import argparse

import pytest
from pydantic import Field, create_model

import slimgraph as sg
from slimgraph.cli.flags import EXCLUDED, add_config_flags, config_from_args, flag_name
from slimgraph.cli.parser import build_parser
from slimgraph.errors import UsageError

WIDER = create_model(
    "WiderConfig",
    __base__=sg.PruneConfig,
    new_field=(int, Field(3, description="a field the command line has never seen")),
)


def _parser(config=sg.PruneConfig) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="test")
    add_config_flags(parser, config)
    return parser


def _action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def test_a_new_config_field_gets_a_flag_with_its_default_and_help():
    parser = _parser(WIDER)
    action = _action(parser, "--new-field")
    assert (action.dest, action.default, action.type) == ("new_field", 3, int)
    assert action.help.startswith("a field the command line has never seen")
    assert "--new-field" in parser.format_help()
    config = config_from_args(parser.parse_args(["--new-field", "5"]), WIDER)
    assert isinstance(config, WIDER)
    assert config.new_field == 5
    assert config_from_args(parser.parse_args([]), WIDER).new_field == 3


def test_every_field_but_the_excluded_has_a_flag():
    flags = {s for a in _parser()._actions for s in a.option_strings}
    expected = {flag_name(f) for f in sg.PruneConfig.model_fields if f not in EXCLUDED}
    assert expected <= flags
    assert "--keep-residual" in flags and "--override" in flags  # the names the CLI had
    assert not any(f.startswith("--bias-compensation") for f in flags)


def test_the_flags_default_to_the_config_defaults():
    assert config_from_args(_parser().parse_args([])) == sg.PruneConfig()


def test_special_flags_build_the_config_they_stand_for():
    args = _parser().parse_args(
        ["--keep-residual", "--ignore", "a.*", "b", "--ignore", "c", "--override", "x.*=0.25",
         "--override", "y=0.1", "--scope", "global", "--max-ratio", "0.75"]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.prune_residual is False
    assert config.ignore == ("a.*", "b", "c")
    assert config.overrides == {"x.*": 0.25, "y": 0.1}
    assert (config.scope, config.max_ratio) == ("global", 0.75)


def test_a_new_field_of_a_type_without_a_flag_form_is_refused():
    odd = create_model("OddConfig", __base__=sg.PruneConfig, odd=(set[int], Field(set())))
    with pytest.raises(TypeError, match=r"OddConfig\.odd: .* add the field to EXCLUDED"):
        _parser(odd)


def test_a_bool_field_is_a_flag_that_sets_the_opposite_of_its_default():
    switches = create_model(
        "Switches",
        __base__=sg.PruneConfig,
        fold=(bool, Field(False, description="fold it")),
        keep=(bool, Field(True, description="keep it")),
    )
    parser = _parser(switches)
    assert (_action(parser, "--fold").default, _action(parser, "--no-keep").default) == (
        False,
        True,
    )
    config = config_from_args(parser.parse_args(["--fold", "--no-keep"]), switches)
    assert (config.fold, config.keep) == (True, False)


def test_a_bad_value_names_its_flag_and_a_valid_one():
    args = _parser().parse_args(["--round-to", "0", "--target-macs", "2"])
    with pytest.raises(UsageError) as caught:
        config_from_args(args)
    assert str(caught.value) == (
        "--round-to 0: input should be greater than or equal to 1; use a positive integer, "
        "e.g. 8; --target-macs 2.0: input should be less than or equal to 1; use a fraction "
        "in (0, 1], e.g. 0.5"
    )


def test_the_planning_commands_take_the_generated_flags():
    parser = build_parser()
    for command in ("slim", "plan", "bench", "profile"):
        args = parser.parse_args([command, "--min-keep", "4", "--normalize", "max"])
        assert (args.min_keep, args.normalize) == (4, "max")


def test_every_command_formats_its_help():
    """argparse formats help with %: a description that says "70 %" must not break it."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert sub.format_help().startswith(f"usage: slimgraph {name}")
    assert "(0.3 keeps 70 %)" in " ".join(commands.choices["slim"].format_help().split())
