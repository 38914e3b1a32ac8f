"""What a recorded log's readers check and say about a file as a whole: the columns each csv format needs,
whether a header names them, and why a file gave no event at all (most often a --format that is not its own)."""

from __future__ import annotations

import csv
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import orjson

from ..contracts import SECONDS_BELOW, Rejection
from ..errors import InputFileError
from .log_files import holds_only_blank_lines, numbered_lines, open_text

FORMATS = ("jsonl", "otto", "csv", "retailrocket", "movielens", "online-retail")

ONLINE_RETAIL_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
                         "CustomerID", "Country")
#: The names UCI's later "Online Retail II" (2009-2011) gives three of those columns; its rows are read alike.
ONLINE_RETAIL_II_NAMES = {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}
#: The columns each csv format needs (a header naming another format's is said to be that format's).
CSV_COLUMNS = {"csv": ("user_id", "item_id", "type", "ts"),
               "retailrocket": ("timestamp", "visitorid", "event", "itemid"),
               "movielens": ("userId", "movieId", "rating", "timestamp"), "online-retail": ONLINE_RETAIL_COLUMNS}


#: What the rejection of an OTTO line that is no session says (none of its events read: a session rejected whole)
OTTO_LINE_UNREAD = "not an OTTO session"
#: The column naming the user in each csv format.
USER_COLUMNS = {"csv": "user_id", "retailrocket": "visitorid", "movielens": "userId", "online-retail": "CustomerID"}


def line_user(fmt: str, row: dict[str, str] | None) -> str | None:
    """The user a rejected csv line names (`row`: its fields, None when they are not one a column each), if any. Its
    dead letter is keyed by it, as a worker keys its own: unkeyed, the user's erasure receipt missed it and a replay
    after the erasure wrote it to the dead-letter topic again. A line of another number of fields names no one: a
    field missing or split by a stray comma moves the others, so its user column may hold another field's value."""
    if row is None:
        return None
    user = (row.get(USER_COLUMNS[fmt]) or "").strip()
    if fmt == "online-retail" and is_missing(user):  # a guest's line, as read_online_retail reads CustomerID
        return None
    if fmt == "online-retail" and user.endswith(".0"):  # as read_online_retail reads CustomerID
        user = user[:-2]
    elif fmt in ("retailrocket", "movielens"):  # as their readers read their ids
        user = as_published(user)
    return user or None


#: How tools write a missing value in a csv field: R's write.csv ("NA"), pandas' astype(str) ("nan", "None",
#: "<NA>"), databases' exports ("NULL"); compared in lower case
MISSING_VALUES = frozenset({"", "na", "nan", "none", "null", "<na>", "n/a"})


def is_missing(text: str) -> bool:
    """Whether a csv field (stripped) holds no value, as a tool that wrote it says so (`MISSING_VALUES`)."""
    return text.lower() in MISSING_VALUES


def one_line(title: str) -> str:
    """A title as one line: a quoted csv field may span lines (a spreadsheet's cell with a line break), and a title
    is shown on one, in reasons and in the CLI's lists."""
    return re.sub(r"\s*[\r\n]+\s*", " ", title.strip())


def is_product_code(code: str) -> bool:
    """Whether an Online Retail stock code names a product: it has a digit (POST, D, M, BANK CHARGES, DOT, ... have
    none), and is neither C2 (carriage) nor a gift voucher (`gift_0001_10`)."""
    return any(ch.isdigit() for ch in code) and code != "C2" and not code.startswith("gift_")


#: The input event's fields the schema types "integer", which JSON Schema lets a whole-valued float be.
_INTEGER_FIELDS = frozenset(("ts", "quantity", "dwell_ms", "schema_version"))


def as_integers(event: dict[str, Any]) -> dict[str, Any]:
    """A valid event with its integer fields written as whole-valued floats (`1.7e12`, `6.0`) made the integers they
    are, as the csv readers send them: a worker reads either alike, replay's checks read integers."""
    for name in _INTEGER_FIELDS.intersection(event):
        if type(event[name]) is float:
            event[name] = int(event[name])
    return event


