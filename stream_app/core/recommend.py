"""Recommendations: candidates from several sources, each with features, ranked. Pure.

Sources (each named in the item's `reasons`): co-visitation of the user's recent items, the items
that most often came next after the session's recent items (sequential rules), the user's own
items by recency (the positions users of the partition come back to, learned: learners.RecencyPositions)
and decayed affinity ("viewed before"), the most popular items of the current
event's category, of the categories that most often come next after it in sessions (category-level
sequential rules, far denser than the item-level ones), of the session's most common categories and
of the user's strongest categories, popular, trending, and, with a sequence
encoder live, the nearest items to the user's embedding ("similar to your recent items"), and with
a content model live, the items whose text is nearest the item just seen ("similar to <its title>")
and the user's interest vector ("like what you look at"), new items included. Every
candidate gets the feature row `FEATURES`; the list is ranked by the partition's online ranker once
it is warm (learners/ranker.py), else by the prior: a fixed weighted sum of the source scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import AbstractSet, Any, Collection, Mapping, Protocol, Sequence

import numpy as np

from ..config import Settings
from . import decay
from .content import SIMILARITY_FLOOR, interest_vector, share_of
from .events import Event, event_kind
from .feature_rows import FEATURES, N_FEATURES
from .item_columns import NO_CATEGORY
from .items import ItemIndex, shares
from .profile import Profile


class Encoding(Protocol):
    """What the core reads of a user's sequence-encoder output (served by `serving.encoder.UserEncoding`)."""

    version: str
    vector: np.ndarray

    def nearest(self, n: int) -> list[tuple[str, float]]: ...

    def shares_for(self, item_ids: Sequence[str]) -> list[float]: ...


MODEL_VERSIONS = {"recommender": "hybrid-v10"}
MAX_COVIS_REASONS = 2
#: The reason an item the user had is shown with, by the strongest of the user's recent events on it (a purchase
#: may be at its cart stage: "in your basket", once the user has had one, since `recent` keeps no stage; until
#: 2026-12-06 every purchase said "in your basket before", also on a log of orders); an item only in the decayed
#: affinity, its events past `recent`
HAD_BOUGHT = {"purchase": "bought before", "click": "clicked before", "browse": "viewed before"}
HAD_BEFORE = {**HAD_BOUGHT, "purchase": "in your basket or bought before"}
HAD_BEFORE_OLDER = "had before"
_HAD_STRENGTH = {"browse": 1, "click": 2, "purchase": 3}
#: In the prior, the user's own items score by recency rank this much and by decayed affinity the rest:
#: in sessions the next item is more often one of the last few than the most frequent.
RECENCY_SHARE = 0.75
#: The category model's features span this many halvings of probability below the best candidate's.
LOG_SPAN = 12.0
_LOG_FLOOR = 2.0 ** -LOG_SPAN

_F = {name: i for i, name in enumerate(FEATURES)}
_LAST_AFTER = {"browse": _F["last_after_browse"], "click": _F["last_after_click"],
               "cart": _F["last_after_cart"], "order": _F["last_after_order"]}


@dataclass(slots=True)
class Ranked:
    items: list[dict[str, Any]]  # {item_id, score, reasons}, best first
    pool: list[str]  # the best candidates, best first: the shown items, then the next ones
    features: np.ndarray  # one row per pool item, FEATURES order
    candidates: list[str]  # every candidate, in item_id order
    matrix: np.ndarray  # one row per candidate, FEATURES order

    def stored_rows(self) -> np.ndarray:
        """The rows as a profile keeps them (`Profile.shown_rows`): float16, as `encode_rows` writes them."""
        return self.features.astype(np.float16)


