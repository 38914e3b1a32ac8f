"""Session-based kNN baselines after Ludewig & Jannach (2018): SKNN scores items by the past sessions most
similar to the user's running one; V-SKNN does the same with the running session's later events weighted
higher. Fairness, sessions and ties as for the other baselines (see `baselines`): the pool of past sessions
changes only at a batch boundary. Pure: stdlib, numpy and `Event` only.

The rows of one method and search parameters differ only in what they do with the item scores (leave the
session's or the user's items out, put reminders first, weigh by IDF): `share_searches` gives them one
`NeighbourSearch`, which finds the neighbours once per event for all of them (the full pass runs twelve kNN rows
over two searches; tuned by `--tune-baselines`, rows that chose different values have a search each). Each row's
events/s counts the search's time with its own (`rates_alone`).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from typing import Any, Collection, Hashable, Iterable, Iterator

import numpy as np

from ..core.events import Event
from .baselines import SESSION_GAP_MS, Session, SessionBaseline, Sessions


class _Shared:
    """A user's running session against the pool of one batch: the last position of each of its
    items, and per pool session sharing an item with it the sum of the shared items' weights."""

    __slots__ = ("sid", "positions", "sums")

    def __init__(self, sid: int):
        self.sid = sid
        self.positions: dict[str, int] = {}
        self.sums: dict[int, int] = {}


class NeighbourSearch:
    """The running sessions, the pool of past sessions and each event's item scores, for every row of one method
    (`positional`: V-SKNN, else SKNN) and search parameters.

    Pool: the items of every past session, the order in which sessions were last updated (a stamp per batch
    boundary, in event order) and, per item, the `sample_size` + 1 most recently updated sessions containing it
    (enough to find the `sample_size` most recent sessions sharing any item with a current session), and per item
    the number of sessions containing it. The overlap of a running session with the pool is kept per user within a
    batch and updated by each event (the pool does not change within a batch): SKNN counts shared items, V-SKNN sums
    their last positions in the running session. Item scores are summed in numpy over item numbers; each pool
    session also keeps its items as an array of those numbers.

    Every row sharing a search is given each event, as the same object, before the next event: the first row's
    `session` opens or extends the user's session and the first `scores` finds the neighbours; the others read
    both."""

    def __init__(self, positional: bool, neighbours: int = 100, sample_size: int = 500,
                 session_gap_ms: int = SESSION_GAP_MS, score_decay: bool = True, gap_splits: bool = True):
        self.positional, self.score_decay = positional, score_decay
        self.neighbours, self.sample_size = neighbours, sample_size
        self._sessions = Sessions(session_gap_ms, gap_splits)
        self._pending: list[tuple[int, str]] = []  # (session number, item) of this batch, in event order
        self._pool: dict[int, set[str]] = {}
        self._stamp: dict[int, int] = {}
        self._index: dict[str, dict[int, None]] = {}  # item -> sessions, least recent first
        self._sessions_with = np.zeros(1024)  # item number -> pool sessions containing it (an array: IDF per fold)
        self._stamps: Iterator[int] = itertools.count()
        self._shared: dict[str, _Shared] = {}  # user -> overlap of the running session, this batch
        self.numbers: dict[str, int] = {}  # item -> its number
        self.items: list[str] = []  # number -> item
        self._arrays: dict[int, np.ndarray] = {}  # pool session -> its item numbers
        self.folds = 0  # batch boundaries folded: what the pool's IDF was computed at
        self._rarity: np.ndarray | None = None
        self._event: Event | None = None  # the event of `_session` and `_scores`
        self._session: Session | None = None
        self._scores: np.ndarray | None = None
        self._scored = False
        self.seconds = 0.0  # spent in sessions, searches and folds: in the time of the row that asked first

    def session(self, event: Event) -> Session:
        """The user's running session with `event` in it (opened or extended once per event)."""
        if event is not self._event:
            started = time.perf_counter()
            self._event, self._scored = event, False
            self._session = self._sessions.open(event)
            self._pending.append((self._session.sid, event.item_id))
            self.seconds += time.perf_counter() - started
        assert self._session is not None
        return self._session

    def scores(self, event: Event) -> np.ndarray | None:
        """Per item number, the summed similarity of the neighbour sessions containing it (V-SKNN: divided as
        `score_decay` says: each neighbour's similarity divided by how many events back the latest event of the
        running session whose item it shares is, 1 for the event just seen); None without neighbours. The same array for every row: change a copy."""
        session = self.session(event)
        if not self._scored:
            started = time.perf_counter()
            positions, shared = self._overlap(event.user_id, session)
            neighbours = self._nearest(self._similarities(positions, shared, session))
            if self.positional and self.score_decay:  # session-rec's weighting_score="div"
                pool, n = self._pool, len(session.items)
                neighbours = [(sim / (n + 1 - max(positions[item] for item in pool[sid] & positions.keys())), sid)
                              for sim, sid in neighbours]
            self._scores, self._scored = self._summed(neighbours), True
            self.seconds += time.perf_counter() - started
        return self._scores

    def rarity(self) -> np.ndarray:
        """Per item number, ln(S / S_i): S the sessions in the pool, S_i those containing the item (V-SKNN's IDF)."""
        if self._rarity is None:
            self._rarity = np.log(len(self._pool) / self._sessions_with[:len(self.items)])
        return self._rarity

    def end_batch(self) -> None:
        """The batch's sessions into the pool (once, whichever sharing row ends the batch first)."""
        pending, self._pending = self._pending, []
        if pending:
            started = time.perf_counter()
            self._fold(pending)
            self.seconds += time.perf_counter() - started

    def _fold(self, pending: list[tuple[int, str]]) -> None:
        self._shared.clear()
        self._rarity, self._event = None, None
        self.folds += 1
        touched: dict[int, None] = {}  # sessions in the order of their last event in the batch
        for sid, item in pending:
            items = self._pool.get(sid)
            if items is None:
                items = self._pool[sid] = set()
            if item not in items:
                items.add(item)
                number = self.numbers.get(item)
                if number is None:
                    number = self.numbers[item] = len(self.items)
                    self.items.append(item)
                    if number == len(self._sessions_with):
                        self._sessions_with = np.resize(self._sessions_with, 2 * number)
                        self._sessions_with[number:] = 0.0
                self._sessions_with[number] += 1.0
            touched.pop(sid, None)
            touched[sid] = None
        cap, numbers = self.sample_size + 1, self.numbers  # + 1: a user's own session may be one of them
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

    def _similarities(self, positions: dict[str, int], shared: dict[int, int],
                      session: Session) -> list[tuple[float, int]]:
        if self.positional:  # the dot product with the session's linearly decaying vector
            n = len(session.items)
            return [(shared[sid] / n, sid) for sid in self._sample(shared)]
        pool, size = self._pool, len(positions)  # cosine of the binary vectors
        return [(shared[sid] / math.sqrt(size * len(pool[sid])), sid) for sid in self._sample(shared)]

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

    def _summed(self, similarities: list[tuple[float, int]]) -> np.ndarray | None:
        if not similarities:
            return None
        arrays = [self._arrays[sid] for _, sid in similarities]
        weights = np.repeat(np.array([sim for sim, _ in similarities]), [len(a) for a in arrays])
        return np.bincount(np.concatenate(arrays), weights=weights, minlength=len(self.items))


