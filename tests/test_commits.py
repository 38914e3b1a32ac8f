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