def recommend(profile: Profile, event: Event, index: ItemIndex, settings: Settings, ranker: Any = None,
              repeat_propensity: float = 0.0, encoding: Encoding | None = None, content: Any = None,
              recency_shares: Sequence[float] | None = None) -> Ranked:
    """Top-K for `profile` right after `event` (already applied). Ties break on item_id.
    `recency_shares`: the weight of each position among the user's most recent distinct items, learned by
    the partition (learners.RecencyPositions); None: 1 / (1 + position).

    Each source fills a dict; the candidates are their union, the feature matrix is built a column
    at a time, and reasons are worked out only for the K items shown."""
    anchors = profile.recent_items(settings.covis_prev_items)
    anchor_neighbors = [index.neighbors(anchor) for anchor in anchors]
    covis = _by_recency(anchor_neighbors)
    covis_last = anchor_neighbors[0] if anchor_neighbors else {}
    session = session_items(profile, settings.session_gap_ms)
    session_followers = [index.followers(item_id) for item_id in islice(session, settings.rules_anchors)]
    rules = _by_recency(session_followers)
    rules_last = session_followers[0] if session_followers else {}
    repeat = dict(shares(decay.top(profile.item_affinity, settings.repeat_candidates))) if profile.item_affinity else {}
    repeat.setdefault(event.item_id, 0.0)
    session_categories = _session_categories(session, index)
    next_categories = index.next_categories(event.category) if event.category is not None else {}
    category_share, in_category = _category_candidates(profile, event, index, settings, session_categories,
                                                       next_categories)
    nearest: dict[str, float] = dict(encoding.nearest(settings.encoder_candidates)) if encoding is not None else {}

    interest = interest_vector(profile.content_interest, content.version) if content is not None else None
    last_vector = content.vector(event.item_id) if content is not None else None
    like_last = content.similar(event.item_id, settings.content_candidates, event.ts) if last_vector is not None else {}
    like_interest = content.nearest(interest, settings.content_candidates, event.ts) if interest is not None else {}

    popular, trending = index.popular(), index.trending()
    ids = sorted({*anchors, *covis, *rules, *repeat, *in_category, *islice(popular, settings.top_k),
                  *islice(trending, settings.top_k), *nearest, *like_last, *like_interest})
    slots = index.slots(ids)
    columns = index.columns
    this_row = ids.index(event.item_id)
    codes = columns.category[slots]
    if event.category is not None:
        codes[this_row] = columns.code(event.category)
    n = len(ids)
    matrix = np.zeros((n, N_FEATURES))
    sparse = _SparseColumns(ids)
    sparse.add("covis", covis)
    sparse.add("covis_last", covis_last)
    sparse.add("rules", rules)
    sparse.add("rules_last", rules_last)
    sparse.add("in_session", session, 1.0)
    sparse.add("seen", profile.item_affinity, 1.0)
    sparse.add("repeat", repeat)
    weights = recency_shares if recency_shares is not None else [1.0 / (rank + 1) for rank in range(len(anchors))]
    sparse.add("recent_rank", dict(zip(anchors, weights)))
    sparse.add("category_rank", in_category)
    sparse.write(matrix)
    matrix[:, _F["repeat_x_propensity"]] = matrix[:, _F["repeat"]] * repeat_propensity
    matrix[this_row, _LAST_AFTER[event_kind(event.type, event.stage)]] = 1.0
    if in_category or (codes != NO_CATEGORY).any():  # else every one of them is 0
        _category_columns(matrix, index, event, slots, this_row, codes, category_share, session_categories,
                          next_categories)
    matrix[:, _F["popular"]] = columns.popular[slots]
    matrix[:, _F["trending"]] = columns.trending[slots]
    if encoding is not None:
        matrix[:, _F["encoder"]] = encoding.shares_for(ids)
    if interest is not None or last_vector is not None:
        _content_columns(matrix, *content.cosines(ids, interest, last_vector), this_row)
    matrix[:, 0] = _prior(matrix, settings)
    scores = ranker.score_many(matrix) if ranker is not None and ranker.ready else matrix[:, 0]
    pool = _best_first(scores, ids, index.withdrawn)[: max(settings.top_k, settings.ranker_pool)]
    pool_ids = [ids[i] for i in pool.tolist()]
    shown = pool[: settings.top_k]
    reasons = _reasons(pool_ids[: settings.top_k], [columns.name(code) for code in codes[shown].tolist()], anchors,
                       anchor_neighbors, session, session_followers, repeat, profile.item_affinity, in_category,
                       popular, trending, nearest, profile.recent, HAD_BEFORE if "cart" in profile.stages else HAD_BOUGHT)
    if content is not None:
        for item_id, found in zip(pool_ids, reasons):
            found += _content_reasons(item_id, event.item_id, like_last, like_interest, content, bool(found))
    items = [{"item_id": item_id, "score": round(score, 6), "reasons": found}
             for item_id, score, found in zip(pool_ids, scores[shown].tolist(), reasons)]
    return Ranked(items, pool_ids, matrix[pool], ids, matrix)


