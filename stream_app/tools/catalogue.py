"""The item catalogue: what each item is, in words (schemas/v1/item), as users have it.

Readers turn a catalogue file into item records (`jsonl`: a record per line; `csv`: columns item_id, title and
optional description, brand, price, category_path "a > b > c"; `online-retail`: the UCI Online Retail csv, StockCode ->
item_id, its most frequent Description -> title), each validated: a bad one is a rejection with its line, never raised.
"""

from __future__ import annotations

import collections
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterator

import orjson
from fastjsonschema import JsonSchemaException

from .. import contracts
from ..config import Settings
from ..contracts import Rejection, Source, plain_message, validator
from ..core.content import item_title
from ..errors import InputFileError
from ..json_names import repeated_name
from ..logs import plural
from .log_checks import (
    DEAD_LETTERS_SAID,
    MOVIES_COLUMNS,
    ONLINE_RETAIL_COLUMNS,
    LineRejection,
    as_published,
    first_rejection,
    is_product_code,
    nothing_read,
    one_line,
    online_retail_ii_said,
    unwritable_number,
)
from .log_files import check_file, open_text, reading_as
from .recorded import _finite, _log_rows, _reject
from .retail_dates import file_is_day_first, retail_ms

FORMATS = ("jsonl", "csv", "online-retail", "movielens")
#: The columns of the csv formats (a catalogue's first line naming them, read as jsonl, is said to be one of them)
CATALOGUE_COLUMNS = {"csv": ("item_id", "title"), "online-retail": ONLINE_RETAIL_COLUMNS,
                     "movielens": MOVIES_COLUMNS}
NO_GENRES = "(no genres listed)"  # MovieLens' word for a film without genres

Read = dict[str, Any] | LineRejection
#: Rejected records before the first item after which a catalogue stops being read: a file of another format would
#: keep every line of it in memory (with its bytes, for its dead letter) before it said so.
REJECTED_BEFORE_AN_ITEM = 10_000
#: The largest item record a catalogue file may give, as JSON: under Apache Kafka's default record limit (1 MiB), past
#: which the broker refuses it after the records before it went (and every load again the same).
ITEM_RECORD_BYTES = 1_000_000
#: The columns the csv catalogue format reads; any other is said (a `Price` or `Description` would go unread).
CSV_CATALOGUE_COLUMNS = ("item_id", "title", "description", "brand", "category_path", "price", "listed_at",
                         "updated_at")


def check_item(record: Any, source: Source, raw: bytes) -> dict[str, Any] | Rejection:
    try:
        validator("item")(record)
    except JsonSchemaException as exc:
        return Rejection("schema_violation", plain_message("item", contracts.as_written(raw, record), exc.message),
                         source, None, raw)
    unwritable = unwritable_number(record)
    if unwritable:
        return Rejection("schema_violation", unwritable, source, None, raw)
    if (size := len(orjson.dumps(record))) > ITEM_RECORD_BYTES:
        return Rejection("payload_too_large", f"the record is {size:,} bytes as JSON, over {ITEM_RECORD_BYTES:,} (Apache "
                         "Kafka's default record limit): shorten its description or attributes", source, None, raw)
    listed = record.get("listed_at")  # a float (a jsonl line's): maybe an integer past 64 bits, named as written
    listed = contracts.as_written(raw, record).get("listed_at") if isinstance(listed, float) else listed
    if listed is not None and (ahead := contracts.listed_too_far_ahead(listed, int(time.time() * 1000))):
        return Rejection("timestamp_out_of_range", ahead, source, None, raw)
    return record


def read_catalogue(path: str | Path, fmt: str) -> Iterator[Read]:
    """Item records and rejections of a catalogue file, in file order (the last record of an item wins)."""
    path = Path(path)
    check_file(path)
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "csv":
        return _read_csv(path)
    if fmt == "online-retail":
        return _read_online_retail(path)
    if fmt == "movielens":
        return _read_movielens(path)
    raise InputFileError(f"unknown catalogue format {fmt!r}: use one of {', '.join(FORMATS)}")


