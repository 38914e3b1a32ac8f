"""The stream worker: a thin Faust shell around the pure core.

Input is processed in event time (ordered_input.py): every worker reads the whole input for the item
state and processes its own partitions in rounds of one item epoch. Per output batch (up to
`batch_max` events, one or more rounds) it runs `core.process` per event, then does the I/O once:
profile changelog records, profile snapshots, recommendations and dead letters go out as one record
batch per partition (output.py) while the Redis mirror is one pipelined round trip, and both are
awaited before the batch's events are acknowledged. Faust commits only acknowledged offsets, so a
crash replays at most the uncommitted tail, which the profile's event_id digests make harmless
(at-least-once delivery, idempotent effects). Faust owns the consumer group, the tables (local state
and recovery from their changelogs) and timers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable

import faust
from faust.types import TP
import orjson
from aiokafka.errors import (ClusterAuthorizationFailedError, InvalidTopicError, KafkaError, MessageSizeTooLargeError,
                             RecordTooLargeError, TopicAuthorizationFailedError)
from redis import exceptions as redis_errors
from redis.exceptions import RedisError

from . import core, transport
from .catalogue_feed import CatalogueFeed
from .config import Settings
from .content import ContentIndex
from .contracts import Rejection, Source
from .encoder import Encoder, UserEncoding, encode_batch
from .events import Event
from .items import InMemoryItemIndex
from .learners import PartitionLearners, Persistent
from .model_control import ModelWatcher
from .ordered_input import OrderedInput, Ready
from .output import BatchProducer, Outbox
from .profile import Profile
from .redis_store import ProfileStore, RedisStoreConfig

log = logging.getLogger("stream_app.worker")

STATUS_TTL_S = 15
PROFILE_TABLE = "profiles"
LEARNER_TABLE = "partition-learners"
#: How long a starting worker waits for the item catalogue to be embedded before it takes events.
CATALOGUE_WAIT_S = 600


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Counters:
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    recommendations: int = 0
    late: int = 0  # applied after a later event of the same user (its recent items are reordered)
    # Hits of the next event on the list shown (live) and on the list a shadow encoder would have shown
    live_judged: int = 0
    live_hits: int = 0
    shadow_judged: int = 0
    shadow_hits: int = 0


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
            learners = None
            if stored is not None:
                try:
                    learners = Persistent.loads(stored.decode())
                except Exception as exc:  # forged or from an incompatible release: learn afresh, go on
                    log.error("partition %d: the learners' state cannot be read (%r); they start afresh",
                              partition, exc)
            if learners is None:
                learners = core.new_partition_learners(self.settings)
            self.live[partition] = learners
        return learners

    def forget(self) -> None:
        """After a rebalance: the table holds the truth (recovered from the changelog)."""
        self.live.clear()


RETRYABLE = (KafkaError, RedisError, OSError, asyncio.TimeoutError)
# Refusals no retry can change: the record is too large, or the client may not write there.
PERMANENT = (MessageSizeTooLargeError, RecordTooLargeError, TopicAuthorizationFailedError,
             ClusterAuthorizationFailedError, InvalidTopicError, redis_errors.AuthenticationError,
             redis_errors.AuthorizationError, redis_errors.NoPermissionError)
#: The worker's exit status when the output refuses a batch for good (the orchestrator sees it).
EXIT_OUTPUT_REFUSED = 70


def stop_worker(status: int) -> None:
    """Exit now, without acknowledging: the batch's input is read again by the next worker."""
    logging.shutdown()
    os._exit(status)


async def until_done(what: str, action: Callable[..., Awaitable[Any]], *args: Any,
                     max_backoff_s: float = 10.0) -> Any:
    """Retry an output step until it succeeds. The batch's events stay unacknowledged meanwhile, so
    an outage of Redis or the broker stalls the worker (backpressure) instead of losing effects.
    A retried Kafka delivery may repeat records: recommendation ids and profile versions make
    repeats harmless downstream. A permanent refusal stops the worker with a reason instead of
    retrying for ever (nothing acknowledged, nothing lost)."""
    backoff = 0.1
    while True:
        try:
            return await action(*args)
        except PERMANENT as exc:
            log.critical("cannot %s: %r will not change by retrying (check the topic's max.message.bytes, "
                         "the ACLs or the credentials); stopping without acknowledging the batch", what, exc)
            stop_worker(EXIT_OUTPUT_REFUSED)
        except RETRYABLE as exc:
            log.error("cannot %s (%r); retrying in %.1fs", what, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)


