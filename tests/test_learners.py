"""Every learner clones with its settings and none of its state, and the feedback loop from a shown list
back into the ranker labels what it should (state as data: test_learner_state.py)."""

import doctest

import numpy as np
import orjson
import pytest

from stream_app.config import Settings
from stream_app.core.events import Event
from stream_app.core.feature_rows import FEATURES, decode_features, encode_rows
from stream_app.core.items import InMemoryItemIndex
from stream_app.core.learners import (
    LEARNERS,
    OnlineRanker,
    ProfileLearner,
    RecencyPositions,
    behaviour,
    feedback_labels,
    interest_drift,
    ranker,
    recency_positions,
    strategy_bandit,
)
from stream_app.core.process import new_partition_learners, new_profile, new_ranker, process, shown_hits
from stream_app.core.profile import Profile, apply_event, event_digest
from stream_app.partitioning import murmur2, partition_of

SETTINGS = Settings()


def shifting_events(n=120):
    return [Event(f"e{i}", "u", f"i{i % 7}", "click", 1_000_000 + i * 1000, session_id=f"s{i // 5}",
                  category="shoes" if i < n // 2 else "garden", dwell_ms=100 * i) for i in range(n)]


class Feeder:
    """Drives any learner with a deterministic stream of its own kind of input."""

    def __init__(self, cls):
        self.cls = cls
        self.profile = new_profile("u", SETTINGS)

    def make(self):
        if self.cls is OnlineRanker:
            return OnlineRanker(FEATURES, warm_up=10)
        return self.cls()

    def feed(self, learner, events):
        if isinstance(learner, ProfileLearner):
            for event in events:
                learner.learn_one(self.profile, event)
                apply_event(self.profile, event, event_digest(event.event_id), SETTINGS)
        elif isinstance(learner, RecencyPositions):
            recent: list[str] = []
            for event in events:
                item_id = f"i{int(event.item_id[1:]) % 3}"  # comes back after two others: position 2
                learner.learn_one(recent, item_id)
                recent = [item_id, *(item for item in recent if item != item_id)][:5]
        elif isinstance(learner, OnlineRanker):
            for event in events:
                x = np.full((1, len(FEATURES)), int(event.item_id[1:]) / 7.0)
                better, worse = (x, 1 - x) if event.item_id.endswith(("1", "3")) else (1 - x, x)
                learner.learn_pairs(better, worse)
        else:
            for event in events:
                segment = "new" if int(event.event_id[1:]) % 3 else "returning"
                learner.update(segment, learner.pull(segment), 1.0 if event.item_id.endswith("1") else 0.0)


@pytest.mark.parametrize("cls", LEARNERS)
def test_clone_has_the_settings_and_none_of_the_state(cls):
    feeder = Feeder(cls)
    learner = feeder.make()
    feeder.feed(learner, shifting_events())
    fresh = learner.clone()
    assert type(fresh) is cls
    assert fresh.to_state() == feeder.make().to_state()
    assert fresh.to_state() != learner.to_state()


def test_learner_state_travels_in_the_profile_json_and_not_in_public_snapshots():
    settings = Settings(drift_handling=True)
    profile, index = new_profile("u", settings), InMemoryItemIndex(settings)
    for event in shifting_events():
        process(profile, event, index, settings, now_ms=0)
    drift = profile.learners[interest_drift.InterestDrift.name]
    assert drift.drifts >= 1
    restored = Profile.from_json(profile.to_json())
    again = restored.learner(interest_drift.InterestDrift.name, lambda: None)
    assert again.drifts == drift.drifts and again.last_drift_ts == drift.last_drift_ts
    public = profile.to_dict(internal=False)
    assert "learner_state" not in public and "shown_features" not in public
    assert public["stats"]["sessions"] == 24 and public["stats"]["interest_drifts"] == drift.drifts
    assert public["stats"]["events_per_session"] == 5.0


def test_behaviour_stats_learn_repeat_propensity_and_type_mix():
    learner, profile = behaviour.BehaviourStats(alpha=0.5), new_profile("u", SETTINGS)
    for i, (item, kind) in enumerate([("a", "browse"), ("a", "click"), ("a", "browse"), ("a", "click")]):
        event = Event(f"e{i}", "u", item, kind, i * 1000)
        learner.learn_one(profile, event)
        apply_event(profile, event, event_digest(event.event_id), SETTINGS)
    # repeat: 0, 1, 1, 1 with alpha 0.5 -> 0.875 (River's EWMean starts at the first value)
    assert learner.repeat_propensity == pytest.approx(0.875)
    assert learner.public()["type_mix"]["click"] == pytest.approx(0.625)


# --------------------------------------------------------------------------------- feedback labels

def test_hit_is_the_positive_and_negatives_come_from_the_rest_of_the_shown_list():
    shown = ["a", "b", "c", "d", "e", "f", "g"]
    labels = feedback_labels(shown, "c", "ev-1", negatives=3, seed=7)
    assert labels[0] == (2, True)
    negatives = [row for row, label in labels if not label]
    assert len(negatives) == 3 and 2 not in negatives and len(set(negatives)) == 3
    assert feedback_labels(shown, "c", "ev-1", 3, 7) == labels  # the same event always learns the same
    assert feedback_labels(shown, "c", "ev-2", 3, 7) != labels or feedback_labels(shown, "c", "ev-3", 3, 7) != labels


def test_a_miss_teaches_only_negatives_and_a_short_list_all_of_them():
    assert feedback_labels(["a", "b"], "z", "ev", negatives=4, seed=1) == [(0, False), (1, False)]
    assert feedback_labels(["a", "b"], "b", "ev", negatives=4, seed=1) == [(1, True), (0, False)]
    assert feedback_labels([], "b", "ev", negatives=4, seed=1) == []


def test_the_next_event_judges_the_shown_list_through_the_core():
    settings = Settings(ranker_negatives=2, ranker_warm_up=10**6, bandit=True)
    index = InMemoryItemIndex(settings)
    learners = new_partition_learners(settings, 0)
    ranker_, bandit = learners.ranker, learners.bandit
    profile = new_profile("u", settings)
    first = Event("e1", "u", "a", "click", 1000)
    outcome = process(profile, first, index, settings, 0, learners)
    assert outcome.recommendation["model"]["ranking"] == "prior"  # the ranker is not warm yet
    assert profile.shown == ["a"]  # only its own item to show so far
    assert profile.shown_strategy.startswith("new:")
    rows = decode_features(profile.to_dict()["shown_features"], 1)
    assert rows[0][FEATURES.index("last_after_click")] == 1.0
    copy = Profile.from_json(profile.to_json())
    assert copy.shown == profile.shown and copy.shown_features == profile.shown_features
    first_arm = profile.shown_strategy.split(":")[1]
    process(profile, Event("e2", "u", "a", "purchase", 2000, stage="cart"), index,
            settings, 0, learners)
    assert (ranker_.labels, ranker_.positives) == (0, 0)  # a hit, but with nothing to pair it with
    assert bandit.policies["new"]._rewards[first_arm].get() == 1.0  # the hit rewarded the strategy shown
    process(profile, Event("e3", "u", "zz", "browse", 3000), index,
            settings, 0, learners)
    assert (ranker_.labels, ranker_.positives) == (0, 0)  # a miss: no pair
    assert sorted(profile.shown) == ["a", "zz"]
    process(profile, Event("e4", "u", "a", "click", 4000), index, settings, 0, learners)
    assert (ranker_.labels, ranker_.positives) == (2, 1)  # the pair (a, zz), both ways
    # a duplicate event teaches nothing
    process(profile, Event("e4", "u", "a", "click", 4000), index, settings, 0, learners)
    assert ranker_.labels == 2


def test_a_candidate_left_out_of_the_shown_list_is_still_a_positive_when_hit():
    """The ranker learns from its candidates, not only from what it showed: otherwise it could never
    learn to lift an item it ranks too low."""
    settings = Settings(top_k=1, ranker_pool=3, ranker_negatives=1, ranker_warm_up=10**6,
                        repeat_candidates=3)
    index = InMemoryItemIndex(settings)
    learners = new_partition_learners(settings, 0)
    profile = new_profile("u", settings)
    for i, item in enumerate(["a", "b", "c"]):
        outcome = process(profile, Event(f"e{i}", "u", item, "click", 1000 * (i + 1)), index, settings, 0,
                          learners)
    shown = [item["item_id"] for item in outcome.recommendation["items"]]
    assert len(shown) == 1 and len(profile.shown) == 3 and profile.shown[0] == shown[0]
    left_out = profile.shown[2]
    before = (learners.ranker.labels, learners.ranker.positives)
    live_hit, _ = shown_hits(profile, Event("e9", "u", left_out, "click", 9000), settings.top_k)
    assert live_hit is False  # it was not shown ...
    process(profile, Event("e9", "u", left_out, "click", 9000), index, settings, 0, learners)
    # ... yet it teaches one positive (and one negative)
    assert (learners.ranker.labels - before[0], learners.ranker.positives - before[1]) == (2, 1)


def test_a_warm_ranker_reorders_by_what_it_learned():
    settings = Settings(ranker_warm_up=5, top_k=3)
    warm = new_ranker(settings)
    x = np.zeros(len(FEATURES))
    popular_row, repeat_row = x.copy(), x.copy()
    popular_row[FEATURES.index("popular")] = 1.0
    repeat_row[FEATURES.index("repeat")] = 1.0
    for _ in range(25):
        warm.learn_pairs(popular_row[None, :], repeat_row[None, :])
    assert not warm.ready  # warm, but it has not yet shown that it beats the prior
    # judged lists: the prior (column 0) puts the repeat row first, the ranker the popular row,
    # and the user goes to the popular item: top_k 1, only the ranker would have shown it
    prior_likes_repeat = np.array([repeat_row, popular_row])
    prior_likes_repeat[0, 0] = 1.0
    for _ in range(3):
        warm.judge(prior_likes_repeat, 1, top_k=1)
    assert warm.ranker_rr > 0 and warm.prior_rr == 0 and warm.ready
    scores = warm.score_many(np.array([popular_row, repeat_row]))
    assert scores[0] > scores[1]
    # the ranker's order, used by the core for the shown list once ready
    assert list(np.argsort(-warm.score_many(prior_likes_repeat), kind="stable")) == [1, 0]
    # where the prior is the one that would have shown the hit, it takes over again
    for _ in range(500):
        warm.judge(prior_likes_repeat, 0, top_k=1)
    assert warm.prior_rr > warm.ranker_rr and not warm.ready


def test_partition_learners_round_trip_through_their_table_record():
    from stream_app.core.learners import read_partition_learners

    settings = Settings(bandit=True, ranker_warm_up=2)
    learners = new_partition_learners(settings, 0)
    learners.ranker.learn_pairs(np.ones((1, len(FEATURES))), np.zeros((1, len(FEATURES))))
    learners.bandit.update("new", "prior", 1.0)
    again = read_partition_learners(orjson.dumps(learners.to_state()), "partition 0")
    assert again.ranker.labels == 2 and again.bandit.policies["new"]._rewards["prior"].get() == 1.0
    assert again.clone().ranker.labels == 0


def test_each_partition_explores_on_its_own_random_sequence_and_the_same_one_again():
    from stream_app.core.process import with_current_settings

    settings = Settings(bandit=True, bandit_epsilon=0.5)

    def pulls(learners) -> list[str]:
        learners.bandit.update("returning", "ranker", 1.0)  # the greedy arm: the prior is only explored
        return [learners.bandit.pull("returning") for _ in range(64)]

    first, second = pulls(new_partition_learners(settings, 0)), pulls(new_partition_learners(settings, 1))
    assert first != second  # one seed for all partitions explored at the same lists everywhere
    assert first == pulls(new_partition_learners(settings, 0))
    restored = new_partition_learners(Settings(bandit=False), 1)  # a bandit added to restored learners
    assert pulls(with_current_settings(restored, settings, 1)) == second


def test_a_bandit_an_earlier_release_wrote_with_the_one_seed_of_every_partition_explores_on_its_partitions():
    """Before 2026-11-30 every partition's bandit had the seed `ranker_seed`: restored as it was, each partition
    went on drawing the same random sequence (a segment first met after the restore started it afresh everywhere)."""
    from stream_app.core.learners import PartitionLearners, read_partition_learners
    from stream_app.core.learners.strategy_bandit import StrategyBandit
    from stream_app.core.process import with_current_settings

    settings = Settings(bandit=True, bandit_epsilon=0.5)

    def pulls(learners) -> list[str]:
        learners.bandit.update("returning", "ranker", 1.0)
        return [learners.bandit.pull(segment) for _ in range(32) for segment in ("returning", "new")]

    def restored(learners, partition: int):
        stored = read_partition_learners(orjson.dumps(learners.to_state()), f"partition {partition}")
        return with_current_settings(stored, settings, partition)

    def earlier() -> PartitionLearners:
        bandit = StrategyBandit(settings.bandit_epsilon, settings.ranker_seed)
        bandit.update("returning", "prior", 0.0)  # a segment it had met, its sequence stored
        return PartitionLearners(new_ranker(settings), bandit)

    first, second = pulls(restored(earlier(), 0)), pulls(restored(earlier(), 1))
    assert first != second
    assert first == pulls(restored(earlier(), 0))  # the same in every worker that restores it
    for partition in (0, 1):  # what this release wrote is restored as it was: its sequence goes on
        written = new_partition_learners(settings, partition)
        written.bandit.pull("returning")
        twin = read_partition_learners(orjson.dumps(written.to_state()), "twin")
        assert pulls(restored(written, partition)) == pulls(twin)


def test_partitioning_matches_the_kafka_client():
    from kafka.partitioner.default import murmur2 as client_murmur2

    for key in ["", "u", "user-1", "s1234", "ü-ñ", "x" * 33]:
        assert murmur2(key.encode()) == client_murmur2(key.encode())
    assert {partition_of(f"u{i}", 8) for i in range(200)} == set(range(8))


@pytest.mark.parametrize("module", [interest_drift, behaviour, ranker, recency_positions, strategy_bandit])
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_the_ranker_learns_pairwise_which_candidate_is_hit_and_skips_lists_that_missed():
    ranker_ = OnlineRanker(("covis", "repeat"), negatives=2, warm_up=1)
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.0]])  # the hit is always the "repeat" row
    for i in range(200):
        assert ranker_.learn_feedback(["x", "y", "z"], rows, "y", f"e{i}", top_k=1) == 4  # 2 pairs, both ways
        assert ranker_.learn_feedback(["x", "y", "z"], rows, "elsewhere", f"m{i}", top_k=1) == 0
    assert (ranker_.labels, ranker_.positives) == (800, 400)
    # y first; covis only ever marked a loser, so the less of it the better
    assert list(np.argsort(-ranker_.score_many(rows), kind="stable")) == [1, 2, 0]
    assert ranker_.ranker_rr > ranker_.prior_rr and ranker_.ready  # the prior (column 0) shows x first


