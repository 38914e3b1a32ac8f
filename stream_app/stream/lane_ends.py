"""Where each input lane ends on the broker, for the idle rule of the event-time order (ordered_input):
a group goes on without an empty lane only once that lane is read to its end.

An end counts only if it was asked after the group's latest record was read: an end asked earlier says
nothing about the records appended before that one (in a replay: its earlier events of the empty lane's
topic), nor about the lane's own records since. At full speed the worker's loop is busy for a batch's
time; with ends from before it, 857 of `stream-app bench --events 30000`'s events were released after
later ones of their partition, none since.

The ends are asked on a connection of their own: behind the reader's long-polling fetch a request waits
out `fetch_max_wait_ms` (26 ms against 0.3 ms, measured on the embedded broker).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from ..config import Settings
from ..core.ordering import GroupMerge
from ..errors import described
from ..kafka_security import consumer_kwargs

log = logging.getLogger("stream_app.ordering")

#: How often the ends of the lanes events wait for are asked at most.
ASK_EVERY_MS = 10
#: How long an ask may take: a broker away answers only after aiokafka's request timeout (40 s), which ended
#: the reader (the unknown end then waits its UNKNOWN_END_WAIT_S, as any).
ASK_TIMEOUT_S = 5.0
#: How often the starts of lanes fetched again are asked at most (a re-fetch is asked again every 5 s).
REFETCH_ASK_S = 5.0


def newest(arrived: list[float | None]) -> float:
    """When a group last received anything (monotonic; 0 before it ever did)."""
    return max((at for at in arrived if at is not None), default=0.0)


class LaneEnds:
    """(lane, group) -> the lane's end offset on the broker, and when it was asked (monotonic)."""

    def __init__(self, topics: tuple[str, ...]):
        self.topics = topics
        self.ends: dict[tuple[int, int], int] = {}
        self.asked: dict[tuple[int, int], float] = {}
        self.last_asked = 0.0
        self.log_start: dict[tuple[int, int], int] = {}  # (lane, group) -> its first offset on the broker, as asked
        self.starts_asked = 0.0
        self.probe: Any = None  # an AIOKafkaConsumer assigned nothing (its `end_offsets` only), once started

    async def start(self, settings: Settings) -> None:
        self.probe = AIOKafkaConsumer(bootstrap_servers=settings.require_kafka().split(","), group_id=None,
                                      enable_auto_commit=False, **consumer_kwargs(settings.kafka_security))
        await self.probe.start()

    async def stop(self) -> None:
        if self.probe is not None:
            await self.probe.stop()

    async def ask_starts(self, refetching: Iterable[tuple[int, int]]) -> None:
        """Where the lanes Faust's consumer is asked to fetch again start on the broker, at most every
        REFETCH_ASK_S: records the schedule waits for may be gone (retention, DeleteRecords) before Faust's
        consumer fetched them, and it then delivers from the log's start on, past them, for ever."""
        keys = list(refetching)
        now = time.monotonic()
        if not keys or self.probe is None or now - self.starts_asked < REFETCH_ASK_S:
            return
        self.starts_asked = now
        tps = {TopicPartition(self.topics[lane], group): (lane, group) for lane, group in keys}
        try:
            starts = await asyncio.wait_for(self.probe.beginning_offsets(list(tps)), ASK_TIMEOUT_S)
        except (KafkaError, asyncio.TimeoutError) as exc:
            log.warning("cannot ask where %d input partitions start (%s)", len(tps), described(exc))
            return
        for tp, start in starts.items():
            self.log_start[tps[tp]] = start

    async def read_past_markers(self, consumer: Any, groups: Iterable[GroupMerge],
                                next_offset: dict[tuple[int, int], int]) -> None:
        """Move the next offset of each lane events wait for to the reader's position where that is further:
        past the commit or abort markers of a transactional producer, which take offsets and hold no record. A
        lane ending in one was never "read to its end" by its last record's offset, so its group waited
        UNKNOWN_END_WAIT_S (30 s) instead of max_idle_ms every time the lane went quiet."""
        for group in groups:
            for lane, waited in enumerate(group.waited_for):
                offset = next_offset.get((lane, group.group)) if waited else None
                if offset is not None:
                    position = await consumer.position(TopicPartition(self.topics[lane], group.group))
                    next_offset[(lane, group.group)] = max(offset, position)

    def _fresh(self, lane: int, group: GroupMerge) -> int | None:
        """The lane's end if it was asked after the group's latest record was read, else None."""
        key = (lane, group.group)
        end = self.ends.get(key)
        return end if end is not None and self.asked[key] > newest(group.arrived) else None

    def reached(self, lane: int, group: GroupMerge, next_offset: int) -> bool:
        """Read to its end, as asked after the group's latest record was read."""
        end = self._fresh(lane, group)
        return end is not None and next_offset >= end

    def _wanted(self, group: GroupMerge, lane: int, next_offset: int) -> bool:
        """Waited for, and no fresh end known, or one reached (it may have grown since)."""
        end = self._fresh(lane, group) if group.waited_for[lane] else None
        return group.waited_for[lane] and (end is None or next_offset >= end)

    async def refresh(self, groups: Iterable[GroupMerge], next_offset: dict[tuple[int, int], int],
                      every_s: float) -> None:
        """Ask the ends of the lanes events wait for, at most every `every_s`."""
        wanted = [(lane, g.group) for g in groups for lane in range(len(self.topics))
                  if self._wanted(g, lane, next_offset.get((lane, g.group), 0))]
        now = time.monotonic()
        if not wanted or now - self.last_asked < every_s or self.probe is None:
            return
        self.last_asked = now
        tps = {TopicPartition(self.topics[lane], group): (lane, group) for lane, group in wanted}
        try:  # the broker's answer, within the ask interval's order of time: the reader must go on reading
            ends = await asyncio.wait_for(self.probe.end_offsets(list(tps)), ASK_TIMEOUT_S)
        except (KafkaError, asyncio.TimeoutError) as exc:
            log.warning("cannot ask the ends of %d input partitions (%s): their ends stay unknown", len(tps),
                        described(exc))
            return
        for tp, end in ends.items():
            self.ends[tps[tp]] = end
            self.asked[tps[tp]] = now


def pause_full_lanes(consumer: Any, groups: Iterable[GroupMerge], topics: tuple[str, ...],
                     full_lanes: set[TopicPartition], paused_groups: set[int], limit: int) -> None:
    """A lane far ahead of its group's others (`limit` records buffered) waits in the broker: it has data, so the
    idle rule never skips it; read again below half (unless its whole group is paused)."""
    for merge in groups:
        for lane, queue in enumerate(merge.lanes):
            tp = TopicPartition(topics[lane], merge.group)
            if len(queue) >= limit and tp not in full_lanes:
                consumer.pause(tp)
                full_lanes.add(tp)
            elif len(queue) < limit // 2 and tp in full_lanes:
                full_lanes.discard(tp)
                if merge.group not in paused_groups:
                    consumer.resume(tp)
