"""Behaviour statistics of a user: repeat propensity, event-type mix, dwell and sessions (River stats)."""

from __future__ import annotations

from typing import Any

from river import stats

from ..events import KINDS, Event, event_kind
from .base import ProfileLearner


class BehaviourStats(ProfileLearner):
    """Exponentially weighted means (River `stats.EWMean`, weight `alpha` on the newest event) of:
    whether the event's item is one the profile already holds (repeat propensity, which the ranker
    uses to trust the "viewed before" source), the event-type mix, and browse dwell time; plus the
    session count and mean events per session (River `stats.Mean`), a session ending at a new
    `session_id` or after `session_gap_ms` of silence. `public()` is what the public profile shows.

    >>> from stream_app.config import Settings
    >>> from stream_app.core.process import new_profile
    >>> from stream_app.core.profile import apply_event, event_digest
    >>> profile, learner = new_profile("u", Settings()), BehaviourStats()
    >>> for i, item in enumerate(["a", "a", "b", "a"]):
    ...     event = Event(f"e{i}", "u", item, "browse", i * 60_000, dwell_ms=1000)
    ...     learner.learn_one(profile, event)
    ...     apply_event(profile, event, event_digest(event.event_id), Settings())
    >>> learner.public()["repeat_propensity"], learner.public()["sessions"]
    (0.181, 1)
    """

    name = "behaviour"

    def __init__(self, alpha: float = 0.1, session_gap_ms: int = 30 * 60 * 1000):
        self.alpha = alpha
        self.session_gap_ms = session_gap_ms
        self.repeat = stats.EWMean(alpha)
        self.kinds = {kind: stats.EWMean(alpha) for kind in KINDS}
        self.dwell_ms = stats.EWMean(alpha)
        self.session_length = stats.Mean()
        self.sessions = 0
        self.current_session: str | None = None
        self.current_length = 0
        self.last_ts: int | None = None

    def _fresh(self) -> "BehaviourStats":
        return BehaviourStats(self.alpha, self.session_gap_ms)

    def learn_one(self, profile: Any, event: Event) -> None:
        self.repeat.update(1.0 if event.item_id in profile.item_affinity else 0.0)
        kind = event_kind(event.type, event.stage)
        for name, mean in self.kinds.items():
            mean.update(1.0 if name == kind else 0.0)
        if event.dwell_ms is not None:
            self.dwell_ms.update(float(event.dwell_ms))
        new_session = (self.last_ts is None
                       or (event.session_id is not None and event.session_id != self.current_session)
                       or event.ts - self.last_ts > self.session_gap_ms)
        if new_session:
            if self.current_length:
                self.session_length.update(self.current_length)
            self.sessions += 1
            self.current_length = 0
        self.current_session = event.session_id
        self.current_length += 1
        self.last_ts = event.ts if self.last_ts is None else max(self.last_ts, event.ts)

    @property
    def repeat_propensity(self) -> float:
        return self.repeat.get()

    def public(self) -> dict[str, Any]:
        return {
            "repeat_propensity": round(self.repeat.get(), 4),
            "type_mix": {kind: round(mean.get(), 4) for kind, mean in self.kinds.items()},
            "dwell_ms_mean": round(self.dwell_ms.get(), 1) if self.dwell_ms.get() else None,
            "sessions": self.sessions,
            "events_per_session": round(self.session_length.get(), 2) if self.session_length.n else None,
        }