def test_a_ready_ranker_serves_the_list_in_its_own_order_and_says_so():
    settings = Settings(ranker_warm_up=5, top_k=3, repeat_weight=5.0)
    index = InMemoryItemIndex(settings)
    from stream_app.core.item_feed import ItemFeed
    feed = ItemFeed(settings, index)
    for i, item in enumerate(["p1", "p1", "p2", "p1", "p2", "p3"]):  # popular: p1 > p2 > p3
        feed.add(Event(f"o{i}", f"other{i}", item, "click", 1000 + i), 0, 1)
    feed.advance(1)
    learners = new_partition_learners(settings, 0)
    popular_row, seen_row = np.zeros(len(FEATURES)), np.zeros(len(FEATURES))
    popular_row[FEATURES.index("popular")] = 1.0
    seen_row[FEATURES.index("seen")] = 1.0
    for _ in range(100):  # it learned: popular items are hit, the user's own are not
        learners.ranker.learn_pairs(popular_row[None, :], seen_row[None, :])
    learners.ranker.judge(np.array([[1.0, *seen_row[1:]], popular_row]), 1, top_k=1)
    assert learners.ranker.ready
    profile = new_profile("u", settings)
    outcome = process(profile, Event("e1", "u", "mine", "click", 120_000), index, settings, 0, learners)
    rec = outcome.recommendation
    assert rec["model"]["ranking"] == "ranker"
    # the prior would put the user's own item first (repeat weight 5); the ranker puts it last
    assert [item["item_id"] for item in rec["items"]] == ["p1", "p2", "p3"]
    rows = decode_features(profile.to_dict()["shown_features"], len(profile.shown))  # stored as float16
    scores = learners.ranker.score_many(rows)
    assert [item["score"] for item in rec["items"]] == pytest.approx(list(scores[:3]), rel=1e-3)
    assert list(scores) == sorted(scores, reverse=True) and profile.shown[-1] == "mine"


