"""Redis mirror of the profiles: what online services read (`profile:<user_id>` hashes).

A narrow store: one pipelined, version-guarded write per batch and plain reads. A write carrying a
profile_version not newer than the stored one is skipped inside Redis, so a replayed batch, or an
old owner still flushing after a rebalance, never rolls a profile back.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import orjson
import redis
import redis.asyncio as aioredis

from ..core.profile import Profile
from ..errors import StreamAppError, described

log = logging.getLogger("stream_app.redis_store")


# KEYS[1] = hash; ARGV = profile_version, event_count, updated_at (the writer's batch time), profile JSON,
# generation (0: none), optionally the time compared with an eviction's (default updated_at; `repair-redis`'s is
# before its read of the topic, which can precede the tombstone of an eviction timed, at its batch's start, before
# that read). Newer = a later generation, or the same generation and a higher version. A removed
# user's hash is a marker (MARKER_S) that refuses a late write of the profile removed (a batch that outlived
# its partitions' revoke, a `repair-redis` that read the profile before its tombstone) and gives way to a
# profile begun after: an erased user's holds `erased_at` (the erasure's time: profiles begun at or before it
# are refused); an idle user's `evicted_generation` and `evicted_at` (writes of that generation or an older one
# timed at or before the eviction are refused, an older one's timed before it; a replay that makes the same profile
# again later passes, and a profile begun anew by an event older than the evicted one's first, a backfill, in the
# eviction's batch or after). A stored number that is not one (a key edited by hand) reads as 0, so the write repairs it.
_WRITE_IF_NEWER = """
local stored = redis.call('HMGET', KEYS[1], 'profile_version', 'generation', 'erased_at', 'evicted_generation',
                          'evicted_at')
local gen = tonumber(ARGV[5])
if stored[3] or stored[4] then
  if stored[3] and gen <= (tonumber(stored[3]) or 0) then return 0 end
  local evicted = tonumber(stored[4] or '0') or 0
  local at, evicted_at = tonumber(ARGV[6] or ARGV[3]), tonumber(stored[5] or '0') or 0
  if (gen == evicted and at <= evicted_at) or (gen < evicted and at < evicted_at) then return 0 end
  redis.call('DEL', KEYS[1])
elseif stored[1] then
  local stored_gen = tonumber(stored[2] or '0') or 0
  if gen < stored_gen or (gen == stored_gen and (tonumber(stored[1]) or 0) >= tonumber(ARGV[1])) then return 0 end
end
redis.call('HSET', KEYS[1], 'profile_version', ARGV[1], 'event_count', ARGV[2],
           'updated_at', ARGV[3], 'profile', ARGV[4], 'generation', ARGV[5])
return 1
"""

# KEYS[1] = hash; ARGV = erased_at (ms, 0: not erased), the evicted profile's generation (0: not evicted), the
# removal's batch time (ms), marker lifetime (ms). Leaves the marker (the later of two erasure times, of two
# evictions). A stored profile that is not the one removed stays, with no marker: for an erasure, one begun after
# it; for an eviction, one of a later generation, or of the same written after this batch began (a new owner's,
# when this removal outlived its partitions' revoke and a retry through an outage delivered it late). A key of
# another type (not this project's hash) is deleted. Returns whether the profile removed was there.
_REMOVE = """
local existed, erased_at, evicted = 0, tonumber(ARGV[1]), tonumber(ARGV[2]) or 0
local evicted_gen, evicted_at = ARGV[2], ARGV[3]
if redis.call('TYPE', KEYS[1]).ok == 'hash' then
  local stored = redis.call('HMGET', KEYS[1], 'profile', 'erased_at', 'generation', 'updated_at',
                            'evicted_generation', 'evicted_at')
  if stored[1] then
    local gen, at = tonumber(stored[3] or '0') or 0, tonumber(stored[4] or '0') or 0
    if erased_at > 0 then
      if gen > erased_at then return 0 end
    elseif evicted > 0 and (gen > evicted or (gen == evicted and at > tonumber(ARGV[3]))) then
      return 0
    end
    existed = 1
  end
  erased_at = math.max(erased_at, tonumber(stored[2] or '0') or 0)
  if (tonumber(stored[6] or '0') or 0) > tonumber(ARGV[3]) then evicted_gen, evicted_at = stored[5], stored[6] end