def whole_number(text: str) -> int | None:
    """`text`'s whole number, written as one or as a whole-valued float (`6.0`, `1433221955914.0`: as a spreadsheet
    or a data frame with a missing value in the column saves it; as CustomerID is read), exactly below 2**53."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() and abs(value) < 2**53 else None


def as_published(text: str) -> str:
    """A field as the published file writes it: a whole-valued float (`4000.0`) as its whole number, else as it is
    (leading zeros kept): a copy a data frame saved names the same user, item and event as the published file."""
    if text.isdigit():
        return text
    number = whole_number(text)
    return text if number is None else str(number)


#: The file's name of each event field a format reads from a column (or key) named otherwise, for the reasons of
#: its rejections: "data.item_id must be ..." did not say which column of a RetailRocket row was wrong.
SOURCE_NAMES = {
    "otto": {"user_id": "session", "item_id": "aid", "session_id": "session",
             "event_id": "session, ts, aid and type joined"},
    "retailrocket": {"user_id": "visitorid", "item_id": "itemid", "ts": "timestamp"},
    "movielens": {"user_id": "userId", "item_id": "movieId", "ts": "timestamp",
                  "event_id": "userId, movieId and timestamp joined"},
    "online-retail": {"user_id": "CustomerID", "item_id": "StockCode", "session_id": "InvoiceNo", "ts": "InvoiceDate",
                      "quantity": "Quantity", "price": "UnitPrice", "event_id": "InvoiceNo and the line number joined"},
}
_SCHEMA_FIELD = re.compile(r"^data\.(\w+)")


def online_retail_ii_said(text: str) -> str:
    """A message naming Online Retail's columns, with the names Online Retail II gives three of them."""
    for new, old in ONLINE_RETAIL_II_NAMES.items():
        text = re.sub(rf"\b{old}\b", new, text)
    return text


def schema_said(message: str, fmt: str) -> str:
    """The event schema's message with its fields named as a file of `fmt` names them."""
    names = SOURCE_NAMES.get(fmt, {})
    return _SCHEMA_FIELD.sub(lambda m: f"{m[1]} (the file's {names[m[1]]})" if m[1] in names else m[1], message)


#: The columns of MovieLens' movies.csv, the catalogue format `movielens`
MOVIES_COLUMNS = ("movieId", "title", "genres")


@dataclass(frozen=True, slots=True)
class LineRejection:
    line: int
    rejection: Rejection


