"""The catalogue's text vectors shared by the workers in Redis (store/text_vectors.py): a starting worker embeds only
what no worker embedded before, and its index is the one embedding would give."""

import asyncio
import contextlib
import time
from typing import Awaitable, Callable

import numpy as np
import orjson
import redis.asyncio as aioredis
from test_content import CATALOGUE, BagOfWords

from stream_app.config import Settings
from stream_app.core.content import term_floor, top_terms
from stream_app.serving.text_encoder import text_hash
from stream_app.store.text_vectors import TextVectorStore, claim_key, shares_of, vectors_key
from stream_app.stream.catalogue_feed import CatalogueFeed, index_catalogue


def started_feed(settings: Settings, client: aioredis.Redis | None) -> CatalogueFeed:
    """A worker's feed that has read the catalogue, sharing vectors through `client` (None: none)."""
    shared = TextVectorStore(lambda: client, settings.namespace) if client is not None else None
    feed = CatalogueFeed(settings, shared)
    for offset, (item_id, title) in enumerate(CATALOGUE.items()):
        feed.apply(item_id.encode(), orjson.dumps({"item_id": item_id, "title": title, "schema_version": 1}), offset)
    return feed


def on_a_loop(body: Callable[[aioredis.Redis], Awaitable[None]], client: Callable[[], aioredis.Redis]) -> None:
    """`body(client)` on a new event loop, with an async client made there (as a worker's is) and closed after."""
    async def run() -> None:
        made = client()
        try:
            await body(made)
        finally:
            await made.aclose()

    asyncio.run(run())


def test_a_starting_worker_takes_the_vectors_other_workers_embedded(make_settings, redis_client):
    settings = make_settings()
    name = vectors_key(settings.namespace, "bow-1")

    async def body(client: aioredis.Redis) -> None:
        first, first_model = started_feed(settings, client), BagOfWords("bow-1")
        await first.rebuild(first_model)
        texts = len(CATALOGUE) + len(first.index.terms)
        assert first.embedder.embedded == texts and first.embedder.shared == 0
        assert redis_client.hlen(name) == texts and 0 < redis_client.ttl(name)

        second, second_model = started_feed(settings, client), BagOfWords("bow-1")
        await second.rebuild(second_model)
        assert second_model.calls == [] and second.embedder.embedded == 0 and second.embedder.shared == texts
        # float16 in Redis is what the index keeps: the same index, to the last bit
        assert second.index.item_ids == first.index.item_ids and second.index.terms == first.index.terms
        assert np.array_equal(second.index.vectors, first.index.vectors)
        assert np.array_equal(second.index.term_vectors, first.index.term_vectors)

        # a damaged vector (another length, not finite, all zero) is embedded again and written back
        short, nan, zero = (text_hash(CATALOGUE[item], "bow-1") for item in ("mug-1", "bag-2", "lantern-3"))
        redis_client.hset(name, mapping={short: b"\x00\x3c" * 3, nan: np.full(64, np.nan, "<f2").tobytes(),
                                         zero: bytes(128)})
        third, third_model = started_feed(settings, client), BagOfWords("bow-1")
        await third.rebuild(third_model)
        assert sorted(third_model.calls[0]) == sorted(CATALOGUE[item] for item in ("mug-1", "bag-2", "lantern-3"))
        assert third.embedder.shared == texts - 3
        assert np.array_equal(third.index.vectors, first.index.vectors)
        assert len(redis_client.hget(name, short)) == 2 * 64

        # another model version shares nothing with this one
        other = started_feed(settings, client)
        await other.rebuild(BagOfWords("bow-2"))
        assert other.embedder.shared == 0 and other.embedder.embedded == texts

    on_a_loop(body, lambda: aioredis.Redis.from_url(settings.redis_url))


def test_without_redis_a_worker_embeds_the_catalogue_itself():
    """The store is a cache: Redis unreachable costs the time to embed, never the index."""
    settings = Settings(redis_url="redis://127.0.0.1:1/0")

    async def body(client: aioredis.Redis) -> None:
        feed, model = started_feed(settings, client), BagOfWords("bow-1")
        await feed.rebuild(model)
        assert len(feed.index) == len(CATALOGUE) and feed.embedder.shared == 0
        assert feed.embedder.embedded == len(CATALOGUE) + len(feed.index.terms) and not feed.embedder.fresh

    on_a_loop(body, lambda: aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=1))


class FailsOn(BagOfWords):
    """Raises on any batch holding `text`, as a model that cannot take one title."""

    def __init__(self, text: str):
        super().__init__("bow-1")
        self.text = text

    def embed(self, texts):
        if self.text in texts:
            raise RuntimeError("cannot embed this one")
        return super().embed(texts)


