import asyncio
import uuid

from stream_app.core.profile import Profile
from stream_app.store.redis_store import ProfileStore, RedisStoreConfig


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
