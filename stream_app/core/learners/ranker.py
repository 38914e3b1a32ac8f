"""The online ranker: which candidates does a user hit next? Learned from the stream's own feedback."""

from __future__ import annotations

import copy
import hashlib
import heapq
import math
from typing import Any, Sequence

import numpy as np

from .base import Persistent
from .pairwise_mlp import MAX_MAGNITUDE, PairwiseMLP
from .state import Fields, StateError


class OnlineRanker(Persistent):
    """A pairwise scorer over candidate features (`PairwiseMLP`: a linear score plus a small hidden
    layer, learned with Adam), one per input partition (its state moves with the partition), learned
    as RankNet learns: each list's candidates (the shown items and the next best ones) are judged by
    the user's next event; when the hit item is among them, even where the ranking left it out of the
    shown part, it is paired with up to `negatives` candidates that were not hit, picked by a hash of
    (seed, event, item) so a replay learns the same pairs, and one step teaches that the hit scores
    above each of them (a pair counts as two labels, as when each pair was learned both ways). Scores
    are decision values whose order is the ranking. The hidden layer holds interactions a linear
    score cannot (since hybrid-v10; before, the linear score alone, River's logistic regression: a
    ranker written then starts from its weights). Lists whose next item is not among the candidates teach nothing
    about order and are skipped: pointwise, most of its labels were "not this" from such lists.

    It also keeps score: on every judged list it ranks the candidates both its own way and the prior's
    way (column 0 of the features, the fixed blend) and credits each with the reciprocal rank of the
    hit item if it would have shown it (in the top `top_k`), else 0, as exponentially weighted means
    (`hit_rate_alpha`). It is `ready` to rank only once it has learned `warm_up` labels and its score
    is above the prior's: on a log where what it learns does not beat the blend, the caller keeps
    ranking by the prior (full-information model selection, decided by the stream).

    >>> ranker = OnlineRanker(("covis", "popular"), warm_up=10)
    >>> for _ in range(20):
    ...     ranker.learn_pairs(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    >>> ranker.labels >= ranker.warm_up
    True
    >>> a, b = ranker.score_many(np.array([[1.0, 0.0], [0.0, 1.0]]))
    >>> bool(a > b)
    True
    """

    kind = "ranker"
    version = 2  # 1: a linear ranker's state (read: its weights start the linear part)
    reads = frozenset({1, 2})
    ranker_rr = 0.0  # exponentially weighted reciprocal rank of the hit item in its ranking (0: not shown)
    prior_rr = 0.0  # ... in the prior's

    def __init__(self, features: Sequence[str], learning_rate: float = 0.05, negatives: int = 4,
                 warm_up: int = 1000, seed: int = 7, hit_rate_alpha: float = 0.01, hidden: int = 16):
        self.features = tuple(features)
        self.learning_rate = learning_rate
        self.negatives = negatives
        self.warm_up = warm_up
        self.seed = seed
        self.hit_rate_alpha = hit_rate_alpha
        self.hidden = hidden
        self.model = PairwiseMLP(self.features, learning_rate, hidden=hidden, seed=seed)
        self.labels = 0
        self.positives = 0

    def _fresh(self) -> "OnlineRanker":
        return OnlineRanker(self.features, self.learning_rate, self.negatives, self.warm_up, self.seed,
                            self.hit_rate_alpha, self.hidden)

    def snapshot(self) -> "OnlineRanker":
        """A copy sharing nothing that learning changes (its own fields are scalars and tuples)."""
        twin = copy.copy(self)
        twin.model = self.model.copy()
        return twin

    def _state(self) -> dict[str, Any]:
        return {"features": list(self.features), "learning_rate": float(self.learning_rate),
                "negatives": self.negatives, "warm_up": self.warm_up, "seed": self.seed,
                "hit_rate_alpha": float(self.hit_rate_alpha), "labels": self.labels, "positives": self.positives,
                "ranker_rr": float(self.ranker_rr), "prior_rr": float(self.prior_rr), "model": self.model.state()}

    @classmethod
    def _from_state(cls, fields: Fields, version: int) -> "OnlineRanker":
        ranker = cls(fields.texts("features"), fields.number("learning_rate"), fields.integer("negatives"),
                     fields.integer("warm_up"), fields.integer("seed"), fields.number("hit_rate_alpha", 0.0, 1.0))
        ranker.labels = fields.integer("labels")
        ranker.positives = fields.integer("positives")
        ranker.ranker_rr = fields.number("ranker_rr", 0.0, 1.0)  # means of reciprocal ranks
        ranker.prior_rr = fields.number("prior_rr", 0.0, 1.0)
        if version == 1:
            ranker.model.restore_linear(linear_weights(fields.nested("model")))
        else:
            set_model_state(ranker, fields.nested("model"))
        return ranker

    def adopt(self, features: Sequence[str]) -> None:
        """Rank and learn over `features` from now on (a release that adds or drops features, restoring
        a ranker an earlier one wrote): the weights are by name, so the features it knew keep theirs
        and new ones start at 0."""
        self.features = tuple(features)
        self.model.adopt(self.features)

    @property
    def ready(self) -> bool:
        return self.labels >= self.warm_up and self.ranker_rr > self.prior_rr

    def judge(self, matrix: np.ndarray, hit_row: int | None, top_k: int) -> None:
        """Score this ranker and the prior on one judged list: the reciprocal rank of the hit item
        (row `hit_row` of the list's candidates; None: not among them) if within top_k, else 0."""
        prior = ranker = 0.0
        if hit_row is not None:  # a miss for both: no scoring needed
            prior = reciprocal_rank(matrix[:, 0], hit_row, top_k)
            ranker = reciprocal_rank(self.score_many(matrix), hit_row, top_k)
        a = self.hit_rate_alpha
        self.prior_rr += a * (prior - self.prior_rr)
        self.ranker_rr += a * (ranker - self.ranker_rr)

    def learn_pairs(self, better: np.ndarray, worse: np.ndarray) -> None:
        """Each row of `better` (a hit candidate) should score above the same row of `worse`."""
        self.model.learn_pairs(better, worse)
        self.labels += 2 * len(better)
        self.positives += len(better)

    def score_many(self, matrix: np.ndarray) -> np.ndarray:
        """Scores of candidate rows (`PairwiseMLP.decision`: not log-odds, only their order means something)."""
        return self.model.decision(matrix)

    def learn_feedback(self, shown: Sequence[str], matrix: np.ndarray, hit_item: str, event_id: str,
                       top_k: int) -> int:
        """Keep score on one judged list (`judge`), then learn from it; returns how many labels it learned."""
        hit_row = shown.index(hit_item) if hit_item in shown else None
        self.judge(matrix, hit_row, top_k)
        if hit_row is None:
            return 0  # the hit item is not among the candidates: no pair to learn from (and no hashing)
        labels = feedback_labels(shown, hit_item, event_id, self.negatives, self.seed)
        others = [row for row, _ in labels[1:]]
        if not others:
            return 0
        self.learn_pairs(np.repeat(matrix[[labels[0][0]]], len(others), axis=0), matrix[others])
        return 2 * len(others)


