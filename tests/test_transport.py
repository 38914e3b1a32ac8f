import asyncio
import os
import time
import uuid
from types import SimpleNamespace

import faust
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic

from stream_app.stream.transport import CONTROL_FETCH_WAIT_MS, true_end_offsets


def test_true_end_offsets_read_past_a_short_reported_end(services):
    """Tables recover up to the end offset; Tansu reports the last batch's base offset + 1."""
    bootstrap = services["KAFKA_BOOTSTRAP_SERVERS"]
    topic = f"transport-end-offsets-{uuid.uuid4().hex[:12]}"  # unique: a second run on the same broker
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 3, 1)])
    admin.close()

    async def produce():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for partition, size in [(0, 5), (0, 7), (1, 1)]:
                batch = producer.create_batch()
                for _ in range(size):
                    batch.append(key=None, value=b"x", timestamp=None)
                await (await producer.send_batch(batch, topic, partition=partition))
        finally:
            await producer.stop()

    asyncio.run(produce())
    tps = [TopicPartition(topic, p) for p in range(3)]
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    reported = consumer.end_offsets(tps)
    consumer.close()
    true = asyncio.run(true_end_offsets([bootstrap], reported))
    assert [true[tp] for tp in tps] == [12, 1, 0]
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):  # the embedded Tansu: the short answer corrected
        assert [reported[tp] for tp in tps] == [6, 1, 0]  # partition 0: the last batch's base offset + 1


def test_a_partition_retention_emptied_or_ending_in_a_marker_has_its_reported_end_not_a_wait_without_end(monkeypatch):
    """Apache Kafka deletes an idle partition's last segment at retention.ms (start == end), and a transactional
    producer's partition ends in a marker: no record at end - 1. The probe waited 10 s and raised, for ever (an
    erasure's dead-letter listing retried it without end; `stream-app dead-letters` failed)."""
    from types import SimpleNamespace

    import stream_app.stream.transport as transport

    emptied, marker, normal = (TopicPartition("dlq", p) for p in range(3))

    class Probe:  # the broker's answers for the three partitions
        def __init__(self, **_):
            self.positions = {}

        async def start(self):
            pass

        async def stop(self):
            pass

        def assign(self, tps):
            self.assigned = tps

        async def beginning_offsets(self, tps):
            return {emptied: 40, marker: 0, normal: 0}

        def seek(self, tp, offset):
            self.positions[tp] = offset

        async def getmany(self, timeout_ms):
            self.positions[marker] = 9  # the marker at 8 read: no record returned, the position past it
            return {normal: [SimpleNamespace(offset=4)]} if self.positions.get(normal) == 4 else {}

        async def position(self, tp):
            return self.positions[tp]

    monkeypatch.setattr(transport, "AIOKafkaConsumer", Probe)
    reported = {emptied: 40, marker: 9, normal: 5}
    assert asyncio.run(true_end_offsets(["b:1"], reported, timeout_s=2)) == reported


def test_the_workers_consumer_fetches_with_the_configured_wait_not_faust_s_fixed_one():
    """Correction 1: Faust builds its consumer with fetch_max_wait_ms=1500; on Tansu every event it delivered then
    waited up to 1.5 s. The worker's consumer carries its own wait into the fetcher aiokafka starts."""
    import inspect

    from aiokafka import AIOKafkaConsumer

    from stream_app.config import Settings
    from stream_app.stream.worker import build_app

    async def consumer_wait(settings: Settings) -> int:
        app = build_app(settings, 4)
        consumer = app.consumer._new_consumer_thread()._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    def settings(wait_ms: int) -> Settings:
        return Settings(kafka_bootstrap_servers="127.0.0.1:1", redis_url="redis://127.0.0.1:1/0",
                        fetch_max_wait_ms=wait_ms, namespace=f"t{uuid.uuid4().hex[:8]}.")

    # off the event path (the reader's copies are applied), it waits as long as the control topics' readers: on Tansu,
    # which answers an empty fetch only when its wait is over, 25 ms fetches cost an idle worker 6% of a core
    assert asyncio.run(consumer_wait(settings(37))) == CONTROL_FETCH_WAIT_MS == 500
    # while it delivers events (lanes the reader has no copy of: steer_faust) it waits as the setting says
    thread = build_app(settings(37), 4).consumer._new_consumer_thread()
    thread._consumer = SimpleNamespace(_fetcher=SimpleNamespace(_fetch_max_wait_ms=500))  # as started
    thread.on_event_path(True)
    assert thread._consumer._fetcher._fetch_max_wait_ms == 37
    thread.on_event_path(False)
    assert thread._consumer._fetcher._fetch_max_wait_ms == 500
    assert asyncio.run(consumer_wait(settings(1700))) == 1700
    # the private attribute is what aiokafka's start() hands its fetcher (pinned versions: checked here)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)


