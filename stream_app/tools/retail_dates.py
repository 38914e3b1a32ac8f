"""Online Retail's InvoiceDate as its copies write it: ISO, or slashed month first (the shared csv) or day first
(a copy exported with British settings), taken as UTC."""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path
from typing import TextIO

from .csv_rows import CsvRows
from .log_files import open_text

RETAIL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2})?")  # T: as pandas' ISO export writes it
SLASH_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4}|\d{2}) (\d{1,2}):(\d{2})(?::(\d{2}))?")
EPOCH = dt.datetime(1970, 1, 1)
MS = dt.timedelta(milliseconds=1)


def retail_ms(text: str, day_first: bool) -> int:
    """`YYYY-MM-DD HH:MM[:SS]`, or `M/D/YYYY H:MM[:SS]` (`D/M/YYYY ...` if `day_first`) as the log's csv
    copies have it, taken as UTC (the log's times are the shop's, UK local time), in ms since the epoch. A
    two-digit year (a spreadsheet's short date, `12/1/10 8:26`) is read as strptime's %y reads it: 69-99 the
    1900s, 00-68 the 2000s."""
    if RETAIL_DATE.fullmatch(text):
        try:
            return (dt.datetime.fromisoformat(text) - EPOCH) // MS
        except ValueError as exc:  # "month must be in 1..12" alone does not say which field
            raise ValueError(f"InvoiceDate {text!r} is no date read as YYYY-MM-DD: {exc}") from None
    slashed = SLASH_DATE.fullmatch(text)
    if slashed is None:
        raise ValueError(f"InvoiceDate {text!r} is not YYYY-MM-DD HH:MM[:SS] (or with a T) nor M/D/YYYY H:MM[:SS] "
                         "(or M/D/YY)")
    first, second, year, hour, minute, second_of_minute = (int(g or 0) for g in slashed.groups())
    month, day = (second, first) if day_first else (first, second)
    if len(slashed.group(3)) == 2:
        year += 1900 if year >= 69 else 2000
    try:
        return (dt.datetime(year, month, day, hour, minute, second_of_minute) - EPOCH) // MS
    except ValueError as exc:  # "month must be in 1..12" alone does not say which field
        order = "D/M/YYYY (the file's first date with a field over 12 put the day first)" if day_first else "M/D/YYYY"
        raise ValueError(f"InvoiceDate {text!r} is no date read as {order}: {exc}") from None


def file_is_day_first(path: Path, say: TextIO | None = None) -> bool:
    """Whether the file's slashed dates put the day first: the first date with a field over 12 tells
    (a copy exported with British settings: D/M/YYYY); none such: month first, as the shared csv has it, said on
    `say` (stderr by default): a British copy of days 1 to 12 alone (the log's first 3,000 lines, all of 1 December)
    cannot be told apart, and read month first its dates are other days."""
    decided = _day_first(path)
    if decided is None:
        print(f"warning: {path.name}: no InvoiceDate has a day or month over 12, so the date order cannot be told; "
              "read as M/D/YYYY, as the UCI csv has it: if this copy writes D/M/YYYY (exported with British "
              "settings), its dates are read as other days (rewrite them as YYYY-MM-DD HH:MM)", file=say or sys.stderr)
    return bool(decided)


def _day_first(path: Path) -> bool | None:
    """True: day first; False: month first or ISO; None: only slashed dates with both fields at most 12 (or none)."""
    undecided = False
    with open_text(path) as fh:
        for _, row, _ in CsvRows(fh):  # a row a line: a stray quote costs its line, not the check
            if row is None:
                continue
            slashed = SLASH_DATE.fullmatch((row.get("InvoiceDate") or "").strip())
            if slashed is not None and int(slashed.group(1)) > 12:
                return True
            if slashed is not None and int(slashed.group(2)) > 12:
                return False
            if RETAIL_DATE.fullmatch((row.get("InvoiceDate") or "").strip()):
                # an ISO-dated file: nothing to tell, and no reason to parse all of it again
                return None if undecided else False
            if slashed is not None and int(slashed.group(1)) != int(slashed.group(2)):
                undecided = True  # a date both orders read, as different days
    return None if undecided else False
