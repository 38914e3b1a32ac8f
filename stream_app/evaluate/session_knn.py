"""Session-based kNN baselines after Ludewig & Jannach (2018): SKNN scores items by the past sessions most
similar to the user's running one; V-SKNN does the same with the running session's later events weighted
higher. Fairness, sessions and ties as for the other baselines (see `baselines`): the pool of past sessions
changes only at a batch boundary. Pure: stdlib, numpy and `Event` only.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any, Collection, Iterable, Iterator

import numpy as np

from ..core.events import Event
from .baselines import SESSION_GAP_MS, Session, SessionBaseline


class _Shared:
    """A user's running session against the pool of one batch: the last position of each of its
    items, and per pool session sharing an item with it the sum of the shared items' weights."""

    __slots__ = ("sid", "positions", "sums")

    def __init__(self, sid: int):
        self.sid = sid
        self.positions: dict[str, int] = {}
        self.sums: dict[int, int] = {}


class _SessionPool(SessionBaseline):
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
                 session_gap_ms: int = SESSION_GAP_MS, **options: Any):
        super().__init__(k, session_gap_ms, **options)
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

    def _overlap(self, user_id: str, session: Session) -> tuple[dict[str, int], dict[int, int]]:
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

    def _nearest(self, similarities: list[tuple[float, int]]) -> list[tuple[float, int]]:
        """The `neighbours` most similar sessions (ties between sessions: the more recent first)."""
        if len(similarities) > self.neighbours:
            stamp = self._stamp
            similarities = heapq.nlargest(self.neighbours, similarities,
                                          key=lambda pair: (pair[0], stamp[pair[1]]))
        return similarities

    def _scores(self, similarities: list[tuple[float, int]]) -> np.ndarray | None:
        """Per item number, the summed weight of the sessions of `similarities` containing it (the
        caller picks the neighbours with `_nearest`); None without neighbours."""
        if not similarities:
            return None
        arrays = [self._arrays[sid] for _, sid in similarities]
        weights = np.repeat(np.array([sim for sim, _ in similarities]), [len(a) for a in arrays])
        return np.bincount(np.concatenate(arrays), weights=weights, minlength=len(self._items))

    def _top_items(self, scores: np.ndarray | None, excluded: Collection[str]) -> list[str]:
        """The k items of highest positive score, none of `excluded` (`_excluded`: the session's or the user's items
        with the options that leave them out), ties by item id."""
        if scores is None:
            return []
        if excluded:
            numbers = self._numbers
            scores[[numbers[item] for item in excluded if item in numbers]] = 0
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
    not excluded (unless `session_items_out` or `seen_items_out`). The paper tunes the number of neighbours and the sample size per data set; the
    defaults here are 100 neighbours and a sample of 500 sessions."""

    def __init__(self, k: int = 20, neighbours: int = 100, sample_size: int = 500,
                 session_gap_ms: int = SESSION_GAP_MS, **options: Any):
        super().__init__(k, neighbours, sample_size, session_gap_ms, **options)
        self.label = f"SKNN (k={neighbours}, sample {sample_size})"

    def _recommend(self, event: Event, session: Session) -> list[str]:
        positions, shared = self._overlap(event.user_id, session)
        pool, size = self._pool, len(positions)
        similarities = [(shared[sid] / math.sqrt(size * len(pool[sid])), sid) for sid in self._sample(shared)]
        return self._top_items(self._scores(self._nearest(similarities)), self._excluded(event, session))


class VSKNN(_SessionPool):
    """Vector multiplication SKNN (V-SkNN in the paper): like SKNN, but the current session is a
    real-valued vector that puts the weight on its later events: with n events in the session,
    an item whose last occurrence is at position p (1 = first) weighs p / n (linear decay; the
    last event's item weighs 1). The similarity to a past session is the dot product of that
    vector with the past session's binary vector (the sum of the weights of the shared items).
    The scores carry an IDF-like item weight, so items found in fewer sessions count more:
    score(i) = (sum of the similarities of the neighbours containing i) * (1 + idf_weight *
    ln(S / S_i)), S the sessions in the pool and S_i those containing i (idf_weight = 0: no IDF
    term; the form of the session-rec framework's implementation, not in the paper's description; it
    raises V-SKNN on the shop log, so it does not handicap the baseline). `score_decay` (session-rec's default
    weighting_score "div"): each neighbour's similarity is divided by how many events back the latest event of
    the current session whose item it shares is (1: the event just seen), so neighbours that share only old
    items count little. Neighbours and sample as in SKNN (defaults 100 neighbours, a sample of 500; tuned per
    data set in the paper). `evaluate` runs two rows, IDF off (session-rec's defaults) and on: the better one
    on a log is the baseline to beat, as the paper's tuning per data set would pick it."""

    positional = True

    def __init__(self, k: int = 20, neighbours: int = 100, sample_size: int = 500, idf_weight: float = 1.0,
                 score_decay: bool = True, session_gap_ms: int = SESSION_GAP_MS, **options: Any):
        super().__init__(k, neighbours, sample_size, session_gap_ms, **options)
        self.idf_weight = idf_weight
        self.score_decay = score_decay
        self.label = f"V-SKNN (k={neighbours}, sample {sample_size}{', idf' if idf_weight else ''})"
        self._idf = np.zeros(0)  # per item number

    def _fold(self, pending: list[tuple[int, str]]) -> None:
        super()._fold(pending)
        if self.idf_weight:
            containing = np.array([self._sessions_with[item] for item in self._items], dtype=np.float64)
            self._idf = 1.0 + self.idf_weight * np.log(len(self._pool) / containing)

    def _recommend(self, event: Event, session: Session) -> list[str]:
        positions, shared = self._overlap(event.user_id, session)
        n = len(session.items)
        neighbours = self._nearest([(shared[sid] / n, sid) for sid in self._sample(shared)])
        if self.score_decay:  # session-rec's weighting_score="div": x 1 / steps back to the latest shared event
            pool = self._pool
            neighbours = [(sim / (n + 1 - max(positions[item] for item in pool[sid] & positions.keys())), sid)
                          for sim, sid in neighbours]
        scores = self._scores(neighbours)
        if scores is not None and self.idf_weight:
            scores *= self._idf
        return self._top_items(scores, self._excluded(event, session))
