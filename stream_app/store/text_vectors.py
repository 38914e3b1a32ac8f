"""The catalogue's text vectors, shared by the workers in Redis, so that a starting worker does not embed the
whole catalogue again (at about 550 titles/s on one core, minutes for a large one, every restart, in every worker).

One hash per content model version, `text-vectors:<version>`: `text_hash` (the text under that version) -> the
vector as little-endian float16 bytes. float16 is the precision the content index keeps (`content.quantised` rounds
every vector through it), so an index built from these vectors equals one built by embedding, to the last bit (on
one onnxruntime build: a worker on another takes the vectors the first build gave, as every worker then does).
A cache, never the truth: a vector that is missing, of another length, not finite or all zero (never written: a
text without words gets one, and embeds again in no time) is embedded again and written back; with Redis
unreachable a worker embeds everything, as without it. The hash expires TTL_S after its last use; the vectors of
texts no longer in the catalogue are pruned by a worker that finds more than twice as many as it uses (`prune`).

Workers that need the same texts at once (started together, or a new content model announced to all) split them:
the texts fall in shares by their hash, a worker claims a share (`claim`: a key set if absent to a token of its own,
expiring after `claim_ttl_s` unless its worker renews it while it embeds), embeds it, writes its vectors and marks it
done; the others take those vectors when they appear. A share whose worker was killed is claimed again once its
claim expires; one that fails or stops gives it back (only a claim still its own: one that expired meanwhile may be
another worker's now).
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import redis.asyncio as aioredis

#: A model's vectors go this long after the last worker read or wrote them (a model no longer served).
TTL_S = 30 * 24 * 3600
#: Fields per HMGET / HSET command.
CHUNK = 1000
#: Fields per round trip: a large catalogue is read and written in steps, the event loop free between them (the
#: batch loop runs beside a content model change), not in one reply of its whole size.
ROUND_TRIP = 20_000


#: At most about this many texts per share of a catalogue the workers embed together (a second or two of one core).
SHARE_SIZE = 500
#: A claimed share is claimed again by another worker this long after its claim was last renewed (its worker killed;
#: a worker that fails or stops gives its claim back): its worker renews it a third of this apart while it embeds.
CLAIM_TTL_S = 10
#: What a claim holds once its share's vectors are written (texts the model failed on are not).
DONE = b"done"
#: Renew a claim's expiry, or delete it, only while it holds the token it was claimed with.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_GIVE_BACK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def vectors_key(namespace: str, version: str) -> str:
    return f"{namespace}text-vectors:{version}"


def claim_key(namespace: str, version: str, keys: Sequence[str]) -> str:
    """The claim of a share (its text hashes, sorted): named by them, so that workers missing the same texts claim
    the same share, and a later catalogue's share is never taken for an earlier one."""
    digest = hashlib.blake2b("\n".join(keys).encode(), digest_size=12).hexdigest()
    return f"{namespace}text-vectors:{version}:claim:{digest}"


def shares_of(keys: Iterable[str], catalogue_size: int, share_size: int) -> list[list[str]]:
    """`keys` (text hashes, hex) in shares of about `share_size` of a catalogue of `catalogue_size` texts: a power of
    two shares, by hash, so workers whose catalogues differ by a few texts still split theirs alike."""
    count = 1
    while count * share_size < catalogue_size:
        count *= 2
    shares: list[list[str]] = [[] for _ in range(count)]
    for key in keys:
        shares[int(key[:8], 16) % count].append(key)
    return [sorted(share) for share in shares if share]


def as_field(vector: np.ndarray) -> bytes:
    """A vector as the hash holds it: little-endian float16."""
    return np.asarray(vector, np.float32).astype("<f2").tobytes()