def load_catalogue(path: str | Path, fmt: str, option: str = "--format"
                   ) -> tuple[dict[str, dict[str, Any]], list[LineRejection]]:
    """item_id -> its latest record, and the rejected lines; an error when no record is an item."""
    items: dict[str, dict[str, Any]] = {}
    rejected: list[LineRejection] = []
    with reading_as(path, fmt):
        for read in read_catalogue(path, fmt):
            if isinstance(read, LineRejection):
                rejected.append(read)
                if not items and len(rejected) >= REJECTED_BEFORE_AN_ITEM:  # a wrong --format: not the whole file
                    break
            else:
                items[read["item_id"]] = read
    if not items:
        stopped = f" (reading stopped there: {len(rejected):,} rejections and no item)" \
            if len(rejected) >= REJECTED_BEFORE_AN_ITEM else ""
        raise InputFileError(nothing_read(Path(path), fmt, rejected, "items", FORMATS,
                                          "; every record needs an item_id and a title, schemas/v1/item.schema.json",
                                          option, CATALOGUE_COLUMNS) + stopped)
    return items, rejected


def rejected_note(rejected: list[LineRejection]) -> str:
    return f"{plural(len(rejected), 'catalogue record')} rejected, the first as {first_rejection(rejected)}"


def _checked(path: Path, line: int, record: Any, raw: bytes) -> Read:
    checked = check_item(record, Source(str(path)), raw)
    if isinstance(checked, Rejection):
        return LineRejection(line, Rejection(checked.reason, f"line {line}: {checked.detail}", checked.source,
                                             None, raw))
    return checked


def _read_jsonl(path: Path) -> Iterator[Read]:
    with open_text(path) as fh:
        for line, text in enumerate(fh, start=1):
            raw = text.rstrip("\r\n").encode()
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield LineRejection(line, Rejection("invalid_json", f"line {line}: {exc}", Source(str(path)), None, raw))
                continue
            if (repeated := repeated_name(raw, record)) is not None:
                yield LineRejection(line, Rejection("invalid_json", f"line {line}: {repeated}", Source(str(path)), None, raw))
                continue
            if isinstance(record, dict):  # as the csv readers: version 1 unless the record names another
                record.setdefault("schema_version", 1)
                for name in ("item_id", "title"):  # as the csv readers: " a2 " is the item events name a2
                    if isinstance(record.get(name), str):
                        record[name] = record[name].strip()
            yield _checked(path, line, record, raw)


def _read_csv(path: Path) -> Iterator[Read]:
    """A row a line as the event readers read theirs (csv_rows.py), but a quoted field may hold line breaks (a
    description's paragraphs) if its row then has the header's width: a row with more or fewer fields than the header
    (an unquoted comma in a title) or a quote that never closes is that line's rejection."""
    with open_text(path) as fh:
        rows = _log_rows(fh, path, CATALOGUE_COLUMNS["csv"], multiline=True, columns=CATALOGUE_COLUMNS)
        unread = [name for name in rows.header if name not in CSV_CATALOGUE_COLUMNS]
        if unread:
            known = {name.lower().replace(" ", "_"): name for name in CSV_CATALOGUE_COLUMNS}
            print(f"warning: {path}: the column{'s' * (len(unread) > 1)} {', '.join(map(repr, unread))} "
                  f"{'are' if len(unread) > 1 else 'is'} not read"
                  + "".join(f" ({name!r}: did you mean {known[name.lower().replace(' ', '_')]!r}?)" for name in unread
                            if name.lower().replace(" ", "_") in known)
                  + f"; a catalogue csv reads {', '.join(CSV_CATALOGUE_COLUMNS)}", file=sys.stderr)
        for line, row, problem in rows:
            if row is None:
                yield _reject(path, line, "schema_violation", problem, rows.line_text(line).encode())
                continue
            raw = ",".join(row.values()).encode()
            record: dict[str, Any] = {"item_id": row["item_id"].strip(), "title": one_line(row["title"]),
                                      "schema_version": 1}
            for name in ("description", "brand"):
                if (row.get(name) or "").strip():
                    record[name] = row[name].strip()
            if (row.get("category_path") or "").strip():
                record["category_path"] = [part.strip() for part in row["category_path"].split(">") if part.strip()]
            if (row.get("price") or "").strip():
                try:
                    record["price"] = float(row["price"])  # nan and inf: check_item names them
                except ValueError:
                    record["price"] = row["price"]  # the schema names the problem
            for name in ("listed_at", "updated_at"):
                if (row.get(name) or "").strip():
                    try:
                        record[name] = int(row[name])
                    except ValueError:
                        record[name] = row[name]  # the schema names the problem
            yield _checked(path, line, record, raw)


