"""`stream-app ... --help` is a user's manual: every command says what it does, every option what it takes
and its default."""

import argparse

import pytest

from stream_app import __version__
from stream_app.cli import main


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(main.parser()))


def test_the_commands_are_all_found():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"up", "down", "status", "repair-redis", "content export", "redrive"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(path) for path, _ in COMMANDS])
def test_each_commands_own_help_says_what_it_does(path, command):
    assert command.description, f"`stream-app {' '.join(path)} --help` prints a usage line and no description"


def _options_with_unsaid_defaults(command: argparse.ArgumentParser) -> list[str]:
    unsaid = []
    for action in command._actions:
        if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            continue
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._StoreTrueAction)):
            continue
        if "default" not in (action.help or ""):
            unsaid.append(action.option_strings[-1])
    return unsaid


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(path) for path, _ in COMMANDS])
def test_each_option_with_a_default_says_it(path, command):
    assert _options_with_unsaid_defaults(command) == []


def test_an_option_shown_as_optional_but_required_says_it_is_required():
    redrive = dict(COMMANDS)[("redrive",)]
    reason = next(action for action in redrive._actions if "--reason" in action.option_strings)
    assert "required" in reason.help


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"stream-app {__version__}"

