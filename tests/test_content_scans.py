"""The content sources' catalogue scans against a float64 scan of every row: queries of any norm, and scans told
ahead (`ContentIndex.expect`) with a vector the index cannot scan among them."""

import numpy as np
import pytest

from stream_app.config import Settings
from stream_app.core.content import ContentIndex, encode_vector, quantised
from stream_app.core.events import Event
from stream_app.core.items import InMemoryItemIndex
from stream_app.core.process import expected_scans, new_profile, process


def float64_scan(index: ContentIndex, vector: np.ndarray, k: int) -> list[str]:
    """Every row summed as the index rescores it, rounded, ties by item_id."""
    scores = index._exact(np.arange(len(index)), np.asarray(vector, np.float64))
    return sorted(index.item_ids, key=lambda i: (-float(scores[index.row_of[i]]), i))[:k]


@pytest.mark.parametrize("scale", [1e-6, 1e-8, 1e-9, 1e-12, 1e-40])
def test_a_query_of_small_norm_lists_what_a_float64_scan_lists(scale):
    """Cosines are rounded to DECIMALS: rows whose float32 scores are apart by more than float32's error may
    round to one cosine and then rank by item_id, so the shortlist must be wider than the rounding too."""
    rng = np.random.default_rng(1)
    ids = [f"i{n:05d}" for n in rng.permutation(3000)]
    index = ContentIndex("v", ids, ids, quantised(rng.standard_normal((3000, 384))))
    query = rng.standard_normal(384)
    query *= scale / np.linalg.norm(query)
    for k in (1, 5, 20):
        assert list(index.nearest(query, k)) == float64_scan(index, query, k)


def test_a_vector_of_another_dimension_told_ahead_fails_no_other_scan():
    """A stored interest vector of another length (a damaged profile) fails its own event's scan; told ahead
    among a round's vectors, it must not fail the scans of the other events of its chunk."""
    rng = np.random.default_rng(3)
    ids = [f"i{n:03d}" for n in range(200)]
    vectors = quantised(rng.standard_normal((200, 16)))
    settings = Settings(ranker=False)
    events = [Event("e0", "good", ids[5], "click", 1000), Event("e1", "bad", "unknown-item", "click", 2000)]

    def run(told: bool) -> list:
        index = ContentIndex("v", ids, ids, vectors)
        damaged = new_profile("bad", settings)
        damaged.content_interest = {"v": encode_vector(np.full(8, 8 ** -0.5)), "mass": 1.0, "ts": 0, "model": "v"}
        profiles, items, found = {"bad": damaged}, InMemoryItemIndex(settings), []
        if told:
            index.expect(expected_scans(events, profiles.get, index, settings))
        for event in events:
            profile = profiles.setdefault(event.user_id, new_profile(event.user_id, settings))
            try:
                outcome = process(profile, event, items, settings, 0, content=index)
                found.append([item["item_id"] for item in outcome.recommendation["items"]])
            except ValueError:
                found.append("failed")
        return found

    alone = run(told=False)
    assert alone[0] != "failed" and alone[1] == "failed"
    assert run(told=True) == alone


@pytest.mark.parametrize("policy", ["purchase", "debounce", "every"])
def test_scans_told_ahead_are_those_of_the_events_that_get_a_recommendation(policy):
    """Under rec_policy purchase or debounce most events get no recommendation and scan nothing: their vectors told
    ahead would fill the chunks' products with scans nobody asks for (a chunk costs about 13 scans alone)."""
    rng = np.random.default_rng(5)
    ids = [f"i{n:03d}" for n in range(400)]
    vectors = quantised(rng.standard_normal((400, 16)))
    settings = Settings(ranker=False, rec_policy=policy, rec_debounce_ms=600_000)
    kinds = ["browse", "click", "click", "click", "purchase"]
    events = [Event(f"e{n}", f"u{n % 5}", ids[n], kinds[n % 5], 60_000 * n) for n in range(200)]  # items apart

    def run(told: bool) -> tuple[list, int, int]:
        index = ContentIndex("v", ids, ids, vectors)
        items, profiles, lists = InMemoryItemIndex(settings), {}, []
        expected = expected_scans(events, profiles.get, index, settings)
        if told:
            index.expect(expected)
        for event in events:
            profile = profiles.setdefault(event.user_id, new_profile(event.user_id, settings))
            outcome = process(profile, event, items, settings, 0, content=index)
            lists.append(outcome.recommendation["items"] if outcome.recommendation else None)
        return lists, index.scans, len(expected)

    alone, scans_alone, expected = run(told=False)
    assert run(told=True)[0] == alone
    assert expected == scans_alone  # each vector told is one a recommendation scans with, and no other


def test_similar_items_kept_up_to_date_as_items_are_listed_are_those_a_new_scan_finds():
    """An item's similar items are kept per number of items listed, and brought up to date with those listed since
    (ties of listing times, items listed from the start, an item listed after the time asked, time going back):
    at every time, those a fresh index scanning the whole catalogue finds, with the same cosines."""
    rng = np.random.default_rng(5)
    n = 400
    ids = [f"i{m:03d}" for m in rng.permutation(n)]
    vectors = quantised(rng.standard_normal((n, 24)))
    vectors[7] = vectors[3]  # equal cosines: ties go by item_id
    listed = [None if m < 50 else int(t) for m, t in enumerate(rng.integers(0, 40, n) * 1000)]
    kept = ContentIndex("v", ids, ids, vectors, listed_at=listed)
    times = [*range(0, 41_000, 500), 12_000, 5_000, 39_500, 41_000]
    for now in times:
        for item in (ids[3], ids[120], ids[399]):
            fresh = ContentIndex("v", ids, ids, vectors, listed_at=listed)
            assert kept.similar(item, 10, now) == fresh.similar(item, 10, now), (item, now)
    assert kept.has_similar(ids[3], 10, 41_000) and not kept.has_similar(ids[3], 10, -1)
