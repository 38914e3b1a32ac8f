"""Replay a recorded log into the input topics: keyed by user, in timestamp order, at a set rate."""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TextIO

import orjson
from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from ..config import Settings
from ..contracts import Rejection, Source, time_out_of_range
from ..errors import InputFileError, StreamAppError
from ..kafka_security import kafka_python_kwargs
from ..stream.topics import ensure_topics
from .log_checks import DEAD_LETTERS_SAID, rejection_said, skipped_said, warn_if_seconds
from .log_files import check_file
from .progress import Progress
from .recorded import LineRejection, OnlineRetailStats
from .sorted_log import RUN_EVENTS, Refused, SortedLog


@dataclass
class ReplaySummary:
    path: str
    sent: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    seconds: float = 0.0
    skipped: OnlineRetailStats | None = None  # what the Online Retail reader left out on purpose
    first_rejection: str = ""  # the first dead letter's reason and detail
    erased: int = 0  # rejected lines of erased users, not dead-lettered (that would store them again)
    limit_cut: bool = False  # a --limit left events out: the lines skipped or rejected are the whole file's
    repeats: int = 0  # events sent whose id their user had earlier in the log: the workers apply each once
    read_seconds: float = 0.0  # reading the file and putting it in time order, before the first send
    no_worker: str | None = None  # the namespace, when Redis knew no live worker in it as the replay ended

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def lines(self) -> list[str]:
        rate = self.total / self.seconds if self.seconds > 0 else 0.0
        by_topic = ", ".join(f"{t}={n}" for t, n in sorted(self.sent.items())) or "none"
        out = [f"replayed {self.total} events from {self.path} in {self.seconds:.2f}s ({rate:,.0f} ev/s; read and put "
               f"in time order in {self.read_seconds:.2f}s before)",
               f"  by topic: {by_topic}"]
        whole = (f" (counted over the whole file, of which --limit replayed the first {self.total:,} events in time)"
                 if self.limit_cut else "")
        if self.skipped is not None and self.skipped.skipped:
            out.append(f"  {skipped_said(self.skipped.as_dict())}{whole}")
        if self.rejected:
            first = f", the first as {self.first_rejection}" if self.first_rejection else ""
            out.append(f"  rejected {self.rejected} unreadable lines or events of them, or events the workers would "
                       f"refuse (over the size limit, a time outside the accepted window) -> dead-letter topic{first}; "
                       f"{DEAD_LETTERS_SAID}{whole}")
        if self.repeats:
            out.append(f"  {self.repeats:,} of them repeat an event id their user had earlier in the log: the workers apply "
                       f"each once (as `evaluate` does), so {self.total - self.repeats:,} events are applied")
        if self.erased:
            out.append(f"  left out {self.erased} rejected lines or events of erased users, dated at or before their "
                       "erasure or undated (a dead letter would store them again; STREAM_APP_REPLAY_ERASED=1 keeps them)")
        if self.no_worker is not None:  # sent to a namespace no worker reads: nothing would happen, unsaid
            out.append(f"  no worker is live under STREAM_APP_NAMESPACE={self.no_worker!r}: the events wait in its topics "
                       "until one starts (`stream-app worker` with the same namespace; `stream-app status` lists them)")
        return out


def make_producer(settings: Settings, rate: float | None = None) -> KafkaProducer:
    """`rate`: events sent at a pace, not at full speed: each record goes at once (no linger), since kafka-python
    stamps a record when it is sent and a batch lingering for more would add its wait to every latency measured from
    that stamp (10 ms a record at 1,000 events/s over 24 partitions)."""
    # acks=all with idempotence (kafka-python's defaults): a retried batch cannot land behind a later one
    # of its partition (a replay writes each partition in timestamp order), nor be lost to a failover
    return KafkaProducer(bootstrap_servers=settings.require_kafka().split(","), linger_ms=0 if rate else 10,
                         batch_size=256 * 1024, max_request_size=2 * 1024 * 1024,
                         **kafka_python_kwargs(settings.kafka_security))


#: What a replay that did not get every event to the broker says about running it again.
RERUN_IS_SAFE = ("running the same command again is safe: event ids come from the log, and the workers skip the "
                 "events they already applied")


class ReplayIncomplete(StreamAppError):
    """The broker did not acknowledge every event."""


