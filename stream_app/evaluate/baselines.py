"""Session-based baselines after Ludewig & Jannach, "Evaluation of session-based recommendation
algorithms" (User Modeling and User-Adapted Interaction 28, 2018), for the in-process evaluation:
each class follows `stream_app.evaluate.prequential.Model` (`name`, `begin_batch`, `learn`, `end_batch`).

Fairness, as for the stream-app model's item state: everything learned across users (co-visitation
counts, the pool of past sessions, sequential rules) changes only in `end_batch()`, so a list never
uses another user's events of the running batch (the event's own contribution to the shared state
waits for the boundary too). The event's own user's history (current session, items seen) is
updated at once.

Sessions: `event.session_id` when the event has one (a different id starts a new session), else a
new session starts when `session_gap_ms` (default 30 minutes) or more passed since the user's
previous event. The pool of past sessions holds every session, other users' running ones included,
with the items seen up to the last batch boundary; a user's own running session is never its own
neighbour.

Lists hold at most `k` item ids, best first; equal scores are ranked by item id so that lists are
deterministic. Module is pure: stdlib, numpy and `Event` only.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Iterable, Iterator

import numpy as np

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


def _without(scores: dict[str, float], exclude: Iterable[str]) -> dict[str, float]:
    """`scores` (changed in place) without the items of `exclude`."""
    for item in exclude:
        scores.pop(item, None)
    return scores


class _Session:
    __slots__ = ("sid", "key", "last_ts", "items")

    def __init__(self, sid: int, key: str | None, ts: int):
        self.sid = sid  # the session's number in the shared pool
        self.key = key  # its session_id, if the events carry one
        self.last_ts = ts
        self.items: list[str] = []  # item ids in event order, repeats included


class _SessionBaseline:
    """Sessions of each user (immediate) and the batch's (session, item) pairs, folded into the
    shared state by `_fold` at the batch boundary."""

    name = "session baseline"

    def __init__(self, k: int = 20, session_gap_ms: int = SESSION_GAP_MS):
        self.k = k
        self.session_gap_ms = session_gap_ms
        self._current: dict[str, _Session] = {}
        self._pending: list[tuple[int, str]] = []  # (session number, item) of this batch, in event order
        self._sids: Iterator[int] = itertools.count()

    def begin_batch(self, events: list[Event], epoch: int | None = None) -> None:
        pass

    def _session(self, event: Event) -> _Session:
        session = self._current.get(event.user_id)
        if (session is None or event.session_id != session.key
                or (event.session_id is None and event.ts - session.last_ts >= self.session_gap_ms)):
            session = self._current[event.user_id] = _Session(next(self._sids), event.session_id, event.ts)
        session.last_ts = event.ts
        session.items.append(event.item_id)
        return session

    def learn(self, event: Event) -> list[str]:
        session = self._session(event)
        self._pending.append((session.sid, event.item_id))
        return self._recommend(event, session)

    def end_batch(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            self._fold(pending)

    def _recommend(self, event: Event, session: _Session) -> list[str]:
        raise NotImplementedError

    def _fold(self, pending: list[tuple[int, str]]) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------------- co-visitation

class _CoVisitation(_SessionBaseline):
    """Shared: covis[a][b] = the number of past sessions in which both a and b occur (within
    `window` distinct items of each other if `window` is set). Own: the items each user has had,
    most recent last."""

    def __init__(self, k: int = 20, recent: int = 3, window: int | None = None, per_item: int = 200,
                 session_gap_ms: int = SESSION_GAP_MS):
        super().__init__(k, session_gap_ms)
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

    def __init__(self, k: int = 20, recent: int = 3, window: int | None = None, per_item: int = 200,
                 session_gap_ms: int = SESSION_GAP_MS):
        super().__init__(k, recent, window, per_item, session_gap_ms)
        self.name = "co-visitation, unseen"

    def _recommend(self, event: Event, session: _Session) -> list[str]:
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

    def __init__(self, k: int = 20, recent: int = 5, window: int | None = None, per_item: int = 200,
                 session_gap_ms: int = SESSION_GAP_MS):
        super().__init__(k, recent, window, per_item, session_gap_ms)
        self.name = "recent, then co-visitation"

    def _recommend(self, event: Event, session: _Session) -> list[str]:
        recent = self._own(event)[: self.k]
        return recent + _best(_without(self._covisited(recent), recent), self.k - len(recent))


# ------------------------------------------------------------------------------ session-based kNN

class _Shared:
    """A user's running session against the pool of one batch: the last position of each of its
    items, and per pool session sharing an item with it the sum of the shared items' weights."""

    __slots__ = ("sid", "positions", "sums")

    def __init__(self, sid: int):
        self.sid = sid
        self.positions: dict[str, int] = {}
        self.sums: dict[int, int] = {}


