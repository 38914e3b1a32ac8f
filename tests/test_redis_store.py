import asyncio
import uuid

import pytest

from stream_app.core.profile import Profile
from stream_app.store.redis_store import (
    MARKER_S,
    ProfileStore,
    RedisStoreConfig,
    delete_profiles_before,
    profile_key,
    read_profile,
    restore_profiles,
)


def fresh_store(services) -> tuple[ProfileStore, str]:
    """A store in a namespace of its own: a second run on the same Redis starts empty."""
    namespace = f"store-test-{uuid.uuid4().hex[:12]}."
    return ProfileStore(RedisStoreConfig(services["REDIS_URL"], namespace=namespace)), namespace


def user_profile(version: int, generation: int) -> Profile:
    """User u1's profile after `version` events, begun at `generation`."""
    return Profile(user_id="u1", version=version, event_count=version, generation=generation)


async def write_one(store: ProfileStore, profile: Profile) -> int:
    return await store.write_profiles([(profile, profile.to_json(internal=False))], now_ms=10)


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


def test_a_refusal_that_is_not_the_keys_fault_is_raised_not_skipped(services, redis_client):
    """A user the ACL forbids to write: every key would be 'refused'; skipping them all would leave
    Redis silently stale, so the batch's write fails and the worker's retry loop reports it."""
    from urllib.parse import urlsplit

    import redis

    user = f"reader-{uuid.uuid4().hex[:8]}"
    redis_client.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "+@read", "+eval", "+evalsha", "+script")
    try:
        address = urlsplit(services["REDIS_URL"])
        store = ProfileStore(RedisStoreConfig(f"redis://{user}:pw@{address.hostname}:{address.port}/0",
                                              namespace=f"store-test-{uuid.uuid4().hex[:12]}."))
        profile = Profile(user_id="u1", version=1, event_count=1)

        async def scenario():
            try:
                return await store.write_profiles([(profile, profile.to_json(internal=False))], now_ms=10)
            finally:
                await store.close()

        with pytest.raises(redis.exceptions.ResponseError, match="can't run this command"):
            asyncio.run(scenario())
        assert store.refused == 0
    finally:
        redis_client.execute_command("ACL", "DELUSER", user)


def test_a_profile_created_anew_passes_the_guard_though_its_version_restarts(services, redis_client):
    """Its user evicted as idle, or the table's changelog lost: the new profile is a later generation."""

    store, namespace = fresh_store(services)
    old, stale, anew = user_profile(40, 1_000), user_profile(39, 1_000), user_profile(1, 9_000)

    async def scenario():
        try:
            return [await write_one(store, p) for p in (old, stale, anew, old)]
        finally:
            await store.close()

    assert asyncio.run(scenario()) == [1, 0, 1, 0]  # a stale owner's write and the old generation are refused
    assert read_profile(redis_client, "u1", namespace)["profile_version"] == 1
    # repair-redis goes through the same guard
    assert restore_profiles(redis_client, namespace, [("u1", 40, 40, old.to_json(internal=False), 1_000)], 20) == 0
    assert restore_profiles(redis_client, namespace, [("u1", 2, 2, anew.to_json(internal=False), 9_000)], 20) == 1


def test_a_new_profile_takes_its_first_events_time_as_its_generation_and_keeps_it():
    from stream_app.config import Settings
    from stream_app.core.events import Event
    from stream_app.core.profile import apply_event, event_digest

    settings = Settings()
    profile = Profile(user_id="u1")
    for event_id, ts in (("a", 5_000), ("b", 7_000), ("late", 1_000)):
        apply_event(profile, Event(event_id, "u1", "i1", "click", ts), event_digest(event_id), settings)
    assert profile.generation == 5_000 and profile.first_seen == 1_000
    assert Profile.from_json(profile.to_json()).generation == 5_000


