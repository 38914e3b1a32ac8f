"""`stream-app serve`: the profiles over HTTP for the services that look them up, read from the Redis
mirror the workers write.

`GET /profiles/{user_id}` answers what `stream-app profile USER --json` prints (200), 404 for a user
Redis does not know (with `removed`, reason and time, for a day after a reset or an idle eviction; an erased user's
is the plain 404 of a user never seen). `?min_version=N` is read-your-writes: a caller that saw a recommendation of
profile_version N (or wrote the N-th event) waits until Redis holds at least that version, up to
`STREAM_APP_READ_WAIT_MS`, else 409 with the version Redis holds (0: no profile yet) and Retry-After. Any other
query parameter is a 400. A user Redis does not know, in an input partition the workers have not written back
since Redis lost the mirror (mirror_marker.py), is a 503 with Retry-After, not a 404: the profile may be on its
way. `GET /healthz`: 200 while Redis answers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Callable

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from ..config import Settings
from ..errors import described
from ..logs import utc_ms
from .mirror_marker import holds_user, marker_key
from .redis_store import decode_profile, key_fault, profile_key, removal

log = logging.getLogger("stream_app.read_api")

#: How often a `min_version` read looks at Redis again while it waits.
POLL_S = 0.05
CLIENT = web.AppKey("redis", aioredis.Redis)
#: Redis connections one read API holds at most. A request beyond them waits for one (up to WAIT_FOR_CONNECTION_S)
#: instead of failing: redis-py's default pool refuses a command past its 100th connection at once
#: (MaxConnectionsError), which answered a burst of 300 concurrent reads with 161 503s "Redis does not answer".
MAX_CONNECTIONS = 64
WAIT_FOR_CONNECTION_S = 5.0
#: A profile_version: ASCII digits from 1, below 10**18 (`str.isdigit` takes "²" and "٣", and `int` a 5,000-digit
#: number no version reaches); leading zeros are the same number.
VERSION = re.compile(r"0{0,20}[1-9][0-9]{0,17}")


def _json(body: dict, status: int = 200, retry: bool = True) -> web.Response:
    # a version not reached yet, or Redis away: worth asking again in a second (not a refusal no retry changes)
    headers = {"Retry-After": "1"} if status in (409, 503) and retry else None
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


def _why(removed: dict | None) -> str:
    """Why Redis holds no profile of a user whose key keeps a removal's marker (a day)."""
    if removed is None:
        return ""
    return f"; it was evicted as idle or reset at {utc_ms(removed['at'])}, and the user's next event starts a new one"


def _min_version(request: web.Request) -> int | web.Response:
    """The query's `min_version` (0 without one), or the 400 that says what is wrong with the query."""
    if unknown := sorted(set(request.query) - {"min_version"}):  # a misspelt min_version would not wait, unsaid
        return _json({"error": f"unknown query parameter {unknown[0][:40]!r}: GET /profiles/{{user_id}} takes "
                               "min_version only"}, 400)
    if len(request.query.getall("min_version", [])) > 1:  # which one was meant cannot be told
        return _json({"error": "min_version given more than once: give it once"}, 400)
    wanted = request.query.get("min_version")
    if wanted is not None and not VERSION.fullmatch(wanted):
        return _json({"error": f"min_version must be a whole number from 1, not {wanted[:40]!r}"}, 400)
    return int(wanted) if wanted else 0


def _not_written_back(user_id: str) -> web.Response:
    return _json({"error": "Redis does not hold this user's input partition yet (the workers write the profiles back "
                           "after Redis lost them, or none has started); retry later", "user_id": user_id}, 503)


async def _marker_and_profile(client: aioredis.Redis, marker: str, key: str
                              ) -> tuple[dict[bytes, bytes] | ResponseError, dict[bytes, bytes]]:
    """The mirror marker's hash and the profile's, in one round trip, the marker first: a refill that ends between
    the two reads leaves it saying "not yet" (a 503 for a profile just written back), never a 404 for one (no MULTI:
    a read-only ACL may not run it). A marker key of another type is given as its error (a hit is served all the
    same); any other error is raised."""
    mirror, raw = await client.pipeline(False).hgetall(marker).hgetall(key).execute(raise_on_error=False)
    for found in (raw, mirror):
        if isinstance(found, Exception) and not (found is mirror and isinstance(found, ResponseError)
                                                 and key_fault(found)):
            raise found
    return mirror, raw


def _redis_failure(exc: RedisError, user_id: str, namespace: str) -> web.Response:
    """The answer to a profile read Redis failed: the key of another type (500), a refusal or an outage (503)."""
    if isinstance(exc, ResponseError) and key_fault(exc):
        return _not_a_profile(exc, user_id, namespace)
    if isinstance(exc, ResponseError):  # an ACL, a full server, ...
        log.error("Redis refuses a profile read (%s)", described(exc))
        return _json({"error": "Redis refuses the read: the read API's log says why"}, 503, retry=False)
    if isinstance(exc, AuthenticationError):  # a wrong password: no retry changes it, so no Retry-After
        log.error("Redis refuses the read API's connection (%s): check REDIS_URL's password, user and ACL",
                  described(exc))
        return _json({"error": "Redis refuses the read API: the read API's log says why"}, 503, retry=False)
    if isinstance(exc, RedisConnectionError) and "No connection available" in str(exc):  # this pool, not Redis
        log.error("all %d Redis connections of the read API are busy (a read waited %.1f s): run more "
                  "replicas of `stream-app serve`", MAX_CONNECTIONS, WAIT_FOR_CONNECTION_S)
        return _json({"error": "the read API is busy; retry later"}, 503)
    log.error("Redis does not answer a profile read (%s)", described(exc))
    return _json({"error": "Redis does not answer; retry later"}, 503)


