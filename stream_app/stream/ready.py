"""An own input record on its way to the batch: the gate that parses and checks it, and what a round
of the ordered input hands the batch handler (ordered_input.next_round)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..contracts import COUNTED_HEADER, REDRIVE_OF_HEADER, REDRIVE_OF_SHAPE, Rejection, Source, check_input
from ..core.events import Event
from ..core.ordering import Released
from ..partitioning import partition_of


def counted_before(record: Any) -> bool:
    """A re-driven input the item state already counted (COUNTED_HEADER): a valid event a worker failed on
    (`processing_error`) went through the item feed, which every worker runs on the whole input, before it was
    dead-lettered, and so did a copy of it refused again for another reason."""
    headers = getattr(record, "headers", None)
    return bool(headers) and (COUNTED_HEADER, b"1") in headers


def redrive_of(record: Any) -> str | None:
    """The dead letter a re-driven input copies (REDRIVE_OF_HEADER), if it says so in the header's shape: a
    producer's header of another shape is not copied into a letter (whose schema it would break)."""
    for name, value in getattr(record, "headers", None) or ():
        if name == REDRIVE_OF_HEADER and value is not None:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return text if REDRIVE_OF_SHAPE.fullmatch(text) else None
    return None


def headers_of(record: Any) -> Any:
    """A record's headers as its Kafka client gave them, () for none: its dead letter keeps them."""
    return getattr(record, "headers", None) or ()


def input_source(message: Any) -> Source:
    """Where a Faust message was read, with its Kafka timestamp in ms (Faust gives it in seconds)."""
    stamp = round(message.timestamp * 1000) if message.timestamp is not None else None
    return Source(message.topic, message.partition, message.offset, stamp, counted_before(message),
                  redrive_of(message), headers_of(message))


def gate(value: bytes | None, key: bytes | None, source: Source, event_type: str, reference_ms: int | None,
         settings: Settings, partitions: int) -> Event | Rejection:
    """The input gate (contracts.check_input), and the user's partition: a producer with another
    partitioner would split a user's events between two workers (two diverging profiles).

    The event time is checked against the record's Kafka timestamp, the same on every re-read. That
    timestamp is the producer's (CreateTime) unless the topic has the broker stamp it (LogAppendTime),
    so a producer can stamp a record years ahead with its event; one such event would move its
    partition's event time, the item epoch and the idle users' eviction with it. So a record stamped
    more than max_future_ms ahead of this worker's clock is refused. It is the gate's only reading of
    the clock: such a record read again once its stamp has passed would be accepted, so a log that holds
    one does not replay the same; with LogAppendTime no record is ever refused by it."""
    future_ms = settings.max_future_ms
    if reference_ms is not None and future_ms and reference_ms > time.time() * 1000 + future_ms:
        return Rejection("timestamp_out_of_range", f"the record's timestamp {reference_ms} is more than "
                         f"{settings.max_future_ms} ms (STREAM_APP_MAX_FUTURE_MS) ahead of this worker's clock: its "
                         "producer's clock is wrong, or the topic should have the broker stamp records (LogAppendTime)",
                         source, key, value or b"")
    checked = check_input(value, key, source, event_type, settings.max_payload_bytes, reference_ms,
                          settings.max_future_ms, settings.max_age_ms)
    if isinstance(checked, Event) and partition_of(checked.user_id, partitions) != source.partition:
        return Rejection("wrong_partition", f"user {checked.user_id!r} belongs to partition "
                         f"{partition_of(checked.user_id, partitions)} of {partitions} (murmur2 of the "
                         "key, as Kafka's default partitioner): produce with the default partitioner",
                         source, key, value or b"")
    return checked


#: How far ahead of the reader's clock (and its record's stamp) an event's ts keeps its place: the clocks of two
#: machines differ by that much without being wrong, and every worker must place such an event alike.
ORDER_SKEW_MS = 1000


def order_ts(checked: Any, record_ts: int | None, now_ms: int) -> int | None:
    """An event's place in event time: its ts, unless that is more than ORDER_SKEW_MS ahead of both the reader's clock
    (`now_ms`, when the record was read) and its record's Kafka timestamp: then the later of those two. A client clock
    ahead (the gate lets an event be up to MAX_FUTURE_MS after its record) would otherwise put the event in a later
    item epoch, and its lane's next events, and its partition's with the group's clock, would wait for every other
    partition's event time to reach it: minutes of no recommendations for one partition's users. Only such an event's
    place depends on when it is read (each worker reads it at its own moment). A producer clock behind (CreateTime
    stamps in the past) moves nothing: its events' ts are not ahead of the reader's clock. A replayed log is older
    than the replay, so its order (and `evaluate`'s) is the events' ts."""
    if not isinstance(checked, Event):
        return None
    bound = max(record_ts if record_ts is not None else 0, now_ms)
    return bound if checked.ts > bound + ORDER_SKEW_MS else checked.ts


@dataclass(slots=True)
class Ready:
    """One event of a round: its schedule entry, the event (Faust's, to acknowledge once applied, or the
    reader's `ReadRecord`), the parsed input."""

    entry: Released
    event: Any  # faust EventT or ReadRecord: both give .message with topic, partition, offset, key, value, timestamp
    checked: Event | Rejection


@dataclass(slots=True)
class ReadRecord:
    """An own record as the worker's reader read it, in the shape of a Faust event and its message, so
    that it is applied without waiting for Faust's consumer to deliver it a second time. Nothing to
    acknowledge: the worker commits what it applied (commits.py), and Faust's later copy is let go."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None  # seconds, as Faust gives it
    headers: Any = ()

    @classmethod
    def of(cls, topic: str, partition: int, record: Any) -> ReadRecord:
        """From an aiokafka record (its timestamp in milliseconds)."""
        return cls(topic, partition, record.offset, record.key, record.value,
                   record.timestamp / 1000 if record.timestamp is not None else None,
                   getattr(record, "headers", None) or ())

    @property
    def message(self) -> ReadRecord:
        return self
