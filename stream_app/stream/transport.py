"""Faust's aiokafka transport with the corrections the worker needs.

1. A configurable fetch wait. Faust fixes the consumer's fetch_max_wait_ms at 1500. Apache Kafka
   answers a waiting fetch as soon as data arrives, so there the wait only bounds idle polling;
   Tansu answers when the wait is over, so every event waited up to 1.5 s (measured: p50
   event->recommendation 450 ms at 300 ev/s).
2. Exact end offsets. Tansu's ListOffsets(latest) answers the base offset of the partition's last
   record batch + 1, short of the true end by the rest of that batch. Faust recovers a table from
   its changelog up to that "highwater", so a worker taking over a partition lost the last batch of
   profile updates (seen as missing events after a rebalance). `_highwaters` reads the last batch
   to find the true end; on Apache Kafka that read confirms the answer.
3. A seek for partitions with no committed offset. aiokafka's seek_to_committed leaves them where
   they are, and records fetched for them during table recovery were consumed and dropped, so a
   worker restarted before its group's first commit (a SIGKILL in the first second) resumed past
   them and lost them. They are now sent back to their beginning (the app reads from earliest).
   Each seek reports the offsets it resumes at (`Consumer.resumed_at`): Faust seeks only after
   `on_rebalance_complete`, so the worker cannot know them when it takes up its partitions.
4. A rebalance that does not wait for held messages. The worker holds delivered events until their
   turn in event time; Faust's revocation waits for every delivered message to be acknowledged,
   which would wait forever for events whose turn needs data that the paused consumer no longer
   fetches. `wait_empty` lets them go unacknowledged (they are read again from the commit).
5. Messages the worker drops (`forget`): a copy of one it already has, or one it lets go to read
   its lane again from an earlier record Faust skipped (see ordered_input); never acknowledged.
6. A seek back that Faust's read mark does not undo (`Consumer.seek`): records fetched before the seek moved the
   mark past the sought offset again, and Faust dropped what the seek brought.
7. No "Stream has not started processing" errors. Faust's consumer is paused on the lanes the worker's
   own reader serves, so Faust's check of its event path (position behind the high watermark and no
   event through its stream for `stream_processing_timeout`, 5 minutes) logged a 15-line error per
   partition every few seconds from a healthy worker's fifth minute on. The worker watches its path
   itself: consumer lag, input-stage latency and readiness (metrics.py, ready.py).

The worker uses this transport (URL scheme below). Every consumer built here connects with the Kafka
security settings (kafka_security.py), as Faust's own clients do through `broker_credentials`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, ClassVar, Iterable, Mapping

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

from ..config import Settings
from ..kafka_security import CONSUMER_RETRY_BACKOFF_MS, PLAINTEXT, KafkaSecurity, aiokafka_kwargs, consumer_kwargs
from . import record_headers

log = logging.getLogger("stream_app.transport")

SCHEME = "stream-app-kafka"
#: The fetch wait of the consumers of topics whose records may wait half a second (model control, the catalogue,
#: erasure requests): each fetch costs the broker CPU even when it finds nothing (Tansu: an idle worker's 25 ms
#: fetches took 58% of a core).
CONTROL_FETCH_WAIT_MS = 500
#: How long a rebalance waits for the acknowledgement of delivered messages (Faust's wait_empty).
WAIT_EMPTY_S = 1.0


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    #: Set by `configure` before the app starts (one app per worker process).
    fetch_max_wait_ms: ClassVar[int] = 1500
    security: ClassVar[KafkaSecurity] = PLAINTEXT
    #: The worker's: the wait of its fetches while it delivers events (`on_event_path`); None: always the one above.
    event_fetch_wait_ms: ClassVar[int | None] = None

    def on_event_path(self, delivering: bool) -> None:
        """Whether the consumer delivers events (lanes the worker's reader holds no copy of) or only changelogs and
        lanes it lets go: the wait of its fetches (aiokafka reads it at each request; an int, set from the app's
        thread). Tansu answers an empty fetch only when its wait is over: the short wait only where events wait."""
        fetcher = getattr(self._consumer, "_fetcher", None)
        if fetcher is not None and self.event_fetch_wait_ms is not None:
            fetcher._fetch_max_wait_ms = self.event_fetch_wait_ms if delivering else self.fetch_max_wait_ms

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms  # read when the consumer starts its fetcher
        consumer._retry_backoff_ms = CONSUMER_RETRY_BACKOFF_MS  # Faust passes none (read there too, and by its coordinator)
        consumer._client._retry_backoff = CONSUMER_RETRY_BACKOFF_MS / 1000
        return consumer

    async def on_thread_stop(self) -> None:
        """aiokafka's Fetcher.close re-raises the cancel of a fetch sleeping its retry backoff (so only with the broker
        gone): the thread then ended without reporting its shutdown, and the app's stop waited for it (Faust's 60 s
        shutdown timeout; the worker's 25 s watchdog ended it). The consumer's connections are closed all the same."""
        try:
            await super().on_thread_stop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.warning("Faust's consumer stopped with a fetch retrying (the broker gone?)")
            if self._consumer is not None:  # the fetcher's other tasks (its close stopped at the first), connections
                pending = list(self._consumer._fetcher._pending_tasks)
                for fetch in pending:
                    fetch.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                await self._consumer._client.close()

    def verify_event_path(self, now: float, tp: Any) -> None:
        """Faust's stall check does not apply to lanes its consumer is paused on (6. above)."""
        return None

    async def seek_to_committed(self) -> Mapping[Any, int]:
        return await self.call_thread(self._seek_to_committed_or_beginning)

    async def _seek_to_committed_or_beginning(self) -> Mapping[Any, int]:
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        never_committed = [tp for tp, offset in committed.items() if not offset]
        if never_committed:
            await consumer.seek_to_beginning(*never_committed)
        return committed

    async def _highwaters(self, partitions: Any) -> Mapping[Any, int]:
        reported = await super()._highwaters(partitions)
        transport = self.consumer.transport
        servers = faust_aiokafka.server_list(transport.url, transport.default_port)
        return await true_end_offsets(servers, reported, self.security)


