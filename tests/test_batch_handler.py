"""The worker's batch handler without a broker: an event whose processing raises is applied not at all."""

from __future__ import annotations

import doctest
import random
import time
from types import SimpleNamespace

import orjson
import pytest

from stream_app.config import Settings
from stream_app.core import process
from stream_app.core.events import Event
from stream_app.core.items import InMemoryItemIndex
from stream_app.core.learners import read_partition_learners
from stream_app.core.profile import Profile, event_digest
from stream_app.store.redis_store import MARKER_S
from stream_app.stream import batch as batch_module
from stream_app.stream import profile_cache
from stream_app.stream.batch import BatchHandler, Counters, PartitionState
from stream_app.stream.learner_table import learners_mark
from stream_app.stream.profile_cache import ProfileCache
from stream_app.stream.ready import Ready

USER = "u1"
RECOMMEND = process.recommend


def make_events() -> list[Event]:
    items = ["a", "b", "c", "a", "d", "b", "e", "c"]
    return [Event.from_dict({"event_id": f"e{i}", "user_id": USER, "item_id": item, "type": "click",
                             "ts": 1_700_000_000_000 + 60_000 * i, "schema_version": 1})
            for i, item in enumerate(items)]


def ready(event: Event, offset: int, partition: int = 0) -> Ready:
    value = orjson.dumps({"event_id": event.event_id})
    message = SimpleNamespace(topic="events.clicks", partition=partition, offset=offset, key=event.user_id.encode(),
                              value=value, timestamp=event.ts / 1000)
    return Ready(entry=None, event=SimpleNamespace(message=message), checked=event)


def run(events: list[Event], settings: Settings, profiles: dict, learner_data: dict, fail_on: str | None,
        monkeypatch, cache: ProfileCache | None = None) -> BatchHandler:
    """One batch over `events`; `fail_on`: the event whose recommendation step raises (after the
    event's feedback, digest and counts were applied in place)."""
    def failing(profile, event, *args, **kwargs):
        if event.event_id == fail_on:
            raise RuntimeError("a bug in ranking")
        return RECOMMEND(profile, event, *args, **kwargs)

    monkeypatch.setattr(process, "recommend", failing)
    learners = PartitionState(learner_data, settings, profile_marks=lambda partition: highest_mark(profiles))
    handler = BatchHandler(settings, profiles, learners, InMemoryItemIndex(settings), Counters(), now=0, cache=cache)
    handler.process_round([ready(e, log_offset(e)) for e in events], None, None)
    learner_table: dict = {}
    handler.snapshots("profiles.changelog", learner_table, "learners.changelog")
    learner_data.update(learner_table)
    return handler


def log_offset(event: Event) -> int:
    """The event's offset in its input partition, whatever batch it comes in (a profile record names the input
    records its batch's recommendations were made for): these events are a minute apart from 1_700_000_000_000."""
    return (event.ts - 1_700_000_000_000) // 60_000


def highest_mark(profiles: dict) -> int | None:
    """The highest learners mark among the profile records (every user here is of partition 0), as the table keeps it."""
    return max((mark for mark in map(learners_mark, profiles.values()) if mark is not None), default=None)


@pytest.fixture
def settings() -> Settings:
    return Settings(ranker_warm_up=2)


def test_an_event_that_raises_leaves_profile_and_learners_as_if_it_never_came(settings, monkeypatch, caplog):
    events = make_events()
    failed = events[5]
    profiles: dict = {}
    learners: dict = {}
    handler = run(events, settings, profiles, learners, failed.event_id, monkeypatch)

    parked = [orjson.loads(value) for topic, _, value, *_ in handler.outbox.records if topic == settings.topics.dlq]
    assert [(r["reason"], r["source"]["offset"]) for r in parked] == [("processing_error", 5)]
    assert "a bug in ranking" in parked[0]["detail"]
    assert handler.counters.applied == len(events) - 1 and handler.counters.duplicates == 0
    # the breakdowns the metrics read: every input by topic and type, the dead letter by its reason
    assert handler.counters.inputs == {"events.clicks": {"click": len(events)}}
    assert handler.counters.dead_letters == {"processing_error": 1}
    (logged,) = [r for r in caplog.records if r.getMessage().startswith("rejected ")]
    assert (logged.event_id, logged.partition, logged.offset) == (failed.event_id, 0, 5)  # JSON log fields
    assert len(handler.recommended) == len(events) - 1

    without: dict = {}
    without_learners: dict = {}
    run([e for e in events if e is not failed], settings, without, without_learners, None, monkeypatch)
    assert profiles == without  # byte for byte: no digest, count, feedback or learner state of the failed event
    assert learners == without_learners
    assert read_partition_learners(learners[b"0"], "p0").ranker.labels > 0  # the ranker learned: its state mattered

    profile = Profile.from_json(profiles[USER.encode()])
    assert profile.admits(event_digest(failed.event_id), failed.ts)


def test_a_users_first_event_of_a_batch_that_raises_leaves_the_stored_profile(settings, monkeypatch):
    """The undo copy of a user's first event in a batch is the profile as stored (not serialised again);
    a later event of the user in that batch is undone to after the earlier ones."""
    events = make_events()

    def two_batches(first: list, then: list, fail_on: str | None) -> tuple[dict, dict]:
        profiles: dict = {}
        learners: dict = {}
        run(first, settings, profiles, learners, None, monkeypatch)
        run(then, settings, profiles, learners, fail_on, monkeypatch)
        return profiles, learners

    failed_first = two_batches(events[:4], events[4:], events[4].event_id)
    assert failed_first == two_batches(events[:4], events[5:], None)
    assert two_batches(events[:4], events[4:], events[5].event_id) == two_batches(
        events[:4], [events[4], *events[6:]], None)
    alone = two_batches(events[:4], [events[4]], events[4].event_id)  # nothing else in its batch: nothing changes
    assert alone == two_batches(events[:4], [], None) != failed_first


def mixed_events(count: int) -> list[Event]:
    """`count` events of three users over ten items, one minute apart, of every type."""
    rng = random.Random(3)
    return [Event.from_dict({"event_id": f"m{i}", "user_id": rng.choice(["u1", "u2", "u3"]),
                             "item_id": f"i{rng.randrange(10)}", "type": rng.choice(["browse", "click", "purchase"]),
                             "category": f"c{rng.randrange(3)}", "ts": 1_700_000_000_000 + 60_000 * i,
                             "schema_version": 1})
            for i in range(count)]


def batches(events: list[Event], settings: Settings, monkeypatch, cache: ProfileCache | None, size: int = 8,
            fail_on: str | None = None, between=None) -> tuple[dict, dict, list, list[BatchHandler]]:
    """The events in batches of `size`, one handler each (`between(n, profiles)` before the n-th batch):
    the profile table, the learners table, every record sent and the handlers."""
    profiles: dict = {}
    learners: dict = {}
    sent, handlers = [], []
    for n, start in enumerate(range(0, len(events), size)):
        if between is not None:
            between(n, profiles)
        handler = run(events[start:start + size], settings, profiles, learners, fail_on, monkeypatch, cache)
        sent.extend(handler.outbox.records)
        handlers.append(handler)
    return profiles, learners, sent, handlers


def test_profiles_kept_as_objects_between_batches_give_what_parsing_their_records_gives(settings, monkeypatch):
    """A user's next batch takes up the object its record was written from (no parse): every record written and
    sent is byte for byte what the worker wrote parsing each stored profile, also across a failed event's undo."""
    events = mixed_events(64)
    alone = next(e.event_id for n, e in enumerate(events[8:], 8)  # its user's only event in its batch: not written
                 if [x.user_id for x in events[n - n % 8:n - n % 8 + 8]].count(e.user_id) == 1)
    for fail_on in (None, "m21", alone):
        parsed = batches(events, settings, monkeypatch, None, fail_on=fail_on)
        kept = batches(events, settings, monkeypatch, ProfileCache(10), fail_on=fail_on)
        assert kept[:3] == parsed[:3]
        reused, reparsed = (sum(getattr(h.counters, name) for h in kept[3])
                            for name in ("profiles_reused", "profiles_parsed"))
        assert reused + reparsed == sum(h.counters.profiles_parsed for h in parsed[3]) and reused > 15
        assert reparsed == (fail_on == alone)  # the object its failed event changed in part was not kept
        if fail_on is not None:  # the failed event applied not at all, with the cache as without it
            failed = next(e for e in events if e.event_id == fail_on)
            stored = Profile.from_json(kept[0][failed.user_id.encode()])
            assert stored.event_count == sum(e.user_id == failed.user_id for e in events) - 1
            assert stored.admits(event_digest(fail_on), failed.ts)


def test_a_kept_profile_is_not_taken_up_once_the_table_holds_other_bytes(settings, monkeypatch):
    """The table's record replaced (an older one recovered from the changelog, a rewrite, another owner's write),
    or removed: the stored record is parsed, as without the cache, not the object written before."""
    events = mixed_events(48)
    earlier: dict = {}

    def recover_older(n: int, profiles: dict) -> None:
        if n == 2:
            earlier.update(profiles)
        elif n == 4:  # back to the table as it was two batches ago, u3 gone
            profiles.clear()
            profiles.update({k: v for k, v in earlier.items() if k != b"u3"})

    parsed = batches(events, settings, monkeypatch, None, between=recover_older)
    kept = batches(events, settings, monkeypatch, ProfileCache(10), between=recover_older)
    assert kept[:3] == parsed[:3]
    assert kept[3][4].counters.profiles_reused == 0 and kept[3][4].counters.profiles_parsed > 0
    assert kept[3][5].counters.profiles_reused > 0


