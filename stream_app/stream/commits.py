"""Input offsets committed by what the worker applied, not by Faust's per-message acknowledgements.

Faust commits the longest run of acknowledged offsets after the last commit it knows of. A chaos run
(tools/chaos.py) showed that bookkeeping losing offsets around rebalances during outages: events
processed and acknowledged, yet the group's commit stayed at one offset for good on a few partitions
(so every later owner re-read everything from there, and a replay's `wait_committed` never ended).
The worker knows better: in each of its lanes (input topic, partition) it applies events in offset
order, so once a batch is flushed, every offset up to the last one it handed out is applied (by this
worker, or before the commit it started from). `AppliedOffsets` keeps those watermarks and commits
them through Faust's consumer, which also records them as committed, so its own commits never go back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterable, Mapping

from aiokafka import TopicPartition
from faust.types import TP

log = logging.getLogger("stream_app.commits")

#: How long a rebalance or a stop waits for the commit of the applied offsets (a rebalance waits up to
#: retries.REBALANCE_WAIT_S for a batch first; the group's rebalance timeout is 6 s).
COMMIT_NOW_WAIT_S = 2.0
#: How often a batch that outlived a revoke says it still waits for the rebalance to complete (`held_for`).
SETTLE_WARN_S = 30.0
#: The periodic commit's bound: with the broker gone aiokafka waits for a group coordinator without end.
COMMIT_WAIT_S = 5.0
#: After the broker has not answered the heartbeat's ask of the input ends for this long, the worker is not ready:
#: it can neither read nor commit (with the broker paused for 90 s its /readyz answered 200 throughout).
BROKER_NOT_READY_S = 10.0


class AppliedOffsets:
    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.applied: dict[TP, int] = {}  # next offset to read, everything before it applied and flushed
        self.generation = 0  # revokes so far: a batch's marks count only in the assignment they were taken in
        self.last_commit = time.monotonic()  # the first commit an interval after the start, as Faust's
        # each assigned table partition -> the generation it has been held since without a break (`held_for`)
        self.held_since: dict[int, int] = {}
        self.settled = asyncio.Event()  # the last revoke's assignment is taken up
        self.assignment_due = False  # revoked, and the group's next assignment not yet heard (`assigned`)

    def flushed(self, marks: Mapping[tuple[str, int], int], generation: int) -> None:
        """After a batch's effects are stored: the lanes' next offsets (ordered_input.applied_marks), as
        taken with `generation` before the batch's I/O. A batch that outlived a revoke counts for nothing:
        its partitions may have moved and come back, with a commit past its marks."""
        if generation != self.generation:
            return
        for (topic, partition), offset in marks.items():
            tp = TP(topic, partition)
            if offset > self.applied.get(tp, 0):
                self.applied[tp] = offset

    def revoking(self) -> None:
        """A revoke begins (it may wait for a batch): a rebalance completion heard from now on is an earlier one's."""
        self.settled.clear()
        self.assignment_due = True

    def revoked(self) -> None:
        """A rebalance: the next owner of each partition starts from the group's commit."""
        self.revoking()
        self.applied.clear()
        self.generation += 1

    def follow_assignments(self, app: Any, inputs: Iterable[str]) -> None:
        """Hear each of the group's assignments of the input partitions (`assigned`), as Faust hands it out."""
        topics = set(inputs)

        @app.on_partitions_assigned.connect
        async def on_assigned(sender: Any, assigned: Iterable[TP], **kwargs: Any) -> None:
            self.assigned({tp.partition for tp in assigned if tp.topic in topics})

    def assigned(self, partitions: Iterable[int]) -> None:
        """The group's assignment, before its tables are restored. A partition not in it has left, also when its
        rebalance is never complete (another begins during the restore, or the member was dropped from the group)."""
        kept = set(partitions)
        self.held_since = {p: since for p, since in self.held_since.items() if p in kept}
        self.assignment_due = False

    def taken_up(self, partitions: Iterable[int]) -> bool:
        """A rebalance is complete: `partitions` are this worker's. A partition kept through it kept its table
        data in memory (Faust drops only those that left); one that came (back) starts from its changelog.
        Heard after a revoke began and before the next assignment, it is an earlier rebalance's, late: it settles
        nothing, and False says so."""
        if self.assignment_due:
            return False
        self.held_since = {p: self.held_since.get(p, self.generation) for p in partitions}
        self.settled.set()
        return True

    async def held_for(self, generation: int) -> set[int] | None:
        """The table partitions whose state a batch begun in `generation` may still write (None: all, no revoke
        since): after a revoke, once its rebalance is complete, those held without a break since. A partition that
        moved has lost the batch's effects in memory; its new owner applies the batch's events again."""
        if generation == self.generation:
            return None
        waited_s = 0.0
        while not self.settled.is_set():  # said now and then: a rebalance that never completes holds the output
            try:
                await asyncio.wait_for(self.settled.wait(), timeout=SETTLE_WARN_S)
            except asyncio.TimeoutError:
                waited_s += SETTLE_WARN_S
                log.warning("a batch begun before a rebalance has waited %.0fs for the rebalance to complete (only "
                            "then is it known which partitions' state it may still write); its delivery waits",
                            waited_s)
        return {p for p, since in self.held_since.items() if since <= generation}

    async def commit(self, consumer: Any, now: bool = False) -> bool:
        """Commit the applied offsets of the assigned partitions, at most once per interval (`now`: at once,
        as at a rebalance or a graceful stop, so the next owner starts after them). Unchanged ones are
        sent again, as Kafka's auto-commit does: a group commit moved back by a late commit of an earlier
        owner is mended at this owner's next commit of that lane. False: Faust's consumer declined (the
        group has moved on)."""
        started = time.monotonic()
        if started - self.last_commit < self.interval_s and not now:
            return True
        self.last_commit = started
        assignment = consumer.assignment()
        due = {tp: offset for tp, offset in self.applied.items() if tp in assignment}
        # Faust's own step, which records them as committed; it crashes the app on a fatal error
        return await consumer._commit_offsets(due) if due else True

    async def commit_due(self, consumer: Any) -> None:
        """The periodic commit (`commit`), bounded: unbounded, a broker gone after the worker had applied events
        held the heartbeat in it (its /readyz said ready for as long as the broker was gone, its status left
        Redis) or the batch loop. Not committed now, the next interval's commit sends every offset again."""
        try:
            await asyncio.wait_for(self.commit(consumer), timeout=COMMIT_WAIT_S)
        except asyncio.TimeoutError:
            log.warning("could not commit the applied offsets within %.0fs (is the broker reachable?): the next "
                        "commit sends them again", COMMIT_WAIT_S)

    async def commit_now(self, consumer: Any, when: str) -> None:
        """Commit at once, the member's generation still holding the partitions (a rebalance's revoke, a
        graceful stop): their next owner starts after what was applied. Bounded: a rebalance has seconds.
        Not committed, the next owner reads a little again, idempotently."""
        try:
            if not await asyncio.wait_for(self.commit(consumer, now=True), timeout=COMMIT_NOW_WAIT_S):
                log.warning("the applied offsets were not committed %s: the group has moved on", when)
        except asyncio.TimeoutError:  # aiokafka retries an unreachable broker itself: only time runs out
            log.warning("could not commit the applied offsets %s within %.0fs", when, COMMIT_NOW_WAIT_S)


