"""`repair-redis`: a flushed Redis is rebuilt from the profiles topic, without rolling back a newer write."""

from __future__ import annotations

import collections

import pytest

from stream_app.store.redis_store import profile_key, read_profile
from stream_app.tools.bench import synthetic_events
from stream_app.tools.consume import wait_committed
from stream_app.tools.repair import repair_redis
from stream_app.tools.replay import produce_events

pytestmark = pytest.mark.integration


def run_through_a_worker(settings, start_worker, count: int, users: int, prefix: str) -> collections.Counter:
    """Synthetic events through one worker until committed; the events per user."""
    events = synthetic_events(count, users=users, items=200, prefix=prefix)
    start_worker(settings)
    wait_committed(settings, produce_events(settings, events).marks, timeout=90)
    return collections.Counter(e["user_id"] for e in events)


def test_a_flushed_redis_is_rebuilt_from_the_profiles_topic(make_settings, start_worker, redis_client):
    settings = make_settings()
    expected = run_through_a_worker(settings, start_worker, 1500, 40, "repair")

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


def test_the_profile_and_repair_redis_commands(make_settings, start_worker, redis_client):
    import os
    import subprocess
    import sys

    settings = make_settings()
    expected = run_through_a_worker(settings, start_worker, 300, 5, "cli")
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
