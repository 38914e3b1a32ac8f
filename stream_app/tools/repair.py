"""`stream-app repair-redis`: rebuild the Redis mirror from the compacted `profiles` topic.

Redis is a copy: the profile table (and its changelog) is the truth, and every snapshot the workers
take of a changed profile is also on the `profiles` topic, keyed by user. A flushed, replaced or
restored-from-backup Redis is brought level by reading that topic to the end that existed at the
start and writing each user's last snapshot through the workers' own version guard, so a newer
profile a running worker wrote meanwhile is never rolled back. A tombstone (null value) deletes
the user's key.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from kafka import KafkaConsumer, TopicPartition

from ..config import Settings
from ..errors import ServiceTimeout
from ..store.redis_store import profile_key, restore_profiles
from ..stream.transport import true_end_offsets

#: Snapshots written per Redis round trip.
CHUNK = 1000


@dataclass
class RepairSummary:
    snapshots_read: int = 0
    users: int = 0
    written: int = 0  # the guard let them through: Redis lacked them or held an older version
    deleted: int = 0  # tombstones on the topic
    seconds: float = 0.0


def latest_snapshots(settings: Settings, timeout_s: float = 120.0) -> tuple[dict[str, bytes | None], int]:
    """Each user's last record on the profiles topic, read to the end offsets of the start."""
    topic = settings.topics.profiles
    consumer = KafkaConsumer(bootstrap_servers=settings.require_kafka().split(","), enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=200)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        latest: dict[str, bytes | None] = {}
        if not tps:
            return latest, 0
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        # Tansu reports the base offset of a partition's last batch as its end: confirm by reading it
        reported = asyncio.run(true_end_offsets(settings.require_kafka().split(","), consumer.end_offsets(tps)))
        ends = {tp: end or 0 for tp, end in reported.items()}
        read = 0
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise ServiceTimeout(f"read {read} records of {topic} in {timeout_s:.0f}s without reaching its end: "
                                     "is the broker up? (KAFKA_BOOTSTRAP_SERVERS)")
            for tp, records in consumer.poll(timeout_ms=500, max_records=5000).items():
                for record in records:
                    if record.offset < ends[tp]:
                        latest[record.key.decode("utf-8")] = record.value
                        read += 1
        return latest, read
    finally:
        consumer.close()


def repair_redis(settings: Settings) -> RepairSummary:
    started = time.monotonic()
    summary = RepairSummary()
    latest, summary.snapshots_read = latest_snapshots(settings)
    summary.users = len(latest)
    client = redis.Redis.from_url(settings.require_redis())
    try:
        live: list[tuple[str, int, int, bytes]] = []
        gone: list[str] = []
        for user_id, value in latest.items():
            if value is None:
                gone.append(profile_key(user_id, settings.namespace))
                continue
            snapshot: dict[str, Any] = orjson.loads(value)
            live.append((user_id, snapshot["version"], snapshot["event_count"], value))
        now_ms = int(time.time() * 1000)
        for start in range(0, len(live), CHUNK):
            summary.written += restore_profiles(client, settings.namespace, live[start:start + CHUNK], now_ms)
        for start in range(0, len(gone), CHUNK):
            summary.deleted += client.delete(*gone[start:start + CHUNK])
    finally:
        client.close()
    summary.seconds = time.monotonic() - started
    return summary