def test_learner_state_written_before_the_package_layout_moved_still_loads():
    """State in changelogs written by the release with the flat layout (`stream_app.learners.*`, pickled)
    is migrated, so an upgrade keeps what the workers learned."""
    import json
    from pathlib import Path

    from stream_app.core.learners import (
        BehaviourStats,
        PartitionLearners,
        read_partition_learners,
        read_profile_learner,
    )

    stored = json.loads((Path(__file__).parent / "data" / "learner-state-flat-layout.json").read_text())
    learners = read_partition_learners(stored["partition_learners"].encode(), "partition 0")
    assert isinstance(learners, PartitionLearners) and learners.bandit is not None
    assert learners.ranker.labels == stored["ranker_labels"] and learners.ranker.ready
    behaviour = read_profile_learner(stored["behaviour"], BehaviourStats.name, "user u")
    assert isinstance(behaviour, BehaviourStats) and behaviour.public() == stored["behaviour_public"]


def test_a_stored_list_with_a_value_float16_cannot_hold_teaches_the_ranker_nothing():
    """inf (a feature over 65,504, or a forged record) made the partition's weights NaN for good; NaN scores
    then ranked first in the model selection, so the NaN ranker served every list of the partition."""
    from stream_app.core.learners.ranker import reciprocal_rank
    from stream_app.core.recommend import N_FEATURES

    settings = Settings(ranker_warm_up=2)
    index, learners = InMemoryItemIndex(settings), new_partition_learners(settings, 0)
    rows = np.zeros((3, N_FEATURES))
    rows[:, 0] = [1.0, 0.5, 0.2]
    rows[1, 3] = np.inf
    profile = new_profile("u", settings)
    profile.shown, profile.shown_features = ["a", "b", "c"], encode_rows(rows)
    assert decode_features(profile.shown_features, 3) is None
    process(profile, Event("e1", "u", "a", "click", 1_000), index, settings, 0, learners)
    assert np.isfinite(learners.ranker.model.theta).all()
    in_memory = new_profile("u", settings)  # the same rows as a profile keeps them between two events
    in_memory.shown, in_memory.shown_rows = ["a", "b", "c"], rows.astype(np.float16)
    process(in_memory, Event("e1", "u", "a", "click", 1_000), index, settings, 0, learners)
    assert np.isfinite(learners.ranker.model.theta).all()
    assert reciprocal_rank(np.array([np.nan, np.nan, np.nan]), 2, 20) == 0.0


