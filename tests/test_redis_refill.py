"""Noticing that Redis lost the profile mirror, and writing it back (stream/redis_refill.py), on the real Redis."""

import asyncio
import uuid

from stream_app.core.profile import Profile
from stream_app.partitioning import partition_of
from stream_app.store.mirror_marker import MirrorMarker
from stream_app.store.redis_store import ProfileStore, RedisStoreConfig, read_profile
from stream_app.stream.batch import Counters
from stream_app.stream.redis_refill import CHUNK, MirrorKeeper, refill

PARTITIONS = 4


def store_for(services) -> tuple[ProfileStore, str]:
    namespace = f"refill-test-{uuid.uuid4().hex[:12]}."  # a second run on the same Redis starts empty
    return ProfileStore(RedisStoreConfig(services["REDIS_URL"], namespace=namespace)), namespace


def table_of(users: list[str], version: int = 2) -> dict[bytes, bytes]:
    return {user.encode(): Profile(user_id=user, version=version, event_count=version).to_json() for user in users}


def test_the_marker_names_the_partitions_not_written_back_under_its_token(services, redis_client):
    store, namespace = store_for(services)
    first, second = MirrorMarker(namespace, 4), MirrorMarker(namespace, 4)

    async def looks() -> list:
        client, seen = store.client, []
        try:
            token, missing = await first.missing(client, {0, 1})  # a new deployment: all missing
            seen.append(missing)
            await first.done(client, token, {0, 1})
            seen.append((await second.missing(client, {0, 1, 2}))[1])  # another worker's partition 2
            redis_client.delete(first.key)  # Redis emptied
            token2, missing = await second.missing(client, {2, 3})
            seen.append((missing, token2 != token))
            await second.done(client, token2, {2, 3})
            seen.append((await first.missing(client, {0, 1}))[1])  # the token changed: 0 and 1 again
        finally:
            await store.close()
        return seen

    assert asyncio.run(looks()) == [{0, 1}, {2}, ({2, 3}, True), {0, 1}]


def test_a_refill_writes_the_owned_partitions_profiles_without_rolling_a_newer_one_back(services, redis_client):
    store, namespace = store_for(services)
    users = [f"u{i}" for i in range(2 * CHUNK + 100)]  # three chunks
    table = table_of(users)
    newer = next(user for user in users if partition_of(user, PARTITIONS) == 0)
    moved = 1  # taken by another worker while the refill runs

    async def scenario() -> tuple:
        try:
            current = Profile(user_id=newer, version=5, event_count=5)  # a batch wrote it meanwhile
            await store.write_profiles([(current, current.to_json(internal=False))], now_ms=1)
            return await refill(store, table, {0, 1}, PARTITIONS, lambda: {0, 2, 3}, asyncio.Lock(), lambda: 10)
        finally:
            await store.close()

    profiles, written, incomplete = asyncio.run(scenario())
    expected = [user for user in users if partition_of(user, PARTITIONS) == 0]
    assert (profiles, written, incomplete) == (len(expected), len(expected) - 1, {moved})
    for user in users:
        stored = read_profile(redis_client, user, namespace)
        if user == newer:
            assert stored["profile_version"] == 5
        elif user in expected:
            assert stored["profile_version"] == 2 and stored["profile"] == orjson_public(table[user.encode()])
        else:
            assert stored == {}, user


def orjson_public(stored: bytes) -> dict:
    import orjson

    return orjson.loads(Profile.from_json(stored).to_json(internal=False))


def test_a_partition_lost_during_a_refill_is_written_by_its_next_owner(services, redis_client):
    """Two workers on one Redis: the first loses partition 1 half-way through; the second, which takes
    it, finds it not written back under the token and writes it."""
    store, namespace = store_for(services)
    users = [f"u{i}" for i in range(3 * CHUNK)]
    table = table_of(users)
    first_owns, second_owns = {0, 1}, {2, 3}
    first = MirrorKeeper(store, table, PARTITIONS, namespace, lambda: set(first_owns), asyncio.Lock(), Counters(),
                         lambda: 10)
    second = MirrorKeeper(store, table, PARTITIONS, namespace, lambda: set(second_owns), asyncio.Lock(), Counters(),
                          lambda: 10)
    original_write = store.write_profiles
    writes = 0

    async def write_then_rebalance(snapshots, now_ms):
        nonlocal writes
        writes += 1
        if writes == 1:  # after the first chunk, partition 1 moves to the second worker
            first_owns.discard(1)
            second_owns.add(1)
        return await original_write(snapshots, now_ms)

    store.write_profiles = write_then_rebalance

    async def scenario() -> None:
        try:
            for keeper in (first, second, first, second):
                await keeper.check()
                if keeper.task is not None:
                    await keeper.task
        finally:
            await store.close()

    asyncio.run(scenario())
    assert all(read_profile(redis_client, user, namespace).get("profile_version") == 2 for user in users)
    in_partition = [sum(partition_of(user, PARTITIONS) == p for user in users) for p in range(PARTITIONS)]
    assert (first.counters.redis_refills, second.counters.redis_refills) == (1, 1)  # then nothing was missing
    # partition 1 was begun (the first chunk) and left to its new owner
    assert in_partition[0] < first.counters.profiles_refilled < in_partition[0] + in_partition[1]
    assert second.counters.profiles_refilled > sum(in_partition[2:])  # ... which wrote what the first had not


def test_a_batch_cannot_evict_a_user_between_the_refills_read_and_its_write(services, redis_client):
    """The refill holds the batch lock from reading a chunk to writing it: an eviction (table entry and
    Redis key deleted) waits, so no older copy lands in Redis after the delete."""
    store, namespace = store_for(services)
    users = [f"u{i}" for i in range(CHUNK)]
    table = table_of(users)
    lock = asyncio.Lock()

    async def evict_all() -> None:
        async with lock:
            for user in users:
                table.pop(user.encode(), None)
            await store.delete_profiles(users)

    original_write = store.write_profiles

    async def slow_write(snapshots, now_ms):  # the round trip's own waits (a connection, the script's load)
        await asyncio.sleep(0.05)
        return await original_write(snapshots, now_ms)

    store.write_profiles = slow_write

    async def scenario() -> None:
        try:
            refilling = asyncio.ensure_future(refill(store, table, set(range(PARTITIONS)), PARTITIONS,
                                                     lambda: set(range(PARTITIONS)), lock, lambda: 10))
            await asyncio.sleep(0)  # the refill has the lock and is reading
            await evict_all()
            await refilling
        finally:
            await store.close()

    asyncio.run(scenario())
    assert [user for user in users if read_profile(redis_client, user, namespace)] == []


def test_a_deployment_upgraded_onto_a_full_redis_is_not_reported_as_redis_having_lost_the_mirror(services):
    """The first look finds no marker (a release before it, or a new deployment) and writes back every
    profile, but Redis holds them all already: nothing newer written, no alarm, no count."""
    store, namespace = store_for(services)
    table = table_of([f"u{i}" for i in range(50)])
    keeper = MirrorKeeper(store, table, PARTITIONS, namespace, lambda: set(range(PARTITIONS)), asyncio.Lock(),
                          Counters(), lambda: 10)

    async def scenario() -> None:
        try:
            profiles = [Profile.from_json(raw) for raw in table.values()]
            await store.write_profiles([(p, p.to_json(internal=False)) for p in profiles], now_ms=1)
            await keeper.check()
            await keeper.task
        finally:
            await store.close()

    asyncio.run(scenario())
    assert keeper.task is not None and keeper.counters.redis_refills == 0