def test_an_erased_users_key_refuses_late_writes_of_the_erased_profile_and_gives_way_to_a_new_one(
        services, redis_client):
    """A batch that outlived the revoke of its partitions can deliver the erased profile after the erasure:
    the marker left in its place refuses it (the profile began before the erasure) for MARKER_S, and
    reads as no profile; a profile begun after the erasure replaces it."""
    store, namespace = fresh_store(services)
    erased, late, anew = user_profile(7, 1_000), user_profile(8, 1_000), user_profile(1, 6_000)

    async def scenario():
        try:
            written = [await write_one(store, erased)]
            existed = await store.delete_profiles(["u1", "u2", "u3"], {"u1": 5_000, "u3": 5_000})
            written.append(await write_one(store, late))
            after_late = read_profile(redis_client, "u1", namespace)
            written.append(await write_one(store, anew))
            return written, existed, after_late
        finally:
            await store.close()

    written, existed, after_late = asyncio.run(scenario())
    assert written == [1, 0, 1]
    assert existed == {"u1": True, "u2": False, "u3": False}
    assert after_late == {} and read_profile(redis_client, "u3", namespace) == {}
    key = profile_key("u3", namespace)
    assert redis_client.hgetall(key).keys() == {b"erased_at"}  # the erasure time only
    assert 0 < redis_client.ttl(key) <= MARKER_S
    assert read_profile(redis_client, "u1", namespace)["profile_version"] == 1
    assert redis_client.ttl(profile_key("u1", namespace)) == -1  # the new profile does not expire


def test_a_user_deleted_twice_in_one_round_trip_is_said_to_have_held_a_profile(services, redis_client):
    """An eviction and an erasure of one user in one batch: the erasure's receipt must not say Redis held
    nothing because the second delete found the key gone."""
    store, namespace = fresh_store(services)
    profile = user_profile(3, 1)

    async def scenario() -> dict:
        try:
            await write_one(store, profile)
            return await store.delete_profiles(["u1", "u1", "u2"], {"u1": 10})
        finally:
            await store.close()

    assert asyncio.run(scenario()) == {"u1": True, "u2": False}
    assert b"erased_at" in redis_client.hgetall(profile_key("u1", namespace))


def test_an_evicted_users_key_refuses_a_late_write_of_the_evicted_profile_and_gives_way_to_later_ones(
        services, redis_client):
    """An idle eviction leaves a marker: a batch that outlived its partitions' revoke (timed before the
    eviction) or a repair that read the profile before its tombstone cannot bring the profile back for
    good; the same profile made again later (a replay) and a new generation pass."""
    store, namespace = fresh_store(services)
    evicted, anew = user_profile(10, 1_000), user_profile(1, 9_000)

    async def scenario() -> list:
        try:
            done = [await store.write_profiles([(evicted, evicted.to_json(internal=False))], now_ms=100)]
            done.append(await store.delete_profiles(["u1"], evicted={"u1": 1_000}, now_ms=500))
            done.append(await store.write_profiles([(evicted, evicted.to_json(internal=False))], now_ms=400))  # late
            done.append(read_profile(redis_client, "u1", namespace))
            done.append(restore_profiles(redis_client, namespace, [("u1", 10, 10, evicted.to_json(internal=False),
                                                                     1_000)], 450))  # read before the eviction
            done.append(await store.write_profiles([(evicted, evicted.to_json(internal=False))], now_ms=600))
            await store.delete_profiles(["u1"], evicted={"u1": 1_000}, now_ms=700)
            done.append(await store.write_profiles([(anew, anew.to_json(internal=False))], now_ms=650))
            return done
        finally:
            await store.close()

    written, existed, late, after_late, restored, replayed, new_generation = asyncio.run(scenario())
    assert (written, existed, late, after_late, restored) == (1, {"u1": True}, 0, {}, 0)
    assert (replayed, new_generation) == (1, 1)
    assert read_profile(redis_client, "u1", namespace)["profile_version"] == 1
    assert redis_client.ttl(profile_key("u1", namespace)) == -1