def test_restored_partition_learners_follow_todays_settings_and_keep_what_they_learned():
    from stream_app.stream.batch import PartitionState

    data: dict[bytes, bytes] = {}
    first = PartitionState(data, Settings(bandit=True, ranker_warm_up=1000))
    learned = first.get(0, print)
    learned.ranker.model.theta[:] = 0.25
    data.update(first.records(0, before=False))  # no batch of profiles to keep in step with
    again = PartitionState(data, Settings(bandit=False, ranker_warm_up=200, ranker_learning_rate=0.05)).get(0, print)
    assert again.bandit is None and again.ranker.warm_up == 200
    assert again.ranker.learning_rate == again.ranker.model.learning_rate == 0.05
    assert (again.ranker.model.theta == 0.25).all()
    exploring = PartitionState(data, Settings(bandit=True, bandit_epsilon=0.3)).get(0, print)
    assert exploring.bandit is not None and exploring.bandit.epsilon == 0.3


def test_profile_learners_count_sessions_with_the_configured_gap():
    settings = Settings(session_gap_ms=10 * 60_000, drift_handling=True)
    profile, index = new_profile("u", settings), InMemoryItemIndex(settings)
    for i in range(6):  # 15 minutes apart: six sessions at a 10-minute gap
        process(profile, Event(f"e{i}", "u", f"i{i}", "click", i * 15 * 60_000, category="c"), index, settings, 0)
    assert profile.learner(behaviour.BehaviourStats.name, behaviour.BehaviourStats).sessions == 6
    drift = profile.learner(interest_drift.InterestDrift.name, interest_drift.InterestDrift)
    assert drift.session_gap_ms == settings.session_gap_ms


