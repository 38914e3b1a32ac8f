"""Learner state as plain versioned data: a restored learner goes on exactly as the one that was written,
a record of an unknown kind, version or shape is refused with a clear reason, state written by the
release that pickled it is migrated, and nothing in a record runs (no pickle but the legacy reader)."""

from __future__ import annotations

import base64
import json
import pickle
import random
import re
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest
from river import stats
from state_fixtures import probe

from stream_app.config import Settings
from stream_app.contracts import load_schema
from stream_app.core.events import Event
from stream_app.core.learners import (
    LEARNERS,
    BehaviourStats,
    InterestDrift,
    OnlineRanker,
    PartitionLearners,
    ProfileLearner,
    RecencyPositions,
    StateError,
    StrategyBandit,
    load_state,
    read_partition_learners,
    read_profile_learner,
)
from stream_app.core.learners.behaviour import EWMean
from stream_app.core.learners.state import pack_floats
from stream_app.core.process import new_partition_learners, new_profile
from stream_app.core.profile import Profile, apply_event, event_digest
from stream_app.core.recommend import FEATURES

SETTINGS = Settings()
DATA = Path(__file__).parent / "data"
ROWS = np.array([[((i * 5 + j * 3) % 7) / 6.0 for j in range(len(FEATURES))] for i in range(8)])


def stream(seed: int, n: int) -> list[Event]:
    """A random user's events: sessions of a few events on a few items and categories, some dwell."""
    rng = random.Random(seed)
    events, ts, session = [], 1_700_000_000_000, 0
    for i in range(n):
        if rng.random() < 0.25:
            session += 1
            ts += rng.choice([60_000, 3_600_000, 86_400_000])
        ts += rng.randrange(1, 120_000)
        kind = rng.choice(["browse", "browse", "click", "purchase"])
        events.append(Event(f"e{seed}-{i}", "u", f"i{rng.randrange(12)}", kind, ts,
                            session_id=f"s{session}" if rng.random() < 0.8 else None,
                            category=f"c{rng.randrange(4 if i < n // 2 else 8)}",
                            dwell_ms=rng.randrange(100, 30_000) if rng.random() < 0.5 else None,
                            stage=rng.choice(["cart", "order"]) if kind == "purchase" else None))
    return events


class Driver:
    """Drives a learner with a seeded stream of its own kind of input; `step` returns what it said."""

    def __init__(self, cls: type, seed: int):
        self.cls, self.rng = cls, random.Random(seed)
        self.profile = new_profile("u", SETTINGS)
        self.events = iter(stream(seed, 10_000))

    def make(self):
        if self.cls is OnlineRanker:
            return OnlineRanker(FEATURES, warm_up=5)
        if self.cls is PartitionLearners:
            return PartitionLearners(OnlineRanker(FEATURES, warm_up=5), StrategyBandit(seed=3))
        if self.cls is InterestDrift:
            return InterestDrift(min_sessions=2, threshold=2.0)
        return self.cls()

    def step(self, learner) -> object:
        rng = self.rng
        if isinstance(learner, ProfileLearner):
            event = next(self.events)
            learner.learn_one(self.profile, event)
            apply_event(self.profile, event, event_digest(event.event_id), SETTINGS)
            return learner.public(), dict(self.profile.interests)
        if isinstance(learner, PartitionLearners):
            return self.step(learner.ranker), self.step(learner.bandit), self.step(learner.positions)
        if isinstance(learner, RecencyPositions):
            recent = rng.sample([f"i{i}" for i in range(8)], rng.randrange(0, 7))
            learner.learn_one(recent, f"i{rng.randrange(9)}")
            return learner.shares()
        if isinstance(learner, OnlineRanker):
            shown = [f"c{i}" for i in range(len(ROWS))]
            hit = rng.choice([*shown, "elsewhere"])
            learner.learn_feedback(shown, ROWS, hit, f"x{rng.random()}", top_k=3)
            return learner.score_many(ROWS).tolist(), learner.ranker_rr, learner.prior_rr, learner.ready
        segment = rng.choice(["new", "returning"])
        arm = learner.pull(segment)
        learner.update(segment, arm, float(rng.random() < (0.7 if arm == "ranker" else 0.4)))
        return arm


def record(learner) -> bytes:
    return orjson.dumps(learner.to_state())


