"""Which of a user's most recent items comes back next: learned per partition from the stream."""

from __future__ import annotations

import copy
from typing import Any, Sequence

from .base import Persistent
from .state import Fields, StateError


class RecencyPositions(Persistent):
    """How often a user's next event is on the item at each recency position of their distinct recent
    items (0: the item just seen, 1: the one before it, ...), as decayed counts over the partition's
    events. Logs differ: in shop sessions a shopper goes back to the item before last more often than
    to the one just seen (OTTO), in a browse-then-buy log the item just seen comes next. `shares()`
    gives each position's weight as a share of the best one, which the prior ranks the user's recent
    items by.

    Before the stream says anything the shares are 1 / (1 + position), from `prior_strength`
    pseudo-observations spread in that shape, so a new partition ranks as a fixed recency order
    would. Each observation first multiplies the counts by `decay` (a half-life of about
    0.69 / (1 - decay) observations), so the shares follow a log whose habits change.

    >>> positions = RecencyPositions(size=3, prior_strength=10)
    >>> [round(share, 3) for share in positions.shares()]
    [1.0, 0.5, 0.333]
    >>> for _ in range(30):
    ...     positions.learn_one(["b", "a", "c"], "a")  # back to the item before last
    >>> [round(share, 3) for share in positions.shares()]
    [0.167, 1.0, 0.056]
    """

    kind = "recency_positions"

    def __init__(self, size: int = 5, prior_strength: float = 10.0, decay: float = 0.9999):
        if size < 0:  # 0: no recent item is a candidate of its own (STREAM_APP_COVIS_PREV_ITEMS=0)
            raise ValueError(f"size must be 0 or more, not {size}")
        if prior_strength <= 0:
            raise ValueError(f"prior_strength must be positive, not {prior_strength}")
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], not {decay}")
        self.size = size
        self.prior_strength = prior_strength
        self.decay = decay
        self.counts = [0.0] * size

    def snapshot(self) -> "RecencyPositions":
        twin = copy.copy(self)
        twin.counts = list(self.counts)
        return twin

    def _fresh(self) -> "RecencyPositions":
        return RecencyPositions(self.size, self.prior_strength, self.decay)

    def _state(self) -> dict[str, Any]:
        return {"size": self.size, "prior_strength": float(self.prior_strength), "decay": float(self.decay),
                "counts": list(self.counts)}

    @classmethod
    def _from_state(cls, fields: Fields, version: int) -> "RecencyPositions":
        size, counts = fields.integer("size"), fields.numbers("counts", minimum=0.0)
        if len(counts) != size:  # before the constructor allocates `size` counts (a forged size ran out of memory)
            raise StateError(f"{fields.where}: {len(counts)} counts for {size} positions")
        positions = cls(size, fields.number("prior_strength"), fields.number("decay"))
        positions.counts = counts
        return positions

    def resize(self, size: int) -> None:
        """Keep `size` positions from now on (the setting changed): the counts of the positions both sizes
        have stay."""
        self.counts = (self.counts + [0.0] * size)[:size]
        self.size = size

    def learn_one(self, recent: Sequence[str], item_id: str) -> None:
        """One event on `item_id` by a user whose distinct recent items were `recent` (most recent first,
        before the event). A user with no recent item says nothing about positions; an event on an item
        outside them still counts, as evidence against every position (the decay)."""
        if not recent:
            return
        decay = self.decay
        counts = self.counts
        for position in range(self.size):
            counts[position] *= decay
        for position, recent_item in enumerate(recent[: self.size]):
            if recent_item == item_id:
                counts[position] += 1.0
                break

    def shares(self) -> list[float]:
        """Each position's weight, the best 1: pseudo-counts in the shape 1 / (1 + position) plus the counts."""
        base = [1.0 / (position + 1) for position in range(self.size)]
        scale = self.prior_strength / max(sum(base), 1.0)
        weights = [scale * shape + count for shape, count in zip(base, self.counts)]
        best = max(weights, default=1.0)
        return [weight / best for weight in weights]
