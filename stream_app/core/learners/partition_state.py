"""What the workers learn per input partition, persisted together in one table record."""

from __future__ import annotations

from .base import Persistent
from .ranker import OnlineRanker
from .strategy_bandit import StrategyBandit


class PartitionLearners(Persistent):
    """The partition's online ranker and, if exploration is on, its strategy bandit. One object so
    one changelog record per partition and batch carries both."""

    def __init__(self, ranker: OnlineRanker, bandit: StrategyBandit | None = None):
        self.ranker = ranker
        self.bandit = bandit

    def _fresh(self) -> "PartitionLearners":
        return PartitionLearners(self.ranker.clone(), self.bandit.clone() if self.bandit is not None else None)