def test_a_removed_users_kept_profile_leaves_the_cache(settings, monkeypatch):
    """Erased, reset or evicted: the table's record goes, and so does the object the worker kept of it (an
    erased user's profile is not to stay in the worker's memory until newer ones push it out)."""
    cache = ProfileCache(10)
    profiles: dict = {}
    run(mixed_events(12), settings, profiles, {}, None, monkeypatch, cache)
    assert set(cache.held) == {"u1", "u2", "u3"}
    handler = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                           now=0, cache=cache)
    assert handler.remove_for_request("u2", 0) == ["kept profiles", "freshness metrics"]  # the receipt's list
    assert set(cache.held) == {"u1", "u3"} and b"u2" not in profiles
    assert handler.remove_for_request("u2", 0) == ["freshness metrics"]


def test_after_a_rebalance_the_cache_holds_only_the_profiles_of_owned_partitions():
    from stream_app.partitioning import partition_of

    cache = ProfileCache(100)
    users = [f"user-{n}" for n in range(40)]
    for user in users:
        cache.keep(user, user.encode(), Profile(user))
    cache.keep_only({0, 3}, 8)
    assert sorted(cache.held) == sorted(u for u in users if partition_of(u, 8) in {0, 3}) != []


def test_the_caches_docstring_example_runs():
    result = doctest.testmod(profile_cache)
    assert result.attempted >= 5 and result.failed == 0


def test_the_cache_holds_the_most_recently_written_profiles_up_to_its_capacity():
    cache = ProfileCache(2)
    profiles = {user: Profile(user) for user in ("a", "b", "c")}
    for user in ("a", "b", "a", "c"):  # a written again: b is the least recent
        cache.keep(user, user.encode(), profiles[user])
    assert cache.take("b", b"b") is None
    assert cache.take("a", b"a") is profiles["a"] and cache.take("c", b"c") is profiles["c"]
    ProfileCache(0).keep("a", b"a", profiles["a"])
    off = ProfileCache(0)
    off.keep("a", b"a", profiles["a"])
    assert off.take("a", b"a") is None


def test_the_parked_event_re_driven_is_applied_not_dropped_as_a_duplicate(settings, monkeypatch):
    events = make_events()
    profiles: dict = {}
    learners: dict = {}
    run(events, settings, profiles, learners, events[5].event_id, monkeypatch)
    handler = run([events[5]], settings, profiles, learners, None, monkeypatch)
    assert handler.counters.applied == 1 and handler.counters.duplicates == 0
    assert Profile.from_json(profiles[USER.encode()]).event_count == len(events)


def test_output_retries_an_outage_and_stops_on_a_refusal_no_retry_changes(monkeypatch, caplog):
    import asyncio

    from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
    from redis.exceptions import AuthenticationError

    from stream_app.stream import retries as retrying

    class Stopped(Exception):
        pass

    def stop(status):
        raise Stopped(status)

    monkeypatch.setattr(retrying, "stop_worker", stop)
    calls = []

    async def deliver(failures):
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return "delivered"

    retries = []  # what the worker counts as stream_app_output_retries_total
    assert asyncio.run(retrying.until_done("deliver", deliver, [KafkaConnectionError(), KafkaConnectionError()],
                                         max_backoff_s=0.01, on_retry=lambda: retries.append(1))) == "delivered"
    assert len(calls) == 3 and len(retries) == 2
    calls.clear()
    with pytest.raises(Stopped) as stopped:
        asyncio.run(retrying.until_done("deliver", deliver, [MessageSizeTooLargeError()] * 5))
    assert stopped.value.args == (retrying.EXIT_OUTPUT_REFUSED,) and len(calls) == 1
    assert "check the topic's max.message.bytes, the Kafka ACLs or the credentials" in caplog.text
    calls.clear()
    with pytest.raises(Stopped):  # a wrong Redis password was told to check Kafka's topic settings
        asyncio.run(retrying.until_done("write to Redis", deliver, [AuthenticationError("invalid password")]))
    assert "check REDIS_URL's password or the Redis ACL" in caplog.text


def test_a_redelivered_event_writes_its_profile_to_redis_again(settings, monkeypatch):
    """A crash between the Kafka delivery and the Redis write leaves Redis behind the table; the
    redelivery of that batch changes nothing in the table, but must bring Redis level again."""
    events = make_events()[:3]
    profiles: dict = {}
    learners = PartitionState({}, settings)
    first = BatchHandler(settings, profiles, learners, InMemoryItemIndex(settings), Counters(), now=0)
    first.process_round([ready(e, i) for i, e in enumerate(events)], None, None)
    assert [p.user_id for p, _ in first.snapshots("c", {}, "l")] == [USER]
    again = BatchHandler(settings, profiles, learners, InMemoryItemIndex(settings), Counters(), now=0)
    again.process_round([ready(e, i) for i, e in enumerate(events)], None, None)
    # nor a list again: this worker published them (a takeover's: tests/test_batch_recommendations.py)
    assert again.counters.duplicates == 3 and again.outbox.records == []
    to_redis = again.snapshots("c", {}, "l")
    assert [(p.user_id, p.version, orjson.loads(public)["event_count"]) for p, public in to_redis] == [(USER, 3, 3)]
    assert again.outbox.records == []  # the table and the profiles topic already have it