def _read_movielens(path: Path) -> Iterator[Read]:
    """MovieLens' movies.csv as published: movieId -> item_id (the id its ratings.csv names), title, and the genres
    (`Adventure|Children`) as the description "Adventure, Children", text the content model reads. Not a category
    path: a film's genres are a set, not a hierarchy."""
    with open_text(path) as fh:
        rows = _log_rows(fh, path, CATALOGUE_COLUMNS["movielens"], multiline=True, columns=CATALOGUE_COLUMNS)
        for line, row, problem in rows:
            raw = rows.line_text(line).encode()
            if row is None:
                yield _reject(path, line, "schema_violation", problem, raw)
                continue
            record: dict[str, Any] = {"item_id": as_published(row["movieId"].strip()), "title": one_line(row["title"]),
                                      "schema_version": 1}
            genres = [g.strip() for g in row["genres"].split("|") if g.strip() and g.strip() != NO_GENRES]
            if genres:
                record["description"] = ", ".join(genres)
            yield _checked(path, line, record, raw)


def _read_online_retail(path: Path) -> Iterator[Read]:
    """One record per product (the stock codes the event reader keeps: `is_product_code`): the
    description it was sold under most often (ties: the first seen), its most common price, and as
    `listed_at` 1 ms after the time of its first line in the log (guests' and cancellations' too): an evaluation
    over the log then shows no item before the shop sold it (a year's catalogue is a look into the future). Not
    at that time itself: a basket's lines share one minute, so an item listed then was proposed beside the
    lines before it in its own basket, to be bought next (2,539 judged events of the log were reachable only so).
    A line whose price or date cannot be read still names its product; the lines read so are said on stderr."""
    names: dict[str, collections.Counter[str]] = {}
    prices: dict[str, collections.Counter[float]] = {}
    first: dict[str, int] = {}
    first_line: dict[str, int] = {}  # the file line a product is first on: its record's line in a rejection
    partly = PartlyRead()
    last_date, last_ms = "", 0
    with open_text(path) as fh:
        rows = _log_rows(fh, path, ONLINE_RETAIL_COLUMNS, columns=CATALOGUE_COLUMNS)  # a row a line, as the event reader reads it
        day_first = file_is_day_first(path)  # a pass over the dates: once the header is the format's
        said = online_retail_ii_said if rows.renamed else str  # columns named as the file names them
        for line, row, problem in rows:
            if row is None:  # its product, name and price unknown: said, as the event reader says it
                yield _reject(path, line, "schema_violation", problem, rows.line_text(line).encode())
                continue
            code = row["StockCode"].strip()
            if not is_product_code(code):
                continue  # not a product: POST, D, M, BANK CHARGES, C2, ... (and an empty code)
            first_line.setdefault(code, line)
            unread: list[str] = []
            date = row["InvoiceDate"].strip()
            try:
                if not date:
                    raise ValueError("InvoiceDate is empty")
                if date != last_date:
                    last_ms, last_date = retail_ms(date, day_first), date
                first[code] = min(first.get(code, last_ms), last_ms)
            except ValueError as exc:
                unread.append(said(str(exc)))
                partly.undated.add(code)
            name = " ".join(row["Description"].split())
            if name and not name.islower():  # lower-case descriptions are stock notes ("damaged", "found"), not names
                names.setdefault(code, collections.Counter())[name] += 1
                try:
                    price = _price(row)
                    if price > 0:  # a price of 0 is a free line (a gift, a sample), not what the product costs
                        prices.setdefault(code, collections.Counter())[price] += 1
                except ValueError as exc:
                    unread.append(said(str(exc)))
                    partly.unpriced.add(code)
            if unread:
                partly.add(line, unread)
    if partly.count:
        print(partly.warning(path, set(names), set(first), set(prices)), file=sys.stderr)
    untitled = [code for code in first_line if code not in names]
    if untitled:
        print(f"warning: {path}: {len(untitled):,} products have no name (every description of theirs empty or a "
              f"lower-case stock note, as 'damaged'), so no catalogue record: {', '.join(untitled[:5])}"
              f"{', ...' if len(untitled) > 5 else ''} (their events are read all the same)", file=sys.stderr)
    for code, counts in names.items():
        line = first_line[code]
        record: dict[str, Any] = {"item_id": code, "title": counts.most_common(1)[0][0], "schema_version": 1}
        if code in prices:
            record["price"] = prices[code].most_common(1)[0][0]
        if code in first and first[code] >= 0:
            record["listed_at"] = first[code] + 1
        yield _checked(path, line, record, orjson.dumps(record))