def require_columns(header: list[str], path: Path, required: tuple[str, ...],
                    columns: dict[str, tuple[str, ...]] = CSV_COLUMNS) -> None:
    """An error naming the `required` columns the header lacks, and the format of `columns` (the formats of the
    command that reads it) the header is, or else the event log's format it is (a log given as a catalogue)."""
    missing = [c for c in required if c not in header]
    if missing:
        with open_text(path) as again:  # the line as written (the csv module has stripped its quotes)
            first = again.readline().rstrip("\r\n")
        shown = first if len(first) <= 120 else first[:120] + "..."
        if not first.strip() and holds_only_blank_lines(path):
            raise InputFileError(f"{path}: the file is empty (only blank lines)")
        matching = [fmt for fmt, needed in columns.items() if set(needed) <= set(header)]
        log = [fmt for fmt, needed in CSV_COLUMNS.items() if set(needed) <= set(header)] if not matching else []
        dat = "ratings.dat" if columns is CSV_COLUMNS else "movies.dat"  # an event log or a catalogue
        separator = next((name for mark, name in (("::", f"'::' (MovieLens' older {dat})"), ("\t", "tabs"),
                                                   (";", "';'")) if mark in first and "," not in first), None)
        other_case = {name.lower(): name for name in header}
        hint = (" (it looks like JSON lines: --format jsonl" + (", or otto for OTTO sessions)" if columns == CSV_COLUMNS
                                                                else ")") if first.startswith("{")
                else f" (its header is that of --format {matching[0]})" if matching
                else f" (its names differ in case only: {', '.join(other_case[c.lower()] for c in missing)} must be "
                     f"written {', '.join(missing)})" if all(c.lower() in other_case for c in missing)
                else f" (its header is that of an event log, `replay`/`evaluate` --format {log[0]}: give a file with "
                     f"the columns above)" if log
                else (f" (its fields are separated by {separator}, without a header line: `(echo "
                      f"{','.join(required)}; sed 's/::/,/g' {path.name}) > ratings.csv` writes the ratings.csv this "
                      "format reads)") if first.count("::") >= 3 and required == CSV_COLUMNS["movielens"]
                else (" (it looks like MovieLens' movies.dat, fields separated by '::' without a header line; its "
                      "titles hold commas, so a CSV writer must quote them: `python3 -c \"import csv, sys; w = "
                      "csv.writer(sys.stdout); w.writerow(['movieId', 'title', 'genres']); w.writerows(line.rstrip("
                      f"'\\n').split('::') for line in open(sys.argv[1], encoding='latin-1'))\" {path.name} > "
                      "movies.csv` writes the movies.csv this format reads)") if "::" in first and required == MOVIES_COLUMNS
                else (" (it looks like MovieLens' ratings.dat, fields separated by '::' without a header line: "
                      "--format movielens says how to make the ratings.csv it reads)") if first.count("::") >= 3
                else f" (its fields are separated by {separator}: the csv formats read commas; export it again "
                     f"as CSV with commas and a header line naming the columns; a plain replacement of the "
                     f"separator breaks decimal commas)" if separator else "")
        raise InputFileError(f"{path}: the first line is not a header naming {', '.join(missing)}: {shown!r}; "
                             f"expected columns {', '.join(required)}{hint}")


def skipped_said(counts: dict[str, int]) -> str:
    """What the Online Retail reader left out, in words (`counts`: `OnlineRetailStats.as_dict()`)."""
    return (f"skipped {counts['skipped']:,} lines as the log's README asks: {counts['guest']:,} without a customer, "
            f"{counts['cancelled']:,} cancellations or returns, {counts['not_product']:,} codes that are not products")


def first_rejection(rejected: list[LineRejection]) -> str:
    """The first rejected line's reason and detail (cut short), for a one-line message."""
    return rejection_said(rejected[0].rejection)


def rejection_said(rejection: Rejection) -> str:
    """A rejection's reason and detail (cut short; a line's detail starts with its number), for a one-line message."""
    cut = rejection.detail[:160]
    cut = cut.rsplit(" ", 1)[0] if " " in cut[120:] else cut  # at a word, unless that loses much
    detail = rejection.detail if len(rejection.detail) <= 160 else cut + " ..."
    return f"{rejection.reason} ({detail})"


#: Where the dead letters of a replay or a catalogue load are read, with their reasons
DEAD_LETTERS_SAID = "`stream-app dead-letters` shows the last 20 with their reasons, `--last N` more"


