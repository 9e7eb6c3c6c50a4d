"""The scannernet command explains itself: every subcommand a description, every option a help text."""
import argparse

from scannernet_ros.tools.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_subcommand_has_a_description_and_every_option_a_help_text():
    parser = build_parser()
    missing = []
    for name, sub in _subparsers(parser).items():
        if not sub.description:
            missing.append(f"{name}: no description")
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}: no help")
    assert not missing, "\n".join(missing)
    assert "``" not in parser.description      # plain text, no reST markup
    assert isinstance(_subparsers(parser)["demo"].formatter_class, type)


def test_demo_help_names_the_default_model_and_defaults_are_shown(capsys):
    import pytest
    from scannernet_ros.zoo import DEFAULT_MODEL
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    out = capsys.readouterr().out
    assert f"Default model: {DEFAULT_MODEL}" in out and "(default: demo)" in out
