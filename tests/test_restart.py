"""A worker restarted after a crash takes up each of its partitions at the group's commit, not at offset 0."""

from __future__ import annotations

import time

from conftest import wait_until
from kafka import TopicPartition

from stream_app.store.redis_store import read_profile, worker_statuses
from stream_app.tools.consume import committed_offsets
from stream_app.tools.replay import produce_events

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
