"""Event-time order across the input topics, and item state by event time. Pure: no Faust or Kafka.

Each event type has its own topic, co-partitioned by user: partition p of `events.browse`,
`events.click` and `events.purchase` forms the *group* p, with one *lane* per topic. A group is
merged as Kafka Streams synchronises a task's inputs: the lane whose head has the smallest
timestamp goes next (ties: browse, click, purchase; within a lane, offset order); while a lane has
nothing buffered the group waits, unless the caller says the lane may be skipped (the worker: it has
been empty for `max_idle_ms`; `evaluate`: the log has no more events for it). With every lane's
data at hand the order is a function of the log alone, at any speed.

Each released event gets an *epoch*: `max(group clock, event ts) // item_epoch_ms`, where the group
clock is the largest timestamp the group released so far (so epochs never go back within a group,
and an event older than its group's clock, a late one, joins the current epoch). Item state is
defined by epochs: every event of epoch k is recommended from the item state after all events of
epochs < k of every group and none of epoch k or later (`ItemFeed`). A consumer processes events
in rounds of one epoch (`Sequencer.take`), so it never needs an item state it has gone past.
The item state itself: `item_feed.ItemFeed`.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from ..config import EVENT_TYPES, Settings

LANES = len(EVENT_TYPES)
LANE_OF = {event_type: lane for lane, event_type in enumerate(EVENT_TYPES)}
#: No epoch yet / nothing can come: bounds for a group's next epoch.
BEFORE_ALL = -(2 ** 62)
AFTER_ALL = 2 ** 62
#: The ordering key of an input that has no valid timestamp (it is only dead-lettered): first.
INVALID_TS = -1

WAIT = -1  # the group may still receive an earlier event: hold back
EMPTY = -2  # nothing buffered and every empty lane may be skipped


@dataclass(slots=True)
class Released:
    group: int
    lane: int
    epoch: int
    late: bool  # older than an event its group already released
    item: Any  # what the caller pushed (a parsed event, a rejection, a message)


@dataclass
class GroupMerge:
    """One group's lanes; `push` in lane (offset) order, `release` in event-time order."""

    group: int
    epoch_ms: int
    lanes: tuple[collections.deque, ...] = field(default_factory=lambda: tuple(collections.deque() for _ in range(LANES)))
    clock: int | None = None
    clock_lane: int = 0  # the lane of the event that set the clock: of equal times, a lower lane goes first
    # Which empty lanes events waited for since the last reset (the caller asks their ends), and when
    # each lane last received anything (the caller's idle rule).
    waited_for: list[bool] = field(default_factory=lambda: [False] * LANES)
    arrived: list[float | None] = field(default_factory=lambda: [None] * LANES)

    def push(self, lane: int, ts: int | None, item: Any) -> None:
        self.lanes[lane].append((INVALID_TS if ts is None else ts, item))
        self.arrived[lane] = time.monotonic()

    def next_lane(self, may_skip: Callable[["GroupMerge", int], bool]) -> int:
        """The lane whose head goes next, WAIT, or EMPTY. Every empty lane is marked waited for, not only
        the first that holds the group back (the caller asks all their ends at once)."""
        best, best_ts, wait = EMPTY, 0, False
        for lane, queue in enumerate(self.lanes):
            if queue:
                ts = queue[0][0]
                if best == EMPTY or ts < best_ts:
                    best, best_ts = lane, ts
            else:
                self.waited_for[lane] = True
                wait = wait or not may_skip(self, lane)
        return WAIT if wait else best

    def epoch_of(self, ts: int) -> int:
        clock = ts if self.clock is None or ts > self.clock else self.clock
        return clock // self.epoch_ms

    def bound(self, may_skip: Callable[["GroupMerge", int], bool]) -> int:
        """The smallest epoch this group's next release can have."""
        lane = self.next_lane(may_skip)
        if lane == EMPTY:
            return AFTER_ALL
        if lane == WAIT:
            return BEFORE_ALL if self.clock is None else self.clock // self.epoch_ms
        ts = self.lanes[lane][0][0]
        if ts == INVALID_TS:  # releases at once, touches no state
            return BEFORE_ALL if self.clock is None else self.clock // self.epoch_ms
        return self.epoch_of(ts)

    def release(self, lane: int) -> Released:
        ts, item = self.lanes[lane].popleft()
        if ts == INVALID_TS:
            epoch = BEFORE_ALL if self.clock is None else self.clock // self.epoch_ms
            return Released(self.group, lane, epoch, False, item)
        # late: after a later event, or after an equal-time one of a later lane (a lane skipped when idle and
        # then receiving an event of that time: in the log's order it goes first)
        late = self.clock is not None and (ts < self.clock or (ts == self.clock and lane < self.clock_lane))
        epoch = self.epoch_of(ts)
        if not late:
            self.clock, self.clock_lane = ts, lane
        return Released(self.group, lane, epoch, late, item)

    def buffered(self) -> int:
        return sum(len(queue) for queue in self.lanes)


