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
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..config import EVENT_TYPES, Settings
from .events import Event
from .items import InMemoryItemIndex, SignalBuffer
from .profile import event_digest

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


def rounds(events: Iterable[dict[str, Any]], settings: Settings, partition_of: Callable[[str, int], int]
           ) -> Iterable[tuple[int, list[Released]]]:
    """A recorded log (in the order it is produced) as a worker with every partition releases it:
    the in-process twin of the worker's input path. Items are the event dicts."""
    sequencer = Sequencer(settings.item_epoch_ms, always)
    for raw in events:
        sequencer.push(partition_of(raw["user_id"], settings.partitions), LANE_OF[raw["type"]], raw["ts"], raw)
    while True:
        epoch, batch = sequencer.take(settings.batch_max)
        if epoch is None:
            return
        yield epoch, batch


#: Bytes of an event id's digest (`profile.event_digest`, 64 bits) in the item feed's duplicate check.
DIGEST_BYTES = 8


class _UserTrail:
    """What the item feed keeps of one user: recent distinct items (-> last seen ms) for co-visitation,
    the current session's last items in order for sequential rules, and digests of recent event ids.
    Compact, since every worker keeps one for every user of the whole input: a list, not a deque (a
    deque's first block alone is 512 bytes), and 8-byte digests packed in one bytes object instead of
    the event id strings."""

    __slots__ = ("seen", "tail", "digests", "last_ts", "session_id", "last_category", "hour", "hour_signals",
                 "hour_items")

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.tail: list[str] = []  # the session's last items (settings.rules_steps), oldest first
        self.digests = b""  # 8-byte digests of the last DIGESTS_PER_USER event ids, oldest first
        self.last_ts: int | None = None
        self.session_id: str | None = None
        self.last_category: str | None = None  # of the session's last item with one
        # Item signals this user gave in the event-time hour `hour`, in all and per item (the caps)
        self.hour = -1
        self.hour_signals = 0
        self.hour_items: dict[str, int] = {}

    def is_repeat(self, event_id: str, remembered: int) -> bool:
        """Was `event_id` among the user's last `remembered` ones? Remembers it if not."""
        digest = bytes.fromhex(event_digest(event_id))
        at = self.digests.find(digest)
        while at >= 0:
            if at % DIGEST_BYTES == 0:
                return True
            at = self.digests.find(digest, at + 1)
        self.digests = self.digests[-(remembered - 1) * DIGEST_BYTES:] + digest if remembered > 1 else digest
        return False

    def step(self, item_id: str, steps: int) -> None:
        """The session's next item; the tail keeps the last `steps`."""
        self.tail.append(item_id)
        if len(self.tail) > steps:
            del self.tail[0]

    def within_caps(self, event: Event, per_hour: int, per_item_hour: int) -> bool:
        """Whether `event` may add item signals under the per-user caps (0: no cap); counts it if so.
        A late event of an earlier hour counts in the current one."""
        hour = event.ts // 3_600_000
        if hour > self.hour:
            self.hour, self.hour_signals = hour, 0
            self.hour_items.clear()
        on_item = self.hour_items.get(event.item_id, 0)
        if (per_hour and self.hour_signals >= per_hour) or (per_item_hour and on_item >= per_item_hour):
            return False
        self.hour_signals += 1
        self.hour_items[event.item_id] = on_item + 1
        return True

    def new_session(self, event: Event, gap_ms: int, session_idle_ms: int) -> bool:
        """Does `event` start a new session (a new session_id, `gap_ms` of silence without one, or `session_idle_ms`
        of silence with the same one)? Records it."""
        if self.last_ts is None or event.session_id != self.session_id:
            new = True
        elif event.session_id is None:
            new = event.ts - self.last_ts >= gap_ms
        else:
            new = bool(session_idle_ms) and event.ts - self.last_ts >= session_idle_ms
        self.last_ts = event.ts if self.last_ts is None else max(self.last_ts, event.ts)
        self.session_id = event.session_id
        return new


