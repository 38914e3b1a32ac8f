"""Item-side state: popularity, trending, co-visitation and per-category tops, shared by every user.
Pure: no Faust, Kafka or Redis.

How it stays consistent across workers: every worker computes it from the whole input, by event
time (`item_feed.ItemFeed`): the events of an item epoch become *signals* keyed by item
(`SignalBuffer`, aggregated per epoch and partition group) and are merged into item entries
(`apply_signals`) in the same order in every process, so every worker (and `evaluate`) ranks from
the same item state at the same event time. `InMemoryItemIndex` holds it.

Keys in the store: ``i:<item_id>`` -> entry; ``p:<partition>`` -> popular list; ``t:<partition>`` ->
trending list; ``c:<partition>:<category>`` -> that category's most popular items (one partition,
0, in the in-memory index; readers merge partitions).

Popular counts events (each one, whatever its type) decayed with `popularity_half_life_ms` (a week
by default); trending is the same count with a short half-life (`trending_half_life_ms`): a sliding
window in the forward-decay sense, O(1) per event, no expiry pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AbstractSet, Any, Callable, Iterable, Mapping, Protocol

import numpy as np

from ..config import Settings
from . import decay
from .item_columns import ItemColumns

# An item's entry, under the names its signals carry: {"pop", "trend": log2 scores | None,
#  "neighbors": co-visited {item_id: log2 score}, "followed_by": {item_id: log2 score}, "ts": ms,
#  "category": str | None}
Entry = dict[str, Any]


ITEM_PREFIX = "i:"


def item_key(item_id: str) -> str:
    return f"{ITEM_PREFIX}{item_id}"


def popular_key(partition: int) -> str:
    return f"p:{partition}"


def trending_key(partition: int) -> str:
    return f"t:{partition}"


def category_key(partition: int, category: str) -> str:
    return f"c:{partition}:{category}"


CATEGORY_STEPS_PREFIX = "k:"


def category_steps_key(category: str) -> str:
    """The categories that came next after `category` in sessions: {category: log2 score}."""
    return f"{CATEGORY_STEPS_PREFIX}{category}"


def _new_entry(ts: int) -> Entry:
    return {"pop": None, "trend": None, "neighbors": {}, "followed_by": {}, "ts": ts, "category": None}


@dataclass(slots=True)
class SignalBuffer:
    """Item signals of one batch, aggregated so each item is sent once per batch."""

    popularity_half_life_ms: int
    trending_half_life_ms: int
    covis_gap_half_life_ms: int = 30 * 60 * 1000
    pair_half_life_ms: int = 365 * 24 * 3600 * 1000
    by_item: dict[str, Entry] = field(default_factory=dict)
    #: category -> {the category of the next item in the same session: log2 score}
    category_steps: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def for_settings(cls, settings: Settings) -> "SignalBuffer":
        return cls(settings.popularity_half_life_ms, settings.trending_half_life_ms, settings.covis_gap_half_life_ms,
                   settings.pair_half_life_ms)

    def _entry(self, item_id: str, ts: int) -> Entry:
        entry = self.by_item.get(item_id)
        if entry is None:
            entry = self.by_item[item_id] = _new_entry(ts)
        elif ts > entry["ts"]:
            entry["ts"] = ts
        return entry

    def add_interaction(self, item_id: str, previous: Iterable[tuple[str, int]], weight: float, ts: int,
                        category: str | None = None) -> None:
        """One event on item_id (its type's `weight`) by a user whose recent items in the co-visitation
        window were `previous`: (item, ms since the user last saw it). Popularity and trending count the
        event as one (they predict the next event, whatever its type); a pair counts the event's weight,
        halved every covis_gap_half_life_ms between the two events: items seen together count most."""
        entry = self._entry(item_id, ts)
        entry["pop"] = decay.log_add(entry["pop"], decay.log_weight(1.0, ts, self.popularity_half_life_ms))
        entry["trend"] = decay.log_add(entry["trend"], decay.log_weight(1.0, ts, self.trending_half_life_ms))
        if category is not None:
            entry["category"] = category
        stored = decay.log_weight(weight, ts, self.pair_half_life_ms)
        for other, gap_ms in previous:
            pair = stored - max(gap_ms, 0) / self.covis_gap_half_life_ms  # log2 space: x 2^(-gap / half-life)
            decay.add(entry["neighbors"], other, pair)
            decay.add(self._entry(other, ts)["neighbors"], item_id, pair)

    def add_sequence(self, item_id: str, before: Iterable[str], ts: int) -> None:
        """Sequential rules: `before` are the items the user had just before item_id in the same
        session, the latest first; the rule "b is followed by item_id" gains 1 / its distance in steps
        (Ludewig & Jannach's SR weighting), stored decayed like the co-visitation pairs."""
        for steps, other in enumerate(before, 1):
            decay.add(self._entry(other, ts)["followed_by"], item_id,
                      decay.log_weight(1.0 / steps, ts, self.pair_half_life_ms))

    def add_category_step(self, before: str, after: str, ts: int) -> None:
        """A session went from an item of category `before` to another item, of category `after`
        (the same or another): category-level sequential rules, far denser than the item-level ones."""
        decay.add(self.category_steps.setdefault(before, {}), after, decay.log_weight(1.0, ts, self.pair_half_life_ms))

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        return [(item_id, {"item_id": item_id, "pop": e["pop"], "trend": e["trend"], "neighbors": e["neighbors"],
                           "followed_by": e["followed_by"],
                           "ts": e["ts"], "category": e["category"]})
                for item_id, e in self.by_item.items()] + \
            [(category, {"category_steps_of": category, "next": steps}) for category, steps in self.category_steps.items()]


def apply_signals(get: Callable[[str], Any], signals: Iterable[Mapping[str, Any]], partition: int,
                  settings: Settings) -> dict[str, Any]:
    """Merge signals (all of one store partition) into item entries. Returns every key to write:
    the changed entries and the partition's popular, trending and per-category lists."""
    changed: dict[str, Entry] = {}
    writes: dict[str, Any] = {}
    for signal in signals:
        if "category_steps_of" in signal:
            key = category_steps_key(signal["category_steps_of"])
            steps = dict(writes.get(key) or get(key) or {})
            for other, stored in signal["next"].items():
                decay.add(steps, other, stored)
            # bounded as an item's neighbours are: categories come from the input, and a recommendation after an
            # event of this category walks the map (20,000 next categories: 8.6 ms an event)
            writes[key] = decay.prune(steps, settings.covis_neighbors_max)
            continue
        item_id = signal["item_id"]
        entry = changed.get(item_id) or get(item_key(item_id)) or _new_entry(0)
        if signal.get("pop") is not None:
            entry["pop"] = decay.log_add(entry.get("pop"), signal["pop"])
        if signal.get("trend") is not None:
            entry["trend"] = decay.log_add(entry.get("trend"), signal["trend"])
        if signal.get("category") is not None:
            entry["category"] = signal["category"]
        neighbors = entry["neighbors"]
        for other, stored in signal["neighbors"].items():
            decay.add(neighbors, other, stored)
        entry["neighbors"] = decay.prune(neighbors, settings.covis_neighbors_max)
        followed_by = entry.setdefault("followed_by", {})
        for other, stored in signal.get("followed_by", {}).items():
            decay.add(followed_by, other, stored)
        entry["followed_by"] = decay.prune(followed_by, settings.covis_neighbors_max)
        entry["ts"] = max(entry["ts"], signal["ts"])
        changed[item_id] = entry
    writes.update((item_key(item_id), entry) for item_id, entry in changed.items())
    size = settings.popular_per_partition
    writes[popular_key(partition)] = merge_top(get(popular_key(partition)) or [], changed, "pop", size)
    writes[trending_key(partition)] = merge_top(get(trending_key(partition)) or [], changed, "trend", size)
    by_category: dict[str, dict[str, Entry]] = {}
    for item_id, entry in changed.items():
        if entry.get("category") is not None and entry.get("pop") is not None:
            by_category.setdefault(entry["category"], {})[item_id] = entry
    for category, members in by_category.items():
        key = category_key(partition, category)
        writes[key] = merge_top(get(key) or [], members, "pop", settings.category_items)
    return writes


def merge_top(current: list[list[Any]], changed: Mapping[str, Entry], score: str, size: int) -> list[list[Any]]:
    """Top `size` items by one score. Exact for the partition, since decay is uniform in log space."""
    scores = dict(current)  # [item, score] pairs
    for item_id, entry in changed.items():
        if entry.get(score) is not None:
            scores[item_id] = entry[score]
    return [[item_id, value] for item_id, value in decay.top(scores, size)]


def shares(ranked: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Log2 scores (best first) as fractions of the best one: decay is uniform, so no clock is needed."""
    if not ranked:
        return []
    best = ranked[0][1]
    return [(item_id, 2.0 ** (score - best)) for item_id, score in ranked]


class ItemIndex(Protocol):
    """What the recommender reads of the item side: item -> share of the best, in (0, 1], best first."""

    def neighbors(self, item_id: str) -> dict[str, float]:
        """The co-visited items a ranking uses (the first covis_candidates_per_item)."""

    def followers(self, item_id: str) -> dict[str, float]:
        """The items that most often came next after item_id in a session (sequential rules)."""

    def popular(self) -> dict[str, float]: ...

    def trending(self) -> dict[str, float]: ...

    def category_items(self, category: str) -> list[tuple[str, float]]: ...

    def within_category(self, category: str) -> dict[str, float]:
        """Item -> its share of its category's popularity (among the category's kept best items)."""

    def next_categories(self, category: str) -> dict[str, float]:
        """The categories of the next item after one of `category` in sessions, best first."""

    def categories_of(self, item_ids: list[str]) -> list[str | None]: ...

    columns: ItemColumns  # each item's popular and trending shares, category and share within it, by slot
    #: Items never to show: removed from the catalogue (a tombstone on the items topic); set by the worker
    withdrawn: AbstractSet[str]

    def slots(self, item_ids: list[str]) -> np.ndarray:
        """The items' slots in `columns`."""


class CachedItemIndex:
    """Reads the store through `load(key)` (parsed value or None), merges the partitions' lists and
    caches everything it derived until `begin_batch` (a batch boundary)."""

    def __init__(self, settings: Settings, partitions: int):
        self.settings = settings
        self.partitions = partitions
        self._entries: dict[str, Entry | None] = {}
        self._neighbors: dict[str, dict[str, float]] = {}
        self._followers: dict[str, dict[str, float]] = {}
        self._categories: dict[str, list[tuple[str, float]]] = {}
        self._within_category: dict[str, dict[str, float]] = {}
        self._next_categories: dict[str, dict[str, float]] = {}
        self._item_category: dict[str, str | None] = {}
        self._popular: dict[str, float] = {}
        self._trending: dict[str, float] = {}
        self.columns = ItemColumns()
        self.withdrawn: AbstractSet[str] = frozenset()

    def load(self, key: str) -> Any:
        raise NotImplementedError

    def _merged(self, key_of: Callable[[int], str], size: int) -> list[tuple[str, float]]:
        if self.partitions == 1:  # one list, already best first (merge_top wrote it): no merge, no sort
            return shares((self.load(key_of(0)) or [])[:size])
        merged: dict[str, float] = {}
        for partition in range(self.partitions):
            for item_id, score in self.load(key_of(partition)) or ():
                merged[item_id] = score
        return shares(decay.top(merged, size))

    def begin_batch(self) -> None:
        self._entries.clear()
        self._neighbors.clear()
        self._followers.clear()
        self._categories.clear()
        self._within_category.clear()
        self._next_categories.clear()
        self._item_category.clear()
        self.columns.clear()
        size = self.settings.popular_per_partition
        self._popular = dict(self._merged(popular_key, size))
        self._trending = dict(self._merged(trending_key, size))
        self.columns.set_shares("popular", self._popular)
        self.columns.set_shares("trending", self._trending)

    def entry(self, item_id: str) -> Entry | None:
        try:
            return self._entries[item_id]
        except KeyError:
            found = self._entries[item_id] = self.load(item_key(item_id))
            return found

    def _related(self, cache: dict[str, dict[str, float]], field_name: str, item_id: str) -> dict[str, float]:
        found = cache.get(item_id)
        if found is None:
            entry = self.entry(item_id)
            raw = entry.get(field_name) if entry else None
            found = dict(shares(decay.top(raw, self.settings.covis_candidates_per_item))) if raw else {}
            cache[item_id] = found
        return found

    def neighbors(self, item_id: str) -> dict[str, float]:
        return self._related(self._neighbors, "neighbors", item_id)

    def followers(self, item_id: str) -> dict[str, float]:
        return self._related(self._followers, "followed_by", item_id)

    def describe(self, item_id: str) -> tuple[str | None, float]:
        """The item's category and its share of that category's popularity (ItemColumns)."""
        entry = self.entry(item_id)
        category = entry.get("category") if entry else None
        return category, self.within_category(category).get(item_id, 0.0) if category is not None else 0.0

    def slots(self, item_ids: list[str]) -> np.ndarray:
        return self.columns.slots(item_ids, self.describe)

    def categories_of(self, item_ids: list[str]) -> list[str | None]:
        known, out = self._item_category, []
        for item_id in item_ids:
            try:
                out.append(known[item_id])
            except KeyError:
                entry = self.entry(item_id)
                category = known[item_id] = entry.get("category") if entry else None
                out.append(category)
        return out

    def category_items(self, category: str) -> list[tuple[str, float]]:
        ranked = self._categories.get(category)
        if ranked is None:
            ranked = self._categories[category] = self._merged(
                lambda partition: category_key(partition, category), self.settings.category_items)
        return ranked

    def within_category(self, category: str) -> dict[str, float]:
        found = self._within_category.get(category)
        if found is None:
            ranked = self.category_items(category)
            total = sum(share for _, share in ranked)
            found = self._within_category[category] = {item_id: share / total for item_id, share in ranked}
        return found

    def next_categories(self, category: str) -> dict[str, float]:
        found = self._next_categories.get(category)
        if found is None:
            raw = self.load(category_steps_key(category))
            found = self._next_categories[category] = dict(shares(decay.top(raw, len(raw)))) if raw else {}
        return found

    def popular(self) -> dict[str, float]:
        return self._popular

    def trending(self) -> dict[str, float]:
        return self._trending


def evict_idle_items(store: dict[str, Any], before_ts: int, settings: Settings) -> int:
    """Drop every item whose last event is older than `before_ts` from a one-partition store: its entry
    and its places in the popular, trending and category lists (each list that lost one is made again from the
    entries, so the next best takes its place: `merge_top` stays exact), and the categories left without items
    (their lists and category steps). Returns how many left. (Pairs naming
    it in other items' entries stay until pruned: a candidate without an entry is only ranked lower.)"""
    idle = {key[2:] for key, entry in store.items() if key.startswith(ITEM_PREFIX) and entry["ts"] < before_ts}
    if not idle:
        return 0
    for item_id in idle:
        del store[item_key(item_id)]
    entries = {key[2:]: entry for key, entry in store.items() if key.startswith(ITEM_PREFIX)}
    by_category: dict[str, dict[str, Entry]] = {}
    for item_id, entry in entries.items():
        by_category.setdefault(entry.get("category"), {})[item_id] = entry
    for key, value in list(store.items()):
        if key[:2] in ("p:", "t:", "c:") and any(pair[0] in idle for pair in value):
            category = key.split(":", 2)[2] if key[:2] == "c:" else None
            members = entries if category is None else by_category.get(category, {})
            size = settings.category_items if category is not None else settings.popular_per_partition
            store[key] = merge_top([], members, "trend" if key[:2] == "t:" else "pop", size)
            if category is not None and not store[key]:
                del store[key]  # a category left without items (categories come from the input: unbounded)
    # and its category steps, from it and to it
    kept = {entry["category"] for key, entry in store.items() if key.startswith(ITEM_PREFIX)}
    for key in [key for key in store if key.startswith(CATEGORY_STEPS_PREFIX)]:
        if key[2:] not in kept:
            del store[key]
        else:
            store[key] = {category: score for category, score in store[key].items() if category in kept}
    return len(idle)


class InMemoryItemIndex(CachedItemIndex):
    """The item state of one process (a worker's or evaluate's item feed): one partition; signals merge
    in on `apply`, and `begin_batch` then drops what was derived from the keys that changed (the rest
    stays valid: decay is uniform, so a list's shares change only when its key does)."""

    def __init__(self, settings: Settings):
        super().__init__(settings, partitions=1)
        self.store: dict[str, Any] = {}
        self._changed: set[str] | None = None  # keys written since begin_batch; None: start afresh

    def load(self, key: str) -> Any:
        return self.store.get(key)

    def apply(self, signals: Iterable[Mapping[str, Any]]) -> None:
        writes = apply_signals(self.store.get, signals, 0, self.settings)
        self.store.update(writes)
        if self._changed is not None:
            self._changed.update(writes)

    def evict_idle(self, before_ts: int) -> int:
        evicted = evict_idle_items(self.store, before_ts, self.settings)
        if evicted:
            self._changed = None  # many lists and entries changed at once
        return evicted

    def begin_batch(self) -> None:
        changed, self._changed = self._changed, set()
        if changed is None:
            super().begin_batch()
            return
        items, categories = [], []
        for key in changed:
            kind, _, rest = key.partition(":")
            if kind == "i":
                for cache in (self._entries, self._neighbors, self._followers, self._item_category):
                    cache.pop(rest, None)
                items.append(rest)
            elif kind == "c":
                category = rest.partition(":")[2]
                self._categories.pop(category, None)
                self._within_category.pop(category, None)
                categories.append(category)
            elif kind == "k":
                self._next_categories.pop(rest, None)
        for category in categories:  # once every cache the columns read from is fresh
            self.columns.set_within(category, self.within_category(category))
        for item_id in items:
            self.columns.redescribe(item_id, self.describe)
        size = self.settings.popular_per_partition
        if popular_key(0) in changed:
            self._popular = dict(self._merged(popular_key, size))
            self.columns.set_shares("popular", self._popular)
        if trending_key(0) in changed:
            self._trending = dict(self._merged(trending_key, size))
            self.columns.set_shares("trending", self._trending)

    def item_count(self) -> int:
        """Items in the state (beside the derived popular, trending and category lists)."""
        return sum(key.startswith(ITEM_PREFIX) for key in self.store)