end
redis.call('DEL', KEYS[1])
if erased_at > 0 then redis.call('HSET', KEYS[1], 'erased_at', erased_at) end
if evicted > 0 then redis.call('HSET', KEYS[1], 'evicted_generation', evicted_gen, 'evicted_at', evicted_at) end
if erased_at > 0 or evicted > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return existed
"""

#: A refusal of one key's write, not of the writer: a key of another type; a value the guard's script cannot
#: compare (Lua's "attempt to compare number with nil"), where an ACL or a full server refuses every key.
KEY_FAULTS = ("WRONGTYPE", "attempt to ")

#: How long a removed user's marker refuses late writes of the profile removed: a batch delivering after the
#: revoke of its partitions retries for as long as an outage lasts. It holds times and a generation only.
MARKER_S = 24 * 3600


def profile_key(user_id: str, namespace: str = "") -> str:
    return f"{namespace}profile:{user_id}"


@dataclass(frozen=True)
class RedisStoreConfig:
    url: str
    namespace: str = ""
    socket_timeout_s: float = 5.0


class ProfileStore:
    """Async writer used by workers; the client is created on first use (after the event loop starts)."""

    def __init__(self, config: RedisStoreConfig):
        self.config = config
        self._client: aioredis.Redis | None = None
        self.refused = 0  # profile writes Redis refused for good (logged, skipped)
        self._worker_key: str | bool | None = None  # the status key published (False: closed)
        self.policy_checked = False  # eviction_risk asked

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.Redis.from_url(self.config.url, socket_timeout=self.config.socket_timeout_s)
        return self._client

    async def write_profiles(self, snapshots: Iterable[tuple[Profile, bytes]], now_ms: int) -> int:
        """One round trip for the whole batch: each profile with its public JSON snapshot.
        Returns how many hashes were written (not stale)."""
        snapshots = list(snapshots)
        if not snapshots:
            return 0
        commands = [(profile_key(profile.user_id, self.config.namespace), profile.version, profile.event_count, now_ms,
                     public, profile.generation or 0) for profile, public in snapshots]
        results = await self._run_script(_WRITE_IF_NEWER, commands)
        written, refused = guarded_writes([profile.user_id for profile, _ in snapshots], results, self.config.namespace)
        self.refused += refused
        return written

    async def _run_script(self, script: str, commands: list[tuple[Any, ...]]) -> list[Any]:
        """EVALSHA of `script` per command (its key, then its arguments) in one pipeline: one round trip. (redis-py's
        Script objects ask SCRIPT EXISTS before every pipeline: a second round trip per batch.) A Redis that
        does not know the script (restarted, flushed) answers NOSCRIPT: it is loaded and those commands sent
        again. Results in command order; a command's refusal is its result (raise_on_error=False)."""
        client, sha = self.client, hashlib.sha1(script.encode()).hexdigest()
        pipe = client.pipeline(transaction=False)
        for key, *args in commands:
            pipe.evalsha(sha, 1, key, *args)
        results = await pipe.execute(raise_on_error=False)
        missing = [i for i, result in enumerate(results) if isinstance(result, redis.exceptions.NoScriptError)]
        if missing:
            await client.script_load(script)
            pipe = client.pipeline(transaction=False)
            for i in missing:
                key, *args = commands[i]
                pipe.evalsha(sha, 1, key, *args)
            for i, result in zip(missing, await pipe.execute(raise_on_error=False)):
                results[i] = result
        return results

    async def delete_profiles(self, user_ids: list[str], erased_at: dict[str, int] | None = None,
                              evicted: dict[str, int] | None = None, now_ms: int = 0) -> dict[str, bool]:
        """Delete the users' hashes (idle or erased users the profile table dropped), in one round trip;
        returns whether each held a profile. An erased user's (`erased_at`: user -> the erasure's time) and an
        evicted one's (`evicted`: user -> its profile's generation; `now_ms`: the eviction's time) become a
        marker that refuses late writes of the profile removed (`_REMOVE`)."""
        if not user_ids:
            return {}
        erased_at, evicted = erased_at or {}, evicted or {}
        results = await self._run_script(_REMOVE, [
            (profile_key(user_id, self.config.namespace), erased_at.get(user_id, 0), evicted.get(user_id, 0), now_ms,
             MARKER_S * 1000) for user_id in user_ids])
        for result in results:
            if isinstance(result, Exception):
                raise result  # the caller retries (an outage) or stops
        held: dict[str, bool] = {}
        for user_id, deleted in zip(user_ids, results):  # a user twice (an eviction, then an
            held[user_id] = held.get(user_id, False) or bool(deleted)  # erasure): did either find a profile
        return held

    async def eviction_risk(self) -> str | None:
        """What is wrong with the server's eviction policy for this store, once per store (None: nothing, or
        INFO not allowed by an ACL). Under a `volatile-*` policy a full Redis drops the keys with a TTL first: the
        markers that refuse an erased user's late profile; under `allkeys-*` profiles go silently, and the mirror
        marker still says the mirror is whole, so no worker writes them back."""
        if self.policy_checked:
            return None
        try:
            memory = await self.client.info("memory")
        except redis.ResponseError:
            memory = {}
        self.policy_checked = True  # (a connection error leaves it to the next status)
        policy, limit = memory.get("maxmemory_policy", "noeviction"), int(memory.get("maxmemory", 0) or 0)
        if limit == 0 or policy == "noeviction":
            return None
        return (f"Redis evicts keys when full (maxmemory {limit:,} bytes, maxmemory-policy {policy}): erased users' "
                "markers or profiles would go silently. Run it with maxmemory-policy noeviction (a full Redis then "
                "refuses writes, which the workers retry and report) or without maxmemory")

    async def publish_worker_status(self, worker_id: str, status: dict[str, Any], ttl_s: int) -> None:
        """A short-lived key per worker: what operators (and the demo) read to see who is up."""
        if self._worker_key is False:  # closed: a last heartbeat must not list a stopped worker again
            return
        self._worker_key = worker_key(self.config.namespace, worker_id)
        await self.client.set(self._worker_key, orjson.dumps(status), ex=ttl_s)

    async def worker_statuses(self) -> list[dict[str, Any]]:
        """The live workers' statuses (`worker_statuses`), as a worker reads its peers'; a value under a worker key
        that is no JSON object (another app's key) is passed over."""
        keys = sorted([key async for key in self.client.scan_iter(match=worker_key(self.config.namespace, "*"),
                                                                   count=1000)])
        return _statuses(await self.client.mget(keys) if keys else [])

    async def close(self) -> None:
        """A worker that stops cleanly leaves the list of live workers at once (not when its key expires)."""
        if self._worker_key:
            with contextlib.suppress(redis.RedisError):
                await self.client.delete(self._worker_key)
        self._worker_key = False
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def restore_profiles(client: redis.Redis, namespace: str, snapshots: list[tuple[str, int, int, bytes, int]],
                     as_of_ms: int, evictions_after_ms: int | None = None) -> int:
    """Write public snapshots (user_id, version, event_count, JSON, generation) through the workers' version
    guard, in one round trip; returns how many were newer than what Redis held (`repair-redis`). `as_of_ms`:
    when the snapshots were read (their `updated_at`); an eviction timed after `evictions_after_ms` (default
    `as_of_ms`) refuses them."""
    script = client.register_script(_WRITE_IF_NEWER)
    pipe = client.pipeline(transaction=False)
    for user_id, version, event_count, public, generation in snapshots:
        script(keys=[profile_key(user_id, namespace)], client=pipe,
               args=[version, event_count, as_of_ms, public, generation, evictions_after_ms or as_of_ms])
    if not snapshots:
        return 0
    return guarded_writes([user_id for user_id, *_ in snapshots], pipe.execute(raise_on_error=False), namespace)[0]


