"""An erasure request applied again, which keeps the profile its user began after it, in the same batch as an idle
eviction, and a restored profile erased again: the worker's batch (`StreamWorker.handle_batch`) over fakes of its
parts, down to what it asks of Redis."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
import pytest
from test_batch_handler import USER, erase_request, make_events, ready, run

from stream_app.config import Settings
from stream_app.core.events import Event
from stream_app.core.items import InMemoryItemIndex
from stream_app.core.profile import Profile
from stream_app.stream.batch import Counters, PartitionState
from stream_app.stream.erasures import ErasedUsers
from stream_app.stream.idle_users import IdleUsers
from stream_app.stream.worker import StreamWorker

IDLE_MS = 3_600_000


@pytest.fixture
def settings() -> Settings:
    return Settings(ranker_warm_up=2, user_idle_ms=IDLE_MS, partitions=1)


def one_batch(settings: Settings, profiles: dict, erased: ErasedUsers, requests: list, at_ms: int,
              restored: bool = False) -> tuple[list[tuple], list[dict]]:
    """One batch of the worker: `requests` applied before its rounds (after the look for erased users' profiles a
    restore took up, if `restored`), then one round, of another user's event at `at_ms` (its item epoch due for an
    eviction pass). Returns the `delete_profiles` calls and the receipts sent."""
    deletes: list[tuple] = []
    store_profiles: dict[str, bool] = {}  # the users Redis holds a profile of

    async def delete_profiles(user_ids, erased_at, evicted, now_ms):
        deletes.append((list(user_ids), dict(erased_at), dict(evicted), now_ms))
        return {user: store_profiles.pop(user, False) for user in user_ids}

    async def apply(handler, owned):
        for request in requests:
            handler.erase(request, 0, "worker-1")

    async def nothing(*args, **kwargs):
        return None

    store_profiles[USER] = True
    other = Event.from_dict({"event_id": "x1", "user_id": "u2", "item_id": "a", "type": "click", "ts": at_ms,
                             "schema_version": 1})
    rounds = [(at_ms // settings.item_epoch_ms, [ready(other, 100)])]
    outboxes: list = []
    worker = SimpleNamespace(
        settings=settings, lock=asyncio.Lock(), processing=True, steer_faust=lambda: None,
        offsets=SimpleNamespace(generation=0, held_for=nothing, flushed=lambda *args: None, commit_due=nothing),
        profile_table=SimpleNamespace(data=profiles, changelog_topic_name="profiles.changelog"),
        learner_table=SimpleNamespace(data={}, changelog_topic_name="learners.changelog"),
        partition_state=PartitionState({}, settings), index=InMemoryItemIndex(settings), counters=Counters(),
        idle_users=IdleUsers(profiles), erased=erased, profile_sizes=None, profile_cache=None, redeliverable=None, partitions_ready=True,
        restored_unchecked=restored, erasures=SimpleNamespace(apply=apply), assigned_inputs=lambda: {0}, partitions=1,
        watcher=SimpleNamespace(live=None, shadow=None), catalogue=SimpleNamespace(index=None, withdrawn=()),
        user_eviction=SimpleNamespace(due=lambda ms: ms),
        ordered=SimpleNamespace(next_round=lambda room: rounds.pop() if rounds else (0, []),
                                count_applied=lambda *args: None, applied_marks=lambda: {}, settled_marks=lambda: {},
                                take_refetches=lambda: []),
        metrics=SimpleNamespace(stages=SimpleNamespace(observe=lambda *args: None), observe_batch=lambda *args: None,
                                freshness=SimpleNamespace(applied=lambda *args: None, forget=lambda *args: None)),
        store=SimpleNamespace(delete_profiles=delete_profiles, write_profiles=nothing),
        output=SimpleNamespace(deliver=lambda outbox: outboxes.append(outbox) or nothing()),
        retrying=lambda *args: (lambda: None), outages={}, stream=SimpleNamespace(ack=nothing),
        app=SimpleNamespace(consumer=None))
    assert asyncio.run(StreamWorker.handle_batch(worker)) is True
    (outbox,) = outboxes
    sent = [orjson.loads(value) for topic, _, value, _ in outbox.records if topic == settings.topics.erasure_receipts]
    return deletes, sent


def idle_profile(settings: Settings, monkeypatch) -> tuple[dict, list[Event], int]:
    """u1's profile, of events a minute apart; and a time an hour and more after its last one (u1 idle then)."""
    events = make_events()
    profiles: dict = {}
    run(events, settings, profiles, {}, None, monkeypatch)
    return profiles, events, events[-1].ts + IDLE_MS + 60_000