def always(_group: GroupMerge, _lane: int) -> bool:
    return True


class Sequencer:
    """Several groups (a worker's assigned partitions, or all of them) released in rounds of one
    epoch: a round holds events of epoch k only when no group can still release an event of an
    earlier epoch. Events without a valid timestamp are released at once (epoch of their group)."""

    def __init__(self, epoch_ms: int, may_skip: Callable[[GroupMerge, int], bool]):
        self.epoch_ms = epoch_ms
        self.may_skip = may_skip
        self.groups: dict[int, GroupMerge] = {}
        self.late = 0

    def group(self, group: int) -> GroupMerge:
        found = self.groups.get(group)
        if found is None:
            found = self.groups[group] = GroupMerge(group, self.epoch_ms)
        return found

    def push(self, group: int, lane: int, ts: int | None, item: Any) -> None:
        self.group(group).push(lane, ts, item)

    def drop(self, groups: Iterable[int]) -> None:
        for group in groups:
            self.groups.pop(group, None)

    def bound(self) -> int:
        """The smallest epoch any group can still release (AFTER_ALL: nothing can come)."""
        return min((g.bound(self.may_skip) for g in self.groups.values()), default=AFTER_ALL)

    def take(self, limit: int) -> tuple[int | None, list[Released]]:
        """The next round: (epoch, up to `limit` events of that epoch in group order), or (None, [])
        when nothing may be released yet."""
        bounds = {group: merge.bound(self.may_skip) for group, merge in self.groups.items()}
        if not bounds:
            return None, []
        epoch = min(bounds.values())
        if epoch == AFTER_ALL:
            return None, []
        out: list[Released] = []
        for group in sorted(bounds):
            if bounds[group] != epoch:
                continue
            merge = self.groups[group]
            while len(out) < limit:
                lane = merge.next_lane(self.may_skip)
                if lane < 0:
                    break
                ts = merge.lanes[lane][0][0]
                if ts != INVALID_TS and merge.epoch_of(ts) != epoch:
                    break
                released = merge.release(lane)
                self.late += released.late
                out.append(released)
        return (epoch if out else None), out

    def buffered(self) -> int:
        return sum(g.buffered() for g in self.groups.values())

    def reset_waits(self) -> None:
        """Nothing waits for the empty lanes any more: their idle clocks start again when something does."""
        for merge in self.groups.values():
            merge.waited_for = [False] * LANES


def rounds(events: Iterable[dict[str, Any]], settings: Settings, partition_of: Callable[[str, int], int],
           in_time_order: bool = False) -> Iterator[tuple[int, list[Released]]]:
    """A recorded log (in the order it is produced) as a worker with every partition releases it:
    the in-process twin of the worker's input path. Items are the event dicts. `in_time_order`: the caller
    gives the events in time order, so each epoch is released once the next one begins (the same rounds as
    from the whole log: an epoch's rounds see none of a later epoch's events), and memory holds one epoch,
    not the log; an event of an epoch already released is a ValueError."""
    sequencer = Sequencer(settings.item_epoch_ms, always)
    pushing: int | None = None  # the epoch being pushed (in_time_order)
    for raw in events:
        if in_time_order:
            epoch = raw["ts"] // settings.item_epoch_ms
            if pushing is not None and epoch < pushing:
                raise ValueError(f"event {raw.get('event_id')!r} at {raw['ts']} comes after a later epoch's events: "
                                 "not in time order")
            if pushing is not None and epoch > pushing:
                yield from _released(sequencer, settings.batch_max)
            pushing = epoch
        sequencer.push(partition_of(raw["user_id"], settings.partitions), LANE_OF[raw["type"]], raw["ts"], raw)
    yield from _released(sequencer, settings.batch_max)


def _released(sequencer: Sequencer, limit: int) -> Iterator[tuple[int, list[Released]]]:
    """Every round the sequencer can release now."""
    while True:
        epoch, batch = sequencer.take(limit)
        if epoch is None:
            return
        yield epoch, batch
