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
from ..core.profile import snapshot_order, supersedes
from ..errors import ConfigError
from ..store.redis_store import delete_profiles_before, profile_users, restore_profiles
from ..stream.erased_users import ERASED_TABLE, ErasedUsers
from .consume import read_range, read_to_end

#: Snapshots written per Redis round trip.
CHUNK = 1000
#: A profile Redis holds and the topic does not is deleted only if written this long before the repair
#: began: a running worker's batch writes Redis and the topic at once, and the topic was read to its end then.
STALE_MARGIN_MS = 60_000


@dataclass
class RepairSummary:
    snapshots_read: int = 0
    users: int = 0
    written: int = 0  # the guard let them through: Redis lacked them or held an older version
    deleted: int = 0  # profiles in Redis of users the topic has none for (tombstones, erased, gone)
    erased: int = 0  # snapshots of users erased after their profile began: not written
    tombstoned: int = 0  # users whose last record is a tombstone (erased or evicted): not written
    passed_over: int = 0  # records that are no user's snapshot (another producer's): their users' Redis keys left as is
    seconds: float = 0.0

    def passed_over_note(self) -> str:
        """What the summary line adds of the records passed over (none: nothing)."""
        return (f"; passed over {self.passed_over} records that are no user's snapshot (keyed by no user, or no profile: "
                "another producer's), their users' profiles in Redis left as they were") if self.passed_over else ""


def latest_snapshots(settings: Settings, timeout_s: float = 120.0, topic: str | None = None,
                     skip_unreadable: bool = False) -> tuple[dict[str, bytes | None], int, int]:
    """Each user's newest snapshot on the profiles topic (or on `topic`, keyed by user: the profile
    table's changelog), read to the end offsets of the start: as the table restores it
    (`profile.supersedes`: a later record older than the one before it is a late write of an earlier
    owner); None for a user whose last record is a tombstone. Also the number of records read, and of those passed
    over: keyed by no user (no key, or not UTF-8), and with `skip_unreadable` (`repair-redis`) those that are no
    snapshot (its version unreadable: another producer's), which otherwise take their user's place, so that a check
    reading them reports them."""
    topic = topic or settings.topics.profiles
    records, _, ends = read_range(settings, topic, timeout_s)
    if not ends:  # read as empty, every profile in Redis would go
        raise ConfigError(f"the topic {topic} does not exist, or this account cannot see it: are "
                          "KAFKA_BOOTSTRAP_SERVERS and STREAM_APP_NAMESPACE the workers'? Nothing was written or deleted")
    latest: dict[str, bytes | None] = {}
    skipped = 0
    for record in records:
        try:
            user_id = record.key.decode("utf-8")
        except (AttributeError, UnicodeDecodeError):  # no key, or not text: a traceback of repair-redis (helper-152)
            skipped += 1
            continue
        if skip_unreadable and record.value is not None and snapshot_order(record.value) is None:
            skipped += 1
        elif record.value is None or supersedes(record.value, latest.get(user_id)):
            latest[user_id] = record.value
    return latest, len(records), skipped


def erased_users(settings: Settings, timeout_s: float = 120.0) -> ErasedUsers:
    """The workers' record of erased users, read from its table's changelog: who is erased, by their rule."""
    data: dict[bytes, bytes] = {}
    for record in read_to_end(settings, f"{settings.group_id}-{ERASED_TABLE}-changelog", timeout_s):
        if record.value is None:
            data.pop(record.key, None)
        else:
            data[record.key] = record.value
    erased = ErasedUsers(data, settings, "", "")
    others = erased.other_keys()
    if others:  # as a worker stops: without the key those users' profiles would be written back
        raise ConfigError(f"the erased-users record holds erasures made with an erasure key not given here (key id "
                          f"{', '.join(sorted(others))}; this one's is {erased.key_id}): set STREAM_APP_ERASURE_KEY "
                          "(and STREAM_APP_ERASURE_PREVIOUS_KEYS) as the workers have them; nothing was written")
    return erased


def repair_redis(settings: Settings, force: bool = False) -> RepairSummary:
    """Write each user's newest snapshot; delete the profiles of users whose last record is a tombstone, of
    users erased after their snapshot's profile began (a late write of an earlier owner can follow the
    erasure's tombstone on the topic), and the profiles Redis holds that the topic does not (a Redis
    restored from an older backup): those written before the repair began, less a minute, so a profile a
    running worker wrote meanwhile stays; an erased user's marker stays too. A topic with no snapshot at all beside a
    Redis that holds profiles is refused unless `force`: emptied, or not the workers' topic, it would delete them all."""
    started = time.monotonic()
    read_from_ms = int(time.time() * 1000)  # the snapshots are as of then: Redis's guard compares it with evictions
    began_ms = read_from_ms - STALE_MARGIN_MS
    summary = RepairSummary()
    client = redis.Redis.from_url(settings.require_redis())
    try:
        client.ping()  # a Redis that refuses or does not answer is said before the topic is read
        latest, summary.snapshots_read, summary.passed_over = latest_snapshots(settings, skip_unreadable=True)
        erased = erased_users(settings)
        summary.users = len(latest)
        live: list[tuple[str, int, int, bytes, int]] = []
        unread: set[str] = set()  # users whose last snapshot reads, but lacks a profile's fields: left as Redis has them
        for user_id, value in latest.items():
            erased_at = erased.erased_at(user_id) if value is not None else None
            if value is None or (erased_at is not None and (snapshot_order(value) or (0, 0))[0] <= erased_at):
                summary.erased += value is not None
                summary.tombstoned += value is None
                continue
            try:
                snapshot: dict[str, Any] = orjson.loads(value)
                live.append((user_id, int(snapshot["version"]), int(snapshot["event_count"]), value,
                             int(snapshot.get("generation") or 0)))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, OverflowError):
                summary.passed_over += 1
                unread.add(user_id)
        for start in range(0, len(live), CHUNK):
            # an eviction is timed at its batch's start, and its tombstone reaches the topic after its Redis marker:
            # one begun shortly before the repair read the topic may have its tombstone after what was read
            summary.written += restore_profiles(client, settings.namespace, live[start:start + CHUNK], read_from_ms,
                                                began_ms)
        kept = {user_id for user_id, *_ in live} | unread
        stale = [user_id for user_id in profile_users(client, settings.namespace) if user_id not in kept]
        if stale and not summary.snapshots_read and not force:
            raise ConfigError(f"the topic {settings.topics.profiles} holds no snapshot while Redis holds {len(stale):,} "
                              "profiles, which this repair would delete: are KAFKA_BOOTSTRAP_SERVERS and "
                              "STREAM_APP_NAMESPACE the workers'? If the topic is right (every profile erased or "
                              "evicted), run again with --force. Nothing was deleted")
        for start in range(0, len(stale), CHUNK):
            summary.deleted += delete_profiles_before(client, settings.namespace, stale[start:start + CHUNK], began_ms)
    finally:
        client.close()
    summary.seconds = time.monotonic() - started
    return summary