def _price(row: dict[str, str]) -> float:
    """The line's UnitPrice, or a ValueError naming it."""
    price = _finite(row, "UnitPrice")
    if price < 0:
        raise ValueError(f"UnitPrice {row['UnitPrice'].strip()!r} is below 0, a price is at least 0")
    return price


@dataclass
class PartlyRead:
    """Lines of products the Online Retail catalogue read without their price or date (unreadable): how many, and
    the first NAMED_LINES with why."""

    count: int = 0
    named: list[str] = field(default_factory=list)
    undated: set[str] = field(default_factory=set)  # products with a line whose date could not be read
    unpriced: set[str] = field(default_factory=set)  # ... whose price could not be read

    def add(self, line: int, unread: list[str]) -> None:
        self.count += 1
        if len(self.named) < NAMED_LINES:
            self.named.append(f"line {line} ({'; '.join(unread)})")

    def warning(self, path: Path, named: Collection[str], dated: Collection[str], priced: Collection[str]) -> str:
        """Said once the whole file is read (`named`: the products that get a record; `dated`, `priced`: those a
        readable line gave a date, a price): a product whose every date was unreadable has no listed_at, so an
        evaluation may show it before it sold."""
        more = f" and {self.count - len(self.named):,} more" if self.count > len(self.named) else ""
        lines = ("1 line of a product read without its price or date" if self.count == 1 else
                 f"{self.count:,} lines of products read without their price or date")
        said = f"warning: {path.name}: {lines}: {', '.join(self.named)}{more}"
        undated = sorted((self.undated & set(named)) - set(dated))
        unpriced = sorted((self.unpriced & set(named)) - set(priced))
        left = [f"{len(codes):,} without {what} ({', '.join(codes[:NAMED_LINES])}"
                f"{', ...' if len(codes) > NAMED_LINES else ''})"
                for codes, what in ((undated, "listed_at: shown from the start of an evaluation, before the shop sold "
                                              "them"), (unpriced, "a price")) if codes]
        return said + ("; of their products, " + " and ".join(left) if left else
                       "; each of their products has its date and price from its other lines")


#: How many of the lines read in part the Online Retail catalogue's warning names (its count says the rest)
NAMED_LINES = 3


@dataclass
class LoadSummary:
    path: str
    sent: int = 0
    rejected: int = 0
    seconds: float = 0.0
    rejected_note: str = ""
    through: int | None = None  # the items topic's offset of the last record sent (`wait_indexed`)

    def lines(self) -> list[str]:
        out = [f"loaded {plural(self.sent, 'item')} from {self.path} in {self.seconds:.2f}s"]
        if self.rejected:
            out.append(f"  {self.rejected_note} -> dead-letter topic (each with its line and reason); "
                       f"{DEAD_LETTERS_SAID}")
        return out


def load_items(settings: Settings, path: str | Path, fmt: str) -> LoadSummary:
    """Produce a catalogue file to the items topic (key item_id); bad records to the dead-letter topic."""
    started = time.monotonic()
    items, rejected = load_catalogue(path, fmt)
    summary = send_catalogue(settings, str(path), items, rejected)
    summary.seconds = time.monotonic() - started
    return summary


def send_catalogue(settings: Settings, path: str, items: dict[str, dict[str, Any]],
                   rejected: list[LineRejection]) -> LoadSummary:
    """Produce a catalogue read by `load_catalogue` to the items topic; its rejected lines to the dead-letter topic."""
    from ..stream.topics import ensure_topics
    from .replay import Produced, dead_letter_lines, make_producer

    started = time.monotonic()
    ensure_topics(settings)
    producer = make_producer(settings)
    try:
        sent = Produced()
        for item_id, record in items.items():
            producer.send(settings.topics.items, key=item_id.encode(), value=orjson.dumps(record)).add_callback(
                sent.acked).add_errback(sent.failed)
        producer.flush()
        sent.check(len(items), "items", "loading them again is safe: an item's record replaces the one before")
        dead_letter_lines(settings, rejected, producer)
    finally:
        producer.close()
    ends = [end for tp, end in sent.marks.items() if tp.topic == settings.topics.items]
    return LoadSummary(path, len(items), len(rejected), time.monotonic() - started,
                       rejected_note(rejected) if rejected else "", max(ends) - 1 if ends else None)


