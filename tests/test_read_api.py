import asyncio
import uuid

import redis

from stream_app.core.profile import Profile
from stream_app.partitioning import partition_of
from stream_app.store.mirror_marker import MARKER
from stream_app.store.redis_store import ProfileStore, RedisStoreConfig


def written(redis_url: str, namespace: str, profile: Profile) -> None:
    """`profile` in Redis, as a worker writes it."""
    store = ProfileStore(RedisStoreConfig(redis_url, namespace=namespace))

    async def write() -> None:
        try:
            await store.write_profiles([(profile, profile.to_json(internal=False))], now_ms=10)
        finally:
            await store.close()

    asyncio.run(write())


def mirror_written_back(redis_url: str, namespace: str, partitions: set[int] = set(range(8)), count: int = 8) -> None:
    """Mark `partitions`' profiles (of `count`) as in Redis, as workers do after their first look
    (stream/redis_refill.py)."""
    client = redis.Redis.from_url(redis_url)
    try:
        key = f"{namespace}{MARKER}"
        client.hsetnx(key, "token", "t0")
        client.hset(key, mapping={"partitions": count, **{f"partition:{p}": "t0" for p in partitions}})
    finally:
        client.close()


async def answers_of(redis_url: str, namespace: str, paths: tuple[str, ...]) -> dict[str, tuple[int, dict, str | None]]:
    """Each path's status, JSON body and Retry-After, from a read API over `namespace`."""
    from aiohttp.test_utils import TestClient, TestServer

    from stream_app.store.read_api import read_api

    client = TestClient(TestServer(read_api(redis_url, namespace, 100)))
    await client.start_server()
    try:
        answers = {}
        for path in paths:
            response = await client.get(path)
            answers[path] = (response.status, await response.json(), response.headers.get("Retry-After"))
        return answers
    finally:
        await client.close()


def test_a_burst_of_concurrent_reads_waits_for_a_redis_connection_instead_of_answering_503(services):
    """redis-py's default pool refuses a command past its 100th connection at once (MaxConnectionsError): a
    downstream service sending 300 reads at once got 503 "Redis does not answer" for about half of them, from a
    Redis that answered, while /healthz said 200."""
    from aiohttp import TCPConnector
    from aiohttp.test_utils import TestClient, TestServer

    from stream_app.store.read_api import read_api

    namespace = f"read-api-test-{uuid.uuid4().hex[:12]}."
    store = ProfileStore(RedisStoreConfig(services["REDIS_URL"], namespace=namespace))
    profile = Profile(user_id="u1", version=3, event_count=3, generation=5)

    async def scenario() -> list[int]:
        try:
            await store.write_profiles([(profile, profile.to_json(internal=False))], now_ms=10)
        finally:
            await store.close()
        client = TestClient(TestServer(read_api(services["REDIS_URL"], namespace, 100)),
                            connector=TCPConnector(limit=0))
        await client.start_server()

        async def one(query: str) -> int:
            response = await client.get(f"/profiles/u1{query}")
            await response.read()
            return response.status

        try:  # a third plain reads, two thirds waiting for a version not reached (polling Redis meanwhile)
            return list(await asyncio.gather(*(one("" if i % 3 == 0 else "?min_version=4") for i in range(300))))
        finally:
            await client.close()

    statuses = asyncio.run(scenario())
    assert {status: statuses.count(status) for status in set(statuses)} == {200: 100, 409: 200}


def test_an_empty_user_id_is_answered_400_in_json_like_every_other_answer_of_profiles(services):
    """`GET /profiles/` (a caller that formatted an empty id into the path) got aiohttp's text/plain
    "404: Not Found", which a client parsing the documented JSON answers could not read."""
    from aiohttp.test_utils import TestClient, TestServer

    from stream_app.store.read_api import read_api

    async def scenario(path: str) -> tuple[int, str, dict]:
        client = TestClient(TestServer(read_api(services["REDIS_URL"], "read-api-empty.", 100)))
        await client.start_server()
        try:
            response = await client.get(path)
            return response.status, response.content_type, await response.json(content_type=None)
        finally:
            await client.close()

    for path in ("/profiles/", "/profiles"):  # without the slash too
        status, content_type, body = asyncio.run(scenario(path))
        assert (status, content_type, body["user_id"]) == (400, "application/json", ""), path


