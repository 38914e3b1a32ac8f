"""Session-based baselines after Ludewig & Jannach, "Evaluation of session-based recommendation
algorithms" (User Modeling and User-Adapted Interaction 28, 2018), for the in-process evaluation:
each class follows `stream_app.evaluate.models.Model` (`name`, `begin_batch`, `learn`, `end_batch`).

Fairness, as for the stream-app model's item state: everything learned across users (co-visitation
counts, the pool of past sessions, sequential rules) changes only in `end_batch()`, so a list never
uses another user's events of the running batch (the event's own contribution to the shared state
waits for the boundary too). The event's own user's history (current session, items seen) is
updated at once.

Sessions (`Sessions`): `event.session_id` when the event has one (a different id starts a new session), else a
new session starts when `session_gap_ms` (default 30 minutes) or more passed since the user's
previous event. The pool of past sessions holds every session, other users' running ones included,
with the items seen up to the last batch boundary; a user's own running session is never its own
neighbour.

Lists hold at most `k` item ids, best first; equal scores are ranked by item id so that lists are
deterministic. Two options of every baseline, as `evaluate` runs them (the paper's algorithms have neither):
`then_popular` (a callable giving popular items, best first) fills a list shorter than `k` with them, as the hybrid
fills its own (`evaluate` gives the hybrid's own popular list, of the same item epoch; appending never moves an item
up, so it can only raise Recall and MRR);
`session_items_out` leaves out the items of the user's running session (a basket's lines are not bought twice), and
`seen_items_out` every item the user had (a log where users never have an item twice: the hybrid's ranker learns that
from the stream, and a baseline tuned to such a log would leave them out); `reminders` (n > 0) puts the running
session's last n distinct items first, most recent first, then the rest of the list: the reminders of Lerche, Jannach
and Ludewig ("On the value of reminders within e-commerce recommendations", UMAP 2016), an option of the session-rec
framework's kNN methods, for logs where users come back to what they just had (the hybrid has those items among its
candidates). Module is pure: stdlib, numpy and `Event` only. The session-based kNN baselines
(SKNN, V-SKNN) are in `session_knn`, on the `Session` and `SessionBaseline` defined here.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Collection, Iterable, Iterator

from ..core.events import Event

SESSION_GAP_MS = 30 * 60 * 1000


def _ranked(scores: dict[str, float], k: int) -> list[tuple[float, str]]:
    """The k best (-score, item) of `scores`, ties by item id."""
    if k <= 0:
        return []
    if len(scores) > k:
        cut = sorted(scores.values(), reverse=True)[k - 1]
        ranked = [(-score, item) for item, score in scores.items() if score >= cut]
    else:
        ranked = [(-score, item) for item, score in scores.items()]
    ranked.sort()
    return ranked[:k]


def _best(scores: dict[str, float], k: int) -> list[str]:
    """The k best items of `scores`, ties by item id."""
    return [item for _, item in _ranked(scores, k)]


def then_popular(listed: list[str], popular: Iterable[str], k: int, excluded: Collection[str] = ()) -> list[str]:
    """`listed`, then the items of `popular` (best first) neither in it nor excluded, up to k in all."""
    had = set(listed)
    fill = itertools.islice((item for item in popular if item not in had and item not in excluded), k - len(listed))
    return listed + list(fill)


def _reminded(listed: list[str], session_items: list[str], count: int, k: int) -> list[str]:
    """The session's last `count` distinct items (most recent first), then `listed` without them, k in all."""
    first: dict[str, None] = {}
    for item in reversed(session_items):
        first.setdefault(item, None)
        if len(first) == count:
            break
    return [*first, *(item for item in listed if item not in first)][:k]


def _without(scores: dict[str, float], exclude: Iterable[str]) -> dict[str, float]:
    """`scores` (changed in place) without the items of `exclude`."""
    for item in exclude:
        scores.pop(item, None)
    return scores


class Session:
    __slots__ = ("sid", "key", "last_ts", "items")

    def __init__(self, sid: int, key: str | None, ts: int):
        self.sid = sid  # the session's number in the shared pool
        self.key = key  # its session_id, if the events carry one
        self.last_ts = ts
        self.items: list[str] = []  # item ids in event order, repeats included


class Sessions:
    """Each user's running session: `event.session_id` when the event has one (a different id starts a new one),
    a gap of `session_gap_ms` or more since the user's previous event too (within one session_id only with
    `gap_splits`)."""

    def __init__(self, session_gap_ms: int = SESSION_GAP_MS, gap_splits: bool = True):
        self.session_gap_ms, self.gap_splits = session_gap_ms, gap_splits
        self._current: dict[str, Session] = {}
        self._sids: Iterator[int] = itertools.count()

    def open(self, event: Event) -> Session:
        """The user's running session, `event`'s item appended (a new session if `event` starts one)."""
        session = self._current.get(event.user_id)
        # a new session_id or a gap: OTTO's "session" is a shopper's four weeks, with many gaps inside
        if (session is None or event.session_id != session.key
                or ((self.gap_splits or event.session_id is None)
                    and event.ts - session.last_ts >= self.session_gap_ms)):
            session = self._current[event.user_id] = Session(next(self._sids), event.session_id, event.ts)
        session.last_ts = event.ts
        session.items.append(event.item_id)
        return session


