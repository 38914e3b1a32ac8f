"""Input offsets committed by the watermark of what the worker applied (stream/commits.py)."""

from __future__ import annotations

import asyncio

from faust.types import TP

from stream_app.stream.commits import AppliedOffsets


class FakeConsumer:
    def __init__(self, assigned):
        self.assigned = set(assigned)
        self.commits = []

    def assignment(self):
        return self.assigned

    async def _commit_offsets(self, offsets):
        self.commits.append(dict(offsets))
        return True


def test_applied_offsets_are_committed_for_assigned_partitions_never_backwards_and_again_each_interval():
    a = TP("events.click", 0)
    consumer = FakeConsumer([a])
    offsets = AppliedOffsets(interval_s=0.0)
    offsets.flushed({("events.click", 0): 10, ("events.click", 1): 7}, offsets.generation)
    asyncio.run(offsets.commit(consumer))
    assert consumer.commits == [{a: 10}]  # b is another worker's now
    offsets.flushed({("events.click", 0): 4}, offsets.generation)  # an older mark (a batch of a lane handed again) changes nothing
    asyncio.run(offsets.commit(consumer))
    # sent again unchanged: a group commit moved back by a late commit of an earlier owner is mended
    assert consumer.commits == [{a: 10}, {a: 10}]
    offsets.flushed({("events.click", 0): 12}, offsets.generation)
    asyncio.run(offsets.commit(consumer))
    assert consumer.commits[-1] == {a: 12}
    offsets.revoked()
    asyncio.run(offsets.commit(consumer))
    assert len(consumer.commits) == 3


def test_a_batch_that_outlived_a_revoke_does_not_count():
    # its partition may have moved and come back with a commit past the batch's marks: they would pull
    # the group's commit back at every interval
    a = TP("events.click", 0)
    consumer = FakeConsumer([a])
    offsets = AppliedOffsets(interval_s=0.0)
    taken = offsets.generation  # the batch's marks, taken before its I/O
    offsets.revoked()  # ... which outlived a revoke (an outage)
    offsets.flushed({("events.click", 0): 5}, taken)
    offsets.flushed({("events.click", 0): 9}, offsets.generation)  # the next assignment's own batch
    asyncio.run(offsets.commit(consumer))
    assert consumer.commits == [{a: 9}]
    offsets.flushed({("events.click", 0): 5}, taken)
    assert offsets.applied == {a: 9}


def test_commits_wait_for_the_interval():
    a = TP("events.click", 0)
    consumer = FakeConsumer([a])
    offsets = AppliedOffsets(interval_s=3600.0)
    offsets.flushed({("events.click", 0): 10}, offsets.generation)
    asyncio.run(offsets.commit(consumer))
    assert consumer.commits == []
    asyncio.run(offsets.commit(consumer, now=True))  # a rebalance or a graceful stop does not wait
    assert consumer.commits == [{a: 10}]


def test_the_periodic_commit_gives_up_in_bounded_time_when_the_broker_is_gone(monkeypatch, caplog):
    """A worker that had applied events and then lost its broker stayed ready (/readyz 200) for as long as the
    broker was gone: its heartbeat began with this commit, and aiokafka waits for a coordinator without end."""
    from stream_app.stream import commits

    class GoneBroker(FakeConsumer):
        async def _commit_offsets(self, offsets):
            await asyncio.Event().wait()  # never answers

    monkeypatch.setattr(commits, "COMMIT_WAIT_S", 0.2)
    a = TP("events.click", 0)
    offsets = AppliedOffsets(interval_s=0.0)
    offsets.flushed({("events.click", 0): 10}, offsets.generation)

    async def heartbeat():
        await asyncio.wait_for(offsets.commit_due(GoneBroker([a])), timeout=5)
        consumer = FakeConsumer([a])
        await offsets.commit_due(consumer)  # the broker back: the next commit sends the offsets again
        return consumer.commits

    assert asyncio.run(heartbeat()) == [{a: 10}]
    assert "could not commit the applied offsets within 0s (is the broker reachable?)" in caplog.text