class _SessionPool(SessionBaseline):
    """A kNN row: its method's `NeighbourSearch` (its own, unless `share_searches` gave it one shared with the rows
    of the same method and search parameters) and what it does with the scores: the k items of highest positive
    score, none of those `_excluded` leaves out, ties by item id."""

    positional = False
    score_decay = False  # V-SKNN's option (SKNN's search has none)

    def __init__(self, k: int = 20, neighbours: int = 100, sample_size: int = 500,
                 session_gap_ms: int = SESSION_GAP_MS, **options: Any):
        super().__init__(k, session_gap_ms, **options)
        self.neighbours = neighbours
        self.sample_size = sample_size
        self.search: NeighbourSearch | None = None

    def search_key(self) -> Hashable:
        """What rows sharing a search have equal."""
        return (type(self).positional, self.neighbours, self.sample_size, self.session_gap_ms, self.score_decay,
                self.gap_splits_sessions)

    def _search(self) -> NeighbourSearch:
        if self.search is None:
            self.search = NeighbourSearch(self.positional, self.neighbours, self.sample_size, self.session_gap_ms,
                                          self.score_decay, self.gap_splits_sessions)
        return self.search

    def _running(self, event: Event) -> Session:
        return self._search().session(event)

    def end_batch(self) -> None:
        self._search().end_batch()

    def _recommend(self, event: Event, session: Session) -> list[str]:
        return self._top_items(self._scored(self._search().scores(event)), self._excluded(event, session))

    def _scored(self, scores: np.ndarray | None) -> np.ndarray | None:
        return scores

    def _top_items(self, scores: np.ndarray | None, excluded: Collection[str]) -> list[str]:
        if scores is None:
            return []
        if excluded:
            numbers = self._search().numbers
            scores = scores.copy()  # the search's: the other rows read it too
            scores[[numbers[item] for item in excluded if item in numbers]] = 0
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > self.k:
            values = scores[candidates]
            at = len(values) - self.k
            candidates = candidates[values >= np.partition(values, at)[at]]
        items = self._search().items
        ranked = sorted(zip((-scores[candidates]).tolist(), [items[i] for i in candidates]))
        return [item for _, item in ranked[: self.k]]


