"""Noticing that Redis lost the profile mirror, and writing back the profiles a worker owns.

Redis is a copy of the profile table (redis_store.py). A Redis restarted without persistence, failed
over to an empty replica or flushed comes back without the profiles of users who send nothing new,
and the read API answers 404 for them until their next event. The workers keep a marker key there,
a random token the first worker to find none sets; a worker that finds it gone, or changed since it
last looked (another worker found it gone first), writes every profile of the input partitions it
owns back from its table, through the same version guard as its batches: a newer profile a batch
wrote meanwhile is never rolled back. `stream-app repair-redis` does the same from the profiles topic
when no worker runs.

A worker that finds no marker at its start writes its profiles too (a new deployment's tables are
empty; a Redis emptied while no worker ran is brought level). The one case left to `repair-redis`:
a Redis emptied while a worker was starting, after another worker had set a new marker.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any, Callable, Iterable

import orjson
import redis.asyncio as aioredis

from ..core.profile import public_row
from ..store.redis_store import ProfileStore
from .partitioning import partition_of
from .retries import RETRYABLE

log = logging.getLogger("stream_app.redis_refill")

#: The marker's key (after the namespace).
MARKER = "mirror-marker"
#: Profiles written per round trip; the worker's loop runs its batches between two.
CHUNK = 500


class MirrorMarker:
    """The marker key: `lost` says whether the mirror was lost since this worker last looked."""

    def __init__(self, namespace: str):
        self.key = f"{namespace}{MARKER}"
        self.seen: bytes | None = None  # the token this worker last found

    async def lost(self, client: aioredis.Redis) -> bool:
        pipe = client.pipeline(transaction=False)
        pipe.set(self.key, secrets.token_hex(8), nx=True)
        pipe.get(self.key)
        created, token = await pipe.execute()
        lost = bool(created) or (self.seen is not None and token != self.seen)
        self.seen = token
        return lost

    def unfinished(self) -> None:
        """A refill did not finish: the next look says lost again."""
        self.seen = b""


class MirrorKeeper:
    """Looks at the marker (`check`, from the worker's heartbeat) and, when Redis lost the mirror,
    refills it in a task of its own beside the batches; counted in `counters` (redis_refills,
    profiles_refilled)."""

    def __init__(self, store: ProfileStore, table: Any, partitions: int, namespace: str,
                 owned: Callable[[], set[int] | None], counters: Any):
        self.store, self.table, self.partitions, self.owned, self.counters = store, table, partitions, owned, counters
        self.marker = MirrorMarker(namespace)
        self.task: asyncio.Future[None] | None = None

    async def check(self, now_ms: int) -> None:
        owned = self.owned()
        if owned is None or (self.task is not None and not self.task.done()):
            return  # partitions not taken up yet (the tables restore), or a refill under way
        try:
            lost = await self.marker.lost(self.store.client)
        except RETRYABLE as exc:
            log.warning("cannot look at Redis's marker of the profile mirror: %r", exc)
            return
        if lost:
            log.warning("Redis lost the profile mirror (its marker %s was gone or replaced): writing back the "
                        "profiles of input partitions %s", self.marker.key, sorted(owned))
            self.task = asyncio.ensure_future(self._refill(owned, now_ms))

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _refill(self, owned: set[int], now_ms: int) -> None:
        def still_owned(partition: int) -> bool:
            return partition in (self.owned() or ())

        try:
            profiles, written = await refill(self.store, self.table, owned, self.partitions, now_ms, still_owned)
        except RETRYABLE as exc:
            self.marker.unfinished()
            log.warning("writing the profile mirror back to Redis failed (%r): tried again at the next look", exc)
            return
        self.counters.redis_refills += 1
        self.counters.profiles_refilled += written
        log.warning("the profile mirror is back in Redis: %d profiles of partitions %s, %d of them newer than "
                    "what Redis held", profiles, sorted(owned), written)


async def refill(store: ProfileStore, table: Any, owned: Iterable[int], partitions: int, now_ms: int,
                 still_owned: Callable[[int], bool]) -> tuple[int, int]:
    """Write every profile of the `owned` input partitions in `table` (user id bytes -> the internal
    snapshot) to Redis, CHUNK per round trip; a profile whose partition is no longer owned when its
    chunk is written (a rebalance meanwhile) is left to its new owner. Returns (profiles, written:
    those newer than what Redis held)."""
    owned = set(owned)
    keys = [key for key in list(table.keys()) if partition_of(key.decode("utf-8"), partitions) in owned]
    profiles = written = 0
    for start in range(0, len(keys), CHUNK):
        rows = []
        for key in keys[start:start + CHUNK]:
            raw = table.get(key)
            if raw is None or not still_owned(partition_of(key.decode("utf-8"), partitions)):
                continue  # evicted, erased or moved since the list was taken
            try:
                rows.append(public_row(raw))
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                log.error("cannot write the stored profile of %r to Redis again (%r): its next event writes it",
                          key, exc)
        profiles += len(rows)
        written += await store.write_rows(rows, now_ms)
        await asyncio.sleep(0)  # let a batch in
    return profiles, written