class Forged:
    """What someone who can write to a changelog topic might put there."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.path}",)


def forged_state(path) -> str:
    import base64
    import pickle

    return base64.b64encode(pickle.dumps(Forged(path))).decode("ascii")


def test_forged_learner_state_runs_no_code_is_dead_lettered_and_the_learners_start_afresh(settings, monkeypatch,
                                                                                         tmp_path):
    from stream_app.core.learners import BehaviourStats

    witness = tmp_path / "pwned"
    profile = process.new_profile(USER, settings)
    profile.learner_state[BehaviourStats.name] = forged_state(witness)
    profiles = {USER.encode(): profile.to_json()}
    learners = {b"0": forged_state(witness).encode()}
    handler = run(make_events(), settings, profiles, learners, None, monkeypatch)
    assert not witness.exists()
    assert handler.counters.applied == len(make_events())
    parked = [orjson.loads(value) for topic, _, value, *_ in handler.outbox.records if topic == settings.topics.dlq]
    assert [(r["reason"], r["source"]["topic"], r["source"]["partition"], r["key_text"]) for r in parked] == [
        ("bad_state", "stream-app-partition-learners-changelog", 0, "0"),
        ("bad_state", "stream-app-profiles-changelog", 0, USER)]
    assert all("may not name posix.system" in r["detail"] and r["payload_text"] == forged_state(witness)
               for r in parked)
    assert handler.counters.dead_letters == {"bad_state": 2}
    restored = read_partition_learners(learners[b"0"], "p0")  # written back: real state now
    assert restored.ranker.labels > 0
    stored = Profile.from_json(profiles[USER.encode()]).learner_state[BehaviourStats.name]
    assert stored["kind"] == BehaviourStats.kind and stored["sessions"] == 1


def test_a_failed_first_event_of_a_profile_with_unreadable_state_dead_letters_that_state_once(settings, monkeypatch):
    stored = orjson.loads(process.new_profile(USER, settings).to_json())
    profiles = {USER.encode(): orjson.dumps({**stored, "learner_state": ["forged"]})}  # refused as it is read
    events = make_events()
    handler = run(events, settings, profiles, {}, events[0].event_id, monkeypatch)  # undone, then the rest
    reasons = [orjson.loads(value)["reason"] for topic, _, value, *_ in handler.outbox.records
               if topic == settings.topics.dlq]
    assert sorted(reasons) == ["bad_state", "processing_error"]  # the state once, not again after the undo


def test_an_unreadable_stored_profile_parks_its_users_events_and_the_batch_goes_on(settings, monkeypatch):
    other = Event.from_dict({"event_id": "o1", "user_id": "u2", "item_id": "a", "type": "click",
                             "ts": 1_700_000_000_000, "schema_version": 1})
    profiles = {USER.encode(): b"{not a profile"}  # a corrupt changelog record, recovered into the table
    handler = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings),
                           Counters(), now=0)
    handler.process_round([ready(e, i) for i, e in enumerate([*make_events()[:2], other])], None, None)
    parked = [orjson.loads(value) for topic, _, value, _ in handler.outbox.records if topic == settings.topics.dlq]
    assert [(r["reason"], r["source"]["offset"]) for r in parked] == [("processing_error", 0), ("processing_error", 1)]
    assert "stored profile of 'u1' cannot be read" in parked[0]["detail"]
    assert handler.counters.applied == 1 and set(handler.changed) == {"u2"}


def test_an_encoder_that_fails_at_run_time_leaves_the_round_ranked_without_it(settings, monkeypatch):
    class Broken:
        version = "enc-broken"

        def __getattr__(self, name):
            raise RuntimeError("onnxruntime: invalid input")

    handler = BatchHandler(settings, {}, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(), now=0)
    handler.process_round([ready(e, i) for i, e in enumerate(make_events())], Broken(), None)
    assert handler.counters.encoder_failures == 1 and handler.counters.applied == len(make_events())
    recs = [orjson.loads(value) for topic, _, value, _ in handler.outbox.records
            if topic == settings.topics.recommendations]
    assert len(recs) == len(make_events()) and all("encoder" not in r["model"] for r in recs)


def test_a_rebalance_step_waits_for_a_batch_in_flight_but_not_past_the_rebalance_timeout():
    import asyncio
    import time

    from stream_app.stream.retries import batch_finished_or_late

    async def scenario():
        lock = asyncio.Lock()
        async with batch_finished_or_late(lock, "free") as held:
            assert held and lock.locked()
        assert not lock.locked()

        async def batch(seconds):  # a batch whose output takes this long
            async with lock:
                await asyncio.sleep(seconds)

        quick = asyncio.create_task(batch(0.2))
        await asyncio.sleep(0.05)
        async with batch_finished_or_late(lock, "after a quick batch", wait_s=2.0) as held:
            assert held and quick.done()  # it waited for the batch to finish
        stuck = asyncio.create_task(batch(30))  # retrying an outage
        await asyncio.sleep(0.05)
        started = time.monotonic()
        async with batch_finished_or_late(lock, "during an outage", wait_s=0.3) as held:
            assert not held
        assert time.monotonic() - started < 1.0 and lock.locked() and not stuck.done()
        stuck.cancel()

    asyncio.run(scenario())


def test_an_idle_user_leaves_only_if_idle_now_and_only_from_its_own_partitions(settings):
    from stream_app.partitioning import partition_of
    from stream_app.stream.idle_users import IdleUsers

    settings = settings.replace(user_idle_ms=3_600_000, partitions=8)
    events = make_events()  # u1, one a minute from T
    stored = {}
    for user_id, last_seen in (("old-a", events[0].ts - 7_200_000), ("old-b", events[0].ts - 7_200_000)):
        profile = Profile(user_id, version=3, event_count=3, first_seen=last_seen, last_seen=last_seen)
        stored[user_id.encode()] = profile.to_json()
    stored[USER.encode()] = Profile(USER, version=1, event_count=1, first_seen=events[0].ts - 7_200_000,
                                    last_seen=events[0].ts - 7_200_000).to_json()
    idle = IdleUsers(stored)
    handler = BatchHandler(settings, stored, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                           now=0, idle=idle)
    handler.process_round([ready(events[0], 0)], None, None)  # u1 comes back before the pass
    owned = {partition_of("old-a", 8), partition_of(USER, 8)} - {partition_of("old-b", 8)}
    handler.evict_idle(events[0].ts + 60_000, owned, 8)
    assert [user for user, _ in handler.removed] == ["old-a"]  # u1 is active, old-b another worker's
    assert b"old-a" not in stored and b"old-b" in stored and handler.counters.evicted_users == 1
    handler.snapshots("profiles.changelog", {}, "learners.changelog")
    tombstones = [(topic, key) for topic, key, value, _ in handler.outbox.records if value is None]
    assert tombstones == [("profiles.changelog", b"old-a"), (settings.topics.profiles, b"old-a")]


def erase_request(user_id: str, at: int, request_id: str = "r1", offset: int = 0):
    from stream_app.contracts import ErasureRequest, Source

    return ErasureRequest(request_id, user_id, at, Source("erasures", 0, offset))


def test_an_erasure_deletes_the_profile_everywhere_and_says_so_in_its_receipt(settings, monkeypatch):
    import jsonschema

    from stream_app.contracts import load_schema
    from stream_app.stream.erasures import ErasedUsers
    from stream_app.stream.idle_users import IdleUsers

    events = make_events()
    profiles: dict = {}
    run(events, settings, profiles, {}, None, monkeypatch)
    assert Profile.from_json(profiles[USER.encode()]).version == len(events)
    idle = IdleUsers(profiles)
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    handler = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                           now=5, idle=idle, erased=erased)
    idle.touched(USER, events[-1].ts)
    handler.erase(erase_request(USER, events[-1].ts), 0, "worker-1")
    handler.snapshots("profiles.changelog", {}, "learners.changelog")
    handler.send_receipts({USER: True})

    assert USER.encode() not in profiles and USER not in idle.last_seen
    records = [(topic, key, value) for topic, key, value, _ in handler.outbox.records]
    assert ("profiles.changelog", USER.encode(), None) in records
    assert (settings.topics.profiles, USER.encode(), None) in records
    (hashed,) = [(key, orjson.loads(value)) for topic, key, value in records if topic == "erased.changelog"]
    assert USER.encode() not in hashed[0] and hashed[1] == {"erased_at": events[-1].ts, "request_id": "r1",
                                                            "key_id": erased.key_id, "request_ids": ["r1"]}
    other_key = ErasedUsers({}, settings.replace(erasure_key="another secret"), "e", "p").user_hash(USER)
    assert hashed[0].decode() != other_key  # keyed: without the key, a user id cannot be tested against it
    (sent,) = [orjson.loads(value) for topic, _, value in records if topic == settings.topics.erasure_receipts]
    jsonschema.validate(sent, load_schema("erasure-receipt"))
    deleted = sent["deleted"]
    assert deleted["profile_table"] == {"found": True, "version": len(events), "event_count": len(events)}
    assert deleted["digests"] == len(events) and deleted["learner_state"]  # per-user learners lived in the profile
    assert deleted["pending_lists"]["shown"] > 0 and deleted["pending_lists"]["shown_features"] == 1
    assert deleted["redis"] == {"key": f"profile:{USER}", "existed": True, "marker_s": MARKER_S}
    assert "idle users" in deleted["worker_state"] and handler.counters.erased_users == 1
    assert (sent["request_id"], sent["user_id"], sent["worker_id"], sent["applied_at"]) == ("r1", USER, "worker-1", 5)
    from stream_app.tools.erase import describe

    sent["dead_letters"]["records"] = [{"partition": 0, "offset": 7}]
    assert "  left: 1 dead letter on " in describe(sent)  # it said "1 dead letters"


def test_every_state_record_and_recommendation_names_its_partition_and_nothing_else_does(settings):
    """The fence of a batch that outlived a revoke (output.Outbox.fence) drops records by these owners: a state
    record without one, or with another partition's, would reach a compacted topic after its partition's new owner
    wrote the key; a recommendation, as its event's new owner publishes one (made again if the record was dropped,
    else the one kept in it: batch_recommendations.py). Users of two partitions, neither 0, so an owner taken from
    elsewhere shows."""
    from stream_app.partitioning import partition_of
    from stream_app.stream.erasures import ErasedUsers

    state_topics = {"profiles.changelog", settings.topics.profiles, "learners.changelog", "erased.changelog",
                    settings.topics.recommendations}
    by_partition = {partition_of(f"u{i}", settings.partitions): f"u{i}" for i in range(100)}
    users = [by_partition[3], by_partition[5]]

    def owners(handler: BatchHandler) -> dict[str, set]:
        found: dict[str, set] = {}
        for (topic, key, _, _), owner in zip(handler.outbox.records, handler.outbox.owners, strict=True):
            found.setdefault(topic, set()).add(owner)
            if topic in ("profiles.changelog", settings.topics.profiles):  # a user's profile: its user's partition
                assert owner == partition_of(key.decode(), settings.partitions), (topic, key, owner)
        return found

    events = [Event.from_dict({"event_id": f"e{i}", "user_id": users[i % 2], "item_id": item, "type": "click",
                               "ts": 1_700_000_000_000 + 60_000 * i, "schema_version": 1})
              for i, item in enumerate(["a", "b", "c", "a", "d", "b", "e", "c"])]
    profiles: dict = {}
    handler = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                           now=0)
    handler.process_round([ready(e, i, partition_of(e.user_id, settings.partitions)) for i, e in enumerate(events)],
                          None, None)
    handler.snapshots("profiles.changelog", {}, "learners.changelog")
    found = owners(handler)
    assert {"profiles.changelog", settings.topics.profiles, "learners.changelog"} <= found.keys()
    assert settings.topics.recommendations in found
    assert all(found[topic] == ({3, 5} if topic in state_topics else {None}) for topic in found), found
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    eraser = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                          now=5, erased=erased)
    eraser.erase(erase_request(users[1], events[-1].ts), 5, "worker-1")
    eraser.snapshots("profiles.changelog", {}, "learners.changelog")
    eraser.send_receipts({users[1]: True})
    found = owners(eraser)
    assert {"profiles.changelog", settings.topics.profiles, "erased.changelog"} <= found.keys()
    assert all(found[topic] == ({5} if topic in state_topics else {None}) for topic in found), found


def test_after_an_erasure_older_events_are_dropped_and_later_ones_start_a_new_profile(settings, monkeypatch):
    from stream_app.stream.erasures import ErasedUsers

    events = make_events()
    erased_at = events[4].ts
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    erased.record(erase_request(USER, erased_at))
    profiles: dict = {}
    handler = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                           now=0, erased=erased)
    handler.process_round([ready(e, i) for i, e in enumerate(events)], None, None)  # an old log replayed, and more
    handler.snapshots("profiles.changelog", {}, "learners.changelog")
    assert handler.counters.erased_events_dropped == 5 and handler.counters.rejected == 0
    profile = Profile.from_json(profiles[USER.encode()])
    assert (profile.version, profile.event_count, profile.first_seen) == (3, 3, events[5].ts)
    recs = [orjson.loads(value) for topic, _, value, _ in handler.outbox.records
            if topic == settings.topics.recommendations]
    assert [r["profile_version"] for r in recs] == [1, 2, 3]

    asked = settings.replace(replay_erased=True)  # a replay meant to restore the user: applied
    profiles = {}
    handler = BatchHandler(asked, profiles, PartitionState({}, asked), InMemoryItemIndex(asked), Counters(),
                           now=0, erased=erased)
    handler.process_round([ready(e, i) for i, e in enumerate(events)], None, None)
    assert handler.counters.erased_events_dropped == 0 and handler.counters.applied == len(events)


def test_an_invalid_event_of_an_erased_user_is_dropped_not_dead_lettered(settings):
    """Dead-lettering it would store the erased user's payload again; an invalid event dated after the
    erasure (a new profile's) or of another user is dead-lettered as usual."""
    from stream_app.contracts import Rejection, Source
    from stream_app.stream.erasures import ErasedUsers

    erased_at = 1_700_000_000_000
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    erased.record(erase_request(USER, erased_at))
    erased.record(erase_request(USER, erased_at - 5_000, "r2"))  # a later request stamped earlier: kept the later time
    assert erased.erased_at(USER) == erased_at

    def invalid(key: bytes | None, payload: dict | bytes, offset: int) -> Ready:
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        message = SimpleNamespace(topic="events.clicks", partition=0, offset=offset, key=key, value=raw, timestamp=0)
        rejection = Rejection("schema_violation", "bad", Source("events.clicks", 0, offset), key, raw)
        return Ready(entry=None, event=SimpleNamespace(message=message), checked=rejection)

    handler = BatchHandler(settings, {}, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                           now=0, erased=erased)
    handler.process_round([invalid(USER.encode(), {"user_id": USER, "ts": erased_at - 1}, 0),  # dropped
                           invalid(None, {"user_id": USER, "type": "teleport"}, 1),  # undated: dropped
                           invalid(USER.encode(), b"{not json", 2),  # the key names the user: dropped
                           invalid(USER.encode(), {"user_id": USER, "ts": erased_at + 1}, 3),  # after: a dead letter
                           invalid(b"u2", {"user_id": "u2", "ts": erased_at - 1}, 4)], None, None)  # another user
    assert handler.counters.erased_events_dropped == 3
    dead = [orjson.loads(value)["source"]["offset"] for topic, _, value, _ in handler.outbox.records
            if topic == settings.topics.dlq]
    assert dead == [3, 4]


def test_a_worker_whose_erasure_key_is_not_the_one_past_erasures_were_recorded_with_stops(settings, monkeypatch):
    """Their hashes were made with the other key: this worker would not find them and would apply the
    erased users' old events again."""
    from stream_app.stream import erased_users as erasures

    stops = []
    monkeypatch.setattr(erasures, "stop_worker", stops.append)
    before = erasures.ErasedUsers({}, settings.replace(erasure_key="first"), "erased.changelog", "profiles.changelog")
    before.record(erase_request(USER, 5))
    before.data[b"offset:0"] = orjson.dumps({"next_offset": 1})
    before.data[b"legacy"] = orjson.dumps({"erased_at": 1, "request_id": "r0"})  # before key ids: not told apart
    same = erasures.ErasedUsers(before.data, settings.replace(erasure_key="first"), "e", "p")
    same.check_key()
    assert stops == [] and same.erased_at(USER) == 5
    rotated = erasures.ErasedUsers(before.data, settings.replace(erasure_key="second"), "e", "p")
    assert rotated.erased_at(USER) is None and rotated.other_keys() == {before.key_id}
    rotated.check_key()
    assert stops == [erasures.EXIT_ERASURE_KEY]
    # a rotation: the new key, the old one listed as previous: the old erasures are seen, new ones use the new key
    both = erasures.ErasedUsers(before.data, settings.replace(erasure_key="second", erasure_previous_keys="first"),
                                "e", "p")
    both.check_key()
    assert stops == [erasures.EXIT_ERASURE_KEY] and both.erased_at(USER) == 5
    both.record(erase_request(USER, 9, "r9"))
    assert both.erased_at(USER) == 9 and same.erased_at(USER) == 5 and both.other_keys() == set()


def test_a_key_set_after_erasures_were_recorded_without_one_names_the_group_id_to_list(settings, monkeypatch, caplog):
    """Following the start-up advice to set STREAM_APP_ERASURE_KEY stopped the worker, and nothing said that the key
    used before was the group id (helper-142 #5)."""
    from stream_app.stream import erased_users as erasures

    stops = []
    monkeypatch.setattr(erasures, "stop_worker", stops.append)
    before = erasures.ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")  # no key: the group id
    before.record(erase_request(USER, 5))
    keyed = erasures.ErasedUsers(before.data, settings.replace(erasure_key="s3cret"), "e", "p")
    with caplog.at_level("CRITICAL"):
        keyed.check_key()
    assert stops == [erasures.EXIT_ERASURE_KEY]
    assert f"STREAM_APP_ERASURE_PREVIOUS_KEYS={settings.group_id}" in caplog.text
    listed = erasures.ErasedUsers(before.data, settings.replace(erasure_key="s3cret",
                                                                erasure_previous_keys=settings.group_id), "e", "p")
    listed.check_key()
    assert stops == [erasures.EXIT_ERASURE_KEY] and listed.erased_at(USER) == 5


def test_a_restored_profile_of_a_user_erased_after_it_began_is_erased_again_once_per_assignment(settings):
    """An earlier owner's late changelog record after the erasure's tombstone, taken up by a restore."""
    from stream_app.partitioning import partition_of
    from stream_app.stream.erasures import ErasedUsers

    erased_at = 1_000_000
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    for user in ("late", "back", "elsewhere"):
        erased.record(erase_request(user, erased_at))
    profiles = {b"late": Profile(user_id="late", version=4, generation=erased_at - 5000).to_json(),
                b"back": Profile(user_id="back", version=1, generation=erased_at + 1).to_json(),  # begun after
                b"never": Profile(user_id="never", version=2, generation=1).to_json(),  # never erased
                b"elsewhere": Profile(user_id="elsewhere", version=2, generation=1).to_json()}
    owned = {partition_of(user, settings.partitions) for user in ("late", "back", "never")}
    assert partition_of("elsewhere", settings.partitions) not in owned  # another worker's: it looks itself

    handler = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                           now=0, erased=erased)
    assert handler.erase_restored(owned, settings.partitions) == {"late": erased_at}
    handler.snapshots("profiles.changelog", {}, "learners.changelog")
    assert set(profiles) == {b"back", b"never", b"elsewhere"}
    records = [(topic, key, value) for topic, key, value, _ in handler.outbox.records]
    assert ("profiles.changelog", b"late", None) in records and (settings.topics.profiles, b"late", None) in records
    assert handler.removed == [("late", partition_of("late", settings.partitions))]
    assert handler.counters.erased_profiles_restored == 1 and handler.receipts == []

    profiles[b"late"] = Profile(user_id="late", version=4, generation=erased_at - 5000).to_json()
    asked = settings.replace(replay_erased=True)  # old events are being applied again on purpose: kept
    handler = BatchHandler(asked, profiles, PartitionState({}, asked), InMemoryItemIndex(asked), Counters(), now=0,
                           erased=erased)
    assert handler.erase_restored(owned, asked.partitions) == {} and b"late" in profiles


