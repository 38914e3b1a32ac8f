"""Behaviour statistics of a user: repeat propensity, event-type mix, dwell and sessions."""

from __future__ import annotations

from typing import Any

from river import stats

from ..events import KINDS, Event, event_kind
from .base import ProfileLearner
from .state import Fields, StateError, mean_from, mean_state


class EWMean:
    """An exponentially weighted mean, weight `alpha` on the newest value, starting at the first value:
    River's `stats.EWMean` to the bit (tested), whose state lives in Rust where only pickle reaches it.
    Its state is its mean, None before the first value."""

    __slots__ = ("alpha", "rest", "mean")

    def __init__(self, alpha: float, mean: float | None = None):
        self.alpha = alpha
        self.rest = 1.0 - alpha
        self.mean = mean

    def update(self, x: float) -> None:
        self.mean = x if self.mean is None else self.alpha * x + self.rest * self.mean

    def get(self) -> float:
        return 0.0 if self.mean is None else self.mean


class BehaviourStats(ProfileLearner):
    """Exponentially weighted means (`EWMean`, weight `alpha` on the newest event) of:
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

    name = kind = "behaviour"

    def __init__(self, alpha: float = 0.1, session_gap_ms: int = 30 * 60 * 1000):
        self.alpha = alpha
        self.session_gap_ms = session_gap_ms
        self.repeat = EWMean(alpha)
        self.kinds = {kind: EWMean(alpha) for kind in KINDS}
        self.dwell_ms = EWMean(alpha)
        self.session_length = stats.Mean()
        self.sessions = 0
        self.current_session: str | None = None
        self.current_length = 0
        self.last_ts: int | None = None

    def _fresh(self) -> "BehaviourStats":
        return BehaviourStats(self.alpha, self.session_gap_ms)

    def _state(self) -> dict[str, Any]:
        return {"alpha": float(self.alpha), "session_gap_ms": self.session_gap_ms, "repeat": self.repeat.mean,
                "kinds": {kind: mean.mean for kind, mean in self.kinds.items()}, "dwell_ms": self.dwell_ms.mean,
                "session_length": mean_state(self.session_length), "sessions": self.sessions,
                "current_session": self.current_session, "current_length": self.current_length,
                "last_ts": self.last_ts}

    @classmethod
    def _from_state(cls, fields: Fields, version: int) -> "BehaviourStats":
        # the means are of 0/1 outcomes: a forged one past 1 made a feature past float16 (the stored rows) and the
        # user's lists unlearnable
        learner = cls(fields.number("alpha", 0.0, 1.0), fields.integer("session_gap_ms"))
        alpha = learner.alpha
        learner.repeat = EWMean(alpha, fields.share("repeat"))
        kinds = fields.mapping("kinds", Fields.share)
        if list(kinds) != list(KINDS):
            raise StateError(f"{fields.where}: 'kinds' must have the event kinds {list(KINDS)}, not {list(kinds)}")
        learner.kinds = {kind: EWMean(alpha, mean) for kind, mean in kinds.items()}
        learner.dwell_ms = EWMean(alpha, fields.optional_number("dwell_ms", minimum=0.0))
        learner.session_length = mean_from(fields.nested("session_length"))
        learner.sessions = fields.integer("sessions")
        learner.current_session = fields.optional_text("current_session")
        learner.current_length = fields.integer("current_length")
        learner.last_ts = fields.optional_integer("last_ts")
        return learner

    def learn_one(self, profile: Any, event: Event) -> None:
        self.repeat.update(1.0 if event.item_id in profile.item_affinity else 0.0)
        kind = event_kind(event.type, event.stage)
        for name, mean in self.kinds.items():
            mean.update(1.0 if name == kind else 0.0)
        if event.dwell_ms is not None:
            self.dwell_ms.update(float(event.dwell_ms))
        new_session = (self.last_ts is None
                       or (event.session_id is not None and event.session_id != self.current_session)
                       or event.ts - self.last_ts >= self.session_gap_ms)
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
