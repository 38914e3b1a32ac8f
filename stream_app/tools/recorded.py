"""Readers of recorded event logs, as users have them: our own jsonl, OTTO sessions, csv,
RetailRocket `events.csv`, MovieLens `ratings.csv` and the UCI Online Retail csv. Every reader
yields input events (schemas/v1/input-event) or rejections for the lines it cannot turn into one;
event_ids are deterministic where the format has none, so replaying a file twice is idempotent.
Gzipped files (`.gz`, recognised by their magic bytes) are read transparently."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import fastjsonschema
import orjson

from ..contracts import Rejection, Source, as_written, input_users, plain_message, validator
from ..errors import InputFileError
from ..json_names import repeated_name
from .csv_rows import CsvRows
from .log_checks import (
    CSV_COLUMNS,
    FORMATS,
    ONLINE_RETAIL_COLUMNS,
    ONLINE_RETAIL_II_NAMES,
    OTTO_LINE_UNREAD,
    SECONDS_BELOW,
    LineRejection,
    as_integers,
    as_published,
    give_up_early,
    is_missing,
    is_product_code,
    line_user,
    nothing_read,
    online_retail_ii_said,
    otto_id,
    otto_ms,
    require_columns,
    schema_said,
    whole_number,
)
from .log_files import check_file, numbered_lines, open_text, reading_as
from .retail_dates import file_is_day_first, retail_ms

OTTO_TYPES = {"clicks": ("click", None), "carts": ("purchase", "cart"), "orders": ("purchase", "order")}
#: The columns of RetailRocket's events.csv as published, in its order (the event ids hash them)
RETAILROCKET_COLUMNS = ("timestamp", "visitorid", "event", "itemid", "transactionid")
RETAILROCKET_TYPES = {"view": ("browse", None), "addtocart": ("purchase", "cart"),
                      "transaction": ("purchase", "order")}


Read = dict[str, Any] | LineRejection
Numbered = tuple[int, Read]  # (line, read): the line of the file a read came from, named in its dead letter


def _reject(path: Path, line: int, reason: str, detail: str, raw: bytes, user: Any = None) -> LineRejection:
    """A line's dead letter, keyed by the user it names (`user` if a text, else the user_id a broken JSON line spells
    out), as a worker keys its own: a consumer of the topic, and the user's erasure, find it by the key."""
    if not (isinstance(user, str) and user):
        named = input_users(None, raw)[0]
        user = named.pop() if len(named) == 1 else None
    return LineRejection(line, Rejection(reason, f"line {line}: {detail}", Source(str(path)),
                                         user.encode() if user else None, raw))


def _why(exc: Exception) -> str:
    """A line's reading error as its reader would say it (a repr showed the exception's class and quotes)."""
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]!r} field"
    if isinstance(exc, orjson.JSONDecodeError):
        return f"not JSON ({exc})"
    return str(exc)


#: Other logs' words for this project's event types (`type`), and what to write instead.
TYPE_HINTS = {
    **dict.fromkeys(("view", "views", "pageview", "page_view", "visit"), "for a view, write browse"),
    **dict.fromkeys(("clicks", "tap"), "write click"),
    **dict.fromkeys(("addtocart", "add_to_cart", "cart", "carts"),
                    "for an add to cart, write purchase with the stage column cart"),
    **dict.fromkeys(("transaction", "order", "orders", "buy", "checkout", "purchases"),
                    "for an order, write purchase (with the stage column order)"),
}