def restored(learner):
    return load_state(orjson.loads(record(learner)), type(learner))


@pytest.mark.parametrize("cls", [*LEARNERS, PartitionLearners])
@pytest.mark.parametrize("seed,learned", [(1, 0), (2, 1), (3, 7), (4, 60), (5, 400)])
def test_a_restored_learner_goes_on_exactly_like_the_original(cls, seed, learned):
    """Learn N inputs, write, read back, then feed both the same inputs: the same answers and the same
    records after, float for float (a worker's recovery and `evaluate` agree only so)."""
    driver = Driver(cls, seed)
    original = driver.make()
    for _ in range(learned):
        driver.step(original)
    copy = restored(original)
    assert record(copy) == record(original)
    twin = Driver(cls, seed)
    twin.rng.setstate(driver.rng.getstate())
    twin.profile = Profile.from_json(driver.profile.to_json())
    rest = list(driver.events)  # both the same remaining events
    driver.events, twin.events = iter(rest), iter(list(rest))
    for _ in range(60):
        assert twin.step(copy) == driver.step(original)
    assert record(copy) == record(original)
    assert record(restored(copy)) == record(original)


def test_the_ewmean_is_rivers_to_the_bit():
    """BehaviourStats' EWMean replaces River's, whose state lives in Rust where only pickle reaches it."""
    rng = random.Random(5)
    for alpha in (0.1, 0.5, 0.03):
        ours, rivers = EWMean(alpha), stats.EWMean(alpha)
        for _ in range(3000):
            x = rng.choice([0.0, 1.0, rng.random() * 1e4, -rng.random()])
            ours.update(x)
            rivers.update(x)
            assert ours.get() == rivers.get()


def test_a_record_of_another_kind_version_or_shape_is_refused_with_the_reason():
    learner = BehaviourStats()
    learner.learn_one(new_profile("u", SETTINGS), Event("e", "u", "i", "click", 1))
    good = learner.to_state()

    def refused(data, expected=ProfileLearner) -> str:
        with pytest.raises(StateError) as error:
            load_state(data, expected, "user 'u': learner behaviour")
        return str(error.value)

    assert "unknown kind 'shiny'" in refused({**good, "kind": "shiny"})
    assert "unknown kind 'ranker'" in refused(OnlineRanker(FEATURES).to_state())  # not a profile learner
    assert "version 2 is not one this release reads [1]" in refused({**good, "v": 2})
    assert "'v' must be an integer" in refused({**good, "v": "1"})
    assert "the field 'sessions' is missing" in refused({k: v for k, v in good.items() if k != "sessions"})
    assert "unknown fields ['extra']" in refused({**good, "extra": 1})
    assert "'sessions' must be an integer" in refused({**good, "sessions": 1.5})
    assert "'repeat' must be a number from 0 to 1" in refused({**good, "repeat": "0.5"})
    assert "'repeat' must be a number from 0 to 1" in refused({**good, "repeat": 1e300})  # a mean of 0/1 outcomes
    assert "'kinds' must have the event kinds" in refused({**good, "kinds": {"browse": 0.1}})
    assert "session_length: the field 'n' is missing" in refused({**good, "session_length": {"mean": 1.0}})
    assert "expected an object, not list" in refused([good])
    ranker = OnlineRanker(FEATURES).to_state()
    assert "'steps' must be an integer of at least 0" in refused(
        {**ranker, "model": {**ranker["model"], "steps": None}}, OnlineRanker)
    assert "a model of 16 hidden units has 51 numbers per feature and 96 others" in refused(
        {**ranker, "model": {**ranker["model"], "rest": pack_floats(np.zeros(3))}}, OnlineRanker)
    assert "'rest' must be float64s packed as base64" in refused(
        {**ranker, "model": {**ranker["model"], "rest": [0.0] * 96}}, OnlineRanker)
    assert "'rest' must be finite numbers" in refused(
        {**ranker, "model": {**ranker["model"], "rest": pack_floats(np.full(96, np.nan))}}, OnlineRanker)
    bandit = StrategyBandit()
    bandit.update("new", "ranker", 1.0)
    state = bandit.to_state()
    state["policies"]["new"]["rng"]["mt"] = base64.b64encode(b"short").decode()
    assert "not a random generator's state" in refused(state, StrategyBandit)
    with pytest.raises(StateError, match="holds the state of 'behaviour'"):
        read_profile_learner(good, InterestDrift.name, "user 'u': learner interest_drift")