def test_erasure_requests_wait_for_their_partition_owner_and_are_applied_once():
    from stream_app.contracts import Rejection, Source
    from stream_app.partitioning import partition_of
    from stream_app.stream.erasures import ErasedUsers, ErasureFeed

    settings = Settings(partitions=4)
    feed = ErasureFeed(settings, 4, lambda: None, "w", None)
    mine = partition_of(USER, 4)

    def request(user, offset, partition):
        value = orjson.dumps({"request_id": f"r{offset}", "user_id": user, "requested_at": 1, "schema_version": 1})
        feed.push(user.encode(), value, Source("erasures", partition, offset))

    request(USER, 0, mine)
    request(USER, 1, mine)
    request(USER, 2, (mine + 1) % 4)  # produced with another partitioner
    feed.push(USER.encode(), b"{not json", Source("erasures", mine, 3))
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    erased.applied_through(mine, 0)  # an earlier owner applied offset 0
    due = feed.due({mine, (mine + 1) % 4}, erased)
    assert [(p, o) for p, o, _ in due] == sorted([(mine, 1), (mine, 3), ((mine + 1) % 4, 2)])
    reasons = {o: c.reason for _, o, c in due if isinstance(c, Rejection)}
    assert reasons == {2: "wrong_partition", 3: "invalid_json"}
    assert feed.due({mine}, erased) == []  # handed out once


def erasure_feed_of_four_partitions():
    """A fresh erasure feed of 4 partitions; USER's partition, a user of another and that one's partition."""
    from stream_app.partitioning import partition_of
    from stream_app.stream.erasures import ErasureFeed

    settings = Settings(partitions=4)
    feed = ErasureFeed(settings, 4, lambda: None, "w", None)
    mine = partition_of(USER, 4)
    other_user = next(user for user in (f"user-{i}" for i in range(100)) if partition_of(user, 4) != mine)
    return settings, feed, mine, other_user, partition_of(other_user, 4)


def test_the_erasure_feed_holds_only_its_partitions_and_reads_one_taken_up_again_from_where_it_was_applied():
    """Every worker held every request of every partition for as long as the topic kept them (30 days)."""
    from stream_app.contracts import Source
    from stream_app.stream.erasures import ErasedUsers

    settings, feed, mine, other_user, theirs = erasure_feed_of_four_partitions()

    def push(user: str, partition: int, offsets) -> None:
        for offset in offsets:
            value = orjson.dumps({"request_id": f"{user}-{offset}", "user_id": user, "requested_at": 1,
                                  "schema_version": 1})
            feed.push(user.encode(), value, Source("erasures", partition, offset))

    def due(owned: set[int]) -> list[tuple[int, int]]:
        return [(partition, offset) for partition, offset, _ in feed.due(owned, erased)]

    push(USER, mine, range(3))
    push(other_user, theirs, range(3))  # read before the worker knew its partitions
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    erased.applied_through(theirs, 0, f"{other_user}-0")  # another worker applied offset 0 of theirs
    assert due({mine}) == [(mine, 0), (mine, 1), (mine, 2)]
    assert theirs not in feed.pending and theirs not in feed.request_ids
    push(other_user, theirs, [3])  # another worker's: not held
    assert theirs not in feed.pending
    assert due({mine, theirs}) == [] and feed.seeks == {theirs: 0}  # taken up: read again from the applied one
    push(other_user, theirs, [4])  # fetched from where the reader was, before its seek: offsets 1-3 would be skipped
    assert due({mine, theirs}) == []
    sought = []
    feed.seek_taken_up(SimpleNamespace(seek=lambda tp, offset: sought.append((tp.partition, offset))), "erasures")
    assert sought == [(theirs, 0)] and feed.seeks == {}
    push(other_user, theirs, range(4))  # as the reader does after the seek
    assert due({mine, theirs}) == [(theirs, 1), (theirs, 2), (theirs, 3)]
    erased.applied_through(theirs, 3, f"{other_user}-3")
    push(other_user, theirs, [4])
    assert due({mine, theirs}) == [(theirs, 4)]
    assert set(feed.request_ids[theirs]) == {3, 4}  # only the one before the next to apply is looked up
    assert due({mine}) == [] and theirs not in feed.request_ids  # it left


