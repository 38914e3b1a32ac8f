"""Exploration: a bandit per user segment choosing which ranking strategy to show."""

from __future__ import annotations

from typing import Sequence

from river import bandit

from .base import Persistent

STRATEGIES = ("ranker", "prior")


def segment_of(event_count: int) -> str:
    """Users by how much the profile knows: a new user's list may want another strategy."""
    return "new" if event_count <= 5 else "returning"


class StrategyBandit(Persistent):
    """A River epsilon-greedy bandit per segment over ranking strategies ("ranker": the learned
    online ranker; "prior": the fixed blend of the sources). The reward of a shown list is 1 when
    the user's next event hits it, else 0. Randomness only from `seed` (one per segment, derived).

    >>> chooser = StrategyBandit(epsilon=0.0, seed=1)
    >>> for _ in range(20):
    ...     chooser.update("returning", "ranker", 1.0)
    ...     chooser.update("returning", "prior", 0.0)
    >>> chooser.pull("returning")
    'ranker'
    """

    def __init__(self, epsilon: float = 0.1, seed: int = 7, strategies: Sequence[str] = STRATEGIES):
        self.epsilon = epsilon
        self.seed = seed
        self.strategies = tuple(strategies)
        self.policies: dict[str, bandit.EpsilonGreedy] = {}
        self.pulls: dict[str, dict[str, int]] = {}

    def _fresh(self) -> "StrategyBandit":
        return StrategyBandit(self.epsilon, self.seed, self.strategies)

    def _policy(self, segment: str) -> bandit.EpsilonGreedy:
        policy = self.policies.get(segment)
        if policy is None:
            seed = self.seed * 1_000_003 + sum(map(ord, segment))
            policy = self.policies[segment] = bandit.EpsilonGreedy(epsilon=self.epsilon, seed=seed)
        return policy

    def pull(self, segment: str) -> str:
        arm = self._policy(segment).pull(list(self.strategies))
        counts = self.pulls.setdefault(segment, {})
        counts[arm] = counts.get(arm, 0) + 1
        return arm

    def update(self, segment: str, strategy: str, reward: float) -> None:
        self._policy(segment).update(strategy, reward)