def test_fausts_stall_check_is_off_for_the_lanes_its_consumer_is_paused_on(caplog):
    """Correction 6: a healthy worker logged "Stream has not started processing" for every partition every
    few seconds from its fifth minute on (Faust's consumer is paused where the worker's reader serves)."""
    import time

    from faust.types import TP

    from stream_app.config import Settings
    from stream_app.stream.worker import build_app

    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", redis_url="redis://127.0.0.1:1/0",
                        namespace=f"t{uuid.uuid4().hex[:8]}.")
    thread = build_app(settings, 4).consumer._new_consumer_thread()
    thread.time_started = time.time() - 3600  # an hour in: Faust's 5-minute timeout long past
    assert thread.verify_event_path(time.time(), TP(settings.topics.inputs[0], 0)) is None
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_fausts_own_commits_never_move_the_groups_offset_past_what_the_worker_applied():
    """Faust would commit acknowledged offsets together with the gaps its consumer skipped (offsets 3 and 4
    here, never applied) as one run; the worker's consumer leaves commits to `AppliedOffsets`."""
    from faust.types import TP

    from stream_app.config import KafkaSecurity
    from stream_app.stream.transport import configure

    scheme = configure(25, KafkaSecurity())
    app = faust.App(f"commit-test-{uuid.uuid4().hex[:8]}", broker=f"{scheme}://localhost:1")
    consumer, tp = app.consumer, TP("events.click", 5)

    def skipped_then_acknowledged():
        consumer._committed_offset[tp] = None  # a partition just taken up
        consumer._acked[tp] = [5, 6, 7]
        consumer._acked_index[tp] = {5, 6, 7}
        consumer._gap[tp].addi(3, 5)

    before = type(consumer).faust_commits  # build_app (another test) sets it for the worker's process
    try:
        type(consumer).faust_commits = True  # as the plain bench app keeps them
        skipped_then_acknowledged()
        assert consumer._new_offset(tp) == 8  # Faust's commits: past 3 and 4
        type(consumer).faust_commits = False  # as build_app sets it for the worker
        skipped_then_acknowledged()
        assert consumer._new_offset(tp) is None
        assert not consumer._acked.get(tp) and not consumer._gap.get(tp)  # nothing kept to grow
    finally:
        type(consumer).faust_commits = before


@pytest.mark.integration  # its own embedded broker and Redis, to stop the broker under a worker
def test_a_worker_stops_promptly_on_sigterm_when_its_broker_is_gone(tmp_path):
    """aiokafka's fetcher re-raised the cancel of a fetch sleeping between retries: Faust's consumer thread ended
    without saying so, the app waited for it, and the stop watchdog ended the worker after 25 s (exit status 75)."""
    from stream_app.config import Settings
    from stream_app.stream.topics import ensure_topics
    from stream_app.tools.embedded import Embedded
    from stream_app.tools.processes import WorkerProcess, wait_ready_workers

    services = Embedded.start(tmp_path / "services")
    try:
        settings = Settings(kafka_bootstrap_servers=services.kafka_bootstrap_servers, redis_url=services.redis_url,
                            namespace="gone.", app_id="app-gone", partitions=2)
        ensure_topics(settings)
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        try:
            wait_ready_workers(settings, [worker], 60)
            broker = services.processes[0]
            broker.kill()
            broker.wait()
            time.sleep(3)  # its consumers retrying
            started = time.monotonic()
            status = worker.stop(timeout=40)
            took = time.monotonic() - started
        finally:
            worker.stop()
        assert status == 0 and took < 15, (status, took, worker.log_tail())
    finally:
        services.stop()