def set_model_state(ranker: OnlineRanker, fields: Fields) -> None:
    hidden, seed = fields.integer("hidden", minimum=1), fields.integer("seed")
    columns = fields.mapping("columns", Fields.floats)
    rest, steps = fields.floats("rest"), fields.integer("steps")
    # The widths before a model of `hidden` units is built: the record's own numbers bound its size (a forged
    # "hidden" of 2**40 would otherwise be a MemoryError, not a StateError, and stop the worker).
    width = 3 * (1 + hidden)
    if any(len(column) != width for column in columns.values()) or len(rest) != 6 * hidden:
        raise StateError(f"{fields.where}: a model of {hidden} hidden units has {width} numbers per feature "
                         f"and {6 * hidden} others")
    missing = [name for name in ranker.features if name not in columns]
    if missing:
        raise StateError(f"{fields.where}: no column for the features {missing}")
    if hidden != ranker.hidden or seed != ranker.seed:
        ranker.hidden = hidden
        ranker.model = PairwiseMLP(ranker.features, ranker.learning_rate, hidden=hidden, seed=seed)
    try:
        ranker.model.restore(columns, rest, steps)
    except ValueError as exc:
        raise StateError(f"{fields.where}: {exc}") from exc
    fields.done()


def linear_weights(fields: Fields) -> dict[str, float]:
    """The weights of a version-1 ranker's linear model (its intercept and moments are not carried)."""
    weights = fields.mapping("weights", Fields.number)
    if any(abs(weight) > MAX_MAGNITUDE for weight in weights.values()):
        raise StateError(f"{fields.where}: every weight must be within +-{MAX_MAGNITUDE:g}")
    fields.number("intercept"), fields.integer("steps")  # read for their shape only: a v1 record is checked whole
    fields.optional_mapping("m", Fields.number), fields.optional_mapping("v", Fields.number)
    fields.done()
    return weights


def reciprocal_rank(scores: np.ndarray, row: int, top_k: int) -> float:
    """1/rank of `row` when the scores (ties: row order) put it in the top_k, else 0 (0 for a score that is
    not a number: NaN compares false with everything, which would rank it first)."""
    if not math.isfinite(scores[row]):
        return 0.0
    rank = int(np.count_nonzero(scores > scores[row]) + np.count_nonzero(scores[:row] == scores[row]))
    return 1.0 / (rank + 1) if rank < top_k else 0.0


def feedback_labels(shown: Sequence[str], hit_item: str, event_id: str, negatives: int,
                    seed: int) -> list[tuple[int, bool]]:
    """(row, label) pairs of a shown list judged by the next event on `hit_item`: the hit row (if
    any) as positive, then up to `negatives` other rows as negatives, in a seeded hash order."""
    labels = [(row, True) for row, item in enumerate(shown) if item == hit_item][:1]
    others = [row for row, item in enumerate(shown) if item != hit_item]
    if len(others) > negatives:
        salted = hashlib.blake2b(f"{seed}:{event_id}:".encode(), digest_size=8)
        keyed = []
        for row in others:  # the digest of salt + item; a copy of the salted state costs half a new hash
            digest = salted.copy()
            digest.update(shown[row].encode())
            keyed.append((digest.digest(), row))
        others = [row for _, row in heapq.nsmallest(negatives, keyed)]
    return labels + [(row, False) for row in others]
