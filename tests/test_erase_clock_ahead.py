"""An erasure whose user's profile holds only events stamped after the request's time (a client clock ahead of
the one that ran `stream-app erase`, within STREAM_APP_MAX_FUTURE_MS), applied before the request was read."""

from __future__ import annotations

import jsonschema
import orjson
import pytest
from test_batch_handler import USER, erase_request, make_events, ready, run

from stream_app.config import Settings
from stream_app.contracts import load_schema
from stream_app.core.items import InMemoryItemIndex
from stream_app.logs import utc_ms
from stream_app.stream.batch import BatchHandler, Counters, PartitionState
from stream_app.stream.erasures import ErasedUsers
from stream_app.tools.erase import describe


@pytest.fixture
def settings() -> Settings:
    return Settings(ranker_warm_up=2)


def erasing(settings: Settings, profiles: dict, erased: ErasedUsers, requested_at: int) -> tuple[BatchHandler, dict]:
    handler = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                           now=5, erased=erased)
    handler.erase(erase_request(USER, requested_at), 0, "worker-1")
    handler.snapshots("profiles.changelog", {}, "learners.changelog")
    handler.send_receipts({user: True for user, _ in handler.removed})
    (sent,) = [orjson.loads(value) for topic, _, value, _ in handler.outbox.records
               if topic == settings.topics.erasure_receipts]
    return handler, sent


def test_a_profile_of_events_stamped_after_the_request_applied_before_it_is_erased_whole(settings, monkeypatch):
    events = make_events()
    profiles: dict = {}
    run(events, settings, profiles, {}, None, monkeypatch)
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    handler, sent = erasing(settings, profiles, erased, events[0].ts - 60_000)  # the erase command's clock behind
    assert USER.encode() not in profiles and handler.removed == [(USER, 0)]
    assert (settings.topics.profiles, USER.encode(), None) in [r[:3] for r in handler.outbox.records]
    assert sent["deleted"]["profile_table"] == {"found": True, "version": len(events), "event_count": len(events)}
    assert sent["deleted"]["redis"]["existed"] is True
    # the erasure's time covers the events it erased: the record drops them if they come again, and Redis's marker
    # (the worker gives it the receipt's time) refuses a late write of the erased profile
    assert sent["erased_through"] == events[-1].ts == erased.erased_at(USER)
    # the request's own time stays as it was asked for: an auditor matches the receipt to its request by both
    assert sent["requested_at"] == events[0].ts - 60_000
    jsonschema.validate(sent, load_schema("erasure-receipt"))
    assert f"dated at or before {utc_ms(events[-1].ts)}" in describe(sent)
    again = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                         now=6, erased=erased)
    again.process_round([ready(e, i) for i, e in enumerate(events)], None, None)  # replayed, or redelivered
    assert again.counters.erased_events_dropped == len(events) and USER.encode() not in profiles


def test_a_request_applied_again_keeps_the_profile_begun_after_it_and_still_sends_its_receipt(settings, monkeypatch):
    events = make_events()
    profiles: dict = {}
    run(events, settings, profiles, {}, None, monkeypatch)
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    at = events[0].ts - 60_000
    erased.record(erase_request(USER, at))  # applied before: the profile is of the user's later life
    handler, sent = erasing(settings, profiles, erased, at)
    assert USER.encode() in profiles and handler.removed == []
    assert sent["deleted"]["profile_table"]["found"] is False
    assert not [r for r in handler.outbox.records if r[1] == USER.encode() and r[2] is None]  # no tombstone
    # and the receipt claims none: it named tombstones and a Redis marker that were never written
    deleted = sent["deleted"]
    assert "changelog" not in deleted and "profiles_topic" not in deleted and deleted["kept_later_profile"] is True
    assert deleted["redis"]["marker_s"] == 0 and deleted["redis"]["existed"] is False
    jsonschema.validate(sent, load_schema("erasure-receipt"))
    said = describe(sent)  # what `stream-app erase` prints of it (it read the tombstones' topics and failed)
    assert "deleted: nothing" in said and "tombstones on" not in said


def test_a_second_request_within_the_span_of_events_stamped_ahead_erases_the_profile_begun_since(settings,
                                                                                                monkeypatch):
    """The first erasure's time is raised to the events it erased, stamped ahead of the erase command's clock: a
    second request (another id) dated within that span was taken for the first applied again, and the profile the
    user began since was kept, the receipt saying `kept_later_profile` (helper-140)."""
    from test_batch_handler import make_events

    events = make_events()
    profiles: dict = {}
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    first_at = events[0].ts - 60_000  # the erase command's clock a minute behind the user's events
    erasing(settings, profiles, erased, first_at)  # nothing there yet: recorded at first_at
    run(events, settings, profiles, {}, None, monkeypatch)
    ahead = events[-1].ts
    erased.record(erase_request(USER, first_at, "r1"))  # r1's time raised by the erased profile's last event
    erased.data[erased.user_hash(USER).encode()] = orjson.dumps(
        {"erased_at": ahead, "request_id": "r1", "key_id": erased.key_id, "request_ids": ["r1"]})
    later = [e.__class__.from_dict({**e.to_dict(), "event_id": f"{e.event_id}-b", "ts": ahead + 1_000 + n})
             for n, e in enumerate(events[:3])]
    run(later, settings, profiles, {}, None, monkeypatch)  # the user comes back: a profile begun after r1
    assert USER.encode() in profiles
    handler = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                           now=5, erased=erased)
    handler.erase(erase_request(USER, first_at + 90_000, "r2"), 0, "worker-1")  # dated before `ahead`, not r1
    assert USER.encode() not in profiles and handler.removed == [(USER, 0)]
    assert handler.receipts[0]["deleted"]["profile_table"]["found"] is True
    assert "kept_later_profile" not in handler.receipts[0]["deleted"]
    # r1 and r2 sent again by a recreated erasures topic: each is known by its id, and a profile begun since kept
    assert erased.applied_before(USER, "r1") and erased.applied_before(USER, "r2")
    assert not erased.applied_before(USER, "r3")


def test_an_erased_users_record_of_before_the_id_list_is_still_known_by_its_last_request(settings):
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    erased.data[erased.user_hash(USER).encode()] = orjson.dumps(
        {"erased_at": 5, "request_id": "r0", "key_id": erased.key_id})  # as written before 2026-12-06
    assert erased.applied_before(USER, "r0") and not erased.applied_before(USER, "r1")
    key, value = erased.record(erase_request(USER, 10, "r1"))
    assert orjson.loads(value)["request_ids"] == ["r0", "r1"]
    for n in range(40):  # bounded: the last 32 requests' ids
        key, value = erased.record(erase_request(USER, 20 + n, f"q{n}"))
    assert orjson.loads(value)["request_ids"] == [f"q{n}" for n in range(8, 40)]