def test_a_partition_taken_up_on_a_recreated_erasures_topic_has_its_requests_applied_from_its_start():
    """The seek past the recreated topic's end lands at its end; its first records then are below the seek."""
    from stream_app.contracts import Source
    from stream_app.stream.erasures import ErasedUsers

    settings, feed, mine, other_user, theirs = erasure_feed_of_four_partitions()
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    erased.applied_through(theirs, 6, "old-6")  # applied on the old topic, by another worker
    assert feed.due({mine}, erased) == []
    assert feed.due({mine, theirs}, erased) == [] and feed.seeks == {theirs: 6}
    feed.seek_taken_up(SimpleNamespace(seek=lambda tp, offset: None), "erasures")
    for offset in range(2):  # the new topic's requests, read from its start
        value = orjson.dumps({"request_id": f"new-{offset}", "user_id": other_user, "requested_at": 1,
                              "schema_version": 1})
        feed.push(other_user.encode(), value, Source("erasures", theirs, offset))
    assert [(p, o) for p, o, _ in feed.due({mine, theirs}, erased)] == [(theirs, 0), (theirs, 1)]


def test_requests_on_a_recreated_erasures_topic_are_applied_not_taken_for_the_ones_applied_before():
    """Offsets start at 0 again on a recreated topic: the requests below the offset applied on the old one were
    dropped without a word, and their users' profiles stayed. Told by another request at the offset applied last,
    or by the reader seeing the topic start again; a reader that has not reached that offset yet is no sign."""
    from stream_app.contracts import Source
    from stream_app.partitioning import partition_of
    from stream_app.stream.erasures import ErasedUsers, ErasureFeed

    settings = Settings(partitions=4)
    mine = partition_of(USER, 4)

    def push(feed: ErasureFeed, offsets, prefix: str) -> None:
        for offset in offsets:
            value = orjson.dumps({"request_id": f"{prefix}-{offset}", "user_id": USER, "requested_at": 1,
                                  "schema_version": 1})
            feed.push(USER.encode(), value, Source("erasures", mine, offset))

    def due(feed: ErasureFeed, erased: ErasedUsers) -> list[int]:
        return [offset for _, offset, _ in feed.due({mine}, erased)]

    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    erased.applied_through(mine, 2, "old-2")  # applied on the topic before its deletion
    started_after = ErasureFeed(settings, 4, lambda: None, "w", None)
    push(started_after, range(5), "new")  # another request stands at offset 2
    assert due(started_after, erased) == [0, 1, 2, 3, 4]
    reading = ErasureFeed(settings, 4, lambda: None, "w", None)
    push(reading, range(3), "old")
    assert due(reading, erased) == []  # the same topic: applied already
    push(reading, range(2), "new")  # recreated under the reader: offsets start again
    assert due(reading, erased) == [0, 1]
    erased.applied_through(mine, 1, "new-1")
    push(reading, [2], "new")
    assert due(reading, erased) == [2]
    behind = ErasureFeed(settings, 4, lambda: None, "w", None)  # an earlier owner applied what it has not read
    erased.applied_through(mine, 10, "old-10")
    push(behind, range(5), "old")
    assert due(behind, erased) == []


def erasing_handler(settings, monkeypatch) -> tuple[BatchHandler, dict, list]:
    """A batch handler over the table of a user who had `make_events()`, with an erased-users record."""
    from stream_app.stream.erasures import ErasedUsers

    events = make_events()
    profiles: dict = {}
    run(events, settings, profiles, {}, None, monkeypatch)
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    return (BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                         now=5, erased=erased), profiles, events)


def test_an_erasure_applied_again_keeps_a_profile_begun_after_its_time(settings, monkeypatch):
    """A request applied a second time (a recreated topic) must not take the profile the user began after it."""
    handler, profiles, events = erasing_handler(settings, monkeypatch)
    handler.erased.record(erase_request(USER, events[0].ts - 1))  # its first application recorded it
    handler.erase(erase_request(USER, events[0].ts - 1), 0, "worker-1")
    assert USER.encode() in profiles and handler.removed == []
    assert handler.receipts[0]["deleted"]["profile_table"]["found"] is False
    handler.erase(erase_request(USER, events[-1].ts, "r2"), 0, "worker-1")
    assert USER.encode() not in profiles and handler.removed == [(USER, 0)]


def test_the_table_keeps_each_profile_in_bytes_of_its_own_size_not_in_the_serializers_larger_buffer(settings):
    """orjson's output keeps the buffer it grew while writing (4 KiB at least); the profile table holds
    every active user's snapshot, so a worker's memory per user was about 3x the profile's size."""
    import gc
    import tracemalloc

    profiles: dict = {}
    events = [Event.from_dict({"event_id": f"e{u}-{i}", "user_id": f"u{u}", "item_id": f"i{(u + i) % 7}",
                               "type": "click", "ts": 1_700_000_000_000 + 60_000 * i, "schema_version": 1})
              for u in range(200) for i in range(3)]
    tracemalloc.start()
    try:
        handler = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings),
                               Counters(), now=0)
        handler.process_round([ready(e, i) for i, e in enumerate(events)], None, None)
        handler.snapshots("profiles.changelog", {}, "learners.changelog")
        del handler  # its outbox holds the records to send
        gc.collect()
        text = sum(len(value) for value in profiles.values())
        held = tracemalloc.get_traced_memory()[0]
        profiles.clear()
        freed = held - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(events) == 600 and text > 200 * 1000
    assert freed < 1.2 * text, (freed, text)


def test_an_erasure_waits_for_its_dead_letters_to_be_listed_beside_the_batches_not_inside_one(settings):
    """Listing the dead letters reads the whole dead-letter topic (minutes on a big one): it runs beside the
    batches, and the request is applied by the first batch after it is done, with the records it found."""
    import asyncio

    from stream_app.contracts import Source
    from stream_app.partitioning import partition_of
    from stream_app.stream.erasures import ErasedUsers, ErasureFeed

    async def scenario():
        woken, asked, release = [], [], asyncio.Event()

        async def retry(what, action, *args):
            return await action(*args)

        async def slow_listing(users, since=None):
            if since is not None:  # the tail read when the erasure is applied: nothing written since
                assert since == {0: 8}
                return {}, "complete", None, since
            asked.append(set(users))
            await release.wait()
            return {USER: [{"partition": 0, "offset": 7}]}, "complete", None, {0: 8}

        feed = ErasureFeed(settings, settings.partitions, lambda: woken.append(1), "w", retry)
        feed.dead_letters, feed.retention = slow_listing, (1000, "setting")
        mine = partition_of(USER, settings.partitions)
        for offset, user in enumerate([USER, USER]):  # asked twice: both wait, both are applied
            value = orjson.dumps({"request_id": f"r{offset}", "user_id": user, "requested_at": 1,
                                  "schema_version": 1})
            feed.push(user.encode(), value, Source("erasures", mine, offset))
        erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")

        def batch() -> BatchHandler:
            return BatchHandler(settings, {}, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                                now=0, erased=erased)

        for _ in range(3):  # batches while the listing runs: nothing applied, one listing
            handler = batch()
            await asyncio.wait_for(feed.apply(handler, {mine}), 1)
            assert handler.counters.erased_users == 0 and handler.outbox.records == []
            await asyncio.sleep(0)
        assert asked == [{USER}] and erased.next_offset(mine) == 0 and not woken
        release.set()
        await feed.listing
        assert woken
        handler = batch()
        await feed.apply(handler, {mine})
        assert handler.counters.erased_users == 2 and erased.next_offset(mine) == 2
        assert [r["dead_letters"]["records"] for r in handler.receipts] == [[{"partition": 0, "offset": 7}]] * 2
        assert [r["dead_letters"]["listed"] for r in handler.receipts] == ["complete"] * 2
        assert feed.listed == {} and asked == [{USER}]

    asyncio.run(scenario())


