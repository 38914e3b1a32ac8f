"""Interest drift: notice when a user's categories change, and let old interests fade at once."""

from __future__ import annotations

import math
from typing import Any

from river.drift.binary import DDM

from .. import decay
from ..events import Event
from .base import ProfileLearner


class InterestDrift(ProfileLearner):
    """A River DDM detector on the user's "surprise" stream: 1 when an event's category is not
    among the profile's `top` strongest categories, else 0. When DDM reports a drift, every item
    and category affinity the profile holds is divided by `downweight`, so the interests that
    follow the change dominate the profile from then on instead of after several half-lives.

    >>> from stream_app.config import Settings
    >>> from stream_app.core import new_profile
    >>> from stream_app.events import Event
    >>> from stream_app.profile import apply_event, event_digest
    >>> settings = Settings()
    >>> profile = new_profile("u", settings)
    >>> learner = InterestDrift(warm_start=10)
    >>> for i in range(80):
    ...     category = "shoes" if i < 40 else "garden"
    ...     event = Event(f"e{i}", "u", f"i{i}", "click", 1_000_000 + i * 1000, category=category)
    ...     learner.learn_one(profile, event)
    ...     apply_event(profile, event, event_digest(event.event_id), settings)
    >>> learner.drifts
    1
    >>> max(profile.category_affinity, key=profile.category_affinity.get)
    'garden'
    """

    name = "interest_drift"

    def __init__(self, top: int = 3, downweight: float = 8.0, warm_start: int = 30,
                 drift_threshold: float = 3.0):
        self.top = top
        self.downweight = downweight
        self.warm_start = warm_start
        self.drift_threshold = drift_threshold
        self.detector = DDM(warm_start=warm_start, drift_threshold=drift_threshold)
        self.drifts = 0
        self.last_drift_ts: int | None = None

    def _fresh(self) -> "InterestDrift":
        return InterestDrift(self.top, self.downweight, self.warm_start, self.drift_threshold)

    def public(self) -> dict[str, Any]:
        return {"interest_drifts": self.drifts, "last_drift_ts": self.last_drift_ts}

    def learn_one(self, profile: Any, event: Event) -> None:
        if event.category is None or not profile.category_affinity:
            return
        strongest = {c for c, _ in decay.top(profile.category_affinity, self.top)}
        self.detector.update(0 if event.category in strongest else 1)
        if self.detector.drift_detected:
            self.drifts += 1
            self.last_drift_ts = event.ts
            shift = math.log2(self.downweight)
            profile.category_affinity = {k: v - shift for k, v in profile.category_affinity.items()}
            profile.item_affinity = {k: v - shift for k, v in profile.item_affinity.items()}
