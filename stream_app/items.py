"""Item-side state: popularity and co-visitation, shared by every user. Pure: no Faust, Kafka or Redis.

How it stays consistent across workers: a user-side batch turns its new events into *signals*
keyed by item (`SignalBuffer`); the signals travel on an item-keyed internal topic, so exactly one
worker owns each item and applies them (`apply_signals`); the owner writes the new entries to a
global table whose changelog every worker reads, so every worker ranks from the same item state,
a changelog round trip behind the owner. `InMemoryItemIndex` applies the same function in process.

Keys in the store: ``i:<item_id>`` -> entry, ``p:<partition>`` -> that partition's popular list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

from . import decay
from .config import Settings

Entry = dict[str, Any]  # {"pop": log2 score | None, "nb": {item_id: log2 score}, "ts": ms}


def item_key(item_id: str) -> str:
    return f"i:{item_id}"


def popular_key(partition: int) -> str:
    return f"p:{partition}"


@dataclass(slots=True)
class SignalBuffer:
    """Item signals of one batch, aggregated so each item is sent once per batch."""

    half_life_ms: int
    by_item: dict[str, Entry] = field(default_factory=dict)

    def _entry(self, item_id: str, ts: int) -> Entry:
        entry = self.by_item.get(item_id)
        if entry is None:
            entry = self.by_item[item_id] = {"pop": None, "nb": {}, "ts": ts}
        elif ts > entry["ts"]:
            entry["ts"] = ts
        return entry

    def add_interaction(self, item_id: str, previous: Iterable[str], weight: float, ts: int) -> None:
        """One event on item_id by a user whose recent items (in the co-visitation window) were `previous`."""
        stored = decay.log_weight(weight, ts, self.half_life_ms)
        entry = self._entry(item_id, ts)
        entry["pop"] = decay.log_add(entry["pop"], stored)
        for other in previous:
            decay.add(entry["nb"], other, stored)
            decay.add(self._entry(other, ts)["nb"], item_id, stored)

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        return [(item_id, {"item_id": item_id, "pop": e["pop"], "neighbors": e["nb"], "ts": e["ts"]})
                for item_id, e in self.by_item.items()]

    def __len__(self) -> int:
        return len(self.by_item)


def apply_signals(
    get: Callable[[str], Entry | None],
    signals: Iterable[Mapping[str, Any]],
    popular: list[list[Any]],
    settings: Settings,
) -> tuple[dict[str, Entry], list[list[Any]]]:
    """Merge signals into item entries; return the changed entries and the partition's new popular list."""
    changed: dict[str, Entry] = {}
    for signal in signals:
        item_id = signal["item_id"]
        entry = changed.get(item_id) or get(item_id) or {"pop": None, "nb": {}, "ts": 0}
        if signal["pop"] is not None:
            entry["pop"] = decay.log_add(entry["pop"], signal["pop"])
        nb = entry["nb"]
        for other, stored in signal["neighbors"].items():
            decay.add(nb, other, stored)
        entry["nb"] = decay.prune(nb, settings.covis_neighbors_max)
        entry["ts"] = max(entry["ts"], signal["ts"])
        changed[item_id] = entry
    return changed, merge_popular(popular, changed, settings.popular_per_partition)


def merge_popular(current: list[list[Any]], changed: Mapping[str, Entry], size: int) -> list[list[Any]]:
    """Top `size` items by popularity. Exact for the partition, since decay is uniform in log space."""
    scores = {item_id: score for item_id, score in current}
    for item_id, entry in changed.items():
        if entry["pop"] is not None:
            scores[item_id] = entry["pop"]
    return [[item_id, score] for item_id, score in decay.top(scores, size)]


def shares(ranked: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Log2 scores (best first) as fractions of the best one: decay is uniform, so no clock is needed."""
    if not ranked:
        return []
    best = ranked[0][1]
    return [(item_id, 2.0 ** (score - best)) for item_id, score in ranked]


class ItemIndex(Protocol):
    """What the recommender reads of the item side: ranked lists with shares of the best, in (0, 1]."""

    def ranked_neighbors(self, item_id: str) -> list[tuple[str, float]]: ...

    def popular(self) -> list[tuple[str, float]]: ...


class CachedItemIndex:
    """Ranks an item's neighbours once and serves them until `invalidate` (a batch boundary)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._ranked: dict[str, list[tuple[str, float]]] = {}
        self._popular: list[tuple[str, float]] = []

    def raw_neighbors(self, item_id: str) -> dict[str, float] | None:
        raise NotImplementedError

    def ranked_neighbors(self, item_id: str) -> list[tuple[str, float]]:
        ranked = self._ranked.get(item_id)
        if ranked is None:
            raw = self.raw_neighbors(item_id)
            ranked = shares(decay.top(raw, self.settings.covis_neighbors_max)) if raw else []
            self._ranked[item_id] = ranked
        return ranked

    def popular(self) -> list[tuple[str, float]]:
        return self._popular

    def invalidate(self, popular_ranked: list[tuple[str, float]]) -> None:
        self._ranked.clear()
        self._popular = shares(popular_ranked)


class InMemoryItemIndex(CachedItemIndex):
    """The item state in one process (evaluation, tests): one partition, signals apply on `apply`."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.entries: dict[str, Entry] = {}
        self._popular_list: list[list[Any]] = []

    def apply(self, buffer: SignalBuffer) -> None:
        changed, self._popular_list = apply_signals(
            self.entries.get, (m for _, m in buffer.messages()), self._popular_list, self.settings)
        self.entries.update(changed)
        self.invalidate([(item_id, score) for item_id, score in self._popular_list])

    def raw_neighbors(self, item_id: str) -> dict[str, float] | None:
        entry = self.entries.get(item_id)
        return entry["nb"] if entry else None


def merge_partition_popular(lists: Iterable[list[list[Any]]], size: int) -> list[tuple[str, float]]:
    """The global popular list from the per-partition ones (each item lives in one partition)."""
    merged = {item_id: score for popular in lists for item_id, score in popular}
    return decay.top(merged, size)