class _SessionPool(_SessionBaseline):
    """Shared: the items of every past session, the order in which sessions were last updated (a
    stamp per batch boundary, in event order) and, per item, the `sample_size` + 1 most recently
    updated sessions containing it (enough to find the `sample_size` most recent sessions sharing
    any item with a current session), and per item the number of sessions containing it.

    The overlap of a running session with the pool is kept per user within a batch and updated by
    each event (the pool does not change within a batch): `positional` False counts shared items,
    True sums their last positions in the running session. Item scores are summed in numpy over
    item numbers; each pool session also keeps its items as an array of those numbers."""

    positional = False

    def __init__(self, k: int = 20, neighbours: int = 100, sample_size: int = 500,
                 session_gap_ms: int = SESSION_GAP_MS):
        super().__init__(k, session_gap_ms)
        self.neighbours = neighbours
        self.sample_size = sample_size
        self._pool: dict[int, set[str]] = {}
        self._stamp: dict[int, int] = {}
        self._index: dict[str, dict[int, None]] = {}  # item -> sessions, least recent first
        self._sessions_with: dict[str, int] = {}
        self._stamps: Iterator[int] = itertools.count()
        self._shared: dict[str, _Shared] = {}  # user -> overlap of the running session, this batch
        self._numbers: dict[str, int] = {}  # item -> its number
        self._items: list[str] = []  # number -> item
        self._arrays: dict[int, np.ndarray] = {}  # pool session -> its item numbers

    def _fold(self, pending: list[tuple[int, str]]) -> None:
        self._shared.clear()
        touched: dict[int, None] = {}  # sessions in the order of their last event in the batch
        for sid, item in pending:
            items = self._pool.get(sid)
            if items is None:
                items = self._pool[sid] = set()
            if item not in items:
                items.add(item)
                self._sessions_with[item] = self._sessions_with.get(item, 0) + 1
                if item not in self._numbers:
                    self._numbers[item] = len(self._items)
                    self._items.append(item)
            touched.pop(sid, None)
            touched[sid] = None
        cap, numbers = self.sample_size + 1, self._numbers  # + 1: a user's own session may be one of them
        for sid in touched:
            self._stamp[sid] = next(self._stamps)
            self._arrays[sid] = np.fromiter(map(numbers.__getitem__, self._pool[sid]), dtype=np.int64)
            for item in self._pool[sid]:
                sessions = self._index.get(item)
                if sessions is None:
                    sessions = self._index[item] = {}
                sessions.pop(sid, None)
                sessions[sid] = None
                if len(sessions) > cap:
                    del sessions[next(iter(sessions))]

    def _overlap(self, user_id: str, session: _Session) -> tuple[dict[str, int], dict[int, int]]:
        """The running session's items with their last positions (1 = first), and per pool session
        sharing an item with it (its own excluded) the count of shared items or, if `positional`,
        the sum of their positions."""
        index = self._index
        shared = self._shared.get(user_id)
        if shared is None or shared.sid != session.sid:
            shared = self._shared[user_id] = _Shared(session.sid)
            positions = shared.positions
            for position, item in enumerate(session.items, 1):
                positions[item] = position
            sums = shared.sums
            for item, position in positions.items():
                weight = position if self.positional else 1
                for sid in index.get(item, ()):
                    sums[sid] = sums.get(sid, 0) + weight
            sums.pop(session.sid, None)
            return positions, sums
        item, n = session.items[-1], len(session.items)
        before = shared.positions.get(item)
        shared.positions[item] = n
        delta = (n - (before or 0)) if self.positional else (0 if before else 1)
        if delta:
            sums = shared.sums
            for sid in index.get(item, ()):
                if sid != session.sid:
                    sums[sid] = sums.get(sid, 0) + delta
        return shared.positions, shared.sums

    def _sample(self, sums: dict[int, int]) -> Iterable[int]:
        """The `sample_size` most recently updated of the sessions in `sums`."""
        if len(sums) <= self.sample_size:
            return sums
        stamp = self._stamp
        cut = sorted(map(stamp.__getitem__, sums))[-self.sample_size]
        return [sid for sid in sums if stamp[sid] >= cut]

    def _scores(self, similarities: list[tuple[float, int]]) -> np.ndarray | None:
        """Per item number, the summed similarity of the `neighbours` most similar sessions
        containing it (ties between sessions: the more recent first); None without neighbours."""
        if not similarities:
            return None
        stamp = self._stamp
        if len(similarities) > self.neighbours:
            similarities = heapq.nlargest(self.neighbours, similarities,
                                          key=lambda pair: (pair[0], stamp[pair[1]]))
        arrays = [self._arrays[sid] for _, sid in similarities]
        weights = np.repeat(np.array([sim for sim, _ in similarities]), [len(a) for a in arrays])
        return np.bincount(np.concatenate(arrays), weights=weights, minlength=len(self._items))

    def _top_items(self, scores: np.ndarray | None) -> list[str]:
        """The k items of highest positive score, ties by item id."""
        if scores is None:
            return []
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > self.k:
            values = scores[candidates]
            at = len(values) - self.k
            candidates = candidates[values >= np.partition(values, at)[at]]
        items = self._items
        ranked = sorted(zip((-scores[candidates]).tolist(), [items[i] for i in candidates]))
        return [item for _, item in ranked[: self.k]]


