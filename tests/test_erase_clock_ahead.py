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
    assert sent["requested_at"] == events[-1].ts == erased.erased_at(USER)
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