def nothing_read(path: Path, fmt: str, rejected: list[LineRejection], what: str = "events",
                 formats: tuple[str, ...] = FORMATS, check: str = "", option: str = "--format",
                 columns: dict[str, tuple[str, ...]] = CSV_COLUMNS, gave_up: bool = False,
                 skipped: dict[str, int] | None = None) -> str:
    """Why a file gave no event (or item) at all: most often a format (`option`) that is not the file's; `columns`: the
    csv formats' columns, to tell a csv read as jsonl by its header; `gave_up`: the reader stopped after the first
    GIVE_UP_AFTER lines, all rejected (`give_up_early`); `skipped`: what the Online Retail reader left out on purpose
    (`OnlineRetailStats.as_dict()`)."""
    if not rejected and holds_only_blank_lines(path):
        return f"{path}: the file is empty (only blank lines)"
    if not rejected and fmt in columns and len([*zip(range(2), numbered_lines(path))]) == 1:
        return f"{path}: only a header line, no {what}"
    if skipped and skipped["skipped"]:  # every line the reader did not skip on purpose was rejected
        also = f"; {len(rejected):,} rejected, the first as {first_rejection(rejected)}" if rejected else ""
        return f"{path}: no {what} left once lines were skipped: {skipped_said(skipped)}{also}"
    hint = f"is {option} right? one of {', '.join(formats)}{check}"
    if not rejected:
        return f"{path}: no {what} in it as {fmt} ({hint})"
    own = format_of_first_line(path, formats, columns) if fmt in ("jsonl", "otto") else None
    if own is not None and own != fmt:
        said = f"its first line is a header of {option} {own}" if own in columns else \
            "its lines are OTTO sessions (JSON with session and events)"
        hint = f"{said}: give {option} {own}"
    elif fmt in ("jsonl", "otto") and next(numbered_lines(path), (0, b""))[1].lstrip().startswith(b"["):
        hint = ("the file is one JSON array, not JSON lines: write each of its elements on a line of its own "
                "(`jq -c '.[]' FILE > FILE.jsonl`)")
    elif fmt in ("jsonl", "otto") and "movielens" in formats \
            and next(numbered_lines(path), (0, b""))[1].count(b"::") >= 3:
        hint = ("it looks like MovieLens' ratings.dat (fields separated by '::'): --format movielens says how to make "
                "the ratings.csv it reads")
    elif all(r.rejection.reason == "schema_violation" for r in rejected):  # read as the format, not as records
        hint = f"the lines read as {fmt} but not as valid {what} (or {hint})"
    # an OTTO line is a session: each of its events may be a rejection of its own
    count = len({r.line for r in rejected})
    lines = f"its first {GIVE_UP_AFTER:,} lines all rejected (not read further)" if gave_up else \
        f"all {count:,} lines rejected" if count > 1 else "its one line rejected"
    return f"{path}: no {what} read as {fmt}: {lines}, the first as {first_rejection(rejected)}; {hint}"


def format_of_first_line(path: Path, formats: tuple[str, ...], columns: dict[str, tuple[str, ...]]) -> str | None:
    """The format the file's first line says it is in: a csv header naming a format's `columns`, or an OTTO session
    (JSON with `session` and `events`); None if it says none of `formats`."""
    first = next(numbered_lines(path), None)
    if first is None:
        return None
    text = first[1].decode("utf-8", errors="replace")
    if text.lstrip().startswith("{"):
        try:
            record = orjson.loads(first[1])
        except orjson.JSONDecodeError:
            return None
        return "otto" if "otto" in formats and isinstance(record, dict) and {"session", "events"} <= set(record) \
            else None
    try:
        header = {name.strip() for name in next(csv.reader([text]))}
    except (csv.Error, StopIteration):
        return None
    return next((name for name, needed in columns.items() if name in formats and set(needed) <= header), None)


#: Non-blank lines a log's reader reads without an event, all rejected, before it gives up on the file: it is not in
#: the format it is read as, and the rest of it (each line's rejection held) would only cost time and memory.
GIVE_UP_AFTER = 1_000


def give_up_early(reads: Iterator[tuple[int, Any]], path: Path, fmt: str, skipped: Callable[[], int] = lambda: 0
                  ) -> Iterator[tuple[int, Any]]:
    """`reads` (a log reader's events and LineRejections, each with its line) as they come, but the error
    `nothing_read` gives once GIVE_UP_AFTER lines were rejected before any event (and none skipped on purpose,
    `skipped()`)."""
    held: list[LineRejection] = []
    lines: set[int] = set()  # an OTTO line may give several rejections
    for numbered in reads:
        yield numbered
        read = numbered[1]
        if not isinstance(read, LineRejection):
            break
        held.append(read)
        lines.add(read.line)
        if len(lines) >= GIVE_UP_AFTER and not skipped():
            raise InputFileError(nothing_read(path, fmt, held, gave_up=True))
    yield from reads


