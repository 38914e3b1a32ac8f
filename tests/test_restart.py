"""A worker restarted after a crash takes up each of its partitions at the group's commit, not at offset 0,
and each user's newest profile, not the changelog's last record."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import faust
import orjson
from conftest import wait_until
from kafka import TopicPartition

from stream_app.core.events import Event
from stream_app.core.items import InMemoryItemIndex
from stream_app.core.process import new_profile, process
from stream_app.core.profile import _SNAPSHOT_HEAD, Profile, snapshot_order, supersedes
from stream_app.partitioning import partition_of
from stream_app.store.redis_store import read_profile, worker_statuses
from stream_app.stream.table_stores import LearnersTable, ProfileTable
from stream_app.tools.consume import committed_offsets
from stream_app.tools.repair import latest_snapshots
from stream_app.tools.replay import make_producer, produce_events

MINUTE = 60_000


def clicks(user: str, start_ms: int, count: int, tag: str) -> list[dict]:
    return [{"event_id": f"{user}-{tag}{i}", "user_id": user, "item_id": f"item-{i % 3}", "type": "click",
             "ts": start_ms + i * MINUTE, "schema_version": 1} for i in range(count)]


def test_a_restarted_worker_neither_fetches_nor_applies_again_what_its_group_committed(
        make_settings, start_worker, redis_client):
    settings = make_settings()
    inputs = [TopicPartition(t, p) for t in settings.topics.inputs for p in range(settings.partitions)]

    def all_committed(count: int) -> bool:
        return sum(committed_offsets(settings, inputs).values()) == count

    first = start_worker(settings)
    now = int(time.time() * 1000)
    before = clicks("alice", now - 3_600_000, 6, "a") + clicks("bob", now - 3_600_000, 4, "a")
    produce_events(settings, before)  # alice and bob are on two partitions of four
    wait_until(lambda: all_committed(len(before)), 60, "the first worker to commit every input")
    first.kill()

    second = start_worker(settings)
    after = clicks("alice", now, 1, "b") + clicks("bob", now, 1, "b")
    produce_events(settings, after)
    wait_until(lambda: all_committed(len(before) + len(after)), 60, "the second worker to commit the new input")
    committed_at = int(time.time() * 1000)

    def status() -> dict:
        (found,) = [s for s in worker_statuses(redis_client, settings.namespace) if s["pid"] == second.pid]
        return found

    wait_until(lambda: status()["updated_at"] > committed_at, 30, "the second worker's status after its commit")
    counters, ordering = status()["counters"], status()["ordering"]
    # Before the fix: events 12, duplicates 10 (both partitions read again from offset 0), refetches 2.
    assert (counters["events"], counters["applied"], counters["duplicates"]) == (2, 2, 0)
    assert (ordering["refetches"], ordering["duplicates"], ordering["unscheduled"]) == (0, 0, 0)
    assert "fetching it again" not in second.log_path.read_text(errors="replace")
    assert {u: read_profile(redis_client, u, settings.namespace)["event_count"] for u in ("alice", "bob")} == \
        {"alice": 7, "bob": 5}


def profile_after(events: list[dict], settings) -> Profile:
    """The profile the core makes of `events`: what a worker that applied only these wrote."""
    profile = new_profile(events[0]["user_id"], settings)
    index = InMemoryItemIndex(settings)
    for raw in events:
        process(profile, Event.from_dict(raw), index, settings, now_ms=0)
    return profile


def test_a_worker_stopped_gracefully_commits_what_it_applied_on_the_way_out(make_settings, start_worker,
                                                                           redis_client):
    settings = make_settings(commit_interval_s=600.0)  # no commit by the interval within this test
    inputs = [TopicPartition(t, p) for t in settings.topics.inputs for p in range(settings.partitions)]
    worker = start_worker(settings)
    events = clicks("alice", int(time.time() * 1000) - 3_600_000, 5, "a")
    produce_events(settings, events)

    wait_until(lambda: read_profile(redis_client, "alice", settings.namespace).get("event_count") == len(events),
               60, "the worker to apply every event")
    time.sleep(0.5)  # the batch's offsets are marked applied once its flush is done
    assert sum(committed_offsets(settings, inputs).values()) == 0  # nothing committed yet
    assert worker.stop() == 0
    assert sum(committed_offsets(settings, inputs).values()) == len(events)


def test_a_late_changelog_record_of_an_earlier_owner_does_not_roll_the_restored_profile_back(
        make_settings, start_worker, redis_client):
    """A batch that outlives the revoke of its partitions can land its changelog record after the new
    owner's. Restored last-wins, the table would take up alice's profile after 1 event instead of 3
    (before the fix: Redis kept 3, its guard refusing the older versions that followed, and the
    changelog ended at 2)."""
    settings = make_settings()
    inputs = [TopicPartition(t, p) for t in settings.topics.inputs for p in range(settings.partitions)]
    first = start_worker(settings)
    now = int(time.time() * 1000)
    before = clicks("alice", now - 3_600_000, 3, "a")
    produce_events(settings, before)
    wait_until(lambda: sum(committed_offsets(settings, inputs).values()) == 3, 60, "the first worker to commit")
    first.kill()
    late = profile_after(before[:1], settings)
    changelog = f"{settings.group_id}-profiles-changelog"
    producer = make_producer(settings)
    producer.send(changelog, key=b"alice", value=late.to_json(),
                  partition=partition_of("alice", settings.partitions)).get(timeout=30)
    producer.close()

    start_worker(settings)
    produce_events(settings, clicks("alice", now, 1, "b"))
    wait_until(lambda: sum(committed_offsets(settings, inputs).values()) == 4, 60, "the second worker to commit")
    wait_until(lambda: read_profile(redis_client, "alice", settings.namespace).get("event_count") == 4, 30,
               "alice's profile in Redis to count her 4 events")
    latest, _, _ = latest_snapshots(settings, topic=changelog)
    assert Profile.from_json(latest["alice"]).event_count == 4


def snapshot(user: str, version: int, generation: int) -> bytes:
    return orjson.dumps({"user_id": user, "version": version, "generation": generation})


def test_of_two_snapshots_of_a_user_the_later_generation_then_the_higher_version_is_the_newer():
    assert supersedes(snapshot("u", 3, 10), None)
    assert supersedes(snapshot("u", 3, 10), snapshot("u", 2, 10))
    assert supersedes(snapshot("u", 3, 10), snapshot("u", 3, 10))  # the same profile written again
    assert not supersedes(snapshot("u", 2, 10), snapshot("u", 3, 10))
    assert supersedes(snapshot("u", 1, 20), snapshot("u", 9, 10))  # evicted and begun anew
    assert not supersedes(snapshot("u", 9, 10), snapshot("u", 1, 20))
    assert supersedes(b"not json", snapshot("u", 3, 10))  # read as before: the reader reports it
    assert supersedes(snapshot("u", 1, 10), b"{}")


def test_a_snapshots_order_is_read_from_its_head_and_from_the_whole_json_of_other_layouts():
    written = Profile(user_id='say "hi"', version=7, generation=123).to_json()
    assert _SNAPSHOT_HEAD.match(written) and snapshot_order(written) == (123, 7)
    assert snapshot_order(Profile(user_id="u", version=2).to_json()) == (0, 2)  # no generation yet
    earlier_layout = orjson.dumps({"user_id": "u", "version": 5, "event_count": 5, "generation": 9})
    assert not _SNAPSHOT_HEAD.match(earlier_layout) and snapshot_order(earlier_layout) == (9, 5)


def test_the_profile_store_restores_each_users_newest_snapshot_and_applies_tombstones():
    app = faust.App("restore-test", store="memory://", broker="kafka://localhost:1")
    store = ProfileTable(app, name="profiles", beacon=app.tables.beacon, key_type=bytes, value_type=bytes).data

    def record(key: bytes, value: bytes | None, partition: int = 0) -> SimpleNamespace:
        return SimpleNamespace(key=key, value=value, message=SimpleNamespace(value=value, partition=partition, offset=0))

    store.apply_changelog_batch([record(b"a", snapshot("a", 3, 10)), record(b"b", snapshot("b", 1, 10)),
                                 record(b"a", snapshot("a", 2, 10))], lambda k: k, lambda v: v)
    assert store.data == {b"a": snapshot("a", 3, 10), b"b": snapshot("b", 1, 10)}
    assert store.stale_skipped == 1
    store.apply_changelog_batch([record(b"b", None), record(b"a", snapshot("a", 1, 20))], lambda k: k, lambda v: v)
    assert store.data == {b"a": snapshot("a", 1, 20)}
    store.apply_changelog_batch([record(b"b", snapshot("b", 1, 30))], lambda k: k, lambda v: v)
    assert store.data[b"b"] == snapshot("b", 1, 30)  # after its tombstone, any snapshot


def test_profiles_and_learners_the_worker_wrote_leave_with_their_partition_at_a_rebalance():
    """Faust drops a revoked partition's keys by the partitions it restored them from: what the worker wrote
    itself stayed, stale profiles held in memory after each rebalance."""
    from faust.types import TP

    from stream_app.partitioning import partition_of

    app = faust.App("revoke-test", store="memory://", broker="kafka://localhost:1")
    profiles = ProfileTable(app, name="profiles", beacon=app.tables.beacon, key_type=bytes, value_type=bytes,
                            partitions=8).data
    learners = LearnersTable(app, name="learners", beacon=app.tables.beacon, key_type=bytes, value_type=bytes,
                             partitions=8).data
    users = [f"user{i}" for i in range(40)]
    for user in users:
        profiles[user.encode()] = snapshot(user, 1, 10)
    del profiles[b"user0"]  # erased or evicted: nothing of it stays behind
    assert b"user0" not in profiles._key_partition
    users.remove("user0")
    for partition in range(8):
        learners[str(partition).encode()] = b"{}"
    kept = {0, 1, 2, 3}
    active = {TP("t", p) for p in kept}
    asyncio.run(profiles.on_recovery_completed(active, set()))
    asyncio.run(learners.on_recovery_completed(active, set()))
    assert set(profiles.data) == {u.encode() for u in users if partition_of(u, 8) in kept}
    assert set(learners.data) == {str(p).encode() for p in kept}


def test_a_partitions_learners_mark_leaves_with_it_and_is_read_again_from_its_changelog_when_it_returns():
    """A mark the worker wrote that never reached the changelog (a fenced late batch) stayed after the partition left:
    back, its restore read lower marks under it, and a learners record whose profiles were lost passed as whole."""
    from faust.types import TP

    from stream_app.stream.learner_table import with_learners_mark

    app = faust.App("marks-test", store="memory://", broker="kafka://localhost:1")
    profiles = ProfileTable(app, name="profiles", beacon=app.tables.beacon, key_type=bytes, value_type=bytes,
                            partitions=8).data
    one, two = (next(f"user{i}" for i in range(100) if partition_of(f"user{i}", 8) == p) for p in (1, 2))
    profiles[one.encode()] = with_learners_mark(snapshot(one, 2, 10), 9)
    profiles[two.encode()] = with_learners_mark(snapshot(two, 2, 10), 4)
    assert (profiles.highest_mark(1), profiles.highest_mark(2)) == (9, 4)
    asyncio.run(profiles.on_recovery_completed({TP("t", 2)}, set()))  # partition 1 revoked
    assert (profiles.highest_mark(1), profiles.highest_mark(2)) == (None, 4)
    restored = with_learners_mark(snapshot(one, 1, 10), 7)  # back: its changelog holds the mark 7 at most
    profiles.apply_changelog_batch([SimpleNamespace(key=one.encode(), value=restored, message=SimpleNamespace(
        value=restored, partition=1, offset=0))], lambda k: k, lambda v: v)
    assert profiles.highest_mark(1) == 7


def test_the_learners_store_restores_the_most_written_learners_and_keeps_their_offset_until_rewritten():
    app = faust.App("offsets-test", store="memory://", broker="kafka://localhost:1")
    store = LearnersTable(app, name="learners", beacon=app.tables.beacon, key_type=bytes, value_type=bytes).data

    def record(value: bytes, offset: int) -> SimpleNamespace:
        return SimpleNamespace(key=b"3", value=value, message=SimpleNamespace(value=value, partition=3, offset=offset))

    fifth, late_third = orjson.dumps({"writes": 5}), orjson.dumps({"writes": 3})
    store.apply_changelog_batch([record(fifth, 7), record(late_third, 9)], lambda k: k, lambda v: v)
    assert (store[b"3"], store.restored_offset(b"3"), store.stale_skipped) == (fifth, 7, 1)
    store.apply_changelog_batch([record(b"not JSON state", 11)], lambda k: k, lambda v: v)
    assert store.restored_offset(b"3") == 11  # taken, so that reading it reports it
    store[b"3"] = orjson.dumps({"writes": 6})
    assert store.restored_offset(b"3") is None


def test_a_restored_changelog_record_whose_key_is_not_text_is_left_out_with_where_it_was(caplog):
    """No worker writes such a key; restored, it stopped every batch after an assignment where an erasure was ever
    recorded (the restored profiles' keys are decoded) and the Redis write-back of every partition (helper-140 #3)."""
    app = faust.App("restore-test-keys", store="memory://", broker="kafka://localhost:1")
    store = ProfileTable(app, name="profiles", beacon=app.tables.beacon, key_type=bytes, value_type=bytes).data

    def record(key: bytes, value: bytes | None, offset: int) -> SimpleNamespace:
        return SimpleNamespace(key=key, value=value, message=SimpleNamespace(
            topic="p-changelog", value=value, partition=3, offset=offset))

    with caplog.at_level("ERROR"):
        store.apply_changelog_batch([record(b"a", snapshot("a", 3, 10), 0), record(b"\xff\xfe-forged", b"{}", 1),
                                     record(b"\xff", None, 2)], lambda k: k, lambda v: v)
    assert store.data == {b"a": snapshot("a", 3, 10)} and store.not_text_skipped == 2
    assert "left out 2 changelog records whose key is not UTF-8 text" in caplog.text and "p-changelog[3]@1" in caplog.text