def test_a_learner_state_that_is_not_an_object_is_refused_whole_and_the_profile_still_serialises():
    profile = new_profile("u", SETTINGS)
    profile.learner(BehaviourStats.name, BehaviourStats).learn_one(profile, Event("e", "u", "i", "click", 1))
    data = profile.to_dict()
    restored = Profile.from_dict({**data, "learner_state": ["forged"]})
    assert restored.rejected_state == [("learner_state", ["forged"], "learner_state must be an object")]
    assert restored.learner(BehaviourStats.name, BehaviourStats).sessions == 0
    assert restored.to_dict()["learner_state"][BehaviourStats.name]["sessions"] == 0


class Forged:
    """What someone who can write to a changelog topic might put there: a pickle that runs a command."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.path}",)


def test_a_forged_pickle_runs_nothing_and_is_refused(tmp_path):
    witness = tmp_path / "pwned"
    forged = base64.b64encode(pickle.dumps(Forged(witness))).decode("ascii")
    with pytest.raises(StateError, match="may not name posix.system"):
        read_profile_learner(forged, BehaviourStats.name, "user 'u': learner behaviour")
    with pytest.raises(StateError, match="may not name posix.system"):
        read_partition_learners(forged.encode(), "partition 0's learners")
    # a pickle of an allowed River class is only data: nothing of it is built, and it is not a learner
    river_only = base64.b64encode(pickle.dumps(stats.Mean())).decode("ascii")
    with pytest.raises(StateError, match="holds a river.stats.mean.Mean, not a learner"):
        read_profile_learner(river_only, BehaviourStats.name, "user 'u'")
    for junk in (b"not base64!", b"{not json", b"\xff\xfe"):
        with pytest.raises(StateError):
            read_partition_learners(junk, "partition 0's learners")
    assert not witness.exists()


@pytest.mark.parametrize("fixture", ["learner-state-pickle.json", "learner-state-v1.json"])
def test_state_written_by_an_earlier_release_loads_and_goes_on_as_it_would_have(fixture):
    """The profile changelog record and partition-learners record of a release (pickled: 8c798f3; v1: the
    first versioned data), restored by this release, answer the fixed probe exactly as that release's
    own learners did (tests/state_fixtures.py wrote both), the rest exactly, but the ranker: its scores
    before it learns are that release's up to one constant (the linear ranker's intercept, which a pairwise
    score does not need), so it ranks as it did; what it learns then is hybrid-v10's scorer's, not the
    linear one's, so its scores after learning, and the hit rates it keeps, are not that release's."""
    stored = json.loads((DATA / fixture).read_text())
    profile = Profile.from_dict(stored["profile"])
    learners = read_partition_learners(stored["partition_learners"].encode(), "partition 0's learners")
    jsonschema.validate(stored["profile"], load_schema("profile"))
    answered = orjson.loads(orjson.dumps(probe(profile, learners)))
    assert answered.keys() == stored["probe"].keys()
    for name, value in stored["probe"].items():
        if name == "scores_before":
            shift = np.array(answered[name]) - np.array(value)
            assert shift == pytest.approx(np.full(len(value), shift[0]), abs=1e-12) and shift[0] != 0.0
        elif name == "ranker_after":  # labels and positives learned; ranker_rr and prior_rr: see above
            assert answered[name][:2] == value[:2]
        elif name != "scores_after":
            assert answered[name] == value, name
    assert profile.rejected_state == []
    # migrated state is written back as today's data
    assert {state["kind"] for state in profile.to_dict()["learner_state"].values()} == {"behaviour", "interest_drift"}
    jsonschema.validate(profile.to_dict(), load_schema("profile"))


def test_migrated_state_equals_the_state_the_same_run_writes_today():
    """The legacy record, migrated, is the record this release writes for the same events (same run)."""
    old = json.loads((DATA / "learner-state-pickle.json").read_text())
    new = json.loads((DATA / "learner-state-v1.json").read_text())
    migrated = read_partition_learners(old["partition_learners"].encode(), "p").to_state()
    assert migrated == read_partition_learners(new["partition_learners"].encode(), "p").to_state()
    assert migrated["v"] == PartitionLearners.version and migrated["writes"] == 0  # v1 records: none counted
    profile = Profile.from_dict(old["profile"])
    for name, make in ((BehaviourStats.name, BehaviourStats), (InterestDrift.name, InterestDrift)):
        profile.learner(name, make)
    assert profile.to_dict()["learner_state"] == new["profile"]["learner_state"]


def test_no_pickle_in_the_service_but_the_legacy_reader():
    root = Path(__file__).parent.parent / "stream_app"
    importing = sorted(str(path.relative_to(root)) for path in root.rglob("*.py")
                       if re.search(r"^\s*(import|from)\s+(c?pickle|dill|marshal|shelve)\b", path.read_text(), re.M))
    assert importing == ["core/learners/legacy.py"]


def test_a_ranker_restored_with_another_releases_features_ranks_and_learns_with_todays():
    """A release that adds features restores rankers written with the old ones from the learners' table:
    they adopt today's features, by name, keeping the weights they learned (no shape error on every event)."""
    from stream_app.core.items import InMemoryItemIndex
    from stream_app.core.process import new_partition_learners, process
    from stream_app.stream.batch import PartitionState

    settings = Settings(ranker_warm_up=1)
    written = new_partition_learners(settings, 0)
    written.ranker = OnlineRanker(FEATURES[:-3], warm_up=1)  # as an earlier release wrote it
    rows = np.eye(len(written.ranker.features))[:6]
    for i in range(30):
        written.ranker.learn_feedback([f"c{j}" for j in range(6)], rows, f"c{i % 2}", f"e{i}", top_k=3)
    learned = written.ranker.model.state()["columns"]
    rejected = []
    learners = PartitionState({b"0": orjson.dumps(written.to_state())}, settings).get(0, rejected.append)
    assert rejected == [] and learners.ranker.features == FEATURES
    profile, index = new_profile("u", settings), InMemoryItemIndex(settings)
    for i in range(3):
        outcome = process(profile, Event(f"x{i}", "u", f"i{i}", "click", 1_700_000_000_000 + i), index, settings,
                          0, learners)
        assert outcome.recommendation is not None
    # what it learned is kept by name (a fresh profile has no judged list yet: nothing was learned above)
    assert all(learners.ranker.model.state()["columns"][name] == column for name, column in learned.items())
    today = np.eye(len(FEATURES))[[0, 1, 2, len(FEATURES) - 1]]  # the last row: a feature the old release lacked
    assert learners.ranker.learn_feedback(["a", "b", "c", "d"], today, "d", "after", top_k=3) == 6
    after = learners.ranker.model.state()["columns"]
    assert FEATURES[-1] not in learned and after[FEATURES[-1]] != pack_floats(np.zeros(51))  # it started at 0


