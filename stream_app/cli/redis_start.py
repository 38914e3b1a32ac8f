"""A starting worker's Redis, checked before the worker joins its consumer group."""

from __future__ import annotations

import time

from ..config import Settings
from .commands import redis_trouble

#: How long a starting worker waits for its Redis (a broker it cannot reach stops it after as long)
REDIS_START_WAIT_S = 30.0


def require_redis_answers(settings: Settings, wait_s: float = REDIS_START_WAIT_S) -> None:
    """A worker's REDIS_URL must answer before the worker joins the group: a wrong host stalled the partitions it
    took for good, a wrong password stopped it at its first batch (a restart loop, a rebalance each time). Refused
    credentials and TLS fail at once; a Redis not up yet is waited for."""
    import redis

    if not settings.redis_url:
        return
    deadline = time.monotonic() + wait_s
    while True:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
        try:
            client.ping()
            return
        except (redis.AuthenticationError, redis.ResponseError) as exc:  # no wait changes them
            raise redis_trouble(settings, exc) from None
        except redis.RedisError as exc:
            if time.monotonic() >= deadline or "SSL" in str(exc) or "CERTIFICATE" in str(exc):
                raise redis_trouble(settings, exc) from None
            time.sleep(1.0)
        finally:
            client.close()
