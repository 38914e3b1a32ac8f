"""The learners' table kept in step with the profiles' across a crash between their changelogs (learner_table)."""

from __future__ import annotations

import orjson
import pytest
from test_batch_handler import highest_mark, make_events, run

from stream_app.config import Settings
from stream_app.core.learners import before_record, learners_writes, read_partition_learners
from stream_app.core.process import new_partition_learners
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


def test_a_batch_that_only_removes_keeps_the_state_before_while_the_lost_batch_waits_to_be_applied_again(monkeypatch):
    """Learners stored without their batch's profiles, then a batch that only removes a profile of that partition (an
    erasure, an idle eviction) before the input is read again: the state before stays, so a crash then still restores
    the learners as before the lost batch, not after it (which would learn that batch twice)."""
    settings = Settings(ranker_warm_up=2, user_idle_ms=60_000)
    events = make_events()
    profiles: dict = {}
    learners: dict = {}
    handler = run(events[:4], settings, profiles, learners, None, monkeypatch)
    lost = dict(profiles)
    before = read_partition_learners(learners[b"0"], "p0").to_state()
    run(events[4:], settings, dict(profiles), learners, None, monkeypatch)  # its profile records never stored

    def restored() -> dict:
        return PartitionState(learners, settings, profile_marks=lambda partition: highest_mark(lost)).get(0, print)

    assert restored().to_state() == before
    evicting = type(handler)(settings, lost, PartitionState(learners, settings, profile_marks=lambda partition:
                                                           highest_mark(lost)), handler.index, handler.counters, now=0)
    evicting.remove("u1", 0)
    evicting.snapshots("profiles.changelog", learners, "learners.changelog")
    assert b"0:before" in learners and not lost
    assert restored().to_state() == before
    # the lost batch applied again (to no profile now: the user was evicted), then a batch that only removes
    again = run(events[4:], settings, lost, learners, None, monkeypatch)
    assert b"0:before" in learners and highest_mark(lost) == orjson.loads(learners[b"0"])["writes"]
    again.learners.forget()
    assert not again.learners.taken_before
    seen = highest_mark(lost)  # the profile table keeps the marks it saw, tombstoned since or not
    evicting = type(handler)(settings, lost, PartitionState(learners, settings, profile_marks=lambda partition: seen),
                             handler.index, handler.counters, now=0)
    evicting.remove("u1", 0)
    evicting.snapshots("profiles.changelog", learners, "learners.changelog")
    assert b"0:before" not in learners


def test_new_learners_taken_up_as_before_a_lost_record_write_it_again_with_its_writes():
    """The state before a record written by new learners (`"before": null`; learners that could not be read start
    afresh counting on) is new learners that count on from below that record: counted from 0, their records would be
    taken for older than it at every restore (table_stores.NewestLearnersStore)."""
    settings = Settings()
    stored = new_partition_learners(settings, 0)
    stored.writes = 42
    table = PartitionState({b"0": orjson.dumps(stored.to_state()), b"0:before": before_record(42, None)}, settings,
                           profile_marks=lambda partition: 30)
    taken = table.get(0, print)
    assert taken.to_state() == {**new_partition_learners(settings, 0).to_state(), "writes": 41}
    assert [learners_writes(value) for _, value in table.records(0, before=True)] == [42, 42]


@pytest.mark.parametrize("writes", [b"9223372036854775807", b"18446744073709551615", b"1e300",
                                    b"99999999999999999999999"])
def test_write_counts_past_what_a_count_reaches_are_unreadable_not_fatal(writes):
    """A forged count: the learners start afresh and their records can still be written (orjson writes 64-bit
    integers only); a profile marked so is unmarked."""
    settings = Settings()
    forged = orjson.dumps(new_partition_learners(settings, 0).to_state()).replace(b'"writes":0', b'"writes":' + writes)
    assert forged != orjson.dumps(new_partition_learners(settings, 0).to_state())
    assert learners_writes(forged) is None
    profile = b'{"user_id":"u","learners_writes":' + writes + b"}"
    assert learners_mark(profile) is None
    rejected: list = []
    table = PartitionState({b"0": forged}, settings, profile_marks=lambda partition: learners_mark(profile))
    assert table.get(0, rejected.append).writes == 0 and [r.reason for r in rejected] == ["bad_state"]
    assert [learners_writes(value) for _, value in table.records(0, before=True)] == [1, 1]


def test_the_ranker_labels_metric_keeps_the_partitions_held_across_a_rebalance(monkeypatch):
    """A walkthrough: after a rebalance `stream_app_ranker_labels` went empty until a batch used each partition again
    (the snapshot read only the learners loaded since). Held partitions report their stored labels at once; a revoked
    one drops out."""
    from types import SimpleNamespace

    from stream_app.stream.worker import StreamWorker

    settings = Settings(ranker_warm_up=2)
    profiles: dict = {}
    run(make_events(), settings, profiles, learner_data := {}, None, monkeypatch)
    table = PartitionState(learner_data, settings, profile_marks=lambda partition: highest_mark(profiles))
    labels = table.get(0, print).ranker.labels
    assert labels > 0
    learner_data[b"1"] = orjson.dumps(new_partition_learners(settings, 1).to_state())
    owned = {0, 1}
    worker = SimpleNamespace(partition_state=table, assigned_inputs=lambda: owned, counters=SimpleNamespace(),
                             store=SimpleNamespace(refused=0), missing=dict,
                             ordered=SimpleNamespace(status=dict, read_to=dict), watcher=SimpleNamespace(status=dict),
                             catalogue=SimpleNamespace(status=dict), input_ends=SimpleNamespace(lag=lambda *a: {}),
                             app=None, settings=settings, profile_table=SimpleNamespace(data={}),
                             index=SimpleNamespace(item_count=lambda: 0))
    assert StreamWorker.snapshot(worker).ranker_labels == {0: labels, 1: 0}
    table.forget()  # a rebalance that kept partition 0 and took partition 1 away
    owned.discard(1)
    assert StreamWorker.snapshot(worker).ranker_labels == {0: labels}
    table.get(0, print).ranker.labels += 2  # a batch since: its learners, not the stored record
    assert StreamWorker.snapshot(worker).ranker_labels == {0: labels + 2}
    assert PartitionState(learner_data, Settings(ranker=False)).ranker_labels({0}) == {}  # records of when it was on
