"""Items by what they are: vectors of their text from a pre-trained sentence encoder. Pure numpy.

`ContentIndex` holds one content model's unit vectors for the catalogue: exact nearest neighbours
by dot product (an item's similar items, the items nearest a user's interest vector), and a
vocabulary of catalogue terms embedded the same way, which turns an interest vector into words
("likes: candle holders, lanterns"). Built by the worker from the `items` topic and by `evaluate`
from a catalogue file, both through `build_index`, so both hold the same vectors.

A profile's interest vector (`update_interest`) is the decayed sum of the vectors of the items the
user touched, weighted like affinities; kept as a unit vector and its mass, so only the direction is
stored (float16, base64) and a late event is weighed by its age. `item_text` is the text of an item
that the content model embeds (a catalogue record's title and description).
"""

from __future__ import annotations

import base64
import collections
import math
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

#: Cosine below which two items count as unrelated (MiniLM puts unrelated product titles near 0.1-0.3).
SIMILARITY_FLOOR = 0.3
#: Cosines are computed in float64 and rounded to this many decimals: BLAS sums in an order that
#: depends on its threads, and a last-bit difference must not reorder a list between a worker and
#: `evaluate` (equal cosines then rank by item_id).
DECIMALS = 9
#: Expected vectors scanned together in one matrix product (`ContentIndex.expect`): the product's scores take
#: this many times the catalogue's size in float32 (25 MB at 100,000 items).
EXPECT_CHUNK = 64
_WORD = re.compile(r"[a-z]{3,}")
_STOP = frozenset("the and for with set of in on to by from pack assorted design size large small mini".split())


def item_title(item: dict[str, Any]) -> str:
    """The item's name in its reasons ("similar to <title>"): its title, whitespace runs as one space."""
    return " ".join(item["title"].split())


def item_text(item: dict[str, Any]) -> str:
    """The text embedded for an item: its title, then its description when it has one."""
    title = item_title(item)
    description = " ".join(item.get("description", "").split())
    return f"{title}. {description}" if description else title


def share_of(cosine: np.ndarray | float) -> np.ndarray | float:
    """A cosine as a feature in [0, 1]: 0 at or below the floor, 1 for the same text."""
    return np.clip((np.asarray(cosine) - SIMILARITY_FLOOR) / (1.0 - SIMILARITY_FLOOR), 0.0, 1.0)


