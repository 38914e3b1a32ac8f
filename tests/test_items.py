import math
import random

import pytest

from stream_app.config import Settings
from stream_app.core import decay
from stream_app.core.items import (
    CachedItemIndex,
    InMemoryItemIndex,
    SignalBuffer,
    apply_signals,
    category_key,
    item_key,
    merge_top,
    popular_key,
    trending_key,
)


def test_log_space_sum_equals_the_decayed_sum():
    hl = 1000
    stored = None
    for w, ts in [(1.0, 0), (2.0, 500), (0.5, 3000)]:
        stored = decay.log_add(stored, decay.log_weight(w, ts, hl))
    direct = sum(w * 2 ** (-(4000 - ts) / hl) for w, ts in [(1.0, 0), (2.0, 500), (0.5, 3000)])
    assert decay.value_at(stored, 4000, hl) == pytest.approx(direct)


def test_interaction_signals_are_symmetric_and_aggregated_per_batch():
    buf = SignalBuffer(popularity_half_life_ms=1000, trending_half_life_ms=100)
    buf.add_interaction("b", [("a", 0)], 1.0, 0)
    buf.add_interaction("b", [("a", 0)], 1.0, 0)
    assert set(buf.by_item) == {"a", "b"}
    assert buf.by_item["a"]["pop"] is None  # only the item acted on gains popularity
    assert decay.value_at(buf.by_item["b"]["pop"], 0, 1000) == pytest.approx(2.0)
    assert decay.value_at(buf.by_item["a"]["neighbors"]["b"], 0, 1000) == pytest.approx(2.0)
    assert decay.value_at(buf.by_item["b"]["neighbors"]["a"], 0, 1000) == pytest.approx(2.0)


def test_popularity_counts_each_event_once_whatever_its_type_and_pairs_count_its_weight():
    # popularity predicts the next event, whatever its type; a pair measures how strongly the two go together
    buf = SignalBuffer(popularity_half_life_ms=1000, trending_half_life_ms=100)
    buf.add_interaction("b", [("a", 0)], 6.0, 0)  # an order
    buf.add_interaction("c", [], 0.5, 0)  # a browse
    assert decay.value_at(buf.by_item["b"]["pop"], 0, 1000) == pytest.approx(1.0)
    assert decay.value_at(buf.by_item["c"]["pop"], 0, 1000) == pytest.approx(1.0)
    assert decay.value_at(buf.by_item["b"]["trend"], 0, 100) == pytest.approx(1.0)
    assert decay.value_at(buf.by_item["b"]["neighbors"]["a"], 0, 1000) == pytest.approx(6.0)


def test_neighbour_lists_are_bounded():
    settings = Settings(covis_neighbors_max=4)
    buf = SignalBuffer.for_settings(settings)
    for i in range(20):
        buf.add_interaction("hub", [(f"n{i}", 0)], 1.0 + i, 0)
    writes = apply_signals(lambda _: None, (m for _, m in buf.messages()), 0, settings)
    assert len(writes[item_key("hub")]["neighbors"]) <= 5
    assert "n19" in writes[item_key("hub")]["neighbors"]


class DictIndex(CachedItemIndex):
    def __init__(self, store, settings, partitions):
        super().__init__(settings, partitions)
        self.store = store

    def load(self, key):
        return self.store.get(key)


def test_per_partition_lists_merge_to_the_exact_global_top():
    rng = random.Random(3)
    settings = Settings(popular_per_partition=20)
    scores = {f"i{k}": rng.uniform(0, 50) for k in range(300)}
    partitions = {p: {} for p in range(4)}
    for item, score in scores.items():
        partitions[int(item[1:]) % 4][item] = {"pop": score, "trend": -score, "neighbors": {}, "ts": 0}
    store = {}
    for p, entries in partitions.items():
        store[popular_key(p)] = merge_top([], entries, "pop", 20)
        store[trending_key(p)] = merge_top([], entries, "trend", 20)
    index = DictIndex(store, settings, partitions=4)
    index.begin_batch()
    best = sorted(scores, key=scores.get, reverse=True)[:20]
    popular = list(index.popular().items())
    assert [item for item, _ in popular] == best
    assert list(index.trending()) == sorted(scores, key=scores.get)[:20]
    assert popular[0][1] == 1.0 and popular[1][1] == pytest.approx(2 ** (scores[best[1]] - scores[best[0]]))