def test_restored_profile_learners_take_the_current_session_gap_and_downweight_and_a_gap_of_exactly_it_splits():
    made = Settings(session_gap_ms=60 * 60_000, drift_handling=True, drift_downweight=2.0)
    profile, index = new_profile("u", made), InMemoryItemIndex(made)
    process(profile, Event("e0", "u", "i0", "click", 0, category="c"), index, made, 0)
    restored = Profile.from_json(profile.to_json())
    now = Settings(session_gap_ms=10 * 60_000, drift_handling=True, drift_downweight=4.0)
    for i in range(1, 4):  # exactly 10 minutes apart: each starts a session under the current gap
        process(restored, Event(f"e{i}", "u", f"i{i}", "click", i * 10 * 60_000, category="c"), index, now, 0)
    stats = restored.learner(behaviour.BehaviourStats.name, behaviour.BehaviourStats)
    assert stats.sessions == 4 and stats.session_gap_ms == now.session_gap_ms
    drift = restored.learner(interest_drift.InterestDrift.name, interest_drift.InterestDrift)
    assert (drift.session_gap_ms, drift.downweight) == (now.session_gap_ms, 4.0)


def restored(first_settings, then_settings, touch):
    from stream_app.stream.batch import PartitionState

    data: dict[bytes, bytes] = {}
    first = PartitionState(data, first_settings)
    touch(first.get(0, print))
    data.update(first.records(0, before=False))  # no batch of profiles to keep in step with
    return PartitionState(data, then_settings).get(0, print)


