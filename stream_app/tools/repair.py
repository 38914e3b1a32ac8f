"""`stream-app repair-redis`: rebuild the Redis mirror from the compacted `profiles` topic.

Redis is a copy: the profile table (and its changelog) is the truth, and every snapshot the workers
take of a changed profile is also on the `profiles` topic, keyed by user. A flushed, replaced or
restored-from-backup Redis is brought level by reading that topic to the end that existed at the
start and writing each user's last snapshot through the workers' own version guard, so a newer
profile a running worker wrote meanwhile is never rolled back. A tombstone (null value) deletes
the user's key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from ..config import Settings
from ..core.profile import supersedes
from ..store.redis_store import profile_key, restore_profiles
from .consume import read_to_end

#: Snapshots written per Redis round trip.
CHUNK = 1000


@dataclass
class RepairSummary:
    snapshots_read: int = 0
    users: int = 0
    written: int = 0  # the guard let them through: Redis lacked them or held an older version
    deleted: int = 0  # tombstones on the topic
    seconds: float = 0.0


def latest_snapshots(settings: Settings, timeout_s: float = 120.0, topic: str | None = None
                     ) -> tuple[dict[str, bytes | None], int]:
    """Each user's newest snapshot on the profiles topic (or on `topic`, keyed by user: the profile
    table's changelog), read to the end offsets of the start: as the table restores it
    (`profile.supersedes`: a later record older than the one before it is a late write of an earlier
    owner); None for a user whose last record is a tombstone."""
    records = read_to_end(settings, topic or settings.topics.profiles, timeout_s)
    latest: dict[str, bytes | None] = {}
    for record in records:
        user_id = record.key.decode("utf-8")
        if record.value is None or supersedes(record.value, latest.get(user_id)):
            latest[user_id] = record.value
    return latest, len(records)


def repair_redis(settings: Settings) -> RepairSummary:
    started = time.monotonic()
    summary = RepairSummary()
    latest, summary.snapshots_read = latest_snapshots(settings)
    summary.users = len(latest)
    client = redis.Redis.from_url(settings.require_redis())
    try:
        live: list[tuple[str, int, int, bytes, int]] = []
        gone: list[str] = []
        for user_id, value in latest.items():
            if value is None:
                gone.append(profile_key(user_id, settings.namespace))
                continue
            snapshot: dict[str, Any] = orjson.loads(value)
            live.append((user_id, snapshot["version"], snapshot["event_count"], value, snapshot.get("generation") or 0))
        now_ms = int(time.time() * 1000)
        for start in range(0, len(live), CHUNK):
            summary.written += restore_profiles(client, settings.namespace, live[start:start + CHUNK], now_ms)
        for start in range(0, len(gone), CHUNK):
            summary.deleted += client.delete(*gone[start:start + CHUNK])
    finally:
        client.close()
    summary.seconds = time.monotonic() - started
    return summary