def test_only_vectors_the_model_gave_are_shared_and_the_unused_ones_are_pruned(make_settings, redis_client):
    settings = make_settings()
    name = vectors_key(settings.namespace, "bow-1")

    async def body(client: aioredis.Redis) -> None:
        redis_client.hset(name, mapping={f"{n:032x}": bytes(128) for n in range(1500)})  # texts long gone
        feed = started_feed(settings, client)
        await feed.rebuild(FailsOn(CATALOGUE["mug-2"]))
        assert feed.embedder.failed == 1 and "mug-2" not in feed.index.row_of  # no text signal: left out
        used = set(feed.embedder.keys.values())
        stored = {key.decode() for key in redis_client.hkeys(name)}
        assert text_hash(CATALOGUE["mug-2"], "bow-1") not in stored  # a failure is nobody's vector
        assert stored == used - {text_hash(CATALOGUE["mug-2"], "bow-1")}  # the 1,500 unused ones pruned

    on_a_loop(body, lambda: aioredis.Redis.from_url(settings.redis_url))


def test_a_redis_user_refused_these_keys_stops_asking_and_embeds(make_settings, redis_client, caplog):
    settings = make_settings()
    user = f"limited-{settings.namespace.rstrip('.')}"
    redis_client.acl_setuser(user, enabled=True, passwords=["+secret"], keys=[f"{settings.namespace}profile:*"],
                             commands=["+@all"])
    try:
        where = redis_client.connection_pool.connection_kwargs

        async def body(client: aioredis.Redis) -> None:
            feed, model = started_feed(settings, client), BagOfWords("bow-1")
            await feed.rebuild(model)
            assert len(feed.index) == len(CATALOGUE) and feed.shared is None and not feed.embedder.fresh
            feed.apply(b"mug-1", orjson.dumps({"item_id": "mug-1", "title": "RED SPOTTY JUG", "schema_version": 1}), 50)
            await feed.rebuild(model)  # not asked again

        on_a_loop(body, lambda: aioredis.Redis(host=where["host"], port=where["port"], username=user,
                                               password="secret"))
    finally:
        redis_client.acl_deluser(user)
    refusals = [r.getMessage() for r in caplog.records if "may not use these keys" in r.getMessage()]
    assert len(refusals) == 1, refusals


class Slow(BagOfWords):
    """Takes its time over each batch, as a real model does, so that workers embedding together overlap (or, for
    seconds, so that a worker stops while it embeds)."""

    def __init__(self, version: str, seconds: float = 0.05):
        super().__init__(version)
        self.seconds = seconds

    def embed(self, texts):
        time.sleep(self.seconds)
        return super().embed(texts)


def sharing_feeds(settings: Settings, client: aioredis.Redis, count: int, **store: float) -> list[CatalogueFeed]:
    """`count` workers' feeds that have read the catalogue, sharing vectors in one Redis (`store`: their stores'
    settings)."""
    feeds = [started_feed(settings, None) for _ in range(count)]
    for feed in feeds:
        feed.shared, feed.embedder.share = TextVectorStore(lambda: client, settings.namespace, **store), True
    return feeds


def test_workers_that_need_the_same_texts_at_once_embed_each_once(make_settings, redis_client):
    settings = make_settings()

    async def body(client: aioredis.Redis) -> None:
        first, second = sharing_feeds(settings, client, 2, share_size=2)
        await asyncio.gather(first.rebuild(Slow("bow-1")), second.rebuild(Slow("bow-1")))
        texts = len(CATALOGUE) + len(first.index.terms)
        assert first.embedder.embedded + second.embedder.embedded == texts  # none twice
        assert first.embedder.embedded and second.embedder.embedded  # both took part
        alone = index_catalogue(BagOfWords("bow-1"), CATALOGUE, terms=first.index.terms)  # one worker, no store
        for index in (first.index, second.index):
            assert index.item_ids == alone.item_ids and np.array_equal(index.vectors, alone.vectors)
            assert np.array_equal(index.term_vectors, alone.term_vectors)

    on_a_loop(body, lambda: aioredis.Redis.from_url(settings.redis_url))


def test_a_share_whose_worker_died_is_embedded_after_its_claim_expires(make_settings, redis_client):
    settings = make_settings()

    async def body(client: aioredis.Redis) -> None:
        [feed] = sharing_feeds(settings, client, 1, share_size=2)
        texts = [*CATALOGUE.values(), *top_terms(feed.term_counts, term_floor(len(CATALOGUE)))]
        keys = sorted({text_hash(text, "bow-1") for text in texts})
        dead = shares_of(keys, len(keys), 2)[0]
        redis_client.set(claim_key(settings.namespace, "bow-1", dead), b"working", px=1500)  # and never done
        started = time.monotonic()
        await feed.rebuild(Slow("bow-1"))
        assert 1.5 <= time.monotonic() - started < 10
        assert feed.embedder.embedded == len(texts) and len(feed.index) == len(CATALOGUE)

    on_a_loop(body, lambda: aioredis.Redis.from_url(settings.redis_url))