def _checked(path: Path, line: int, event: dict[str, Any], raw: bytes, fmt: str = "",
             said: Callable[[str], str] = str) -> Read:
    """The event if the schema takes it, else its rejection (`said`: the file's own names put in the message)."""
    try:
        validator("input-event")(event)
    except fastjsonschema.JsonSchemaValueException as exc:
        read = as_written(raw, event) if fmt == "jsonl" else event  # its line's JSON: a number past 64 bits as written
        message = said(schema_said(plain_message("input-event", read, exc.message), fmt))
        kind = event.get("type") if isinstance(event, dict) else None
        if isinstance(kind, str) and kind.strip().lower() in TYPE_HINTS:  # another log's word for a type
            message += f" ({TYPE_HINTS[kind.strip().lower()]})"
        if fmt == "jsonl" and isinstance(event, dict) and not {"event_id", "schema_version"} <= event.keys():
            message += (" (each event of a jsonl log carries its own unique event_id and \"schema_version\": 1; a csv "
                        "log with the columns user_id,item_id,type,ts gets its ids made: --format csv)")
        ts = event.get("ts") if isinstance(event, dict) else None
        if type(ts) is int and 10**14 <= ts < 10**17 and (exc.name, exc.rule) == ("data.ts", "maximum"):  # 1973-5138 in µs
            message += " (it looks like microseconds: ts is milliseconds since 1970, divide by 1000)"
        return _reject(path, line, "schema_violation", message, raw,
                       event.get("user_id") if isinstance(event, dict) else None)
    # the schema's bounds let NaN through and JSON has no inf: either would reach the topic as null
    infinite = next((name for name, value in event.items() if isinstance(value, float) and not math.isfinite(value)),
                    None)
    if infinite is not None:
        return _reject(path, line, "schema_violation", f"{infinite} {event[infinite]!r} is not a finite number", raw,
                       event["user_id"])
    return event


def _not_utf8(path: Path, line: int, raw: bytes) -> LineRejection | None:
    """A JSON line that is not UTF-8, rejected naming the byte (orjson says "surrogates not allowed")."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _reject(path, line, "not_utf8", f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not UTF-8: "
                       "JSON is UTF-8 text; save the log as UTF-8", raw)
    return None


def read_jsonl(path: Path) -> Iterator[Numbered]:
    for line, raw in numbered_lines(path):
        if (not_text := _not_utf8(path, line, raw)) is not None:
            yield line, not_text
            continue
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield line, _reject(path, line, "invalid_json", f"not JSON: {exc}", raw)
            continue
        if (repeated := repeated_name(raw, event)) is not None:
            yield line, _reject(path, line, "invalid_json", repeated, raw)
            continue
        checked = _checked(path, line, event, raw, "jsonl")
        yield line, checked if isinstance(checked, LineRejection) else as_integers(checked)


def read_otto(path: Path) -> Iterator[Numbered]:
    """Event ids come from the event: `otto-{session}-{ts}-{aid}-{type}`, and `-2`, `-3`... for the second, third
    identical event of the same line; no state across lines, so a session continued in another file (a dump split by
    day) keeps distinct ids and the same event read again keeps its id."""
    for line, raw in numbered_lines(path):
        if (not_text := _not_utf8(path, line, raw)) is not None:
            yield line, not_text
            continue
        user = None
        try:
            session = orjson.loads(raw)
            if not isinstance(session, dict):
                raise TypeError(f"a line is an object with session and events, not {type(session).__name__}")
            user = otto_id(session["session"], "session")  # a whole number or a text, as an item id
            events = session["events"]
            if not isinstance(events, list):
                raise TypeError(f"'events' is {type(events).__name__}, not a list")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:  # JSON, or JSON of another shape
            reason = "invalid_json" if isinstance(exc, orjson.JSONDecodeError) else "schema_violation"
            yield line, _reject(path, line, reason, f"{OTTO_LINE_UNREAD}: {_why(exc)}", raw, user)
            continue
        repeats: dict[str, int] = {}  # an id -> how often it came in this line
        for i, e in enumerate(events):
            try:
                if not isinstance(e, dict):
                    raise TypeError(f"an event is an object with aid, ts and type, not {type(e).__name__}")
                kind, stage = _kind(OTTO_TYPES, e["type"])
                ts, aid = otto_ms(e["ts"]), otto_id(e["aid"])
            except (KeyError, TypeError, ValueError) as exc:
                yield line, _reject(path, line, "schema_violation", f"event {i} of session {user}: {_why(exc)}",
                                    orjson.dumps(e), user)
                continue
            event_id = f"otto-{user}-{ts}-{aid}-{e['type']}"
            repeats[event_id] = seen = repeats.get(event_id, 0) + 1
            event = {"event_id": event_id if seen == 1 else f"{event_id}-{seen}", "user_id": user, "item_id": aid,
                     "type": kind, "ts": ts, "session_id": user, "schema_version": 1}
            if stage:
                event["stage"] = stage
            yield line, _checked(path, line, event, raw, "otto")


def _kind(types: dict[str, tuple[str, str | None]], name: Any) -> tuple[str, str | None]:
    """(type, stage) of a format's event type name, or a ValueError naming the ones it has."""
    if not isinstance(name, str) or name not in types:
        raise ValueError(f"event type {name!r} is not one of {', '.join(types)}")
    return types[name]


