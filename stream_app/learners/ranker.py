"""The online ranker: which candidates does a user hit next? Learned from the stream's own feedback."""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
from river import linear_model, optim

from .base import Persistent


class OnlineRanker(Persistent):
    """A River logistic regression (Adam) over candidate features, one per input partition (its state moves
    with the partition). Each list's candidates (the shown items and the next best ones) are judged
    by the user's next event: the hit item, if among them, is a positive, even where the ranking
    left it out of the shown part, and up to `negatives` candidates that were not hit are negatives,
    picked by a hash of (seed, event, item) so a replay learns the same examples. Until it has learned
    `warm_up` labels, `ready` is False and the caller ranks by its prior score.

    >>> ranker = OnlineRanker(("covis", "popular"), warm_up=10)
    >>> for _ in range(20):
    ...     ranker.learn_one([1.0, 0.0], True)
    ...     ranker.learn_one([0.0, 1.0], False)
    >>> ranker.ready
    True
    >>> a, b = ranker.score_many(np.array([[1.0, 0.0], [0.0, 1.0]]))
    >>> bool(a > b)
    True
    """

    def __init__(self, features: Sequence[str], learning_rate: float = 0.05, negatives: int = 4,
                 warm_up: int = 1000, seed: int = 7):
        self.features = tuple(features)
        self.learning_rate = learning_rate
        self.negatives = negatives
        self.warm_up = warm_up
        self.seed = seed
        self.model = linear_model.LogisticRegression(optimizer=optim.Adam(learning_rate))
        self.labels = 0
        self.positives = 0

    def _fresh(self) -> "OnlineRanker":
        return OnlineRanker(self.features, self.learning_rate, self.negatives, self.warm_up, self.seed)

    @property
    def ready(self) -> bool:
        return self.labels >= self.warm_up

    def learn_one(self, x: Sequence[float], hit: bool) -> None:
        self.model.learn_one(dict(zip(self.features, map(float, x))), hit)
        self.labels += 1
        self.positives += hit

    def score_many(self, matrix: np.ndarray) -> np.ndarray:
        """Decision values (log-odds) of candidate rows: rank order only, one dot product."""
        weights = self.model.weights
        w = np.array([weights.get(name, 0.0) for name in self.features])
        return matrix @ w + self.model.intercept

    def learn_feedback(self, shown: Sequence[str], matrix: np.ndarray, hit_item: str, event_id: str) -> int:
        """Learn from one judged list; returns how many labels it learned."""
        learned = 0
        for row, label in feedback_labels(shown, hit_item, event_id, self.negatives, self.seed):
            self.learn_one(matrix[row], label)
            learned += 1
        return learned


def feedback_labels(shown: Sequence[str], hit_item: str, event_id: str, negatives: int,
                    seed: int) -> list[tuple[int, bool]]:
    """(row, label) pairs of a shown list judged by the next event on `hit_item`: the hit row (if
    any) as positive, then up to `negatives` other rows as negatives, in a seeded hash order."""
    labels = [(row, True) for row, item in enumerate(shown) if item == hit_item][:1]
    others = [row for row, item in enumerate(shown) if item != hit_item]
    if len(others) > negatives:
        salt = f"{seed}:{event_id}:".encode()
        others = sorted(others, key=lambda row: hashlib.blake2b(salt + shown[row].encode(), digest_size=8).digest())
        others = others[:negatives]
    return labels + [(row, False) for row in others]
