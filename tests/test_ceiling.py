"""The synthetic log's ceiling: its generator's own next-event probabilities (evaluate/ceiling.py)."""

import doctest
import itertools
import math

import numpy as np
import orjson
import pytest

from stream_app.config import Settings
from stream_app.core.events import Event
from stream_app.evaluate import ceiling as ceiling_module
from stream_app.evaluate.ceiling import NAME, GeneratorCeiling, ceiling_for, session_end_chance
from stream_app.evaluate.prequential import evaluate_log
from stream_app.evaluate.tables import table
from stream_app.evaluate.via_kafka import compare_to_best
from stream_app.tools.synth import CLICK_P, STEPS_MEAN, SynthConfig, generate, truth_path, write


def test_the_docstring_example_runs():
    assert doctest.testmod(ceiling_module).failed == 0


def test_a_sessions_end_chance_is_the_poisson_hazard_of_its_step_count():
    assert session_end_chance(1) == pytest.approx(math.exp(-STEPS_MEAN))  # one step: Poisson(4) drew 0
    second = math.exp(-STEPS_MEAN) * STEPS_MEAN / (1 - math.exp(-STEPS_MEAN))
    assert session_end_chance(2) == pytest.approx(second)
    assert session_end_chance(3) > session_end_chance(2)  # the longer a session ran, the likelier its end
    assert session_end_chance(40) == pytest.approx(1.0, abs=1e-6)


def test_after_a_browse_the_item_itself_comes_first_and_after_an_order_it_need_not():
    config = SynthConfig(events=3000, seed=5)
    events, _users = generate(config)
    ceiling = GeneratorCeiling(config, k=20)
    firsts: dict[str, list[bool]] = {"browse": [], "order": []}
    for raw in events:
        event = Event.from_dict(raw)
        listed = ceiling.learn(event)
        kind = event.stage if event.type == "purchase" else event.type
        if kind in firsts:
            firsts[kind].append(listed[0] == event.item_id)
    assert ceiling.fits
    assert all(firsts["browse"]) and CLICK_P > 0.4  # its click is likelier than any other item
    assert not all(firsts["order"])  # an order ends its funnel: the item is only as likely as its popularity says


def test_with_no_repeats_the_ceiling_never_lists_an_item_the_user_had():
    config = SynthConfig(events=2000, seed=5, no_repeat=True)
    events, _users = generate(config)
    ceiling = GeneratorCeiling(config, k=20)
    had: dict[str, set[str]] = {}
    for raw in events:
        had.setdefault(raw["user_id"], set()).add(raw["item_id"])
        assert not had[raw["user_id"]] & set(ceiling.learn(Event.from_dict(raw)))


def test_the_ceiling_is_printed_beside_the_table_above_the_hybrid_and_never_taken_for_the_best_baseline(tmp_path):
    log = tmp_path / "log.jsonl"
    write(SynthConfig(events=4000, seed=3), log)
    result = evaluate_log(log, "jsonl", Settings(), truth_path=truth_path(log))
    assert NAME not in result["models"]
    ceiling, hybrid = result["ceiling"], result["models"]["stream-app"]
    assert ceiling["judged"] == hybrid["judged"]  # the same judged events
    assert ceiling["recall@20"] > hybrid["recall@20"]
    best = compare_to_best(hybrid, result["models"], 20)
    assert best["row"] != NAME
    said = table(result)
    assert f"ceiling: Recall@20 {ceiling['recall@20']:.4f}" in said
    assert f"reaches {hybrid['recall@20'] / ceiling['recall@20']:.1%} of it" in said


def test_a_log_its_truths_settings_do_not_draw_gets_no_ceiling_and_is_told_so(tmp_path):
    log = tmp_path / "log.jsonl"
    write(SynthConfig(events=3000, seed=3), log)
    lines = log.read_bytes().splitlines()
    changed = orjson.loads(lines[100])
    changed["item_id"] = "i0" if changed["item_id"] != "i0" else "i1"
    lines[100] = orjson.dumps(changed)
    log.write_bytes(b"\n".join(lines) + b"\n")
    result = evaluate_log(log, "jsonl", Settings(), truth_path=truth_path(log), light=True)
    assert "not the one its ground truth's settings draw" in result["ceiling"]["left_out"]
    assert "ceiling: not worked out: the log is not the one its ground truth's settings draw" in table(result)


def test_no_ceiling_without_the_generators_settings_and_a_reason_when_they_cannot_draw_the_log():
    assert ceiling_for(None, 20) is None
    assert ceiling_for({"users": {}}, 20) is None
    other_release = ceiling_for({"users": {}, "config": {"a_setting_of_another_release": 1}}, 20)
    assert "not this release's `stream-app synth`'s" in other_release.reason and not other_release.fits
    edited = ceiling_for({"users": {}, "config": {"events": "many"}}, 20)
    assert "not this release's" in edited.reason and edited.learn(None) == []
    assert "above 2,000,000" in ceiling_for({"users": {}, "config": {"events": 3_000_000}}, 20).reason