@pytest.mark.parametrize("tail_fails", [False, True])
def test_a_dead_letter_written_after_the_listing_read_the_topic_is_in_the_receipt(settings, tail_fails):
    """The batches go on while the listing runs, and until the erasure is applied the user is not erased: a bad
    input of theirs dead-lettered then was neither listed nor said, the receipt "complete" (helper-140 #4). The
    erasure's batch reads from where the listing ended; a read that fails says from where it did not search."""
    import asyncio

    from stream_app.contracts import Rejection, Source, dead_letter_users
    from stream_app.partitioning import partition_of
    from stream_app.stream.erasures import ErasedUsers, ErasureFeed

    dlq: list[tuple[bytes, bytes]] = []  # the dead-letter topic, one partition

    async def scenario():
        release, reads = asyncio.Event(), []

        async def retry(what, action, *args):
            return await action(*args)

        async def listing(users, since=None):  # reads from `since` to the end the topic has when it begins
            reads.append(since)
            start, end = (since or {}).get(0, 0), len(dlq)
            if since is None:
                await release.wait()
            elif tail_fails:
                raise ConnectionError("the broker went away")
            return ({u: [{"partition": 0, "offset": o} for o in range(start, end) if u in dead_letter_users(*dlq[o])]
                     for u in users}, "complete", None, {0: end})

        feed = ErasureFeed(settings, settings.partitions, lambda: None, "w", retry)
        feed.dead_letters, feed.retention = listing, (1000, "setting")
        mine = partition_of(USER, settings.partitions)
        dlq.append((USER.encode(), b'{"before": 1}'))  # a dead letter of the user before the request
        feed.push(USER.encode(), orjson.dumps({"request_id": "r1", "user_id": USER, "requested_at": 10**13,
                                               "schema_version": 1}), Source("erasures", mine, 0))
        erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")

        def batch() -> BatchHandler:
            return BatchHandler(settings, {}, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                                now=0, erased=erased)

        await feed.apply(batch(), {mine})  # the listing starts, and reads to the topic's end
        await asyncio.sleep(0)
        handler = batch()  # a batch meanwhile: the user's bad input, dead-lettered and delivered
        handler.dead_letter(Rejection("invalid_json", "cut short", Source("events.click", mine, 3), USER.encode(),
                                      b'{"user_id": "u1", "ts": 5'))
        dlq.extend((key, value) for topic, key, value, _ in handler.outbox.records if topic == settings.topics.dlq)
        release.set()
        await feed.listing
        handler = batch()
        await feed.apply(handler, {mine})
        (receipt,) = handler.receipts
        return receipt["dead_letters"], reads

    letters, reads = asyncio.run(scenario())
    assert len(dlq) == 2 and reads == [None, {0: 1}]
    if tail_fails:
        assert letters["records"] == [{"partition": 0, "offset": 0}] and letters["listed"] == "partial"
        assert "not searched: partition 0 from offset 1" in letters["note"] and "went away" in letters["note"]
    else:
        assert letters["records"] == [{"partition": 0, "offset": 0}, {"partition": 0, "offset": 1}]
        assert letters["listed"] == "complete"


def test_the_idle_pass_passes_over_stored_records_that_are_not_profiles_instead_of_stopping_the_worker():
    """A record that is JSON but no profile (null, a list, a text last_seen) raised out of the batch, and the
    worker stopped at the same eviction boundary after every restart."""
    from stream_app.stream.idle_users import IdleUsers

    stored = {b"null": b"null", b"list": b"[1, 2]", b"text": b'{"user_id": "text", "last_seen": "1700000000000"}',
              b"bad": b"{not json", b"idle": b'{"user_id": "idle", "last_seen": 5}',
              b"busy": b'{"user_id": "busy", "last_seen": 500}'}
    assert IdleUsers(stored).before(100) == ["idle"]


def test_repair_redis_refuses_to_run_without_the_key_past_erasures_were_recorded_with(monkeypatch):
    """It read no erased user without the workers' key, and wrote an erased profile back into Redis."""
    from types import SimpleNamespace

    from stream_app.errors import ConfigError
    from stream_app.stream.erasures import ErasedUsers
    from stream_app.tools import repair

    workers = Settings(erasure_key="secret-1")
    recorded = ErasedUsers({}, workers, "", "")
    key, value = recorded.record(SimpleNamespace(user_id=USER, requested_at=5, request_id="r1"))
    monkeypatch.setattr(repair, "read_to_end", lambda settings, topic, timeout_s: [SimpleNamespace(key=key,
                                                                                                     value=value)])
    assert repair.erased_users(workers).erased_at(USER) == 5
    for missing in (Settings(), Settings(erasure_key="secret-2")):
        with pytest.raises(ConfigError, match="set STREAM_APP_ERASURE_KEY"):
            repair.erased_users(missing)


def test_no_right_to_read_the_dead_letter_topic_is_said_in_the_receipt_not_a_worker_stopped_by_every_erasure(
        settings):
    """until_done stops the worker on a refusal no retry changes: right for an output, but a listing it could
    not read stopped each owner of the partition in turn, and the erasure was never applied."""
    import asyncio

    from aiokafka.errors import TopicAuthorizationFailedError

    from stream_app.contracts import Source
    from stream_app.partitioning import partition_of
    from stream_app.stream.erasures import ErasedUsers, ErasureFeed
    from stream_app.stream.retries import until_done
    from stream_app.tools.erase import describe

    async def scenario():
        async def refused(users, since=None):
            raise TopicAuthorizationFailedError("not authorized to read events.dlq")

        feed = ErasureFeed(settings, settings.partitions, lambda: None, "w", until_done)
        feed.dead_letters, feed.retention = refused, (1000, "setting")
        mine = partition_of(USER, settings.partitions)
        value = orjson.dumps({"request_id": "r0", "user_id": USER, "requested_at": 1, "schema_version": 1})
        feed.push(USER.encode(), value, Source("erasures", mine, 0))
        erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
        handler = BatchHandler(settings, {}, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                               now=0, erased=erased)
        await feed.apply(handler, {mine})
        await feed.listing
        await feed.apply(handler, {mine})
        return handler

    handler = asyncio.run(scenario())
    assert handler.counters.erased_users == 1
    assert "could not be read (TopicAuthorizationFailedError" in handler.receipts[0]["dead_letters"]["note"]
    # said in a field a program reads, not only in the note: an empty list is not "this user has no dead letters"
    assert handler.receipts[0]["dead_letters"]["listed"] == "failed"
    said = describe({**handler.receipts[0], "dead_letters": {**handler.receipts[0]["dead_letters"], "records": []}})
    assert "no dead letters of the user" not in said and "NOT ALL LISTED (failed): events.dlq could not be read" in said


def test_a_user_erased_twice_in_one_batch_gets_receipts_that_agree_on_what_redis_held(settings, monkeypatch):
    """Redis's answer was merged per user: the second receipt said the key existed and was deleted, while
    its profile table found nothing (the first erasure had deleted both)."""
    handler, profiles, events = erasing_handler(settings, monkeypatch)
    handler.erase(erase_request(USER, events[-1].ts), 0, "worker-1")
    handler.erase(erase_request(USER, events[-1].ts), 0, "worker-1")
    handler.send_receipts({USER: True})
    assert [(r["deleted"]["profile_table"]["found"], r["deleted"]["redis"]["existed"]) for r in handler.receipts] == \
        [(True, True), (False, False)]


def test_one_users_unreadable_stored_profile_does_not_take_the_encoder_from_the_rest_of_the_round(monkeypatch):
    """The encoder read every user's profile through a getter that raised for one stored record that cannot be
    read: the whole round was ranked without the encoder (an encoder failure), every round that user came in."""
    import numpy as np

    from stream_app.serving import encoder as encoder_module
    from stream_app.stream import batch as batch_module

    class Encoding:
        version = "enc-1"
        vector = np.ones(4, np.float32)

        def nearest(self, n: int) -> list:
            return []

        def shares_for(self, item_ids: list) -> list:
            return [0.0] * len(item_ids)

    def encode_batch(encoder, events, profile_of, nearest):  # the real sequences, a stub model
        encoder_module.batch_sequences(profile_of, events, 20)
        return [Encoding() for _ in events]

    monkeypatch.setattr(batch_module, "encode_batch", encode_batch)
    settings = Settings()
    events = [Event.from_dict({"event_id": f"e{i}", "user_id": user, "item_id": "a", "type": "click",
                               "ts": 1_700_000_000_000 + i, "schema_version": 1})
              for i, user in enumerate(["good0", "good1", "broken"])]
    handler = BatchHandler(settings, {b"broken": b"{not a profile"}, PartitionState({}, settings),
                           InMemoryItemIndex(settings), Counters(), now=0)
    handler.process_round([ready(event, i) for i, event in enumerate(events)], object(), None)
    recs = [orjson.loads(v) for topic, _, v, _ in handler.outbox.records if topic == settings.topics.recommendations]
    assert handler.counters.encoder_failures == 0
    assert len(recs) == 2 and all(rec["model"].get("encoder") == "enc-1" for rec in recs)
    letters = [orjson.loads(v) for topic, _, v, _ in handler.outbox.records if topic == settings.topics.dlq]
    assert [letter["reason"] for letter in letters] == ["processing_error"]  # the broken user's event, parked


def test_a_later_event_that_raises_leaves_what_the_profile_likes_as_if_it_never_came(monkeypatch):
    """A user's likes are named when the profile is written: the undo copy of a later event of the batch keeps them
    to be named (a copy that named them at every event cost a tenth of a worker's time with item text; one that
    dropped the pending naming left the likes of before the batch's earlier events)."""
    from test_content import content_index

    settings = Settings(ranker=False)
    items = ["mug-1", "mug-2", "lantern-1", "lantern-2", "lantern-3", "mug-3"]
    events = [Event.from_dict({"event_id": f"e{i}", "user_id": USER, "item_id": item, "type": "purchase",
                               "ts": 1_700_000_000_000 + 60_000 * i, "schema_version": 1})
              for i, item in enumerate(items)]
    index = content_index()

    def run_with_content(batch: list[Event], fail_on: str | None) -> dict:
        def failing(profile, event, *args, **kwargs):
            if event.event_id == fail_on:
                raise RuntimeError("a bug in ranking")
            return RECOMMEND(profile, event, *args, **kwargs)

        monkeypatch.setattr(process, "recommend", failing)
        profiles: dict = {}
        handler = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings),
                               Counters(), now=0)
        handler.process_round([ready(e, i) for i, e in enumerate(batch)], None, None, index)
        handler.snapshots("profiles.changelog", {}, "learners.changelog")
        return profiles

    failed = events[-1]  # after three lanterns: likes of lanterns, and mugs again if it counted
    profiles = run_with_content(events, failed.event_id)
    assert profiles == run_with_content(events[:-1], None)
    likes = orjson.loads(profiles[USER.encode()])["likes"]
    assert "lantern" in " ".join(likes[:2]), likes


