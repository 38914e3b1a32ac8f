"""The item catalogue in a worker: the `items` topic, embedded by the content model the control topic
announces, as a `ContentIndex` the batch loop reads.

Every worker reads the whole topic (one partition, compacted) from its beginning, outside the
consumer group, and keeps each item's latest text. Whenever the text of some items or the content
model changed, the index is rebuilt off the event loop: texts already embedded by the same model
version come from a cache keyed by `text_hash`, so an item is embedded again only when its text or
the model changes; and a starting worker takes the vectors the workers wrote to Redis (store/text_vectors.py)
before it embeds the rest, in shares with the workers that miss the same texts at the same time. The batch loop
takes `feed.index` at the start of a batch; a rebuild swaps it whole, never inside a batch. Records that break schemas/v1/item are counted and skipped here;
`items_check` dead-letters them, once across the workers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

import numpy as np
from redis.exceptions import NoPermissionError, RedisError

from ..config import Settings
from ..contracts import Rejection, Source, check_item
from ..core.content import ContentIndex, build_index, item_text, item_title, term_floor, title_terms, top_terms
from ..serving.text_encoder import TextEncoder, text_hash
from ..store.text_vectors import DONE, TextVectorStore, shares_of
from .transport import from_the_beginning

log = logging.getLogger("stream_app.catalogue")
#: How often a worker looks for the vectors of the shares other workers are embedding.
WAIT_S = 0.25


class CachedEmbedder:
    """A text encoder that embeds each text once per model version; `share`: keep what it embeds for the workers'
    shared store (`fresh`) until it is given."""

    def __init__(self, share: bool = False) -> None:
        self.vectors: dict[str, np.ndarray] = {}
        self.embedded = 0  # texts the model gave a vector (cache misses)
        self.shared = 0  # texts whose vectors came from the workers' shared store (TextVectorStore)
        self.share = share
        self.fresh: dict[str, np.ndarray] = {}  # key -> vector embedded here and not yet given to the shared store
        self.failed = 0  # texts the model raised on alone: a zero vector (no text signal), not embedded again
        # text -> its text_hash under the version `keyed_for`: a rebuild hashes only the texts new to it
        self.keys: dict[str, str] = {}
        self.keyed_for: str | None = None

    def key(self, text: str, version: str) -> str:
        if version != self.keyed_for:
            self.keys, self.keyed_for = {}, version
        found = self.keys.get(text)
        if found is None:
            found = self.keys[text] = text_hash(text, version)
        return found

    def embed(self, model: TextEncoder, texts: list[str]) -> np.ndarray:
        keys = [self.key(text, model.vectors_id) for text in texts]
        missing = sorted({key: text for key, text in zip(keys, texts) if key not in self.vectors}.items())
        if missing:
            vectors = self._embed_or_split(model, [text for _, text in missing])
            if self.share:
                self.fresh.update((key, vector) for (key, _), vector in zip(missing, vectors) if vector is not None)
            zero = np.zeros(model.dim, np.float32)
            self.vectors.update((key, zero if vector is None else vector) for (key, _), vector in zip(missing, vectors))
            self.embedded += sum(vector is not None for vector in vectors)  # those it failed on: `failed`
        if not texts:
            return np.zeros((0, model.dim), np.float32)
        return np.stack([self.vectors[key] for key in keys])

    def _embed_or_split(self, model: TextEncoder, texts: list[str]) -> list[np.ndarray | None]:
        """The texts' vectors; where the model raises, halves embedded apart until the texts it fails on are
        found (None: one text must not keep the whole catalogue from its index, nor be embedded again each time;
        it gets a zero vector here, not shared: the failure may pass, as one of memory does)."""
        try:
            return list(model.embed(texts))
        except Exception as exc:
            if len(texts) == 1:
                self.failed += 1
                log.error("the content model %s cannot embed the text %r (%r): the item has no text signal",
                          model.version, texts[0][:80], exc)
                return [None]
            half = len(texts) // 2
            return self._embed_or_split(model, texts[:half]) + self._embed_or_split(model, texts[half:])

    def keep_only(self, version: str, texts: list[str]) -> None:
        """Forget vectors of texts and models no longer in use (bounded memory)."""
        keys = {text: self.key(text, version) for text in texts}
        wanted = set(keys.values())
        self.vectors = {key: vector for key, vector in self.vectors.items() if key in wanted}
        self.fresh = {key: vector for key, vector in self.fresh.items() if key in wanted}
        self.keys = keys


def index_catalogue(model: TextEncoder, texts: dict[str, str], embedder: CachedEmbedder | None = None,
                    listed_at: dict[str, int] | None = None, titles: dict[str, str] | None = None,
                    terms: list[str] | None = None) -> ContentIndex:
    """item_id -> text as a ContentIndex under `model`: how a worker builds it, and `evaluate` too (the
    same texts embedded in the same batches give the same vectors); `listed_at`: item_id -> its listed_at;
    `titles`: item_id -> its title (the reasons name an item by it, not by its description); `terms`: the
    catalogue's terms when the caller keeps them (a feed: equal to `catalogue_terms` of the texts)."""
    embedder = embedder if embedder is not None else CachedEmbedder()
    return build_index(model.version, texts, lambda batch: embedder.embed(model, list(batch)), terms=terms,
                       listed_at=listed_at, titles=titles)