async def true_end_offsets(servers: list[str], reported: Mapping[Any, int | None],
                           security: KafkaSecurity = PLAINTEXT, timeout_s: float = 10.0) -> dict[Any, int | None]:
    """End offsets confirmed by reading each non-empty partition's last record batch. A partition whose records
    retention deleted (Apache Kafka deletes an idle partition's last segment too: its start is then its end) or whose
    last offset holds no record (a transaction marker) has its reported end: there is nothing before it to read."""
    result = dict(reported)
    pending = {TopicPartition(tp.topic, tp.partition): tp for tp, end in reported.items() if end}
    if not pending:
        return result
    probe = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, group_id=None,
                             fetch_max_wait_ms=50, **aiokafka_kwargs(security))
    try:  # started inside: a cancel while it starts stops it too
        await probe.start()
        probe.assign(list(pending))
        for tp, start in (await probe.beginning_offsets(list(pending))).items():
            if start >= reported[pending[tp]]:
                del pending[tp]  # emptied by retention
        for tp in pending:
            probe.seek(tp, reported[pending[tp]] - 1)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for tp, records in (await probe.getmany(timeout_ms=200)).items():
                if records and tp in pending:
                    key = pending.pop(tp)
                    result[key] = max(result[key], records[-1].offset + 1)
            for tp in list(pending):  # read past the end without a record (a marker; deleted meanwhile: reset there)
                if await probe.position(tp) >= reported[pending[tp]]:
                    del pending[tp]
        if pending:
            raise TimeoutError(f"could not read the last batch of {sorted(pending)} in {timeout_s}s")
    finally:
        await probe.stop()
    return result


@asynccontextmanager
async def from_the_beginning(settings: Settings, topic: str
                             ) -> AsyncIterator[tuple[AIOKafkaConsumer, TopicPartition, int]]:
    """A consumer outside any group on a one-partition topic every worker reads whole (the control
    topic, the catalogue), at its beginning, and the end offset that existed at start (confirmed
    by reading its last batch)."""
    tp = TopicPartition(topic, 0)
    servers = settings.require_kafka().split(",")
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, group_id=None,
                                fetch_max_wait_ms=max(settings.fetch_max_wait_ms, CONTROL_FETCH_WAIT_MS),
                                **consumer_kwargs(settings.kafka_security))
    try:  # started inside: a cancel while it starts stops it too
        await consumer.start()
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await true_end_offsets(servers, await consumer.end_offsets([tp]), settings.kafka_security))[tp] or 0
        yield consumer, tp, end
    finally:
        await consumer.stop()