def test_a_key_of_another_type_is_erased_and_evicted_and_repair_skips_it(services, redis_client):
    """A string under a profile key (not this project's) must not make an erasure retry for ever (the batch
    lock held, the partition stuck) nor stop repair-redis."""
    store, namespace = fresh_store(services)
    for user_id in ("squatter", "idle"):
        redis_client.set(profile_key(user_id, namespace), b"not a hash")

    async def scenario() -> dict:
        try:
            return await store.delete_profiles(["squatter", "idle", "u2"], {"squatter": 123, "u2": 123},
                                               evicted={"idle": 50}, now_ms=60)
        finally:
            await store.close()

    assert asyncio.run(scenario()) == {"squatter": False, "idle": False, "u2": False}
    assert redis_client.hgetall(profile_key("squatter", namespace)) == {b"erased_at": b"123"}
    assert redis_client.hgetall(profile_key("idle", namespace)) == {b"evicted_generation": b"50", b"evicted_at": b"60"}
    redis_client.set(profile_key("stray", namespace), b"not a hash")
    assert delete_profiles_before(redis_client, namespace, ["stray"], 10**15) == 0


@pytest.mark.parametrize("wanted, status", [("abc", 400), ("-1", 400), ("0", 400), ("%C2%B2", 400), ("%D9%A3", 400),
                                            ("9" * 5000, 400), ("18446744073709551616", 400), ("3", 200), ("4", 409),
                                            ("003", 200), ("3&min_version=4", 400), ("0" * 4400 + "1", 400)])
def test_the_read_api_answers_min_version_with_400_unless_a_whole_number_from_1(services, wanted, status):
    from aiohttp.test_utils import TestClient, TestServer

    from stream_app.store.read_api import read_api

    store, namespace = fresh_store(services)

    async def scenario() -> int:
        try:
            await write_one(store, user_profile(3, 5))
        finally:
            await store.close()
        client = TestClient(TestServer(read_api(services["REDIS_URL"], namespace, 100)))
        await client.start_server()
        try:
            return (await client.get(f"/profiles/u1?min_version={wanted}")).status
        finally:
            await client.close()

    assert asyncio.run(scenario()) == status


def test_a_worker_reads_its_peers_statuses_passing_over_what_is_no_status(services, redis_client):
    """Another app's key under the worker keys made the peers' check raise out of the heartbeat (a review)."""
    from stream_app.store.redis_store import worker_statuses

    store, namespace = fresh_store(services)
    redis_client.set(f"{namespace}worker:stray", b"not json")
    redis_client.set(f"{namespace}worker:list", b"[1, 2]")
    redis_client.set(f"{namespace}worker:other", b'{"app_id": "a"}')  # an object, but no worker's status

    async def scenario() -> list[dict]:
        try:
            await store.publish_worker_status("w1", {"worker_id": "w1"}, ttl_s=15)
            return await store.worker_statuses()
        finally:
            await store.close()

    assert asyncio.run(scenario()) == [{"worker_id": "w1"}]
    redis_client.set(f"{namespace}worker:w2", b'{"worker_id": "w2"}')
    assert worker_statuses(redis_client, namespace) == [{"worker_id": "w2"}]  # `stream-app status` reads alike


def test_a_store_closed_by_a_stopping_worker_takes_the_worker_off_the_live_list(services, redis_client):
    """`stream-app status` listed a cleanly stopped worker as ready, with its partitions, until its key expired."""
    from stream_app.store.redis_store import worker_statuses

    store, namespace = fresh_store(services)

    async def scenario() -> list[int]:
        await store.publish_worker_status("w1", {"worker_id": "w1"}, ttl_s=15)
        listed = [len(worker_statuses(redis_client, namespace))]
        await store.close()
        listed.append(len(worker_statuses(redis_client, namespace)))
        await store.publish_worker_status("w1", {"worker_id": "w1"}, ttl_s=15)  # a last heartbeat after the close
        listed.append(len(worker_statuses(redis_client, namespace)))
        return listed

    assert asyncio.run(scenario()) == [1, 0, 0]