@dataclass
class Produced:
    """What a replay sent: counts per topic, and per partition the offset after its last message
    (from the broker's acknowledgements: Tansu's ListOffsets under-reports the end of a partition)."""

    sent: dict[str, int] = field(default_factory=dict)
    marks: dict[TopicPartition, int] = field(default_factory=dict)
    acknowledged: int = 0
    failures: list[BaseException] = field(default_factory=list)

    def acked(self, metadata: Any) -> None:
        self.acknowledged += 1
        tp = TopicPartition(metadata.topic, metadata.partition)
        if metadata.offset + 1 > self.marks.get(tp, 0):
            self.marks[tp] = metadata.offset + 1

    def failed(self, exc: BaseException) -> None:
        self.failures.append(exc)

    def check(self, total: int, what: str = "events", rerun: str = RERUN_IS_SAFE) -> None:
        """Raise ReplayIncomplete unless the broker acknowledged all `total` records sent."""
        if self.failures or self.acknowledged < total:
            first = f" (the first error: {self.failures[0]!r})" if self.failures else ""
            raise ReplayIncomplete(f"the broker acknowledged {self.acknowledged} of {total} {what}{first}; {rerun}")


def produce_events(settings: Settings, events: Iterable[dict[str, Any]], rate: float | None = None,
                   progress: Progress | None = None, producer: KafkaProducer | None = None,
                   on_send=None, produced: Produced | None = None) -> Produced:
    """Send input events to their type's topic, keyed by user. `rate`: events/s, None = as fast as possible.
    `produced`: the caller's tally (what the broker acknowledged, known also when the send is interrupted)."""
    topics = settings.topics
    own = producer is None
    producer = producer or make_producer(settings, rate)
    produced = produced if produced is not None else Produced()
    sent = produced.sent
    started = time.monotonic()
    try:
        for i, event in enumerate(events, 1):
            if rate:
                ahead = (i - 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
                elif ahead < -1.0:  # stalled (a full buffer, a paused process): go on at the rate, no catch-up burst
                    started = time.monotonic() - (i - 1) / rate
            topic = topics.for_type(event["type"])
            if on_send is not None:
                on_send(event)
            try:
                producer.send(topic, key=event["user_id"].encode(), value=orjson.dumps(event)).add_callback(
                    produced.acked).add_errback(produced.failed)
            except KafkaError as exc:  # no metadata in max_block_ms (the broker away), a record too large
                produced.failed(exc)
                break
            sent[topic] = sent.get(topic, 0) + 1
            if progress is not None:
                progress.update(i)
        producer.flush()
        if progress is not None:
            progress.update(sum(sent.values()), force=True)
    finally:
        if own:
            producer.close()
    produced.check(sum(sent.values()))
    return produced


def dead_letter_lines(settings: Settings, rejected: Iterable[LineRejection | Rejection],
                      producer: KafkaProducer) -> None:
    """Each rejected line or refused event to the dead-letter topic (`rejected` may be read as it goes)."""
    done, count = Produced(), 0
    for count, item in enumerate(rejected, 1):
        numbered = isinstance(item, LineRejection)
        rejection = item.rejection if numbered else item
        record = rejection.to_record(line=item.line if numbered else None)
        # keyed by the user, as a worker's dead letters are: a consumer of the topic finds a user's there
        producer.send(settings.topics.dlq, key=rejection.message_key() or None,
                      value=orjson.dumps(record)).add_callback(done.acked).add_errback(done.failed)
    producer.flush()
    done.check(count, "dead letters", "running the same command again is safe")


def gate(settings: Settings) -> Callable[[dict[str, Any]], tuple[str, str] | None]:
    """Why a worker would dead-letter an event if it were produced now, or None: over STREAM_APP_MAX_PAYLOAD_BYTES,
    or a time outside the window of `check_input` around the record's timestamp (which a replay sets to the time it
    sends). `replay` and `evaluate` both go by it, so evaluate judges what the workers apply."""
    now, limit = int(time.time() * 1000), settings.max_payload_bytes

    def refusal(event: dict[str, Any]) -> tuple[str, str] | None:
        size = len(orjson.dumps(event))
        if size > limit:
            return "payload_too_large", f"{size:,} bytes, over {limit:,} (STREAM_APP_MAX_PAYLOAD_BYTES)"
        out_of_range = time_out_of_range(event["ts"], now, settings.max_future_ms, settings.max_age_ms,
                                         "the replay's clock (a record sent now is stamped with it)")
        return ("timestamp_out_of_range", out_of_range) if out_of_range else None

    return refusal


def all_refused(path: str | Path, refused: Iterable[Refused], count: int) -> str:
    """What to do about a log none of whose events a worker would take (`refused`: they, `count` of them)."""
    first: dict[str, str] = {}
    for found in refused:
        if found[1] not in first:
            first[found[1]] = refused_said(found)
    what = "; ".join(f"{reason}, the first as {detail[:300]}" for reason, detail in first.items())
    fix = ("for an old log, unset STREAM_APP_MAX_AGE_MS (0: no limit); for times ahead of now, check the log's "
           "timestamps (STREAM_APP_MAX_FUTURE_MS)" if "timestamp_out_of_range" in first else "")
    size = "raise STREAM_APP_MAX_PAYLOAD_BYTES or shorten the events" if "payload_too_large" in first else ""
    return (f"{path}: a worker would take none of its {count:,} events ({what}): nothing sent; "
            + " and ".join(part for part in (fix, size) if part))


def dead_letters_of(refused: Sequence[Refused], path: str | Path) -> list[LineRejection]:
    """The dead letters of refused events, as a worker writes them (keyed by the user)."""
    return [dead_letter_of(found, path) for found in refused]


def refused_said(refused: Refused) -> str:
    """A refused event's detail, naming its line of the log first as a rejected line's does."""
    event, _, detail, line = refused
    return f"line {line}: event {event.get('event_id')!r}: {detail}"


def dead_letter_of(refused: Refused, path: str | Path) -> LineRejection:
    """The dead letter of a refused event (event, reason, detail, line), as a worker writes it (keyed by the user),
    with its line of the log as a rejected line's (`source.line`)."""
    event, reason, _, line = refused
    return LineRejection(line, Rejection(reason, refused_said(refused), Source(str(path)),
                                         str(event.get("user_id", "")).encode(), orjson.dumps(event)))


#: How many of each input partition's last records `latest_event_ts` reads: an older log replayed after a newer
#: one leaves the newer's times behind its own last records (the whole topics would be a full read).
TAIL_RECORDS = 2_000


def latest_event_ts(settings: Settings) -> int | None:
    """The latest event time among the last TAIL_RECORDS records of each input partition, None if empty."""
    times = [ts for record in input_tails(settings) if (ts := accepted_time(record, settings)) is not None]
    return max(times, default=None)


def input_tails(settings: Settings, records: int = TAIL_RECORDS) -> Iterator[Any]:
    """The last `records` records of each input partition (read for at most 10 s)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=settings.require_kafka().split(","), enable_auto_commit=False,
                             consumer_timeout_ms=2000, **kafka_python_kwargs(settings.kafka_security))
    try:
        tps = [TopicPartition(topic, p) for topic in settings.topics.inputs
               for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = {tp: end for tp, end in consumer.end_offsets(tps).items() if end}
        starts = consumer.beginning_offsets(list(ends)) if ends else {}
        ends = {tp: end for tp, end in ends.items() if starts[tp] < end}  # else retention removed every record
        if not ends:
            return
        consumer.assign(list(ends))
        for tp, end in ends.items():
            consumer.seek(tp, max(starts[tp], end - records))
        deadline = time.monotonic() + 10
        while ends and time.monotonic() < deadline:
            for tp, polled in consumer.poll(timeout_ms=500).items():
                yield from polled
            # read to its end: by position, as the last offset may be a transaction marker, never a record
            for tp in [tp for tp, end in ends.items() if consumer.position(tp) >= end]:
                del ends[tp]
    finally:
        consumer.close()


def accepted_time(record: Any, settings: Settings) -> int | None:
    """The event time of an input record a worker accepts for its time, None for one it dead-letters (not JSON, no
    whole-number `ts`, stamped too far from the record's Kafka time): those hold no event the topics have."""
    try:
        ts = orjson.loads(record.value)["ts"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return None
    if isinstance(ts, float) and ts.is_integer():  # JSON Schema's integer: a worker reads 1.7e12 as 1700000000000
        ts = int(ts)
    if not isinstance(ts, int) or isinstance(ts, bool):
        return None
    if record.timestamp is not None and time_out_of_range(ts, record.timestamp, settings.max_future_ms,
                                                          settings.max_age_ms):
        return None
    return ts


def warn_about_times(settings: Settings, first_ts: int | None, last_ts: int | None, fmt: str,
                     say: TextIO | None) -> None:
    """Say when a log's times (its first and last event's) look like seconds, or start before what the input
    topics already hold: then its events come after those in the topics but before them in event time, so the
    workers apply them late and their recommendations mix both logs."""
    if say is None or first_ts is None or last_ts is None:
        return
    warn_if_seconds(fmt, first_ts, last_ts, say)
    latest = latest_event_ts(settings)
    if latest is not None and first_ts < latest:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(latest / 1000))
        first = time.strftime("%Y-%m-%d %H:%M", time.gmtime(first_ts / 1000))
        print(f"warning: the input topics already hold events up to {when} UTC and this log starts at {first}: "
              "the workers apply its earlier events late (counted; the item state leaves them out) and the "
              "recommendations mix both logs. Fine when this replays the same log again; for a log of its own, "
              "start from empty topics (`stream-app down && stream-app up`, or another STREAM_APP_NAMESPACE)",
              file=say)


def replay(settings: Settings, path: str | Path, fmt: str, rate: float | None = None,
           progress_stream: TextIO | None = sys.stderr, limit: int | None = None,
           run_events: int = RUN_EVENTS) -> ReplaySummary:
    """`limit`: the log's first events in time only (as `evaluate --limit`), held in memory; without one the log is
    sorted in runs of `run_events` spilled to disk beyond the first (`sorted_log.SortedLog`)."""
    check_file(Path(path))
    ensure_topics(settings)  # an unreachable broker is said before a large log is read
    skipped = OnlineRetailStats() if fmt == "online-retail" else None
    if progress_stream is not None:  # a large log takes a while before its first send: said, not silent
        print(f"reading {path} as {fmt} and putting it in time order ...", file=progress_stream)
    started = time.monotonic()
    with SortedLog.read(path, fmt, gate(settings), skipped, limit, run_events) as log:
        read_seconds = time.monotonic() - started
        if not len(log):  # every event refused: the dead-letter topic would get the whole log, and nothing be applied
            raise InputFileError(all_refused(path, log.refused_events(), log.refused_count))
        summary = _send(settings, log, path, fmt, rate, progress_stream, skipped)
    summary.read_seconds = read_seconds
    summary.no_worker = None if live_workers(settings) != 0 else settings.namespace
    return summary


def live_workers(settings: Settings) -> int | None:
    """How many workers Redis knows as live in the namespace; None when that cannot be told (no Redis set, or it
    does not answer: the replay itself needs no Redis)."""
    if not settings.redis_url:
        return None
    import redis

    from ..store.redis_store import worker_statuses

    try:  # a REDIS_URL no client takes is none of the replay's business either
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    except ValueError:
        return None
    try:
        return len(worker_statuses(client, settings.namespace))
    except (redis.RedisError, ValueError):
        return None
    finally:
        client.close()


def _send(settings: Settings, log: SortedLog, path: str | Path, fmt: str, rate: float | None,
          progress_stream: TextIO | None, skipped: OnlineRetailStats | None) -> ReplaySummary:
    """Dead letters first (the refused events read from their runs as they are sent), then the events in time
    order."""
    check = None
    if log.rejected or log.refused_count:  # those of erased users are left out, as the workers drop theirs
        from .redrive import ErasureCheck

        check = ErasureCheck.read(settings)
    warn_about_times(settings, log.first_ts, log.last_ts, fmt, progress_stream)
    summary = ReplaySummary(str(path), skipped=skipped, limit_cut=log.cut.events_beyond, repeats=log.repeats)
    producer = make_producer(settings, rate)
    started = time.monotonic()
    interrupted = False
    produced = Produced()
    try:
        # first: an interrupted replay loses none
        dead_letter_lines(settings, _dead_letters(log, path, check, summary), producer)
        summary.sent = produce_events(settings, log, rate, Progress(len(log), progress_stream), producer,
                                      produced=produced).sent
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if interrupted:  # close(5) flushes first and raises KafkaTimeoutError while records are pending
            with contextlib.suppress(KafkaError):
                producer.close(timeout=5)
            print(f"\ninterrupted: the broker acknowledged {produced.acknowledged:,} of the log's {len(log):,} events; "
                  f"{RERUN_IS_SAFE}", file=sys.stderr)
        else:
            producer.close()
    summary.seconds = time.monotonic() - started
    return summary


def _dead_letters(log: SortedLog, path: str | Path, check: Any, summary: ReplaySummary) -> Iterator[LineRejection]:
    """The log's rejected lines, then its refused events' dead letters, less those of erased users (`check`, an
    `ErasureCheck`; as `erased_rejection`): `summary` counts those given and those left out, and says the first."""
    for item in chain(log.rejected, (dead_letter_of(found, path) for found in log.refused_events())):
        rejection = item.rejection
        if check is not None and check.names_erased(rejection.key, rejection.payload):
            summary.erased += 1
            continue
        if not summary.rejected:
            summary.first_rejection = rejection_said(rejection)
        summary.rejected += 1
        yield item