def fill_and_write(handler: BatchHandler, queue: list[Ready], learner_data: dict) -> list[Ready]:
    """One batch: rounds from `queue` while `round_room` lets, then its records written; returns what is left."""
    while queue and (room := handler.round_room(500)) > 0:
        handler.process_round(queue[:room], None, None)
        queue = queue[room:]
    learner_table: dict = {}
    handler.snapshots("profiles.changelog", learner_table, "learners.changelog")
    learner_data.update(learner_table)
    return queue


@pytest.mark.parametrize("users", [30, 1])
def test_a_batch_ends_before_one_partitions_profile_records_pass_one_record_batch(users, settings, monkeypatch):
    """The rounds stop short of PARTITION_PROFILE_BYTES in one partition (40 KB here), guessing each changed
    profile's record from its stored one and each recommendation it keeps (one user's many events grow one record):
    its records go out as one record batch, stored all or nothing (a crash between two would apply the rest again
    with the learners past them); the events left wait for the next batch."""
    monkeypatch.setattr(batch_module, "PARTITION_PROFILE_BYTES", 40_000)
    monkeypatch.setattr(batch_module, "ROUND_EVENTS", 10)  # a round: its recommendations beyond the guess at most
    events = [Event.from_dict({"event_id": f"e{i}", "user_id": f"u{i % users}", "item_id": f"i{i % 7}",
                               "type": "click", "ts": 1_700_000_000_000 + 1_000 * i, "schema_version": 1})
              for i in range(90 * (3 if users == 1 else 1))]
    queue = [ready(event, offset) for offset, event in enumerate(events)]
    profiles: dict = {}
    learner_data: dict = {}
    batches = []
    while queue:
        learners = PartitionState(learner_data, settings, profile_marks=lambda partition: highest_mark(profiles))
        handler = BatchHandler(settings, profiles, learners, InMemoryItemIndex(settings), Counters(), now=0)
        queue = fill_and_write(handler, queue, learner_data)
        written = sum(len(value) for topic, _, value, _ in handler.outbox.records if topic == "profiles.changelog")
        batches.append((len(handler.events), written))
    assert sum(taken for taken, _ in batches) == len(events) and len(profiles) == users
    assert len(batches) > 3 and all(0 < written <= 40_000 for _, written in batches), batches
    assert max(written for _, written in batches) > 20_000  # filled, not cut at a round or two


@pytest.mark.parametrize("field, value", [("version", 2**64 - 1), ("event_count", 2**64 - 1), ("last_seen", 2**64 - 1),
                                          ("dedupe_floor", 2**64 - 1), ("counts", {"click": 2**64 - 1}),
                                          ("stages", {"view": 2**64 - 1}),
                                          ("seen_event_ids", {f"d{i}": 2**63 + i for i in range(8)})])
def test_a_stored_profile_with_a_count_past_64_bits_parks_its_users_events_and_the_batch_goes_on(field, value,
                                                                                                 monkeypatch):
    """Counting on from it would give a number orjson cannot write: the next event's undo copy or the snapshots would
    raise and the worker exit at every restart (`Profile.from_dict` bounds its counts; the dedupe floor, its times)."""
    settings = Settings(ranker_warm_up=2, seen_ids_max=4)
    profiles: dict = {}
    learners: dict = {}
    run(make_events()[:3], settings, profiles, learners, None, monkeypatch)
    forged = {**orjson.loads(profiles[USER.encode()]), field: value}
    profiles[USER.encode()] = orjson.dumps(forged)
    handler = run(make_events()[3:], settings, profiles, learners, None, monkeypatch)
    assert handler.counters.dead_letters == {"processing_error": 5}
    assert orjson.loads(profiles[USER.encode()]) == forged  # kept as stored, as any unreadable profile


@pytest.mark.parametrize("forged", [b"{not json", b"[]", b'{"erased_at":"x"}', b'{"erased_at":18446744073709551615}',
                                    b'{"erased_at":null,"key_id":7}'])
def test_an_erased_users_record_that_cannot_be_read_stays_an_erasure_and_fails_no_batch(settings, forged, caplog):
    """Taken for an erasure at the moment the worker first read it (and STREAM_APP_MAX_FUTURE_MS), and written again
    so (a restart reads the same time): the user's events of before are dropped, no batch fails (it failed every batch
    that met the user, and the worker's start), and the worker's key check and the partition's erasures offset read
    on."""
    from stream_app.stream.erasures import ErasedUsers

    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    erased.data[erased.user_hash(USER).encode()] = forged
    erased.data[b"offset:0"] = forged
    before = int(time.time() * 1000) + settings.max_future_ms  # the request may have been dated that far ahead
    assert before <= erased.erased_at(USER) <= int(time.time() * 1000) + settings.max_future_ms
    assert erased.erased_at(USER) == erased.erased_at(USER) and erased.erased_at(USER, requested=True) is None
    assert erased.other_keys() == set() and erased.applied(0) == (0, None)
    profiles = {USER.encode(): run_profile(settings)}
    handler = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                           now=0, erased=erased)
    assert handler.erase_restored({0}, settings.partitions) == {USER: erased.erased_at(USER)}
    handler.process_round([ready(e, i) for i, e in enumerate(make_events())], None, None)
    handler.snapshots("profiles.changelog", {}, "learners.changelog")
    assert handler.counters.erased_events_dropped == len(make_events()) and USER.encode() not in profiles
    written = [(key, orjson.loads(value)) for topic, key, value, _ in handler.outbox.records
               if topic == "erased.changelog"]
    assert written == [(erased.user_hash(USER).encode(), {"erased_at": erased.erased_at(USER), "request_id": None,
                                                          "key_id": erased.key_id, "put_back": True})]
    assert sum("taken for an erasure" in r.getMessage() for r in caplog.records) == 1  # said once
    assert erased.take_rewritten() == []  # sent with that batch: not again


def run_profile(settings: Settings) -> bytes:
    profiles: dict = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        run(make_events()[:2], settings, profiles, {}, None, monkeypatch)
    return profiles[USER.encode()]


def test_an_erasure_request_that_meets_an_unreadable_record_erases_all_and_its_record_is_the_one_written(settings):
    """The record put back in place of one that cannot be read is no erasure applied before (which would keep a
    profile begun after the request), and the request's own record is the last word on the changelog (the put-back
    one, queued before it, would otherwise follow it and take its request id and later time away at a restore)."""
    from stream_app.stream.erasures import ErasedUsers

    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    erased.data[erased.user_hash(USER).encode()] = b"{not json"
    profiles = {USER.encode(): run_profile(settings)}  # begun after the request below
    handler = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                           now=0, erased=erased)
    handler.erase(erase_request(USER, make_events()[0].ts - 60_000), 0, "worker-1")
    handler.snapshots("profiles.changelog", {}, "learners.changelog")
    assert USER.encode() not in profiles and handler.receipts[0]["deleted"]["profile_table"]["found"]
    written = [orjson.loads(value) for topic, _, value, _ in handler.outbox.records if topic == "erased.changelog"]
    assert [(record["request_id"], "put_back" in record) for record in written] == [("r1", False)]
    assert written[0]["erased_at"] >= int(time.time() * 1000) and erased.erased_at(USER, requested=True) is not None


def test_a_reset_deletes_an_unreadable_profile_records_no_erasure_and_the_parked_events_then_apply(settings):
    """A user whose stored profile cannot be read had every event parked until an erasure, which dropped them all
    (dated before it) for good. A reset deletes the profile alike and drops none."""
    import jsonschema

    from stream_app.contracts import ErasureRequest, Source, load_schema
    from stream_app.stream.erasures import ErasedUsers
    from stream_app.stream.idle_users import IdleUsers

    events = make_events()
    profiles = {USER.encode(): b'{"user_id":"u1","version":7,"generation":5,"counts":'}  # cut short
    erased = ErasedUsers({}, settings, "erased.changelog", "profiles.changelog")
    idle = IdleUsers(profiles)

    def handler() -> BatchHandler:
        return BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(),
                            now=9, idle=idle, erased=erased)

    parked = handler()
    parked.process_round([ready(e, i) for i, e in enumerate(events[:3])], None, None)
    assert parked.counters.applied == 0 and parked.counters.dead_letters == {"processing_error": 3}
    letters = [orjson.loads(value) for topic, _, value, _ in parked.outbox.records if topic == settings.topics.dlq]
    assert all("`stream-app reset-profile USER` deletes it, then `stream-app redrive --reason processing_error`"
               in letter["detail"] for letter in letters) and len(letters) == 3  # what to do (helper-142 #6)

    reset = handler()
    request = ErasureRequest("r9", USER, 1_800_000_000_000, Source("erasures", 0, 4), reset=True)
    reset.erase(request, 0, "worker-1")
    reset.snapshots("profiles.changelog", {}, "learners.changelog")
    reset.send_receipts({USER: False})
    records = [(topic, key, value) for topic, key, value, _ in reset.outbox.records]
    assert USER.encode() not in profiles and ("profiles.changelog", USER.encode(), None) in records
    assert not [r for r in records if r[0] == "erased.changelog"] and erased.erased_at(USER) is None
    (sent,) = [orjson.loads(value) for topic, _, value in records if topic == settings.topics.erasure_receipts]
    jsonschema.validate(sent, load_schema("erasure-receipt"))
    assert sent["reset"] is True and "erased_record" not in sent["deleted"]
    assert sent["deleted"]["profile_table"] == {"found": True, "version": None, "event_count": None}
    assert reset.evicted == {USER: 5}  # Redis's key refuses late writes of the deleted profile (its generation)
    assert reset.counters.reset_users == 1 and reset.counters.erased_users == 0
    # a record dated past the request's time (a generation past 2^62 is unreadable) is reset too: it was kept
    profiles[b"u2"] = b'{"user_id":"u2","version":3,"generation":4611686018427387905,"counts":{}}'
    later = handler()
    later.erase(ErasureRequest("r10", "u2", 1_800_000_000_000, Source("erasures", 0, 5), reset=True), 0, "worker-1")
    assert b"u2" not in profiles and later.receipts[0]["deleted"]["profile_table"]["found"] is True

    redriven = handler()  # the parked events, sent again, and a later one: a new profile of them all
    redriven.process_round([ready(e, i) for i, e in enumerate(events)], None, None)
    redriven.snapshots("profiles.changelog", {}, "learners.changelog")
    assert redriven.counters.applied == len(events) and redriven.counters.erased_events_dropped == 0
    assert Profile.from_json(profiles[USER.encode()]).event_count == len(events)