def warn_if_seconds(fmt: str, first_ts: int | None, last_ts: int | None, say: TextIO | None = None) -> None:
    """Warn (on `say`, stderr by default) when the ts of a log whose format takes ms as written (jsonl, csv,
    RetailRocket's events.csv) are all below SECONDS_BELOW, or only its earliest are (seconds among milliseconds, which
    sort first, decades early): replay, evaluate and train read it the same."""
    if first_ts is None or last_ts is None or fmt not in ("jsonl", "csv", "retailrocket") or first_ts >= SECONDS_BELOW:
        return
    if last_ts < SECONDS_BELOW:
        print("warning: every ts of this log is below 100,000,000,000 (before 1973 in milliseconds): if they "
              "are seconds, multiply them by 1000 (ts is milliseconds since 1970)", file=say or sys.stderr)
    else:
        print(f"warning: this log's earliest ts, {first_ts:,}, is below 100,000,000,000 (before 1973 in milliseconds) "
              f"and its latest, {last_ts:,}, is not: if some ts are seconds, multiply those by 1000 (ts is "
              "milliseconds since 1970); they sort decades before the rest", file=say or sys.stderr)


def unwritable_number(record: dict[str, Any]) -> str | None:
    """Why a catalogue record's number cannot be written as JSON, if one cannot: JSON has no nan or inf (the record
    would reach the topic with null, which the workers refuse), and orjson writes no integer past 64 bits (a csv
    line's, read whole)."""
    numbers = [*((name, record.get(name)) for name in ("price", "listed_at", "updated_at")),
               *((f"attributes.{key}", value) for key, value in (record.get("attributes") or {}).items())]
    for name, value in numbers:
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name} {value!r} is not a finite number"
        if isinstance(value, int) and not -2**63 <= value < 2**64:
            return f"{name} {value} is past 64 bits: give a time in milliseconds since 1970"
    return None


def otto_ms(ts: Any) -> int:
    """OTTO's sessions as published are in ms; a republished copy in seconds (below SECONDS_BELOW, before 1973 in ms)
    is read as seconds (a fraction of one to the nearest ms: a float product may fall a hair below it); a fraction
    of a ms is refused, as the other formats refuse a fraction of their unit."""
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise ValueError(f"ts {ts!r} is not a number")
    if ts >= SECONDS_BELOW and ts != int(ts):
        raise ValueError(f"ts {ts!r} is not a whole number of milliseconds")
    return round(ts * 1000) if ts < SECONDS_BELOW else int(ts)


def otto_id(aid: Any, what: str = "aid") -> str:
    """An OTTO id (`aid` or `session`): a whole number or a non-empty text. A whole-valued float (`1492293.0`, as a
    data frame may write one) is the published whole number, as in the csv formats, while a float holds it exactly
    (below 2**53; orjson reads a number over 64 bits as a float too, which would merge ids that differ in their last
    digits)."""
    if isinstance(aid, float) and aid.is_integer():
        if abs(aid) >= 2**63:  # an integer past 64 bits, which orjson reads as a float: its digits are gone
            raise ValueError(f"{what} is a whole number past 64 bits, which JSON readers do not keep exactly: write "
                             f"such ids as text (\"{what}\": \"...\")")
        if abs(aid) >= 2**53:  # a float that large does not hold every whole number
            raise ValueError(f"{what} {aid!r} is a float past 2**53, which does not hold every whole number: write "
                             "such ids as integers or as text")
        return str(int(aid))
    if isinstance(aid, bool) or not isinstance(aid, (int, str)) or aid == "":
        raise ValueError(f"{what} {aid!r} is not an id")
    return str(aid)
