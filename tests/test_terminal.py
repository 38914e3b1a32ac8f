"""The CLI escapes control characters it prints to a terminal (cli/terminal.py)."""

from __future__ import annotations

import io
import sys

from stream_app.cli import main as cli_main
from stream_app.cli.terminal import EscapingWriter, escaped, escaping_terminal


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_an_escape_sequence_or_a_direction_override_is_written_as_its_repr_and_text_and_layout_pass():
    """helper-152: an item id holding "\\x1b]0;...\\x07" retitled the terminal `recommendations` printed it on."""
    assert escaped("i-\x1b]0;owned\x07-1") == "i-\\x1b]0;owned\\x07-1"
    assert escaped("abc\u202edef\x00\x9b") == "abc\\u202edef\\x00\\x9b"
    text = "  1. i-42 Théière 中文 ☕  0.5000  popular\n\tnext\r"
    assert escaped(text) == text


def test_the_cli_escapes_what_it_prints_to_a_terminal_only_and_puts_the_streams_back(monkeypatch):
    terminal, pipe = Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", pipe)
    with escaping_terminal():
        assert isinstance(sys.stdout, EscapingWriter) and sys.stderr is pipe
        print("user \x1b[2Jx")
        print("user \x1b[2Jx", file=sys.stderr)
    assert sys.stdout is terminal and sys.stderr is pipe
    assert terminal.getvalue() == "user \\x1b[2Jx\n" and pipe.getvalue() == "user \x1b[2Jx\n"


def test_an_error_the_cli_says_on_a_terminal_is_escaped_too(monkeypatch):
    """A command's error quotes what it was given (here an unknown format name holding ESC)."""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(cli_main, "check_brokers_resolve", lambda command: None)

    def fails(args: object) -> int:
        raise cli_main.StreamAppError("no user '\x1b[31mred'")

    monkeypatch.setattr(cli_main, "cmd_status", fails)  # parser() names the module's
    assert cli_main.main(["status"]) == 2
    assert terminal.getvalue() == "stream-app status: error: no user '\\x1b[31mred'\n"

