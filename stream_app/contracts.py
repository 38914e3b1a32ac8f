"""Topic contracts: the JSON Schemas in `schemas/` compiled once, and the gate every input passes.

`check_input` turns raw Kafka bytes into an `Event` or a `Rejection` with a reason from a closed set
(the dead-letter schema lists them); nothing here raises on bad input.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

import fastjsonschema
import orjson

from .core.events import Event
from .json_integers import as_written
from .json_names import repeated_name

# the schemas and their messages are the contracts' too: named here as well, where every reader looks for them
from .schema_messages import SCHEMA_VERSION, load_schema, plain_message, schema_dir, validator  # noqa: F401

# A dead-letter record stays well below Kafka's default 1 MB message limit whatever came in (a record
# the broker refuses would stop the partition): a payload is kept whole up to 384 KiB (as text, or
# as base64 when escaping would make the text longer), beyond as its first 384 KiB with its length
# and SHA-256; a key beyond 1 KiB likewise. Any event the default max_payload_bytes admits is kept whole.
DEAD_LETTER_PAYLOAD_BYTES = 384 * 1024
DEAD_LETTER_KEY_BYTES = 1024
DEAD_LETTER_DETAIL_CHARS = 4096
# The input's own headers (tracing ids, a producer's content type) are kept too, so a re-drive sends them on: in
# their order, as many as fit in 16 KiB of keys and values; the letter counts those left out.
DEAD_LETTER_HEADER_BYTES = 16 * 1024


#: The header `stream-app redrive` puts on each input it sends again, valued the dead letter's reason.
REDRIVE_HEADER = "stream-app-redrive"
#: ... and this one, valued b"1", on an input whose event the item state already counted (a valid event a worker
#: failed on, `processing_error`, went through every worker's item feed before it was dead-lettered).
COUNTED_HEADER = "stream-app-counted"
#: ... and this one on every copy, valued "<dead-letter topic>/<partition>/<offset>" of the letter it copies: a copy
#: refused again names that letter in its own (`source.redrive_of`), so the two can be linked.
REDRIVE_OF_HEADER = "stream-app-redrive-of"
REDRIVE_OF_SHAPE = re.compile(r"[A-Za-z0-9._-]{1,249}/[0-9]{1,10}/[0-9]{1,19}")
#: Headers a letter states in its own fields (or a re-drive sets anew), so not among the input's headers it keeps.
OWN_HEADERS = frozenset({REDRIVE_HEADER, COUNTED_HEADER, REDRIVE_OF_HEADER})


@dataclass(frozen=True, slots=True)
class Source:
    topic: str
    partition: int | None = None
    offset: int | None = None
    timestamp: int | None = None  # the input record's Kafka timestamp (ms): a re-drive sends the record with it
    counted: bool = False  # the record carried COUNTED_HEADER: a re-drive of its dead letter carries it on
    redrive_of: str | None = None  # the record was a re-driven copy of this dead letter (REDRIVE_OF_HEADER)
    headers: Sequence[tuple[str, bytes | None]] = ()  # the input record's headers, as the Kafka client gave them

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str
    source: Source
    key: bytes | None
    payload: bytes
    null_value: bool = False  # the input's value was null (a tombstone), not an empty payload

    def to_record(self, now_ms: int | None = None, line: int | None = None) -> dict[str, Any]:
        """The dead-letter message: the raw payload, whole up to DEAD_LETTER_PAYLOAD_BYTES (beyond: its
        first bytes, its length and its SHA-256), as text when it is UTF-8 that JSON does not inflate. `line`: the
        line of a file (`replay`, `items load`) the rejection is of."""
        key = self.key
        record: dict[str, Any] = {
            "letter_id": self.letter_id(line),
            "reason": self.reason,
            "detail": self.detail[:DEAD_LETTER_DETAIL_CHARS],
            "source": {"topic": self.source.topic, "partition": self.source.partition,
                       "offset": self.source.offset},
            "key_text": _key_text(key),
            "rejected_at": int(time.time() * 1000) if now_ms is None else now_ms,
            "schema_version": SCHEMA_VERSION,
        }
        if line is not None:
            record["source"]["line"] = line
        if self.source.timestamp is not None:
            record["source"]["timestamp"] = self.source.timestamp
        if self.source.counted:
            record["source"]["counted"] = True
        if self.source.redrive_of is not None:
            record["source"]["redrive_of"] = self.source.redrive_of
        kept, left_out = letter_headers_of(self.source.headers)
        if kept:
            record["source"]["headers"] = kept
        if left_out:
            record["source"]["headers_left_out"] = left_out
        if self.null_value:
            record["payload_null"] = True
        payload = self.payload
        if len(payload) > DEAD_LETTER_PAYLOAD_BYTES:
            record["payload_bytes"] = len(payload)
            record["payload_sha256"] = hashlib.sha256(payload).hexdigest()
            record["payload_truncated"] = True
            payload = payload[:DEAD_LETTER_PAYLOAD_BYTES]
        text = _text_or_none(payload)
        # JSON escapes a control byte as six: such text travels shorter as base64 (4 bytes per 3)
        if text is None or len(orjson.dumps(text)) > len(payload) * 4 // 3 + 2:
            record["payload_base64"] = base64.b64encode(payload).decode("ascii")
        else:
            record["payload_text"] = text
        return record

    def letter_id(self, line: int | None = None) -> str:
        """The same for every copy of this letter (a batch redone after a crash, a replay run again), different
        for any other: a digest of what it rejected (source, line, reason, key, the whole payload), not of when or of
        the detail's wording. A consumer deduplicates letters on it."""
        source = self.source
        what = orjson.dumps([self.reason, source.topic, source.partition, source.offset, line,
                             None if self.key is None else self.key.hex(), self.null_value,
                             hashlib.sha256(self.payload).hexdigest()])
        return "dl-" + hashlib.blake2b(what, digest_size=12).hexdigest()

    def message_key(self) -> bytes | None:
        """The dead-letter message's key: the input's, or the SHA-256 (hex) of one too long to keep."""
        if self.key is None or len(self.key) <= DEAD_LETTER_KEY_BYTES:
            return self.key
        return hashlib.sha256(self.key).hexdigest().encode("ascii")


