"""Command-line choices in any letter case: every argument with text choices, in every subcommand,
maps what was typed to the choice it spells (``vs --method vs-standard``), and still refuses the rest."""

from __future__ import annotations

import argparse

import pytest

from app.cli.args import build_parser


def _text_choice_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for found in _text_choice_actions(sub):
                    yield (name, *found)
        elif action.choices and all(isinstance(c, str) for c in action.choices):
            yield (action, list(action.choices))


def test_vs_method_in_lower_case():
    a = build_parser().parse_args(["vs", "--prompt", "x", "--method", "vs-standard", "--reference", "US-States"])
    assert (a.method, a.reference) == ("VS-Standard", "us-states")
    assert build_parser().parse_args(["vs", "--prompt", "x"]).method == "VS-Standard"  # the default as it was


def test_every_text_choice_of_every_command_takes_any_case():
    parser = build_parser()
    seen = 0
    for command, action, choices in _text_choice_actions(parser):
        flag = action.option_strings[-1]
        for choice in choices:
            for typed in (choice.lower(), choice.upper(), choice.swapcase()):
                argv = [command, flag, typed] + (["--prompt", "x"] if command in ("vs", "compare", "generate") else [])
                a = build_parser().parse_args(argv)
                assert getattr(a, action.dest) == choice, (command, flag, typed)
                seen += 1
    assert seen >= 3 * 15  # gui --lab, vs --method/--reference, align --preset/--style, shift, compare


def test_an_unknown_choice_is_still_refused_with_the_list(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["vs", "--prompt", "x", "--method", "vs-nothing"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'vs-nothing'" in err and "VS-Standard" in err


def test_numeric_choices_are_left_as_they_are():
    a = build_parser().parse_args(["generate", "--prompt", "x", "--mirostat", "2"])
    assert a.mirostat == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "--prompt", "x", "--mirostat", "3"])
