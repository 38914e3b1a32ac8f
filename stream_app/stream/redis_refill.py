"""Noticing that Redis lost the profile mirror, and writing back the profiles a worker owns.

Redis is a copy of the profile table (redis_store.py). A Redis restarted without persistence, failed
over to an empty replica or flushed comes back without the profiles of users who send nothing new until
their next event. So the workers keep a marker there (store/mirror_marker.py): a hash holding a random token
(set by the first worker to find none) and, per input partition, the token under which that partition's
profiles were written back; the read API answers a miss in a partition not written back yet with 503, not 404. At every heartbeat a worker writes back each
partition it owns whose entry is not the current token, from its table, through the same version guard
as its batches (a newer profile a batch wrote meanwhile is never rolled back), then records the token
for it. An emptied Redis has lost the marker with the rest, so every partition is written back by
whichever worker owns it, including one that changes hands meanwhile (its new owner finds it not done)
or a worker that starts meanwhile.

Each chunk is read from the table and written under the batch lock: a batch that evicts or erases a
user cannot run between the two and have an older copy written back after its delete. A Redis restored
from an older backup, or a replica that is behind, keeps a marker that says nothing is missing:
`stream-app repair-redis` brings that level from the profiles topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Callable

from ..core.profile import Profile
from ..errors import described
from ..partitioning import partition_of
from ..store.mirror_marker import MirrorMarker
from ..store.redis_store import ProfileStore
from .retries import RETRYABLE

log = logging.getLogger("stream_app.redis_refill")

#: Profiles read and written per round trip, under the batch lock; batches run between two.
CHUNK = 200


class MirrorKeeper:
    """Looks at the marker (`check`, from the worker's heartbeat) and writes back the owned partitions it
    finds missing, in a task of its own beside the batches; counted in `counters` (redis_refills,
    profiles_refilled). `owned`: the worker's input partitions once its tables are restored and checked
    for erased users' profiles, else None."""

    def __init__(self, store: ProfileStore, table: Any, partitions: int, namespace: str,
                 owned: Callable[[], set[int] | None], lock: asyncio.Lock, counters: Any, now_ms: Callable[[], int]):
        self.store, self.table, self.partitions, self.owned = store, table, partitions, owned
        self.lock, self.counters, self.now_ms = lock, counters, now_ms
        self.marker = MirrorMarker(namespace, partitions)
        self.task: asyncio.Future[None] | None = None

    async def check(self) -> None:
        owned = self.owned()
        if owned is None or (self.task is not None and not self.task.done()):
            return  # partitions not taken up yet, or a refill under way
        try:
            token, missing = await self.marker.missing(self.store.client, owned)
        except RETRYABLE as exc:
            log.warning("cannot look at Redis's marker of the profile mirror: %s", described(exc))
            return
        if missing:
            self.task = asyncio.ensure_future(self._refill(token, missing))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _refill(self, token: str, partitions: set[int]) -> None:
        try:
            profiles, written, incomplete = await refill(self.store, self.table, partitions, self.partitions,
                                                         self.owned, self.lock, self.now_ms)
            await self.marker.done(self.store.client, token, partitions - incomplete)
        except RETRYABLE as exc:  # the partitions stay missing: written at a later look
            log.warning("writing the profile mirror back to Redis failed (%s): tried again at the next look", described(exc))
            return
        except Exception:  # not the input's fault: said loudly, tried again at the next look
            log.exception("writing the profile mirror back to Redis failed")
            return
        if written:  # nothing newer than Redis held (a new or upgraded deployment's first look): no alarm
            self.counters.redis_refills += 1
            self.counters.profiles_refilled += written
            log.warning("Redis had lost the profile mirror (marker %s): wrote back %d profiles of input partitions "
                        "%s, %d of them newer than what Redis held", self.marker.key, profiles,
                        sorted(partitions - incomplete), written)


async def refill(store: ProfileStore, table: Any, partitions: set[int], count: int,
                 owned: Callable[[], set[int] | None], lock: asyncio.Lock,
                 now_ms: Callable[[], int]) -> tuple[int, int, set[int]]:
    """Write the profiles of input `partitions` (of `count`) in `table` (user id bytes -> the stored
    profile) to Redis, CHUNK at a time, each chunk read and written under `lock`; a profile whose
    partition is no longer `owned` when its chunk comes is left to the new owner. Returns (profiles,
    written: those newer than what Redis held, the partitions left incomplete that way)."""
    keys = list(table.keys())
    profiles = written = 0
    incomplete: set[int] = set()
    for start in range(0, len(keys), CHUNK):
        async with lock:
            now = owned() or set()
            snapshots = []
            for key in keys[start:start + CHUNK]:
                partition = partition_of(key.decode("utf-8"), count)
                if partition not in partitions:
                    continue
                if partition not in now:
                    incomplete.add(partition)
                    continue
                raw = table.get(key)
                if raw is None:
                    continue  # evicted or erased since the keys were listed
                try:
                    profile = Profile.from_json(raw)
                except Exception as exc:  # its events are dead-lettered for the same reason (batch.py)
                    log.error("cannot read the stored profile of %r to write it back to Redis: %s", key, described(exc))
                    continue
                snapshots.append((profile, profile.to_json(internal=False)))  # as a batch writes an unchanged one
            profiles += len(snapshots)
            written += await store.write_profiles(snapshots, now_ms())
        await asyncio.sleep(0)
    return profiles, written, incomplete