def by_prior(ranked: Ranked, settings: Settings, withdrawn: AbstractSet[str]) -> list[str]:
    """The K candidates of `ranked` with the best prior under `settings`' weights and a score above 0 as
    shown (6 decimals): what `recommend` without a ranker shows with those weights, from the same candidates
    (they do not depend on the weights), without building them again."""
    scores = _prior(ranked.matrix, settings)
    best = _best_first(scores, ranked.candidates, withdrawn)[: settings.top_k].tolist()
    return [ranked.candidates[i] for i, score in zip(best, scores[best].tolist()) if round(score, 6) > 0]


def _content_columns(matrix: np.ndarray, to_interest: np.ndarray | None, to_last: np.ndarray | None,
                     this_row: int) -> None:
    """The content columns from the candidates' cosines with the interest vector and the item just seen (None: no
    such vector)."""
    if to_interest is not None:
        matrix[:, _F["content"]] = share_of(to_interest)
    if to_last is not None:
        matrix[:, _F["content_last"]] = share_of(to_last)
        matrix[this_row, _F["content_last"]] = 0.0  # the item itself is not "similar to itself"


def _best_first(scores: np.ndarray, ids: list[str], withdrawn: AbstractSet[str]) -> np.ndarray:
    """The candidates' rows best first (ties: item_id order), without the items removed from the catalogue (never
    shown; the sources still learn from their events)."""
    order = np.argsort(-scores, kind="stable")
    return order[[ids[i] not in withdrawn for i in order.tolist()]] if withdrawn else order


class _SparseColumns:
    """The source columns of a list's candidates (`ids`), gathered as (row, column, value) and written in one
    assignment: a source holds a few of the candidates, and an assignment per column cost more than its values."""

    __slots__ = ("ids", "row_of", "rows", "columns", "values")

    def __init__(self, ids: list[str]):
        self.ids = ids
        self.row_of = {item_id: row for row, item_id in enumerate(ids)}
        self.rows: list[int] = []
        self.columns: list[int] = []
        self.values: list[Any] = []

    def add(self, column: str, values: Mapping[str, Any], constant: float | None = None) -> None:
        """Column `column`: each candidate's value in `values`, or `constant` for each one in it; 0 elsewhere.
        Walks the smaller of the two (the user's items may be many more than the candidates)."""
        if len(values) < len(self.ids):
            rows = list(map(self.row_of.get, values))
            found = list(values.values()) if constant is None else [constant] * len(rows)
            if None in rows:  # some are not candidates
                kept = [k for k, row in enumerate(rows) if row is not None]
                rows = [rows[k] for k in kept]
                found = [found[k] for k in kept]
        else:
            rows = [row for row, item_id in enumerate(self.ids) if item_id in values]
            found = [values[self.ids[row]] for row in rows] if constant is None else [constant] * len(rows)
        self.rows += rows
        self.columns += [_F[column]] * len(rows)
        self.values += found

    def write(self, matrix: np.ndarray) -> None:
        count = len(self.rows)  # fromiter: a third faster than numpy's conversion of the lists
        matrix[np.fromiter(self.rows, np.intp, count), np.fromiter(self.columns, np.intp, count)] = np.fromiter(
            self.values, np.float64, count)


