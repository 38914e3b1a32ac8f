"""The content sources' catalogue scans against a float64 scan of every row."""

import numpy as np
import pytest

from stream_app.core.content import ContentIndex, quantised


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