def _log_rows(fh: Any, path: Path, required: tuple[str, ...], multiline: bool = False,
              columns: dict[str, tuple[str, ...]] = CSV_COLUMNS) -> CsvRows:
    """The data rows of a log's csv (one line each: csv_rows.py; `multiline`: a quoted field may span lines), once
    its header names every `required` column (`columns`: the reading command's formats, to name the file's)."""
    rows = CsvRows(fh, multiline)
    if required == ONLINE_RETAIL_COLUMNS and set(ONLINE_RETAIL_II_NAMES) <= set(rows.header):
        rows.header, rows.renamed = [ONLINE_RETAIL_II_NAMES.get(name, name) for name in rows.header], True
    require_columns(rows.header, path, required, columns)
    return rows


def _read_csv(path: Path, fmt: str, convert: Callable[[dict[str, str], int, bytes], dict[str, Any]]
              ) -> Iterator[Numbered]:
    with open_text(path) as fh:
        rows = _log_rows(fh, path, CSV_COLUMNS[fmt])
        for line, row, problem in rows:
            if row is None:
                yield line, _reject(path, line, "schema_violation", problem, rows.line_text(line).encode())
                continue
            raw = ",".join(row.values()).encode()
            try:
                event = convert(row, line, raw)
            except (KeyError, TypeError, ValueError) as exc:
                yield line, _reject(path, line, "schema_violation", f"cannot read the row ({exc})", raw,
                                    line_user(fmt, row))
                continue
            yield line, _checked(path, line, event, raw, fmt)


def _whole(row: dict[str, str], name: str, unit: str | None = None) -> int:
    """A column's whole number (of `unit`, when it has one), or a ValueError naming the column."""
    found = whole_number(row[name])
    if found is None:
        raise ValueError(f"{name} {row[name]!r} is not a whole number" + (f" of {unit}" if unit else ""))
    return found


def _csv_event(row: dict[str, str], line: int, raw: bytes) -> dict[str, Any]:
    row = {name: value.strip() for name, value in row.items()}  # a file written with ", " between its fields
    event: dict[str, Any] = {"user_id": row["user_id"], "item_id": row["item_id"], "type": row["type"],
                             "ts": _whole(row, "ts", "ms"), "schema_version": 1}
    for name, read in (("session_id", None), ("category", None), ("price", _finite), ("quantity", _whole),
                       ("dwell_ms", _whole), ("stage", None)):
        if row.get(name):
            event[name] = row[name] if read is None else read(row, name)
    # without an event_id column, the id is the event's as read, not its line's: a filtered, re-sorted or
    # re-written copy (columns reordered, ", ") keeps its ids, so replaying both applies each event once, and a row
    # repeated exactly is one event logged twice (as RetailRocket's published file has them)
    as_read = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    return {"event_id": row.get("event_id") or f"csv-{hashlib.blake2b(as_read, digest_size=10).hexdigest()}", **event}


def _retailrocket_event(row: dict[str, str], line: int, raw: bytes) -> dict[str, Any]:
    row = {name: value.strip() for name, value in row.items()}  # as the header's names: `, ` is not in a field
    kind, stage = _kind(RETAILROCKET_TYPES, row["event"])
    # by content, not line: the published file repeats some rows exactly (one event logged twice), and a
    # re-sorted copy keeps its ids; the published columns in their published order (the ids of the published
    # file), so a copy with its columns reordered keeps them too, and one whose numbers a data frame wrote as floats
    # (transactionid is empty on most rows, so pandas reads it as float64 and writes 4000.0): the published text of
    # each number read
    ts = _whole(row, "timestamp", "ms")
    published = ",".join(as_published(row.get(name) or "") for name in RETAILROCKET_COLUMNS).encode()
    event: dict[str, Any] = {"event_id": f"rr-{hashlib.blake2b(published, digest_size=10).hexdigest()}",
                             "user_id": as_published(row["visitorid"]), "item_id": as_published(row["itemid"]),
                             "type": kind, "ts": ts, "schema_version": 1}
    if event["ts"] < 0:  # "multiply by 1000" would not mend it
        raise ValueError(f"timestamp {row['timestamp']} is before 1970: events.csv has milliseconds since 1970")
    if event["ts"] < SECONDS_BELOW:  # before 1973 in ms: read as ms, a row in seconds would sort first, unsaid
        raise ValueError(f"timestamp {row['timestamp']} looks like seconds: RetailRocket's events.csv has milliseconds "
                         "since 1970 (multiply by 1000)")
    if stage:
        event["stage"] = stage
    return event