class BatchHandler:
    """One output batch of the worker's own events: `process_round` runs the core over a round of one
    item epoch (ordered_input) and collects the effects (outbox, changed profiles and learners);
    `snapshots` writes the tables and returns Redis's share; the app delivers both at once."""

    def __init__(self, settings: Settings, profiles: Any, learners: PartitionState, index: InMemoryItemIndex,
                 counters: Counters, now: int):
        self.settings = settings
        self.profiles = profiles  # the profile table's data: user_id bytes -> snapshot bytes
        self.learners = learners
        self.index = index
        self.counters = counters
        self.now = now
        self.outbox = Outbox()
        self.loaded: dict[str, Profile] = {}
        self.changed: dict[str, tuple[Profile, int]] = {}
        self.mirror: set[str] = set()  # unchanged profiles to write to Redis again
        self.used_learners: set[int] = set()
        self.events: list[Any] = []  # Faust events to acknowledge after the flush

    def dead_letter(self, rejection: Rejection) -> None:
        self.counters.rejected += 1
        log.warning("rejected %s: %s (%s)", rejection.source, rejection.reason, rejection.detail[:200])
        self.outbox.add(self.settings.topics.dlq, rejection.message_key(),
                        orjson.dumps(rejection.to_record(self.now)))

    def profile(self, user_id: str) -> Profile:
        found = self.loaded.get(user_id)
        if found is None:
            stored = self.profiles.get(user_id.encode())
            found = self.loaded[user_id] = (Profile.from_json(stored) if stored is not None
                                            else core.new_profile(user_id, self.settings))
        return found

    def encode(self, encoder: Encoder | None, valid: list[tuple[Ready, Event]]) -> list[UserEncoding | None]:
        if encoder is None or not valid:
            return [None] * len(valid)
        return encode_batch(encoder, [event for _, event in valid], lambda user_id: self.profile(user_id).recent,
                            self.settings.encoder_candidates)

    def process_round(self, ready: list[Ready], live: Encoder | None, shadow: Encoder | None,
                      content: ContentIndex | None = None) -> None:
        counters = self.counters
        valid: list[tuple[Ready, Event]] = []
        for item in ready:
            counters.events += 1
            self.events.append(item.event)
            if isinstance(item.checked, Rejection):
                self.dead_letter(item.checked)
            else:
                valid.append((item, item.checked))
        encodings = self.encode(live, valid)
        shadow_encodings = self.encode(shadow, valid)
        for position, (item, event) in enumerate(valid):
            msg = item.event.message
            profile = self.profile(event.user_id)
            late = profile.last_seen is not None and event.ts < profile.last_seen
            learners = self.learners.get(msg.partition)
            # All or nothing: a failure part-way through must not leave the event half-applied (its
            # digest kept, its feedback learned), or a re-drive from the dead-letter topic would be
            # dropped as a duplicate. Exceptions are rare, so the undo copy is plain serialisation.
            profile_before = profile.to_json()
            learners_before = learners.dumps() if learners is not None else None
            try:
                live_hit, shadow_hit = core.shown_hits(profile, event, self.settings.top_k)
                outcome = core.process(profile, event, self.index, self.settings, self.now, learners,
                                       encodings[position], content)
                if outcome.applied and shadow_encodings[position] is not None:
                    core.shadow_recommendation(profile, event, self.index, self.settings, learners,
                                               shadow_encodings[position], content)
            except Exception as exc:  # a bug must not stop the partition: undo, then park the event
                self.restore(event.user_id, profile_before, msg.partition, learners_before)
                self.dead_letter(Rejection("processing_error", f"{exc!r}\n{traceback.format_exc(limit=3)}",
                                           Source(msg.topic, msg.partition, msg.offset), msg.key, msg.value))
                continue
            if not outcome.applied:
                counters.duplicates += 1
                # A redelivery follows a crash, which may have come between the Kafka delivery and the
                # Redis write of the event's batch: write the profile to Redis again (the version
                # guard drops it if Redis already has it), or Redis would lag until the user's next event.
                self.mirror.add(event.user_id)
                continue
            counters.applied += 1
            counters.late += late
            self.count_hits(live_hit, shadow_hit)
            self.changed[event.user_id] = (profile, msg.partition)
            if learners is not None:
                self.used_learners.add(msg.partition)
            if outcome.recommendation is not None:
                counters.recommendations += 1
                self.outbox.add(self.settings.topics.recommendations, msg.key, orjson.dumps(outcome.recommendation))

    def restore(self, user_id: str, profile_json: bytes, partition: int, learners_dump: str | None) -> None:
        """Put the user's profile and the partition's learners back as they were before an event."""
        profile = Profile.from_json(profile_json)
        self.loaded[user_id] = profile
        if user_id in self.changed:
            self.changed[user_id] = (profile, self.changed[user_id][1])
        if learners_dump is not None:
            self.learners.live[partition] = Persistent.loads(learners_dump)

    def count_hits(self, live_hit: bool | None, shadow_hit: bool | None) -> None:
        counters = self.counters
        if live_hit is not None:
            counters.live_judged += 1
            counters.live_hits += live_hit
        if shadow_hit is not None:
            counters.shadow_judged += 1
            counters.shadow_hits += shadow_hit

    def snapshots(self, profile_changelog: str, learner_table: Any, learner_changelog: str
                  ) -> list[tuple[Profile, bytes]]:
        """Write changed profiles and learners to their tables and the outbox; return Redis's share."""
        to_redis: list[tuple[Profile, bytes]] = []
        for user_id, (profile, partition) in self.changed.items():
            key = user_id.encode()
            snapshot, public = profile.snapshots()
            to_redis.append((profile, public))
            # The table's changelog record, written with the batch: same partition as the user's input.
            self.profiles[key] = snapshot
            self.outbox.add(profile_changelog, key, snapshot, partition)
            self.outbox.add(self.settings.topics.profiles, key, public)
        for user_id in self.mirror - self.changed.keys():
            profile = self.loaded[user_id]
            to_redis.append((profile, profile.to_json(internal=False)))
        for partition in self.used_learners:
            state = self.learners.live[partition].dumps().encode()
            learner_table[str(partition).encode()] = state
            self.outbox.add(learner_changelog, str(partition).encode(), state, partition)
        return to_redis