def test_a_reset_request_is_read_from_the_topic_and_told_apart_from_an_erasure(monkeypatch):
    """The tools that hold back an erased user's data (replay, redrive, recommendations, profile) go by the
    requests on the erasures topic: a reset there is no erasure."""
    from stream_app.contracts import Source, check_erasure
    from stream_app.stream.erasures import ErasedUsers
    from stream_app.tools import redrive
    from stream_app.tools.erase import request_for

    at = 1_800_000_000_000
    source = Source("erasures", 0, 0, timestamp=at)
    requests = {"reset": request_for("u1", at, reset=True), "erased": request_for("u2", at)}
    for request in requests.values():
        assert check_erasure(orjson.dumps(request), request["user_id"].encode(), source, 10_000).reset is \
            request.get("reset", False)
    on_topic = [SimpleNamespace(value=orjson.dumps(request), timestamp=at) for request in requests.values()]
    monkeypatch.setattr(redrive, "read_to_end", lambda settings, topic: on_topic)
    monkeypatch.setattr(redrive, "erased_users", lambda settings: ErasedUsers({}, settings, "e", "p"))
    check = redrive.ErasureCheck.read(Settings())
    assert (check.erased_time("u1"), check.erased_time("u2")) == (None, at)
    # a reset a redrive sends again (an older worker refused its field) is no erasure either
    check.add(SimpleNamespace(value=orjson.dumps(request_for("u3", at, reset=True))))
    assert check.erased_time("u3") is None


def test_a_shadow_list_is_made_and_judged_only_beside_a_live_one(monkeypatch):
    """A review: a shadow encoder's list was made after every applied event, also one the live path showed nothing
    after (the purchase policy, a debounce), and judged by the next event, so the shadow's hit rate counted events the
    live one did not: the two rates `status` prints side by side were over different events."""
    import numpy as np

    class Encoding:
        version = "shadow-1"
        vector = np.zeros(4)

        def nearest(self, n):
            return []

        def shares_for(self, item_ids):
            return [0.0] * len(item_ids)

    monkeypatch.setattr(batch_module, "encode_batch", lambda encoder, events, *args: [Encoding() for _ in events])
    settings = Settings(rec_policy="purchase")  # clicks get no list
    handler = BatchHandler(settings, {}, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(), now=0)
    handler.process_round([ready(e, i) for i, e in enumerate(make_events())], None, object())
    assert handler.counters.live_judged == 0 and handler.counters.shadow_judged == 0


def test_the_guess_of_a_new_users_record_is_learned_from_the_records_a_batch_wrote(settings, monkeypatch):
    """A review: a new user's first record was guessed at 2 KiB, but with a warm item state it holds the shown
    candidates and their rows (about 2.8 KB); a burst of 500 new users of one partition wrote 1.07 MB, more than one
    record batch, which a crash can cut in two. The guess is now raised to what the last batch's records took."""
    from stream_app.stream.batch import ProfileSizes

    monkeypatch.setattr(batch_module, "PARTITION_PROFILE_BYTES", 40_000)
    monkeypatch.setattr(batch_module, "NEW_PROFILE_BYTES", 256)  # a guess far too small, as 2 KiB was
    history = [Event.from_dict({"event_id": f"h{i}", "user_id": f"old{i % 40}", "item_id": f"i{i % 60}",
                                "type": "click", "ts": 1_700_000_000_000 + 1_000 * i, "schema_version": 1})
               for i in range(600)]
    burst = [Event.from_dict({"event_id": f"n{i}", "user_id": f"new{i}", "item_id": f"i{i % 60}", "type": "click",
                              "ts": 1_700_001_000_000 + i, "schema_version": 1}) for i in range(400)]
    index, profiles, learner_data = InMemoryItemIndex(settings), {}, {}
    sizes = ProfileSizes(new=256)
    written_by_batch = []
    for events in (history, burst):
        queue = [ready(event, offset) for offset, event in enumerate(events)]
        while queue:
            handler = BatchHandler(settings, profiles, PartitionState(learner_data, settings), index, Counters(),
                                   now=0, sizes=sizes)
            queue = fill_and_write(handler, queue, learner_data)
            written_by_batch.append(sum(len(value) for topic, _, value, _ in handler.outbox.records
                                        if topic == "profiles.changelog"))
    # PARTITION_PROFILE_BYTES is 3/4 of one record batch: guesses a little short stay within the quarter left
    one_record_batch = 40_000 * 4 // 3
    assert sizes.new > 1_000  # what a new user's first record took, not the guess
    assert written_by_batch[0] > one_record_batch  # the first batch, on the guess alone, went past
    assert all(written <= one_record_batch for written in written_by_batch[1:]), str(written_by_batch)
    assert len(written_by_batch) > 10 and max(written_by_batch[1:]) > 30_000  # filled, not cut short


def test_an_event_dropped_for_being_older_than_the_dedupe_floor_is_counted_apart_from_redeliveries():
    """A review: a heavy user's late event, never applied but older than the profile's dedupe floor, was dropped and
    counted as a duplicate only: an operator could not tell a lost event from a harmless redelivery."""
    settings = Settings(ranker=False, seen_ids_max=4)
    events = [Event.from_dict({"event_id": f"e{i}", "user_id": USER, "item_id": f"i{i}", "type": "click",
                               "ts": 1_700_000_000_000 + 60_000 * i, "schema_version": 1}) for i in range(12)]
    late = Event.from_dict({"event_id": "late", "user_id": USER, "item_id": "i0", "type": "click",
                            "ts": 1_700_000_000_000 + 30_000, "schema_version": 1})
    profiles: dict = {}
    counters = Counters()
    for offset, batch in enumerate((events, [events[-1]], [late])):
        handler = BatchHandler(settings, profiles, PartitionState({}, settings), InMemoryItemIndex(settings),
                               counters, now=0)
        handler.process_round([ready(event, 100 * offset + i) for i, event in enumerate(batch)], None, None)
        handler.snapshots("profiles.changelog", {}, "learners.changelog")
        if offset == 1:  # a redelivery of the last event: a duplicate, known as applied
            assert (counters.duplicates, counters.below_dedupe_floor) == (1, 0)
    assert (counters.applied, counters.duplicates, counters.below_dedupe_floor) == (12, 2, 1)
    from dataclasses import asdict

    from stream_app.cli.status_command import describe_worker

    status = {"worker_id": "w", "ready": True, "input_partitions": [0], "counters": asdict(counters)}
    assert "duplicates 2 (1 of them older than the user's dedupe floor" in describe_worker(status, 60_000)[0]


def test_hit_counts_start_afresh_for_each_version_serving_and_pair_the_shadow_with_the_shown_lists():
    counters = Counters()
    counters.serving("enc-1", "enc-2")
    for live_hit, shadow_hit in ((True, False), (False, None), (True, True)):
        counters.count_hits(live_hit, shadow_hit)
    assert counters.since_serving == {"live": {"version": "enc-1", "judged": 3, "hits": 2},
                                      "shadow": {"version": "enc-2", "judged": 2, "hits": 1, "live_hits": 2}}
    counters.serving("enc-1", "enc-3")  # a new shadow: its own figures, the live's go on
    counters.count_hits(False, True)
    assert counters.since_serving["shadow"] == {"version": "enc-3", "judged": 1, "hits": 1, "live_hits": 0}
    assert counters.since_serving["live"]["judged"] == 4
    counters.serving("enc-3", None)  # promoted
    assert counters.since_serving["live"] == {"version": "enc-3", "judged": 0, "hits": 0}
    assert (counters.live_judged, counters.shadow_judged) == (4, 3)  # the metrics' counters go on


def test_a_profile_keeps_no_embedding_or_likes_of_a_model_withdrawn(settings, monkeypatch):
    """After `models withdraw`, a profile kept the withdrawn encoder's vector and the text model's likes, frozen at
    its last event, as its current ones (helper-141 #7)."""
    events = make_events()
    profiles: dict = {}
    run(events[:2], settings, profiles, {}, None, monkeypatch)
    record = orjson.loads(profiles[USER.encode()])
    record.update(embedding=[0.5, 0.25], encoder_version="enc-gone", likes=["lanterns"])
    profiles[USER.encode()] = orjson.dumps(record)
    run(events[2:3], settings, profiles, {}, None, monkeypatch)  # no encoder, no content model serving
    written = orjson.loads(profiles[USER.encode()])
    assert (written["embedding"], written["encoder_version"], written["likes"]) == (None, None, [])
