"""The input reader through a broker outage: it must keep reading, or be started again where it had read, and a
rebalance must not wait for a batch that retries its output for as long as the outage lasts."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Awaitable, Callable
from weakref import WeakSet

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

import stream_app.stream.lane_ends as lane_ends
import stream_app.stream.ordered_input as ordered_input
import stream_app.stream.transport as transport
from stream_app.config import Settings
from stream_app.core.items import InMemoryItemIndex
from stream_app.partitioning import partition_of
from stream_app.stream import retries
from stream_app.stream.ordered_input import OrderedInput

START = 1_700_000_000_000
SETTINGS = Settings(partitions=2, kafka_bootstrap_servers="127.0.0.1:1")
USER = next(f"u{i}" for i in range(100) if partition_of(f"u{i}", 2) == 0)


def purchase(n: int) -> SimpleNamespace:
    event = {"event_id": f"e{n}", "user_id": USER, "item_id": f"i{n % 7}", "type": "purchase", "ts": START + 1000 * n,
             "schema_version": 1}
    return SimpleNamespace(offset=n, key=USER.encode(), value=orjson.dumps(event), timestamp=START + 1000 * n,
                           headers=())


def test_a_cancelled_error_that_is_not_the_tasks_own_cancellation_restarts_the_follower(monkeypatch):
    """aiokafka's stop() with a fetch in flight raises CancelledError, which replaced a broker timeout: the
    reader task ended for good and the worker read nothing more, still ready."""
    real_sleep = asyncio.sleep
    monkeypatch.setattr(retries.asyncio, "sleep", lambda s: real_sleep(0.01 if s == 2 else s))
    runs: list[int] = []

    async def follower() -> None:
        runs.append(1)
        if len(runs) == 1:
            try:
                raise KafkaTimeoutError("Failed to get offsets by times in 40000 ms")
            finally:
                raise asyncio.CancelledError  # what consumer.stop() raised in the finally
        await real_sleep(3600)

    async def main() -> tuple[int, bool]:
        task = asyncio.ensure_future(retries.keep_running("read the input topics", follower))
        await real_sleep(0.2)
        started = len(runs)
        task.cancel()  # the task's own cancellation still ends it
        try:
            await task
        except asyncio.CancelledError:
            pass
        return started, task.cancelled()

    assert asyncio.run(main()) == (2, True)


class FakeConsumer:
    """The reader's consumer: the log at first, nothing after a restart; where each lane was sought."""

    made: list["FakeConsumer"] = []

    def __init__(self, **_: object):
        self.calls, self.sought, self.from_start, self.paused = 0, {}, [], []
        self._fetcher = SimpleNamespace(_fetch_max_wait_ms=None)  # the wait of its fetch requests (aiokafka's)
        self.waits: list[int | None] = []  # that wait at each poll
        FakeConsumer.made.append(self)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def assign(self, tps: list) -> None: ...

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.from_start.extend(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought[tp] = offset

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.extend(tps)

    def resume(self, *tps: TopicPartition) -> None: ...

    async def position(self, tp: TopicPartition) -> int:
        return 0  # no transaction markers here: never past the last record read

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        self.calls += 1
        await asyncio.sleep(0.005)
        if len(FakeConsumer.made) == 1 and self.calls == 1:
            return {TopicPartition(SETTINGS.topics.purchase, 0): [purchase(n) for n in range(40)]}
        if len(FakeConsumer.made) == 1:
            raise KafkaTimeoutError("the broker went away")  # the first reader fails once it has read
        return {}


class FakeProbe:
    def __init__(self, **_: object): ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def end_offsets(self, tps: list) -> dict:
        await asyncio.sleep(3600)  # a broker away: aiokafka answers after its 40 s request timeout


async def run_until(run: Callable[[], Awaitable[None]], done: Callable[[], bool]) -> None:
    """Run a reader task until `done()`, then cancel it."""
    task = asyncio.ensure_future(run())
    while not done():
        await asyncio.sleep(0.01)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def test_a_restarted_reader_reads_on_from_where_it_was_and_an_unanswered_end_does_not_stop_it(monkeypatch):
    """Started again from the beginning, the reader pushed the whole input a second time into the same item
    state (its counts doubled); and an end the broker did not answer for 40 s ended the reader."""
    FakeConsumer.made.clear()
    monkeypatch.setattr(transport, "AIOKafkaConsumer", FakeConsumer)
    monkeypatch.setattr(lane_ends, "AIOKafkaConsumer", FakeProbe)
    monkeypatch.setattr(lane_ends, "ASK_TIMEOUT_S", 0.05)
    real_sleep = asyncio.sleep
    monkeypatch.setattr(retries.asyncio, "sleep", lambda s: real_sleep(0.01 if s == 2 else s))
    ordered = OrderedInput(SETTINGS, 2, InMemoryItemIndex(SETTINGS))

    def restarted_and_read() -> bool:
        return len(FakeConsumer.made) >= 2 and FakeConsumer.made[1].calls >= 20

    asyncio.run(asyncio.wait_for(run_until(lambda: retries.keep_running("read the input topics", ordered.run),
                                           restarted_and_read), 10))
    first, second = FakeConsumer.made
    purchases = TopicPartition(SETTINGS.topics.purchase, 0)
    assert len(first.from_start) == 2 * len(SETTINGS.topics.inputs)  # a first start reads every lane from its start
    assert second.sought == {purchases: 40} and purchases not in second.from_start
    assert ordered.read == 40  # not 80: nothing pushed twice
    assert ordered.reading_at is not None and time.monotonic() - ordered.reading_at < 1


def test_a_rebalance_does_not_wait_for_a_batch_retrying_its_output_through_an_outage(monkeypatch):
    """Faust's wait_empty runs before the worker's revoke handler: it waited for the batch's messages for as long
    as the outage lasted, past the group's rebalance timeout."""
    monkeypatch.setattr(transport, "WAIT_EMPTY_S", 0.3)

    class Message:
        acked = False

    held_by_batch = Message()

    async def nothing(*_: object, **__: object) -> bool:
        return True

    async def wait_for_ack(timeout: float) -> None:
        await asyncio.sleep(0.05)

    stub = SimpleNamespace(should_stop=False, _unacked_messages=WeakSet([held_by_batch]), release_held=list,
                           commit=nothing, _wait_for_ack=wait_for_ack, commit_and_end_transactions=nothing)
    stub._clean_unacked_messages = lambda: None
    started = time.monotonic()
    asyncio.run(asyncio.wait_for(transport.Consumer.wait_empty(stub), 5))
    assert time.monotonic() - started < 1 and not stub._unacked_messages


def test_a_lane_ending_in_a_transaction_marker_is_read_to_its_end_at_the_readers_position():
    """A transactional producer's commit marker takes the offset after its last record: the lane's end is one past
    what the last record says, and its group waited 30 s (UNKNOWN_END_WAIT_S) instead of max_idle_ms each time."""
    from stream_app.core.ordering import GroupMerge

    ends = lane_ends.LaneEnds(SETTINGS.topics.inputs)
    group = GroupMerge(0, SETTINGS.item_epoch_ms)
    ends.ends[(0, 0)], ends.asked[(0, 0)] = 11, time.monotonic()  # records 0..9, the marker at 10
    next_offset = {(0, 0): 10, (1, 0): 4}

    class Reader:
        async def position(self, tp: TopicPartition) -> int:
            return {SETTINGS.topics.inputs[0]: 11, SETTINGS.topics.inputs[1]: 4}[tp.topic]

    assert not ends.reached(0, group, next_offset[(0, 0)])
    group.waited_for[0] = group.waited_for[1] = True  # events wait for both lanes
    asyncio.run(ends.read_past_markers(Reader(), [group], next_offset))
    assert next_offset == {(0, 0): 11, (1, 0): 4} and ends.reached(0, group, next_offset[(0, 0)])


class QuietConsumer(FakeConsumer):
    """Nothing to read, or (`first`) one poll's records and nothing after."""

    first: dict = {}

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        self.calls += 1
        self.waits.append(self._fetcher._fetch_max_wait_ms)
        await asyncio.sleep(0.005)
        return QuietConsumer.first if self.calls == 1 else {}


class QuietThenNot(QuietConsumer):
    """Its 30th poll brings records again."""

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        records = await super().getmany(timeout_ms, max_records)
        return QuietConsumer.first if self.calls == 30 else records


class CountedEvent(asyncio.Event):
    def __init__(self) -> None:
        super().__init__()
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        super().set()


def reader_wakes(monkeypatch, first: dict, idle_after_s: float = 3600.0,
                 consumer: type = QuietConsumer) -> tuple[int, int]:
    """(polls, times the reader woke the batch loop) over about 40 polls."""
    FakeConsumer.made.clear()
    QuietConsumer.first = first
    monkeypatch.setattr(transport, "AIOKafkaConsumer", consumer)
    monkeypatch.setattr(lane_ends, "AIOKafkaConsumer", FakeProbe)
    monkeypatch.setattr(lane_ends, "ASK_TIMEOUT_S", 0.001)
    monkeypatch.setattr(ordered_input, "IDLE_WAKE_S", 3600.0)
    monkeypatch.setattr(ordered_input, "IDLE_FETCH_AFTER_S", idle_after_s)
    ordered = OrderedInput(SETTINGS, 2, InMemoryItemIndex(SETTINGS))
    ordered.assign({0})

    async def main() -> None:
        ordered.changed = CountedEvent()
        await run_until(ordered.run, lambda: bool(FakeConsumer.made) and FakeConsumer.made[0].calls >= 40)

    asyncio.run(asyncio.wait_for(main(), 20))
    return FakeConsumer.made[0].calls, ordered.changed.sets


def test_an_idle_reader_does_not_wake_the_batch_loop_at_every_poll(monkeypatch):
    """The reader woke the batch loop at every poll (40 a second), each wake a batch's set-up for nothing: an idle
    worker took a few percent of a core for it. With nothing read, released or waiting it wakes it once."""
    polls, wakes = reader_wakes(monkeypatch, {})
    assert polls >= 40 and wakes == 1


def test_an_idle_reader_fetches_with_a_longer_wait(monkeypatch):
    """Tansu answers an empty fetch only when its wait is over: the reader's 25 ms fetches of every input partition
    cost an idle worker about 6% of a core, and the broker as much. Once nothing came for a while they wait longer."""
    reader_wakes(monkeypatch, {TopicPartition(SETTINGS.topics.purchase, 0): [purchase(0)]}, idle_after_s=0.1,
                 consumer=QuietThenNot)  # records at its first and 30th poll (30 polls take over 0.1 s)
    waits = FakeConsumer.made[0].waits
    busy, idle = SETTINGS.fetch_max_wait_ms, ordered_input.IDLE_FETCH_WAIT_MS
    assert busy < idle and waits[1] == busy and waits[29] == idle and waits[30] == busy, waits
    assert set(waits[1:30]) == {busy, idle} and waits[1:30] == sorted(waits[1:30])  # busy until idle, not back


def test_a_reader_with_events_waiting_for_the_idle_rule_wakes_the_batch_loop_at_every_poll(monkeypatch):
    """Events that wait for an empty lane (the idle rule is a clock) are released only by a later poll: each one
    wakes the batch loop, or they would wait for the next record to come."""
    purchases = {TopicPartition(SETTINGS.topics.purchase, 0): [purchase(n) for n in range(5)]}
    polls, wakes = reader_wakes(monkeypatch, purchases)
    assert polls >= 40 and wakes >= polls - 1