def letter_headers_of(headers: Sequence[tuple[Any, bytes | None]]) -> tuple[list[dict[str, Any]], int]:
    """An input's headers as its dead letter keeps them (but OWN_HEADERS), and how many did not fit in
    DEAD_LETTER_HEADER_BYTES: each value as text when it is UTF-8 that JSON does not inflate, else as base64 (as
    the payload); a null value as null."""
    kept: list[dict[str, Any]] = []
    left_out = room = 0
    for name, value in headers or ():
        key = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        if key in OWN_HEADERS:
            continue
        size = len(key.encode()) + len(value or b"")
        if room + size > DEAD_LETTER_HEADER_BYTES:
            left_out += 1
            continue
        room += size
        text = _text_or_none(value)
        if text is not None and len(orjson.dumps(text)) > len(value or b"") * 4 // 3 + 2:  # as the payload's
            text = None
        kept.append({"key": key, "value_null": True} if value is None else {"key": key, "value_text": text}
                    if text is not None else {"key": key, "value_base64": base64.b64encode(value).decode("ascii")})
    return kept, left_out


def input_headers(letter: dict[str, Any]) -> list[tuple[str, bytes | None]]:
    """The input's headers a dead letter kept (letter_headers_of), to send again with its payload."""
    headers = (letter.get("source") or {}).get("headers") or []
    return [(header["key"], None if header.get("value_null") else header["value_text"].encode()
             if "value_text" in header else base64.b64decode(header["value_base64"], validate=True)) for header in headers]


def _key_text(key: bytes | None) -> str | None:
    """The key as text, its first DEAD_LETTER_KEY_BYTES (a character cut there dropped); None if not UTF-8."""
    text = _text_or_none(key)
    if text is None or len(key or b"") <= DEAD_LETTER_KEY_BYTES:
        return text
    return key[:DEAD_LETTER_KEY_BYTES].decode("utf-8", "ignore")  # type: ignore[index]


