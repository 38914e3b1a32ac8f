"""The recency positions a partition's users come back to: learned from the stream, ranking the user's own
recent items in the prior, persisted with the partition's other learners."""

import orjson
import pytest

from stream_app.config import Settings
from stream_app.core.events import Event
from stream_app.core.items import InMemoryItemIndex
from stream_app.core.learners import (
    PartitionLearners,
    RecencyPositions,
    StateError,
    load_state,
    read_partition_learners,
)
from stream_app.core.process import new_partition_learners, new_profile, process, with_current_settings
from stream_app.core.recommend import recommend

T0 = 1_700_000_000_000
# only the user's own items score: the order of the recent items is the prior's recency term alone
OWN_ONLY = Settings(popularity_weight=0.0, trending_weight=0.0, covis_weight=0.0, rules_weight=0.0,
                    category_weight=0.0, ranker_warm_up=10**9)


def test_before_any_event_the_shares_are_a_fixed_recency_order():
    assert RecencyPositions(size=4).shares() == pytest.approx([1.0, 1 / 2, 1 / 3, 1 / 4])


def test_the_position_users_come_back_to_becomes_the_best_and_a_change_of_habit_is_followed():
    positions = RecencyPositions(size=3, prior_strength=10, decay=0.99)
    for _ in range(50):
        positions.learn_one(["b", "a", "c"], "a")
    shares = positions.shares()
    assert shares[1] == 1.0 and shares[0] < 0.5
    for _ in range(400):  # the log's habit changes: the item just seen comes next
        positions.learn_one(["b", "a", "c"], "b")
    shares = positions.shares()
    assert shares[0] == 1.0 and shares[1] < 0.1


def test_events_outside_the_recent_items_only_age_the_counts_and_a_user_with_none_says_nothing():
    positions = RecencyPositions(size=2, decay=0.5)
    positions.learn_one(["x", "y"], "y")
    assert positions.counts == [0.0, 1.0]
    positions.learn_one(["x", "y"], "z")  # on an item not among them
    assert positions.counts == [0.0, 0.5]
    positions.learn_one([], "z")  # a user's first event
    assert positions.counts == [0.0, 0.5]
    positions.learn_one(["x", "z", "y"], "y")  # past the positions kept: ages them, counts none
    assert positions.counts == [0.0, 0.25]


def test_no_recent_item_positions_when_the_setting_keeps_none():
    settings = Settings(covis_prev_items=0)
    learners = new_partition_learners(settings, 0)
    profile = new_profile("u", settings)
    for event in back_and_forth("u", 4):
        assert process(profile, event, InMemoryItemIndex(settings), settings, now_ms=T0, learners=learners).applied
    assert learners.positions.shares() == []


@pytest.mark.parametrize("kwargs", [{"size": -1}, {"prior_strength": 0.0}, {"decay": 0.0}, {"decay": 1.5}])
def test_settings_out_of_range_are_refused(kwargs):
    with pytest.raises(ValueError):
        RecencyPositions(**kwargs)


@pytest.mark.parametrize("counts", [[1.0, 2.0], [1.0, -1.0, 0.0], [1.0, float("nan"), 0.0], ["1", 0, 0], [True, 0, 0]])
def test_a_record_with_counts_of_the_wrong_length_or_kind_is_refused(counts):
    state = RecencyPositions(size=3).to_state()
    state["counts"] = counts
    with pytest.raises(StateError, match="counts"):
        load_state(state, RecencyPositions, "positions")


def test_a_record_whose_size_its_counts_do_not_fill_is_refused_before_anything_is_allocated():
    """A forged size (a 60-byte record) made the constructor allocate that many counts first: MemoryError, not a
    StateError, so the worker's batch failed instead of the partition's learners starting afresh."""
    record = new_partition_learners(Settings(), 0).to_state()
    record["positions"]["size"] = 2**62  # so large that the allocation fails at once, whatever the machine
    with pytest.raises(StateError, match="5 counts for"):
        read_partition_learners(orjson.dumps(record), "partition 0")


def test_a_partition_record_written_before_the_positions_reads_with_fresh_ones_and_the_size_follows_the_setting():
    learners = new_partition_learners(Settings(), 0)
    learners.positions.learn_one(["a", "b"], "b")
    record = learners.to_state()
    older = {key: value for key, value in record.items() if key != "positions"}
    older["v"] = 2
    restored = read_partition_learners(orjson.dumps(older), "partition 0")
    assert restored.positions.counts == [0.0] * 5
    again = read_partition_learners(orjson.dumps(record), "partition 0")
    assert again.positions.counts == learners.positions.counts
    wider = with_current_settings(again, Settings(covis_prev_items=7), 0)
    assert wider.positions.size == 7 and wider.positions.counts == [*learners.positions.counts, 0.0, 0.0]
    assert len(wider.positions.shares()) == 7


def back_and_forth(user: str, n: int) -> list[Event]:
    """A shopper going between two items: the next item is always the one before last."""
    return [Event(f"{user}-{i}", user, "ab"[i % 2], "click", T0 + i * 1000) for i in range(n)]


def test_a_partition_that_learns_users_go_back_ranks_the_item_before_last_first():
    index = InMemoryItemIndex(OWN_ONLY)
    learners = new_partition_learners(OWN_ONLY, 0)
    for user in ("u1", "u2", "u3"):
        profile = new_profile(user, OWN_ONLY)
        for event in back_and_forth(user, 6):
            process(profile, event, index, OWN_ONLY, now_ms=T0, learners=learners)
    assert learners.positions.shares()[1] == 1.0
    profile = new_profile("u4", OWN_ONLY)
    outcomes = [process(profile, event, index, OWN_ONLY, now_ms=T0, learners=learners)
                for event in back_and_forth("u4", 2)]  # a, then b: next is a
    assert [item["item_id"] for item in outcomes[-1].recommendation["items"][:2]] == ["a", "b"]
    # without the partition's learners, the fixed order: the item just seen first
    plain = new_profile("u5", OWN_ONLY)
    outcomes = [process(plain, event, index, OWN_ONLY, now_ms=T0) for event in back_and_forth("u5", 2)]
    assert [item["item_id"] for item in outcomes[-1].recommendation["items"][:2]] == ["b", "a"]


def test_the_users_most_recent_items_are_candidates_even_when_their_affinity_is_not_among_the_strongest():
    settings = Settings(popularity_weight=0.0, trending_weight=0.0, repeat_candidates=1)
    index = InMemoryItemIndex(settings)
    profile = new_profile("u", settings)
    events = [Event(f"p{i}", "u", "bought", "purchase", T0 + i) for i in range(5)]
    events += [Event("b1", "u", "glanced", "browse", T0 + 10), Event("b2", "u", "now", "browse", T0 + 20)]
    for event in events:
        process(profile, event, index, settings, now_ms=T0)
    ranked = recommend(profile, events[-1], index, settings, recency_shares=[0.2, 1.0, 0.1, 0.1, 0.1])
    shown = [item["item_id"] for item in ranked.items]
    assert shown[0] == "glanced" and "viewed before" in ranked.items[0]["reasons"]
    assert set(shown) == {"glanced", "now", "bought"}


def test_the_learned_positions_travel_with_the_partition_record_exactly():
    learners = PartitionLearners(new_partition_learners(Settings(), 0).ranker)
    for i in range(30):
        learners.positions.learn_one(["a", "b", "c"], "abc"[i % 3])
    copy = read_partition_learners(orjson.dumps(learners.to_state()), "p")
    assert copy.positions.counts == learners.positions.counts and copy.positions.shares() == learners.positions.shares()