def _movielens_event(row: dict[str, str], line: int, raw: bytes) -> dict[str, Any]:
    # A rating is an explicit interaction: a click, with the rating kept in the context.
    row = {name: value.strip() for name, value in row.items()}  # " 1" is movie 1, not another item
    seconds = _whole(row, "timestamp", "seconds")
    if seconds >= SECONDS_BELOW:  # year 5138 in seconds: refused by the schema's bound, which would not say why
        raise ValueError(f"timestamp {row['timestamp']} looks like milliseconds: MovieLens' ratings.csv has seconds "
                         "since 1970 (divide by 1000)")
    user, movie = as_published(row["userId"]), as_published(row["movieId"])  # `1.0` from a data frame's copy: user 1
    return {"event_id": f"ml-{user}-{movie}-{seconds}", "user_id": user, "item_id": movie, "type": "click",
            "ts": seconds * 1000,
            "context": {"rating": _movielens_rating(row)}, "schema_version": 1}


def _movielens_rating(row: dict[str, str]) -> float:
    """The row's rating, or a ValueError: MovieLens rates 0.5 to 5.0 in half stars (ml-100k and ml-1m in whole stars
    1 to 5, which fit); any other value is another file's scale or a broken row."""
    rating = _finite(row, "rating")
    if not (0.5 <= rating <= 5.0 and (rating * 2).is_integer()):
        raise ValueError(f"rating {row['rating']!r} is not a MovieLens rating: 0.5 to 5.0 in steps of 0.5")
    return rating


def _finite(row: dict[str, str], name: str) -> float:
    """A column's number, or a ValueError naming the column (JSON has no nan nor infinity)."""
    try:
        value = float(row[name])
    except ValueError:
        raise ValueError(f"{name} {row[name]!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} {row[name]!r} is not a finite number")
    return value


@dataclass
class OnlineRetailStats:
    """What `read_online_retail` did with the data lines of a file (complete once its iterator is
    exhausted). Every line counts once, under the first rule that applies, in this order: guest,
    cancelled, not_product, then rejected (malformed) or an event; so
    lines == events + guest + cancelled + not_product + rejected."""

    lines: int = 0
    events: int = 0
    guest: int = 0  # no CustomerID (empty, or NA / nan as R or pandas write it): no user to key by
    cancelled: int = 0  # InvoiceNo starting with "C", or Quantity <= 0
    not_product: int = 0  # StockCode without a digit (POST, D, M, BANK CHARGES, DOT, ...), C2 (carriage), gift_...
    rejected: int = 0  # malformed (unparseable quantity, date or price, wrong column count): a LineRejection

    @property
    def skipped(self) -> int:
        return self.guest + self.cancelled + self.not_product

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"skipped": self.skipped}


def read_online_retail(path: str | Path, stats: OnlineRetailStats | None = None) -> Iterator[Read]:
    """`numbered_online_retail` without the line numbers."""
    return (read for _, read in numbered_online_retail(path, stats))