class SKNN(_SessionPool):
    """Session-based kNN (SKNN in the paper): the current session as a binary item vector; among
    the `sample_size` most recent past sessions sharing at least one item with it, the
    `neighbours` most similar by cosine (|A & B| / sqrt(|A| |B|)); an item's score is the sum of
    the similarities of the neighbour sessions containing it. Items of the current session are
    not excluded (unless `session_items_out` or `seen_items_out`). The paper tunes the number of neighbours and the
    sample size per data set; the defaults here are 100 neighbours and a sample of 500 sessions.

    >>> from stream_app.core.events import Event
    >>> knn = SKNN(k=2)
    >>> for n, (user, item) in enumerate([("a", "x"), ("a", "y"), ("b", "x")]):
    ...     listed = knn.learn(Event.from_dict({"event_id": str(n), "user_id": user, "item_id": item,
    ...                                         "type": "click", "ts": 1_000 * n}))
    ...     knn.end_batch()
    >>> listed
    ['x', 'y']
    """

    def __init__(self, k: int = 20, neighbours: int = 100, sample_size: int = 500,
                 session_gap_ms: int = SESSION_GAP_MS, **options: Any):
        super().__init__(k, neighbours, sample_size, session_gap_ms, **options)
        self.label = f"SKNN (k={neighbours}, sample {sample_size})"


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
    on a log is the baseline to beat, as the paper's tuning per data set would pick it; both share one search."""

    positional = True

    def __init__(self, k: int = 20, neighbours: int = 100, sample_size: int = 500, idf_weight: float = 1.0,
                 score_decay: bool = True, session_gap_ms: int = SESSION_GAP_MS, **options: Any):
        super().__init__(k, neighbours, sample_size, session_gap_ms, **options)
        self.idf_weight = idf_weight
        self.score_decay = score_decay
        self.label = f"V-SKNN (k={neighbours}, sample {sample_size}{', idf' if idf_weight else ''})"
        self._idf: np.ndarray | None = None  # per item number, as of the search's fold `_idf_at`
        self._idf_at = -1

    def _scored(self, scores: np.ndarray | None) -> np.ndarray | None:
        if scores is None or not self.idf_weight:
            return scores
        search = self._search()
        if self._idf is None or self._idf_at != search.folds:
            self._idf, self._idf_at = 1.0 + self.idf_weight * search.rarity(), search.folds
        return scores * self._idf


def share_searches(models: Iterable[Any]) -> None:
    """Give the kNN rows among `models` of the same method and search parameters one `NeighbourSearch` (before the
    pass: a row that ran keeps its own)."""
    searches: dict[Hashable, NeighbourSearch] = {}
    for model in models:
        if isinstance(model, _SessionPool) and model.search is None:
            key = model.search_key()
            if key in searches:
                model.search = searches[key]
            else:
                searches[key] = model._search()


def rates_alone(models: Iterable[Any], rows: dict[str, dict[str, Any]], events: int) -> None:
    """Each kNN row's events/s in `rows` (a pass's results over `events` events) as if it had its search alone: the
    row that asked first spent the search's time, the others their ranking's only; the search's time is added to
    theirs."""
    sharing: dict[int, list[_SessionPool]] = {}
    for model in models:
        if isinstance(model, _SessionPool) and model.search is not None and model.name in rows:
            sharing.setdefault(id(model.search), []).append(model)
    for shared in sharing.values():
        search = shared[0].search
        assert search is not None
        for model in shared[1:]:
            rate = rows[model.name].get("events_per_s")
            if rate:
                rows[model.name]["events_per_s"] = events / (events / rate + search.seconds)
