"""`stream-app redrive`: send dead letters back to the topic they came from, once what refused them is fixed
(a bug of the workers, a limit or time window set too tight, a producer's keys or topics).

A dead letter keeps its input whole (up to 384 KiB), so the input can be sent again as it was. What is sent
goes through the workers' checks as any input does: an event they still refuse comes back as a new dead
letter, and an event they already applied is skipped by its event id. A redrive reads the dead-letter topic
from where the last one stopped (the offsets it commits under a group of its own) to the end it finds at
its start, and commits only once the broker has acknowledged everything it sent: stopped half-way, it sends
the same letters again, which is safe for the same reason.
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from ..config import Settings
from ..contracts import load_schema
from ..errors import StreamAppError
from ..kafka_security import kafka_python_kwargs
from ..stream.erasures import ErasedUsers
from .consume import read_range
from .repair import erased_users
from .replay import Produced, make_producer

#: Every reason a dead letter can carry, from its schema.
REASONS: tuple[str, ...] = tuple(load_schema("dead-letter")["properties"]["reason"]["enum"])
EVENT_TYPES = ("browse", "click", "purchase")


@dataclass(frozen=True)
class Resend:
    """One input to send again: where, with which key and value (None: a tombstone, as the input was)."""

    topic: str
    key: bytes | None
    value: bytes | None
    ts: int | None  # the event's time, for sending events in time order


@dataclass
class RedriveSummary:
    read: int = 0
    sent: Counter = field(default_factory=Counter)  # topic -> inputs sent again
    left: Counter = field(default_factory=Counter)  # why a letter was not sent -> how many
    other_reasons: Counter = field(default_factory=Counter)  # reason not asked for -> how many
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> first offset read, end
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "sent": dict(self.sent), "left": dict(self.left),
                "other_reasons": dict(self.other_reasons), "dry_run": self.dry_run,
                "ranges": {str(p): list(r) for p, r in sorted(self.ranges.items())}}


def redrive_group(settings: Settings) -> str:
    """The consumer group whose committed offsets on the dead-letter topic mark what redrives have read."""
    return f"{settings.group_id}.redrive"


def payload_of(letter: dict[str, Any]) -> bytes | None:
    """The input's value as it was: None for a tombstone."""
    if letter.get("payload_null"):
        return None
    if "payload_base64" in letter:
        return base64.b64decode(letter["payload_base64"])
    return str(letter.get("payload_text", "")).encode("utf-8")


def _json_object(value: bytes | None) -> dict[str, Any]:
    try:
        parsed = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def resend_of(letter: dict[str, Any], key: bytes | None, settings: Settings) -> Resend | str:
    """What re-driving a dead letter sends, or why it cannot be sent. An input event goes to its type's topic
    keyed by its user, an item keyed by its id, an erasure request by its user, as the workers require; so a
    letter refused for its key, partition or topic is sent as it should have been."""
    topics = settings.topics
    if letter.get("reason") == "bad_state":
        return "a learner's state record of a changelog, not an input (its learner started afresh)"
    if letter.get("payload_truncated"):
        return "its payload was kept cut at 384 KiB: only its producer can send it again"
    value = payload_of(letter)
    parsed = _json_object(value)
    source = letter.get("source") or {}
    origin = source.get("topic")
    ts = parsed.get("ts") if isinstance(parsed.get("ts"), int) and not isinstance(parsed.get("ts"), bool) else None
    event_type = parsed.get("type")
    if origin in topics.inputs or (origin not in (topics.items, topics.erasures) and source.get("line") is None
                                   and event_type in EVENT_TYPES):
        # a worker's letter, or an event `replay` refused (its source is the file): the event's type says where
        topic = topics.for_type(event_type) if event_type in EVENT_TYPES else origin
        user = parsed.get("user_id")
        return Resend(topic, user.encode() if isinstance(user, str) else key, value, ts)
    if origin == topics.items:
        item = parsed.get("item_id")
        return Resend(origin, item.encode() if isinstance(item, str) else key, value, None)
    if origin == topics.erasures:
        user = parsed.get("user_id")
        return Resend(origin, user.encode() if isinstance(user, str) else key, value, None)
    if source.get("line") is not None:
        return "a line of a file: correct the file and run `stream-app replay` (or `items load`) on it again"
    return f"from {origin}, not an input topic of this namespace"