def test_a_hand_edited_number_in_a_profile_hash_is_overwritten_not_a_script_error_that_stalls_the_batch(
        services, redis_client):
    """Lua's tonumber of a non-number is nil, and comparing nil failed the guard: a refusal the worker's
    retry loop repeated for ever. The next write repairs such a hash; a marker's bad time reads as 0."""
    store, namespace = fresh_store(services)
    key = profile_key("u1", namespace)

    async def scenario() -> tuple[int, int, dict[str, bool], int]:
        try:
            redis_client.hset(key, mapping={"profile_version": "", "generation": "x", "profile": "{}"})
            repaired = await write_one(store, user_profile(2, 5))
            redis_client.delete(key)
            redis_client.hset(key, mapping={"erased_at": "garbage"})
            after_marker = await write_one(store, user_profile(3, 5))
            redis_client.hset(key, mapping={"erased_at": "garbage"})
            removed = await store.delete_profiles(["u1"])
            return repaired, after_marker, removed, redis_client.exists(key)
        finally:
            await store.close()

    assert asyncio.run(scenario()) == (1, 1, {"u1": True}, 0)


def test_a_profile_key_the_guard_fails_on_is_skipped_and_logged_like_a_key_of_another_type(services, redis_client,
                                                                                             caplog):
    store, namespace = fresh_store(services)
    profile = Profile(user_id="u1", version=1, event_count=1)
    profile.version = "1x"  # no number for the script: a refusal of this key alone
    other = Profile(user_id="u2", version=1, event_count=1)

    async def scenario() -> int:
        try:
            await write_one(store, Profile(user_id="u1", version=1, event_count=1))
            return await store.write_profiles([(p, b"{}") for p in (profile, other)], now_ms=10)
        finally:
            await store.close()

    assert asyncio.run(scenario()) == 1 and store.refused == 1
    assert "attempt to compare" in caplog.text


@pytest.mark.parametrize("raw, error", [
    (b'null', "not a profile"), (b'[1, 2]', "not a profile"),
    (b'{"user_id": "u1", "version": "3", "event_count": 3}', "'version' is '3'"),
    (b'{"user_id": "u1", "version": 3, "event_count": 3, "generation": "x"}', "'generation' is 'x'"),
    (b'{"user_id": "u1", "version": 3, "event_count": 3, "generation": 1, "last_seen": true}', "'last_seen' is True"),
])
def test_a_stored_profile_whose_head_is_not_of_its_type_is_refused_when_read(raw, error):
    with pytest.raises(ValueError, match=error):
        Profile.from_json(raw)


def test_the_read_api_answers_any_user_id_and_says_which_key_is_not_a_profile(services, redis_client):
    from urllib.parse import quote

    from aiohttp.test_utils import TestClient, TestServer

    from stream_app.store.read_api import read_api

    store, namespace = fresh_store(services)
    odd = "{x}/y z:\u00e9"
    redis_client.set(profile_key("squatter", namespace), b"not a hash")
    redis_client.hset(profile_key("edited", namespace), mapping={"profile": "{", "event_count": "1"})

    async def scenario() -> list[tuple[int, dict]]:
        try:
            await store.write_profiles([(Profile(user_id=odd, version=1, event_count=1), b'{"a": 1}')], now_ms=10)
        finally:
            await store.close()
        client = TestClient(TestServer(read_api(services["REDIS_URL"], namespace, 100)))
        await client.start_server()
        try:
            answers = []
            for user in (odd, "squatter", "edited"):
                response = await client.get(f"/profiles/{quote(user, safe='')}")
                answers.append((response.status, await response.json()))
            return answers
        finally:
            await client.close()

    (odd_status, found), (squatter_status, squatter), (edited_status, edited) = asyncio.run(scenario())
    assert odd_status == 200 and found["profile"] == {"a": 1}
    assert squatter_status == 500 and "WRONGTYPE" in squatter["error"] and "squatter" in squatter["error"]
    assert edited_status == 500 and "not a profile as the workers write it" in edited["error"]