def _category_columns(matrix: np.ndarray, index: ItemIndex, event: Event, slots: np.ndarray, this_row: int,
                      category_codes: np.ndarray, category_share: dict[str, float],
                      session_categories: dict[str, float], next_categories: dict[str, float]) -> None:
    """The category features of every candidate (FEATURES from same_category on, but category_rank, which the
    caller writes; `slots`: the candidates' in `index.columns`, `category_codes`: their categories there, the
    event's for the item just seen, row `this_row`). A list holds a few categories many times over: each value is
    set once per category and spread by code."""
    columns = index.columns
    codes = np.where(category_codes == NO_CATEGORY, columns.categories, category_codes)  # the last: none

    def by_category(values: Mapping[str, float], total: float | None = None) -> np.ndarray:
        """Each candidate's value of its category in `values` (divided by `total`, if given); 0: none."""
        table = np.zeros(columns.categories + 1)
        found = list(map(columns.known, values))
        weights = np.fromiter(values.values(), np.float64, len(found))
        if None in found:  # no candidate is in such a category
            kept = [k for k, code in enumerate(found) if code is not None]
            found, weights = [found[k] for k in kept], weights[kept]
        table[found] = weights if total is None else weights / total
        return table[codes]

    if event.category is not None:
        matrix[:, _F["same_category"]] = codes == columns.known(event.category)  # coded: the item just seen has it
    matrix[:, _F["category_affinity"]] = by_category(category_share)
    matrix[:, _F["category_rank_here"]] = matrix[:, _F["category_rank"]] * matrix[:, _F["same_category"]]
    matrix[:, _F["category_in_session"]] = by_category(session_categories)
    matrix[:, _F["category_rank_in_session"]] = matrix[:, _F["category_rank"]] * matrix[:, _F["category_in_session"]]
    matrix[:, _F["category_next"]] = by_category(next_categories)
    matrix[:, _F["category_rank_next"]] = matrix[:, _F["category_rank"]] * matrix[:, _F["category_next"]]
    session_main = next(iter(session_categories), None)
    next_after_main = index.next_categories(session_main) if session_main is not None else {}
    if next_categories or next_after_main:
        within = columns.within[slots]  # each candidate's share within its category, for both columns
        if event.category is not None and category_codes[this_row] != columns.category[slots[this_row]]:
            within[this_row] = index.within_category(event.category).get(event.item_id, 0.0)  # the event's category
    for column, following in (("category_model", next_categories), ("category_model_session", next_after_main)):
        if following:
            matrix[:, _F[column]] = _category_model(by_category(following, sum(following.values())), within)


def _category_model(step: np.ndarray, within: np.ndarray) -> np.ndarray:
    """P(the next item's category) (`step`, per candidate) x P(the item within its category) (`within`),
    as a share of the best candidate's."""
    column = step * within
    best = column.max()
    return log_share(column / best) if best > 0 else column


def log_share(shares: np.ndarray) -> np.ndarray:
    """Shares of the best (0..1) on a log scale over LOG_SPAN halvings (0: none): a probability's ratio to
    the next one's, not its size, decides an order, and most of a list's boundary lies far below the best."""
    out = np.log2(np.maximum(shares, _LOG_FLOOR)) / LOG_SPAN  # at or below the floor: -1, so 0 (no log of 0)
    out += 1.0
    return np.minimum(out, 1.0, out=out)


def _session_categories(session: dict[str, None], index: ItemIndex) -> dict[str, float]:
    """Category -> the share of the current session's distinct items in it, most common first."""
    counts: dict[str, int] = {}
    for category in index.categories_of(list(session)):
        if category is not None:
            counts[category] = counts.get(category, 0) + 1
    total = sum(counts.values())
    return {c: n / total for c, n in sorted(counts.items(), key=lambda kv: -kv[1])}