def _text_or_none(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def time_out_of_range(ts: int, reference_ms: int, max_future_ms: int, max_age_ms: int,
                      reference: str = "the record's Kafka timestamp") -> str | None:
    """Why an event time is outside the accepted window around `reference_ms`, or None. A bound of
    0 is no bound. Scores decay forward in event time, so one event stamped a year ahead (a wrong
    device clock) would otherwise outweigh a year of real ones."""
    if max_future_ms and ts > reference_ms + max_future_ms:
        return (f"ts {ts} is {ts - reference_ms} ms after {reference_ms}, {reference}; the limit is {max_future_ms} "
                "(STREAM_APP_MAX_FUTURE_MS)")
    if max_age_ms and ts < reference_ms - max_age_ms:
        return (f"ts {ts} is {reference_ms - ts} ms before {reference_ms}, {reference}; the limit is {max_age_ms} "
                "(STREAM_APP_MAX_AGE_MS)")
    return None


def _parsed(payload: bytes, max_bytes: int, schema: str, reject: Callable[[str, str], "Rejection"]) -> Any:
    """The payload's JSON if it is within the size bound, UTF-8, JSON and valid under `schema`, else
    the first of those it breaks as a Rejection (`reject(reason, detail)`)."""
    if len(payload) > max_bytes:
        return reject("payload_too_large", f"{len(payload)} bytes, the limit is {max_bytes}")
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return reject("not_utf8", str(exc))
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return reject("invalid_json", f"not JSON: {exc}")
    if (repeated := repeated_name(payload, data)) is not None:
        return reject("invalid_json", repeated)
    try:
        validator(schema)(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        return reject("schema_violation", plain_message(schema, as_written(payload, data), exc.message))
    return data


def version_not_read(record: Any) -> str | None:
    """Why a record's `schema_version` is not one this release reads, or None: it is SCHEMA_VERSION (1.0 too, as the
    schemas' `const` counts it), or the record names none: models.control and models.status records written before
    2026-12-06 carry none, and those topics read such a record as version 1. Checked before the schema, so that a
    record of a later contract is refused for its version, not for whichever of its fields the schema meets first."""
    if not isinstance(record, dict) or "schema_version" not in record:
        return None
    version = record["schema_version"]
    if isinstance(version, (int, float)) and not isinstance(version, bool) and version == SCHEMA_VERSION:
        return None
    said = repr(version)
    return (f"schema_version {said if len(said) <= 40 else said[:40] + '...'} is not one this release reads "
            f"({SCHEMA_VERSION})")


def check_input(payload: bytes | None, key: bytes | None, source: Source, expected_type: str | None,
                max_bytes: int, reference_ms: int | None = None, max_future_ms: int = 0,
                max_age_ms: int = 0) -> Event | Rejection:
    """Validate one input message. `expected_type` is the type the topic carries (None: any).
    `reference_ms`: the record's own Kafka timestamp (the same in every worker and on every re-read,
    unlike a clock), which the event time must lie within `max_future_ms` / `max_age_ms` of."""
    null_value, payload = payload is None, payload if payload is not None else b""

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(reason, "a null value (a tombstone)" if null_value else detail, source, key, payload,
                         null_value)

    data = _parsed(payload, max_bytes, "input-event", reject)
    if isinstance(data, Rejection):
        return data
    if expected_type is not None and data["type"] != expected_type:
        return reject("type_topic_mismatch",
                      f"a {data['type']!r} event on the topic for {expected_type!r} events")
    if key is not None and key != data["user_id"].encode("utf-8"):
        return reject("key_mismatch", f"the message key {_key_said(key)} is not the user_id {data['user_id']!r}: key "
                                      "each event by its user_id (profiles are partitioned by user)")
    if key is None:
        return reject("key_mismatch", "the message has no key: it must be the user_id (profiles are partitioned by user)")
    if reference_ms is not None:
        out_of_range = time_out_of_range(data["ts"], reference_ms, max_future_ms, max_age_ms)
        if out_of_range is not None:
            return reject("timestamp_out_of_range", out_of_range)
    return Event.from_dict(data)


@dataclass(frozen=True, slots=True)
class ErasureRequest:
    """A request to erase one user (topic erasures), and where it was read."""

    request_id: str
    user_id: str
    requested_at: int
    source: Source
    reset: bool = False  # a reset (`stream-app reset-profile`): the profile deleted, no erasure recorded


def check_erasure(payload: bytes | None, key: bytes | None, source: Source, max_bytes: int,
                  max_future_ms: int = 0) -> ErasureRequest | Rejection:
    """Validate one erasure request, as `check_input` does an event (the same reasons). Its `requested_at` may
    be at most `max_future_ms` after the record's Kafka timestamp (`source.timestamp`): the user's events dated
    up to it are dropped, and the erased-users record keeps the latest time for good, so one request dated
    years ahead (a wrong clock, seconds read as milliseconds) would drop every event of the user until then."""
    null_value, payload = payload is None, payload if payload is not None else b""

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(reason, "a null value (a tombstone)" if null_value else detail, source, key, payload,
                         null_value)

    data = _parsed(payload, max_bytes, "erasure-request", reject)
    if isinstance(data, Rejection):
        return data
    if key != data["user_id"].encode("utf-8"):
        return reject("key_mismatch", f"the message key {_key_said(key)} is not the user_id {data['user_id']!r}: key "
                                      "each request by its user_id (requests go to the user's partition)")
    at, stamp = data["requested_at"], source.timestamp
    if stamp is not None and max_future_ms and at > stamp + max_future_ms:
        return reject("timestamp_out_of_range", f"requested_at {at} is {at - stamp} ms after the record's timestamp "
                      f"{stamp}; the limit is {max_future_ms} (STREAM_APP_MAX_FUTURE_MS): an erasure dated ahead "
                      "would drop the user's events until then; send it again dated when it was made (`stream-app "
                      "erase` does)")
    return ErasureRequest(data["request_id"], data["user_id"], data["requested_at"], source, data.get("reset", False))


def check_item(payload: bytes, key: bytes | None, source: Source) -> dict[str, Any] | Rejection:
    """Validate one record of the items topic (not a tombstone), as `check_erasure` does a request (the same
    reasons; no size bound: a description may be long). Its key must be its item_id: compaction and tombstones go
    by the key."""
    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(reason, detail, source, key, payload)

    data = _parsed(payload, sys.maxsize, "item", reject)
    if isinstance(data, Rejection):
        return data
    if key != data["item_id"].encode("utf-8"):
        return reject("key_mismatch", f"its key {key!r} is not its item_id {data['item_id']!r} (key item records "
                                      "by item_id)")
    # against the record's own time, not the reading worker's clock: every worker decides the same, at any time
    if "listed_at" in data and source.timestamp is not None:
        listed = data["listed_at"]  # a float: maybe an integer past 64 bits, named as written (not as 1.18e+21)
        listed = as_written(payload, data)["listed_at"] if isinstance(listed, float) else listed
        if (ahead := listed_too_far_ahead(listed, source.timestamp, "its record was written")) is not None:
            return reject("timestamp_out_of_range", ahead)
    return data


#: How far ahead of its record's time (or of now, in a catalogue file) an item's listed_at may be. A launch announced
#: ahead is loaded ahead (the content sources hold it back until then), so not STREAM_APP_MAX_FUTURE_MS, the clock
#: skew events may have; a year 3000 or a time in µs read as ms is a wrong value, and its item would never be proposed.
LISTED_AHEAD_DAYS = 366
#: Every ts of a log below this, read as ms, is before 1973: most likely the log is in seconds.
SECONDS_BELOW = 100_000_000_000


def listed_too_far_ahead(listed_at: int, now_ms: int, now_is: str = "now") -> str | None:
    """Why `listed_at` is more than LISTED_AHEAD_DAYS after `now_ms` (`now_is`: what that time is), or None."""
    latest = now_ms + LISTED_AHEAD_DAYS * 86_400_000  # ms a day
    if listed_at <= latest:
        return None
    micro = ": it looks like microseconds (divide by 1000)" if SECONDS_BELOW <= listed_at // 1000 <= latest else ""
    return (f"listed_at {listed_at} ({_utc(listed_at)}) is more than {LISTED_AHEAD_DAYS} days after {now_is} "
            f"({_utc(now_ms)}): listed_at is milliseconds since 1970, at most {LISTED_AHEAD_DAYS} days ahead{micro}")


def _utc(ms: int) -> str:
    try:
        return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)).strftime("%Y-%m-%d %H:%M UTC")
    except OverflowError:
        return "after the year 9999"