def test_an_unknown_parameter_is_400_and_a_version_no_profile_reached_yet_is_409_to_retry(services):
    """`?minversion=5` (a typo) was answered 200 at once: read-your-writes lost, unsaid. A user whose first event was
    just sent, read with min_version, got 404 after the whole wait, as a user that never was; a 409 or 503 did not
    say when to retry."""
    namespace = f"read-api-test-{uuid.uuid4().hex[:12]}."
    store = ProfileStore(RedisStoreConfig(services["REDIS_URL"], namespace=namespace))
    profile = Profile(user_id="u1", version=3, event_count=3, generation=5)

    async def scenario() -> dict[str, tuple[int, dict, str | None]]:
        try:
            await store.write_profiles([(profile, profile.to_json(internal=False))], now_ms=10)
        finally:
            await store.close()
        mirror_written_back(services["REDIS_URL"], namespace)
        return await answers_of(services["REDIS_URL"], namespace, (
            "/profiles/u1?minversion=5", "/profiles/u1?min_version=3&pretty=1", "/profiles/new?min_version=1",
            "/profiles/new", "/profiles/u1?min_version=4", "/profiles/u1?min_version=3"))

    answers = asyncio.run(scenario())
    status, body, _ = answers["/profiles/u1?minversion=5"]
    assert status == 400 and body["error"] == ("unknown query parameter 'minversion': GET /profiles/{user_id} takes "
                                               "min_version only")
    assert answers["/profiles/u1?min_version=3&pretty=1"][0] == 400
    status, body, retry = answers["/profiles/new?min_version=1"]
    assert (status, body["profile_version"], body["min_version"], retry) == (409, 0, 1, "1")
    assert "Redis holds no profile of the user yet" in body["error"]
    assert answers["/profiles/new"][0] == 404  # no version asked: no such profile
    assert answers["/profiles/u1?min_version=4"][0::2] == (409, "1")
    assert answers["/profiles/u1?min_version=3"][0] == 200


def test_a_removed_profile_is_a_404_that_says_when_and_why_it_went(services):
    """A service reading a reset or idle-evicted user got the plain 404 of a user that never was, while Redis kept the
    removal's marker for a day; `stream-app profile` already said which. An erased user's stays that plain 404."""
    namespace = f"read-api-test-{uuid.uuid4().hex[:12]}."
    store = ProfileStore(RedisStoreConfig(services["REDIS_URL"], namespace=namespace))
    profiles = [Profile(user_id=user_id, version=3, event_count=3, generation=5) for user_id in ("gone", "idle")]

    async def scenario() -> dict[str, tuple[int, dict, str | None]]:
        try:
            await store.write_profiles([(p, p.to_json(internal=False)) for p in profiles], now_ms=10)
            await store.delete_profiles(["gone"], erased_at={"gone": 1_700_000_000_000}, now_ms=20)
            await store.delete_profiles(["idle"], evicted={"idle": 5}, now_ms=1_700_000_001_000)
        finally:
            await store.close()
        mirror_written_back(services["REDIS_URL"], namespace)
        return await answers_of(services["REDIS_URL"], namespace, (
            "/profiles/gone", "/profiles/idle", "/profiles/never", "/profiles/idle?min_version=4"))

    answers = asyncio.run(scenario())
    status, body, _ = answers["/profiles/idle"]
    assert status == 404 and body["removed"] == {"reason": "evicted_or_reset", "at": 1_700_000_001_000}
    assert "evicted as idle or reset at 2023-11-14" in body["error"]
    status, body, _ = answers["/profiles/never"]
    assert status == 404 and "removed" not in body
    # a security review: that a person asked to be erased is not a reader's to know: as a user never seen
    assert answers["/profiles/gone"][:2] == (404, {**body, "error": body["error"].replace("never", "gone"),
                                                  "user_id": "gone"})
    status, body, _ = answers["/profiles/idle?min_version=4"]
    assert status == 409 and body["removed"]["reason"] == "evicted_or_reset"


