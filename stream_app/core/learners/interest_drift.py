"""Interest drift: notice when a user's interests change, and let the old ones fade at once."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..events import Event
from .base import ProfileLearner
from .state import Fields, mean_from, mean_state

if TYPE_CHECKING:
    from river import drift

MAX_SURPRISE_BITS = 8.0


class InterestDrift(ProfileLearner):
    """A River Page-Hinkley test on how surprising each new session is to the profile's long-term
    interests: at a session's first event, the surprise is -log2 of its category's share of the
    interests (capped at 8 bits; the user's first session is 0). Sessions, not events, are the
    observations: the events of a session share its topic, so counting each would make one
    off-topic session look like a change. When the test fires, the interests are divided by
    `downweight` (aged log2(downweight) long half-lives at once), so the interests after the change
    dominate, and the test restarts.

    A session starts at a new `session_id`, or after `session_gap_ms` of silence.

    >>> from stream_app.config import Settings
    >>> from stream_app.core.process import new_profile
    >>> from stream_app.core.events import Event
    >>> from stream_app.core.profile import apply_event, event_digest
    >>> settings = Settings()
    >>> profile = new_profile("u", settings)
    >>> learner = InterestDrift()
    >>> for i in range(60):  # 12 sessions of 5 events: shoes, then garden from the 7th on
    ...     category = "shoes" if i < 30 else "garden"
    ...     event = Event(f"e{i}", "u", f"i{i}", "click", i * 3_600_000, session_id=f"s{i // 5}",
    ...                   category=category)
    ...     learner.learn_one(profile, event)
    ...     apply_event(profile, event, event_digest(event.event_id), settings)
    >>> learner.drifts
    1
    >>> max(profile.interests, key=profile.interests.get)
    'garden'
    """

    name = kind = "interest_drift"

    def __init__(self, downweight: float = 8.0, threshold: float = 8.0, delta: float = 1.0, min_sessions: int = 3,
                 session_gap_ms: int = 30 * 60 * 1000):
        self.downweight = downweight
        self.threshold = threshold
        self.delta = delta
        self.min_sessions = min_sessions
        self.session_gap_ms = session_gap_ms
        self.detector = self._detector()
        self.drifts = 0
        self.last_drift_ts: int | None = None
        self.session: str | None = None
        self.last_ts: int | None = None

    def _detector(self) -> drift.PageHinkley:
        # imported on first use: river.drift imports River's data sets (and scikit-learn where installed),
        # most of a second at every start, and drift handling is off by default
        from river import drift

        return drift.PageHinkley(min_instances=self.min_sessions, delta=self.delta, threshold=self.threshold,
                                 mode="up")

    def _fresh(self) -> "InterestDrift":
        return InterestDrift(self.downweight, self.threshold, self.delta, self.min_sessions, self.session_gap_ms)

    def _state(self) -> dict[str, Any]:
        return {"downweight": float(self.downweight), "threshold": float(self.threshold), "delta": float(self.delta),
                "min_sessions": self.min_sessions, "session_gap_ms": self.session_gap_ms,
                "detector": detector_state(self.detector), "drifts": self.drifts,
                "last_drift_ts": self.last_drift_ts, "session": self.session, "last_ts": self.last_ts}

    @classmethod
    def _from_state(cls, fields: Fields, version: int) -> "InterestDrift":
        learner = cls(fields.number("downweight"), fields.number("threshold"), fields.number("delta"),
                      fields.integer("min_sessions"), fields.integer("session_gap_ms"))
        set_detector_state(learner.detector, fields.nested("detector"))
        learner.drifts = fields.integer("drifts")
        learner.last_drift_ts = fields.optional_integer("last_drift_ts")
        learner.session = fields.optional_text("session")
        learner.last_ts = fields.optional_integer("last_ts")
        return learner

    def public(self) -> dict[str, Any]:
        return {"interest_drifts": self.drifts, "last_drift_ts": self.last_drift_ts}

    def learn_one(self, profile: Any, event: Event) -> None:
        new_session = (self.last_ts is None
                       or (event.session_id is not None and event.session_id != self.session)
                       or event.ts - self.last_ts >= self.session_gap_ms)
        self.session = event.session_id
        self.last_ts = event.ts if self.last_ts is None else max(self.last_ts, event.ts)
        if not new_session or event.category is None:
            return
        if not profile.interests:  # the first session defines the interests: no surprise
            self.detector.update(0.0)
            return
        best = max(profile.interests.values())
        total = sum(2.0 ** (v - best) for v in profile.interests.values())
        mine = profile.interests.get(event.category)
        share = 2.0 ** (mine - best) / total if mine is not None else 0.0
        self.detector.update(min(MAX_SURPRISE_BITS, -math.log2(share)) if share > 0 else MAX_SURPRISE_BITS)
        if self.detector.drift_detected:
            self.drifts += 1
            self.last_drift_ts = event.ts
            shift = math.log2(self.downweight)
            profile.interests = {k: v - shift for k, v in profile.interests.items()}
            self.detector = self._detector()


def detector_state(detector: drift.PageHinkley) -> dict[str, Any]:
    """The numbers of a River Page-Hinkley test (its settings are the learner's); no minimum yet (inf): None."""
    low = detector._min_increase
    return {"x_mean": mean_state(detector._x_mean), "sum_increase": float(detector._sum_increase),
            "sum_decrease": float(detector._sum_decrease), "min_increase": None if math.isinf(low) else float(low),
            "max_decrease": float(detector._max_decrease), "drift_detected": bool(detector._drift_detected)}


def set_detector_state(detector: drift.PageHinkley, fields: Fields) -> None:
    detector._x_mean = mean_from(fields.nested("x_mean"))
    detector._sum_increase = fields.number("sum_increase")
    detector._sum_decrease = fields.number("sum_decrease")
    low = fields.optional_number("min_increase")
    detector._min_increase = math.inf if low is None else low
    detector._max_decrease = fields.number("max_decrease")
    detector._drift_detected = fields.flag("drift_detected")
    fields.done()