async def started_reader(settings: Settings, read_from: dict[TopicPartition, int | None]) -> AIOKafkaConsumer:
    """A started consumer outside any group, assigned `read_from`'s partitions, each at its offset (None: at its
    beginning): the ordered input's reader, and the same reader started again where it had read."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.require_kafka().split(","), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=settings.fetch_max_wait_ms, **consumer_kwargs(settings.kafka_security))
    try:  # started inside: a cancel while it starts stops it too
        await consumer.start()
        consumer.assign(list(read_from))
        unread = [tp for tp, offset in read_from.items() if offset is None]
        if unread:  # (with no argument it would seek every partition)
            await consumer.seek_to_beginning(*unread)
        for tp, offset in read_from.items():
            if offset is not None:
                consumer.seek(tp, offset)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


def faust_credentials(security: KafkaSecurity) -> Any:
    """The Faust app's `broker_credentials` (None for PLAINTEXT: Faust's default)."""
    if security.sasl:
        return faust.SASLCredentials(username=security.sasl_username, password=security.sasl_password,
                                     mechanism=security.sasl_mechanism, ssl_context=security.ssl_context())
    if security.tls:
        return faust.SSLCredentials(security.ssl_context())
    return None


class Consumer(faust_aiokafka.Consumer):
    #: Set by the worker: returns the messages it holds unprocessed (waiting for their turn in event
    #: time), which a rebalance must not wait for.
    release_held: ClassVar[Callable[[], Iterable[Any]] | None] = None
    #: Set by the worker: told (topic, partition) -> the offset the consumer resumes at (committed, or 0)
    #: after each seek to the group's commit, so its ordered input skips what an earlier owner applied.
    resumed_at: ClassVar[Callable[[dict[tuple[str, int], int]], None] | None] = None
    #: Set False by the worker, which commits what it applied itself (commits.AppliedOffsets); the plain
    #: bench app keeps Faust's commits.
    faust_commits: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fetching = False  # a getmany call waits for its batch
        self._handing_over = False  # a getmany call hands over its batch's records (calls come one after another)
        self._deferred: dict[Any, int] = {}  # seeks asked while a batch was on its way: partition -> offset
        self._sought_during: dict[Any, int] = {}  # partition -> offset, sought while this batch is handed over

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek(self, partition: Any, offset: int) -> None:
        """Faust's drain loop keeps a read mark per partition, drops a record below it and sets it to each record it
        hands over, after the agent took it; the seek sets it to `offset`. Records fetched before the seek would move
        it past `offset` again, and Faust would drop what the seek brings below it (the worker asked again 5 s later,
        and again while the partition kept streaming). So: a seek asked while a getmany call waits for its batch (the
        consumer thread's poll, up to a second, or the flow's pause through a rebalance; the batch may be fetched
        before or after the seek, nothing tells) is applied once the batch is in hand, or once the call ends without
        one (this returns at once); from then on, the rest of the batch's records of the partition are dropped (the
        seek brings them again), and the mark is set back to `offset` after the record in hand when the seek came. A
        seek still waiting at a revoke or at the seek to the group's commit is dropped (`_drop_seeks`)."""
        if self._fetching:
            self._deferred[partition] = offset
            return
        await self._seek_now(partition, offset)

    async def _seek_now(self, partition: Any, offset: int) -> None:
        await super().seek(partition, offset)
        if self._handing_over:
            self._sought_during[partition] = offset

    async def _seek_deferred(self) -> None:
        deferred, self._deferred = self._deferred, {}
        assigned = self.assignment() if deferred else set()
        for partition, offset in deferred.items():
            if partition not in assigned:  # left in a rebalance since (aiokafka would raise, in Faust's drain loop)
                continue
            try:
                await self._seek_now(partition, offset)
            except IllegalStateError as exc:  # the worker asks again if it still wants it
                log.warning("a deferred seek of %s to %d failed: %s", partition, offset, exc)

    def _drop_seeks(self) -> None:
        """At a revoke and at the seek to the group's commit: a seek asked before is moot (the worker's ordered input
        drops its re-fetches there too), and applied after the commit's it would undo it."""
        self._deferred.clear()
        self._sought_during.clear()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self._drop_seeks()
        await super().on_partitions_revoked(revoked)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        self._fetching = True
        try:
            async for tp, message in super().getmany(timeout):
                if self._fetching:  # the whole batch is in hand (Faust fetches it before its first record)
                    self._fetching, self._handing_over = False, True
                    await self._seek_deferred()
                sought = self._sought_during
                if sought and tp in sought:
                    continue
                yield tp, message
                for partition, offset in sought.items():  # Faust set the marks after the record just handed over:
                    self._read_offset[partition] = offset if offset else None  # those the seeks set are set back
        finally:
            self._fetching = self._handing_over = False
            self._sought_during.clear()
        await self._seek_deferred()  # a batch without records: the seeks asked meanwhile go now

    async def seek_to_committed(self) -> Mapping[Any, int]:
        self._drop_seeks()
        committed = await super().seek_to_committed()
        self._drop_seeks()  # and one asked while it ran (the worker's re-fetches before its resume_at are moot)
        if self.resumed_at is not None:  # back on the app's loop: the worker's state is safe to touch
            self.resumed_at({(tp.topic, tp.partition): offset or 0 for tp, offset in committed.items()})
        return committed

    def _new_offset(self, tp: Any) -> int | None:
        """Faust's own commit position for `tp`: for the worker (`faust_commits` False), none, ever.
        Faust would commit the run of offsets it saw acknowledged together with the gaps it saw in what it
        fetched, as if those were applied; such a gap is what its consumer skipped around a rebalance,
        which the worker fetches again and has not applied yet (the cause that fits a chaos run's 12 lost
        events of one partition). `AppliedOffsets` (commits.py) commits what the worker applied. The
        acknowledgements and gaps are dropped here, at each of Faust's commit ticks: nothing reads them."""
        if self.faust_commits:
            return super()._new_offset(tp)
        self._acked.pop(tp, None)
        self._acked_index.pop(tp, None)
        self._gap.pop(tp, None)
        return None

    def forget(self, message: Any) -> None:
        """A delivered message that will never be acknowledged (the worker got it twice, or lets it go to
        read it again): not waited for at a rebalance."""
        self._unacked_messages.discard(message)

    async def wait_empty(self) -> None:
        """At a rebalance Faust waits until every delivered message is acknowledged. Messages the
        worker holds for later are let go unacknowledged instead: the commit stays before them, and
        whoever owns their partition next reads them again from there. So are those of a batch still
        delivering after WAIT_EMPTY_S (an outage it retries for as long as it lasts: Faust waited that long,
        past the group's rebalance timeout); the revoke then waits for that batch a while longer itself
        (retries.batch_finished_or_late), and its commit counts for nothing once late (commits.py)."""
        deadline = time.monotonic() + WAIT_EMPTY_S
        while not self.should_stop and self._unacked_messages:
            if self.release_held is not None:  # again each round: the agent may deliver a few more
                for message in self.release_held():
                    self._unacked_messages.discard(message)
            if not self._unacked_messages:
                break
            if time.monotonic() >= deadline:
                log.warning("a rebalance: %d delivered messages not acknowledged after %.0fs (a batch still "
                            "delivering?); going on without them", len(self._unacked_messages), WAIT_EMPTY_S)
                self._unacked_messages.clear()
                break
            await self.commit()
            await self._wait_for_ack(timeout=1)
            self._clean_unacked_messages()
        await self.commit_and_end_transactions()


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def configure(fetch_max_wait_ms: int, security: KafkaSecurity, event_fetch_wait_ms: int | None = None) -> str:
    """Register the transport; return the URL scheme to use in the broker URLs. `event_fetch_wait_ms`: the consumer's
    wait while it delivers events (ConsumerThread.on_event_path)."""
    ConsumerThread.fetch_max_wait_ms, ConsumerThread.event_fetch_wait_ms = fetch_max_wait_ms, event_fetch_wait_ms
    ConsumerThread.security = security
    record_headers.install()  # a header key that is not UTF-8 fails no fetch of this process (its own readers' too)
    TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
    return SCHEME
