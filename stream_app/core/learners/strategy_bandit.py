"""Exploration: a bandit per user segment choosing which ranking strategy to show."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Sequence

from .base import Persistent
from .state import Fields, mean_from, mean_state, random_state, set_random_state

if TYPE_CHECKING:
    from river import bandit

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

    kind = "strategy_bandit"

    def __init__(self, epsilon: float = 0.1, seed: int = 7, strategies: Sequence[str] = STRATEGIES):
        self.epsilon = epsilon
        self.seed = seed
        self.strategies = tuple(strategies)
        self.policies: dict[str, bandit.EpsilonGreedy] = {}
        self.pulls: dict[str, dict[str, int]] = {}

    def _fresh(self) -> "StrategyBandit":
        return StrategyBandit(self.epsilon, self.seed, self.strategies)

    def _state(self) -> dict[str, Any]:
        return {"epsilon": float(self.epsilon), "seed": self.seed, "strategies": list(self.strategies),
                "policies": {segment: policy_state(policy) for segment, policy in self.policies.items()},
                "pulls": {segment: dict(counts) for segment, counts in self.pulls.items()}}

    @classmethod
    def _from_state(cls, fields: Fields, version: int) -> "StrategyBandit":
        chooser = cls(fields.number("epsilon"), fields.integer("seed"), fields.texts("strategies"))
        policies = fields.nested("policies")
        for segment in policies.data:
            set_policy_state(chooser._policy(segment), policies.nested(segment))
        policies.done()
        chooser.pulls = fields.mapping("pulls", lambda pulls, segment: pulls.mapping(segment, Fields.integer))
        return chooser

    def _segment_seed(self, segment: str) -> int:
        return self.seed * 1_000_003 + sum(map(ord, segment))

    def _policy(self, segment: str) -> bandit.EpsilonGreedy:
        policy = self.policies.get(segment)
        if policy is None:
            # imported on first use: river.bandit imports River's metrics (and SciPy's statistics), about
            # a second at every start, and exploration is off by default
            from river import bandit

            policy = self.policies[segment] = bandit.EpsilonGreedy(epsilon=self.epsilon, seed=self._segment_seed(segment))
        return policy

    def reseed(self, seed: int) -> None:
        """Explore on the random sequence of `seed` from now on, keeping what each segment learned (its rewards
        and counts): a bandit restored with another seed than the one it should have."""
        import random

        self.seed = seed
        for segment, policy in self.policies.items():
            policy.seed = self._segment_seed(segment)
            policy._rng = random.Random(policy.seed)

    def pull(self, segment: str) -> str:
        arm = self._policy(segment).pull(list(self.strategies))
        counts = self.pulls.setdefault(segment, {})
        counts[arm] = counts.get(arm, 0) + 1
        return arm

    def update(self, segment: str, strategy: str, reward: float) -> None:
        self._policy(segment).update(strategy, reward)


def policy_state(policy: bandit.EpsilonGreedy) -> dict[str, Any]:
    """The numbers of a River epsilon-greedy bandit (its settings are the chooser's): its random generator,
    each arm's mean reward, pulls rewarded per arm and in all."""
    return {"rng": random_state(policy._rng), "rewards": {arm: mean_state(m) for arm, m in policy._rewards.items()},
            "counts": dict(policy._counts), "n": policy._n}


def set_policy_state(policy: bandit.EpsilonGreedy, fields: Fields) -> None:
    set_random_state(policy._rng, fields.nested("rng"))
    rewards = fields.nested("rewards")
    for arm in rewards.data:
        policy._rewards[arm] = mean_from(rewards.nested(arm))
    rewards.done()
    policy._counts = collections.Counter(fields.mapping("counts", Fields.integer))
    policy._n = fields.integer("n")
    fields.done()
