"""The catalogue's text vectors, shared by the workers in Redis, so that a starting worker does not embed the
whole catalogue again (at about 550 titles/s on one core, minutes for a large one, every restart, in every worker).

One hash per content model version, `text-vectors:<version>`: `text_hash` (the text under that version) -> the
vector as little-endian float16 bytes. float16 is the precision the content index keeps (`content.quantised` rounds
every vector through it), so an index built from these vectors equals one built by embedding, to the last bit.
A cache, never the truth: a vector that is missing, of another length or not finite is embedded again and written
back, and with Redis unreachable a worker embeds everything, as without it. The hash expires TTL_S after its last
use; the fields of texts no longer in the catalogue stay until then (768 bytes each for a 384-number model).
"""

from __future__ import annotations

from itertools import chain
from typing import Callable, Mapping, Sequence

import numpy as np
import redis.asyncio as aioredis

#: A model's vectors go this long after the last worker read or wrote them (a model no longer served).
TTL_S = 30 * 24 * 3600
#: Fields per HMGET / HSET: one pipeline, in commands of a bounded size.
CHUNK = 1000


def vectors_key(namespace: str, version: str) -> str:
    return f"{namespace}text-vectors:{version}"


class TextVectorStore:
    """Reads and writes the shared vectors of one namespace; `client` gives the worker's Redis client (made on
    first use, on the running event loop)."""

    def __init__(self, client: Callable[[], aioredis.Redis], namespace: str = ""):
        self.client = client
        self.namespace = namespace

    async def fetch(self, version: str, keys: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        """The stored vectors of `keys` (text hashes under `version`) that are `dim` finite numbers, as float32;
        one round trip."""
        if not keys:
            return {}
        name = vectors_key(self.namespace, version)
        pipe = self.client().pipeline(transaction=False)
        for start in range(0, len(keys), CHUNK):
            pipe.hmget(name, list(keys[start:start + CHUNK]))
        pipe.expire(name, TTL_S)
        *chunks, _ = await pipe.execute()
        found: dict[str, np.ndarray] = {}
        for key, raw in zip(keys, chain.from_iterable(chunks)):
            if raw is not None and len(raw) == 2 * dim:
                vector = np.frombuffer(raw, "<f2").astype(np.float32)
                if np.isfinite(vector).all():
                    found[key] = vector
        return found

    async def store(self, version: str, vectors: Mapping[str, np.ndarray]) -> None:
        """Write vectors (text hash under `version` -> vector), one round trip."""
        if not vectors:
            return
        name = vectors_key(self.namespace, version)
        items = list(vectors.items())
        pipe = self.client().pipeline(transaction=False)
        for start in range(0, len(items), CHUNK):
            pipe.hset(name, mapping={key: np.asarray(vector, np.float32).astype("<f2").tobytes()
                                     for key, vector in items[start:start + CHUNK]})
        pipe.expire(name, TTL_S)
        await pipe.execute()
