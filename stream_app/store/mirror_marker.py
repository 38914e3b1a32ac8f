"""Which input partitions' profiles the Redis mirror holds (the workers write them back: stream/redis_refill.py).

A hash holding a random token (set by the first worker to find none) and, per input partition, the token under
which that partition's profiles were written back. Redis emptied (restarted without persistence, failed over to an
empty replica, flushed) loses it with the profiles, so a partition whose entry is not the current token may have
profiles Redis does not hold yet: the read API answers a miss there with 503, not 404.
"""

from __future__ import annotations

import secrets
from typing import Any

#: The marker's key (after the namespace): a hash of "token" and "partition:<n>" -> a token.
MARKER = "mirror-marker"


class MirrorMarker:
    """The marker hash: which input partitions' profiles are in Redis under its current token."""

    def __init__(self, namespace: str):
        self.key = f"{namespace}{MARKER}"

    async def missing(self, client: Any, owned: set[int]) -> tuple[str, set[int]]:
        """(the current token, the `owned` partitions not written back under it); sets a token if none."""
        pipe = client.pipeline(transaction=True)  # MULTI: a flush cannot land between the two
        pipe.hsetnx(self.key, "token", secrets.token_hex(8))
        pipe.hgetall(self.key)
        _, marker = await pipe.execute()
        token = marker.get(b"token")
        if token is None:  # emptied in between all the same: look again at the next heartbeat
            return "", set()
        return token.decode(), {p for p in owned if marker.get(f"partition:{p}".encode()) != token}

    async def done(self, client: Any, token: str, partitions: set[int]) -> None:
        if partitions:
            await client.hset(self.key, mapping={f"partition:{p}": token for p in sorted(partitions)})

    async def written_back(self, client: Any, partition: int) -> bool:
        """Whether Redis holds `partition`'s profiles (read-only: no token is set). False with no marker at all:
        Redis was emptied, or no worker has looked at it yet."""
        token, entry = await client.hmget(self.key, ["token", f"partition:{partition}"])
        return token is not None and entry == token


def not_written_back(marker: dict[bytes, bytes], partitions: int) -> list[int] | None:
    """The input partitions (of `partitions`) the marker hash (HGETALL) does not hold under its token; None without a
    token (Redis emptied, or no worker has looked at it yet)."""
    token = marker.get(b"token")
    if token is None:
        return None
    return [p for p in range(partitions) if marker.get(f"partition:{p}".encode()) != token]