def test_a_batch_that_outlived_a_revoke_may_write_the_state_only_of_partitions_held_since_without_a_break():
    offsets = AppliedOffsets(interval_s=0.0)
    offsets.taken_up({0, 1, 2})
    before = offsets.generation
    assert asyncio.run(offsets.held_for(before)) is None  # no revoke since: every partition's

    async def rebalance_while_a_late_batch_waits() -> tuple[bool, set[int] | None]:
        offsets.revoked()
        asking = asyncio.ensure_future(offsets.held_for(before))
        await asyncio.sleep(0.05)
        offsets.assigned({1, 2, 3})
        await asyncio.sleep(0.05)
        waited = not asking.done()  # which partitions stay is not known until the rebalance is complete
        offsets.taken_up({1, 2, 3})
        return waited, await asking

    assert asyncio.run(rebalance_while_a_late_batch_waits()) == (True, {1, 2})  # 0 left; 3 came, from its changelog
    between = offsets.generation
    offsets.revoked()
    offsets.assigned({1, 3, 0})
    offsets.taken_up({1, 3, 0})  # 2 left, 0 came back: its memory holds the restore, not the late batch's effects
    assert asyncio.run(offsets.held_for(before)) == {1}
    assert asyncio.run(offsets.held_for(between)) == {1, 3}
    assert asyncio.run(offsets.held_for(offsets.generation)) is None


def test_a_partition_that_left_in_a_rebalance_that_never_completed_is_not_held_when_it_comes_back():
    import faust

    offsets = AppliedOffsets(interval_s=0.0)
    app = faust.App("assignments-heard", broker="kafka://localhost:1")
    offsets.follow_assignments(app, ["events"])  # as the worker hears them
    offsets.taken_up({0, 1})
    before = offsets.generation
    offsets.revoked()
    # 0 left; another rebalance begins during the restore: this one never completes
    asyncio.run(app.on_partitions_assigned.send({TP("events", 1), TP("a-changelog", 0)}))
    offsets.revoked()
    asyncio.run(app.on_partitions_assigned.send({TP("events", 0), TP("events", 1)}))  # 0 is back, restored
    offsets.taken_up({0, 1})
    assert asyncio.run(offsets.held_for(before)) == {1}


def test_a_rebalance_completion_heard_after_the_next_revoke_settles_nothing():
    offsets = AppliedOffsets(interval_s=0.0)
    offsets.taken_up({0, 1})
    before = offsets.generation

    async def late_completion_then_the_real_one() -> tuple[bool, set[int] | None]:
        offsets.revoked()
        asking = asyncio.ensure_future(offsets.held_for(before))
        offsets.taken_up({0, 1})  # the previous rebalance's, late: 0 may be on its way to another worker
        await asyncio.sleep(0.05)
        waited = not asking.done()
        offsets.assigned({1})
        offsets.taken_up({1})
        return waited, await asking

    assert asyncio.run(late_completion_then_the_real_one()) == (True, {1})


def test_a_late_batch_delivers_every_record_but_the_state_and_lists_of_partitions_it_no_longer_holds(make_settings):
    """Through the broker: a compacted topic keeps each key's last record, so an earlier owner's late snapshot would
    be what a reader takes up after compaction; a late recommendation could differ from the one the partition's new
    owner publishes for the same event (ranked from its own item state). Dead letters are delivered (their ids make
    repeats harmless)."""
    from functools import partial

    from stream_app.stream.output import Outbox
    from stream_app.stream.topics import ensure_topics
    from stream_app.tools.consume import read_to_end

    settings = make_settings()
    ensure_topics(settings)
    topics = settings.topics
    offsets = AppliedOffsets(interval_s=0.0)
    offsets.taken_up({0, 1})
    outbox = Outbox(fence=partial(offsets.held_for, offsets.generation))
    outbox.later = [{topics.profiles}, {topics.recommendations}]  # as the profiles' changelog, then the lists
    for partition in (0, 1):
        user = f"user-of-{partition}".encode()
        outbox.add(topics.recommendations, user, b"list", partition, owner=partition)
        outbox.add(topics.dlq, user, b"letter", partition, owner=None)
        outbox.add(topics.profiles, user, b"snapshot", partition, owner=partition)
    offsets.revoked()  # the batch's delivery outlives a rebalance that moves partition 0 away
    offsets.assigned({1, 2})
    offsets.taken_up({1, 2})
    asyncio.run(_deliver(settings, outbox))
    assert [r.key for r in read_to_end(settings, topics.recommendations)] == [b"user-of-1"]
    assert sorted(r.key for r in read_to_end(settings, topics.dlq)) == [b"user-of-0", b"user-of-1"]
    assert [r.key for r in read_to_end(settings, topics.profiles)] == [b"user-of-1"]


