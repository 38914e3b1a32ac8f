import math
import random

import pytest

from stream_app import decay
from stream_app.config import Settings
from stream_app.items import (InMemoryItemIndex, SignalBuffer, apply_signals, merge_partition_popular,
                              merge_popular)


def test_log_space_sum_equals_the_decayed_sum():
    hl = 1000
    stored = None
    for w, ts in [(1.0, 0), (2.0, 500), (0.5, 3000)]:
        stored = decay.log_add(stored, decay.log_weight(w, ts, hl))
    direct = sum(w * 2 ** (-(4000 - ts) / hl) for w, ts in [(1.0, 0), (2.0, 500), (0.5, 3000)])
    assert decay.value_at(stored, 4000, hl) == pytest.approx(direct)


def test_interaction_signals_are_symmetric_and_aggregated_per_batch():
    buf = SignalBuffer(half_life_ms=1000)
    buf.add_interaction("b", ["a"], 1.0, 0)
    buf.add_interaction("b", ["a"], 1.0, 0)
    assert set(buf.by_item) == {"a", "b"}
    assert buf.by_item["a"]["pop"] is None  # only the item acted on gains popularity
    assert decay.value_at(buf.by_item["b"]["pop"], 0, 1000) == pytest.approx(2.0)
    assert decay.value_at(buf.by_item["a"]["nb"]["b"], 0, 1000) == pytest.approx(2.0)
    assert decay.value_at(buf.by_item["b"]["nb"]["a"], 0, 1000) == pytest.approx(2.0)


def test_neighbour_lists_are_bounded():
    settings = Settings(covis_neighbors_max=4)
    buf = SignalBuffer(settings.half_life_ms)
    for i in range(20):
        buf.add_interaction("hub", [f"n{i}"], 1.0 + i, 0)
    changed, _ = apply_signals(lambda _: None, (m for _, m in buf.messages()), [], settings)
    assert len(changed["hub"]["nb"]) <= 5
    assert "n19" in changed["hub"]["nb"]


def test_per_partition_popular_lists_merge_to_the_exact_global_top():
    rng = random.Random(3)
    scores = {f"i{k}": rng.uniform(0, 50) for k in range(300)}
    partitions = {p: {} for p in range(4)}
    for item, score in scores.items():
        partitions[hash(item) % 4][item] = {"pop": score, "nb": {}, "ts": 0}
    lists = [merge_popular([], entries, 20) for entries in partitions.values()]
    expected = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:20]
    assert merge_partition_popular(lists, 20) == expected


def test_in_memory_index_ranks_neighbours_by_share_of_the_best():
    settings = Settings()
    index = InMemoryItemIndex(settings)
    buf = SignalBuffer(settings.half_life_ms)
    buf.add_interaction("x", ["a"], 4.0, 0)
    buf.add_interaction("y", ["a"], 1.0, 0)
    index.apply(buf)
    ranked = index.ranked_neighbors("a")
    assert [i for i, _ in ranked] == ["x", "y"]
    assert ranked[0][1] == 1.0 and ranked[1][1] == pytest.approx(0.25)
    assert index.ranked_neighbors("unknown") == []
    assert math.isclose(index.popular()[0][1], 1.0)
