"""Replay a recorded log into the input topics: keyed by user, in timestamp order, at a set rate."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TextIO

import orjson
from kafka import KafkaProducer, TopicPartition

from ..config import Settings
from ..kafka_security import kafka_python_kwargs
from ..stream.topics import ensure_topics
from .recorded import LineRejection, load_sorted


@dataclass
class ReplaySummary:
    path: str
    sent: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def lines(self) -> list[str]:
        rate = self.total / self.seconds if self.seconds > 0 else 0.0
        by_topic = ", ".join(f"{t}={n}" for t, n in sorted(self.sent.items())) or "none"
        out = [f"replayed {self.total} events from {self.path} in {self.seconds:.2f}s ({rate:,.0f} ev/s)",
               f"  by topic: {by_topic}"]
        if self.rejected:
            out.append(f"  rejected {self.rejected} unreadable lines -> dead-letter topic (see their reasons there)")
        return out


class Progress:
    """A one-line progress bar on a terminal; a line per 10% elsewhere (CI logs)."""

    def __init__(self, total: int, stream: TextIO | None = sys.stderr, width: int = 30):
        self.total, self.stream, self.width = max(total, 1), stream, width
        self.tty = bool(stream and stream.isatty())
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, done: int, force: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if self.tty:
            if not force and now - self._last_draw < 0.2:
                return
            self._last_draw = now
            filled = int(self.width * done / self.total)
            rate = done / max(now - self.started, 1e-9)
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
                              f"{rate:,.0f} ev/s")
            if force:
                self.stream.write("\n")
        else:
            decile = 10 * done // self.total
            if decile != self._last_decile and (decile > self._last_decile):
                self._last_decile = decile
                self.stream.write(f"replay: {done}/{self.total} ({decile * 10}%)\n")
        self.stream.flush()


def make_producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=settings.require_kafka().split(","), acks=1, linger_ms=10,
                         batch_size=256 * 1024, max_request_size=2 * 1024 * 1024,
                         **kafka_python_kwargs(settings.kafka_security))


@dataclass
class Produced:
    """What a replay sent: counts per topic, and per partition the offset after its last message
    (from the broker's acknowledgements: Tansu's ListOffsets under-reports the end of a partition)."""

    sent: dict[str, int] = field(default_factory=dict)
    marks: dict[TopicPartition, int] = field(default_factory=dict)

    def acked(self, metadata: Any) -> None:
        tp = TopicPartition(metadata.topic, metadata.partition)
        if metadata.offset + 1 > self.marks.get(tp, 0):
            self.marks[tp] = metadata.offset + 1


def produce_events(settings: Settings, events: Sequence[dict[str, Any]], rate: float | None = None,
                   progress: Progress | None = None, producer: KafkaProducer | None = None,
                   on_send=None) -> Produced:
    """Send input events to their type's topic, keyed by user. `rate`: events/s, None = as fast as possible."""
    topics = settings.topics
    own = producer is None
    producer = producer or make_producer(settings)
    produced = Produced()
    sent = produced.sent
    started = time.monotonic()
    try:
        for i, event in enumerate(events, 1):
            if rate:
                ahead = (i - 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            topic = topics.for_type(event["type"])
            if on_send is not None:
                on_send(event)
            producer.send(topic, key=event["user_id"].encode(), value=orjson.dumps(event)).add_callback(
                produced.acked)
            sent[topic] = sent.get(topic, 0) + 1
            if progress is not None:
                progress.update(i)
        producer.flush()
        if progress is not None:
            progress.update(len(events), force=True)
    finally:
        if own:
            producer.close()
    return produced


def dead_letter_lines(settings: Settings, rejected: Sequence[LineRejection], producer: KafkaProducer) -> None:
    for item in rejected:
        record = item.rejection.to_record()
        record["source"]["line"] = item.line
        producer.send(settings.topics.dlq, value=orjson.dumps(record))
    producer.flush()


def replay(settings: Settings, path: str | Path, fmt: str, rate: float | None = None,
           progress_stream: TextIO | None = sys.stderr) -> ReplaySummary:
    events, rejected = load_sorted(path, fmt)
    ensure_topics(settings)
    summary = ReplaySummary(str(path), rejected=len(rejected))
    producer = make_producer(settings)
    started = time.monotonic()
    try:
        summary.sent = produce_events(settings, events, rate, Progress(len(events), progress_stream), producer).sent
        dead_letter_lines(settings, rejected, producer)
    finally:
        producer.close()
    summary.seconds = time.monotonic() - started
    return summary