class SessionBaseline:
    """Sessions of each user (immediate) and the batch's (session, item) pairs, folded into the
    shared state by `_fold` at the batch boundary."""

    label = "session baseline"
    #: whether a gap of session_gap_ms starts a session within one session_id too (it always does without one)
    gap_splits_sessions = True

    def __init__(self, k: int = 20, session_gap_ms: int = SESSION_GAP_MS,
                 then_popular: Callable[[], Iterable[str]] | None = None, session_items_out: bool = False,
                 seen_items_out: bool = False, reminders: int = 0):
        self.k = k
        self.reminders = reminders
        self.session_gap_ms = session_gap_ms
        self.then_popular = then_popular
        self.session_items_out = session_items_out
        self.seen_items_out = seen_items_out
        self._had: dict[str, set[str]] = {}  # user -> the items the user had (kept with seen_items_out only)
        self._sessions = Sessions(session_gap_ms, self.gap_splits_sessions)
        self._pending: list[tuple[int, str]] = []  # (session number, item) of this batch, in event order

    @property
    def name(self) -> str:
        return (self.label + (", session's items out" if self.session_items_out else "")
                + (", user's seen items out" if self.seen_items_out else "")
                + (f", session's last {self.reminders} first" if self.reminders else "")
                + (", then popular" if self.then_popular is not None else ""))

    def begin_batch(self, events: list[Event], epoch: int | None = None) -> None:
        pass

    def _running(self, event: Event) -> Session:
        """The user's running session with `event` in it, the pair kept for the batch's fold."""
        session = self._sessions.open(event)
        self._pending.append((session.sid, event.item_id))
        return session

    def learn(self, event: Event) -> list[str]:
        session = self._running(event)
        if self.seen_items_out:
            self._had.setdefault(event.user_id, set()).add(event.item_id)
        listed = self._recommend(event, session)
        if self.reminders:
            listed = _reminded(listed, session.items, self.reminders, self.k)
        if self.then_popular is not None and len(listed) < self.k:
            listed = then_popular(listed, self.then_popular(), self.k, self._excluded(event, session))
        return listed

    def end_batch(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            self._fold(pending)

    def _excluded(self, event: Event, session: Session) -> Collection[str]:
        """The items the list leaves out (the popular ones that fill it too)."""
        if self.seen_items_out:
            return self._had[event.user_id]
        return set(session.items) if self.session_items_out else ()

    def _recommend(self, event: Event, session: Session) -> list[str]:
        raise NotImplementedError

    def _fold(self, pending: list[tuple[int, str]]) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------------- co-visitation

class _CoVisitation(SessionBaseline):
    """Shared: covis[a][b] = the number of past sessions in which both a and b occur (within
    `window` distinct items of each other if `window` is set). Own: the items each user has had,
    most recent last."""

    def __init__(self, k: int = 20, recent: int = 3, window: int | None = None, per_item: int = 200,
                 session_gap_ms: int = SESSION_GAP_MS, **options: Any):
        super().__init__(k, session_gap_ms, **options)
        self.recent = recent
        self.window = window
        self.per_item = per_item
        self._covis: dict[str, dict[str, int]] = {}
        self._distinct: dict[int, tuple[list[str], set[str]]] = {}  # pool session -> its distinct items
        self._top: dict[str, dict[str, int]] = {}  # per item: its best co-visited items (cache)
        self._seen: dict[str, dict[str, None]] = {}  # user -> items, least recent first

    def _own(self, event: Event) -> list[str]:
        """Record the user's item; return the user's last `recent` distinct items, most recent first."""
        seen = self._seen.get(event.user_id)
        if seen is None:
            seen = self._seen[event.user_id] = {}
        seen.pop(event.item_id, None)
        seen[event.item_id] = None
        return list(itertools.islice(reversed(seen), self.recent))

    def _top_of(self, item: str) -> dict[str, int]:
        top = self._top.get(item)
        if top is None:
            row = self._covis.get(item, {})
            if len(row) > self.per_item:
                row = {other: -count for count, other in _ranked(row, self.per_item)}
            top = self._top[item] = row
        return top

    def _covisited(self, items: list[str]) -> dict[str, float]:
        """Summed co-visitation counts with `items` (a new dict)."""
        if not items:
            return {}
        scores = dict(self._top_of(items[0]))
        for item in items[1:]:
            for other, count in self._top_of(item).items():
                scores[other] = scores.get(other, 0) + count
        return scores

    def _fold(self, pending: list[tuple[int, str]]) -> None:
        covis, window = self._covis, self.window
        changed: set[str] = set()
        for sid, item in pending:
            distinct = self._distinct.get(sid)
            if distinct is None:
                distinct = self._distinct[sid] = ([], set())
            order, members = distinct
            if item in members:
                continue
            row = covis.get(item)
            if row is None:
                row = covis[item] = {}
            for other in (order if window is None else order[-window:]):
                row[other] = row.get(other, 0) + 1
                other_row = covis[other]
                other_row[item] = other_row.get(item, 0) + 1
                changed.add(other)
            changed.add(item)
            order.append(item)
            members.add(item)
        for item in changed:
            self._top.pop(item, None)


class CoVisitationUnseen(_CoVisitation):
    """Co-visitation, unseen items only: the items that co-occur most with the user's `recent`
    (default 3) most recent distinct items, scored by the sum over those items of co-visitation
    counts (the number of past sessions containing both; with `window` set, only pairs at most
    `window` distinct items apart in a session count, which bounds the cost of very long sessions),
    excluding every item the user has already interacted with. Each recent item contributes its
    `per_item` (default 200) most co-visited items. Not one of the paper's algorithms: a simple
    item-to-item baseline in the spirit of its association-rule family (AR: co-occurrence in a
    session, no order)."""

    label = "co-visitation, unseen"

    def _excluded(self, event: Event, session: Session) -> Collection[str]:
        return self._seen[event.user_id]

    def _recommend(self, event: Event, session: Session) -> list[str]:
        recent = self._own(event)
        scores = self._covisited(recent)
        seen = self._seen[event.user_id]
        if len(seen) < len(scores):
            scores = _without(scores, seen)
        else:
            scores = {item: score for item, score in scores.items() if item not in seen}
        return _best(scores, self.k)


class RecentThenCoVisitation(_CoVisitation):
    """The user's last `recent` (default 5) distinct items, most recent first, then the items most
    co-visited with them (as in `CoVisitationUnseen`: summed session co-occurrence counts), without
    repeating the first part. Not one of the paper's algorithms: a repeat-aware baseline."""

    label = "recent, then co-visitation"

    def __init__(self, k: int = 20, recent: int = 5, window: int | None = None, per_item: int = 200,
                 session_gap_ms: int = SESSION_GAP_MS, **options: Any):
        super().__init__(k, recent, window, per_item, session_gap_ms, **options)

    def _recommend(self, event: Event, session: Session) -> list[str]:
        recent = self._own(event)[: self.k]
        return recent + _best(_without(self._covisited(recent), recent), self.k - len(recent))


# ------------------------------------------------------------------------------- sequential rules

class SequentialRules(SessionBaseline):
    """Sequential rules (SR in the paper): a rule a -> b for every b that follows a within `steps`
    (default 10) positions in a session (events in order, repeats included, so a repeated item
    makes a rule a -> a), weighted 1 / gap, the paper's decreasing weight of the distance; a
    rule's weight is summed over all past sessions. The list: the rules of the current session's
    last item, by weight. A log's session_id is one session, gaps and all, as the hybrid's own rules read
    it (item_feed.ItemFeed); without one, a gap of session_gap_ms starts a session."""

    gap_splits_sessions = False

    def __init__(self, k: int = 20, steps: int = 10, session_gap_ms: int = SESSION_GAP_MS, **options: Any):
        super().__init__(k, session_gap_ms, **options)
        self.steps = steps
        self.label = f"sequential rules (steps {steps})"
        self._rules: dict[str, dict[str, float]] = {}
        self._tails: dict[int, list[str]] = {}  # pool session -> its last `steps` items
        self._top: dict[str, list[str]] = {}  # cache of each item's list

    def _fold(self, pending: list[tuple[int, str]]) -> None:
        rules, steps = self._rules, self.steps
        for sid, item in pending:
            tail = self._tails.get(sid)
            if tail is None:
                tail = self._tails[sid] = []
            for gap, before in enumerate(reversed(tail), 1):
                row = rules.get(before)
                if row is None:
                    row = rules[before] = {}
                row[item] = row.get(item, 0.0) + 1.0 / gap
                self._top.pop(before, None)
            tail.append(item)
            if len(tail) > steps:
                del tail[0]

    def _recommend(self, event: Event, session: Session) -> list[str]:
        last = session.items[-1]
        if self.session_items_out or self.seen_items_out:
            return _best(_without(dict(self._rules.get(last, {})), self._excluded(event, session)), self.k)
        top = self._top.get(last)
        if top is None:
            top = self._top[last] = _best(self._rules.get(last, {}), self.k)
        return top