def test_a_snapshot_is_the_learners_as_they_were_and_shares_nothing_with_them():
    # the batch handler puts a snapshot back when an event fails part-way: it must not move with the learners
    learners = new_partition_learners(Settings(bandit=True), 3)
    rng = np.random.default_rng(5)
    n = len(learners.ranker.features)
    learners.ranker.learn_pairs(rng.random((2, n)), rng.random((2, n)))
    before = orjson.dumps(learners.to_state())
    snapshot = learners.snapshot()
    learners.ranker.learn_pairs(rng.random((2, n)), rng.random((2, n)))
    learners.ranker.judge(rng.random((5, n)), 1, 3)
    learners.ranker.model.retired["gone"] = np.zeros(3)
    learners.positions.learn_one(["a", "b"], "b")
    learners.bandit.update("new", learners.bandit.pull("new"), 1.0)
    assert orjson.dumps(snapshot.to_state()) == before != orjson.dumps(learners.to_state())
    snapshot.ranker.learn_pairs(rng.random((2, n)), rng.random((2, n)))
    assert snapshot.ranker.model.theta.tolist() != learners.ranker.model.theta.tolist()


def test_a_ranker_record_of_no_features_adopts_todays():
    # its gather was reshaped by "-1" and a record with "features": [] raised ValueError in every round of its partition
    from stream_app.stream.batch import PartitionState

    settings = Settings()
    learners = new_partition_learners(settings, 0)
    learners.ranker = OnlineRanker((), hidden=4)
    refused: list = []
    restored = PartitionState({b"0": orjson.dumps(learners.to_state())}, settings).get(0, refused.append)
    assert not refused and restored.ranker.features == new_partition_learners(settings, 0).ranker.features