def test_the_read_apis_answers_carry_no_redis_address_or_error_text(caplog):
    """A security review: /healthz answered anyone who asked with Redis' own error, which names its address
    ("Error 111 connecting to 10.0.0.5:6379"), and a refused read with the server's text (an ACL user's name). The
    answers say what happened; the read API's log says why."""
    answers = asyncio.run(answers_of("redis://127.0.0.1:1/0", "nowhere.", ("/healthz",)))
    status, body, _ = answers["/healthz"]
    assert status == 503 and body == {"status": "Redis does not answer"}
    assert "127.0.0.1:1" in caplog.text  # the operator still learns where


def test_a_read_refused_by_an_acl_is_answered_without_the_servers_text(services, caplog):
    import redis
    from redis.connection import parse_url

    user = f"reader-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(services["REDIS_URL"])
    admin.acl_setuser(user, enabled=True, passwords=[f"+{user}-pw"], keys=["*"], commands=["+ping", "-hgetall"])
    where = parse_url(services["REDIS_URL"])
    try:
        answers = asyncio.run(answers_of(f"redis://{user}:{user}-pw@{where['host']}:{where['port']}/0", "acl.",
                                         ("/profiles/u1",)))
    finally:
        admin.acl_deluser(user)
        admin.close()
    status, body, retry_after = answers["/profiles/u1"]
    assert status == 503 and body == {"error": "Redis refuses the read: the read API's log says why"}
    assert retry_after is None  # no retry changes an ACL
    assert "no permissions to run the 'hgetall' command" in caplog.text


def test_a_wrong_password_and_a_busy_pool_are_not_said_as_redis_not_answering(services, caplog, monkeypatch):
    """A review: both were "Redis does not answer; retry later": operators looked at a Redis that answered, and
    clients retried a password no retry changes."""
    from aiohttp.test_utils import TestClient, TestServer
    from redis.connection import parse_url

    from stream_app.store import read_api as read_api_module

    where = parse_url(services["REDIS_URL"])
    answers = asyncio.run(answers_of(f"redis://default:not-the-password@{where['host']}:{where['port']}/0", "pw.",
                                     ("/profiles/u1", "/healthz")))
    status, body, retry_after = answers["/profiles/u1"]
    assert (status, body, retry_after) == (503, {"error": "Redis refuses the read API: the read API's log says why"},
                                           None)
    assert answers["/healthz"][:2] == (503, {"status": "Redis refuses the read API"})  # not "does not answer"
    assert "check REDIS_URL's password, user and ACL" in caplog.text

    monkeypatch.setattr(read_api_module, "MAX_CONNECTIONS", 1)
    monkeypatch.setattr(read_api_module, "WAIT_FOR_CONNECTION_S", 0.001)

    mirror_written_back(services["REDIS_URL"], "busy.")

    async def burst() -> list[tuple[int, dict]]:
        client = TestClient(TestServer(read_api_module.read_api(services["REDIS_URL"], "busy.", 100)))
        await client.start_server()

        async def one() -> tuple[int, dict]:
            response = await client.get("/profiles/u1")
            return response.status, await response.json()

        try:
            return list(await asyncio.gather(*(one() for _ in range(60))))
        finally:
            await client.close()

    busy = [body for status, body in asyncio.run(burst()) if status == 503]
    assert busy and all(body == {"error": "the read API is busy; retry later"} for body in busy)
    assert "Redis connections of the read API are busy" in caplog.text and "Redis does not answer" not in caplog.text


def test_a_user_id_with_a_line_break_is_read_like_any_other(services):
    """The schema allows any characters in a user id, but the route matched `.+`, which stops at a line break: a
    user "a\\nb" with a profile in Redis was answered aiohttp's text/plain 404."""
    namespace = f"read-api-test-{uuid.uuid4().hex[:12]}."
    written(services["REDIS_URL"], namespace, Profile(user_id="a\nb", version=2, event_count=2, generation=1))
    status, body, _ = asyncio.run(answers_of(services["REDIS_URL"], namespace, ("/profiles/a%0Ab",)))["/profiles/a%0Ab"]
    assert status == 200 and body["profile_version"] == 2