def erased_before(resend: Resend, erased: ErasedUsers, inputs: tuple[str, ...]) -> bool:
    """An erased user's event from before the erasure: the workers drop such events, and sending it again would
    put the user's data back on an input topic."""
    if resend.topic not in inputs or resend.key is None:
        return False
    try:
        erased_at = erased.erased_at(resend.key.decode("utf-8"))
    except UnicodeDecodeError:
        return False
    return erased_at is not None and (resend.ts is None or resend.ts <= erased_at)


def commit_read(settings: Settings, ends: dict[TopicPartition, int]) -> None:
    consumer = KafkaConsumer(bootstrap_servers=settings.require_kafka().split(","), group_id=redrive_group(settings),
                             enable_auto_commit=False, **kafka_python_kwargs(settings.kafka_security))
    try:
        consumer.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in ends.items()})
    finally:
        consumer.close()


def redrive(settings: Settings, reasons: set[str], from_start: bool = False, dry_run: bool = False
            ) -> RedriveSummary:
    """Send the dead letters of `reasons` read since the last redrive back to their topics (`dry_run`: count
    them only); commit what was read once the broker acknowledged every send."""
    records, starts, ends = read_range(settings, settings.topics.dlq, group_id=None if from_start else
                                       redrive_group(settings))
    ranges = {tp.partition: (start, ends[tp]) for tp, start in starts.items()}
    summary = RedriveSummary(read=len(records), ranges=ranges, dry_run=dry_run)
    erased = erased_users(settings) if records else None
    resends: list[tuple[int, int, int, Resend]] = []
    for record in records:
        try:
            letter = orjson.loads(record.value)
            reason = letter["reason"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            summary.left["not a dead letter of this project (no JSON with a reason)"] += 1
            continue
        if reason not in reasons:
            summary.other_reasons[reason] += 1
            continue
        resend = resend_of(letter, record.key, settings)
        if isinstance(resend, str):
            summary.left[resend] += 1
        elif erased is not None and erased_before(resend, erased, settings.topics.inputs):
            summary.left["an erased user's input from before the erasure (the workers would drop it)"] += 1
        else:
            resends.append((resend.ts if resend.ts is not None else -1, record.partition, record.offset, resend))
    resends.sort(key=lambda entry: entry[:3])  # events in time order, as a worker applies them best
    for *_, resend in resends:
        summary.sent[resend.topic] += 1
    if dry_run:
        return summary
    if resends:
        producer, produced = make_producer(settings), Produced()
        try:
            for *_, resend in resends:
                producer.send(resend.topic, key=resend.key, value=resend.value).add_callback(
                    produced.acked).add_errback(produced.failed)
            producer.flush()
        finally:
            producer.close()
        produced.check(len(resends), "re-driven inputs", "running the same command again is safe: the workers skip "
                       "the events they applied, and nothing was marked read")
    if ends:
        commit_read(settings, ends)
    return summary


def check_reasons(asked: list[str]) -> set[str]:
    """The reasons to re-drive; `all` for every one."""
    if not asked:
        raise StreamAppError("name the reasons to re-drive with --reason (repeatable, or `all`): processing_error "
                             "after a fixed bug; payload_too_large or timestamp_out_of_range after widening the "
                             "limit; key_mismatch, wrong_partition, type_topic_mismatch (sent with the right key and "
                             "topic). `--dry-run --reason all` counts what each would send; `stream-app dead-letters` "
                             "lists them")
    wanted = set(REASONS) if "all" in asked else set(asked)
    unknown = wanted - set(REASONS)
    if unknown:
        raise StreamAppError(f"unknown reason {', '.join(sorted(unknown))}: one of {', '.join(REASONS)}, or all")
    return wanted