def test_a_restored_bandit_explores_at_todays_epsilon_in_the_segments_it_already_knew():
    def pull_both(learners):
        for segment in ("new", "returning"):
            learners.bandit.update(segment, "prior", 1.0)
            learners.bandit.update(segment, "ranker", 0.0)

    again = restored(Settings(bandit=True, bandit_epsilon=1.0), Settings(bandit=True, bandit_epsilon=0.0), pull_both)
    assert set(again.bandit.policies) == {"new", "returning"}
    # epsilon 0: no exploration at all, the greedy arm every time
    assert {again.bandit.pull(segment) for segment in ("new", "returning") for _ in range(200)} == {"prior"}


def test_a_restored_ranker_learns_as_many_negatives_as_today_s_settings_say():
    again = restored(Settings(ranker_negatives=4), Settings(ranker_negatives=1), lambda learners: None)
    from stream_app.core.recommend import N_FEATURES
    rows = np.zeros((6, N_FEATURES))
    rows[:, 1] = np.arange(6)
    assert again.ranker.learn_feedback(list("abcdef"), rows, "c", "e1", top_k=3) == 2  # one pair, both ways


def test_the_bandit_rewards_the_strategy_whose_list_was_shown_not_the_one_it_wanted():
    """A cold ranker's list is the prior's: the reward goes to "prior" (process.py's comment)."""
    settings = Settings(bandit=True, ranker_warm_up=10**6)
    index, learners, profile = InMemoryItemIndex(settings), new_partition_learners(settings, 0), new_profile("u", settings)
    learners.bandit.pull = lambda segment: "ranker"  # the bandit wants the (cold) ranker
    outcome = process(profile, Event("e1", "u", "a", "click", 1000), index, settings, 0, learners)
    assert outcome.recommendation["model"]["ranking"] == "prior"
    assert profile.shown_strategy == "new:prior"
    process(profile, Event("e2", "u", "a", "click", 2000), index, settings, 0, learners)  # a hit
    policy = learners.bandit.policies["new"]
    assert policy._rewards["prior"].get() == 1.0 and policy._rewards["ranker"].n == 0


