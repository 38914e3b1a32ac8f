"""A logistic regression learned by Adam one example at a time, on a numpy vector."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

#: River's default bound on the loss gradient (it never binds on the ranker's features).
CLIP_GRADIENT = 1e12


class AdamLogistic:
    """River's `LogisticRegression(optimizer=optim.Adam(learning_rate))` step for step (zero initial
    weights, the intercept by plain SGD at `intercept_lr`, the log loss's gradient as River computes
    it, Adam's bias-corrected step), with the weights, moments and example as arrays over fixed
    feature names instead of dicts: one example costs a dozen vector operations, not a dozen dict
    walks. Within float rounding of River's results (a dot product sums in another order); the
    ranker's state keeps River's layout (names -> numbers), so either reads the other's.

    >>> model = AdamLogistic(("a", "b"), learning_rate=0.1)
    >>> for _ in range(50):
    ...     model.learn_one(np.array([1.0, 0.0]), True)
    ...     model.learn_one(np.array([0.0, 1.0]), False)
    >>> a, b = model.decision(np.array([[1.0, 0.0], [0.0, 1.0]]))
    >>> bool(a > 0 > b)
    True
    """

    def __init__(self, features: Sequence[str], learning_rate: float, beta_1: float = 0.9, beta_2: float = 0.999,
                 eps: float = 1e-8, intercept_lr: float = 0.01):
        self.features = tuple(features)
        self.learning_rate = learning_rate
        self.beta_1, self.beta_2, self.eps, self.intercept_lr = beta_1, beta_2, eps, intercept_lr
        self.w = np.zeros(len(self.features))
        self.intercept = 0.0
        self.steps = 0
        self.m: np.ndarray | None = None  # Adam's moments, from the first step on
        self.v: np.ndarray | None = None
        #: weights and moments of names the features no longer hold (an earlier release's), kept as written
        self.retired: dict[str, tuple[float, float, float]] = {}

    def learn_one(self, x: np.ndarray, hit: bool) -> None:
        y = 1.0 if hit else -1.0
        z = (float(x @ self.w) + self.intercept) * y
        if z > 18.0:
            loss_gradient = math.exp(-z) * -y
        elif z < -18.0:
            loss_gradient = -y
        else:
            loss_gradient = -y / (math.exp(z) + 1.0)
        loss_gradient = min(max(loss_gradient, -CLIP_GRADIENT), CLIP_GRADIENT)
        self.intercept -= self.intercept_lr * loss_gradient
        gradient = x * loss_gradient
        m, v = self.m, self.v
        if m is None or v is None:
            m, v = self.m, self.v = np.zeros_like(self.w), np.zeros_like(self.w)
        lr = self.learning_rate * (1 - self.beta_2 ** (self.steps + 1)) ** 0.5
        lr /= 1 - self.beta_1 ** (self.steps + 1)
        # In place, in the same order of operations as the textbook step (the same floats, fewer arrays).
        m *= self.beta_1
        m += (1 - self.beta_1) * gradient
        gradient *= gradient
        gradient *= 1 - self.beta_2
        v *= self.beta_2
        v += gradient
        denominator = np.sqrt(v)
        denominator += self.eps
        step = lr * m
        step /= denominator
        self.w -= step
        self.steps += 1

    def decision(self, matrix: np.ndarray) -> np.ndarray:
        """Log-odds of each row."""
        return matrix @ self.w + self.intercept

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.features, self.w.tolist())) | {name: w for name, (w, _, _) in self.retired.items()}

    def adopt(self, features: Sequence[str]) -> None:
        """Learn over `features` from now on: weights and moments follow their names; new ones start at 0."""
        by_name = {name: (w, 0.0 if self.m is None else m, 0.0 if self.v is None else v)
                   for name, w, m, v in zip(self.features, self.w.tolist(), *self._moment_lists())}
        by_name |= self.retired
        self.features = tuple(features)
        columns = [by_name.pop(name, (0.0, 0.0, 0.0)) for name in self.features]
        self.retired = by_name
        self.w = np.array([c[0] for c in columns], dtype=float)
        if self.m is not None:
            self.m = np.array([c[1] for c in columns], dtype=float)
            self.v = np.array([c[2] for c in columns], dtype=float)

    def _moment_lists(self) -> tuple[list[float], list[float]]:
        if self.m is None or self.v is None:
            zeros = [0.0] * len(self.features)
            return zeros, zeros
        return self.m.tolist(), self.v.tolist()

    def state(self) -> dict[str, Any]:
        """River's numbers by name: weights, intercept, steps taken and the moments (None before a step)."""
        m, v = self._moment_lists()
        moments = None if self.m is None else (
            dict(zip(self.features, m)) | {name: mv for name, (_, mv, _) in self.retired.items()},
            dict(zip(self.features, v)) | {name: vv for name, (_, _, vv) in self.retired.items()})
        return {"weights": self.weights, "intercept": float(self.intercept), "steps": self.steps,
                "m": None if moments is None else moments[0], "v": None if moments is None else moments[1]}

    def restore(self, weights: Mapping[str, float], intercept: float, steps: int,
                m: Mapping[str, float] | None, v: Mapping[str, float] | None) -> None:
        """The numbers `state` gave (or River's, by name), over this model's features."""
        features = self.features
        self.features = tuple(weights)
        self.w = np.array(list(weights.values()), dtype=float)
        self.m = None if m is None else np.array([m.get(name, 0.0) for name in self.features], dtype=float)
        self.v = None if v is None else np.array([v.get(name, 0.0) for name in self.features], dtype=float)
        self.intercept, self.steps, self.retired = intercept, steps, {}
        self.adopt(features)