def test_texts_another_worker_failed_on_are_embedded_here_without_waiting(make_settings, redis_client):
    settings = make_settings()

    async def body(client: aioredis.Redis) -> None:
        failing, working = sharing_feeds(settings, client, 2, share_size=1, claim_ttl_s=30)
        await failing.rebuild(FailsOn(CATALOGUE["mug-2"]))
        assert failing.embedder.failed == 1
        # its share (mug-2's title alone) is done, its vector not written: the next worker misses that share
        assert redis_client.get(claim_key(settings.namespace, "bow-1", [text_hash(CATALOGUE["mug-2"], "bow-1")])) \
            == b"done"
        started = time.monotonic()
        await working.rebuild(Slow("bow-1"))
        assert time.monotonic() - started < 10  # not the 30 s of the failed share's claim
        assert working.embedder.embedded == 1 and "mug-2" in working.index.row_of
        assert np.array_equal(working.index.vectors[working.index.row_of["mug-1"]],
                              failing.index.vectors[failing.index.row_of["mug-1"]])

    on_a_loop(body, lambda: aioredis.Redis.from_url(settings.redis_url))


def test_a_worker_that_stops_while_it_embeds_a_share_gives_its_claim_back(make_settings, redis_client):
    settings = make_settings()

    async def body(client: aioredis.Redis) -> None:
        stopping, taking_over = sharing_feeds(settings, client, 2, share_size=2, claim_ttl_s=30)
        rebuild = asyncio.ensure_future(stopping.rebuild(Slow("bow-1", seconds=2)))  # stopped in its first share
        while not redis_client.keys(f"{settings.namespace}text-vectors:bow-1:claim:*"):
            await asyncio.sleep(0.01)
        rebuild.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rebuild
        started = time.monotonic()
        await taking_over.rebuild(BagOfWords("bow-1"))
        assert time.monotonic() - started < 10  # not the 30 s of the stopped worker's claim
        assert taking_over.embedder.embedded == len(CATALOGUE) + len(taking_over.index.terms)

    on_a_loop(body, lambda: aioredis.Redis.from_url(settings.redis_url))


def test_a_share_embedded_for_longer_than_its_claim_lives_stays_its_workers(make_settings, redis_client):
    """Its worker renews the claim while it embeds: a slow share (a busy machine) is not taken for a dead worker's and
    embedded again."""
    settings = make_settings()

    async def body(client: aioredis.Redis) -> None:
        slow, fast = sharing_feeds(settings, client, 2, share_size=2, claim_ttl_s=0.6)
        first = asyncio.ensure_future(slow.rebuild(Slow("bow-1", seconds=2.0)))  # 2 s a share: over three lives
        while not redis_client.keys(f"{settings.namespace}text-vectors:bow-1:claim:*"):
            await asyncio.sleep(0.01)
        await asyncio.gather(first, fast.rebuild(BagOfWords("bow-1")))
        texts = len(CATALOGUE) + len(fast.index.terms)
        assert slow.embedder.embedded + fast.embedder.embedded == texts  # none twice
        assert slow.embedder.embedded and fast.embedder.embedded

    on_a_loop(body, lambda: aioredis.Redis.from_url(settings.redis_url))


def test_a_worker_gives_back_and_renews_only_a_claim_of_its_own(make_settings, redis_client):
    settings = make_settings()
    key = claim_key(settings.namespace, "bow-1", ["a", "b"])

    async def body(client: aioredis.Redis) -> None:
        late = TextVectorStore(lambda: client, settings.namespace, claim_ttl_s=0.2)
        other = TextVectorStore(lambda: client, settings.namespace)
        assert await late.claim("bow-1", ["a", "b"]) and not await other.claim("bow-1", ["a", "b"])
        await asyncio.sleep(0.4)  # the late worker's claim lapsed: another takes the share
        assert await other.claim("bow-1", ["a", "b"])
        await late.give_back("bow-1", ["a", "b"])
        assert not await late.renew("bow-1", ["a", "b"])
        assert redis_client.get(key) == other.token and redis_client.pttl(key) > 5_000
        assert await other.renew("bow-1", ["a", "b"])
        await other.give_back("bow-1", ["a", "b"])
        assert redis_client.get(key) is None

    on_a_loop(body, lambda: aioredis.Redis.from_url(settings.redis_url))
