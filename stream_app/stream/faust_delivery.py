"""What Faust's consumer delivers of a worker's own input lanes, beside the reader's copy (ordered_input.py).

Faust's consumer group owns the assignment and the seek to the group's commit; its deliveries of own lanes wait
here for their turn in the schedule (`deliver`). It fetches only the lanes whose records the reader has no copy
of (`faust_lanes`), and can skip records around a rebalance (a fetch begun before the seek moves past what the
seek asked to read again): a record skipped, or not delivered within UNDELIVERED_WAIT_S, is fetched again
(`take_refetches`: the worker seeks Faust's consumer back).
"""

from __future__ import annotations

import collections
import time
from typing import Any, Callable, Mapping

from ..contracts import Rejection
from ..core.events import Event
from ..core.ordering import BEFORE_ALL, Released
from .ready import Ready

#: A re-fetch asked of Faust's consumer is asked again if it brought nothing for this long.
REFETCH_AGAIN_S = 5.0
#: An own event in the schedule that Faust has not delivered for this long is fetched again (a skipped
#: record at the end of what was produced has no later delivery to reveal the skip).
UNDELIVERED_WAIT_S = 10.0


class FaustDelivery:
    """The delivery side of `OrderedInput` (which holds the state these methods read)."""

    LANE_BUFFER_MAX: int
    topics: tuple[str, ...]
    lane_of_topic: Mapping[str, int]
    owned: set[int]
    start: dict[tuple[int, int], int]
    handed: dict[tuple[int, int], int]
    passed: dict[tuple[int, int], int]
    delivered: dict[tuple[int, int], collections.deque[Any]]
    faust_delivered: dict[tuple[int, int], int]
    refetch_wanted: dict[tuple[int, int], tuple[int, float]]
    undelivered_since: dict[tuple[int, int], tuple[int, float]]
    without_copy: collections.Counter[tuple[int, int]]
    duplicates: int
    refetches: int
    unscheduled: int
    forget: Callable[[Any], None]
    _check: Callable[[Any], Event | Rejection]

    def deliver(self, event: Any) -> bool:
        """An event of one of the worker's own partitions, from Faust's consumer (in offset order). True when its
        lane now holds LANE_BUFFER_MAX deliveries: the caller stops Faust fetching it (`faust_lanes`) at once, since
        no batch may run for minutes (before processing starts, or while one retries an outage)."""
        message = event.message
        key = (self.lane_of_topic[message.topic], message.partition)
        queue = self.delivered[key]
        handed = self.handed.get(key, -1)
        wanted = self.refetch_wanted.get(key)
        if wanted is not None and max(handed, self.start.get(key, 0) - 1) < message.offset <= wanted[0]:
            # what the seek back brings: the records queued since were fetched before the seek and come again after
            # this one (held, they made it look like a copy already delivered, and the lane was asked for again).
            # Not a record before the lane's start (an earlier owner's, a straggler of before a rebalance)
            for stale in queue:
                self.forget(stale.message)
            queue.clear()
            del self.refetch_wanted[key]
        last = queue[-1].message.offset if queue else handed
        seen = self.faust_delivered.get(key, -1)
        self.faust_delivered[key] = max(seen, message.offset)
        if message.offset <= last:  # applied from the reader's copy, or a copy Faust fetched again
            self.duplicates += message.offset <= seen
            self.forget(message)
            return False
        queue.append(event)
        return len(queue) >= self.LANE_BUFFER_MAX

    def faust_lanes(self) -> set[tuple[str, int]]:
        """(topic, partition) of the own lanes whose records Faust's consumer must deliver: those with entries the
        reader has no copy of, one to fetch again, or no known start yet; not while LANE_BUFFER_MAX wait delivered."""
        unstarted = {(lane, group) for group in self.owned for lane in range(len(self.topics))} - set(self.start)
        keys = {key for key, n in self.without_copy.items() if n} | set(self.refetch_wanted) | unstarted
        full = {key for key, queue in self.delivered.items() if len(queue) >= self.LANE_BUFFER_MAX} - set(self.refetch_wanted)
        return {(self.topics[lane], group) for lane, group in (keys | set(self._passed_behind())) - full}

    def _passed_behind(self) -> dict[tuple[int, int], int]:
        """Own lane -> the next offset wanted, where the schedule passed records after the lane's start not
        handed out since (applied before a rebalance, or trimmed from another's schedule): only Faust's consumer
        brings them again, and the lane's commit cannot pass them. Whatever offsets Faust brings are taken."""
        wanted = {key: max(start, self.handed.get(key, -1) + 1) for key, start in self.start.items()}
        return {key: offset for key, offset in wanted.items() if offset <= self.passed.get(key, -1)}

    def take_refetches(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) for each lane whose consumer must seek back (once per ask)."""
        now = time.monotonic()
        due = []
        for (lane, group), (offset, asked) in list(self.refetch_wanted.items()):
            if self.handed.get((lane, group), -1) >= offset:  # moot: the lane went on past it
                del self.refetch_wanted[(lane, group)]
            elif asked == 0.0 or now - asked >= REFETCH_AGAIN_S:
                self.refetch_wanted[(lane, group)] = (offset, now)
                due.append((self.topics[lane], group, offset))
        return due

    def _undelivered(self, lane: int, group: int, offset: int) -> None:
        key = (lane, group)
        now = time.monotonic()
        waiting = self.undelivered_since.get(key)
        if waiting is None or waiting[0] != offset:
            self.undelivered_since[key] = (offset, now)
        elif now - waiting[1] >= UNDELIVERED_WAIT_S:
            del self.undelivered_since[key]
            self._refetch(lane, group, offset)

    def _refetch(self, lane: int, group: int, offset: int) -> None:
        """Faust delivered past `offset`, which this worker owns and has not applied: let go of what it
        delivered of the lane and ask for the lane again from `offset`."""
        key = (lane, group)
        for event in self.delivered[key]:
            self.forget(event.message)
        self.delivered[key].clear()
        if key not in self.refetch_wanted:
            self.refetches += 1
            self.refetch_wanted[key] = (offset, 0.0)

    def _passed_again(self, limit: int) -> list[Ready]:
        """Delivered events the schedule passed: handed out, then the partition lost before its next commit and
        got back at it. Applying them again changes nothing (digests drop them); holding them would wedge."""
        out: list[Ready] = []
        for (lane, group), delivered in self.delivered.items():
            passed = self.passed.get((lane, group), -1)
            while delivered and delivered[0].message.offset <= passed and len(out) < limit:
                event = delivered.popleft()
                self.unscheduled += 1
                self.handed[(lane, group)] = event.message.offset
                out.append(Ready(Released(group, lane, BEFORE_ALL, True, None), event, self._check(event)))
        return out