async def _deliver(settings, outbox) -> None:
    from stream_app.stream.output import BatchProducer

    producer = BatchProducer(settings.require_kafka(), settings.kafka_security)
    try:
        await producer.deliver(outbox)
    finally:
        await producer.stop()


class RebalancingWorker:
    """What StreamWorker's rebalance steps touch, recording what they did."""

    def __init__(self):
        from types import SimpleNamespace

        self.done: list[str] = []
        self.lock, self.offsets = asyncio.Lock(), AppliedOffsets(interval_s=0.0)
        self.partitions_ready, self.idle_users, self.app = False, None, SimpleNamespace(consumer=FakeConsumer([]))
        self.partition_state = SimpleNamespace(forget=lambda: self.done.append("state forgotten"))
        self.ordered = SimpleNamespace(revoke=lambda: self.done.append("revoked"), changed=asyncio.Event(),
                                       assign=lambda partitions: self.done.append(f"assigned {sorted(partitions)}"))
        self.erased = SimpleNamespace(check_key=lambda: None)
        self.metrics = SimpleNamespace(freshness=SimpleNamespace(keep=lambda partitions: None))

    def assigned_inputs(self) -> set[int]:
        return {0, 1}

    async def publish_status(self) -> None:
        pass


def run_rebalance_steps(first: str, then: str) -> tuple[RebalancingWorker, bool]:
    """A rebalance's assignment is heard; a batch of the generation before holds the lock while the `first` and `then`
    rebalance steps begin (the completion of that rebalance, the next one's revoke); then the batch finishes. Whether
    the batch was told which partitions it still holds."""
    from stream_app.stream.worker import StreamWorker

    async def steps() -> tuple[RebalancingWorker, bool]:
        worker = RebalancingWorker()
        worker.offsets.taken_up({0, 1})
        batch_began = worker.offsets.generation
        worker.offsets.revoked()
        worker.offsets.assigned({0, 1})
        step = {"revoke": StreamWorker.partitions_revoked, "complete": StreamWorker.rebalance_complete}
        await worker.lock.acquire()  # the batch, late: it asks which partitions it still holds
        asking = asyncio.ensure_future(worker.offsets.held_for(batch_began))
        began = [asyncio.ensure_future(step[first](worker))]
        await asyncio.sleep(0.01)
        began.append(asyncio.ensure_future(step[then](worker)))
        await asyncio.sleep(0.01)
        answered = asking.done()
        worker.lock.release()
        await asyncio.gather(*began)
        asking.cancel()
        return worker, answered

    return asyncio.run(steps())


def test_a_rebalance_completion_that_waited_for_the_batch_while_a_revoke_began_leaves_the_worker_not_ready():
    worker, answered = run_rebalance_steps("complete", "revoke")  # the completion takes the lock first
    assert answered  # the completion came before the revoke: the late batch may write what it kept
    assert worker.done == ["revoked"]
    assert not worker.partitions_ready and not worker.offsets.settled.is_set()


def test_a_late_completion_heard_while_a_revoke_waits_for_the_batch_settles_nothing():
    worker, answered = run_rebalance_steps("revoke", "complete")  # the completion came after the next revoke began
    assert not answered  # partitions 0 and 1 are being revoked: the late batch must not write their state
    assert worker.done == ["revoked"]
    assert not worker.partitions_ready and not worker.offsets.settled.is_set()


