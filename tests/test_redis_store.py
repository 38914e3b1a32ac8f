import asyncio
import uuid

from stream_app.core.profile import Profile
from stream_app.store.redis_store import ProfileStore, RedisStoreConfig, read_profile


def test_pipelined_writes_skip_stale_versions(services, redis_client):
    namespace = f"store-test-{uuid.uuid4().hex[:12]}."  # unique: a second run on the same Redis starts empty
    store = ProfileStore(RedisStoreConfig(services["REDIS_URL"], namespace=namespace))
    newer = Profile(user_id="u1", version=5, event_count=5)
    older = Profile(user_id="u1", version=3, event_count=3)
    other = Profile(user_id="u2", version=1, event_count=1)

    async def scenario():
        try:
            first = await store.write_profiles([(p, p.to_json(internal=False)) for p in (newer, other)], now_ms=10)
            second = await store.write_profiles([(older, older.to_json(internal=False))], now_ms=20)
            return first, second
        finally:
            await store.close()

    assert asyncio.run(scenario()) == (2, 0)
    stored = read_profile(redis_client, "u1", namespace)
    assert stored["profile_version"] == 5 and stored["event_count"] == 5 and stored["updated_at"] == 10
    assert "seen_event_ids" not in stored["profile"]
    assert read_profile(redis_client, "nobody", namespace) == {}


def test_a_key_redis_refuses_is_skipped_and_logged_and_the_rest_of_the_batch_is_written(services, redis_client,
                                                                                         caplog):
    from stream_app.store.redis_store import profile_key

    namespace = f"store-test-{uuid.uuid4().hex[:12]}."
    redis_client.set(profile_key("squatter", namespace), b"not a hash")  # WRONGTYPE for the profile's HSET
    store = ProfileStore(RedisStoreConfig(services["REDIS_URL"], namespace=namespace))
    profiles = [Profile(user_id=u, version=1, event_count=1) for u in ("u1", "squatter", "u2")]

    async def scenario():
        try:
            return await store.write_profiles([(p, p.to_json(internal=False)) for p in profiles], now_ms=10)
        finally:
            await store.close()

    assert asyncio.run(scenario()) == 2
    assert store.refused == 1
    assert [read_profile(redis_client, u, namespace)["event_count"] for u in ("u1", "u2")] == [1, 1]
    assert redis_client.get(profile_key("squatter", namespace)) == b"not a hash"
    assert "WRONGTYPE" in caplog.text and profile_key("squatter", namespace) in caplog.text
