"""`repair-redis`: a flushed Redis is rebuilt from the profiles topic, without rolling back a newer write."""

from __future__ import annotations

import collections

import pytest
from conftest import wait_until

from stream_app.store.mirror_marker import MARKER
from stream_app.store.redis_store import profile_key, read_profile
from stream_app.tools.bench import synthetic_events
from stream_app.tools.consume import wait_committed
from stream_app.tools.repair import repair_redis
from stream_app.tools.replay import produce_events

pytestmark = pytest.mark.integration


def run_through_a_worker(settings, start_worker, count: int, users: int, prefix: str,
                         redis_client=None) -> collections.Counter:
    """Synthetic events through one worker until committed (and, given `redis_client`, until the worker's first
    write-back of its partitions to Redis is done: a later one would undo what a test removes); the events per
    user."""
    events = synthetic_events(count, users=users, items=200, prefix=prefix)
    start_worker(settings)
    wait_committed(settings, produce_events(settings, events).marks, timeout=90)
    if redis_client is not None:
        marker = f"{settings.namespace}{MARKER}"

        def written_back() -> bool:
            found = redis_client.hgetall(marker)
            return b"token" in found and all(found.get(f"partition:{p}".encode()) == found[b"token"]
                                             for p in range(settings.partitions))

        wait_until(written_back, 60, "the worker's write-back of its partitions to Redis")
    return collections.Counter(e["user_id"] for e in events)


def test_a_flushed_redis_is_rebuilt_from_the_profiles_topic(make_settings, start_worker, redis_client):
    settings = make_settings()
    expected = run_through_a_worker(settings, start_worker, 1500, 40, "repair", redis_client)

    def counts() -> dict[str, int]:
        return {u: read_profile(redis_client, u, settings.namespace).get("event_count", 0) for u in expected}

    assert counts() == dict(expected)
    users = sorted(expected)
    redis_client.delete(*[profile_key(u, settings.namespace) for u in users[1:]])  # lost
    ahead = read_profile(redis_client, users[0], settings.namespace)
    redis_client.hset(profile_key(users[0], settings.namespace), mapping={"profile_version": ahead["profile_version"] + 1,
                                                                          "event_count": 10_000})
    assert sum(counts().values()) == 10_000

    summary = repair_redis(settings)

    assert summary.users == len(users) and summary.written == len(users) - 1 and summary.deleted == 0
    assert summary.snapshots_read >= len(users)
    assert counts() == {**expected, users[0]: 10_000}  # the newer write (a running worker's) stays


def test_a_redis_restored_from_an_older_backup_keeps_no_erased_or_stale_profile(make_settings, start_worker,
                                                                                 redis_client):
    """A backup from before an erasure holds the erased user's profile, and a profile of a user the topic no
    longer has; a late write of an earlier owner put the erased profile on the profiles topic after the
    tombstone. The repair writes neither back and deletes both, keeps a profile written since it began and
    the erased user's marker."""
    import time

    from kafka import KafkaProducer

    from stream_app.tools.erase import erase_users

    settings = make_settings()
    expected = run_through_a_worker(settings, start_worker, 300, 6, "backup", redis_client)
    erased = sorted(expected)[0]
    key = profile_key(erased, settings.namespace)
    backup = redis_client.hgetall(key)  # the erased user's profile, as the backup holds it
    assert erase_users(settings, [erased], 60) == 0
    marker = redis_client.hgetall(key)
    assert b"erased_at" in marker and b"profile" not in marker
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    producer.send(settings.topics.profiles, key=erased.encode(), value=backup[b"profile"])  # the late write
    producer.send(settings.topics.profiles, key=b"tomb", value=backup[b"profile"])  # a user evicted since:
    producer.send(settings.topics.profiles, key=b"tomb", value=None)  # counted, not written (the summary said nothing)
    producer.flush()
    producer.close()
    old = int(time.time() * 1000) - 3_600_000
    redis_client.delete(key)
    redis_client.hset(key, mapping={**backup, b"updated_at": old})  # restored from the backup
    ghost, fresh = profile_key("ghost", settings.namespace), profile_key("fresh", settings.namespace)
    redis_client.hset(ghost, mapping={**backup, b"updated_at": old})  # a user the topic no longer has
    redis_client.hset(fresh, mapping={**backup, b"updated_at": int(time.time() * 1000)})  # a worker's, just now
    erased_marker = profile_key("marked", settings.namespace)
    redis_client.hset(erased_marker, mapping={"erased_at": old})

    summary = repair_redis(settings)

    assert summary.erased == 1 and summary.deleted == 2 and summary.tombstoned == 1
    assert read_profile(redis_client, erased, settings.namespace) == {} and not redis_client.exists(ghost)
    assert redis_client.exists(fresh) and redis_client.hgetall(erased_marker) == {b"erased_at": str(old).encode()}
    others = {u: read_profile(redis_client, u, settings.namespace).get("event_count") for u in expected if u != erased}
    assert others == {u: n for u, n in expected.items() if u != erased}


def test_the_profile_and_repair_redis_commands(make_settings, start_worker, redis_client):
    import os
    import subprocess
    import sys

    settings = make_settings()
    expected = run_through_a_worker(settings, start_worker, 300, 5, "cli", redis_client)
    env = {**os.environ, **settings.to_env()}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "stream_app.cli", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    user = sorted(expected)[0]
    redis_client.delete(profile_key(user, settings.namespace))
    missing = cli("profile", user)
    assert missing.returncode == 2 and "repair-redis" in missing.stderr
    repaired = cli("repair-redis")
    assert repaired.returncode == 0, repaired.stderr
    assert f"of {len(expected)} users" in repaired.stdout and "wrote 1 to Redis" in repaired.stdout
    shown = cli("profile", user)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"user {user}: {expected[user]} events")