def numbered_online_retail(path: str | Path, stats: OnlineRetailStats | None = None) -> Iterator[Numbered]:
    """The UCI Online Retail csv as published (optionally gzipped): one purchase (stage order) per
    kept line, keyed by the customer, with the invoice as the session. Guest lines (no CustomerID),
    cancellations and non-product codes are skipped and counted in `stats`; malformed lines are
    rejections. The lines of one invoice share its timestamp and keep their file order."""
    path = Path(path)
    stats = stats if stats is not None else OnlineRetailStats()
    with open_text(path) as fh:
        rows = _log_rows(fh, path, ONLINE_RETAIL_COLUMNS)
        day_first = file_is_day_first(path)  # a pass over the dates: once the header is the format's
        said = online_retail_ii_said if rows.renamed else str  # columns named as the file names them
        last_date, last_ms = "", 0  # the lines of an invoice repeat its date
        for line, row, problem in rows:
            stats.lines += 1
            if row is None:
                stats.rejected += 1
                yield line, _reject(path, line, "schema_violation", problem, rows.line_text(line).encode())
                continue
            customer = row["CustomerID"].strip()
            if is_missing(customer):  # empty as published; NA or nan as R or pandas write it
                stats.guest += 1
                continue
            invoice = row["InvoiceNo"].strip()
            if invoice.startswith("C"):
                stats.cancelled += 1
                continue
            code = row["StockCode"].strip()
            raw = ",".join(row.values()).encode()
            user = line_user("online-retail", row)
            if not invoice or not code:  # malformed, not a kind of line the log has
                stats.rejected += 1
                yield line, _reject(path, line, "schema_violation",
                                    said(f"{'InvoiceNo' if not invoice else 'StockCode'} is empty"), raw, user)
                continue
            if not is_product_code(code):
                stats.not_product += 1
                continue
            try:
                quantity = _whole(row, "Quantity")
                if quantity <= 0:
                    stats.cancelled += 1
                    continue
                date = row["InvoiceDate"].strip()
                if date != last_date:
                    last_ms, last_date = retail_ms(date, day_first), date
                price = _finite(row, "UnitPrice")
            except ValueError as exc:
                stats.rejected += 1
                yield line, _reject(path, line, "schema_violation", said(f"cannot read the row ({exc})"), raw, user)
                continue
            event = {"event_id": f"or-{invoice}-{line}",
                     "user_id": user,
                     "item_id": code, "type": "purchase", "stage": "order", "ts": last_ms,
                     "quantity": quantity, "price": price, "session_id": invoice, "schema_version": 1}
            checked = _checked(path, line, event, raw, "online-retail", said)
            if isinstance(checked, LineRejection):
                stats.rejected += 1
            else:
                stats.events += 1
            yield line, checked


def read_log(path: str | Path, fmt: str, stats: OnlineRetailStats | None = None) -> Iterator[Read]:
    """Events and rejections of a recorded log, in file order (`stats`: what the Online Retail reader skipped)."""
    return (read for _, read in numbered_reads(path, fmt, stats))


def numbered_reads(path: str | Path, fmt: str, stats: OnlineRetailStats | None = None) -> Iterator[Numbered]:
    """`read_log`'s reads, each with the line of the file it came from."""
    path = Path(path)
    check_file(path)
    if fmt == "online-retail":
        stats = stats if stats is not None else OnlineRetailStats()
        return give_up_early(numbered_online_retail(path, stats), path, fmt, lambda: stats.skipped)
    readers: dict[str, Callable[[], Iterator[Numbered]]] = {
        "jsonl": lambda: read_jsonl(path), "otto": lambda: read_otto(path),
        "csv": lambda: _read_csv(path, "csv", _csv_event),
        "retailrocket": lambda: _read_csv(path, "retailrocket", _retailrocket_event),
        "movielens": lambda: _read_csv(path, "movielens", _movielens_event)}
    if fmt not in readers:
        raise InputFileError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    return give_up_early(readers[fmt](), path, fmt)


def own_stats(fmt: str, stats: OnlineRetailStats | None) -> OnlineRetailStats | None:
    """`stats`, or counts of its own for the Online Retail reader (to say why a log gave no event)."""
    return OnlineRetailStats() if stats is None and fmt == "online-retail" else stats


def nothing_in(path: str | Path, fmt: str, rejected: list[LineRejection],
               stats: OnlineRetailStats | None) -> InputFileError:
    """The error of a log that gave no event: `nothing_read`, with what the Online Retail reader skipped."""
    return InputFileError(nothing_read(Path(path), fmt, rejected, skipped=stats.as_dict() if stats else None))


def load_sorted(path: str | Path, fmt: str, stats: OnlineRetailStats | None = None
                ) -> tuple[list[dict[str, Any]], list[LineRejection]]:
    """The whole log in timestamp order (stable: ties keep file order), and its rejected lines."""
    events, rejected, stats = [], [], own_stats(fmt, stats)  # as the signature says
    with reading_as(path, fmt):
        for read in read_log(path, fmt, stats):
            (rejected if isinstance(read, LineRejection) else events).append(read)
    if not events:
        raise nothing_in(path, fmt, rejected, stats)
    events.sort(key=lambda e: e["ts"])
    return events, rejected