class InputEnds:
    """The owned input partitions' end offsets, asked of the broker at each heartbeat: Faust's consumer is
    paused on the lanes the worker's own reader serves, so its high watermarks stood still (the lag read 0
    under a backlog of thousands). On Tansu an end is short by up to the rest of the last record batch."""

    def __init__(self) -> None:
        self.ends: dict[tuple[str, int], int] = {}
        self.failing_since: float | None = None  # monotonic: the first of the asks failing since the last answer

    async def refresh(self, app: Any, reader: Any, inputs: Iterable[str]) -> None:
        """Ask `reader` (an AIOKafkaConsumer of the worker's, None before it starts) for the ends."""
        inputs = set(inputs)
        tps = [TopicPartition(tp.topic, tp.partition) for tp in app.assignor.assigned_actives() if tp.topic in inputs]
        if reader is None or not tps:
            self.ends, self.failing_since = {}, None
            return
        try:
            ends = await asyncio.wait_for(reader.end_offsets(tps), timeout=COMMIT_NOW_WAIT_S)
        except Exception as exc:  # a figure missing for a while, and readiness once it lasts (`missing`)
            log.info("cannot read the input partitions' end offsets for the lag (%r)", exc)
            self.failing_since = self.failing_since or time.monotonic()
            return
        if self.failing_since is not None and time.monotonic() - self.failing_since >= BROKER_NOT_READY_S:
            log.warning("the broker answers again, after %.0fs", time.monotonic() - self.failing_since)
        self.failing_since = None
        self.ends = {(tp.topic, tp.partition): end for tp, end in ends.items() if end is not None}

    def missing(self) -> dict[str, str]:
        """For readiness: the broker, once it has not answered for BROKER_NOT_READY_S."""
        failing_s = time.monotonic() - self.failing_since if self.failing_since is not None else 0.0
        if failing_s < BROKER_NOT_READY_S:
            return {}
        return {"broker": f"the broker has not answered for {failing_s:.0f}s (the input partitions' end offsets, "
                          "asked at each heartbeat): no event is read or committed meanwhile"}

    def lag(self, app: Any, inputs: Iterable[str], read_to: dict[tuple[str, int], int] | None = None
            ) -> dict[tuple[str, int], int]:
        """Per owned input partition: its end (the latest of the broker's last answer, Faust's high watermark and
        where the worker's own reader has read to, `read_to`: the broker is asked at each heartbeat, 5 s apart, so
        under steady input its answer was behind the commits and the lag read 0) minus the group's committed
        offset."""
        read_to = read_to or {}
        consumer, inputs, lag = app.consumer, set(inputs), {}
        for tp in app.assignor.assigned_actives():
            if tp.topic not in inputs:
                continue
            try:
                highwater = consumer.highwater(tp) or 0
            except Exception:  # not fetched yet
                highwater = 0
            end = max(self.ends.get((tp.topic, tp.partition), 0), highwater, read_to.get((tp.topic, tp.partition), 0))
            # Faust keeps the last commit only in this private map (`.get`: it is a defaultdict)
            lag[(tp.topic, tp.partition)] = max(0, end - (consumer._committed_offset.get(tp) or 0))
        return lag
