"""What the CLI prints to a terminal, its control characters escaped as a log line's repr escapes them.

The tools print text any producer wrote to the topics: user and item ids, titles, reasons, dead letters' payloads.
An item id holding an escape sequence could retitle the operator's terminal or rewrite what it shows, and a
right-to-left override could reorder a line. Line feeds, tabs and carriage returns pass (the tools' own layout and
progress bar); so does output to a pipe or a file, which a program reads as written (`--json` escapes them anyway).
"""

from __future__ import annotations

import contextlib
import re
import sys
from typing import Any, Iterator, TextIO

#: C0 controls but tab, line feed and carriage return; DEL and the C1 controls; the bidirectional marks and overrides
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escaped(text: str) -> str:
    """`text` with each control character written as Python writes it in a repr (ESC: \\x1b)."""
    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], text)


class EscapingWriter:
    """A text stream whose writes are `escaped`; all else is the stream's own."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(escaped(text))

    def writelines(self, lines: Any) -> None:
        self._stream.writelines(map(escaped, lines))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def escaping_terminal() -> Iterator[None]:
    """stdout and stderr escaped while they are terminals, for the block's length."""
    kept = {name: getattr(sys, name) for name in ("stdout", "stderr")}
    for name, stream in kept.items():
        with contextlib.suppress(AttributeError, ValueError):  # a closed or a stand-in stream: as it is
            if stream.isatty():
                setattr(sys, name, EscapingWriter(stream))
    try:
        yield
    finally:
        for name, stream in kept.items():
            setattr(sys, name, stream)
