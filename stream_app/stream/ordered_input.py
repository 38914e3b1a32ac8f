"""The worker's input path in event time (ordering.py), on Kafka.

Every worker reads every partition of the three input topics with its own consumer, outside the
consumer group (`run`), and releases them in event-time order, partition group by partition group
(`ordering.Sequencer`): from that one order it builds the item state (`item_feed.ItemFeed`, the same
in every worker) and keeps each group's *schedule*, the order and epoch of its events. The worker's
own partitions are processed in their schedule's order (`next_round`), a round of one epoch at a
time, each round only once the item state holds every earlier epoch and no later one. So a worker's
recommendations depend on the log, not on fetch timing, replay speed, the number of workers or load.

Faust's consumer group owns the assignment, the seek to the group's commit and table recovery. An own record is
applied from the reader's copy (`ReadRecord`) once its lane's start is known; one released before its partition
was owned has only its place in the schedule and waits for Faust's delivery (`deliver`); Faust fetches only such
lanes (`faust_lanes`) and those whose commit is before records the schedule passed (applied before a rebalance,
or trimmed), which only it can bring again. A copy of what was applied is let go unacknowledged (`forget`: the
worker commits what it applied). Faust's consumer can skip records around a rebalance (a fetch begun before the
seek to the commit moves past what the seek asked to read again): such a record is fetched again (`refetch`).

What may differ is the idle rule: a lane of a group with nothing new for `max_idle_ms`, read to its end
as asked after the group's latest record was read (lane_ends.py), is gone on without; an event that comes
later is applied late (counted). So replays that keep every lane receiving within that wait are deterministic.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Callable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from ..config import EVENT_TYPES, Settings
from ..contracts import Rejection, Source
from ..core.events import Event
from ..core.item_feed import ItemFeed
from ..core.items import InMemoryItemIndex
from ..core.ordering import AFTER_ALL, BEFORE_ALL, GroupMerge, Released, Sequencer
from .faust_delivery import FaustDelivery
from .lane_ends import ASK_EVERY_MS, LaneEnds, pause_full_lanes
from .ready import ReadRecord, Ready, counted_before, gate, headers_of, input_source, order_ts, redrive_of
from .stage_latency import StageLatency
from .transport import started_reader

log = logging.getLogger("stream_app.ordered_input")

#: A lane that has not been read to its end is skipped only after this long (never wedge).
UNKNOWN_END_WAIT_S = 30.0
#: With nothing read, released or waiting, the batch loop is woken this often only (it was at every poll: 40 times
#: a second, a few percent of a core per idle worker); anything that arrives wakes it at once.
IDLE_WAKE_S = 1.0
#: After this long with nothing read, the reader's fetches wait IDLE_FETCH_WAIT_MS, at most, for a record (Tansu
#: answers an empty fetch only when its wait is over: fetches of every input partition 25 ms apart took about 6% of
#: a core per idle worker and as much of the broker's; the first event after a quiet spell may wait that long there).
IDLE_FETCH_AFTER_S = 2.0
IDLE_FETCH_WAIT_MS = 100


class OrderedInput(FaustDelivery):
    #: Unprocessed schedule entries of one of the worker's own partitions before the reader pauses it.
    AHEAD_MAX = 20_000
    #: Events buffered in one input lane before the reader pauses it.
    LANE_BUFFER_MAX = 10_000
    #: Schedule entries kept of partitions another worker owns (a rebalance may hand them over).
    KEEP_OTHERS = 20_000

    def __init__(self, settings: Settings, partitions: int, index: InMemoryItemIndex):
        self.settings = settings
        self.partitions = partitions
        self.topics = settings.topics.inputs
        self.lane_of_topic = {topic: lane for lane, topic in enumerate(self.topics)}
        self.sequencer = Sequencer(settings.item_epoch_ms, self._may_skip)
        for group in range(partitions):
            self.sequencer.group(group)
        self.items = ItemFeed(settings, index)
        self.schedules: dict[int, collections.deque[Released]] = {g: collections.deque() for g in range(partitions)}
        self.delivered: dict[tuple[int, int], collections.deque[Any]] = collections.defaultdict(collections.deque)
        self.next_offset: dict[tuple[int, int], int] = {}
        self.start: dict[tuple[int, int], int] = {}
        self.owned: set[int] = set()
        self.complete_through = BEFORE_ALL
        self.changed = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self.unscheduled = 0
        self.stale = 0  # events processed with an item state past their epoch
        self.read = 0
        self.late = 0  # own events applied late (the sequencer's count holds every partition's, history too)
        self.lane_ends = LaneEnds(self.topics)
        self.busy_since: float | None = None  # since when events have been waiting (None: nothing waits)
        self.paused: set[int] = set()  # groups of the worker's own that are far ahead of its processing
        self.reading_at: float | None = None  # when the reader last went round its loop (monotonic; the readiness)
        self.resumed_at: dict[int, float] = {}
        self.full_lanes: set[TopicPartition] = set()
        self.handed: dict[tuple[int, int], int] = {}  # (lane, group) -> highest offset handed out since assign
        self.refetch_wanted: dict[tuple[int, int], tuple[int, float]] = {}  # -> (offset, asked at)
        self.undelivered_since: dict[tuple[int, int], tuple[int, float]] = {}  # -> (offset, since)
        #: (lane, group) -> the highest offset its schedule passed (handed out, trimmed, or before the start)
        self.passed: dict[tuple[int, int], int] = {}
        # duplicates: records Faust's consumer delivered twice; gone: own scheduled records deleted from the log
        self.refetches, self.duplicates, self.gone = 0, 0, 0  # (retention) before Faust's consumer brought them
        self.faust_delivered: dict[tuple[int, int], int] = {}  # (lane, group) -> the last offset Faust delivered
        self.without_copy: collections.Counter[tuple[int, int]] = collections.Counter()  # own, no reader's copy
        self.stages = StageLatency()  # where own records' time goes (the worker's metrics expose it)
        #: Set by the worker: drops a delivered message that will never be acknowledged (a copy, or one
        #: fetched again) from what Faust waits for at a rebalance.
        self.forget: Callable[[Any], None] = lambda message: None

    # ------------------------------------------------------------------------------ the reader

    def pause_or_resume(self) -> None:
        """Stop reading a group of the worker's own while its schedule holds AHEAD_MAX unprocessed
        events (memory stays bounded while the worker catches up); read it again below half."""
        if self.consumer is None:
            return
        for group in list(self.paused):
            if group not in self.owned or len(self.schedules[group]) < self.AHEAD_MAX // 2:
                self.consumer.resume(*(tp for tp in self._partitions_of(group) if tp not in self.full_lanes))
                self.paused.discard(group)
                self.resumed_at[group] = time.monotonic()
        for group in self.owned - self.paused:
            if len(self.schedules[group]) >= self.AHEAD_MAX:
                self.consumer.pause(*self._partitions_of(group))
                self.paused.add(group)
        pause_full_lanes(self.consumer, self.sequencer.groups.values(), self.topics, self.full_lanes, self.paused,
                         self.LANE_BUFFER_MAX)

    def _partitions_of(self, group: int) -> list[TopicPartition]:
        return [TopicPartition(topic, group) for topic in self.topics]

    def _may_skip(self, group: GroupMerge, lane: int) -> bool:
        """A lane may be skipped once it has received nothing for max_idle_ms while events waited
        and the reader was reading it, and the reader has read it to its end."""
        if group.group in self.paused:
            return False
        now = time.monotonic()
        if self.busy_since is None:
            self.busy_since = now
        # Quiet since events began to wait, the lane last received or its group was resumed (paused, none come)
        since = max(self.busy_since, self.resumed_at.get(group.group, 0.0), group.arrived[lane] or 0.0)
        idle_s = now - since
        if idle_s >= UNKNOWN_END_WAIT_S:
            return True
        if idle_s * 1000 < self.settings.max_idle_ms:
            return False
        return self.lane_ends.reached(lane, group, self.next_offset.get((lane, group.group), 0))

    async def run(self) -> None:
        """Read every input partition from its beginning (started again after a failure: from where it read)."""
        tps = [TopicPartition(topic, p) for topic in self.topics for p in range(self.partitions)]
        self.consumer = consumer = await started_reader(
            self.settings, {tp: self.next_offset.get((self.lane_of_topic[tp.topic], tp.partition)) for tp in tps})
        try:
            await self.lane_ends.start(self.settings)
            consumer.pause(*self.full_lanes, *(tp for group in self.paused for tp in self._partitions_of(group)))
            poll_ms, woken = max(5, min(50, self.settings.max_idle_ms // 2)), float("-inf")
            busy_wait, last_read = self.settings.fetch_max_wait_ms, time.monotonic()
            idle_wait = max(busy_wait, IDLE_FETCH_WAIT_MS)
            while True:
                self.reading_at = time.monotonic()
                self.pause_or_resume()
                batches = await consumer.getmany(timeout_ms=poll_ms, max_records=5000)
                if batches:
                    last_read = time.monotonic()
                consumer._fetcher._fetch_max_wait_ms = (  # aiokafka 0.14 reads it at each fetch request
                    busy_wait if time.monotonic() - last_read < IDLE_FETCH_AFTER_S else idle_wait)
                for tp, records in batches.items():
                    self.push(tp.topic, tp.partition, records)
                await self.lane_ends.read_past_markers(consumer, self.sequencer.groups.values(), self.next_offset)
                await self.lane_ends.ask_starts(self.refetch_wanted)
                await self.lane_ends.refresh(self.sequencer.groups.values(), self.next_offset,
                                             min(poll_ms, ASK_EVERY_MS) / 1000)
                if self.release() or batches or self.waiting() or time.monotonic() - woken >= IDLE_WAKE_S:
                    woken = time.monotonic()
                    self.changed.set()
        finally:
            try:
                await consumer.stop()
            finally:
                await self.lane_ends.stop()

    def push(self, topic: str, partition: int, records: list[Any]) -> None:
        lane, now_ms = self.lane_of_topic[topic], int(time.time() * 1000)
        for record in records:
            source = Source(topic, partition, record.offset, record.timestamp, counted_before(record),
                            redrive_of(record), headers_of(record))
            checked = self.checked(record.value, record.key, source, lane, record.timestamp)
            self.sequencer.push(partition, lane, order_ts(checked, record.timestamp, now_ms),
                                (record.offset, checked, record))  # the record: the reader's copy, if owned
            self.next_offset[(lane, partition)] = record.offset + 1
        self.read += len(records)
        start = self.start.get((lane, partition)) if partition in self.owned else None  # (not the history)
        if start is not None:
            self.stages.observe("read", time.time(), (record.timestamp / 1000 for record in records
                                                      if record.timestamp is not None and record.offset >= start))

    def release(self) -> bool:
        """Release what the order allows: item signals into the feed, entries into the schedules. Returns
        whether anything was."""
        taken = False
        while True:
            epoch, released = self.sequencer.take(10_000)
            if epoch is None:
                break
            taken = True
            for entry in released:
                offset, checked, record = entry.item
                if isinstance(checked, Event) and not counted_before(record):
                    self.items.add(checked, entry.group, entry.epoch)
                schedule = self.schedules[entry.group]
                if entry.group not in self.owned:
                    entry.item = (offset, None, None)  # another worker's: keep the order, not the event
                    if len(schedule) >= self.KEEP_OTHERS:
                        self._pass(schedule.popleft())
                schedule.append(entry)
            own = (entry.item[2] for entry in released if entry.item[2] is not None  # another worker's are gone
                   and self._applies_here(entry.lane, entry.group, entry.item[0]))
            self.stages.observe("ordered", time.time(), (r.timestamp / 1000 for r in own if r.timestamp is not None))
        # Never past the newest epoch released: an idle input says nothing about epochs to come.
        newest = max((g.clock // g.epoch_ms for g in self.sequencer.groups.values() if g.clock is not None),
                     default=BEFORE_ALL)
        self.complete_through = min(self.sequencer.bound() - 1, newest - 1)
        self.advance_items()
        if not self.sequencer.buffered() and not self.owned_ahead():
            self.sequencer.reset_waits()  # an idle lane is waited for only while events wait for it
            self.busy_since = None
        return taken

    def waiting(self) -> bool:
        """Does anything wait on a clock (the idle rule, a bounded wait for Faust's delivery, a re-fetch)?"""
        for key in [key for key, (offset, _) in self.undelivered_since.items() if self.handed.get(key, -1) >= offset]:
            del self.undelivered_since[key]  # delivered and handed out since: it waits for nothing
        return bool(self.sequencer.buffered() or self.owned_ahead() or any(self.delivered.values())
                    or self.refetch_wanted or self.undelivered_since)

    # ------------------------------------------------------------------------- the item state

    def _prune(self, group: int) -> None:
        """Drop schedule entries of this group that an earlier owner already applied."""
        schedule = self.schedules[group]
        while schedule and schedule[0].item[0] < self.start.get((schedule[0].lane, group), 0):
            self._pass(schedule.popleft())

    def _applies_here(self, lane: int, group: int, offset: int) -> bool:
        """An own record from the lane's start on (not the history an earlier owner applied: minutes "late")."""
        return group in self.owned and offset >= self.start.get((lane, group), float("inf"))

    def _pass(self, entry: Released) -> None:
        key = (entry.lane, entry.group)
        self.passed[key] = max(self.passed.get(key, -1), entry.item[0])
        if entry.item[2] is None and self.without_copy[key] > 0:
            self.without_copy[key] -= 1

    def owned_min_epoch(self) -> int:
        for group in self.owned:
            self._prune(group)
        return min((self.schedules[g][0].epoch for g in self.owned if self.schedules[g]), default=AFTER_ALL)

    def owned_ahead(self) -> int:
        return sum(len(self.schedules[g]) for g in self.owned)

    def advance_items(self, owned_min: int | None = None) -> None:
        """Apply every epoch complete in every group that no own event waits for (`owned_min`: the earliest epoch
        an own event waits in, if known). Owning none (starting, between a revoke and an assignment, a standby), the
        next ones' events wait in epochs it cannot know: only epochs past KEEP_OTHERS buffered item entries are
        applied (memory bounded; a takeover that far behind is stale, counted)."""
        if self.owned:
            through = min(self.complete_through, (self.owned_min_epoch() if owned_min is None else owned_min) - 1)
        else:
            through = min(self.complete_through, self.items.through_keeping(self.KEEP_OTHERS))
        if through > BEFORE_ALL and (self.items.applied_through is None or through > self.items.applied_through):
            self.items.advance(through)

    # ------------------------------------------------------------------- the worker's partitions

    def assign(self, partitions: set[int]) -> None:
        """The worker's own partitions after a rebalance; where each of their lanes starts comes next,
        with Faust's seek (`resume_at`)."""
        self.owned = set(partitions)
        self._forget_lanes()
        self.without_copy = collections.Counter((entry.lane, group) for group in self.owned
                                                for entry in self.schedules[group] if entry.item[2] is None)

    def _forget_lanes(self) -> None:
        """What is known of the own lanes since the last seek: none is fetched or waited for until the next."""
        self.start = {}
        self.delivered.clear()
        self.faust_delivered.clear()
        self.handed.clear()
        self.refetch_wanted.clear()
        self.undelivered_since.clear()

    def resume_at(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """(topic, partition) -> where Faust's consumer resumes after its seek to the group's commit (after
        `assign`): what an own lane holds before it, an earlier owner applied; a re-fetch asked before is moot."""
        for (topic, partition), offset in offsets.items():
            lane = self.lane_of_topic.get(topic)
            if lane is None or partition not in self.owned:
                continue
            self.start[(lane, partition)] = offset
            self.refetch_wanted.pop((lane, partition), None)
            self.undelivered_since.pop((lane, partition), None)
        self.changed.set()

    def applied_marks(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the offset after the last event handed out in that own lane: within a lane
        events go out in offset order, so once their batch is flushed everything before it is applied."""
        return {(self.topics[lane], group): offset + 1 for (lane, group), offset in self.handed.items()}

    def settled_marks(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the offset before which no record of that own lane will be handed out again until the
        next seek: past the last handed out (`applied_marks`), and the lane's start (the group's commit) at least."""
        marks = {(self.topics[lane], group): start for (lane, group), start in self.start.items()}
        for key, offset in self.applied_marks().items():
            marks[key] = max(marks.get(key, 0), offset)
        return marks

    def revoke(self) -> list[Any]:
        """Let go of every delivered, unprocessed event (unacknowledged, they are read again by
        whoever owns their partition next, from the committed offset); return their messages."""
        held = [event.message for queue in self.delivered.values() for event in queue]
        self.owned = set()
        self._forget_lanes()
        self.without_copy.clear()
        return held

    def next_round(self, limit: int) -> tuple[int | None, list[Ready]]:
        """The next round of the worker's own partitions: events of one epoch, in schedule order,
        delivered by Faust and with the item state at that epoch; else (None, [])."""
        behind = self._passed_behind()
        for (lane, group), wanted in behind.items():  # none delivered: a bounded wait, then asked again
            if not self.delivered[(lane, group)]:
                self._undelivered(lane, group, wanted)
        passed = self._passed_again(limit)
        if passed:
            return BEFORE_ALL, passed
        epoch = self.owned_min_epoch()
        if epoch == AFTER_ALL:
            return None, []
        if epoch > BEFORE_ALL:  # BEFORE_ALL: inputs without a timestamp, dead-lettered at once
            self.advance_items(epoch)
            if self.items.applied_through is None or self.items.applied_through < epoch - 1:
                return None, []  # another group may still bring events of an earlier epoch
        out: list[Ready] = []
        for group in sorted(self.owned):
            schedule = self.schedules[group]
            while schedule and schedule[0].epoch == epoch and len(out) < limit:
                entry = schedule[0]
                offset, checked, read = entry.item
                key = (entry.lane, group)
                delivered = self.delivered[key]
                while delivered and delivered[0].message.offset < offset:
                    # Not in the schedule (trimmed before this worker owned the partition): apply now.
                    stale = delivered.popleft()
                    self.unscheduled += 1
                    self.handed[key] = stale.message.offset
                    out.append(Ready(Released(group, entry.lane, epoch, True, None), stale, self._check(stale)))
                # applied before this worker owned it; or deleted from the log since, and the reader has no copy
                gone = read is None and self.start.get(key, 0) <= offset < self.lane_ends.log_start.get(key, 0)
                if offset < self.start.get(key, 0) or gone:
                    if gone:  # handed out as nothing: the lane is not behind it any more
                        self.gone += 1
                        self.handed[key] = max(self.handed.get(key, -1), offset)
                    self._pass(schedule.popleft())
                    continue
                if delivered and delivered[0].message.offset == offset:
                    event = delivered.popleft()  # Faust's copy came first: acknowledged once applied
                elif read is not None and key in self.start and key not in behind:  # the reader's copy
                    # (Faust's is let go); behind, the passed records come first, else it would commit past them
                    event = ReadRecord.of(self.topics[entry.lane], group, read)
                elif not delivered:
                    if key not in behind:  # else its earlier records are waited for first (_passed_again)
                        self._undelivered(entry.lane, group, offset)  # Faust has not delivered it yet
                    break
                else:
                    self._refetch(entry.lane, group, offset)  # Faust skipped it
                    break
                self._pass(schedule.popleft())
                self.handed[key] = offset
                out.append(Ready(entry, event, checked if checked is not None else self._check(event)))
        return (epoch if out else None), out

    def count_applied(self, epoch: int, applied: list[Ready]) -> None:
        """Count the events of the round of `epoch` the batch applied as late and stale where they were: a
        redelivery of an applied event is dropped, neither late nor ranked (a log replayed again is all late)."""
        self.late += sum(ready.entry.late for ready in applied if ready.entry.item is not None)  # None: unscheduled
        if applied and epoch > BEFORE_ALL and self.items.applied_through > epoch - 1:
            # a partition taken over from a worker that was behind this one's item state
            self.stale += len(applied)

    def _check(self, event: Any) -> Event | Rejection:
        message, source = event.message, input_source(event.message)
        return self.checked(message.value, message.key, source, self.lane_of_topic[source.topic], source.timestamp)

    def checked(self, value: bytes | None, key: bytes | None, source: Source, lane: int,
                reference_ms: int | None) -> Event | Rejection:
        return gate(value, key, source, EVENT_TYPES[lane], reference_ms, self.settings, self.partitions)

    def read_to(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the offset after the last record the reader read: an input's end is at least that."""
        return {(self.topics[lane], partition): offset for (lane, partition), offset in self.next_offset.items()}

    def status(self) -> dict[str, Any]:
        """`held`: delivered events of own lanes waiting for their turn, [topic, partition, first offset, count]."""
        return {"read": self.read, "buffered": self.sequencer.buffered(), "late_in_partition": self.late,
                "late_for_item_state": self.items.late, "unscheduled": self.unscheduled,
                "stale_item_state": self.stale, "refetches": self.refetches, "duplicates": self.duplicates,
                "gone_from_log": self.gone, "item_epoch_applied": self.items.applied_through,
                "item_epoch_ms": self.settings.item_epoch_ms, "owned_pending": self.owned_ahead(),
                "item_state": self.items.summary(), "held": [[self.topics[lane], group, queue[0].message.offset,
                len(queue)] for (lane, group), queue in sorted(self.delivered.items()) if queue][:16]}