def _category_candidates(profile: Profile, event: Event, index: ItemIndex, settings: Settings,
                         session_categories: dict[str, float],
                         next_categories: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """The user's share of each category, and the best items of the event's category, of the categories
    that most often come next after it, of the session's most common categories and of the user's
    strongest categories (item_id -> its rank share in its category)."""
    category_share: dict[str, float] = {}
    if profile.category_affinity:
        category_share = dict(shares(decay.top(profile.category_affinity, len(profile.category_affinity))))
    wanted = list(category_share)[: settings.category_top]
    for category in [*islice(session_categories, settings.category_top), *islice(next_categories, settings.category_top)]:
        if category not in wanted:
            wanted.insert(0, category)
    if event.category is not None and event.category not in wanted:
        wanted.insert(0, event.category)
    in_category: dict[str, float] = {}
    for category in wanted:
        for item_id, share in index.category_items(category)[: settings.category_candidates]:
            in_category[item_id] = share
    return category_share, in_category


def _prior(matrix: np.ndarray, settings: Settings) -> np.ndarray:
    """The prior score of each candidate: a fixed weighted sum of its source scores."""
    return (settings.covis_weight * matrix[:, _F["covis"]]
            + settings.repeat_weight * ((1 - RECENCY_SHARE) * matrix[:, _F["repeat"]]
                                       + RECENCY_SHARE * matrix[:, _F["recent_rank"]])
            + settings.rules_weight * matrix[:, _F["rules"]]
            + settings.category_weight * matrix[:, _F["category_affinity"]] * matrix[:, _F["category_rank"]]
            + settings.popularity_weight * matrix[:, _F["popular"]]
            + settings.trending_weight * matrix[:, _F["trending"]]
            + settings.encoder_weight * matrix[:, _F["encoder"]]
            + settings.content_weight * matrix[:, _F["content_last"]])


def _by_recency(related: list[dict[str, float]]) -> dict[str, float]:
    """Item -> sum of its shares in the related lists of the user's items, most recent first, each
    weighted 1 / (1 + its rank)."""
    if not related:
        return {}
    out = dict(related[0])  # weight 1: the same sums as 0.0 + 1.0 * share, without the walk
    get = out.get
    for rank in range(1, len(related)):
        recency = 1.0 / (rank + 1)
        for item_id, share in related[rank].items():
            out[item_id] = get(item_id, 0.0) + recency * share
    return out


def session_items(profile: Profile, gap_ms: int) -> dict[str, None]:
    """The distinct items of the user's current session (no gap of gap_ms or more), most recent first."""
    out: dict[str, None] = {}
    later = None
    for item_id, _type, ts in reversed(profile.recent):
        if later is not None and later - ts >= gap_ms:
            break
        out.setdefault(item_id, None)
        later = ts
    return out


def _reasons(shown: list[str], categories: list[str | None], anchors: list[str],
             anchor_neighbors: list[dict[str, float]], session: dict[str, None],
             session_followers: list[dict[str, float]], repeat: Collection[str], item_affinity: Collection[str],
             in_category: dict[str, float], popular: dict[str, float], trending: dict[str, float],
             nearest: dict[str, float], recent: list[list[Any]], had: dict[str, str]) -> list[list[str]]:
    """Why each shown item (`categories`: theirs) is in the list: the sources that proposed it, the
    anchors named (the recent items it was co-visited with, at most MAX_COVIS_REASONS, and the first
    session item it often came next after). Each shown item is looked up in each anchor's list: 20 lookups an
    anchor, where walking its list cost 40 to 100. An item the user had (in `repeat`, `session`, `item_affinity` or
    `anchors`) says how (`had`: HAD_BEFORE or HAD_BOUGHT)."""
    out, kinds = [], None
    covis = list(zip(anchors, anchor_neighbors))
    rules = list(zip(session, session_followers))
    for item_id, category in zip(shown, categories):
        found = []
        for anchor, neighbors in covis:
            if len(found) == MAX_COVIS_REASONS:
                break
            if item_id in neighbors:
                found.append(f"co-visited with {anchor}")
        for anchor, followers in rules:
            if item_id in followers and anchor != item_id:  # "a often next after a" is a repeat, said as such below
                found.append(f"often next after {anchor}")
                break
        # the dicts first: most items are in none, and the short list of anchors is looked up last
        if item_id in repeat or item_id in session or item_id in item_affinity or item_id in anchors:
            kinds = _strongest_kinds(recent) if kinds is None else kinds
            found.append(had.get(kinds.get(item_id), HAD_BEFORE_OLDER))
        if item_id in in_category:
            found.append(f"top in {category}")
        if item_id in popular:
            found.append("popular")
        if item_id in trending:
            found.append("trending")
        if item_id in nearest:
            found.append("similar to your recent items")
        out.append(found)
    return out


def _strongest_kinds(recent: list[list[Any]]) -> dict[str, str]:
    """Each recent item's strongest event type (purchase, click, browse) among the user's recent events."""
    kinds: dict[str, str] = {}
    for item_id, kind, _ts in recent:
        held = kinds.get(item_id)
        if held is None or _HAD_STRENGTH.get(kind, 0) > _HAD_STRENGTH.get(held, 0):
            kinds[item_id] = kind
    return kinds


def _content_reasons(item_id: str, last_item: str, like_last: dict[str, float], like_interest: dict[str, float],
                     content: Any, other_reasons: bool) -> list[str]:
    # a candidate of these sources at or below the floor is unrelated by the features' measure (content_last 0):
    # it is no "similar to" (a niche item's nearest texts may all be)
    out, title = [], content.titles.get(last_item, last_item)
    if like_last.get(item_id, SIMILARITY_FLOOR) > SIMILARITY_FLOOR:
        out.append(f"similar to {title}")
    if like_interest.get(item_id, SIMILARITY_FLOOR) > SIMILARITY_FLOOR:
        out.append("like what you look at")
    if not out and not other_reasons:  # shown for its text alone, though the text is far: say that, not nothing
        out.append(f"text loosely related to {title}" if item_id in like_last else
                   "text loosely related to what you look at")
    return out
