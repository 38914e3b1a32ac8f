"""Per item, the values a ranking reads for every candidate that depend only on the item state: its
popular and trending shares, its category and its share of its category's popularity. Held in arrays
indexed by a slot per item, so a list of a few hundred candidates reads them with one dict lookup per
item and one gather per column, where a lookup per item and column took about a fifth of a
recommendation's time (line profiler). Pure."""

from __future__ import annotations

from itertools import repeat
from typing import Callable, Mapping

import numpy as np

#: The category code of an item without a category.
NO_CATEGORY = -1
#: A slot no item has: where a list's items without a slot write, in one gather (then it is reset).
SCRATCH = 0

#: (item) -> its category and its share of that category's popularity (0: not among its best).
Describe = Callable[[str], tuple[str | None, float]]


class ItemColumns:
    """Slots (item -> row) into the arrays `popular`, `trending` (shares of the best, 0: not listed),
    `category` (a code, NO_CATEGORY: none) and `within` (its share of its category's popularity, 0: not
    among the category's kept best). The index that owns it keeps them current: `set_shares` when the
    popular or trending list changes, `set_within` when a category's does, `redescribe` when an item's
    entry does, `clear` when much changed at once.

    >>> columns = ItemColumns()
    >>> columns.set_shares("popular", {"a": 1.0, "b": 0.5})
    >>> slots = columns.slots(["b", "c"], lambda item_id: ("shoes", 0.25) if item_id == "c" else (None, 0.0))
    >>> columns.popular[slots].tolist(), [columns.name(code) for code in columns.category[slots]]
    ([0.5, 0.0], [None, 'shoes'])
    >>> columns.set_within("shoes", {"c": 0.5, "d": 0.5})
    >>> columns.within[slots].tolist()
    [0.0, 0.5]
    """

    def __init__(self, capacity: int = 1024):
        self.slot: dict[str, int] = {}
        self.popular = np.zeros(capacity)
        self.trending = np.zeros(capacity)
        self.within = np.zeros(capacity)
        self.category = np.full(capacity, NO_CATEGORY, dtype=np.intp)
        self._codes: dict[str, int] = {}
        self._names: list[str] = []
        #: "popular", "trending" -> that list; a category -> its kept best (the items the column last set)
        self._shares: dict[str, Mapping[str, float]] = {"popular": {}, "trending": {}}
        self._within: dict[str, Mapping[str, float]] = {}

    def code(self, category: str | None) -> int:
        if category is None:
            return NO_CATEGORY
        found = self._codes.get(category)
        if found is None:
            found = self._codes[category] = len(self._names)
            self._names.append(category)
        return found

    def known(self, category: str) -> int | None:
        """The category's code, if it has one."""
        return self._codes.get(category)

    def name(self, code: int) -> str | None:
        return self._names[code] if code != NO_CATEGORY else None

    @property
    def categories(self) -> int:
        """How many category codes there are (0 .. categories - 1)."""
        return len(self._names)

    def slots(self, item_ids: list[str], describe: Describe) -> np.ndarray:
        """The slots of `item_ids`; an item met for the first time gets one (`describe`: its category
        and within share)."""
        found = list(map(self.slot.get, item_ids))
        if None in found:
            for k, slot in enumerate(found):
                if slot is None:
                    found[k] = self._add(item_ids[k], describe)
        return np.array(found, dtype=np.intp)

    def _add(self, item_id: str, describe: Describe) -> int:
        slot = self.slot[item_id] = len(self.slot) + 1  # after SCRATCH
        if slot == len(self.popular):
            for column in ("popular", "trending", "within", "category"):
                setattr(self, column, np.resize(getattr(self, column), 2 * slot))
        self.popular[slot] = self._shares["popular"].get(item_id, 0.0)
        self.trending[slot] = self._shares["trending"].get(item_id, 0.0)
        self.redescribe(item_id, describe)
        return slot

    def _slots_of(self, items: Mapping[str, float]) -> np.ndarray:
        return np.fromiter(map(self.slot.get, items, repeat(SCRATCH)), dtype=np.intp, count=len(items))

    def set_shares(self, column: str, shares: Mapping[str, float]) -> None:
        """The list behind `column` ("popular" or "trending") is now `shares`: the items it dropped go to 0."""
        values = getattr(self, column)
        values[self._slots_of(self._shares[column])] = 0.0  # the slots its items have now, given since too
        values[self._slots_of(shares)] = np.fromiter(shares.values(), dtype=np.float64, count=len(shares))
        values[SCRATCH] = 0.0
        self._shares[column] = shares

    def set_within(self, category: str, shares: Mapping[str, float]) -> None:
        """`category`'s kept best items and their shares are now `shares`: its items that dropped out go
        to 0 (an item listed under a category it has since left keeps its own category's share)."""
        code = self.code(category)
        before = self._slots_of(self._within.get(category, {}))  # the slots its items have now
        self.within[before[self.category[before] == code]] = 0.0
        listed = self._slots_of(shares)
        mine = self.category[listed] == code
        self.within[listed[mine]] = np.fromiter(shares.values(), dtype=np.float64, count=len(shares))[mine]
        self.within[SCRATCH] = 0.0
        self._within[category] = shares

    def redescribe(self, item_id: str, describe: Describe) -> None:
        """The item's entry changed: its category (and so its within share) may have."""
        slot = self.slot.get(item_id)
        if slot is not None:
            category, within = describe(item_id)
            self.category[slot], self.within[slot] = self.code(category), within

    def clear(self) -> None:
        """Forget every slot and category code (the shares, and the category lists the within column last set, stay
        known). Codes are working numbers, given again as categories are met: kept, every category the input ever
        named stayed, evicted ones too, and each list's category tables (recommend.py) grew with them."""
        self.slot.clear()
        self._codes.clear()
        self._names.clear()