def index_records(model: TextEncoder, records: dict[str, dict[str, Any]]) -> ContentIndex:
    """item_id -> catalogue record (as the items topic holds them) as a ContentIndex: texts and listing times
    taken as a worker's feed takes them, so `evaluate`'s index is the workers'."""
    return index_catalogue(model, {item_id: item_text(record) for item_id, record in records.items()},
                           listed_at={item_id: record["listed_at"] for item_id, record in records.items()
                                      if "listed_at" in record},
                           titles={item_id: item_title(record) for item_id, record in records.items()})


class CatalogueFeed:
    def __init__(self, settings: Settings, shared: TextVectorStore | None = None):
        self.settings = settings
        self.shared = shared  # the vectors the workers embedded, in Redis (None: each embeds its own)
        self.together = True  # claim shares of what several workers miss at once (False: the Redis user may not)
        self.texts: dict[str, str] = {}  # item_id -> the text embedded
        self.titles: dict[str, str] = {}  # item_id -> its title (its name in reasons)
        self.withdrawn: set[str] = set()  # items whose last record is a tombstone
        self.listed_at: dict[str, int] = {}  # item_id -> when it joined the catalogue, for records that say
        self.index: ContentIndex | None = None
        self.embedder = CachedEmbedder(share=shared is not None)
        self.invalid = 0
        self.changed = False
        self.built_for: tuple[str | None, int] = (None, -1)  # (model version, change count) of the index
        self.changes = 0
        # The offset of the last items record read, and of the last one the lists made now see (its text in the
        # index): `stream-app items load --wait` waits for the latter in every worker's status
        self.read_through = -1
        self.indexed_through = -1
        # term -> how many of the texts hold it, kept up to date as texts change: a rebuild after one new title
        # does not read every title again (catalogue_terms over the texts would give the same terms)
        self.term_counts: collections.Counter[str] = collections.Counter()

    def _set_text(self, item_id: str, text: str | None) -> None:
        old = self.texts.pop(item_id, None)
        if old is not None:
            for term in title_terms(old):
                self.term_counts[term] -= 1
                if not self.term_counts[term]:
                    del self.term_counts[term]
        if text is not None:
            self.texts[item_id] = text
            self.term_counts.update(title_terms(text))

    def status(self) -> dict[str, Any]:
        return {"items": len(self.texts), "withdrawn": len(self.withdrawn),
                "indexed": len(self.index) if self.index is not None else 0,
                "model": self.index.version if self.index is not None else None,
                "embedded": self.embedder.embedded, "shared": self.embedder.shared, "failed": self.embedder.failed,
                "invalid": self.invalid, "indexed_through": self.indexed_through}

    def apply(self, key: bytes | None, value: bytes | None, offset: int, timestamp: int | None = None) -> None:
        self.read_through = max(self.read_through, offset)
        if value is None:  # a tombstone: the item left the catalogue, and is never shown (withdrawn)
            item_id = key.decode("utf-8", "replace") if key is not None else None
            self.listed_at.pop(item_id, None)
            if item_id is not None:
                self.withdrawn.add(item_id)
            self.titles.pop(item_id, None)
            if item_id is not None and item_id in self.texts:
                self._set_text(item_id, None)
                self.changes += 1
            return
        record = check_item(value, key, Source(self.settings.topics.items, 0, offset, timestamp))
        if isinstance(record, Rejection):
            self.invalid += 1
            log.error("skipping catalogue record at %s: %s (%s)", record.source, record.reason, record.detail[:200])
            return
        self.withdrawn.discard(record["item_id"])  # listed again
        text, title, item_id = item_text(record), item_title(record), record["item_id"]
        if (self.texts.get(item_id) != text or self.titles.get(item_id) != title
                or self.listed_at.get(item_id) != record.get("listed_at")):
            if self.texts.get(item_id) != text:
                self._set_text(item_id, text)
            self.titles[item_id] = title
            if "listed_at" in record:
                self.listed_at[item_id] = record["listed_at"]
            else:
                self.listed_at.pop(item_id, None)
            self.changes += 1

    async def rebuild(self, model: TextEncoder | None) -> None:
        """Swap in an index of the current texts under `model` (None: no content) if either changed."""
        through = self.read_through  # what the texts below hold
        if model is None:
            self.index, self.built_for, self.indexed_through = None, (None, self.changes), through
            return
        wanted = (model.vectors_id, self.changes)
        if wanted == self.built_for:  # the records read since changed no text: the index holds them
            self.indexed_through = through
            return
        texts = dict(self.texts)
        terms = top_terms(self.term_counts, term_floor(len(texts)))
        started, shared_before = time.monotonic(), self.embedder.shared
        if self.shared is not None:
            await self.take_shared(model, [*texts.values(), *terms])
        if self.shared is not None:  # again: an ACL refusing the hash switched sharing off
            await self.embed_together(model, [*texts.values(), *terms])
        index = await asyncio.get_running_loop().run_in_executor(
            None, index_catalogue, model, texts, self.embedder, dict(self.listed_at), dict(self.titles), terms)
        self.index, self.built_for, self.indexed_through = index, wanted, through
        self.embedder.keep_only(model.vectors_id, [*texts.values(), *index.terms])
        log.warning("content index: %d items, %d terms under %s (%.1fs; %d texts embedded so far; %d vectors "
                    "from the workers' shared store)", len(index), len(index.terms), model.version,
                    time.monotonic() - started, self.embedder.embedded, self.embedder.shared - shared_before)
        if self.shared is not None and self.embedder.fresh:
            await self.give_shared(model.vectors_id)

    async def take_shared(self, model: TextEncoder, texts: list[str]) -> None:
        """Take the vectors of the texts not held here from the shared store, as far as it has them."""
        keys = sorted({self.embedder.key(text, model.vectors_id) for text in texts} - self.embedder.vectors.keys())
        try:
            await self.take(model, keys)
        except (RedisError, OSError) as exc:  # a cache: the texts are embedded here instead
            self.refused(exc, f"could not read the shared text vectors from Redis ({exc!r}): embedding {len(keys)} "
                              "texts here")

    async def take(self, model: TextEncoder, keys: list[str]) -> set[str]:
        """The keys (text hashes) whose vectors the shared store had, now held here."""
        found = await self.shared.fetch(model.vectors_id, keys, model.dim)
        self.embedder.vectors.update(found)
        self.embedder.shared += len(found)
        return set(found)

    async def embed_together(self, model: TextEncoder, texts: list[str]) -> None:
        """Embed the texts missing here with the other workers that miss them (store/text_vectors.py): claim a share,
        embed it, write it, until none is left to claim; then take the others' shares as their workers finish them,
        and claim those whose worker died. Fewer than a share missing: embedded here (`index_catalogue`) at once."""
        embedder, shared, version = self.embedder, self.shared, model.vectors_id
        keyed = {embedder.key(text, version): text for text in texts}
        missing = [key for key in keyed if key not in embedder.vectors]
        if not self.together or len(missing) < shared.share_size:
            return
        shares = shares_of(missing, len(keyed), shared.share_size)
        left = {n: set(share) for n, share in enumerate(shares)}  # share -> its texts still without a vector here
        free = list(left)  # the shares to try to claim
        try:
            while left:
                for n in free:
                    if await shared.claim(version, shares[n]):
                        await self.embed_share(model, keyed, shares[n], left.pop(n))
                if not left:
                    break
                await asyncio.sleep(WAIT_S)  # the other shares are being embedded elsewhere
                order = list(left)
                states = await shared.claims(version, [shares[n] for n in order])  # done: its vectors were written
                done = [n for n, state in zip(order, states) if state == DONE]
                if done:  # what a done share still misses, its worker failed on: `index_catalogue` embeds it here
                    await self.take(model, sorted(key for n in done for key in left.pop(n)))
                free = [n for n, state in zip(order, states) if state is None]  # never claimed, or given back
        except NoPermissionError as exc:  # the vectors' hash may be allowed without the claims: it stays in use
            self.together = False
            log.warning("the Redis user may not claim shares of the catalogue to embed (%r): each worker embeds the "
                        "texts it misses", exc)
        except (RedisError, OSError) as exc:
            log.warning("could not embed the catalogue with the other workers (%r): embedding the rest here", exc)

    async def embed_share(self, model: TextEncoder, keyed: dict[str, str], share: list[str], keys: set[str]) -> None:
        """Embed a share claimed here (what another worker wrote of it taken instead), write it and mark it done; given
        back when that fails or the worker stops meanwhile, for the others to claim at once."""
        renewing = asyncio.ensure_future(self.keep_claim(model.vectors_id, share))
        try:
            try:
                keys = keys - await self.take(model, sorted(keys))  # a done share whose claim expired, or worker died
                await asyncio.get_running_loop().run_in_executor(None, self.embedder.embed, model,
                                                                 [keyed[key] for key in sorted(keys)])
                fresh = self.embedder.fresh
                await self.shared.store(model.vectors_id, {key: fresh.pop(key) for key in keys if key in fresh})
            finally:
                renewing.cancel()
                await asyncio.wait([renewing])  # ended before the claim is marked done or given back
            await self.shared.done(model.vectors_id, share)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.shared.give_back(model.vectors_id, share), 1.0)
            raise

    async def keep_claim(self, version: str, share: list[str]) -> None:
        """Renew the claim of a share being embedded here, a third of its time to live apart, while it is this
        worker's (a slow embedding, on a busy machine, is not taken for a dead worker's)."""
        while True:
            await asyncio.sleep(self.shared.claim_ttl_ms / 3000)
            try:
                if not await self.shared.renew(version, share):
                    return
            except (RedisError, OSError):  # tried again next time; a claim that lapses: embedded twice at worst
                continue

    async def give_shared(self, version: str) -> None:
        """Write the vectors embedded here to the shared store (once: a failure leaves them to the next worker), and
        prune the vectors of texts no longer in use there."""
        fresh, self.embedder.fresh = self.embedder.fresh, {}
        try:
            await self.shared.store(version, fresh)
            pruned = await self.shared.prune(version, self.embedder.keys.values())
        except (RedisError, OSError) as exc:
            self.refused(exc, f"could not write {len(fresh)} text vectors to Redis for the other workers ({exc!r})")
            return
        if pruned:
            log.warning("removed %d vectors of texts no longer in the catalogue from the shared store", pruned)

    def refused(self, exc: Exception, said: str) -> None:
        """Say why the shared store failed; one an ACL refuses is not asked again (a warning at every rebuild)."""
        if isinstance(exc, NoPermissionError):
            self.shared = None
            self.embedder.share, self.embedder.fresh = False, {}
            said += "; the Redis user may not use these keys (text-vectors:*): each worker embeds on its own from now"
        log.warning(said)

    async def run(self, content_model: Any, ready: asyncio.Event | None = None) -> None:
        """Read the items topic from its beginning, then follow it; keep the index current with
        `content_model()` (the model the control topic announced, or None). `ready` is set once the
        records that existed at start are indexed."""
        settings = self.settings
        async with from_the_beginning(settings, settings.topics.items) as (consumer, tp, end):
            while True:
                batches = await consumer.getmany(tp, timeout_ms=500, max_records=10_000)
                for message in batches.get(tp, []):
                    self.apply(message.key, message.value, message.offset, message.timestamp)
                caught_up = await consumer.position(tp) >= end
                if caught_up:
                    await self.rebuild(content_model())
                    if ready is not None and not ready.is_set():
                        ready.set()