def _key_said(key: bytes | None) -> str:
    """A message key as a detail names it: its text (cut), or that there is none."""
    return "(none)" if key is None else repr(key.decode("utf-8", "replace")[:80])


def letter_payload(letter: dict[str, Any]) -> bytes | None:
    """A dead letter's input value as it came (None: a tombstone), as `Rejection.to_record` kept it."""
    if letter.get("payload_null"):
        return None
    if "payload_base64" in letter:
        return base64.b64decode(letter["payload_base64"])
    return str(letter.get("payload_text", "")).encode("utf-8")


def dead_letter_users(key: bytes | None, value: bytes | None) -> set[str]:
    """The users a dead-letter record names: its key, and the user_id its payload names (`input_users`)."""
    try:
        payload = letter_payload(orjson.loads(value or b"")) or b""
    except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
        return input_users(key, b"")[0]
    return input_users(key, payload)[0]


#: A "user_id": "..." member in text that is not JSON as a whole (a line cut short): the string, quotes included.
_USER_ID_TEXT = re.compile(rb'"user_id"\s*:\s*("(?:[^"\\]|\\.)*")')


def input_users(key: bytes | None, payload: bytes) -> tuple[set[str], int | None]:
    """The users an input names (its key as text; the payload's user_id when that is JSON, else the one a cut or
    broken line spells out) and its time when the payload is JSON with a whole-number `ts`."""
    users = set()
    text = _text_or_none(key) if key else None
    if text is not None:
        users.add(text)
    try:
        record = orjson.loads(payload)
    except (orjson.JSONDecodeError, TypeError):
        record = None
    if isinstance(record, dict):
        if isinstance(record.get("user_id"), str):
            users.add(record["user_id"])
        ts = record.get("ts")
        return users, ts if isinstance(ts, int) and not isinstance(ts, bool) else None
    found = _USER_ID_TEXT.search(payload or b"")  # a cut or broken line: the user_id it spells out, if any
    try:
        named = orjson.loads(found.group(1)) if found else None
    except orjson.JSONDecodeError:
        named = None
    if isinstance(named, str):
        users.add(named)
    return users, None
