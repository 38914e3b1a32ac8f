"""`stream-app profile`: one user's profile as Redis serves it, and, when Redis holds none, why and what to do."""

from __future__ import annotations

import argparse
import time

from ..config import Settings
from ..errors import StreamAppError
from ..logs import utc_ms
from .commands import redis_trouble


def cmd_profile(args: argparse.Namespace) -> int:
    import orjson
    import redis

    from ..store.mirror_marker import holds_user, marker_key
    from ..store.redis_store import decode_profile, key_fault, profile_key
    from ..tools.demo import describe_user

    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.require_redis(), socket_connect_timeout=2)
    held = True  # whether the workers' mirror marker says Redis holds the user's partition (asked on a miss only)
    try:
        raw = client.hgetall(profile_key(args.user_id, settings.namespace))
        if not decode_profile(raw):
            try:
                held = holds_user(client.hgetall(marker_key(settings.namespace)), args.user_id)
            except redis.RedisError:  # a marker it cannot read (another type, an ACL): the other reasons stand
                held = True
            if held:  # written back between the two reads?
                raw = client.hgetall(profile_key(args.user_id, settings.namespace))
    except redis.ResponseError as exc:
        if not key_fault(exc):
            raise redis_trouble(settings, exc) from exc
        raise StreamAppError(f"the Redis key {profile_key(args.user_id, settings.namespace)!r} is not a profile ({exc}): "
                             "delete it; the user's next event writes the profile again") from None
    except redis.RedisError as exc:
        raise redis_trouble(settings, exc) from exc
    finally:
        client.close()
    stored = decode_profile(raw)
    if not stored:
        raise StreamAppError(no_profile(settings, args.user_id, raw, held))
    if args.json:
        print(orjson.dumps(stored, option=orjson.OPT_INDENT_2).decode())
        return 0
    titles = {}
    if args.titles:
        from ..tools.catalogue import titles_on_topic

        recent = (item_id for item_id, _type, _ts in stored["profile"]["recent"])
        titles = titles_on_topic(settings, {*stored["profile"]["item_affinity"], *recent})
    for line in describe_user(stored, None, titles=titles):
        print(line)
    freshness_s = (time.time() * 1000 - stored["updated_at"]) / 1000
    print(f"  written to Redis {freshness_s:.0f}s ago")
    return 0


def no_profile(settings: Settings, user_id: str, raw: dict[bytes, bytes], partition_held: bool = True) -> str:
    """Why Redis holds no profile of the user (`raw`: its key's fields: a removal's marker, for a day;
    `partition_held`: whether the workers' mirror marker says Redis holds the user's input partition) and what to do."""
    from ..tools.erase import reset_time

    if b"erased_at" in raw:
        return (f"user {user_id!r} was erased (request time {utc_ms(raw[b'erased_at'])}): no profile until a new event "
                "of the user")
    marked = raw.get(b"evicted_at")
    erased_at = None if marked is not None else erased_time(settings, user_id)  # a flushed or new Redis: no marker
    reset_at = reset_time(settings, user_id) if erased_at is None else None
    evicted_at = int(marked) if marked is not None and marked.isdigit() else 0
    if reset_at is not None and reset_at >= evicted_at:  # an eviction's marker: a removal after the reset
        return (f"the profile of user {user_id!r} was reset (`stream-app reset-profile`) at {utc_ms(reset_at)}: it fills "
                "again from the user's next events, the first starting a new profile" + ("" if marked else
                " (if the user has had events since, Redis lost that profile: `stream-app repair-redis` rebuilds it)"))
    if marked is not None:
        return (f"the profile of user {user_id!r} was removed, evicted as idle (STREAM_APP_USER_IDLE_MS) or reset "
                "(`stream-app reset-profile`): a new event of the user starts a new profile")
    if erased_at is not None:
        return (f"user {user_id!r} was erased (time {utc_ms(erased_at)}, the erased-users record says) and Redis holds "
                "no profile of the user: a new event of the user starts one (if the user has had events since the "
                "erasure, Redis lost their profile: `stream-app repair-redis` rebuilds it)")
    unasked = "" if settings.kafka_bootstrap_servers else (
        " (whether the user was erased or reset is on Kafka, and KAFKA_BOOTSTRAP_SERVERS is not set: set it to have "
        "the workers' records read)")
    if not partition_held:  # as the read API answers 503 there: the profile may be on its way back
        return (f"no profile for user {user_id!r} in Redis yet: Redis does not hold the profiles of this user's input "
                "partition yet (it was emptied, or no worker has looked at it yet); running workers write them back "
                "within seconds: try again in a moment (with no worker running, `stream-app repair-redis` rebuilds "
                f"them){unasked}")
    return (f"no profile for user {user_id!r} in Redis (namespace {settings.namespace!r}): has a worker applied an "
            f"event of that user? `stream-app repair-redis` rebuilds a flushed Redis{unasked}")


def erased_time(settings: Settings, user_id: str) -> int | None:
    """When the user was erased, by the workers' erased-users record and the requests not yet applied; None if never,
    or if Kafka cannot say (the caller's own answer stands)."""
    from kafka.errors import KafkaError

    from ..tools.redrive import ErasureCheck

    if not settings.kafka_bootstrap_servers:
        return None
    try:
        return ErasureCheck.read(settings).erased_time(user_id)
    except (KafkaError, OSError, StreamAppError):
        return None
