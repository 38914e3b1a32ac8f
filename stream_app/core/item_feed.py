"""The item state every worker builds from the whole input, by event time (`ItemFeed`), and the event-time clock
of idle-user eviction. Pure: no Faust or Kafka.

Events come in the order `ordering.Sequencer` releases them, each with its epoch: every event of epoch k is
recommended from the item state after all events of epochs < k of every group and none of epoch k or later.
"""

from __future__ import annotations

import heapq
from typing import Any

from ..config import Settings
from .events import Event
from .items import InMemoryItemIndex, SignalBuffer
from .ordering import BEFORE_ALL
from .profile import event_digest

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
        self.pending_epochs: list[int] = []  # pending's keys, a heap: a backlog read ahead holds thousands of epochs
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
            buffers = self.pending.get(epoch)
            if buffers is None:
                buffers = self.pending[epoch] = {}
                heapq.heappush(self.pending_epochs, epoch)
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
        due = []
        while self.pending_epochs and self.pending_epochs[0] <= through:
            due.append(heapq.heappop(self.pending_epochs))
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
