"""A text-aware baseline: sequential rules, and where their list is short, the items whose text is nearest.

The strongest baseline on the shop log reads no item text, so the hybrid's lead there could be the text's
alone: this one gives a literature baseline the same text (the same catalogue and content model, each item
visible from its listing time) with the plainest combination, a fallback: the rules' list as it is, then the
items nearest in text to the item just seen, by cosine, until the list holds k. No weights to tune.

    >>> import numpy as np
    >>> from stream_app.core.content import ContentIndex
    >>> from stream_app.core.events import Event
    >>> text = ContentIndex("v", ["mug", "cup", "lamp"], ["MUG", "CUP", "LAMP"],
    ...                     np.array([[1, 0], [0.9, 0.436], [0, 1]], np.float32))
    >>> model = SequentialRulesThenText(text, k=2)
    >>> model.begin_batch([]); model.learn(Event("e1", "u", "mug", "click", 1))
    ['cup', 'lamp']
"""

from __future__ import annotations

from typing import Any, Protocol

from ..core.events import Event
from .baselines import SequentialRules, Session


class SimilarTexts(Protocol):
    """What the baseline reads of the catalogue's text (core.content.ContentIndex)."""

    def similar(self, item_id: str, k: int, now_ms: float = ...) -> dict[str, float]: ...


class SequentialRulesThenText(SequentialRules):
    """`SequentialRules` (steps as there), then the items listed by the event's time whose text is nearest the
    item just seen (not itself, nor an item the rules listed), best cosine first, ties by item id."""

    def __init__(self, content: SimilarTexts, k: int = 20, steps: int = 10, **options: Any):
        super().__init__(k, steps, **options)
        self.content = content
        self.label = f"sequential rules (steps {steps}), then similar text"

    def _recommend(self, event: Event, session: Session) -> list[str]:
        rules = super()._recommend(event, session)
        if len(rules) >= self.k:
            return rules
        # at most len(rules) of the k nearest are among the rules' items: k - len(rules) remain
        similar = self.content.similar(session.items[-1], self.k, event.ts)
        had = set(rules)
        excluded = self._excluded(event, session)
        fill = [item for item in similar if item not in had and item not in excluded][: self.k - len(rules)]
        return rules + fill