def key_fault(exc: Exception) -> bool:
    """Is Redis's refusal one key's fault (KEY_FAULTS), not the writer's or the server's?"""
    return any(mark in str(exc) for mark in KEY_FAULTS)


def guarded_writes(user_ids: list[str], results: list[Any], namespace: str) -> tuple[int, int]:
    """(written, refused) of the version guard's answers to one pipeline of profile writes. A key holding another
    type, or one the guard's script fails on, is logged and skipped, not retried: the profile table holds the
    truth, and one bad key must not stall every user of the partition. Any other refusal is raised (an outage,
    an ACL: the caller retries or stops)."""
    written = refused = 0
    for user_id, result in zip(user_ids, results):
        if isinstance(result, Exception) and not key_fault(result):
            raise result
        if isinstance(result, Exception):
            refused += 1
            log.error("Redis refused the profile of %r (%s): delete the key %s; the user's next event writes it "
                      "again", user_id, result, profile_key(user_id, namespace))
        else:
            written += int(result)
    return written, refused


# KEYS[1] = hash; ARGV[1] = ms: delete a profile (not a removed user's marker, not a key of another type)
# written before then.
_DELETE_IF_PROFILE_BEFORE = """
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
local at = redis.call('HGET', KEYS[1], 'updated_at')
if redis.call('HEXISTS', KEYS[1], 'profile') == 1 and at and (tonumber(at) or 0) < tonumber(ARGV[1]) then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def delete_profiles_before(client: redis.Redis, namespace: str, user_ids: list[str], before_ms: int) -> int:
    """Delete the users' profiles that were written before `before_ms`, in one round trip, keeping an erased
    user's marker (which refuses late writes of the erased profile) and a profile written since (a running
    worker's); returns how many were deleted (`repair-redis`)."""
    script = client.register_script(_DELETE_IF_PROFILE_BEFORE)
    pipe = client.pipeline(transaction=False)
    for user_id in user_ids:
        script(keys=[profile_key(user_id, namespace)], args=[before_ms], client=pipe)
    return sum(int(r) for r in pipe.execute()) if user_ids else 0


