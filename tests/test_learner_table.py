"""The learners' table kept in step with the profiles' across a crash between their changelogs (learner_table)."""

from __future__ import annotations

import orjson
import pytest
from test_batch_handler import highest_mark, make_events, run

from stream_app.config import Settings
from stream_app.core.learners import read_partition_learners
from stream_app.stream.batch import PartitionState
from stream_app.stream.learner_table import learners_mark, with_learners_mark


def test_a_mark_is_read_from_the_end_of_a_record_only():
    record = orjson.dumps({"user_id": "u", "version": 3, "recent": [['"learners_writes":7}', "click", 1]]})
    assert learners_mark(record) is None
    assert learners_mark(with_learners_mark(record, 12)) == 12
    assert orjson.loads(with_learners_mark(record, 12))["learners_writes"] == 12


def state(learners) -> dict:
    return learners.to_state() if learners is not None else None


@pytest.mark.parametrize("settings", [Settings(ranker_warm_up=2)])
def test_learners_stored_without_their_batchs_profiles_are_taken_up_as_before_that_batch(settings, monkeypatch):
    """Three batches; the third's learners record stored, its profiles lost: the learners restored are the
    second's, and once its profiles are there too, the third's."""
    events = make_events()
    profiles: dict = {}
    learners: dict = {}
    states, records, stored_profiles = [], [], []
    for batch in (events[:3], events[3:6], events[6:]):
        stored_profiles.append(dict(profiles))
        run(batch, settings, profiles, learners, None, monkeypatch)
        records.append({key: learners[key] for key in (b"0", b"0:before")})
        states.append(read_partition_learners(learners[b"0"], "p0").to_state())
    assert states[1] != states[2]  # the third batch taught them something
    assert highest_mark(profiles) == 3

    def restored(profile_records: dict) -> dict | None:
        table = PartitionState(learners, settings, profile_marks=lambda partition: highest_mark(profile_records))
        return state(table.get(0, print))

    assert restored(profiles) == states[2]
    lost_third = stored_profiles[2]  # the profiles as the second batch left them
    assert highest_mark(lost_third) == 2
    assert restored(lost_third) == states[1]
    # the first batch's learners stored without any profile: new learners
    fresh = PartitionState({}, settings).get(0, print)
    assert state(PartitionState(records[0], settings).get(0, print)) == state(fresh) != states[0]
    assert state(PartitionState({b"0": records[0][b"0"]}, settings).get(0, print)) == states[0]  # none before: kept


def test_profile_records_without_a_mark_take_the_state_before_away(monkeypatch):
    """Tombstones (or any profile record with the ranker off) may take away the profiles carrying the last learners
    record's mark: the state before that record goes with them, so a later restore does not take the missing mark
    for lost profiles."""
    settings = Settings(ranker_warm_up=2, user_idle_ms=60_000)
    profiles: dict = {}
    learners: dict = {}
    handler = run(make_events(), settings, profiles, learners, None, monkeypatch)
    after = read_partition_learners(learners[b"0"], "p0").to_state()
    assert orjson.loads(learners[b"0:before"])["writes"] == orjson.loads(learners[b"0"])["writes"]

    seen = highest_mark(profiles)  # the profile table keeps the marks it saw, tombstoned since or not
    table = PartitionState(learners, settings, profile_marks=lambda partition: seen)
    evicting = type(handler)(settings, profiles, table, handler.index, handler.counters, now=0)
    evicting.remove("u1", 0)
    written: dict = {}
    evicting.snapshots("profiles.changelog", written, "learners.changelog")
    assert b"0:before" not in learners and written == {}
    assert [(topic, key, value) for topic, key, value, _ in evicting.outbox.records if topic == "learners.changelog"] \
        == [("learners.changelog", b"0:before", None)]
    assert not profiles  # the marked profile is gone
    again = PartitionState(learners, settings, profile_marks=lambda partition: highest_mark(profiles)).get(0, print)
    assert again.to_state() == after  # what they learned, kept


def test_with_the_ranker_off_the_state_before_goes_with_the_first_profile_records(monkeypatch):
    profiles: dict = {}
    learners: dict = {}
    run(make_events()[:4], Settings(ranker_warm_up=2), profiles, learners, None, monkeypatch)
    assert b"0:before" in learners
    off = run(make_events()[4:], Settings(ranker=False), profiles, learners, None, monkeypatch)
    assert b"0:before" not in learners and highest_mark({b"u1": profiles[b"u1"]}) is None  # an unmarked record now
    assert ("learners.changelog", b"0:before", None, 0) in off.outbox.records


def test_learners_that_cannot_be_read_start_afresh_counting_on_from_their_record_and_the_marks():
    """Else the new learners' records, counted from 0, would be taken for older than the unreadable one (restored:
    the most written) and below the profiles' marks."""
    settings = Settings()
    forged = b'{"kind": "partition_learners", "v": 3, "writes": 41}'
    rejected: list = []
    learners = PartitionState({b"0": forged}, settings, profile_marks=lambda partition: 7).get(0, rejected.append)
    assert [r.reason for r in rejected] == ["bad_state"] and learners.writes == 41
    marked = PartitionState({b"0": b"junk"}, settings, profile_marks=lambda partition: 7).get(0, print)
    assert marked.writes == 7