def test_a_user_missing_from_a_partition_the_workers_have_not_written_back_is_503_not_404(services):
    """While workers wrote the profiles back to a Redis that had lost them, the read API answered 404 "no profile"
    for users who had one (helper-132): a caller took them for new users. A miss is a 404 only in a partition the
    marker says is written back under its current token, the partition by the workers' count in the marker (a
    `serve` with another STREAM_APP_PARTITIONS routed users to entries the workers never write: 503 for good)."""
    namespace = f"read-api-test-{uuid.uuid4().hex[:12]}."
    users = [f"u{i}" for i in range(200)]
    pending = next(u for u in users if partition_of(u, 3) == 2)
    done = next(u for u in users if partition_of(u, 3) != 2 and partition_of(u, 8) == 2)  # 8: serve's default
    paths = (f"/profiles/{pending}", f"/profiles/{done}")

    before = asyncio.run(answers_of(services["REDIS_URL"], namespace, paths))  # no marker: Redis emptied, or new
    mirror_written_back(services["REDIS_URL"], namespace, {0, 1}, count=3)
    during = asyncio.run(answers_of(services["REDIS_URL"], namespace, paths))
    mirror_written_back(services["REDIS_URL"], namespace, {2}, count=3)
    after = asyncio.run(answers_of(services["REDIS_URL"], namespace, paths))

    assert [answer[0] for answer in before.values()] == [503, 503]
    status, body, retry = during[f"/profiles/{pending}"]
    assert (status, retry, body["user_id"]) == (503, "1", pending)
    assert "the workers write the profiles back" in body["error"]
    assert during[f"/profiles/{done}"][0] == 404
    assert [answer[0] for answer in after.values()] == [404, 404]


def test_a_marker_without_the_workers_partition_count_is_not_taken_as_written_back():
    from stream_app.store.mirror_marker import holds_user

    user = "u1"
    entry = f"partition:{partition_of(user, 8)}".encode()
    assert not holds_user({b"token": b"t", entry: b"t"}, user)  # written before workers wrote their count
    assert holds_user({b"token": b"t", b"partitions": b"8", entry: b"t"}, user)
    assert not holds_user({b"token": b"t", b"partitions": b"8", entry: b"older"}, user)
    for count in (b"eight", b"-1", b"0", b"\xd9\xa3", b"9" * 400):  # edited by hand: read as no count, not an error
        assert not holds_user({b"token": b"t", b"partitions": count, entry: b"t"}, user)


def test_a_marker_key_of_another_type_serves_hits_and_names_the_marker_on_a_miss(services):
    """A marker key of another type made every read, hits too, a 500 blaming the user's profile key (helper-140
    #6): a hit needs no marker, and a miss names the marker's key and what to do."""
    namespace = f"read-api-test-{uuid.uuid4().hex[:12]}."
    client = redis.Redis.from_url(services["REDIS_URL"])
    try:
        client.set(f"{namespace}{MARKER}", "not a hash")
        written(services["REDIS_URL"], namespace, Profile("kept", version=2, event_count=2, generation=5))
        answers = asyncio.run(answers_of(services["REDIS_URL"], namespace, ("/profiles/kept", "/profiles/missing")))
        assert answers["/profiles/kept"][0] == 200 and answers["/profiles/kept"][1]["profile_version"] == 2
        status, body, _ = answers["/profiles/missing"]
        assert status == 500 and f"'{namespace}{MARKER}' is not the workers' mirror marker" in body["error"]
        assert "delete that key" in body["error"] and "profile:" not in body["error"]
        client.delete(f"{namespace}{MARKER}")
        client.hset(f"{namespace}{MARKER}", mapping={"token": "t0", "partitions": "many"})
        status, body, retry = asyncio.run(answers_of(services["REDIS_URL"], namespace, ("/profiles/missing",))
                                          )["/profiles/missing"]
        assert (status, retry) == (503, "1") and "not hold this user's input partition yet" in body["error"]
    finally:
        client.close()
