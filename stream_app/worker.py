"""The stream worker: a thin Faust shell around the pure core.

Per batch (`stream.take_events`) it validates, runs `core.process` per event, then does the I/O once:
profile changelog records, profile snapshots, recommendations, item signals and dead letters go out
as one record batch per partition (output.py) while the Redis mirror is one pipelined round trip,
and both are awaited before the batch's events are acknowledged. Faust commits only acknowledged
offsets, so a crash replays at most the uncommitted tail, which the profile's event_id digests make
harmless (at-least-once delivery, idempotent effects). Faust still owns consumption, the consumer
group, the tables (local state and recovery from their changelogs) and timers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable, Iterable

import faust
import orjson
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from . import core, transport
from .config import EVENT_TYPES, Settings
from .contracts import Rejection, Source, check_input
from .encoder import Encoder, UserEncoding, encode_batch
from .events import Event
from .items import CachedItemIndex, SignalBuffer, apply_signals
from .learners import PartitionLearners, Persistent
from .model_control import ModelWatcher
from .output import BatchProducer, Outbox
from .profile import Profile
from .redis_store import ProfileStore, RedisStoreConfig

log = logging.getLogger("stream_app.worker")

STATUS_TTL_S = 15
PROFILE_TABLE = "profiles"
LEARNER_TABLE = "partition-learners"
ITEM_TABLE = "items"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Counters:
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    recommendations: int = 0
    item_signals: int = 0
    # Hits of the next event on the list shown (live) and on the list a shadow encoder would have shown
    live_judged: int = 0
    live_hits: int = 0
    shadow_judged: int = 0
    shadow_hits: int = 0


class TableItemIndex(CachedItemIndex):
    """The item side as the recommender sees it, read from the global table, refreshed per batch."""

    def __init__(self, data: Any, settings: Settings, partitions: int):
        super().__init__(settings, partitions)
        self.data = data
        self._parsed: dict[str, tuple[bytes, Any]] = {}

    def load(self, key: str) -> Any:
        raw = self.data.get(key.encode())
        if raw is None:
            return None
        cached = self._parsed.get(key)
        if cached is not None and cached[0] is raw:  # unchanged since it was parsed: same bytes object
            return cached[1]
        value = orjson.loads(raw)
        if key[0] != "i":  # lists are read every batch; entries are many and read once each
            self._parsed[key] = (raw, value)
        return value


class PartitionState:
    """The learners of each input partition (ranker, bandit): live objects, restored from their table
    on first use after an assignment, written back (table + changelog) for the partitions a batch used."""

    def __init__(self, data: Any, settings: Settings):
        self.data = data
        self.settings = settings
        self.live: dict[int, PartitionLearners] = {}

    def get(self, partition: int) -> PartitionLearners | None:
        if not self.settings.ranker:
            return None
        learners = self.live.get(partition)
        if learners is None:
            stored = self.data.get(str(partition).encode())
            learners = (Persistent.loads(stored.decode()) if stored is not None
                        else core.new_partition_learners(self.settings))
            self.live[partition] = learners
        return learners

    def forget(self) -> None:
        """After a rebalance: the table holds the truth (recovered from the changelog)."""
        self.live.clear()


RETRYABLE = (KafkaError, RedisError, OSError, asyncio.TimeoutError)


async def until_done(what: str, action: Callable[..., Awaitable[Any]], *args: Any,
                     max_backoff_s: float = 10.0) -> Any:
    """Retry an output step until it succeeds. The batch's events stay unacknowledged meanwhile, so
    an outage of Redis or the broker stalls the worker (backpressure) instead of losing effects.
    A retried Kafka delivery may repeat records: recommendation ids and profile versions make
    repeats harmless downstream."""
    backoff = 0.1
    while True:
        try:
            return await action(*args)
        except RETRYABLE as exc:
            log.error("cannot %s (%r); retrying in %.1fs", what, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)


def build_app(settings: Settings, partitions: int, web_port: int = 6066) -> faust.App:
    """The Faust app with both agents. `partitions` is the input topics' partition count."""
    scheme = transport.configure(settings.fetch_max_wait_ms)
    brokers = [f"{scheme}://{host}" for host in settings.require_kafka().split(",")]
    app = faust.App(
        settings.app_id,
        broker=brokers,
        store="memory://",
        topic_partitions=partitions,
        processing_guarantee="at_least_once",  # exactly_once needs transactions Tansu lacks
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=6,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_commit_interval=settings.commit_interval_s,
        table_standby_replicas=0,
        web_enabled=False,
        web_port=web_port,
    )
    topics = settings.topics
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    inputs = app.topic(*topics.inputs, **raw)
    type_by_topic = {topics.for_type(t): t for t in EVENT_TYPES}
    item_signals = app.topic(topics.item_signals, **raw)

    profile_table = app.Table(PROFILE_TABLE, partitions=partitions, key_type=bytes, value_type=bytes)
    # Every worker writes its items into the one changelog partition (Faust's advice for a global
    # table shared by several workers) and, with synchronize_all_active_partitions, keeps reading it
    # after recovery, so each worker sees the others' writes.
    item_table = app.GlobalTable(ITEM_TABLE, partitions=1, recovery_buffer_size=1, key_type=bytes,
                                 value_type=bytes, synchronize_all_active_partitions=True)
    store = ProfileStore(RedisStoreConfig(settings.require_redis(), settings.namespace))
    watcher = ModelWatcher(settings)
    models_ready = asyncio.Event()
    output = BatchProducer(settings.require_kafka())
    # The learners of each input partition (ranker, bandit), in a table of the same partitioning.
    learner_table = app.Table(LEARNER_TABLE, partitions=partitions, key_type=bytes, value_type=bytes)
    partition_state = PartitionState(learner_table.data, settings)
    learner_changelog = learner_table.changelog_topic_name
    profile_changelog = profile_table.changelog_topic_name
    item_changelog = item_table.changelog_topic_name
    index = TableItemIndex(item_table.data, settings, partitions)
    counters = Counters()

    def dead_letter(outbox: Outbox, rejection: Rejection, now: int) -> None:
        counters.rejected += 1
        log.warning("rejected %s: %s (%s)", rejection.source, rejection.reason, rejection.detail[:200])
        outbox.add(topics.dlq, rejection.key, orjson.dumps(rejection.to_record(now)))

    def encode_events(encoder: Encoder | None, loaded: dict[str, Profile],
                      valid: list[tuple[Event, Any]]) -> list[UserEncoding | None]:
        if encoder is None or not valid:
            return [None] * len(valid)
        return encode_batch(encoder, [checked for checked, _ in valid], lambda user_id: loaded[user_id].recent,
                            index.new_item_vectors(encoder.version), settings.encoder_candidates)

    def count_hits(live_hit: bool | None, shadow_hit: bool | None) -> None:
        if live_hit is not None:
            counters.live_judged += 1
            counters.live_hits += live_hit
        if shadow_hit is not None:
            counters.shadow_judged += 1
            counters.shadow_hits += shadow_hit

    def load_profile(user_id: str) -> Profile:
        stored = profile_table.data.get(user_id.encode())
        return Profile.from_json(stored) if stored is not None else core.new_profile(user_id, settings)

    @app.task
    async def follow_models() -> None:
        while True:  # the control topic is how models change: keep following it through broker hiccups
            try:
                await watcher.run(models_ready)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("cannot follow the model control topic (%r); retrying in 2s", exc)
                await asyncio.sleep(2)

    @app.agent(inputs, name=f"{settings.app_id}.profiles")
    async def update_profiles(stream: faust.StreamT) -> None:
        try:  # serve the announced model from the first event on
            await asyncio.wait_for(models_ready.wait(), timeout=30)
        except asyncio.TimeoutError:
            log.error("the model control topic was not read within 30s; starting without an encoder")
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            now = now_ms()
            index.begin_batch()
            signals = SignalBuffer.for_settings(settings)
            outbox = Outbox()
            used_learners: set[int] = set()
            changed: dict[str, tuple[Profile, int]] = {}
            loaded: dict[str, Profile] = {}
            valid: list[tuple[Event, Any]] = []
            for event in events:
                msg = event.message
                counters.events += 1
                checked = check_input(msg.value, msg.key, Source(msg.topic, msg.partition, msg.offset),
                                      type_by_topic.get(msg.topic), settings.max_payload_bytes)
                if isinstance(checked, Rejection):
                    dead_letter(outbox, checked, now)
                else:
                    valid.append((checked, msg))
            # Each event type has its own topic, so a user's events reach a batch out of order;
            # within the batch they are applied in event time (stable for equal times).
            valid.sort(key=lambda pair: pair[0].ts)
            for checked, _ in valid:
                if checked.user_id not in loaded:
                    loaded[checked.user_id] = load_profile(checked.user_id)
            live, shadow = watcher.live, watcher.shadow  # one model per role for the whole batch
            encodings = encode_events(live, loaded, valid)
            shadow_encodings = encode_events(shadow, loaded, valid)
            for position, (checked, msg) in enumerate(valid):
                profile = loaded[checked.user_id]
                try:
                    learners = partition_state.get(msg.partition)
                    live_hit, shadow_hit = core.shown_hits(profile, checked)
                    outcome = core.process(profile, checked, index, signals, settings, now, learners,
                                           encodings[position])
                    if outcome.applied:
                        count_hits(live_hit, shadow_hit)
                        if shadow_encodings[position] is not None:
                            core.shadow_recommendation(profile, checked, index, settings, learners,
                                                       shadow_encodings[position])
                except Exception as exc:  # a bug must not stop the partition: park the event
                    dead_letter(outbox, Rejection("processing_error", f"{exc!r}\n{traceback.format_exc(limit=3)}",
                                                  Source(msg.topic, msg.partition, msg.offset), msg.key, msg.value),
                                now)
                    continue
                if not outcome.applied:
                    counters.duplicates += 1
                    continue
                counters.applied += 1
                changed[checked.user_id] = (profile, msg.partition)
                if learners is not None:
                    used_learners.add(msg.partition)
                if outcome.recommendation is not None:
                    counters.recommendations += 1
                    outbox.add(topics.recommendations, msg.key, orjson.dumps(outcome.recommendation))
            to_redis: list[tuple[Profile, bytes]] = []
            for user_id, (profile, partition) in changed.items():
                key = user_id.encode()
                snapshot, public = profile.snapshots()
                to_redis.append((profile, public))
                # The table's changelog record, written with the batch: same partition as the user's input.
                profile_table.data[key] = snapshot
                outbox.add(profile_changelog, key, snapshot, partition)
                outbox.add(topics.profiles, key, public)
            for partition in used_learners:
                state = partition_state.live[partition].dumps().encode()
                learner_table.data[str(partition).encode()] = state
                outbox.add(learner_changelog, str(partition).encode(), state, partition)
            for item_id, message in signals.messages():
                outbox.add(topics.item_signals, item_id.encode(), orjson.dumps(message))
            counters.item_signals += len(signals)
            await asyncio.gather(until_done("deliver to Kafka", output.deliver, outbox),
                                 until_done("write to Redis", store.write_profiles, to_redis, now))

    @app.agent(item_signals, name=f"{settings.app_id}.items")
    async def update_items(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            outbox = Outbox()
            by_partition: dict[int, list[dict[str, Any]]] = {}
            for event in events:
                msg = event.message
                try:
                    by_partition.setdefault(msg.partition, []).append(orjson.loads(msg.value))
                except orjson.JSONDecodeError as exc:
                    dead_letter(outbox, Rejection("invalid_json", str(exc),
                                                  Source(msg.topic, msg.partition, msg.offset), msg.key, msg.value),
                                now_ms())
            for partition, signals in by_partition.items():
                write_item_partition(outbox, partition, signals)
            await until_done("deliver to Kafka", output.deliver, outbox)

    def load_item(key: str) -> Any:
        raw = item_table.data.get(key.encode())
        return orjson.loads(raw) if raw is not None else None

    def write_item_partition(outbox: Outbox, partition: int, signals: Iterable[dict[str, Any]]) -> None:
        for key, value in apply_signals(load_item, signals, partition, settings).items():
            raw = orjson.dumps(value)
            item_table.data[key.encode()] = raw
            outbox.add(item_changelog, key.encode(), raw, 0)

    worker_id = f"{settings.app_id}:{socket.gethostname()}:{os.getpid()}"
    readiness = {"ready": False}

    async def publish_status() -> None:
        assigned = sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.click)
        try:
            await store.publish_worker_status(worker_id, {
                "worker_id": worker_id, "app_id": settings.app_id, "pid": os.getpid(),
                "ready": readiness["ready"], "input_partitions": assigned, "counters": asdict(counters),
                "models": watcher.status(),
                "updated_at": now_ms()}, ttl_s=STATUS_TTL_S)
        except RETRYABLE as exc:
            log.warning("cannot publish the worker status to Redis: %r", exc)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        readiness["ready"] = False

    @app.on_rebalance_complete.connect
    async def on_ready(sender: Any, *args: Any, **kwargs: Any) -> None:
        partition_state.forget()
        readiness["ready"] = True
        await publish_status()

    @app.on_before_shutdown.connect
    async def close_clients(sender: Any, *args: Any, **kwargs: Any) -> None:
        await output.stop()
        await store.close()

    @app.timer(interval=STATUS_TTL_S / 3)
    async def heartbeat() -> None:
        await publish_status()
        log.info("worker counters: %s", counters)

    return app


def run_worker(settings: Settings, partitions: int, web_port: int, loglevel: str = "warn") -> None:
    """Run one worker in the foreground until SIGTERM/SIGINT."""
    app = build_app(settings, partitions, web_port)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    # A batch sends more than Faust's 100-message producer buffer; the throttle is intended,
    # its per-batch warning is noise.
    logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)
    worker.execute_from_commandline()
