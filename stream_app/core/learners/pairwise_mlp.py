"""A scorer with one hidden layer, learned online from pairs of candidate rows (RankNet's loss)."""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import numpy as np

from .state import pack_floats

#: No restored number may be larger: none that learning at these rates reaches, and below it a list's scores,
#: gradients and their squares stay finite (a record of 1e308s, finite, summed to inf and then NaN for good).
MAX_MAGNITUDE = 1e100


class PairwiseMLP:
    """`score(x) = u·x + v·tanh(W x + b)` over candidate feature rows: the linear ranker (`u`) plus a
    hidden layer of `hidden` tanh units that can learn interactions a linear score cannot (a source's
    score counts for more in one context than in another). Learned from pairs (a row that was hit, a
    row that was not): the log loss of `score(better) - score(worse)`, one Adam step per call on the
    summed gradient of its pairs, so a judged list is one step on a small matrix. `u` and `v` start at
    0 (the score starts flat, as a linear model does) and `W` from a normal law drawn from `seed`.

    River has no learner for a pairwise loss on a difference of two forward passes; this is numpy,
    with the weights by feature name in its state, so a release that adds or drops features keeps
    what the others learned (`adopt`).

    >>> model = PairwiseMLP(("a", "b"), learning_rate=0.05, hidden=4)
    >>> xor = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # better: the first two
    >>> for _ in range(300):
    ...     model.learn_pairs(xor[[0, 0, 1, 1]], xor[[2, 3, 2, 3]])
    >>> scores = model.decision(xor)
    >>> bool(min(scores[:2]) > max(scores[2:]))
    True
    """

    def __init__(self, features: Sequence[str], learning_rate: float, hidden: int = 16, seed: int = 7,
                 beta_1: float = 0.9, beta_2: float = 0.999, eps: float = 1e-8):
        self.features = tuple(features)
        self.learning_rate = learning_rate
        self.hidden = hidden
        self.seed = seed
        self.beta_1, self.beta_2, self.eps = beta_1, beta_2, eps
        d = len(self.features)
        theta = np.zeros(self._size(d))
        self._bind(theta)
        self.W[:] = np.random.default_rng(seed).normal(0.0, 0.1, (hidden, d))
        self.m = np.zeros_like(theta)  # Adam's moments, over the same flat layout as theta
        self.s = np.zeros_like(theta)
        self.steps = 0
        #: columns (u, W's column, and their moments) of names the features no longer hold, kept as written
        self.retired: dict[str, np.ndarray] = {}

    def _size(self, d: int) -> int:
        return d + self.hidden * d + 2 * self.hidden

    def _bind(self, theta: np.ndarray) -> None:
        """theta is one flat vector (one Adam step for all of it); u, W, b and v are views into it."""
        d, h = len(self.features), self.hidden
        self.theta = theta
        self._rows_index: np.ndarray | None = None  # `_column_rows`' gather, made on first use
        self.u = theta[:d]
        self.W = theta[d:d + h * d].reshape(h, d)
        self.b = theta[d + h * d:d + h * d + h]
        self.v = theta[d + h * d + h:]

    def copy(self) -> "PairwiseMLP":
        """An independent twin: its arrays copied; its settings and retired columns shared (never written into,
        only replaced)."""
        twin = copy.copy(self)
        twin._bind(self.theta.copy())
        twin._rows_index = self._rows_index
        twin.m, twin.s, twin.retired = self.m.copy(), self.s.copy(), dict(self.retired)
        return twin

    def decision(self, matrix: np.ndarray) -> np.ndarray:
        """The score of each row (rank order only)."""
        hidden = matrix @ self.W.T
        hidden += self.b
        return matrix @ self.u + np.tanh(hidden, out=hidden) @ self.v

    def learn_pairs(self, better: np.ndarray, worse: np.ndarray) -> None:
        """One step: each row of `better` should score above the same row of `worse`."""
        gradient = self.gradient(better, worse)
        self.steps += 1
        self.m *= self.beta_1
        self.m += (1 - self.beta_1) * gradient
        self.s *= self.beta_2
        self.s += (1 - self.beta_2) * gradient ** 2
        lr = self.learning_rate * (1 - self.beta_2 ** self.steps) ** 0.5 / (1 - self.beta_1 ** self.steps)
        self.theta -= lr * self.m / (np.sqrt(self.s) + self.eps)

    def loss(self, better: np.ndarray, worse: np.ndarray) -> float:
        """The summed log loss of the pairs' margins."""
        return float(np.sum(np.logaddexp(0.0, -(self.decision(better) - self.decision(worse)))))

    def gradient(self, better: np.ndarray, worse: np.ndarray) -> np.ndarray:
        """d `loss` / d theta, by backpropagation."""
        hidden_b = np.tanh(better @ self.W.T + self.b)
        hidden_w = np.tanh(worse @ self.W.T + self.b)
        margin = (hidden_b - hidden_w) @ self.v + (better - worse) @ self.u
        dloss = -0.5 * (1.0 - np.tanh(0.5 * margin))  # d/d margin of log(1 + exp(-margin)), without overflow
        back_b = (dloss[:, None] * self.v) * (1.0 - hidden_b ** 2)
        back_w = (dloss[:, None] * self.v) * (1.0 - hidden_w ** 2)
        return np.concatenate((dloss @ (better - worse), (back_b.T @ better - back_w.T @ worse).ravel(),
                               back_b.sum(axis=0) - back_w.sum(axis=0), dloss @ (hidden_b - hidden_w)))

    # ---------------------------------------------------------------- state, by feature name

    def _column_index(self) -> np.ndarray:
        """(1 + hidden, features): where each feature's u and W column sit in theta."""
        d, h = len(self.features), self.hidden
        return np.vstack([np.arange(d), d + np.arange(h)[:, None] * d + np.arange(d)])

    def _column_rows(self) -> np.ndarray:
        """(features, 3 * (1 + hidden)), C order: per feature u, W's column, then the same two of m and of s."""
        d = len(self.features)
        if self._rows_index is None:
            by_array = np.arange(3)[:, None, None] * self._size(d) + self._column_index()  # (3, 1 + h, d)
            self._rows_index = by_array.transpose(2, 0, 1).reshape(d, 3 * (1 + self.hidden))  # d may be 0
        return np.concatenate((self.theta, self.m, self.s))[self._rows_index]

    def _columns(self) -> dict[str, np.ndarray]:
        """Each feature's numbers (`_column_rows`), then the retired ones."""
        return dict(zip(self.features, self._column_rows())) | self.retired

    def _rest(self) -> np.ndarray:
        """b and v, then their m, then their s."""
        tail = slice(len(self.features) * (1 + self.hidden), None)
        return np.concatenate([self.theta[tail], self.m[tail], self.s[tail]])

    def _load(self, columns: Mapping[str, np.ndarray], rest: np.ndarray) -> None:
        d, h = len(self.features), self.hidden
        stacked = np.zeros((3, self._size(d)))
        index = self._column_index()
        for j, name in enumerate(self.features):
            column = columns.get(name)
            if column is not None:
                stacked[:, index[:, j]] = np.reshape(column, (3, h + 1))
        stacked[:, d * (1 + h):] = np.reshape(rest, (3, 2 * h))
        self._bind(stacked[0].copy())
        self.m, self.s = stacked[1].copy(), stacked[2].copy()
        self.retired = {name: column for name, column in columns.items() if name not in self.features}

    def adopt(self, features: Sequence[str]) -> None:
        """Learn over `features` from now on: columns follow their names; new ones start at 0."""
        columns, rest = self._columns(), self._rest()
        self.features = tuple(features)
        self._load(columns, rest)

    def state(self) -> dict[str, Any]:
        """Settings and numbers; each feature's column and the rest as packed float64 (`state.pack_floats`: a
        fifth of the bytes of the numbers as text, and exact)."""
        columns = {}
        if self.features:  # one encoding of every row: a row is 24 (1 + hidden) bytes, a multiple of 3, so the
            # base64 of the rows is their base64s end to end (a worker writes it per partition and batch)
            packed = pack_floats(self._column_rows())
            step = len(packed) // len(self.features)
            columns = {name: packed[j * step:(j + 1) * step] for j, name in enumerate(self.features)}
        columns.update((name, pack_floats(column)) for name, column in self.retired.items())
        return {"hidden": self.hidden, "seed": self.seed, "steps": self.steps, "columns": columns,
                "rest": pack_floats(self._rest())}

    def restore(self, columns: Mapping[str, np.ndarray], rest: np.ndarray, steps: int) -> None:
        """The numbers `state` gave (unpacked), over this model's features (of this `hidden`)."""
        width, h = 3 * (1 + self.hidden), self.hidden
        if any(len(column) != width for column in columns.values()) or len(rest) != 6 * h:
            raise ValueError(f"a model of {h} hidden units has {width} numbers per feature and {6 * h} others")
        # Adam's second moments (the last third of each column and of the rest) are squares: a negative one
        # would make the first step's sqrt NaN, and the partition's ranker NaN for good.
        if (rest[4 * h:] < 0).any() or any((np.asarray(column)[2 * (1 + h):] < 0).any() for column in columns.values()):
            raise ValueError("Adam's second moments (the last third of each column and of the rest) must be at least 0")
        _check_magnitudes([rest, *columns.values()])
        self._load(columns, rest)
        self.steps = steps

    def restore_linear(self, weights: Mapping[str, float]) -> None:
        """Start from a linear ranker's weights (an earlier release's River logistic regression): the
        same ranking until it learns, as v is 0; the optimizer starts afresh. Weights of names outside the
        features (an earlier release's, which that ranker kept) are kept as retired columns, as `adopt` would."""
        self.u[:] = [weights.get(name, 0.0) for name in self.features]
        width = 3 * (1 + self.hidden)
        self.retired = {name: np.concatenate(([weight], np.zeros(width - 1)))
                        for name, weight in weights.items() if name not in self.features}


def _check_magnitudes(arrays: Sequence[np.ndarray]) -> None:
    if any(np.abs(array).max(initial=0.0) > MAX_MAGNITUDE for array in arrays):
        raise ValueError(f"every number must be within +-{MAX_MAGNITUDE:g}")