class SKNN(_SessionPool):
    """Session-based kNN (SKNN in the paper): the current session as a binary item vector; among
    the `sample_size` most recent past sessions sharing at least one item with it, the
    `neighbours` most similar by cosine (|A & B| / sqrt(|A| |B|)); an item's score is the sum of
    the similarities of the neighbour sessions containing it. Items of the current session are
    not excluded. The paper tunes the number of neighbours and the sample size per data set; the
    defaults here are 100 neighbours and a sample of 500 sessions."""

    def __init__(self, k: int = 20, neighbours: int = 100, sample_size: int = 500,
                 session_gap_ms: int = SESSION_GAP_MS):
        super().__init__(k, neighbours, sample_size, session_gap_ms)
        self.name = f"SKNN (k={neighbours}, sample {sample_size})"

    def _recommend(self, event: Event, session: _Session) -> list[str]:
        positions, shared = self._overlap(event.user_id, session)
        pool, size = self._pool, len(positions)
        similarities = [(shared[sid] / math.sqrt(size * len(pool[sid])), sid) for sid in self._sample(shared)]
        return self._top_items(self._scores(similarities))


class VSKNN(_SessionPool):
    """Vector multiplication SKNN (V-SkNN in the paper): like SKNN, but the current session is a
    real-valued vector that puts the weight on its later events: with n events in the session,
    an item whose last occurrence is at position p (1 = first) weighs p / n (linear decay; the
    last event's item weighs 1). The similarity to a past session is the dot product of that
    vector with the past session's binary vector (the sum of the weights of the shared items).
    The scores carry an IDF-like item weight, so items found in fewer sessions count more:
    score(i) = (sum of the similarities of the neighbours containing i) * (1 + idf_weight *
    ln(S / S_i)), S the sessions in the pool and S_i those containing i (idf_weight = 0: no IDF
    term; the paper's exact IDF form is not reproduced, this one is ours). Neighbours and sample as
    in SKNN (defaults 100 neighbours, a sample of 500; tuned per data set in the paper)."""

    positional = True

    def __init__(self, k: int = 20, neighbours: int = 100, sample_size: int = 500, idf_weight: float = 1.0,
                 session_gap_ms: int = SESSION_GAP_MS):
        super().__init__(k, neighbours, sample_size, session_gap_ms)
        self.idf_weight = idf_weight
        self.name = f"V-SKNN (k={neighbours}, sample {sample_size})"
        self._idf = np.zeros(0)  # per item number

    def _fold(self, pending: list[tuple[int, str]]) -> None:
        super()._fold(pending)
        if self.idf_weight:
            containing = np.array([self._sessions_with[item] for item in self._items], dtype=np.float64)
            self._idf = 1.0 + self.idf_weight * np.log(len(self._pool) / containing)

    def _recommend(self, event: Event, session: _Session) -> list[str]:
        _, shared = self._overlap(event.user_id, session)
        n = len(session.items)
        scores = self._scores([(shared[sid] / n, sid) for sid in self._sample(shared)])
        if scores is not None and self.idf_weight:
            scores *= self._idf
        return self._top_items(scores)


# ------------------------------------------------------------------------------- sequential rules

class SequentialRules(_SessionBaseline):
    """Sequential rules (SR in the paper): a rule a -> b for every b that follows a within `steps`
    (default 10) positions in a session (events in order, repeats included, so a repeated item
    makes a rule a -> a), weighted 1 / gap, the paper's decreasing weight of the distance; a
    rule's weight is summed over all past sessions. The list: the rules of the current session's
    last item, by weight."""

    def __init__(self, k: int = 20, steps: int = 10, session_gap_ms: int = SESSION_GAP_MS):
        super().__init__(k, session_gap_ms)
        self.steps = steps
        self.name = f"sequential rules (steps {steps})"
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

    def _recommend(self, event: Event, session: _Session) -> list[str]:
        last = session.items[-1]
        top = self._top.get(last)
        if top is None:
            top = self._top[last] = _best(self._rules.get(last, {}), self.k)
        return top
