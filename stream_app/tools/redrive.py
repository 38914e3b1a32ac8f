"""`stream-app redrive`: send dead letters back to the topic they came from, once what refused them is fixed
(a bug of the workers, a limit or time window set too tight, a producer's keys or topics).

A dead letter keeps its input whole (up to 384 KiB), so the input can be sent again as it was, with its
record's Kafka timestamp, so the workers judge its time as they did. What is sent goes through the workers'
checks as any input does: an event they still refuse comes back as a new dead letter, and one they applied
is skipped by its event id. Each reason has its own position on the dead-letter topic (kept on the compacted
`redrive.positions` topic once the broker has acknowledged every send), so a letter is sent once per reason
asked for, and letters of other reasons wait for a redrive that names them.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import fastjsonschema
import orjson
from kafka import TopicPartition

from ..config import EVENT_TYPES, Settings
from ..contracts import (
    COUNTED_HEADER,
    LISTED_AHEAD_DAYS,
    REDRIVE_HEADER,
    REDRIVE_OF_HEADER,
    input_headers,
    input_users,
    letter_payload,
    load_schema,
    validator,
    version_not_read,
)
from ..errors import StreamAppError
from ..stream.erasures import ErasedUsers
from ..stream.topics import ensure_topics
from .consume import read_range, read_to_end
from .repair import erased_users
from .replay import Produced, make_producer

#: Every reason a dead letter can carry, from its schema.
REASONS: tuple[str, ...] = tuple(load_schema("dead-letter")["properties"]["reason"]["enum"])
#: Reasons no fix makes pass, and why.
NEVER_PASS = {"invalid_json": "its bytes are not JSON, or not JSON every reader reads alike (a name given twice)",
              "not_utf8": "its bytes are not UTF-8 text",
              "bad_state": "a learner's state record of a table changelog, not an input (its learner started afresh)"}
REDRIVABLE: tuple[str, ...] = tuple(reason for reason in REASONS if reason not in NEVER_PASS)


@dataclass(frozen=True)
class Resend:
    """One input to send again: where, with which key and value (None: a tombstone, as the input was)."""

    topic: str
    key: bytes | None
    value: bytes | None
    ts: int | None  # the event's time, for sending events in time order
    reason: str = ""
    record_ts: int | None = None  # the input record's Kafka timestamp, when the letter kept it
    counted: bool = False  # the item state counted its event when it was first read (COUNTED_HEADER)
    letter: str | None = None  # the dead letter copied, "<topic>/<partition>/<offset>" (REDRIVE_OF_HEADER)
    headers: tuple[tuple[str, bytes | None], ...] = ()  # the input's own headers, as its letter kept them
    headers_left_out: int = 0  # of the input's headers, those its letter had no room for


@dataclass
class RedriveSummary:
    read: int = 0
    sent: Counter = field(default_factory=Counter)  # topic -> inputs sent again
    by_reason: Counter = field(default_factory=Counter)  # reason -> inputs sent again
    left: Counter = field(default_factory=Counter)  # why a letter was not sent -> how many
    other_reasons: Counter = field(default_factory=Counter)  # reason not asked for -> how many
    other_unsendable: Counter = field(default_factory=Counter)  # (reason not asked for, why no redrive sends it) -> n
    sent_before: int = 0  # letters an earlier redrive of their reason read
    headers_left_out: int = 0  # letters sent again without some of their input's headers (no room in the letter)
    restarted: set[int] = field(default_factory=set)  # partitions read from their start: positions past their end
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> first offset read, end
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "sent": dict(self.sent), "by_reason": dict(self.by_reason),
                "left": dict(self.left), "other_reasons": dict(self.other_reasons),
                "other_reasons_no_redrive_sends": [{"reason": reason, "why": why, "letters": n}
                                                   for (reason, why), n in self.other_unsendable.most_common()],
                "sent_before": self.sent_before,
                "headers_left_out": self.headers_left_out,
                "restarted_partitions": sorted(self.restarted),
                "dry_run": self.dry_run, "ranges": {str(p): list(r) for p, r in sorted(self.ranges.items())}}


def _json_object(value: bytes | None) -> dict[str, Any]:
    try:
        parsed = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def resend_of(letter: dict[str, Any], key: bytes | None, settings: Settings) -> Resend | str:
    """What re-driving a dead letter sends, or why it cannot be sent. An input event goes to its type's topic
    keyed by its user, an erasure request keyed by its user, an item record keyed by its item, as the workers
    require; so a letter refused for its key, partition or topic is sent as it should have been."""
    topics = settings.topics
    reason = str(letter.get("reason"))
    if reason in NEVER_PASS:
        return NEVER_PASS[reason]
    unread = version_not_read(letter)
    if unread is not None:  # a later release's letter: its fields may not mean what this one reads them as
        return f"the letter's {unread}: re-drive it with the release that wrote it"
    if letter.get("payload_truncated"):
        return "its payload was kept cut at 384 KiB: only its producer can send it again"
    try:
        value = letter_payload(letter)
    except (TypeError, ValueError):  # binascii.Error is a ValueError: another producer's record, not a letter's
        return "its payload is not kept as a dead letter keeps it (payload_text, or payload_base64 as base64)"
    parsed = _json_object(value)
    source = letter.get("source")
    if source is None:  # none (not of the schema): its payload's event still says where it goes
        source = {}
    elif not isinstance(source, dict):  # said as such: the headers' check below would blame source.headers
        kind = {str: "text", list: "a list", bool: "true or false"}.get(type(source), "a number")
        return (f"its source is {kind}, not an object naming where its input was read (a dead letter's, "
                "schemas/v1/dead-letter.schema.json): another producer's record, which only that producer can send again")
    try:
        own_headers = {"headers": tuple(input_headers(letter)), "headers_left_out": int(source.get("headers_left_out") or 0)}
    except (KeyError, TypeError, ValueError, AttributeError):  # binascii.Error is a ValueError
        return "its input's headers are not kept as a dead letter keeps them (source.headers)"
    origin, stamp = source.get("topic"), source.get("timestamp")
    record_ts = stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else None
    ts = parsed.get("ts") if isinstance(parsed.get("ts"), int) and not isinstance(parsed.get("ts"), bool) else None
    event_type = parsed.get("type")
    user = parsed.get("user_id")
    user_key = user.encode() if isinstance(user, str) else key
    if origin == topics.items and source.get("line") is None:  # a catalogue record (its letter has no key)
        if reason == "timestamp_out_of_range":  # bound by its own record's time, sent with it: refused again
            return (f"a listed_at over {LISTED_AHEAD_DAYS} days after its record's time (no setting widens that): "
                    "correct the record and produce it again")
        item = parsed.get("item_id")
        kept = letter.get("key_text")
        item_key = item.encode() if isinstance(item, str) else kept.encode() if isinstance(kept, str) else None
        return Resend(origin, item_key, value, None, reason, record_ts, **own_headers)
    if origin in topics.inputs or (origin != topics.erasures and source.get("line") is None
                                   and event_type in EVENT_TYPES):
        # a worker's letter, or an event `replay` refused (its source is the file): the event's type says where
        topic = topics.for_type(event_type) if event_type in EVENT_TYPES else origin
        counted = reason == "processing_error" or source.get("counted") is True
        return Resend(topic, user_key, value, ts, reason, record_ts, counted, **own_headers)
    if origin == topics.erasures:
        return Resend(origin, user_key, value, None, reason, record_ts, **own_headers)
    if source.get("line") is not None:
        return "a line of a file: correct the file and run `stream-app replay` (or `items load`) on it again"
    return f"from {origin}, not an input topic of this namespace"


class ErasureCheck:
    """Who is erased since when: the workers' erased-users record, the requests on the erasures topic not yet
    applied, and erasure requests this redrive sends. With `replay_erased` (STREAM_APP_REPLAY_ERASED: workers
    apply an erased user's earlier events, a replay meant to restore them) nothing is held back."""

    def __init__(self, erased: ErasedUsers, requested: dict[str, int], replay_erased: bool = False):
        self.erased = erased
        self.requested = requested  # user -> latest requested_at
        self.replay_erased = replay_erased

    @classmethod
    def read(cls, settings: Settings) -> "ErasureCheck":
        requested: dict[str, int] = {}
        for record in read_to_end(settings, settings.topics.erasures):
            request = _json_object(record.value)
            user, at = request.get("user_id"), request.get("requested_at")
            # one dated ahead of its record the workers refuse (a dead letter), and apply the user's events
            ahead = settings.max_future_ms and isinstance(at, int) and at > record.timestamp + settings.max_future_ms
            reset = request.get("reset") is True  # a reset deletes a profile, erases no one
            if isinstance(user, str) and isinstance(at, int) and not ahead and not reset:
                requested[user] = max(at, requested.get(user, at))
        return cls(erased_users(settings), requested, settings.replay_erased)

    def add(self, resend: Resend) -> None:
        request = _json_object(resend.value)
        user, at = request.get("user_id"), request.get("requested_at")
        if isinstance(user, str) and isinstance(at, int) and request.get("reset") is not True:  # a reset erases no one
            self.requested[user] = max(at, self.requested.get(user, at))

    def names_erased(self, key: bytes | None, payload: bytes) -> bool:
        """Does an input (a log's line, an event) name an erased user, dated at or before the erasure or undated: a
        dead letter of it would store the erased user's data again, as the workers' `erased_rejection` says."""
        users, ts = input_users(key, payload or b"")
        return not self.replay_erased and any((at := self.erased_time(user)) is not None and (ts is None or ts <= at)
                                              for user in users)

    def erased_time(self, user: str) -> int | None:
        """The user's latest erasure time, applied (the workers' record) or requested, None if never erased."""
        return max((at for at in (self.erased.erased_at(user), self.requested.get(user)) if at is not None), default=None)

    def holds_back(self, resend: Resend, letter_key: bytes | None) -> bool:
        """An input naming an erased user (by its key, its user_id, or the one a broken line spells out), from
        before the erasure or of unknown time: the workers would drop it, and sending it would put the user's
        data back on an input topic."""
        if self.replay_erased:
            return False
        users = input_users(letter_key, resend.value or b"")[0] | input_users(resend.key, b"")[0]
        return any((at := self.erased_time(user)) is not None and (resend.ts is None or resend.ts <= at)
                   for user in users)


def positions(settings: Settings, reasons: set[str]) -> dict[str, dict[int, int]]:
    """How far earlier redrives of each reason read each partition of the dead-letter topic (a partition not named:
    never), from the compacted positions topic (a consumer group's committed offsets would expire, and the
    letters be sent again)."""
    found: dict[str, dict[int, int]] = {reason: {} for reason in reasons}
    check = validator("redrive-position")
    for record in read_to_end(settings, settings.topics.redrive_positions):
        try:
            position = orjson.loads(record.value)
            check(position)
        except (orjson.JSONDecodeError, TypeError, fastjsonschema.JsonSchemaException):
            continue  # not a position this command wrote: read as none
        if position["reason"] in found and position["topic"] == settings.topics.dlq:
            found[position["reason"]] = {int(p): offset for p, offset in position["offsets"].items()}
    return found


def commit_read(settings: Settings, reasons: set[str], ends: dict[TopicPartition, int]) -> None:
    """Record how far each reason is read (after every send was acknowledged)."""
    producer, produced = make_producer(settings), Produced()
    now = int(time.time() * 1000)
    try:
        for reason in sorted(reasons):
            position = {"reason": reason, "topic": settings.topics.dlq, "written_at": now, "schema_version": 1,
                        "offsets": {str(tp.partition): end for tp, end in sorted(ends.items())}}
            producer.send(settings.topics.redrive_positions, key=reason.encode(), value=orjson.dumps(position)
                          ).add_callback(produced.acked).add_errback(produced.failed)
        producer.flush()
    finally:
        producer.close()
    produced.check(len(reasons), "redrive positions", "the inputs were sent; running the same command again sends "
                   "them again, which is safe")


def redrive(settings: Settings, reasons: set[str], from_start: bool = False, dry_run: bool = False
            ) -> RedriveSummary:
    """Send the dead letters of `reasons` that earlier redrives of their reason did not read (`from_start`: all)
    back to their topics (`dry_run`: count them only); mark them read once the broker acknowledged every send."""
    read_from = {reason: {} for reason in reasons} if from_start else positions(settings, reasons)
    partitions = {p for done in read_from.values() for p in done}
    records, starts, ends = read_range(settings, settings.topics.dlq, from_offsets={
        p: min(done.get(p, 0) for done in read_from.values()) for p in partitions})
    if not ends:
        raise StreamAppError(f"there is no dead-letter topic {settings.topics.dlq}: no worker has run in the namespace "
                             f"{settings.namespace!r} (is STREAM_APP_NAMESPACE the workers'?)")
    summary = RedriveSummary(read=len(records), dry_run=dry_run,
                             ranges={tp.partition: (start, ends[tp]) for tp, start in starts.items()})
    for tp, end in ends.items():  # a position past the end: the topic was recreated; its letters are all new
        for reason, done in read_from.items():
            if done.get(tp.partition, 0) > end:
                done[tp.partition] = 0
                summary.restarted.add(tp.partition)
    candidates: list[tuple[Resend, bytes | None, int, int]] = []
    letter_ids: set[str] = set()  # a letter written again by a redone batch (at-least-once) is sent once
    for record in records:
        try:
            letter = orjson.loads(record.value)
            reason = letter["reason"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            reason = None
        if not isinstance(reason, str):  # another producer's record (a reason of a list or an object was a crash)
            summary.left["not a dead letter of this project (no JSON with a reason)"] += 1
            continue
        if reason not in reasons:
            summary.other_reasons[reason] += 1
            if reason in REDRIVABLE and isinstance(why := resend_of(letter, record.key, settings), str):
                summary.other_unsendable[(reason, why)] += 1  # naming its reason would not send it either
        elif record.offset < read_from[reason].get(record.partition, 0):
            summary.sent_before += 1
        elif isinstance(resend := resend_of(letter, record.key, settings), str):
            summary.left[resend] += 1
        elif letter.get("letter_id") in letter_ids:
            summary.left["a copy of a letter read already (its letter_id: written again by a redone batch)"] += 1
        else:
            if isinstance(letter.get("letter_id"), str):
                letter_ids.add(letter["letter_id"])
            resend = replace(resend, letter=f"{settings.topics.dlq}/{record.partition}/{record.offset}")
            candidates.append((resend, record.key, record.partition, record.offset))
    erasures = ErasureCheck.read(settings) if candidates else None
    for resend, *_ in candidates:
        if resend.topic == settings.topics.erasures:
            erasures.add(resend)  # type: ignore[union-attr]
    resends = []
    for resend, letter_key, partition, offset in candidates:
        if resend.topic not in (settings.topics.erasures, settings.topics.items) and \
                erasures.holds_back(resend, letter_key):  # type: ignore[union-attr]
            summary.left["an erased user's input from before the erasure (the workers would drop it)"] += 1
        else:
            resends.append((resend.ts if resend.ts is not None else -1, partition, offset, resend))
    resends.sort(key=lambda entry: entry[:3])  # events in time order, as a worker applies them best
    for *_, resend in resends:
        summary.sent[resend.topic] += 1
        summary.by_reason[resend.reason] += 1
        summary.headers_left_out += resend.headers_left_out > 0
    if not dry_run:
        _send([resend for *_, resend in resends], settings)
        ensure_topics(settings)  # the positions topic, on a namespace whose workers are older than it
        commit_read(settings, reasons, ends)
    return summary


def _send(resends: list[Resend], settings: Settings) -> None:
    if not resends:
        return
    producer, produced = make_producer(settings), Produced()
    try:
        for resend in resends:
            headers = [*resend.headers, (REDRIVE_HEADER, resend.reason.encode())] + \
                ([(COUNTED_HEADER, b"1")] if resend.counted else [])
            if resend.letter is not None:
                headers.append((REDRIVE_OF_HEADER, resend.letter.encode()))
            producer.send(resend.topic, key=resend.key, value=resend.value, timestamp_ms=resend.record_ts,
                          headers=headers).add_callback(
                produced.acked).add_errback(produced.failed)
        producer.flush()
    finally:
        producer.close()
    produced.check(len(resends), "re-driven inputs", "running the same command again is safe: the workers skip the "
                   "events they applied, and nothing was marked read")


def check_reasons(asked: list[str]) -> set[str]:
    """The reasons to re-drive; `all` for every one a fix can make pass."""
    if not asked:
        raise StreamAppError("name the reasons to re-drive with --reason (repeatable, or `all`): processing_error "
                             "after a fixed bug; payload_too_large or timestamp_out_of_range after widening the "
                             "limit; key_mismatch, wrong_partition, type_topic_mismatch (sent with the right key and "
                             "topic); schema_violation after a schema change. `--dry-run --reason all` counts what "
                             "each would send; `stream-app dead-letters` lists them")
    wanted = set(REDRIVABLE) if "all" in asked else set(asked)
    never = sorted(wanted & set(NEVER_PASS))
    if never:
        raise StreamAppError(f"{never[0]} letters cannot be re-driven: {NEVER_PASS[never[0]]}, so no worker would "
                             "ever take one; fix their producer. One of " + ", ".join(REDRIVABLE) + ", or all")
    unknown = wanted - set(REASONS)
    if unknown:
        raise StreamAppError(f"unknown reason {', '.join(sorted(unknown))}: one of {', '.join(REDRIVABLE)}, or all")
    return wanted