def test_a_batch_write_is_one_round_trip_of_evalsha_and_a_redis_that_lost_the_script_gets_it_again(
        services, redis_client):
    """redis-py's Script objects asked SCRIPT EXISTS before every pipeline: two round trips per batch."""
    store, namespace = fresh_store(services)
    profiles = [Profile(user_id=f"u{i}", version=1, event_count=1) for i in range(3)]

    async def scenario() -> tuple[int, int, dict]:
        try:
            redis_client.script_flush()  # as a restarted Redis: NOSCRIPT
            first = await store.write_profiles([(p, b"{}") for p in profiles], now_ms=10)
            redis_client.config_resetstat()
            for p in profiles:
                p.version = 2
            second = await store.write_profiles([(p, b"{}") for p in profiles], now_ms=20)
            return first, second, redis_client.info("commandstats")
        finally:
            await store.close()

    first, second, stats = asyncio.run(scenario())
    assert (first, second) == (3, 3)
    assert stats["cmdstat_evalsha"]["calls"] == 3 and "cmdstat_script" not in stats


def test_a_profile_begun_anew_after_an_eviction_by_an_older_event_is_written_not_refused_for_a_day(
        services, redis_client):
    """A backfilled event older than the evicted profile's first begins a profile of a lower generation: the
    marker refused it for its 24 hours while the table and the profiles topic held it. A write of that lower
    generation timed before the eviction (an earlier life's late batch) is still refused."""
    store, namespace = fresh_store(services)
    evicted, backfilled = user_profile(10, 1_000), user_profile(1, 400)

    async def scenario() -> list:
        try:
            await write_one(store, evicted)
            await store.delete_profiles(["u1"], evicted={"u1": 1_000}, now_ms=500)
            late = await store.write_profiles([(backfilled, backfilled.to_json(internal=False))], now_ms=450)
            same_batch = await store.write_profiles([(backfilled, backfilled.to_json(internal=False))], now_ms=500)
            return [late, same_batch]
        finally:
            await store.close()

    assert asyncio.run(scenario()) == [0, 1]  # begun in the eviction's own batch (the same time) too
    assert read_profile(redis_client, "u1", namespace)["profile_version"] == 1


def test_repair_skips_a_key_of_another_type_and_restores_the_rest(services, redis_client):
    """repair-redis stopped at such a key and said Redis did not answer."""
    namespace = f"store-test-{uuid.uuid4().hex[:12]}."
    redis_client.set(profile_key("squat", namespace), b"x")
    snapshots = [(user, 1, 1, b"{}", 5) for user in ("squat", "fine")]
    assert restore_profiles(redis_client, namespace, snapshots, 10) == 1
    assert read_profile(redis_client, "fine", namespace)["profile_version"] == 1


def test_the_profile_command_says_which_key_is_not_a_profile_and_reads_a_hand_edited_marker(services, redis_client,
                                                                                           monkeypatch, capsys):
    from stream_app.cli.main import main

    namespace = f"store-test-{uuid.uuid4().hex[:12]}."
    redis_client.set(profile_key("squat", namespace), b"x")
    redis_client.hset(profile_key("edited", namespace), mapping={"erased_at": "garbage"})
    monkeypatch.setenv("REDIS_URL", services["REDIS_URL"])
    monkeypatch.setenv("STREAM_APP_NAMESPACE", namespace)
    assert main(["profile", "squat"]) == 2
    assert "is not a profile" in capsys.readouterr().err
    assert main(["profile", "edited"]) == 2
    err = capsys.readouterr().err
    assert "was erased (request time garbage)" in err and "Traceback" not in err
    redis_client.hset(profile_key("erased", namespace), mapping={"erased_at": "1796150430000"})
    assert main(["profile", "erased"]) == 2  # a time for people (it said "1796150430000 ms")
    assert "was erased (request time 2026-12-01 18:40:30 UTC (1796150430000))" in capsys.readouterr().err
    redis_client.hset(profile_key("erased", namespace), mapping={"erased_at": "9" * 20})  # past any date: as it is
    assert main(["profile", "erased"]) == 2
    err = capsys.readouterr().err
    assert f"was erased (request time {'9' * 20})" in err and "Traceback" not in err