def build_app(settings: Settings, partitions: int, web_port: int = 6066) -> faust.App:
    """The Faust app: the consumer group over the input topics, the ordered input path and the
    output. `partitions` is the input topics' partition count."""
    scheme = transport.configure(settings.fetch_max_wait_ms)
    brokers = [f"{scheme}://{host}" for host in settings.require_kafka().split(",")]
    # Faust's folder: tables live in memory and their changelogs, so a temporary one (not the current folder)
    datadir = tempfile.mkdtemp(prefix=f"faust-{settings.group_id}-")
    app = faust.App(
        settings.group_id,
        broker=brokers,
        store="memory://",
        datadir=datadir,
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
    profile_table = app.Table(PROFILE_TABLE, partitions=partitions, key_type=bytes, value_type=bytes)
    store = ProfileStore(RedisStoreConfig(settings.require_redis(), settings.namespace))
    watcher = ModelWatcher(settings)
    models_ready = asyncio.Event()
    catalogue = CatalogueFeed(settings)
    catalogue_ready = asyncio.Event()
    output = BatchProducer(settings.require_kafka())
    # The learners of each input partition (ranker, bandit), in a table of the same partitioning.
    learner_table = app.Table(LEARNER_TABLE, partitions=partitions, key_type=bytes, value_type=bytes)
    partition_state = PartitionState(learner_table.data, settings)
    index = InMemoryItemIndex(settings)
    ordered = OrderedInput(settings, partitions, index)
    counters = Counters()
    lock = asyncio.Lock()  # a batch and a rebalance never interleave
    agent_stream: dict[str, Any] = {}

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

    @app.task
    async def follow_catalogue() -> None:
        try:  # the content model first: the catalogue is embedded once, by it
            await asyncio.wait_for(models_ready.wait(), timeout=30)
        except asyncio.TimeoutError:
            pass
        while True:
            try:
                await catalogue.run(lambda: watcher.content, catalogue_ready)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("cannot follow the item catalogue (%r); retrying in 2s", exc)
                await asyncio.sleep(2)

    @app.task
    async def read_all_inputs() -> None:
        while True:
            try:
                await ordered.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("cannot read the input topics (%r); retrying in 2s", exc)
                await asyncio.sleep(2)

    @app.agent(inputs, name=f"{settings.app_id}.profiles")
    async def take_inputs(stream: faust.StreamT) -> None:
        agent_stream["stream"] = stream
        async for events in stream.noack_take(settings.batch_max, within=settings.batch_within_s):
            for event in events:
                ordered.deliver(event)
            ordered.changed.set()

    @app.task
    async def process_inputs() -> None:
        try:  # serve the announced model from the first event on
            await asyncio.wait_for(models_ready.wait(), timeout=30)
        except asyncio.TimeoutError:
            log.error("the model control topic was not read within 30s; starting without an encoder")
        try:  # and the catalogue as it stands, embedded (a worker's lists do not depend on when it started)
            await asyncio.wait_for(catalogue_ready.wait(), timeout=CATALOGUE_WAIT_S)
        except asyncio.TimeoutError:
            log.error("the item catalogue was not indexed within %ds; starting with what is indexed", CATALOGUE_WAIT_S)
            catalogue_ready.set()
        await publish_status()
        while True:
            await ordered.changed.wait()
            ordered.changed.clear()
            while await handle_batch():
                pass

    async def handle_batch() -> bool:
        """Process and flush one output batch; False when nothing was ready."""
        async with lock:
            handler = BatchHandler(settings, profile_table.data, partition_state, index, counters, now_ms())
            live, shadow = watcher.live, watcher.shadow  # one model per role for the whole batch
            content = catalogue.index
            while len(handler.events) < settings.batch_max:
                epoch, ready = ordered.next_round(settings.batch_max - len(handler.events))
                if not ready:
                    break
                handler.process_round(ready, live, shadow, content)
            for topic, partition, offset in ordered.take_refetches():
                log.warning("Faust's consumer skipped %s[%d] at offset %d (unapplied): fetching it again",
                            topic, partition, offset)
                await app.consumer.seek(TP(topic, partition), offset)
            if not handler.events:
                return False
            to_redis = handler.snapshots(profile_table.changelog_topic_name, learner_table.data,
                                         learner_table.changelog_topic_name)
            await asyncio.gather(until_done("deliver to Kafka", output.deliver, handler.outbox),
                                 until_done("write to Redis", store.write_profiles, to_redis, handler.now))
            stream = agent_stream["stream"]
            for event in handler.events:
                await stream.ack(event)
            return True

    worker_id = f"{settings.app_id}:{socket.gethostname()}:{os.getpid()}"
    readiness = {"ready": False}

    def assigned_inputs() -> set[int]:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic in topics.inputs}

    async def publish_status() -> None:
        try:
            await store.publish_worker_status(worker_id, {
                "worker_id": worker_id, "app_id": settings.app_id, "pid": os.getpid(),
                # ready: partitions assigned, tables recovered, and the catalogue as it stood at start embedded
                "ready": readiness["ready"] and catalogue_ready.is_set(), "input_partitions": sorted(assigned_inputs()),
                "counters": asdict(counters), "ordering": ordered.status(),
                "models": watcher.status(), "catalogue": catalogue.status(),
                "updated_at": now_ms()}, ttl_s=STATUS_TTL_S)
        except RETRYABLE as exc:
            log.warning("cannot publish the worker status to Redis: %r", exc)

    # Before Faust waits for delivered messages at a rebalance: nothing held is processed any more.
    transport.Consumer.release_held = ordered.revoke
    # Copies and re-fetched messages are never acknowledged: Faust must not wait for them.
    ordered.forget = lambda message: app.consumer.forget(message)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        readiness["ready"] = False
        async with lock:
            ordered.revoke()

    @app.on_rebalance_complete.connect
    async def on_ready(sender: Any, *args: Any, **kwargs: Any) -> None:
        async with lock:
            partition_state.forget()
            ordered.assign(assigned_inputs(), transport.START_OFFSETS)
        readiness["ready"] = True
        ordered.changed.set()
        await publish_status()

    @app.on_before_shutdown.connect
    async def close_clients(sender: Any, *args: Any, **kwargs: Any) -> None:
        await output.stop()
        await store.close()
        shutil.rmtree(datadir, ignore_errors=True)

    @app.timer(interval=STATUS_TTL_S / 3)
    async def heartbeat() -> None:
        await publish_status()
        log.info("worker counters: %s; ordering: %s", counters, ordered.status())

    return app


def run_worker(settings: Settings, partitions: int, web_port: int, loglevel: str = "warn") -> None:
    """Run one worker in the foreground until SIGTERM/SIGINT."""
    app = build_app(settings, partitions, web_port)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    # A batch sends more than Faust's 100-message producer buffer; the throttle is intended,
    # its per-batch warning is noise.
    logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)
    worker.execute_from_commandline()