def _seek_test_consumer(monkeypatch, fetches: list, gate: asyncio.Event | None = None):
    """The worker's consumer with Faust's fetch replaced: each getmany call yields the next list of (tp, offset),
    after `gate` opens if given (a batch on its way from the consumer's thread)."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    from stream_app.config import KafkaSecurity
    from stream_app.stream.transport import configure

    async def fetched(self, timeout):
        if gate is not None:
            await gate.wait()
        for tp_, offset in fetches.pop(0):
            yield tp_, SimpleNamespace(offset=offset)

    async def seek_in_the_thread(partition, offset):
        return None

    scheme = configure(25, KafkaSecurity())
    app = faust.App(f"seek-test-{uuid.uuid4().hex[:8]}", broker=f"{scheme}://localhost:1")
    monkeypatch.setattr(faust_aiokafka.Consumer, "getmany", fetched)
    monkeypatch.setattr(app.consumer, "_seek", seek_in_the_thread)
    monkeypatch.setattr(app.consumer, "assignment", lambda: {tp_ for batch in fetches for tp_, _ in batch})
    return app.consumer


async def _faust_drain(consumer, calls: int, on_record) -> list[tuple[str, int]]:
    """Faust's drain loop (faust/transport/consumer.py `_drain_messages`) as far as its read mark goes: a record below
    the mark is dropped; one handed over goes to the agent (`on_record`, where other tasks run), then sets the mark."""
    handed = []
    for _ in range(calls):
        async for tp_, message in consumer.getmany(timeout=1.0):
            mark = consumer._read_offset[tp_]
            if mark is None or message.offset >= mark:
                handed.append((tp_.topic, message.offset))
                await on_record(tp_, message)
                consumer._read_offset[tp_] = message.offset
    return handed


def test_a_seek_back_is_not_undone_by_the_rest_of_the_fetch_faust_is_handing_over(monkeypatch):
    """The worker seeks back to 2 while Faust hands over 5 of a fetch that had jumped past 2..4: neither 5's mark,
    set after the agent took it, nor 6 and 7 of the same fetch may move the mark past 2, else Faust drops 2..4 when
    the seek brings them (without the correction: [5, 6, 7, 7, 8])."""
    from faust.types import TP

    tp, other = TP("events.click", 0), TP("events.browse", 0)
    asked = []

    async def run():
        consumer = _seek_test_consumer(monkeypatch, [[(tp, 5), (other, 1), (tp, 6), (tp, 7), (other, 2)],
                                                     [(tp, offset) for offset in range(2, 9)]])

        async def agent(tp_, message):
            await asyncio.sleep(0)
            if (tp_, message.offset) == (tp, 5) and not asked:
                asked.append(2)
                await consumer.seek(tp, 2)  # the worker's batch loop, while the agent holds 5

        return consumer, await _faust_drain(consumer, 2, agent)

    consumer, handed = asyncio.run(run())
    assert [offset for topic, offset in handed if topic == tp.topic] == [5, 2, 3, 4, 5, 6, 7, 8]
    assert [offset for topic, offset in handed if topic == other.topic] == [1, 2]  # other partitions untouched
    assert consumer._sought_during == {} and consumer._handing_over is False


def test_a_seek_asked_while_a_fetch_is_on_its_way_waits_for_it_and_drops_its_records_of_the_partition(monkeypatch):
    """A fetch made before the seek, still on its way from the consumer's thread when the worker seeks back: its
    records would move the mark past the sought offset (without the correction: [5, 6, 7, 7, 8])."""
    from faust.types import TP

    tp = TP("events.click", 0)

    async def run():
        gate = asyncio.Event()
        consumer = _seek_test_consumer(monkeypatch, [[(tp, 5), (tp, 6), (tp, 7)],
                                                     [(tp, offset) for offset in range(2, 9)]], gate)
        drain = asyncio.ensure_future(_faust_drain(consumer, 2, _take))
        await asyncio.sleep(0)  # the drain loop waits for the fetch
        await consumer.seek(tp, 2)
        gate.set()
        return consumer, await drain

    consumer, handed = asyncio.run(run())
    assert [offset for _, offset in handed] == [2, 3, 4, 5, 6, 7, 8]
    assert consumer._deferred == {} and consumer._sought_during == {}


def test_a_seek_still_waiting_at_a_revoke_is_dropped_and_one_of_a_partition_no_longer_assigned_is_never_made(monkeypatch):
    """A seek deferred behind a fetch that a rebalance holds up: applied after the seek to the group's commit it would
    undo it, and on a partition gone to another worker aiokafka raises in Faust's drain loop (its fetcher stops)."""
    from faust.transport.drivers import aiokafka as faust_aiokafka
    from faust.types import TP

    tp, gone = TP("events.click", 0), TP("events.click", 1)
    sought = []

    async def seek_in_the_thread(partition, offset):
        sought.append((partition, offset))

    async def revoked_in_faust(self, revoked):
        return None

    async def run():
        gate = asyncio.Event()
        consumer = _seek_test_consumer(monkeypatch, [[(tp, 5), (tp, 6)], [(tp, 7)]], gate)
        monkeypatch.setattr(consumer, "_seek", seek_in_the_thread)
        monkeypatch.setattr(consumer, "assignment", lambda: {tp})
        monkeypatch.setattr(faust_aiokafka.Consumer, "on_partitions_revoked", revoked_in_faust)
        drain = asyncio.ensure_future(_faust_drain(consumer, 2, _take))
        await asyncio.sleep(0)
        await consumer.seek(tp, 2)
        await consumer.on_partitions_revoked({tp})  # the rebalance: the seek asked before it is moot
        await consumer.seek(gone, 3)  # asked, then the partition left before the fetch came
        gate.set()
        return consumer, await drain

    consumer, handed = asyncio.run(run())
    assert sought == [] and handed == [("events.click", 5), ("events.click", 6), ("events.click", 7)]
    assert consumer._deferred == {}