#: How often `items load --wait` reads the workers' statuses (each refreshed every STATUS_TTL_S / 3 s).
WAIT_POLL_S = 0.5


def wait_indexed(settings: Settings, through: int, timeout_s: float) -> str:
    """Wait until every live worker's lists see the items topic through offset `through` (its catalogue
    status's `indexed_through`: the record read and, with a content model, its text embedded and the index
    swapped in). What to say; a ServiceTimeout naming the workers behind."""
    import redis

    from ..errors import ServiceTimeout
    from ..store.redis_store import worker_statuses
    from ..stream.worker_status import STATUS_TTL_S

    client = redis.Redis.from_url(settings.require_redis(), socket_connect_timeout=2)
    started = time.monotonic()
    while True:
        statuses = worker_statuses(client, settings.namespace)
        behind = {s["worker_id"]: s for s in statuses if s.get("catalogue", {}).get("indexed_through", -1) < through}
        waited = time.monotonic() - started
        if not statuses:  # nothing to wait for
            return (f"no worker of namespace {settings.namespace!r} is running (none has a status in Redis): one "
                    "that starts embeds the catalogue before it takes events")
        if not behind:
            textless = sum(not (s.get("models") or {}).get("content") for s in statuses)
            return (f"every running worker ({len(statuses)}) makes its lists with the catalogue through offset "
                    f"{through} ({waited:.1f}s)" + (
                        f"; {textless} of them serve{'s' if textless == 1 else ''} no content model, so the items' "
                        "text takes no part in their lists (`stream-app models status` says why; `stream-app models "
                        "publish VERSION --content` publishes one)" if textless else ""))
        if waited > timeout_s:
            raise ServiceTimeout(f"after {timeout_s:.0f}s {len(behind)} of {len(statuses)} workers have not indexed "
                                 f"the catalogue through offset {through}: " + ", ".join(
                                     _behind(w, s, STATUS_TTL_S) for w, s in sorted(behind.items())) + "; embedding "
                                 "takes seconds per thousand changed texts: wait longer (--wait N), and see the "
                                 "workers' logs ('content index: ...')")
        time.sleep(WAIT_POLL_S)


def _behind(worker_id: str, status: dict[str, Any], ttl_s: float) -> str:
    """A worker behind, and if its status has not been refreshed for two of its refresh periods, that it may have
    stopped: a stopped worker's status stays in Redis until it expires."""
    said = f"{worker_id} at {status.get('catalogue', {}).get('indexed_through', -1)}"
    age_s = time.time() - status.get("updated_at", time.time() * 1000) / 1000
    if age_s > 2 * ttl_s / 3:
        said += (f" (its status not refreshed for {age_s:.0f}s: stopped? a stopped worker's status stays until it "
                 f"expires, {ttl_s:.0f}s after its last refresh)")
    return said


def titles_on_topic(settings: Settings, item_ids: Collection[str]) -> dict[str, str]:
    """The titles of `item_ids` as the items topic holds them now: each one's latest valid record (a tombstone
    removes it; a record the workers refuse changes nothing, as in them: `contracts.check_item`). Reads the whole
    topic. None of them titled: says so on stderr, and how to load a catalogue (the ids alone said nothing)."""
    titles = _titles_on_topic(settings, item_ids)
    if item_ids and not titles:
        print(f"note: {settings.topics.items} holds no title for these items: load a catalogue with "
              "`stream-app items load FILE --format F` (the ids stay as they are)", file=sys.stderr)
    return titles


def _titles_on_topic(settings: Settings, item_ids: Collection[str]) -> dict[str, str]:
    from .consume import read_to_end

    wanted, titles = {item_id.encode("utf-8") for item_id in item_ids}, {}
    if not wanted:
        return titles
    for record in read_to_end(settings, settings.topics.items):
        if record.key not in wanted:
            continue
        item_id = record.key.decode("utf-8")
        if record.value is None:
            titles.pop(item_id, None)
            continue
        source = Source(record.topic, record.partition, record.offset, record.timestamp)  # bound as workers bind it
        item = contracts.check_item(record.value, record.key, source)
        if not isinstance(item, Rejection):
            titles[item_id] = item_title(item)
    return titles