def test_a_producer_that_failed_to_start_is_closed_before_the_next_try(monkeypatch):
    import socket

    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError

    from stream_app.kafka_security import KafkaSecurity
    from stream_app.stream import output

    made = []

    class Recorded(AIOKafkaProducer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(output, "AIOKafkaProducer", Recorded)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outbox = output.Outbox()
    outbox.add("events", b"k", b"v", 0)

    async def two_tries() -> None:
        producer = output.BatchProducer(f"127.0.0.1:{port}", KafkaSecurity())
        for _ in range(2):
            try:
                await producer.deliver(outbox)
            except KafkaConnectionError:
                pass

    asyncio.run(two_tries())
    assert len(made) == 2 and all(made_one._closed for made_one in made)


def test_a_late_batch_waiting_for_a_rebalance_that_does_not_complete_says_so(monkeypatch, caplog):
    from stream_app.stream import commits

    monkeypatch.setattr(commits, "SETTLE_WARN_S", 0.02)
    offsets = AppliedOffsets(interval_s=0.0)
    offsets.taken_up({0, 1})
    before = offsets.generation

    def waits() -> list[str]:
        return [r.getMessage() for r in caplog.records if "for the rebalance to complete" in r.getMessage()]

    async def wait_then_complete() -> tuple[bool, set[int] | None]:
        offsets.revoked()
        asking = asyncio.ensure_future(offsets.held_for(before))
        for _ in range(500):  # two intervals, however slow the machine (a sleep's length is no measure of that)
            if len(waits()) >= 2:
                break
            await asyncio.sleep(0.01)
        still_waiting = not asking.done()
        offsets.assigned({1})
        offsets.taken_up({1})
        return still_waiting, await asking

    assert asyncio.run(wait_then_complete()) == (True, {1})
    assert len(waits()) >= 2


def test_a_batch_whose_erasures_outlast_a_whole_rebalance_takes_no_rounds():
    """A batch awaits the erasures' apply (the first asks the broker for the dead-letter topic's retention) while a
    revoke and an assignment pass without its lock: events of a partition new to the worker, taken into that batch,
    had their state fenced out (the batch's generation does not hold it) while their marks were committed by the next
    batch, so the table and its changelog lost them for good. Such a batch now ends before its rounds."""
    from types import SimpleNamespace

    from stream_app.config import Settings
    from stream_app.core.items import InMemoryItemIndex
    from stream_app.stream.batch import Counters, PartitionState
    from stream_app.stream.worker import StreamWorker

    settings = Settings()
    offsets = AppliedOffsets(interval_s=0.0)
    offsets.taken_up({0})
    rounds: list[int] = []

    async def erasures_apply(handler, owned) -> None:  # the rebalance passes while it awaits
        offsets.revoked()
        offsets.assigned({0, 5})
        offsets.taken_up({0, 5})

    worker = SimpleNamespace(
        settings=settings, lock=asyncio.Lock(), offsets=offsets, steer_faust=lambda: None,
        profile_table=SimpleNamespace(data={}, changelog_topic_name="profiles.changelog"),
        partition_state=PartitionState({}, settings), index=InMemoryItemIndex(settings), counters=Counters(),
        idle_users=None, erased=None, profile_sizes=None, profile_cache=None, redeliverable=None, partitions_ready=True,
        processing=True,
        restored_unchecked=False, erasures=SimpleNamespace(apply=erasures_apply), assigned_inputs=lambda: {0, 5},
        watcher=SimpleNamespace(live=None, shadow=None), catalogue=SimpleNamespace(index=None, withdrawn=()),
        ordered=SimpleNamespace(next_round=lambda room: rounds.append(room) or (0, []), applied_marks=lambda: {},
                                settled_marks=lambda: {},
                                take_refetches=lambda: []))
    assert asyncio.run(StreamWorker.handle_batch(worker)) is False
    assert rounds == []  # before the change: one round taken, of the old generation


def test_no_batch_runs_after_the_worker_closed():
    """Faust stops the app's tasks after `on_before_shutdown`: batches went on after `close` had committed and
    stopped the outputs, their effects came after the last commit and re-created the producer and Redis client,
    never closed."""
    from types import SimpleNamespace

    from stream_app.stream.worker import StreamWorker

    committed: list[str] = []

    class Offsets:
        async def commit_now(self, consumer, when):
            committed.append(when)

    async def stopped() -> None:
        return None

    worker = SimpleNamespace(lock=asyncio.Lock(), offsets=Offsets(), app=SimpleNamespace(consumer=None), http=None,
                             early_status=None, mirror=SimpleNamespace(stop=stopped),
                             output=SimpleNamespace(stop=stopped), store=SimpleNamespace(close=stopped),
                             processing=True, datadir="/nonexistent-stream-app-test", settings=None, ordered=None)

    async def close_then_batch() -> bool:
        await StreamWorker.close(worker)
        return await StreamWorker.handle_batch(worker)  # fails on the fake's missing parts if it goes on

    assert asyncio.run(close_then_batch()) is False and committed == ["on the way out"]