def test_a_seek_asked_while_the_seek_to_the_groups_commit_runs_is_dropped(monkeypatch):
    """A re-fetch the worker asks while the seek to the group's commit runs (behind a fetch that waits): the commit's
    position decides, and the seek, applied after it, would move the partition back off it."""
    from faust.transport.drivers import aiokafka as faust_aiokafka
    from faust.types import TP

    tp = TP("events.click", 0)
    sought = []

    async def seek_in_the_thread(partition, offset):
        sought.append((partition, offset))

    async def run():
        gate = asyncio.Event()
        consumer = _seek_test_consumer(monkeypatch, [[(tp, 10), (tp, 11)]], gate)
        monkeypatch.setattr(consumer, "_seek", seek_in_the_thread)
        monkeypatch.setattr(consumer, "assignment", lambda: {tp})

        async def committed_in_faust(self):
            await consumer.seek(tp, 2)  # the worker's ordered input asks for a record it thinks it skipped
            return {tp: 10}

        monkeypatch.setattr(faust_aiokafka.Consumer, "seek_to_committed", committed_in_faust)
        drain = asyncio.ensure_future(_faust_drain(consumer, 1, _take))
        await asyncio.sleep(0)  # the fetch waits
        assert await consumer.seek_to_committed() == {tp: 10}
        gate.set()
        return consumer, await drain

    consumer, handed = asyncio.run(run())
    assert sought == [] and handed == [("events.click", 10), ("events.click", 11)]
    assert consumer._deferred == {}


async def _take(tp_, message):
    """A callback that takes each record and does nothing with it: the tests look at what the consumer hands."""
    return None