class TextVectorStore:
    """Reads and writes the shared vectors of one namespace; `client` gives the worker's Redis client (made on
    first use, on the running event loop)."""

    def __init__(self, client: Callable[[], aioredis.Redis], namespace: str = "", share_size: int = SHARE_SIZE,
                 claim_ttl_s: float = CLAIM_TTL_S):
        self.client = client
        self.namespace = namespace
        self.share_size = share_size
        self.claim_ttl_ms = int(claim_ttl_s * 1000)
        self.token = b"working:" + os.urandom(8).hex().encode()  # this store's claims: no other worker's

    async def claim(self, version: str, share: Sequence[str]) -> bool:
        """Take a share to embed, unless another worker holds it or did it."""
        return bool(await self.client().set(claim_key(self.namespace, version, share), self.token, nx=True,
                                            px=self.claim_ttl_ms))

    async def renew(self, version: str, share: Sequence[str]) -> bool:
        """Keep a claim of this store's from expiring for another `claim_ttl_s`; False if it is not its own any more."""
        return bool(await self.client().eval(_RENEW, 1, claim_key(self.namespace, version, share), self.token,
                                             self.claim_ttl_ms))

    async def done(self, version: str, share: Sequence[str]) -> None:
        """Its vectors are written: a worker still missing some of them (texts the model failed on) embeds those."""
        await self.client().set(claim_key(self.namespace, version, share), DONE, px=self.claim_ttl_ms)

    async def give_back(self, version: str, share: Sequence[str]) -> None:
        """Free a claim of this store's (one that expired meanwhile and another worker took is left to it)."""
        await self.client().eval(_GIVE_BACK, 1, claim_key(self.namespace, version, share), self.token)

    async def claims(self, version: str, shares: Sequence[Sequence[str]]) -> list[bytes | None]:
        """Each share's claim: None (free: never claimed, given back, or its worker killed), DONE, or a worker's
        token (being embedded)."""
        return await self.client().mget([claim_key(self.namespace, version, share) for share in shares])

    async def fetch(self, version: str, keys: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        """The stored vectors of `keys` (text hashes under `version`) that are `dim` finite numbers, not all zero, as
        float32."""
        name = vectors_key(self.namespace, version)
        found: dict[str, np.ndarray] = {}
        for step in range(0, len(keys), ROUND_TRIP):
            wanted = keys[step:step + ROUND_TRIP]
            pipe = self.client().pipeline(transaction=False)
            for start in range(0, len(wanted), CHUNK):
                pipe.hmget(name, list(wanted[start:start + CHUNK]))
            pipe.expire(name, TTL_S)
            *chunks, _ = await pipe.execute()
            pairs = [(key, raw) for chunk, start in zip(chunks, range(0, len(wanted), CHUNK))
                     for key, raw in zip(wanted[start:start + CHUNK], chunk) if raw is not None and len(raw) == 2 * dim]
            if not pairs:
                continue
            vectors = np.frombuffer(b"".join(raw for _, raw in pairs), "<f2").reshape(len(pairs), dim).astype(np.float32)
            usable = np.isfinite(vectors).all(axis=1) & (vectors != 0).any(axis=1)
            found.update((key, vector) for (key, _), vector, ok in zip(pairs, vectors, usable.tolist()) if ok)
        return found

    async def store(self, version: str, vectors: Mapping[str, np.ndarray]) -> None:
        """Write vectors (text hash under `version` -> vector), all-zero ones left out."""
        name = vectors_key(self.namespace, version)
        items = [(key, vector) for key, vector in vectors.items() if np.any(vector)]
        for step in range(0, len(items), ROUND_TRIP):
            pipe = self.client().pipeline(transaction=False)
            for start in range(step, min(step + ROUND_TRIP, len(items)), CHUNK):
                pipe.hset(name, mapping={key: as_field(vector)
                                         for key, vector in items[start:min(start + CHUNK, step + ROUND_TRIP)]})
            pipe.expire(name, TTL_S)
            await pipe.execute()

    async def prune(self, version: str, used: Iterable[str]) -> int:
        """When the hash holds more than twice the vectors in use (`used`: the text hashes of a catalogue and its
        terms) and a thousand, delete the others (texts replaced or withdrawn); how many."""
        client, name, used = self.client(), vectors_key(self.namespace, version), set(used)
        if await client.hlen(name) <= 2 * len(used) + 1000:
            return 0
        stale = [field async for field, _ in client.hscan_iter(name, count=CHUNK) if field.decode() not in used]
        for start in range(0, len(stale), CHUNK):
            await client.hdel(name, *stale[start:start + CHUNK])
        return len(stale)