def test_category_tops_hold_each_categorys_most_popular_items():
    settings = Settings(category_items=2)
    index = InMemoryItemIndex(settings)
    buf = SignalBuffer.for_settings(settings)
    for item, events, category in [("s1", 1, "shoes"), ("s2", 3, "shoes"), ("s3", 2, "shoes"), ("g1", 5, "garden")]:
        for _ in range(events):
            buf.add_interaction(item, [], 1.0, 0, category)
    index.apply(m for _, m in buf.messages())
    index.begin_batch()
    assert [item for item, _ in index.category_items("shoes")] == ["s2", "s3"]
    assert [item for item, _ in index.category_items("garden")] == ["g1"]
    assert index.category_items("unknown") == []
    assert index.categories_of(["s1", "g1", "nope"]) == ["shoes", "garden", None]
    assert category_key(0, "shoes") in index.store


def test_trending_forgets_faster_than_popular():
    settings = Settings(popularity_half_life_ms=1000 * 3600, trending_half_life_ms=1000)
    index = InMemoryItemIndex(settings)
    buf = SignalBuffer.for_settings(settings)
    for _ in range(10):
        buf.add_interaction("old-hit", [], 1.0, 0)
    buf.add_interaction("new", [], 1.0, 60_000)  # a minute later: many trending half-lives, few popular ones
    index.apply(m for _, m in buf.messages())
    index.begin_batch()
    assert next(iter(index.popular())) == "old-hit"
    assert next(iter(index.trending())) == "new"


def test_in_memory_index_ranks_neighbours_by_share_of_the_best():
    settings = Settings()
    index = InMemoryItemIndex(settings)
    buf = SignalBuffer.for_settings(settings)
    buf.add_interaction("x", [("a", 0)], 4.0, 0)
    buf.add_interaction("y", [("a", 0)], 1.0, 0)
    index.apply(m for _, m in buf.messages())
    index.begin_batch()
    ranked = list(index.neighbors("a").items())
    assert [i for i, _ in ranked] == ["x", "y"]
    assert ranked[0][1] == 1.0 and ranked[1][1] == pytest.approx(0.25)
    assert index.neighbors("unknown") == {}
    assert math.isclose(next(iter(index.popular().values())), 1.0)


def test_a_co_visit_counts_less_the_longer_apart_the_two_events():
    buf = SignalBuffer(popularity_half_life_ms=10**9, trending_half_life_ms=10**9, covis_gap_half_life_ms=1000)
    buf.add_interaction("b", [("near", 0), ("far", 2000)], 1.0, 0)
    nb = buf.by_item["b"]["neighbors"]
    assert decay.value_at(nb["near"], 0, 10**9) == pytest.approx(1.0)
    assert decay.value_at(nb["far"], 0, 10**9) == pytest.approx(0.25)  # two gap half-lives


