"""Reading topics as a downstream service would (plain kafka-python, assign + seek: no group join),
and the input lag of the workers' consumer group. Used by demo, bench and tests."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Callable, Iterable, Mapping

from kafka import KafkaConsumer, TopicPartition

from ..config import Settings
from ..errors import ServiceTimeout
from ..kafka_security import PLAINTEXT, KafkaSecurity, kafka_python_kwargs
from ..partitioning import partition_of
from ..stream.transport import true_end_offsets
from .progress import Progress


class TopicReader:
    """Follows one topic from its beginning; `read_until` returns everything read so far."""

    def __init__(self, bootstrap: str, topic: str, security: KafkaSecurity = PLAINTEXT):
        self.topic = topic
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False,
                                      group_id=None, consumer_timeout_ms=200, **kafka_python_kwargs(security))
        self.records: list[Any] = []
        self._assigned: set[int] = set()

    def _assign(self) -> None:
        partitions = self.consumer.partitions_for_topic(self.topic) or set()
        if partitions - self._assigned:
            self._assigned = set(partitions)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            self.consumer.assign(tps)
            self.consumer.seek_to_beginning(*tps)

    def poll(self) -> list[Any]:
        self._assign()
        new: list[Any] = []
        for batch in self.consumer.poll(timeout_ms=200, max_records=5000).values():
            new.extend(batch)
        self.records.extend(new)
        return new

    def read_until(self, count: int, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.records) < count:
            if time.monotonic() > deadline:
                raise ServiceTimeout(f"read {len(self.records)} of {count} messages from {self.topic} "
                                     f"in {timeout:.0f}s")
            self.poll()
        return self.records

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> "TopicReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_to_end(settings: Settings, topic: str, timeout_s: float = 120.0) -> list[Any]:
    """Every record of `topic` up to the end offsets at the start, in partition order."""
    return read_range(settings, topic, timeout_s)[0]


def read_range(settings: Settings, topic: str, timeout_s: float = 120.0, from_offsets: Mapping[int, int] | None = None
               ) -> tuple[list[Any], dict[TopicPartition, int], dict[TopicPartition, int]]:
    """The records of `topic` from its beginning (or from `from_offsets` by partition, where retention left them;
    from the beginning where the offset is past the end: a recreated topic) up to the end offsets at the start, in
    partition order; each partition's start and end."""
    consumer = KafkaConsumer(bootstrap_servers=settings.require_kafka().split(","), enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=200, **kafka_python_kwargs(settings.kafka_security))
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        if not tps:
            return [], {}, {}
        consumer.assign(tps)
        beginnings = consumer.beginning_offsets(tps)
        # Tansu reports the base offset of a partition's last batch as its end: confirm by reading it
        reported = asyncio.run(true_end_offsets(settings.require_kafka().split(","), consumer.end_offsets(tps),
                                                settings.kafka_security))
        ends = {tp: end or 0 for tp, end in reported.items()}
        wanted = {tp: (from_offsets or {}).get(tp.partition, 0) for tp in tps}
        starts = {tp: beginnings[tp] if wanted[tp] > ends[tp] else max(beginnings[tp], wanted[tp]) for tp in tps}
        for tp, start in starts.items():
            consumer.seek(tp, start)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise ServiceTimeout(f"read {len(records)} records of {topic} in {timeout_s:.0f}s without reaching "
                                     "its end: is the broker up? (KAFKA_BOOTSTRAP_SERVERS)")
            for tp, batch in consumer.poll(timeout_ms=500, max_records=5000).items():
                records.extend(record for record in batch if record.offset < ends[tp])
        return records, starts, ends
    finally:
        consumer.close()


def latest_records(settings: Settings, topic: str, want: int, partition: int | None = None,
                   match: Callable[[Any], bool] = lambda record: True, chunk: int = 5000,
                   timeout_s: float = 60.0, order: Callable[[Any], Any] | None = None,
                   key: str | None = None) -> list[Any]:
    """The last `want` records of `topic` (of one partition, when given; of the partition the project's producers
    send `key`'s records to, when that is given) that `match` accepts, oldest first by `order` (default: timestamp,
    then partition and offset): read back from each partition's end a chunk at a time, so a long topic is not read
    whole for them."""
    servers = settings.require_kafka().split(",")
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=200, **kafka_python_kwargs(settings.kafka_security))
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or set())
        if key is not None and partitions:
            partition = partition_of(key, len(partitions))
        tps = [TopicPartition(topic, p) for p in partitions if partition is None or p == partition]
        if not tps:
            return []
        ends = asyncio.run(true_end_offsets(servers, consumer.end_offsets(tps), settings.kafka_security))
        beginnings = consumer.beginning_offsets(tps)
        found: list[Any] = []
        deadline = time.monotonic() + timeout_s
        short = 0  # partitions the search left before their start, with fewer than `want` found
        for tp in tps:
            upper, matched = ends[tp] or 0, []
            while upper > beginnings[tp] and len(matched) < want:
                if time.monotonic() >= deadline:
                    short += 1
                    break
                lower = max(beginnings[tp], upper - chunk)
                consumer.assign([tp])
                consumer.seek(tp, lower)
                window: list[Any] = []
                while consumer.position(tp) < upper and time.monotonic() < deadline:
                    for batch in consumer.poll(timeout_ms=500, max_records=chunk).values():
                        window.extend(r for r in batch if r.offset < upper)
                if consumer.position(tp) < upper:  # the deadline came within the window: what it read is not all
                    short += 1
                    matched = [r for r in window if match(r)] + matched
                    break
                matched = [r for r in window if match(r)] + matched
                upper = lower
            found.extend(matched[-want:])
        if short and len(found) < want:  # "none found" would read as "none there"
            raise ServiceTimeout(f"searched {topic} back from its end for {timeout_s:.0f}s and stopped before the start "
                                 f"of {short} of its partitions, with {len(found)} of the {want} records asked for "
                                 "found: the topic is long, or the broker slow; run the command again when it is less "
                                 "busy, or read the topic with a Kafka tool")
        return sorted(found, key=order or (lambda r: (r.timestamp, r.partition, r.offset)))[-want:]
    finally:
        consumer.close()


def committed_offsets(settings: Settings, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """The workers' group's committed offsets (0 where none yet)."""
    # A consumer that never subscribes only fetches the group's offsets; it does not join the group.
    consumer = KafkaConsumer(bootstrap_servers=settings.require_kafka().split(","), group_id=settings.group_id,
                             enable_auto_commit=False, **kafka_python_kwargs(settings.kafka_security))
    try:
        return {tp: consumer.committed(tp) or 0 for tp in partitions}
    finally:
        consumer.close()


def wait_committed(settings: Settings, marks: Mapping[TopicPartition, int], timeout: float,
                   progress: str | None = None) -> None:
    """Wait until the workers committed every input message up to `marks` (so all effects are flushed). `progress`:
    a label to show the messages committed of those up to `marks` under on stderr (topics written from offset 0)."""
    deadline = time.monotonic() + timeout
    behind = None
    shown = Progress(sum(marks.values()), sys.stderr, label=progress) if progress is not None else None
    try:
        while time.monotonic() < deadline:
            committed = committed_offsets(settings, marks)
            behind = sum(max(0, mark - committed[tp]) for tp, mark in marks.items())
            if shown is not None:
                shown.update(shown.total - behind, force=behind == 0)
            if behind == 0:
                return
            time.sleep(0.3)
    finally:
        if shown is not None:
            shown.end()
    raise ServiceTimeout(f"workers still {behind} messages behind after {timeout:.0f}s")