def test_a_repair_that_read_the_topic_before_an_evictions_tombstone_does_not_bring_the_profile_back(
        make_settings, redis_client):
    """An eviction's Redis marker is timed at its batch's start and its tombstone reaches the profiles topic after
    it: a repair begun in between read the evicted profile without its tombstone and, its snapshots timed at its
    start (after the eviction's), wrote it back over the marker: the read API served 200 for an evicted user."""
    import asyncio
    import time

    from kafka import KafkaProducer

    from stream_app.core.profile import Profile
    from stream_app.store.redis_store import ProfileStore, RedisStoreConfig
    from stream_app.stream.topics import ensure_topics

    settings = make_settings()
    ensure_topics(settings)
    evicted = Profile(user_id="idle", version=7, event_count=7, generation=1_000)
    public = evicted.to_json(internal=False)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    producer.send(settings.topics.profiles, key=b"idle", value=public)  # the eviction's tombstone is not there yet
    producer.flush()
    producer.close()
    store = ProfileStore(RedisStoreConfig(settings.redis_url, settings.namespace))
    batch_began = int(time.time() * 1000) - 2_000  # the eviction's batch, begun before the repair

    async def evict() -> None:
        try:
            await store.write_profiles([(evicted, public)], now_ms=batch_began - 60_000)
            await store.delete_profiles(["idle"], evicted={"idle": 1_000}, now_ms=batch_began)
        finally:
            await store.close()

    asyncio.run(evict())

    summary = repair_redis(settings)

    assert summary.written == 0
    assert read_profile(redis_client, "idle", settings.namespace) == {}
    assert redis_client.hgetall(profile_key("idle", settings.namespace)) == {
        b"evicted_generation": b"1000", b"evicted_at": str(batch_began).encode()}


def test_a_profiles_topic_missing_or_empty_beside_a_redis_with_profiles_deletes_nothing_unless_forced(
        make_settings, redis_client):
    """A review: a topic read as empty (another cluster's bootstrap servers, no right to see it) deleted every
    profile in Redis, and the marker that says Redis is complete stayed."""
    import time

    from stream_app.errors import ConfigError
    from stream_app.store.redis_store import profile_users, restore_profiles
    from stream_app.stream.topics import ensure_topics

    settings = make_settings()
    written = int(time.time() * 1000) - 120_000  # before the repair's minute of margin
    restore_profiles(redis_client, settings.namespace, [(f"u{n}", 3, 7, b'{"version": 3}', 1) for n in range(3)],
                     written)
    with pytest.raises(ConfigError, match="does not exist, or this account cannot see it"):
        repair_redis(settings)
    ensure_topics(settings)  # there, and empty
    with pytest.raises(ConfigError, match="holds no snapshot while Redis holds 3 profiles.*--force"):
        repair_redis(settings)
    assert sorted(profile_users(redis_client, settings.namespace)) == ["u0", "u1", "u2"]
    assert repair_redis(settings, force=True).deleted == 3
    assert not list(profile_users(redis_client, settings.namespace))


def test_records_of_the_profiles_topic_that_are_no_snapshot_are_passed_over_and_take_no_users_place(monkeypatch):
    """Another producer's records on the profiles topic (no key, a key that is not UTF-8, bytes that are no profile)
    stopped `repair-redis` with a traceback (helper-152); one keyed by a user after the user's snapshot would have
    taken its place, and the user's profile would not have been written back."""
    from types import SimpleNamespace

    import redis
    from kafka import TopicPartition

    from stream_app.config import Settings
    from stream_app.core.profile import Profile
    from stream_app.stream.erased_users import ErasedUsers
    from stream_app.tools import repair

    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    snapshot = Profile(user_id="u1", version=3).to_json()
    records = [SimpleNamespace(key=key, value=value) for key, value in (
        (b"u1", snapshot), (b"u1", b"junk"), (None, b"{}"), (b"\xff", snapshot), (b"u1", b'{"version": "x"}'),
        (b"u2", b'{"user_id": "u2", "version": 1}'))]
    monkeypatch.setattr(repair, "read_range", lambda settings, topic, timeout_s: (records, {}, {TopicPartition(
        settings.topics.profiles, 0): len(records)}))
    monkeypatch.setattr(repair, "erased_users", lambda settings: ErasedUsers({}, settings, "", ""))
    monkeypatch.setattr(redis.Redis, "from_url", lambda url: SimpleNamespace(ping=lambda: True, close=lambda: None))
    written, deleted = [], []
    monkeypatch.setattr(repair, "restore_profiles", lambda client, ns, rows, *times: written.extend(rows) or len(rows))
    monkeypatch.setattr(repair, "profile_users", lambda client, ns: ["u1", "u2", "u3"])
    monkeypatch.setattr(repair, "delete_profiles_before", lambda client, ns, users, began: deleted.extend(users) or 0)
    summary = repair.repair_redis(settings)
    assert [(user, value) for user, _, _, value, _ in written] == [("u1", snapshot)]  # its snapshot, not the junk
    assert deleted == ["u3"]  # u2's last record is no profile: its profile in Redis is left as it is
    assert summary.passed_over == 5 and "passed over 5 records" in summary.passed_over_note()
