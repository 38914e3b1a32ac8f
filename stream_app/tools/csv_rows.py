"""The data rows of a recorded log's csv, each from one physical line.

No format we read (csv, RetailRocket, MovieLens, Online Retail) puts a line break inside a field, so a
row the csv module reads across several lines is a quote opened and never closed: that one line is
rejected and the lines it swallowed are read again on their own (with `csv.DictReader`, one stray quote
turned hundreds of rows into one rejection, or into a "field larger than field limit" error for the
whole file). A row with more or fewer fields than the header is rejected, not cut or padded.
"""

from __future__ import annotations

import collections
import csv
from typing import Iterator, TextIO

#: (line number, the row by header name, "") or (line number, None, what is wrong with the line)
Row = tuple[int, "dict[str, str] | None", str]


class _LineTap:
    """The lines of a text file, numbered, with the ones taken since `taken` was cleared; lines can be put
    back (`back`) to be read again."""

    def __init__(self, fh: TextIO):
        self.fh = fh
        self.number = 0
        self.back: collections.deque[tuple[int, str]] = collections.deque()
        self.taken: list[tuple[int, str]] = []

    def __iter__(self) -> "_LineTap":
        return self

    def __next__(self) -> str:
        if self.back:
            item = self.back.popleft()
        else:
            text = next(self.fh)
            self.number += 1
            item = (self.number, text)
        self.taken.append(item)
        return item[1]


#: With `multiline`, the most physical lines one row may span (a quote opened by mistake runs on until the next
#: quote: a row of the header's width can come out of it by chance, merging the rows it ran into).
MULTILINE_MAX = 50


class CsvRows:
    """`header`: the first line's fields, without whitespace around them; iterating gives the data rows (`Row`).
    `multiline`: a quoted field may hold line breaks (a catalogue's descriptions do), if its row then has the
    header's width, closes every quote it opens and spans at most MULTILINE_MAX lines; else as for the logs, one
    line a row."""

    def __init__(self, fh: TextIO, multiline: bool = False):
        self.multiline = multiline
        self.renamed = False  # the header's names were read as another's (Online Retail II's as Online Retail's)
        self._tap = _LineTap(fh)
        # a space after each comma ("user_id, item_id", `u1, "a,b"`) is not part of the field, quoted or not
        self._reader = csv.reader(self._tap, skipinitialspace=True)
        try:
            names = next(self._reader)
            while not any(name.strip() for name in names):  # blank lines before the header
                names = next(self._reader)
            self.header: list[str] = [name.strip() for name in names]
        except (StopIteration, csv.Error):
            self.header = []

    def __iter__(self) -> Iterator[Row]:
        tap, width = self._tap, len(self.header)
        while True:
            tap.taken.clear()
            problem = ""
            try:
                values: list[str] | None = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                values, problem = None, f"it cannot be read as csv ({exc})"
            if not tap.taken:
                return
            first = tap.taken[0][0]
            spans = len(tap.taken) > 1 and values is not None and any("\n" in v or "\r" in v for v in values)
            kept = (self.multiline and spans and len(values or ()) == width and len(tap.taken) <= MULTILINE_MAX
                    and sum(text.count('"') for _, text in tap.taken) % 2 == 0)  # odd: a quote never closed
            if values is None or (spans and not kept):
                swallowed = tap.taken[1:]
                tap.back.extendleft(reversed(swallowed))  # read again, each on its own
                yield first, None, problem or (
                    f"a quoted field opens on it and does not close on it (a stray \"?); the "
                    f"{len(swallowed)} line(s) after it that it ran into are read on their own")
                continue
            if not any(value.strip() for value in values):
                continue  # a blank line, or one of empty fields only (Excel writes ",,,,,,," for an empty row)
            if len(values) != width:
                yield first, None, (f"{len(values)} fields where the header names {width} "
                                    f"({'an unquoted comma?' if len(values) > width else 'a field missing?'})")
                continue
            yield first, dict(zip(self.header, values)), ""

    def line_text(self, number: int) -> str:
        """A rejected line as it was read (for its dead letter), if it is among the lines of the last row."""
        for found, text in self._tap.taken:
            if found == number:
                return text.rstrip("\r\n")
        return ""
