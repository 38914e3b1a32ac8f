"""Faust's consumer as it misbehaves, simulated against the worker's own-lane bookkeeping (faust_delivery.py):
its read position jumps ahead (a fetch begun before a seek), records it fetched before a seek back are handed over
after the seek took effect, copies come twice, deliveries stall. Whatever the seeded interleaving, every scheduled
record is applied once, in offset order, and the re-fetches stay few."""

import random

import pytest
from test_ordered_input import Delivered, drain, own_partition

import stream_app.stream.faust_delivery as faust_delivery

RECORDS = 60


class FaustConsumer:
    """One lane of Faust's consumer: a read position and the records fetched but not yet handed to the agent (a seek
    moves the position; what was fetched before it is still handed over, as Faust's stream buffer does)."""

    def __init__(self, topic: str, rng: random.Random, forgotten: list):
        self.topic, self.rng, self.forgotten = topic, rng, forgotten
        self.position = 0
        self.fetched: list[tuple[int, int]] = []  # (offset, the seek it was fetched after)
        self.seeks: list[int | None] = []  # the offsets sought back to, in order

    def fetch(self, jumps: bool = True) -> None:
        if jumps and self.rng.random() < 0.15:  # a fetch begun before the seek to the commit: the position jumps ahead
            self.position += self.rng.randint(1, 5)
        count = self.rng.randint(1, 6)
        self.fetched += [(offset, len(self.seeks)) for offset in range(self.position, self.position + count)
                         if offset < RECORDS]
        self.position = min(self.position + count, RECORDS)

    def hand_over(self, ordered) -> None:
        for _ in range(self.rng.randint(0, len(self.fetched))):
            offset, after = self.fetched.pop(0)
            before = len(self.forgotten)
            sought = after and self.seeks[after - 1] == offset and after == len(self.seeks)
            lane = (ordered.lane_of_topic[self.topic], 0)
            unapplied = ordered.handed.get(lane, -1) < offset  # nor waiting in the lane (a copy that came first)
            unapplied &= all(event.message.offset != offset for event in ordered.delivered[lane])
            ordered.deliver(Delivered(self.topic, offset))
            # what the latest seek back was for, not applied yet, is never let go as a copy (it was, while records
            # fetched before the seek waited in the lane: the lane was then asked for again 5 s later, and again)
            let_go = [message.offset for message in self.forgotten[before:]]
            assert not (sought and unapplied and offset in let_go), f"{offset} let go"
            if self.rng.random() < 0.05:  # a copy delivered twice
                ordered.deliver(Delivered(self.topic, offset))

    def seek(self, offset: int, refetch: bool = True) -> None:
        self.seeks.append(offset if refetch else None)  # None: the seek to the commit after a rebalance
        self.position = offset  # records already fetched stay in `fetched`: handed over before the seek's


@pytest.mark.parametrize("seed", range(40))
def test_every_scheduled_record_is_applied_once_in_order_whatever_faust_s_consumer_does(monkeypatch, seed):
    clock = [1000.0]
    monkeypatch.setattr(faust_delivery.time, "monotonic", lambda: clock[0])
    rng = random.Random(seed)
    ordered, topic, forgotten = own_partition(RECORDS, read_while_owned=False)
    consumer = FaustConsumer(topic, rng, forgotten)
    applied: list[int] = []
    for step in range(400):
        if step < 300:
            if rng.random() < 0.6:
                consumer.fetch()
            consumer.hand_over(ordered)
        else:  # the misbehaviour over: Faust fetches at every step, without jumping ahead
            consumer.fetch(jumps=False)
            consumer.hand_over(ordered)
        applied += drain(ordered)
        for _, _, offset in ordered.take_refetches():
            consumer.seek(offset)
        clock[0] += rng.choice((0.1, 0.5, 2.0))
        if applied == list(range(RECORDS)):
            break
    assert applied == list(range(RECORDS))
    assert ordered.status()["owned_pending"] == 0 and ordered.take_refetches() == []
    jumps = ordered.status()["refetches"]
    assert jumps <= 25, f"{jumps} re-fetches for {RECORDS} records"


@pytest.mark.parametrize("seed", range(40))
def test_across_rebalances_back_no_record_is_skipped_and_each_run_goes_forward(monkeypatch, seed):
    """The partition is lost and got back at random, at the group's commit (which may lag what was applied: a batch
    not yet committed); Faust's consumer seeks there, with or without what it fetched before (handed over first).
    Records applied for the first time come in offset order without a gap, each run of applied records between two
    rebalances goes forward, and the lane reaches its end. (A record applied before the rebalance may or may not be
    applied again: the partition stayed, and the profiles' digests would drop it.)"""
    clock = [1000.0]
    monkeypatch.setattr(faust_delivery.time, "monotonic", lambda: clock[0])
    rng = random.Random(1000 + seed)
    ordered, topic, forgotten = own_partition(RECORDS, read_while_owned=False)
    consumer = FaustConsumer(topic, rng, forgotten)
    runs: list[list[int]] = [[]]
    committed = 0
    for step in range(600):
        calm = step >= 400
        if calm or rng.random() < 0.6:
            consumer.fetch(jumps=not calm)
        consumer.hand_over(ordered)
        runs[-1].extend(drain(ordered))
        if rng.random() < 0.5:  # the batch's commit
            committed = ordered.applied_marks().get((topic, 0), committed)
        for _, _, offset in ordered.take_refetches():
            consumer.seek(offset)
        if not calm and rng.random() < 0.04:  # lost and got back at the commit
            ordered.revoke()
            ordered.assign({0})
            ordered.resume_at({(t, 0): committed if t == topic else 0 for t in ordered.topics})
            if rng.random() < 0.5:
                consumer.fetched.clear()
            consumer.seek(committed, refetch=False)
            runs.append([])
        clock[0] += rng.choice((0.1, 0.5, 2.0))
        applied = {offset for run in runs for offset in run}
        if calm and len(applied) == RECORDS:
            break
    first_times = list(dict.fromkeys(offset for run in runs for offset in run))
    assert first_times == list(range(RECORDS))
    for run in runs:
        assert run == sorted(set(run)), run
