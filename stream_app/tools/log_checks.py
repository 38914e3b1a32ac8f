"""What a recorded log's readers check and say about a file as a whole: the columns each csv format needs,
whether a header names them, and why a file gave no event at all (most often a --format that is not its own)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..contracts import Rejection
from ..errors import InputFileError
from .log_files import holds_only_blank_lines, numbered_lines, open_text

FORMATS = ("jsonl", "otto", "csv", "retailrocket", "movielens", "online-retail")

ONLINE_RETAIL_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
                         "CustomerID", "Country")
#: The columns each csv format needs (a header naming another format's is said to be that format's).
CSV_COLUMNS = {"csv": ("user_id", "item_id", "type", "ts"), "retailrocket": ("timestamp", "visitorid", "event", "itemid"),
               "movielens": ("userId", "movieId", "rating", "timestamp"), "online-retail": ONLINE_RETAIL_COLUMNS}


@dataclass(frozen=True, slots=True)
class LineRejection:
    line: int
    rejection: Rejection


def require_columns(header: list[str], path: Path, required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        with open_text(path) as again:  # the line as written (the csv module has stripped its quotes)
            first = again.readline().rstrip("\r\n")
        shown = first if len(first) <= 120 else first[:120] + "..."
        if not first.strip() and holds_only_blank_lines(path):
            raise InputFileError(f"{path}: the file is empty (only blank lines)")
        matching = [fmt for fmt, columns in CSV_COLUMNS.items() if set(columns) <= set(header)]
        separator = next((name for mark, name in (("::", "'::' (MovieLens' older ratings.dat)"), ("\t", "tabs"),
                                                   (";", "';'")) if mark in first and "," not in first), None)
        hint = (" (it looks like JSON lines: --format jsonl, or otto for OTTO sessions)" if first.startswith("{")
                else f" (its header is that of --format {matching[0]})" if matching
                else f" (its fields are separated by {separator}: the csv formats read commas; convert it, e.g. "
                     f"with `sed`, and give it a header line)" if separator else "")
        raise InputFileError(f"{path}: the first line is not a header naming {', '.join(missing)}: {shown!r}; "
                             f"expected columns {', '.join(required)}{hint}")


def first_rejection(rejected: list[LineRejection]) -> str:
    """The first rejected line's reason and detail (cut short), for a one-line message."""
    first = rejected[0].rejection
    detail = first.detail if len(first.detail) <= 160 else first.detail[:160] + "..."
    return f"{first.reason} ({detail})"


def nothing_read(path: Path, fmt: str, rejected: list[LineRejection], what: str = "events",
                 formats: tuple[str, ...] = FORMATS, check: str = "", option: str = "--format") -> str:
    """Why a file gave no event (or item) at all: most often a format (`option`) that is not the file's."""
    if not rejected and holds_only_blank_lines(path):
        return f"{path}: the file is empty (only blank lines)"
    if not rejected and fmt in CSV_COLUMNS and len([*zip(range(2), numbered_lines(path))]) == 1:
        return f"{path}: only a header line, no {what}"
    hint = f"is {option} right? one of {', '.join(formats)}{check}"
    if not rejected:
        return f"{path}: no {what} in it as {fmt} ({hint})"
    if all(r.rejection.reason == "schema_violation" for r in rejected):  # read as the format, not as records
        hint = f"the lines read as {fmt} but lack what the schema asks (or {hint})"
    return (f"{path}: no {what} read as {fmt}: all {len(rejected):,} lines rejected, the first as "
            f"{first_rejection(rejected)}; {hint}")