def test_after_each_batch_the_in_memory_index_reads_exactly_as_one_derived_afresh_from_its_store():
    """begin_batch drops only what was derived from the keys the batch wrote: every read after it
    (entries' neighbours and followers, categories, category tops and shares, category steps, popular,
    trending, and the per-item columns a ranking gathers: popular and trending shares, category and
    share within it, as items move between categories) equals a fresh index's over the same store,
    through 40 batches and an eviction."""
    settings = Settings(category_items=5, popular_per_partition=8)
    rng = random.Random(11)
    items = [f"i{n}" for n in range(60)]
    categories = [f"c{n}" for n in range(6)]
    index = InMemoryItemIndex(settings)

    def reads(ix: InMemoryItemIndex) -> list:
        return ([ix.neighbors(i) for i in items] + [ix.followers(i) for i in items] + [ix.categories_of(items)]
                + [ix.category_items(c) for c in categories] + [ix.within_category(c) for c in categories]
                + [ix.next_categories(c) for c in categories] + [ix.popular(), ix.trending()])

    def columns(ix: InMemoryItemIndex, item_ids: list[str]) -> list:
        slots = ix.slots(item_ids)
        return list(zip(ix.columns.popular[slots].tolist(), ix.columns.trending[slots].tolist(),
                        [ix.columns.name(code) for code in ix.columns.category[slots].tolist()],
                        ix.columns.within[slots].tolist()))

    for batch in range(40):
        buf = SignalBuffer.for_settings(settings)
        ts = batch * 60_000
        for _ in range(rng.randint(1, 6)):  # a few items change per batch: most caches stay
            item = rng.choice(items[: 10 + batch])
            buf.add_interaction(item, [(rng.choice(items), rng.randint(0, 9_000))], rng.choice([1.0, 3.0]), ts,
                                category=categories[(items.index(item) + batch // 8) % len(categories)])
            buf.add_sequence(item, [rng.choice(items)], ts)
            buf.add_category_step(rng.choice(categories), rng.choice(categories), ts)
        index.apply(m for _, m in buf.messages())
        if batch == 30:
            assert index.evict_idle(10 * 60_000) > 0
        index.begin_batch()
        fresh = InMemoryItemIndex(settings)
        fresh.store = index.store
        fresh.begin_batch()
        assert reads(index) == reads(fresh), batch
        # the columns of items given a slot at any earlier batch (a worker ranks some items, not all)
        held = [item for item in items if item in index.columns.slot]
        assert columns(index, held) == columns(fresh, held), batch
        index.slots(rng.sample(items, 8))


def test_an_items_last_event_time_never_goes_back_when_a_later_signal_is_older():
    from stream_app.core.items import SignalBuffer

    settings = Settings()
    index = InMemoryItemIndex(settings)
    for ts in (5000, 3000):  # a late event, applied in a later epoch (or a later group of the same one)
        buf = SignalBuffer.for_settings(settings)
        buf.add_interaction("x", [], 1.0, ts)
        index.apply(m for _, m in buf.messages())
    assert index.store["i:x"]["ts"] == 5000
    assert index.evict_idle(4000) == 0  # its last event is at 5000: not idle before 4000


def test_a_pair_with_a_negative_gap_counts_no_more_than_the_events_weight():
    from stream_app.core import decay
    from stream_app.core.items import SignalBuffer

    buf = SignalBuffer(popularity_half_life_ms=10**9, trending_half_life_ms=10**9, covis_gap_half_life_ms=1000)
    buf.add_interaction("b", [("later", -2000)], 1.0, 0)  # the other item was seen after this (late) event
    assert decay.value_at(buf.by_item["b"]["neighbors"]["later"], 0, 10**9) == pytest.approx(1.0)


def test_category_state_is_bounded_and_leaves_with_the_last_item_of_its_category():
    """Category names come from the input: the next-category maps grew without bound (20,000 next categories
    made a recommendation after an event of that category take 8.6 ms), and evicting every item of a category left
    its list (empty) and its category steps behind for ever."""
    from stream_app.core.items import SignalBuffer

    settings = Settings()
    index = InMemoryItemIndex(settings)
    buf = SignalBuffer.for_settings(settings)
    for n in range(1_000):  # sessions going from the hub to a new category each
        buf.add_category_step("hub", f"c{n}", 1_000)
    buf.add_interaction("kept", [], 1.0, 5_000, category="hub")
    buf.add_interaction("idle", [], 1.0, 1_000, category="gone")
    buf.add_category_step("gone", "hub", 1_000)
    index.apply(m for _, m in buf.messages())
    assert len(index.store["k:hub"]) <= settings.covis_neighbors_max + settings.covis_neighbors_max // 4
    assert "c:0:gone" in index.store and "k:gone" in index.store
    index.begin_batch()
    for n in range(1_000):  # categories lists met (and items of "gone")
        index.columns.code(f"c{n}")
    index.slots(["idle", "kept"])
    assert index.evict_idle(2_000) == 1
    assert "c:0:gone" not in index.store and "k:gone" not in index.store
    assert set(index.store["k:hub"]) <= {"hub"}  # steps to categories without items left too
    index.begin_batch()
    assert index.next_categories("gone") == {} and index.category_items("hub")
    # nor does the index's coding of categories keep them, at the refresh after an eviction: each list's category
    # tables were as long as every category the input ever named (helper-124: 3,945 of 4,000 codes evicted ones)
    assert index.columns.categories == 0 and index.columns.known("gone") is None
    assert index.columns.name(index.columns.category[index.slots(["kept"])][0]) == "hub"  # coded again when met


def test_an_idle_items_place_in_the_top_lists_goes_to_the_next_best_item_not_to_the_next_one_with_an_event():
    """A review: evicting an idle item took it out of the popular, trending and category lists without refilling
    them, so the next-best items never came back unless they had an event, while weaker ones with events got in."""
    from stream_app.core.items import SignalBuffer

    settings = Settings(popular_per_partition=2, category_items=2)
    index = InMemoryItemIndex(settings)
    buf = SignalBuffer.for_settings(settings)
    for item_id, events, ts in (("idle", 5, 1_000), ("a", 4, 5_000), ("b", 3, 5_000), ("weak", 1, 5_000)):
        for _ in range(events):
            buf.add_interaction(item_id, [], 1.0, ts, category="c")
    index.apply(m for _, m in buf.messages())
    assert [pair[0] for pair in index.store[popular_key(0)]] == ["idle", "a"]
    assert index.evict_idle(2_000) == 1
    for key in (popular_key(0), trending_key(0), category_key(0, "c")):
        assert [pair[0] for pair in index.store[key]] == ["a", "b"], key
    buf = SignalBuffer.for_settings(settings)
    buf.add_interaction("weak", [], 1.0, 6_000, category="c")  # an event of the weakest: no place for it
    index.apply(m for _, m in buf.messages())
    assert [pair[0] for pair in index.store[popular_key(0)]] == ["a", "b"]
