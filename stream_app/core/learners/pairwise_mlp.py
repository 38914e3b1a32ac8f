"""A scorer with one hidden layer, learned online from pairs of candidate rows (RankNet's loss)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


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
        self.retired: dict[str, list[float]] = {}

    def _size(self, d: int) -> int:
        return d + self.hidden * d + 2 * self.hidden

    def _bind(self, theta: np.ndarray) -> None:
        """theta is one flat vector (one Adam step for all of it); u, W, b and v are views into it."""
        d, h = len(self.features), self.hidden
        self.theta = theta
        self.u = theta[:d]
        self.W = theta[d:d + h * d].reshape(h, d)
        self.b = theta[d + h * d:d + h * d + h]
        self.v = theta[d + h * d + h:]

    def decision(self, matrix: np.ndarray) -> np.ndarray:
        """The score of each row (rank order only)."""
        return matrix @ self.u + np.tanh(matrix @ self.W.T + self.b) @ self.v

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

    def _columns(self) -> dict[str, list[float]]:
        """Per feature: u, W's column, then the same two of m and of s (3 * (1 + hidden) numbers)."""
        d, h = len(self.features), self.hidden
        out = {}
        for j, name in enumerate(self.features):
            index = [j, *range(d + j, d + h * d, d)]
            out[name] = [*self.theta[index].tolist(), *self.m[index].tolist(), *self.s[index].tolist()]
        return out | self.retired

    def _rest(self) -> list[float]:
        """b and v, then their m, then their s."""
        d, h = len(self.features), self.hidden
        tail = slice(d + h * d, None)
        return [*self.theta[tail].tolist(), *self.m[tail].tolist(), *self.s[tail].tolist()]

    def _load(self, columns: Mapping[str, list[float]], rest: Sequence[float]) -> None:
        d, h = len(self.features), self.hidden
        size = self._size(d)
        theta, m, s = np.zeros(size), np.zeros(size), np.zeros(size)
        for j, name in enumerate(self.features):
            index = [j, *range(d + j, d + h * d, d)]
            column = columns.get(name)
            if column is not None:
                theta[index], m[index], s[index] = column[:h + 1], column[h + 1:2 * h + 2], column[2 * h + 2:]
        tail = slice(d + h * d, None)
        theta[tail], m[tail], s[tail] = rest[:2 * h], rest[2 * h:4 * h], rest[4 * h:]
        self._bind(theta)
        self.m, self.s = m, s
        self.retired = {name: list(column) for name, column in columns.items() if name not in self.features}

    def adopt(self, features: Sequence[str]) -> None:
        """Learn over `features` from now on: columns follow their names; new ones start at 0."""
        columns, rest = self._columns(), self._rest()
        self.features = tuple(features)
        self._load(columns, rest)

    def state(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "seed": self.seed, "steps": self.steps,
                "columns": self._columns(), "rest": self._rest()}

    def restore(self, columns: Mapping[str, list[float]], rest: Sequence[float], steps: int) -> None:
        """The numbers `state` gave, over this model's features (of this `hidden`)."""
        width, h = 3 * (1 + self.hidden), self.hidden
        if any(len(column) != width for column in columns.values()) or len(rest) != 6 * h:
            raise ValueError(f"a model of {h} hidden units has {width} numbers per feature and {6 * h} others")
        self._load(columns, rest)
        self.steps = steps

    def restore_linear(self, weights: Mapping[str, float]) -> None:
        """Start from a linear ranker's weights (an earlier release's River logistic regression): the
        same ranking until it learns, as v is 0; the optimizer starts afresh."""
        self.u[:] = [weights.get(name, 0.0) for name in self.features]