def profile_users(client: redis.Redis, namespace: str) -> Iterator[str]:
    """The user ids of every profile key in Redis (SCAN: no long block of the server)."""
    prefix = profile_key("", namespace)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        try:
            yield key.decode("utf-8")[len(prefix):]
        except UnicodeDecodeError:  # not a key of this project (user ids are text): left alone
            log.warning("skipping the Redis key %r: not UTF-8, so not a profile of this project", key)


def worker_key(namespace: str, worker_id: str) -> str:
    return f"{namespace}worker:{worker_id}"


def worker_statuses(client: redis.Redis, namespace: str = "", ttl_s: float | None = None) -> list[dict[str, Any]]:
    """Statuses of the live workers (their keys expire when a worker stops refreshing them). With `ttl_s`, the time
    each key is written with, each status gets `age_s`: how long ago it was written by Redis's own clock (its key's
    time left), not by the worker's, which may be ahead or behind the reader's."""
    keys = sorted(client.scan_iter(match=worker_key(namespace, "*"), count=1000))
    if not keys:
        return []
    if ttl_s is None:
        return _statuses(client.mget(keys))
    pipe = client.pipeline(transaction=False)
    pipe.mget(keys)
    for key in keys:
        pipe.pttl(key)
    values, *left_ms = pipe.execute()
    statuses = []
    for value, left in zip(values, left_ms):
        for status in _statuses([value]):
            statuses.append({**status, "age_s": max(0.0, ttl_s - left / 1000) if left >= 0 else None})
    return statuses


def _statuses(values: list[bytes | None]) -> list[dict[str, Any]]:
    """The values under worker keys that are workers' statuses: one that is no JSON object with a worker_id (another
    app's key) or gone (expired between the scan and the read) is passed over."""
    found = []
    for value in values:
        try:
            status = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            continue
        if isinstance(status, dict) and isinstance(status.get("worker_id"), str):
            found.append(status)
    return found


def read_profile(client: redis.Redis, user_id: str, namespace: str = "") -> dict[str, Any]:
    """The stored hash, decoded (empty when the user is unknown), for tools and tests."""
    return decode_profile(client.hgetall(profile_key(user_id, namespace)))


def decode_profile(raw: dict[bytes, bytes]) -> dict[str, Any]:
    """What `stream-app profile --json` prints and the read API answers: the hash's fields, decoded."""
    if b"profile" not in raw:  # unknown, or an erased user's marker
        return {}
    try:
        return {"event_count": int(raw[b"event_count"]), "profile_version": int(raw[b"profile_version"]),
                "updated_at": int(raw[b"updated_at"]), "profile": orjson.loads(raw[b"profile"])}
    except (KeyError, ValueError) as exc:  # edited by hand, or written by something else
        raise UnreadableProfile(f"not a profile as the workers write it ({described(exc)}): delete the key; the "
                                "user's next event writes it again, or `stream-app repair-redis` does now") from None


def removal(raw: dict[bytes, bytes]) -> dict[str, Any] | None:
    """The eviction or reset a profile-less key's marker records, for a day (`_REMOVE`): {"reason":
    "evicted_or_reset", "at": the removing batch's ms}; None: no such marker (a user never seen, removed over a day
    ago, or erased: that a person asked to be erased is theirs to know, not a reader's, so it is not told)."""
    value = raw.get(b"evicted_at", b"")
    if b"profile" in raw or b"erased_at" in raw or not value.isdigit() or int(value) <= 0:
        return None
    return {"reason": "evicted_or_reset", "at": int(value)}


class UnreadableProfile(StreamAppError, ValueError):
    """A profile key whose fields are not what the workers write."""