class EvictionClock:
    """Fixed event times (multiples of `every_ms`) at which a periodic eviction pass runs, each once:
    `due(t)` gives the last such time at or before `t` if no pass ran there yet. A pass that runs at
    those times between epochs sees the same state in every process, however the process groups its
    epochs (a pass skipped over a span with no change in between drops the same)."""

    def __init__(self, every_ms: int = 3_600_000):
        self.every_ms = every_ms
        self.done: int | None = None

    def due(self, limit_ms: int) -> int | None:
        boundary = limit_ms // self.every_ms * self.every_ms
        if self.done is not None and boundary <= self.done:
            return None
        self.done = boundary
        return boundary


class ItemFeed:
    """The item state every worker computes from the whole input, by event time.

    `add` takes each valid event with its group and epoch, in its group's order (the epoch never goes
    back within a group), and buffers its item signals per (epoch, group); the co-visitation pairs and
    sequential rules come from the user's recent items and current session, which the feed keeps for
    every user (the same items a profile would name; the feed does not need the profile).
    `advance(k)` applies every buffered epoch up to k to the index, epoch by epoch and within an
    epoch in group order, so the floating-point sums are the same in every process. An event whose
    epoch is already applied (only when a worker went on without an idle lane) joins the next epoch
    and is counted in `late`."""

    #: Event ids remembered per user to drop redelivered input (a producer retry).
    DIGESTS_PER_USER = 16
    #: How often (event time) idle users' trails and, with `item_idle_ms`, idle items are dropped.
    EVICT_EVERY_MS = 3_600_000

    def __init__(self, settings: Settings, index: InMemoryItemIndex):
        self.settings = settings
        self.index = index
        self.pending: dict[int, dict[int, SignalBuffer]] = {}
        self.applied_through: int | None = None
        self.users: dict[str, _UserTrail] = {}
        self.late = 0
        self.duplicates = 0
        self.events = 0
        self.evicted_items = 0
        self.evicted_trails = 0
        self.capped = 0
        self.eviction = EvictionClock(self.EVICT_EVERY_MS)

    def add(self, event: Event, group: int, epoch: int) -> None:
        settings = self.settings
        if self.applied_through is not None and epoch <= self.applied_through:
            epoch = self.applied_through + 1
            self.late += 1
        # The most recently active user last: an eviction pass reads quiet trails from the front only
        user = self.users.pop(event.user_id, None)
        if user is None or self._expired(user, epoch):
            self.evicted_trails += user is not None
            user = _UserTrail()
        self.users[event.user_id] = user
        if user.is_repeat(event.event_id, self.DIGESTS_PER_USER):
            self.duplicates += 1
            return
        self.events += 1
        capped = not user.within_caps(event, settings.user_signals_per_hour, settings.user_item_signals_per_hour)
        self.capped += capped
        seen = user.seen
        since = event.ts - settings.covis_window_ms
        previous = []
        for item_id, ts in sorted(seen.items(), key=lambda kv: kv[1], reverse=True):
            if len(previous) == settings.covis_prev_items or ts < since:
                break
            if item_id != event.item_id:
                previous.append((item_id, event.ts - ts))
        if not capped:
            buffers = self.pending.setdefault(epoch, {})
            buffer = buffers.get(group)
            if buffer is None:
                buffer = buffers[group] = SignalBuffer.for_settings(settings)
            buffer.add_interaction(event.item_id, previous, settings.weights.of(event.type, event.stage), event.ts,
                                   event.category)
        if user.new_session(event, settings.session_gap_ms, settings.session_idle_ms):
            user.tail.clear()
            user.last_category = None
        if not capped:
            buffer.add_sequence(event.item_id, reversed(user.tail), event.ts)
            moved_on = not user.tail or user.tail[-1] != event.item_id
            if event.category is not None and user.last_category is not None and moved_on:
                buffer.add_category_step(user.last_category, event.category, event.ts)
        if event.category is not None:
            user.last_category = event.category
        user.step(event.item_id, settings.rules_steps)
        if seen.get(event.item_id, event.ts) <= event.ts:
            seen.pop(event.item_id, None)
            seen[event.item_id] = event.ts
        if len(seen) > settings.covis_prev_items + 1:
            oldest = min(seen, key=seen.__getitem__)
            del seen[oldest]

    def _expired(self, trail: _UserTrail, epoch: int) -> bool:
        """Would the eviction pass due by the start of `epoch` drop the trail (`_evict`'s rule)? Decided by event
        time alone, so it does not matter whether that pass has run: a worker's reader adds what it releases
        before its rounds advance the feed, `evaluate` after, and a late event must meet the same trail."""
        quiet_ms = self._quiet_ms(trail)
        if quiet_ms is None or trail.last_ts is None:
            return False
        boundary = epoch * self.settings.item_epoch_ms // self.EVICT_EVERY_MS * self.EVICT_EVERY_MS
        return trail.last_ts < boundary - quiet_ms

    def _quiet_ms(self, trail: _UserTrail) -> int | None:
        """After how long without an event the trail can no longer matter (None: never): the co-visitation
        window and the session's end, a gap or, for a logged session, STREAM_APP_SESSION_IDLE_MS."""
        settings = self.settings
        if trail.session_id is not None and not settings.session_idle_ms:
            return None
        ends = settings.session_gap_ms if trail.session_id is None else settings.session_idle_ms
        return max(settings.covis_window_ms, ends)

    def summary(self, top: int = 20) -> dict[str, Any]:
        """What the item state holds, for operators and checks: the events in it, the input duplicates
        dropped, the last epoch applied, and the most popular items with their shares (as ranked)."""
        popular = sorted(self.index.popular().items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return {"events": self.events, "duplicates": self.duplicates, "late": self.late,
                "applied_through": self.applied_through, "items": self.index.item_count(),
                "users_followed": len(self.users), "evicted_items": self.evicted_items,
                "evicted_trails": self.evicted_trails, "capped": self.capped,
                "popular": [[item, share] for item, share in popular]}

    def through_keeping(self, limit: int) -> int:
        """The last epoch to apply so that at most `limit` item entries stay buffered (BEFORE_ALL: none need be)."""
        kept = 0
        for epoch in sorted(self.pending, reverse=True):
            kept += sum(len(buffer.by_item) for buffer in self.pending[epoch].values())
            if kept > limit:
                return epoch
        return BEFORE_ALL

    def advance(self, through: int) -> None:
        """Make every epoch up to `through` visible."""
        if self.applied_through is not None and through <= self.applied_through:
            return
        epoch_ms = self.settings.item_epoch_ms
        due = sorted(e for e in self.pending if e <= through)
        evicted = False
        for epoch in due:
            evicted |= self._evict_until(epoch * epoch_ms)
            buffers = self.pending.pop(epoch)
            self.index.apply(message for group in sorted(buffers) for _, message in buffers[group].messages())
        evicted |= self._evict_until((through + 1) * epoch_ms)  # every applied epoch is before this time
        if due or evicted:  # the derived lists and caches change only with the store
            self.index.begin_batch()
        self.applied_through = through

    def _evict_until(self, limit_ms: int) -> bool:
        """The eviction pass due at or before `limit_ms`, if any (EvictionClock)."""
        boundary = self.eviction.due(limit_ms)
        return boundary is not None and self._evict(boundary)

    def _evict(self, now_ms: int) -> bool:
        """Drop what can no longer matter, by event time. A user's trail, once the co-visitation window
        and the session gap have passed since the user's last event (and the log names no session):
        the next event would find it empty anyway, so this changes no signal. With `item_idle_ms`, items
        idle that long."""
        settings = self.settings
        gone = []
        for user_id, trail in self.users.items():  # least recently active first
            quiet_ms = self._quiet_ms(trail)
            if quiet_ms is None or trail.last_ts is None:
                continue
            if trail.last_ts >= now_ms - max(settings.covis_window_ms, settings.session_gap_ms):
                break  # the rest were active later (a late event's trail left behind goes next pass)
            if trail.last_ts < now_ms - quiet_ms:
                gone.append(user_id)
        for user_id in gone:
            del self.users[user_id]
        self.evicted_trails += len(gone)
        if not settings.item_idle_ms:
            return False
        items = self.index.evict_idle(now_ms - settings.item_idle_ms)
        self.evicted_items += items
        return items > 0
