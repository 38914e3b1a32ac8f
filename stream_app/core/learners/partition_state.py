"""What the workers learn per input partition, persisted together in one table record."""

from __future__ import annotations

from typing import Any

import orjson

from . import legacy
from .base import Persistent, load_state
from .ranker import OnlineRanker
from .state import Fields, StateError
from .strategy_bandit import StrategyBandit


class PartitionLearners(Persistent):
    """The partition's online ranker and, if exploration is on, its strategy bandit. One object so
    one changelog record per partition and batch carries both."""

    kind = "partition_learners"

    def __init__(self, ranker: OnlineRanker, bandit: StrategyBandit | None = None):
        self.ranker = ranker
        self.bandit = bandit

    def _fresh(self) -> "PartitionLearners":
        return PartitionLearners(self.ranker.clone(), self.bandit.clone() if self.bandit is not None else None)

    def _state(self) -> dict[str, Any]:
        return {"ranker": self.ranker.to_state(), "bandit": self.bandit.to_state() if self.bandit is not None else None}

    @classmethod
    def _from_state(cls, fields: Fields, version: int) -> "PartitionLearners":
        where = fields.where
        ranker = load_state(fields.nested("ranker").data, OnlineRanker, f"{where}.ranker")
        bandit = fields.raw("bandit")
        return cls(ranker, None if bandit is None else load_state(bandit, StrategyBandit, f"{where}.bandit"))


def read_partition_learners(record: bytes, where: str) -> PartitionLearners:
    """The learners of a partition-learners table record: JSON state, or a legacy pickle (base64) that is
    migrated; `StateError` for anything else."""
    if record[:1] == b"{":
        try:
            data = orjson.loads(record)
        except orjson.JSONDecodeError as exc:
            raise StateError(f"{where}: not JSON ({exc})") from exc
    else:
        try:
            data = legacy.migrate(record.decode("ascii"), where)
        except UnicodeDecodeError as exc:
            raise StateError(f"{where}: neither JSON nor a legacy record ({exc})") from exc
    return load_state(data, PartitionLearners, where)
