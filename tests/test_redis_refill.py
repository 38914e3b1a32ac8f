"""Noticing that Redis lost the profile mirror, and writing it back (stream/redis_refill.py), on the real Redis."""

import asyncio
import uuid

from stream_app.core.profile import Profile, public_row
from stream_app.store.redis_store import ProfileStore, RedisStoreConfig, read_profile
from stream_app.stream.partitioning import partition_of
from stream_app.stream.redis_refill import CHUNK, MirrorMarker, refill


def test_the_stored_snapshot_gives_the_same_public_snapshot_as_the_profile():
    profile = Profile(user_id="u1", version=3, event_count=3, generation=7, seen_event_ids={"e": 1})
    internal, public = profile.snapshots()
    assert public_row(internal) == ("u1", 3, 3, public, 7)


def test_the_marker_says_lost_when_redis_lost_it_or_another_worker_found_it_gone(services, redis_client):
    namespace = f"refill-test-{uuid.uuid4().hex[:12]}."
    first, second = MirrorMarker(namespace), MirrorMarker(namespace)

    async def looks() -> list[bool]:
        store = ProfileStore(RedisStoreConfig(services["REDIS_URL"], namespace=namespace))
        client, seen = store.client, []
        try:
            seen.append(await first.lost(client))  # none at the start: set, and the first worker writes back
            seen.append(await second.lost(client))  # found at its start: nothing lost
            seen.append(await first.lost(client))
            redis_client.delete(first.key)  # Redis emptied
            seen.append(await second.lost(client))  # finds it gone, sets a new one
            seen.append(await first.lost(client))  # finds it replaced
            seen += [await first.lost(client), await second.lost(client)]
            first.unfinished()  # its refill failed half-way
            seen.append(await first.lost(client))
        finally:
            await store.close()
        return seen

    assert asyncio.run(looks()) == [True, False, False, True, True, False, False, True]


def test_a_refill_writes_the_owned_partitions_profiles_without_rolling_a_newer_one_back(services, redis_client):
    namespace = f"refill-test-{uuid.uuid4().hex[:12]}."
    partitions = 4
    users = [f"u{i}" for i in range(CHUNK + 100)]  # two round trips
    table = {user.encode(): Profile(user_id=user, version=2, event_count=2).snapshots()[0] for user in users}
    owned = {0, 1}
    moved = 1  # taken by another worker while the refill runs
    newer = next(user for user in users if partition_of(user, partitions) == 0)

    async def scenario() -> tuple[int, int]:
        store = ProfileStore(RedisStoreConfig(services["REDIS_URL"], namespace=namespace))
        try:
            current = Profile(user_id=newer, version=5, event_count=5)  # a batch wrote it meanwhile
            await store.write_profiles([(current, current.to_json(internal=False))], now_ms=1)
            return await refill(store, table, owned, partitions, 10, lambda partition: partition != moved)
        finally:
            await store.close()

    profiles, written = asyncio.run(scenario())
    expected = [user for user in users if partition_of(user, partitions) == 0]
    assert (profiles, written) == (len(expected), len(expected) - 1)
    for user in users:
        stored = read_profile(redis_client, user, namespace)
        if user == newer:
            assert stored["profile_version"] == 5
        elif user in expected:
            assert stored["profile_version"] == 2 and stored["profile"]["user_id"] == user
        else:
            assert stored == {}, user