def test_the_bandit_is_rewarded_only_for_a_hit_in_the_shown_part_of_the_list():
    settings = Settings(top_k=1, ranker_pool=3, bandit=True, ranker_warm_up=10**6, repeat_candidates=3)
    index, learners, profile = InMemoryItemIndex(settings), new_partition_learners(settings, 0), new_profile("u", settings)
    for i, item in enumerate(["a", "b", "c"]):
        process(profile, Event(f"e{i}", "u", item, "click", 1000 * (i + 1)), index, settings, 0, learners)
    segment, arm = profile.shown_strategy.split(":")
    before = learners.bandit.policies[segment]._rewards[arm]
    n, total = before.n, before.get() * before.n
    left_out = profile.shown[2]  # a candidate, not shown (top_k 1)
    process(profile, Event("e9", "u", left_out, "click", 9000), index, settings, 0, learners)
    after = learners.bandit.policies[segment]._rewards[arm]
    assert after.n == n + 1 and after.get() * after.n == pytest.approx(total)  # a reward of 0


def drifted(downweight):
    settings = Settings(drift_handling=True, drift_downweight=downweight)
    profile, index = new_profile("u", settings), InMemoryItemIndex(settings)
    for i in range(60):  # the InterestDrift doctest's stream: one drift, at the 7th session
        process(profile, Event(f"e{i}", "u", f"i{i}", "click", i * 3_600_000, session_id=f"s{i // 5}",
                               category="shoes" if i < 30 else "garden"), index, settings, 0)
    return profile


def test_drift_handling_divides_the_old_interests_by_the_configured_downweight():
    mild, strong = drifted(2.0), drifted(64.0)
    for profile in (mild, strong):
        assert profile.learner(interest_drift.InterestDrift.name, None).drifts == 1
    # the same events since the drift: the old interest differs by log2(64) - log2(2) = 5 halvings
    assert mild.interests["shoes"] - strong.interests["shoes"] == pytest.approx(5.0)


def test_the_rank_of_a_hit_tied_with_earlier_rows_counts_them_before_it():
    from stream_app.core.learners.ranker import reciprocal_rank

    tied = np.array([0.5, 0.5, 0.5, 0.1])
    assert reciprocal_rank(tied, 2, 20) == pytest.approx(1 / 3)
    assert reciprocal_rank(tied, 2, 2) == 0.0  # third in row order: not within a top 2
    assert reciprocal_rank(tied, 0, 1) == 1.0


def test_a_shadow_list_is_judged_once_and_not_again_when_no_shadow_encoder_is_live_any_more():
    from stream_app.core.process import shown_hits

    settings = Settings()
    index, profile = InMemoryItemIndex(settings), new_profile("u", settings)
    profile.shadow_shown = ["x"]  # what the shadow encoder showed before it was withdrawn
    process(profile, Event("e1", "u", "a", "click", 1000), index, settings, 0)
    assert shown_hits(profile, Event("e2", "u", "x", "click", 2000), settings.top_k)[1] is None