def test_a_late_removal_of_an_earlier_owner_leaves_a_newer_profile_in_place(services, redis_client):
    """A batch that outlived its partitions' revoke delivers its eviction or erasure after the new owner wrote the
    user's newer profile (it saw no tombstone: the old batch's Kafka output comes after Redis). The removal deleted
    whatever the key held, and the marker then kept the refill from writing it back: the read API said 404."""
    store, namespace = fresh_store(services)

    def write(profile: Profile, at: int):
        return store.write_profiles([(profile, profile.to_json(internal=False))], now_ms=at)

    async def scenario() -> list:
        try:
            await write(user_profile(5, 1_000), 100)
            await write(user_profile(1, 9_000), 600)  # the new owner evicted it too; the user began anew
            late_evictions = [await store.delete_profiles(["u1"], evicted={"u1": 1_000}, now_ms=500)]
            await write(user_profile(7, 9_000), 700)
            redis_client.delete(profile_key("u1", namespace))
            await write(user_profile(6, 1_000), 800)  # the new owner applied an event to the same profile
            late_evictions.append(await store.delete_profiles(["u1"], evicted={"u1": 1_000}, now_ms=500))
            kept = read_profile(redis_client, "u1", namespace)["profile_version"]
            await write(user_profile(3, 6_000), 900)  # begun after an erasure at 5,000
            late_erasure = await store.delete_profiles(["u1"], {"u1": 5_000}, now_ms=500)
            after_erasure = read_profile(redis_client, "u1", namespace)["profile_version"]
            on_time = await store.delete_profiles(["u1"], evicted={"u1": 6_000}, now_ms=1_000)
            late = await store.delete_profiles(["u1"], evicted={"u1": 6_000}, now_ms=950)
            return [late_evictions, kept, late_erasure, after_erasure, on_time, late]
        finally:
            await store.close()

    late_evictions, kept, late_erasure, after_erasure, on_time, late = asyncio.run(scenario())
    assert late_evictions == [{"u1": False}, {"u1": False}] and kept == 6
    assert late_erasure == {"u1": False} and after_erasure == 3
    assert on_time == {"u1": True} and late == {"u1": False}
    marker = redis_client.hgetall(profile_key("u1", namespace))  # the later eviction's marker stays
    assert marker == {b"evicted_generation": b"6000", b"evicted_at": b"1000"}


def test_a_redis_that_evicts_keys_when_full_is_reported_once(services, redis_client):
    """Under volatile-lru a full Redis evicted an erased user's marker first; a late write of the erased profile
    then landed."""
    store, _ = fresh_store(services)
    before = redis_client.config_get("maxmemory*")

    async def asked() -> list:
        try:
            return [await store.eviction_risk(), await store.eviction_risk()]
        finally:
            await store.close()

    try:
        redis_client.config_set("maxmemory", 512 * 1024 * 1024)
        redis_client.config_set("maxmemory-policy", "volatile-lru")
        said, again = asyncio.run(asked())
        assert "maxmemory-policy volatile-lru" in said and "noeviction" in said and again is None
        redis_client.config_set("maxmemory-policy", "noeviction")
        store, _ = fresh_store(services)
        assert asyncio.run(asked()) == [None, None]
    finally:
        redis_client.config_set("maxmemory", before["maxmemory"])
        redis_client.config_set("maxmemory-policy", before["maxmemory-policy"])