class ContentIndex:
    """One content model's vectors of a catalogue (rows unit-norm, float32)."""

    def __init__(self, version: str, item_ids: Sequence[str], titles: Sequence[str], vectors: np.ndarray,
                 terms: Sequence[str] = (), term_vectors: np.ndarray | None = None,
                 listed_at: Sequence[int | None] | None = None):
        self.version = version
        # when each item joined the catalogue (ms; -inf: always there): an item is no candidate of the content
        # sources before it (a log's catalogue of a whole year would show items nobody could buy yet)
        self.listed_at = np.array([-np.inf if t is None else float(t) for t in listed_at] if listed_at is not None
                                  else np.full(len(item_ids), -np.inf), dtype=np.float64)
        self._listing = np.sort(self.listed_at)
        self._by_listing = np.argsort(self.listed_at, kind="stable")  # rows in listing order: those listed, a prefix
        self.item_ids = list(item_ids)
        self.titles = dict(zip(self.item_ids, titles))
        self.row_of = {item_id: row for row, item_id in enumerate(self.item_ids)}
        # float32 (the values are float16-rounded): half the memory of float64 and of the traffic of a scan
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.dim = self.vectors.shape[1] if self.vectors.ndim == 2 else 0
        self._row_norm = float(np.sqrt(np.max(np.sum(np.square(self.vectors, dtype=np.float64), axis=1)))) \
            if self.vectors.size else 0.0
        self.terms = list(terms)
        self.term_vectors = (np.asarray(term_vectors, np.float64) if term_vectors is not None
                             else np.zeros((0, self.dim)))
        #: (item_id, k) -> (how many items were listed, its k similar items among them)
        self._similar: dict[tuple[str, int], tuple[int, dict[str, float]]] = {}
        self._expected: dict[bytes, int] = {}  # a round's vectors to scan (expect) -> their place in it
        self._expected_rows: list[np.ndarray] = []
        self._rough: dict[bytes, np.ndarray] = {}  # the float32 scans of the last chunk of them
        self.scans = 0  # passes over the catalogue's vectors (one per vector alone, one per chunk expected)

    def __len__(self) -> int:
        return len(self.item_ids)

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self.row_of.get(item_id)
        return None if row is None else self.vectors[row].astype(np.float64)

    def _listed(self, now_ms: float) -> int:
        """How many items are listed by `now_ms` (which ones: the first of `_by_listing`)."""
        return int(np.searchsorted(self._listing, now_ms, side="right"))

    def has_similar(self, item_id: str, k: int, now_ms: float = np.inf) -> bool:
        """Are this item's similar items at `now_ms` known without a scan of the catalogue?"""
        known = self._similar.get((item_id, k))
        return known is not None and self._catches_up(known[0], self._listed(now_ms))

    def _catches_up(self, known: int, listed: int) -> bool:
        """Known for `known` listed items, brought up to `listed` by the rows listed since, not a scan: a few of the
        catalogue's (each costs an exact float64 cosine; a scan, a float32 product)."""
        return known <= listed and listed - known <= max(64, len(self.item_ids) // 16)

    def similar(self, item_id: str, k: int, now_ms: float = np.inf) -> dict[str, float]:
        """The k items listed by `now_ms` whose text is nearest this item's (not itself) -> cosine; {} for an
        unknown item. Known for fewer listed items, they are brought up to date with the items listed since
        (a catalogue listed over time would otherwise scan again at every new listing)."""
        listed, known = self._listed(now_ms), self._similar.get((item_id, k))
        if known is not None and known[0] == listed:
            return known[1]
        row = self.row_of.get(item_id)
        if row is None:
            found = {}
        elif known is not None and self._catches_up(known[0], listed):
            found = self._with_listed(row, known[1], self._by_listing[known[0]:listed], k)
        else:
            found = self._nearest(self.vectors[row].astype(np.float64), k, row, now_ms)
        if len(self._similar) > 200_000:
            self._similar.clear()
        self._similar[(item_id, k)] = (listed, found)
        return found

    def _with_listed(self, row: int, found: dict[str, float], new_rows: np.ndarray, k: int) -> dict[str, float]:
        """The k nearest of `found` (the exact top k of the items listed before) and of `new_rows` (listed since):
        the exact top k of them all, as a scan would find it (the same exact cosines, ties on item_id)."""
        new_rows = new_rows[new_rows != row]
        if not len(new_rows) or k <= 0:
            return found
        exact = self._exact(new_rows, self.vectors[row].astype(np.float64))
        # only a row at or above the k-th of the new ones, and of those known (when k are), can be among the k
        floor = np.partition(exact, len(exact) - k)[len(exact) - k] if len(exact) > k else -np.inf
        if len(found) >= k:
            floor = max(floor, min(found.values()))
        kept = exact >= floor
        new_rows, exact = new_rows[kept], exact[kept]
        merged = [*found.items(), *zip([self.item_ids[r] for r in new_rows.tolist()], exact.tolist())]
        merged.sort(key=lambda pair: (-pair[1], pair[0]))
        return dict(merged[:k])

    def nearest(self, vector: np.ndarray, k: int, now_ms: float = np.inf) -> dict[str, float]:
        """The k items listed by `now_ms` nearest a unit vector -> cosine."""
        return self._nearest(np.asarray(vector, np.float64), k, -1, now_ms)

    def expect(self, vectors: Sequence[np.ndarray]) -> None:
        """The vectors the content sources will scan next, in order (a round's interest vectors and items): each
        is scanned, when first asked, with the EXPECT_CHUNK expected after it in one matrix product, which reads the
        catalogue once for all of them (a scan per vector reads it once each). Only the speed depends on this: an
        unexpected vector is scanned alone, and every scan only picks a shortlist that is scored exactly."""
        # a vector of another length (a damaged profile's) fails its own scan, not those it would be stacked with
        self._expected_rows = [row for row in (np.asarray(v, np.float64) for v in vectors) if row.shape == (self.dim,)]
        self._expected = {}
        for place, vector in enumerate(self._expected_rows):
            self._expected.setdefault(vector.tobytes(), place)
        self._rough = {}

    def _rough_scores(self, vector: np.ndarray) -> np.ndarray:
        """Every item's float32 dot product with a vector (a copy: the caller masks it)."""
        key = vector.tobytes()
        found = self._rough.get(key)
        if found is None:
            place = self._expected.get(key)
            self.scans += 1
            if place is None:
                return self.vectors @ vector.astype(np.float32)
            chunk = self._expected_rows[place:place + EXPECT_CHUNK]
            product = np.stack(chunk).astype(np.float32) @ self.vectors.T  # rows: one per vector, contiguous
            self._rough = {row.tobytes(): scores for row, scores in zip(chunk, product)}
            found = self._rough[key]
        return found.copy()

    def cosines(self, item_ids: Sequence[str], *vectors: np.ndarray | None) -> list[np.ndarray | None]:
        """Each item's cosine with each unit vector (0 for items without a vector; None for a vector that is None),
        the items' rows read once for all of them."""
        rows = np.array([self.row_of.get(i, -1) for i in item_ids], dtype=np.int64)
        known = rows >= 0
        matrix = self.vectors[rows[known]].astype(np.float64) if known.any() else None
        out: list[np.ndarray | None] = []
        for vector in vectors:
            if vector is None:
                out.append(None)
                continue
            column = np.zeros(len(rows))
            if matrix is not None:
                column[known] = self._exact_of(matrix, np.asarray(vector, np.float64))
            out.append(column)
        return out

    def _exact(self, rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
        return self._exact_of(self.vectors[rows].astype(np.float64), vector)

    @staticmethod
    def _exact_of(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
        # each row summed on its own in float64 (numpy's pairwise order, not BLAS's): a cosine is the same
        # whichever rows are computed with it, so a shortlist and the feature column agree
        return np.round(np.sum(matrix * vector, axis=1), DECIMALS)

    def _nearest(self, vector: np.ndarray, k: int, exclude: int, now_ms: float) -> dict[str, float]:
        """Exact top k: a float32 scan of the whole catalogue (half the memory traffic of float64) picks a
        shortlist wide enough for its rounding error, which is then scored exactly."""
        if not self.item_ids or k <= 0:
            return {}
        rough = self._rough_scores(vector)
        # the latest listing time decides whether any item is hidden: no pass over the catalogue when none is
        if len(self._listing) and now_ms < self._listing[-1]:
            rough[self.listed_at > now_ms] = -np.inf
        if exclude >= 0:
            rough[exclude] = -np.inf
        k = min(k, int(np.isfinite(rough).sum()))
        if k <= 0:
            return {}
        kth = np.partition(rough, len(rough) - k)[len(rough) - k]
        # a float32 dot product of n terms errs by at most about n * 2**-24 * |row| * |vector| (any summation
        # order); every row whose exact cosine can reach the exact k-th is within twice that of the rough k-th,
        # or within the rounding to DECIMALS (rows that far apart may round to one cosine, then rank by item_id;
        # this also covers float32's absolute error where a tiny query's products underflow)
        error = (self.dim + 2) * 2.0 ** -23 * self._row_norm * _norm(vector)
        rows = np.flatnonzero(rough >= kth - 2 * error - 2 * 10.0 ** -DECIMALS)
        exact = self._exact(rows, vector)
        # ties break on item_id so every worker and `evaluate` list the same items, at the k-th place too
        top = sorted(range(len(rows)), key=lambda n: (-float(exact[n]), self.item_ids[rows[n]]))[:k]
        return {self.item_ids[rows[n]]: float(exact[n]) for n in top}

    @staticmethod
    def _dot(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
        return np.round(matrix @ np.asarray(vector, np.float64), DECIMALS)

    def likes_of(self, state: dict[str, Any] | None) -> list[str]:
        """The terms nearest an interest state's vector (`update_interest`) under this index's model."""
        interest = interest_vector(state, self.version)
        return self.words(interest) if interest is not None else []

    def words(self, vector: np.ndarray, n: int = 5) -> list[str]:
        """The catalogue terms nearest a unit vector, each adding a word the earlier ones lack."""
        if not len(self.terms) or n <= 0:
            return []
        order = np.argsort(-self._dot(self.term_vectors, vector), kind="stable")
        chosen: list[str] = []
        used: set[str] = set()
        for row in order[: 20 * n].tolist():
            words = set(self.terms[row].split())
            if words <= used:
                continue
            chosen.append(self.terms[row])
            used |= words
            if len(chosen) == n:
                break
        return chosen


def title_terms(title: str) -> set[str]:
    """The words and two-word phrases of one title that may name things (colours and filler words left out)."""
    # a phrase is two adjacent words; a number or a filler word between them breaks it
    words = [token if _WORD.fullmatch(token) and token not in _STOP else None
             for token in re.split(r"[^a-z0-9]+", title.lower()) if token]
    return {w for w in words if w} | {f"{a} {b}" for a, b in zip(words, words[1:]) if a and b}


def term_floor(titles: int) -> int:
    """How many titles a term must be in: 5 in a large catalogue, 2 in a small one."""
    return max(2, min(5, titles // 500))


def top_terms(counts: Mapping[str, int], min_items: int = 5, limit: int = 2000) -> list[str]:
    """The terms in at least `min_items` titles (`counts`: term -> titles holding it), most common first, equal
    counts in term order: the same list however the counts were gathered (at once, or kept up to date by a feed)."""
    return sorted((term for term, count in counts.items() if count >= min_items),
                  key=lambda term: (-counts[term], term))[:limit]


def catalogue_terms(titles: Iterable[str], min_items: int = 5, limit: int = 2000) -> list[str]:
    """Words and two-word phrases that name things in a catalogue: in at least `min_items` titles,
    most common first (colours and filler words left out)."""
    counts: collections.Counter[str] = collections.Counter()
    for title in titles:
        counts.update(title_terms(title))
    return top_terms(counts, min_items, limit)


def build_index(version: str, items: dict[str, str], embed: Callable[[Sequence[str]], np.ndarray],
                terms: Sequence[str] | None = None, listed_at: dict[str, int] | None = None,
                titles: dict[str, str] | None = None) -> ContentIndex:
    """item_id -> text, embedded in item_id order (the same rows in every worker and in `evaluate`);
    `listed_at`: item_id -> when it joined the catalogue (ms), for the items that say; `titles`: item_id -> the
    name its reasons give it ("similar to <title>"; by default its text). An item whose text got no vector
    (a zero row: the model failed on it, or it holds no word the tokenizer knows) is left out of the index:
    at cosine 0 with everything, it would list the first items by id as "similar" to it. So is one whose vector
    is not finite (NaN, or past float16's range): a user's interest that took it in would hold a NaN mass, which
    the profile's JSON writes as null, and every later event of the user would fail on the record."""
    ids = sorted(items)
    texts = [items[i] for i in ids]
    vectors = embed(texts) if ids else np.zeros((0, 0), np.float32)
    vectors = quantised(vectors)
    # a term names a group of items: in 5 titles of a large catalogue, in 2 of a small one
    terms = catalogue_terms(texts, min_items=term_floor(len(texts))) if terms is None else list(terms)
    term_vectors = quantised(embed(terms)) if terms else None
    if ids:
        kept = np.flatnonzero(np.any(vectors != 0.0, axis=1) & np.all(np.isfinite(vectors), axis=1))
        if len(kept) < len(ids):
            ids, texts, vectors = [ids[r] for r in kept], [texts[r] for r in kept], vectors[kept]
    listed = [listed_at.get(i) for i in ids] if listed_at else None
    names = [titles.get(i, text) for i, text in zip(ids, texts)] if titles else texts
    return ContentIndex(version, ids, names, vectors, terms, term_vectors, listed)


def quantised(vectors: np.ndarray) -> np.ndarray:
    """Rounded through float16 (the precision a profile keeps its interest vector in) and renormalised."""
    rounded = np.asarray(vectors, np.float32).astype(np.float16).astype(np.float32)
    norms = np.sqrt(np.sum(rounded * rounded, axis=1, keepdims=True))
    return rounded / np.where(norms > 0, norms, 1.0)


# ------------------------------------------------------------------------ the profile's interests

def encode_vector(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype(np.float16).tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float32)


def update_interest(state: dict[str, Any] | None, item_vector: np.ndarray, weight: float, ts: int,
                    half_life_ms: int, version: str) -> dict[str, Any]:
    """The interest state after one event on an item with a vector: {"v": unit vector (float16,
    base64), "mass", "ts" (of the mass), "model"}. Another model's state starts over (other space)."""
    if not state or state.get("model") != version:
        return {"v": encode_vector(item_vector), "mass": weight, "ts": ts, "model": version}
    unit, mass, at = decode_vector(state["v"]), float(state["mass"]), int(state["ts"])
    if ts >= at:
        old, new, at = mass * 2.0 ** (-(ts - at) / half_life_ms), weight, ts
    else:  # a late event counts by its age
        old, new = mass, weight * 2.0 ** (-(at - ts) / half_life_ms)
    summed = old * unit.astype(np.float64) + new * np.asarray(item_vector, np.float64)
    norm = _norm(summed)
    if norm == 0.0:
        return {"v": encode_vector(item_vector), "mass": weight, "ts": ts, "model": version}
    return {"v": encode_vector(summed / norm), "mass": round(norm, 6), "ts": at, "model": version}


def interest_vector(state: dict[str, Any] | None, version: str) -> np.ndarray | None:
    if not state or state.get("model") != version:
        return None
    unit = decode_vector(state["v"]).astype(np.float64)
    norm = _norm(unit)
    return unit / norm if norm > 0 else None


def _norm(vector: np.ndarray) -> float:
    return math.sqrt(float(np.sum(vector * vector)))  # pairwise summation: the same sum on every machine