def _not_a_profile(exc: Exception, user_id: str, namespace: str) -> web.Response:
    key = profile_key(user_id, namespace)
    log.error("the Redis key %r is not a profile: %s", key, described(exc))
    return _json({"error": f"the Redis key {key!r} is not a profile ({described(exc)}); retrying will not "
                  "change it", "user_id": user_id}, 500)


def _connected(request: web.Request) -> bool:
    """Is the caller still there (a wait for a caller that left polls Redis for nothing)."""
    transport = request.transport
    return transport is not None and not transport.is_closing()


def read_api(redis_url: str, namespace: str, wait_ms: int) -> web.Application:
    marker = marker_key(namespace)
    async def profile(request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        min_version = _min_version(request)
        if isinstance(min_version, web.Response):
            return min_version
        deadline = time.monotonic() + wait_ms / 1000
        client = request.app[CLIENT]
        try:
            if min_version:  # wait on the version field alone, then read the whole profile once
                key = profile_key(user_id, namespace)
                while (int(await client.hget(key, "profile_version") or 0) < min_version
                       and time.monotonic() < deadline and _connected(request)):
                    await asyncio.sleep(POLL_S)
            mirror, raw = await _marker_and_profile(client, marker, profile_key(user_id, namespace))
            stored = decode_profile(raw)
        except RedisError as exc:
            return _redis_failure(exc, user_id, namespace)
        except ValueError as exc:  # the key is not a profile (fields edited)
            return _not_a_profile(exc, user_id, namespace)
        if isinstance(mirror, ResponseError) and not raw:  # a hit needs no marker; a miss cannot be told without it
            log.error("the Redis key %r (the workers' mirror marker) cannot be read: %s", marker, described(mirror))
            return _json({"error": f"the Redis key {marker!r} is not the workers' mirror marker "
                          f"({described(mirror)}): a user Redis does not hold cannot be told from one not written "
                          "back yet; delete that key, and the workers write it again", "user_id": user_id}, 500)
        refilling = not raw and not holds_user(mirror, user_id)
        removed = removal(raw) if not stored else None
        gone = {"removed": removed} if removed else {}
        if refilling and not min_version:  # a 404 would say the user has no profile: it may be on its way back
            return _not_written_back(user_id)
        if not stored and not min_version:
            return _json({"error": f"no profile for user {user_id!r}" + _why(removed), "user_id": user_id, **gone}, 404)
        held = stored["profile_version"] if stored else 0  # with min_version, a user's first event may be on its way
        if held < min_version:
            return _json({"error": f"profile_version {min_version} not reached within {wait_ms} ms"
                                   + ("" if stored else ": Redis holds no profile of the user yet" + _why(removed)),
                          "user_id": user_id, "profile_version": held, "min_version": min_version, **gone}, 409)
        return _json(stored)

    async def no_user(request: web.Request) -> web.Response:
        return _json({"error": "no user id: GET /profiles/{user_id}", "user_id": ""}, 400)

    async def healthz(request: web.Request) -> web.Response:
        try:
            await request.app[CLIENT].ping()
        except RedisError as exc:  # the body goes to anyone who asks: Redis' address and error text to the log only
            refused = isinstance(exc, (AuthenticationError, ResponseError))  # credentials or an ACL: no wait changes it
            log.warning("/healthz: Redis %s (%s)", "refuses the read API (check REDIS_URL's password, user and ACL)"
                        if refused else "does not answer", described(exc))
            return _json({"status": "Redis refuses the read API" if refused else "Redis does not answer"}, 503)
        return _json({"status": "ok"})

    async def connect(app: web.Application) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=MAX_CONNECTIONS,
                                                         timeout=WAIT_FOR_CONNECTION_S, socket_timeout=5,
                                                         socket_connect_timeout=2)
        app[CLIENT] = aioredis.Redis.from_pool(pool)  # closing the client closes its pool

    async def disconnect(app: web.Application) -> None:
        await app[CLIENT].aclose()

    app = web.Application()
    app.on_startup.append(connect)
    app.on_cleanup.append(disconnect)
    app.router.add_get(r"/profiles/{user_id:[\s\S]+}", profile)  # any user id: braces, slashes, line breaks
    for path in ("/profiles/", "/profiles"):  # an empty id: JSON, as every answer of /profiles (not aiohttp's text)
        app.router.add_get(path, no_user)
    app.router.add_get("/healthz", healthz)
    return app


def run_read_api(redis_url: str, settings: Settings, host: str, port: int,
                 listening: Callable[[str], None] = lambda _address: None) -> None:
    """Serve in the foreground until SIGTERM/SIGINT; `listening(address)` once the socket is bound (aiohttp calls its
    `print` then, with a banner naming the bound address: the port taken, with --port 0)."""
    web.run_app(read_api(redis_url, settings.namespace, settings.read_wait_ms), host=host, port=port,
                print=lambda banner: listening(bound_address(banner, f"http://{host}:{port}")), access_log=None)


def bound_address(banner: str, asked: str) -> str:
    """The address aiohttp's start banner names ("======== Running on http://127.0.0.1:41489 ========"), else `asked`."""
    found = re.search(r"Running on (\S+)", banner)
    return found.group(1) if found else asked
