"""The stream worker: a thin Faust shell around the pure core.

Input is processed in event time (ordered_input.py): every worker reads the whole input for the item
state and processes its own partitions in rounds of one item epoch. Per output batch (up to
`batch_max` events, one or more rounds) it runs the core's `process` per event, then does the I/O once:
profile changelog records, profile snapshots, recommendations and dead letters go out as one record
batch per partition (output.py) while the Redis mirror is one pipelined round trip, and both are
awaited before the batch's offsets count as applied. The worker commits what it applied (commits.py),
so a crash replays at most the uncommitted tail, which the profile's event_id digests make harmless
(at-least-once delivery, idempotent effects). Faust owns the consumer group, the tables (local state
and recovery from their changelogs) and timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import time
from functools import partial
from typing import Any, Callable

import faust
import orjson
from faust.types import TP

from ..config import Settings
from ..core.item_feed import EvictionClock
from ..core.items import InMemoryItemIndex
from ..store.redis_store import ProfileStore, RedisStoreConfig
from ..store.text_vectors import TextVectorStore
from . import health, retries, transport, worker_status
from .batch import BatchHandler, Counters, PartitionState, ProfileCache, ProfileSizes, Redeliverable
from .catalogue_feed import CatalogueFeed
from .commits import AppliedOffsets, InputEnds
from .datadir import faust_datadir
from .erasures import ErasedUsers, ErasureFeed
from .gc_pauses import freeze_long_lived
from .idle_users import IdleUsers
from .items_check import ItemsCheck
from .metrics import Snapshot, WorkerMetrics
from .model_control import ModelWatcher
from .ordered_input import OrderedInput
from .output import BatchProducer, Outbox
from .ready import ReadRecord
from .redis_refill import MirrorKeeper
from .retries import EXIT_BATCH_FAILED, batch_finished_or_late, exit_if_stop_hangs, stop_worker, until_done
from .table_stores import LearnersTable, ProfileTable, add_table
from .worker_status import STATUS_REFRESH_S, partitions_wait, publish_status, redis_wait, status_until_processing

log = logging.getLogger("stream_app.worker")

PROFILE_TABLE = "profiles"
LEARNER_TABLE = "partition-learners"
#: A reader that has not gone round its loop (a poll of at most 50 ms) for this long is not reading: not ready.
READER_STALL_S = 60.0
#: How long a starting worker waits for the item catalogue to be embedded before it takes events.
CATALOGUE_WAIT_S = 600
#: An output failing this long makes /readyz answer 503, naming it (shorter blips only count retries).
OUTAGE_NOT_READY_S = 5.0


def now_ms() -> int:
    return int(time.time() * 1000)


class StreamWorker:
    """One worker's state (tables, clients, ordered input, counters, the models and catalogue it follows) and what
    it does; `build_app` hands these methods to Faust: tasks, the input agent, a timer, rebalance and stop handlers."""

    def __init__(self, app: faust.App, settings: Settings, partitions: int, datadir: str, web_port: int = 0):
        self.app = app
        self.settings = settings
        self.datadir = datadir  # Faust's folder, removed at shutdown
        # Newest-wins on restore: a late changelog record of an earlier owner does not roll a profile back
        self.profile_table = add_table(app, ProfileTable, PROFILE_TABLE, partitions)
        self.store = ProfileStore(RedisStoreConfig(settings.require_redis(), settings.namespace))
        self.catalogue = CatalogueFeed(settings, TextVectorStore(lambda: self.store.client, settings.namespace))
        self.models_ready, self.catalogue_ready = asyncio.Event(), asyncio.Event()
        self.output = BatchProducer(settings.require_kafka(), settings.kafka_security)
        # The learners of each input partition (ranker, bandit), in a table of the same partitioning.
        self.learner_table = add_table(app, LearnersTable, LEARNER_TABLE, partitions)
        learner_changelog, marks = self.learner_table.changelog_topic_name, self.profile_table.data.highest_mark
        self.partition_state = PartitionState(self.learner_table.data, settings, learner_changelog, marks)
        self.partitions, self.index = partitions, InMemoryItemIndex(settings)
        # Idle profiles leave at fixed event times (STREAM_APP_USER_IDLE_MS), as in `evaluate`.
        self.idle_users = IdleUsers(self.profile_table.data) if settings.user_idle_ms else None
        self.user_eviction = EvictionClock()
        self.ordered = OrderedInput(settings, partitions, self.index)
        # Erasures (erasures.py): the record of erased users, in a table partitioned like the profiles
        self.erased = ErasedUsers.table(app, settings, partitions, self.profile_table.changelog_topic_name)
        self.counters, self.profile_sizes = Counters(), ProfileSizes()
        self.profile_cache = ProfileCache(settings.profile_cache_users)  # the profiles it last wrote, as objects
        self.redeliverable = Redeliverable()  # lists kept in changelog records it took up (batch_recommendations.py)
        self.items_check = ItemsCheck(settings, self.output, self.counters)
        self.lock = asyncio.Lock()  # a batch and a rebalance never interleave
        # Redis losing the profile mirror is noticed at the heartbeat, and the owned profiles written back
        self.mirror = MirrorKeeper(self.store, self.profile_table.data, partitions, settings.namespace, self.mirrored,
                                   self.lock, self.counters, now_ms)
        self.outages: dict[str, float] = {}  # an output whose writes fail -> since when (monotonic)
        self.redis_refusal: str | None = None  # Redis refused the last status write for good (worker_status)
        self.status_failing_since: float | None = None  # when status writes to Redis began to fail (worker_status)
        self.offsets, self.input_ends = AppliedOffsets(settings.commit_interval_s), InputEnds()
        self.stream: faust.StreamT | None = None  # the input agent's stream, which acknowledges events
        self.worker_id = f"{settings.app_id}:{socket.gethostname()}:{os.getpid()}"
        self.peers = worker_status.PeerSettings(worker_status.group_settings(settings))
        self.watcher = ModelWatcher(settings, self.report_model_status, self.worker_id)
        self.erasures = ErasureFeed(settings, partitions, self.ordered.changed.set, self.worker_id, until_done)
        self.partitions_ready = False  # partitions assigned and tables recovered
        self.unassigned_since = time.monotonic()  # since when not ready for partitions (a wedged group shows here)
        self.restored_unchecked = False  # tables restored since the last look for erased users' profiles
        self.faust_paused: set[TP] = set()  # own input lanes Faust's consumer does not fetch (steer_faust)
        self.processing = False  # past the start-up waits for the models and the catalogue
        self.metrics = WorkerMetrics(self.snapshot)
        self.ordered.stages = self.metrics.stages
        self.web_port, self.http = web_port, None  # the HTTP port and its runner (stream/health.py), from start_http
        self.early_status: asyncio.Future | None = None  # the status published before Faust's heartbeat runs

    async def report_model_status(self, record: dict[str, Any]) -> None:
        outbox = Outbox()
        outbox.add(self.settings.topics.model_status, f"{self.worker_id}/{record['role']}".encode(), orjson.dumps(record))
        await self.output.deliver(outbox)

    async def start_http(self) -> None:
        try:
            self.http = await health.serve(health.health_app(self.metrics.exposition, self.missing), self.web_port,
                                           self.settings.web_host)
        except OSError as exc:
            log.critical("cannot listen on port %d of %s (%s): pick a free one with --web-port, or leave the option "
                         "out for any free port (STREAM_APP_WEB_HOST: an address of this machine)", self.web_port,
                         self.settings.web_host, exc)
            stop_worker(retries.EXIT_PORT_TAKEN)
        health.announce(self.web_port, self.settings.log_format, self.settings.web_host)
        self.early_status = asyncio.ensure_future(status_until_processing(self))

    def missing(self) -> dict[str, str]:
        """What the worker waits for before it takes events, or to store them (an output failing for OUTAGE_NOT_READY_S);
        empty: ready. For /readyz and the status."""
        waiting = {}
        if not self.partitions_ready:
            waiting["partitions"] = partitions_wait(time.monotonic() - self.unassigned_since)
        if not self.processing:
            if not self.models_ready.is_set():
                waiting["models"] = "the model control topic not read yet"
            if not self.catalogue_ready.is_set():
                waiting["catalogue"] = "the items topic not read to its end (and embedded, with a content model) yet"
            waiting.setdefault("processing", "the input loop has not started")
        stalled_s = time.monotonic() - (self.ordered.reading_at or time.monotonic()) if self.processing else 0.0
        if stalled_s >= READER_STALL_S:
            waiting["input"] = (f"the input reader has not gone round its loop for {stalled_s:.0f}s (it is started "
                                "again after a failure: see the log)")
        waiting.update(self.input_ends.missing() if self.processing else {})
        waiting.update(redis_wait(self, OUTAGE_NOT_READY_S))
        waiting.update(worker_status.output_waits(self.outages, OUTAGE_NOT_READY_S))
        return waiting

    def snapshot(self) -> Snapshot:
        owned = self.assigned_inputs()
        self.counters.redis_writes_refused = self.store.refused  # the store counts them; the metrics read counters
        return Snapshot(self.counters, self.ordered.status(), self.watcher.status(), self.catalogue.status(),
                        self.missing(), lag=self.input_ends.lag(self.app, self.settings.topics.inputs,
                                                                self.ordered.read_to()),
                        users=len(self.profile_table.data), items=self.index.item_count(),
                        ranker_labels=self.partition_state.ranker_labels(owned))

    async def follow_models(self) -> None:
        # the control topic is how models change: keep following it through broker hiccups
        await retries.keep_running("follow the model control topic", lambda: self.watcher.run(self.models_ready))

    async def follow_catalogue(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):  # the content model first: it embeds the catalogue, once
            await asyncio.wait_for(self.models_ready.wait(), timeout=30)
        await retries.keep_running("follow the item catalogue",
                                   lambda: self.catalogue.run(lambda: self.watcher.content, self.catalogue_ready))

    async def check_items(self) -> None:
        await retries.keep_running("dead-letter bad records of the items topic", self.items_check.run)

    async def read_all_inputs(self) -> None:
        await asyncio.gather(retries.keep_running("read the input topics", self.ordered.run),
                             retries.keep_running("follow the erasures topic", self.erasures.run))

    async def take_inputs(self, stream: faust.StreamT) -> None:
        self.stream = stream
        async for events in stream.noack_take(self.settings.batch_max, within=self.settings.batch_within_s):
            if any([self.ordered.deliver(event) for event in events]):  # a list: every event is delivered
                self.steer_faust()  # a lane's buffer is full, and no batch may come to steer Faust for minutes
            self.metrics.stages.observe("delivered", time.time(), (event.message.timestamp for event in events))
            self.ordered.changed.set()

    async def process_inputs(self) -> None:
        try:  # serve the announced model from the first event on
            await asyncio.wait_for(self.models_ready.wait(), timeout=30)
        except asyncio.TimeoutError:
            log.error("the model control topic was not read within 30s; starting without an encoder")
        try:  # and the catalogue as it stands, embedded (a worker's lists do not depend on when it started)
            await asyncio.wait_for(self.catalogue_ready.wait(), timeout=CATALOGUE_WAIT_S)
        except asyncio.TimeoutError:
            log.error("the item catalogue was not indexed within %ds; starting with what is indexed", CATALOGUE_WAIT_S)
            self.catalogue_ready.set()
        freeze_long_lived()  # the libraries, the app, its models and catalogue: out of every later collection
        self.processing = True
        await self.publish_status()
        while True:
            await self.ordered.changed.wait()
            self.ordered.changed.clear()
            try:
                while await self.handle_batch():
                    pass
            except Exception:  # outside any one event (those are dead-lettered): never acknowledge it
                log.critical("a batch failed outside its events; stopping without acknowledging it, so its "
                             "events are read again by the next worker", exc_info=True)
                stop_worker(EXIT_BATCH_FAILED)

    async def handle_batch(self) -> bool:
        """Process and flush one output batch; False when nothing was ready."""
        settings, ordered = self.settings, self.ordered
        async with self.lock:
            if not self.processing:  # stopping (close)
                return False
            # if a revoke outruns the batch, its commit counts for nothing and it writes no state of partitions that left
            started, generation = time.perf_counter(), self.offsets.generation
            self.steer_faust()
            handler = BatchHandler(settings, self.profile_table.data, self.partition_state, self.index, self.counters,
                                   now_ms(), self.idle_users, self.profile_table.changelog_topic_name, self.erased,
                                   self.profile_sizes, self.profile_cache, self.redeliverable)
            handler.outbox.fence = partial(self.offsets.held_for, generation)
            erased_again: dict[str, int] = {}
            if self.partitions_ready:  # its tables recovered: what was erased and applied is known
                if self.restored_unchecked:
                    erased_again = handler.erase_restored(self.assigned_inputs(), self.partitions)
                    self.restored_unchecked = False
                await self.erasures.apply(handler, self.assigned_inputs())
            live, shadow = self.watcher.live, self.watcher.shadow  # one model per role for the whole batch
            self.counters.serving(getattr(live, "version", None), getattr(shadow, "version", None))
            content = self.catalogue.index
            self.index.withdrawn = frozenset(self.catalogue.withdrawn)  # the catalogue as it stands, per batch
            # no rounds after a rebalance during that await: a new partition's state would be fenced, its marks kept
            while self.offsets.generation == generation and (room := handler.round_room(settings.batch_max)) > 0:
                epoch, ready = ordered.next_round(room)
                if not ready:
                    break
                boundary = self.user_eviction.due(epoch * settings.item_epoch_ms) if settings.user_idle_ms else None
                if boundary is not None:
                    handler.evict_idle(boundary, self.assigned_inputs(), self.partitions)
                self.metrics.stages.observe("taken", time.time(), (r.event.message.timestamp for r in ready))
                ordered.count_applied(epoch, handler.process_round(ready, live, shadow, content))
                if time.perf_counter() - started >= settings.batch_work_s:
                    break  # the loop waits behind the batch: the rest in the next one
            # taken now: a revoke may clear the lanes from here on
            applied, settled = ordered.applied_marks(), ordered.settled_marks()
            for topic, partition, offset in ordered.take_refetches():
                log.info("Faust's consumer skipped %s[%d] at %d (unapplied): fetching it again", topic, partition, offset)
                await self.app.consumer.seek(TP(topic, partition), offset)
            if not handler.events and not handler.outbox.records and not handler.removed:
                return False
            to_redis = handler.snapshots(self.profile_table.changelog_topic_name, self.learner_table.data,
                                         self.learner_table.changelog_topic_name, settled)
            redis_existed: dict[str, bool] = {}
            if handler.removed:  # Redis first: a crash before the tombstones are stored removes them again on the re-run
                # an erased user's key keeps a marker refusing late writes of the erased profile
                redis_existed = await until_done("delete profiles from Redis", self.store.delete_profiles,
                                                 [user_id for user_id, _ in handler.removed],
                                                 handler.redis_erasures(erased_again),
                                                 handler.evicted, handler.now,
                                                 on_retry=self.retrying("redis_retries", "Redis"))
            # every erasure's receipt, also of one that removed nothing (a profile kept as begun after it)
            handler.send_receipts(redis_existed)
            await asyncio.gather(until_done("deliver to Kafka", self.output.deliver, handler.outbox,
                                            on_retry=self.retrying("kafka_retries", "Kafka")),
                                 until_done("write to Redis", self.store.write_profiles, to_redis, handler.now,
                                            on_retry=self.retrying("redis_retries", "Redis")))
            self.outages.clear()  # both outputs took this batch
            for event in handler.events:
                if not isinstance(event, ReadRecord):  # the reader's copy: nothing of Faust's to acknowledge
                    await self.stream.ack(event)
            self.offsets.flushed(applied, generation)
            await self.offsets.commit_due(self.app.consumer)
            self.metrics.observe_batch(len(handler.events), time.perf_counter() - started, handler.recommended,
                                       time.time())
            for user_id, (profile, partition) in handler.changed.items():
                self.metrics.freshness.applied(user_id, partition, profile.last_seen)
            for user_id, partition in handler.removed:
                self.metrics.freshness.forget(user_id, partition)
            return True

    def retrying(self, counter: str, output: str | None = None) -> Callable[[], None]:
        """A retry's callback: counted, and for a batch's output (cleared when a batch gets through) an outage."""
        def retry() -> None:
            setattr(self.counters, counter, getattr(self.counters, counter) + 1)
            if output is not None:
                self.outages.setdefault(output, time.monotonic())
        return retry

    def steer_faust(self) -> None:
        """Faust fetches only the own input lanes the reader has no copy of, or whose commit is before records the
        schedule passed (ordered_input.faust_lanes), with a short wait only then. Faust resumes every lane at each
        rebalance, so this runs before each batch; it resumes only lanes it paused (Faust pauses full ones too)."""
        if not self.partitions_ready:
            return
        wanted = self.ordered.faust_lanes()
        lanes = {TP(topic, partition) for topic in self.settings.topics.inputs for partition in self.assigned_inputs()}
        self.app.consumer.resume_partitions({tp for tp in self.faust_paused & lanes if (tp.topic, tp.partition) in wanted})
        self.faust_paused = {tp for tp in lanes if (tp.topic, tp.partition) not in wanted}
        self.app.consumer.pause_partitions(self.faust_paused)
        self.app.consumer._thread.on_event_path(bool(lanes - self.faust_paused))

    def mirrored(self) -> set[int] | None:
        """The partitions whose profiles Redis mirrors: once restored and looked through for erased users."""
        return self.assigned_inputs() if self.partitions_ready and not self.restored_unchecked else None

    def assigned_inputs(self) -> set[int]:
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic in self.settings.topics.inputs}

    async def publish_status(self) -> None:
        await publish_status(self)

    async def partitions_revoked(self) -> None:
        self.partitions_ready, self.unassigned_since = False, time.monotonic()
        self.offsets.revoking()
        async with batch_finished_or_late(self.lock, "revoking partitions") as batch_done:
            if batch_done:  # else an outage holds the batch: no time left to commit in the rebalance
                await self.offsets.commit_now(self.app.consumer, "at the rebalance")
            self.ordered.revoke()
            self.offsets.revoked()

    async def rebalance_complete(self) -> None:
        if not self.offsets.taken_up(self.assigned_inputs()):  # first: a late batch waits for it to fence its output
            return  # an earlier rebalance's, heard after the next revoke began
        async with batch_finished_or_late(self.lock, "taking up partitions"):
            if self.offsets.assignment_due:  # a revoke began while this waited for the batch: it is past
                return
            self.partition_state.forget()
            self.profile_cache.keep_only(self.assigned_inputs(), self.partitions)
            self.redeliverable.keep_only(self.assigned_inputs(), self.partitions)
            if self.idle_users is not None:
                self.idle_users.forget()
            self.user_eviction = EvictionClock()  # the new partitions' first round runs its own pass
            self.ordered.assign(self.assigned_inputs())  # where each lane starts comes with Faust's seek, next
            self.restored_unchecked = True  # for profiles of erased users (BatchHandler.erase_restored)
            self.erased.check_key()  # restored: erasures recorded with another key would go unseen
        self.partitions_ready = True
        self.metrics.freshness.keep(self.assigned_inputs())
        self.ordered.changed.set()
        await self.publish_status()

    async def close(self) -> None:
        async with batch_finished_or_late(self.lock, "stopping") as batch_done:
            self.processing = False  # no batch after this commit: its effects would come after it, on closed clients
            if batch_done:  # Faust's consumer has stopped fetching, and not yet left the group
                await self.offsets.commit_now(self.app.consumer, "on the way out")
        if self.http is not None:
            await self.http.cleanup()
        if self.early_status is not None:
            self.early_status.cancel()
        await self.mirror.stop()
        await self.output.stop()
        await self.store.close()
        shutil.rmtree(self.datadir, ignore_errors=True)

    async def heartbeat(self) -> None:
        if not self.lock.locked():  # a batch in progress commits after its flush
            await self.offsets.commit_due(self.app.consumer)  # the last batch before a pause
        await self.input_ends.refresh(self.app, self.ordered.consumer, self.settings.topics.inputs)
        await self.publish_status()
        await self.mirror.check()


def build_app(settings: Settings, partitions: int, web_port: int = 6066) -> faust.App:
    """The Faust app: the consumer group over the input topics (`partitions` each), the ordered input path and the
    output. The agent, tasks, timer and signal handlers are thin adapters over a `StreamWorker`'s methods."""
    scheme = transport.configure(max(settings.fetch_max_wait_ms, transport.CONTROL_FETCH_WAIT_MS), settings.kafka_security,
                                 settings.fetch_max_wait_ms)  # the latter while it delivers events (steer_faust)
    datadir = faust_datadir(settings.group_id)  # a temporary one: the tables live in memory and their changelogs
    app = faust.App(
        settings.group_id,
        broker=[f"{scheme}://{host}" for host in settings.require_kafka().split(",")],
        broker_credentials=transport.faust_credentials(settings.kafka_security),  # None (Faust's default) for PLAINTEXT
        store="memory://",
        datadir=datadir,
        topic_partitions=partitions,
        topic_replication_factor=settings.replication_factor,  # the changelogs
        processing_guarantee="at_least_once",  # exactly_once needs transactions Tansu lacks
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=6,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_commit_interval=settings.commit_interval_s,
        table_standby_replicas=0,
        web_enabled=False,
        web_port=web_port,
        env={},  # else Faust's unprefixed variables (WEB_PORT, BROKER_URL, ...: Kubernetes sets some) override these
    )
    inputs = app.topic(*settings.topics.inputs, key_serializer="raw", value_serializer="raw")
    worker = StreamWorker(app, settings, partitions, datadir, web_port)
    app.stream_worker = worker  # for run_worker: the HTTP port and the worker's name in log lines
    # Before Faust waits for delivered messages at a rebalance: nothing held is processed any more.
    transport.Consumer.release_held = worker.ordered.revoke
    # Faust seeks to the group's commit after on_rebalance_complete: the own lanes start there.
    transport.Consumer.resumed_at = worker.ordered.resume_at
    transport.Consumer.faust_commits = False  # the worker commits what it applied (commits.AppliedOffsets)
    worker.offsets.follow_assignments(app, settings.topics.inputs)  # which partitions a late batch still holds
    # Copies and re-fetched messages are never acknowledged: Faust must not wait for them.
    worker.ordered.forget = lambda message: app.consumer.forget(message)

    @app.task
    async def follow_models() -> None:
        await worker.follow_models()

    @app.task
    async def follow_catalogue() -> None:
        await worker.follow_catalogue()

    @app.task
    async def check_items() -> None:
        await worker.check_items()

    @app.task
    async def read_all_inputs() -> None:
        await worker.read_all_inputs()

    @app.agent(inputs, name=f"{settings.app_id}.profiles")
    async def take_inputs(stream: faust.StreamT) -> None:
        await worker.take_inputs(stream)

    @app.task
    async def process_inputs() -> None:
        await worker.process_inputs()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        await worker.partitions_revoked()

    @app.on_rebalance_complete.connect
    async def on_ready(sender: Any, *args: Any, **kwargs: Any) -> None:
        await worker.rebalance_complete()

    @app.on_before_shutdown.connect
    async def close_clients(sender: Any, *args: Any, **kwargs: Any) -> None:
        exit_if_stop_hangs()  # a stop that began without a signal (a crash); with one, armed there already
        await worker.close()

    @app.timer(interval=STATUS_REFRESH_S)
    async def heartbeat() -> None:
        await worker.heartbeat()

    return app