def test_a_list_as_long_as_the_catalogue_holds_every_item_there_is_to_list():
    """--k at least the catalogue's size (it failed with a numpy error): every drawable item once."""
    config = SynthConfig(events=300, seed=3, no_repeat=True)
    events = list(generate(config)[0])
    busiest = max({raw["user_id"] for raw in events}, key=[raw["user_id"] for raw in events].count)
    ceiling = GeneratorCeiling(config, k=config.items + 5)
    had: set[str] = set()
    for raw in events:
        if raw["user_id"] == busiest:
            had.add(raw["item_id"])
            listed = ceiling.learn(Event.from_dict(raw))
            assert len(listed) == len(set(listed)) and not had & set(listed) and 0 < len(listed) < config.items
        else:
            ceiling.learn(Event.from_dict(raw))


@pytest.mark.parametrize("no_repeat", [False, True])
def test_the_chances_of_the_next_event_sum_to_one_when_no_step_can_be_skipped(no_repeat):
    """A distribution over the next event: with no repeats, each leaf's chances are shared among the items the user
    has not had, as the generator draws them (helper-148 found them shared among all, 0.008 of Recall too low)."""
    config = SynthConfig(events=20000, seed=2, no_repeat=no_repeat)
    events, _users = generate(config)
    ceiling = GeneratorCeiling(config, k=20)
    world, checked = ceiling.world, 0
    for raw in itertools.islice(events, 3000):
        event = Event.from_dict(raw)
        chances = ceiling.chances(event)
        drawable = world.item_born <= event.ts
        if no_repeat:
            drawable[list(ceiling.had[event.user_id])] = False
        if len(np.unique(world.item_leaf[drawable])) == len(world.leaf_items):  # no leaf the generator would skip
            assert chances[chances >= 0].sum() == pytest.approx(1.0)
            checked += 1
    assert checked > 1000


def test_after_a_users_drift_the_ceiling_ranks_from_the_new_interests_and_hits_more_than_one_blind_to_it():
    """The generator draws a session begun after its user's drift from the interests after it: a ceiling that kept
    the old ones would list the same before the drift and worse after it, no longer the generator's own lists."""
    config = SynthConfig(events=3000, seed=4, drift_share=1.0)  # every user drifts, at a moment of the log
    ceiling, blind = GeneratorCeiling(config, k=10), GeneratorCeiling(config, k=10)
    for user in blind.users.values():
        user.drift_at = None  # the same generator's settings, its users' drift left out
    judged = hits = blind_hits = 0  # of the next events after lists made in a session begun after the drift
    listed: dict[str, tuple[list[str], list[str]] | None] = {}  # user -> its last lists, if made after its drift
    for raw in generate(config)[0]:
        event = Event.from_dict(raw)
        if (lists := listed.get(event.user_id)) is not None:
            judged += 1
            hits += event.item_id in lists[0]
            blind_hits += event.item_id in lists[1]
        lists = ceiling.learn(event), blind.learn(event)
        drift_at, start = ceiling.users[event.user_id].drift_at, ceiling.sessions[event.user_id][1]
        drifted = drift_at is not None and start >= drift_at
        assert drifted or lists[0] == lists[1]  # before its user's drift an event's list is the blind one's
        listed[event.user_id] = lists if drifted else None
    assert ceiling.fits and judged > 1000
    assert hits > blind_hits, (hits, blind_hits, judged)


def test_a_drift_within_a_session_changes_its_lists_only_from_the_users_next_session():
    """The generator draws a session from the interests of its start: the seed-4 log above has no session across
    its user's drift, so it cannot tell the session's start from the event's time. Here the drift is moved to the
    second event of a session the user has another after."""
    config = SynthConfig(events=3000, seed=4, drift_share=1.0)
    log = [Event.from_dict(raw) for raw in generate(config)[0]]
    sessions: dict[tuple[str, str], list[Event]] = {}
    for event in log:
        sessions.setdefault((event.user_id, event.session_id), []).append(event)
    user, moved = next((user, events) for (user, _), events in sessions.items() if len(events) >= 3
                       and events[1].ts > events[0].ts and any(later[0].user_id == user and later[0].ts > events[-1].ts
                                                               for later in sessions.values()))
    ceiling, blind = GeneratorCeiling(config, k=10), GeneratorCeiling(config, k=10)
    ceiling.users[user].drift_at, blind.users[user].drift_at = moved[1].ts, None
    within = after = differ = 0
    for event in log:
        lists = ceiling.learn(event), blind.learn(event)
        if event.user_id != user:
            continue
        if event.ts <= moved[-1].ts:  # up to the end of the session the drift fell in: the interests before it
            assert lists[0] == lists[1], event
            within += event.ts >= moved[1].ts
        else:
            after += 1
            differ += lists[0] != lists[1]
    assert within >= 2 and after and differ, (within, after, differ)
