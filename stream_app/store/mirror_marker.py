"""Which input partitions' profiles the Redis mirror holds (the workers write them back: stream/redis_refill.py).

A hash holding a random token (set by the first worker to find none), the input topics' partition count (the
workers', written at each look: `serve` and `status` route a user by it, not by their own settings) and, per input
partition, the token under which that partition's profiles were written back. Redis emptied (restarted without
persistence, failed over to an empty replica, flushed) loses it with the profiles, so a partition whose entry is not
the current token may have profiles Redis does not hold yet: the read API answers a miss there with 503, not 404.
"""

from __future__ import annotations

import secrets
from typing import Any

from ..partitioning import partition_of

#: The marker's key (after the namespace): a hash of "token", "partitions" and "partition:<n>" -> a token.
MARKER = "mirror-marker"


class MirrorMarker:
    """The marker hash: which of the `partitions` input partitions' profiles are in Redis under its current token."""

    def __init__(self, namespace: str, partitions: int):
        self.key = marker_key(namespace)
        self.partitions = partitions

    async def missing(self, client: Any, owned: set[int]) -> tuple[str, set[int]]:
        """(the current token, the `owned` partitions not written back under it); sets a token if none."""
        pipe = client.pipeline(transaction=True)  # MULTI: a flush cannot land between the three
        pipe.hsetnx(self.key, "token", secrets.token_hex(8))
        pipe.hset(self.key, "partitions", self.partitions)
        pipe.hgetall(self.key)
        *_, marker = await pipe.execute()
        token = marker.get(b"token")
        if token is None:  # emptied in between all the same: look again at the next heartbeat
            return "", set()
        return token.decode(), {p for p in owned if marker.get(f"partition:{p}".encode()) != token}

    async def done(self, client: Any, token: str, partitions: set[int]) -> None:
        if partitions:
            await client.hset(self.key, mapping={f"partition:{p}": token for p in sorted(partitions)})


def marker_key(namespace: str) -> str:
    return f"{namespace}{MARKER}"


def holds_user(marker: dict[bytes, bytes], user_id: str) -> bool:
    """Whether the marker hash (HGETALL) says Redis holds the profiles of `user_id`'s input partition. False without a
    token or a partition count (Redis emptied, or no worker has looked at it yet)."""
    current = _current(marker)
    return current is not None and marker.get(f"partition:{partition_of(user_id, current[1])}".encode()) == current[0]


def not_written_back(marker: dict[bytes, bytes]) -> tuple[int, list[int]] | None:
    """(the workers' partition count, the input partitions the marker hash does not hold under its token); None
    without a token or a count (Redis emptied, or no worker has looked at it yet)."""
    current = _current(marker)
    if current is None:
        return None
    token, count = current
    return count, [p for p in range(count) if marker.get(f"partition:{p}".encode()) != token]


def _current(marker: dict[bytes, bytes]) -> tuple[bytes, int] | None:
    """The marker hash's token and the workers' partition count, if it holds both (a count that is not a whole number
    from 1, a hash edited by hand: none, until a worker's next look writes it again)."""
    token, count = marker.get(b"token"), marker.get(b"partitions")
    if token is None or count is None or not (count.isdigit() and len(count) <= 9 and int(count) > 0):
        return None
    return token, int(count)
