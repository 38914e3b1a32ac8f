"""A starting worker's checks before it joins its consumer group: its Redis, and its partition count."""

from __future__ import annotations

import sys
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
    settings.require_redis()  # a URL redis-py cannot read (no scheme, http://) is said, not a traceback
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


def before_joining(settings: Settings, partitions: int) -> None:
    """`require_redis_answers`, and a word when the input topics' partition count is not STREAM_APP_PARTITIONS: the
    topics' count is used (an operator repartitioning by the setting got no word of it)."""
    if partitions != settings.partitions:
        print(f"warning: the input topics have {partitions} partitions and STREAM_APP_PARTITIONS says "
              f"{settings.partitions}: the topics' count is used. A topic's partitions cannot be changed in place "
              "(users would move between workers with their profiles behind): another count needs new topics, under "
              "another STREAM_APP_NAMESPACE, and the log replayed there", file=sys.stderr)
    require_redis_answers(settings)