def test_an_idle_eviction_after_an_erasure_that_kept_the_users_later_profile_deletes_it_from_redis(settings,
                                                                                                 monkeypatch):
    """The erasure's time went to Redis with the eviction of the same user: Redis's removal then kept the profile as
    one begun after the erasure, and wrote no marker, so Redis served the evicted profile on, with no TTL, while the
    table and the profiles topic had its tombstones (helper-147)."""
    profiles, events, later = idle_profile(settings, monkeypatch)
    generation = Profile.from_json(profiles[USER.encode()]).generation
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    at = events[0].ts - 60_000
    erased.record(erase_request(USER, at))  # applied before: the profile is of the user's later life
    deletes, (sent,) = one_batch(settings, profiles, erased, [erase_request(USER, at)], later)
    assert sent["deleted"]["kept_later_profile"] is True and USER.encode() not in profiles  # kept, then evicted
    (user_ids, erased_at, evicted, now_ms), = deletes
    assert user_ids == [USER] and evicted == {USER: generation}
    assert erased_at == {}  # before: {u1: the erasure's time}, so `_REMOVE` left the profile and wrote no marker
    # the erasure deleted nothing in Redis (the eviction did): its receipt says what it did
    assert sent["deleted"]["redis"]["existed"] is False and sent["deleted"]["redis"]["marker_s"] == 0


def test_another_users_kept_profile_does_not_reach_an_eviction_and_a_first_erasure_keeps_its_marker(settings,
                                                                                                 monkeypatch):
    """The same batch, the erasure kept another user's profile: the evicted user's removal is an eviction's only (so
    it was before the fix too: Redis is given each user's own erasure time). And an erasure applied first (its user's
    profile removed) still gives Redis its time, for the marker."""
    profiles, events, later = idle_profile(settings, monkeypatch)
    generation = Profile.from_json(profiles[USER.encode()]).generation
    profiles[b"u3"] = Profile("u3", version=1, event_count=1, generation=later - 1, first_seen=later - 1,
                              last_seen=later - 1).to_json()  # active at the pass: not evicted
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    erased.record(erase_request("u3", later - 10))
    deletes, sent = one_batch(settings, profiles, erased,
                              [erase_request("u3", later - 10), erase_request("u4", later - 5, "r4")], later)
    assert [s["deleted"].get("kept_later_profile", False) for s in sent] == [True, False]
    (user_ids, erased_at, evicted, _), = deletes
    assert user_ids == ["u4", USER] and evicted == {USER: generation}
    assert USER not in erased_at and erased_at["u4"] == later - 5
    assert b"u3" in profiles


def test_no_erasure_time_goes_to_redis_when_erased_users_events_are_replayed(settings, monkeypatch):
    profiles, events, later = idle_profile(settings, monkeypatch)
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    deletes, _ = one_batch(settings.replace(replay_erased=True), profiles, erased,
                           [erase_request("u4", later - 5, "r4")], later)
    (user_ids, erased_at, _, _), = deletes
    assert user_ids == ["u4", USER] and erased_at == {}


def test_a_restored_profile_erased_again_gives_redis_its_erasure_time_beside_the_batchs_erasures(settings,
                                                                                               monkeypatch):
    """A profile the table restored of a user erased after it began is removed again without a receipt: Redis must
    still have that erasure's time, for the marker that refuses the late writes of that profile."""
    profiles, events, later = idle_profile(settings, monkeypatch)
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    erased.record(erase_request(USER, events[-1].ts))  # after the profile began: a late write of an earlier owner
    deletes, sent = one_batch(settings, profiles, erased, [erase_request("u4", later - 5, "r4")], later,
                              restored=True)
    assert USER.encode() not in profiles and [s["user_id"] for s in sent] == ["u4"]  # no receipt of its own
    (user_ids, erased_at, evicted, _), = deletes
    assert user_ids == [USER, "u4"] and evicted == {}  # removed as erased (before the requests), not evicted as idle
    assert erased_at == {USER: events[-1].ts, "u4": later - 5}
