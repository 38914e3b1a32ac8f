"""Every per-user learner survives pickle and clone: its state is persisted in the profile table."""

import doctest
import pickle

import pytest

from stream_app import core
from stream_app.config import Settings
from stream_app.events import Event
from stream_app.items import InMemoryItemIndex, SignalBuffer
from stream_app.learners import LEARNERS, interest_drift
from stream_app.profile import Profile, apply_event, event_digest

SETTINGS = Settings()


def shifting_events(n=120):
    return [Event(f"e{i}", "u", f"i{i % 7}", "click", 1_000_000 + i * 1000,
                  category="shoes" if i < n // 2 else "garden") for i in range(n)]


def feed(learner, profile, events):
    for event in events:
        learner.learn_one(profile, event)
        apply_event(profile, event, event_digest(event.event_id), SETTINGS)


@pytest.mark.parametrize("cls", LEARNERS)
def test_pickled_learner_continues_exactly_like_the_original(cls):
    events = shifting_events()
    original, profile = cls(), core.new_profile("u", SETTINGS)
    feed(original, profile, events[:50])
    restored = pickle.loads(pickle.dumps(original))
    copy_profile = Profile.from_json(profile.to_json())
    feed(original, profile, events[50:])
    feed(restored, copy_profile, events[50:])
    assert pickle.dumps(restored.__dict__) == pickle.dumps(original.__dict__)
    assert copy_profile.to_dict(internal=False) == profile.to_dict(internal=False)


@pytest.mark.parametrize("cls", LEARNERS)
def test_clone_has_the_settings_and_none_of_the_state(cls):
    learner = cls()
    feed(learner, core.new_profile("u", SETTINGS), shifting_events())
    fresh = learner.clone()
    assert type(fresh) is cls
    assert pickle.dumps(fresh.__dict__) == pickle.dumps(cls().__dict__)


def test_learner_state_travels_in_the_profile_json_and_not_in_public_snapshots():
    settings = Settings(drift_handling=True)
    profile, index = core.new_profile("u", settings), InMemoryItemIndex(settings)
    for event in shifting_events():
        core.process(profile, event, index, SignalBuffer(settings.half_life_ms), settings, now_ms=0)
    drift = profile.live[interest_drift.InterestDrift.name]
    assert drift.drifts >= 1
    restored = Profile.from_json(profile.to_json())
    again = restored.learner(interest_drift.InterestDrift.name, lambda: None)
    assert again.drifts == drift.drifts and again.last_drift_ts == drift.last_drift_ts
    assert "learner_state" not in profile.to_dict(internal=False)


def test_docstring_examples_run():
    assert doctest.testmod(interest_drift).failed == 0
