"""What the workers learn per input partition, persisted together in one table record."""

from __future__ import annotations

from typing import Any

import orjson

from . import legacy
from .base import Persistent, load_state
from .ranker import OnlineRanker
from .recency_positions import RecencyPositions
from .state import MAX_COUNT, Fields, StateError
from .strategy_bandit import StrategyBandit


class PartitionLearners(Persistent):
    """The partition's online ranker, the recency positions its users come back to and, if exploration
    is on, its strategy bandit. One object so one changelog record per partition and batch carries
    them all. `writes` counts the records written of them (v2): the table restores the most written
    one, not a late record of an earlier owner. A record written before the positions (v1, v2) starts
    them afresh."""

    kind = "partition_learners"
    version = 3
    reads = frozenset({1, 2, 3})

    def __init__(self, ranker: OnlineRanker, bandit: StrategyBandit | None = None, writes: int = 0,
                 positions: RecencyPositions | None = None):
        self.ranker = ranker
        self.bandit = bandit
        self.writes = writes
        self.positions = positions if positions is not None else RecencyPositions()

    def _fresh(self) -> "PartitionLearners":
        return PartitionLearners(self.ranker.clone(), self.bandit.clone() if self.bandit is not None else None,
                                 positions=self.positions.clone())

    def snapshot(self) -> "PartitionLearners":
        """Copies, not records read back: a batch handler takes one before every event (to put back if the event
        fails part-way); the bandit, off by default, goes through its record."""
        return PartitionLearners(self.ranker.snapshot(),
                                 None if self.bandit is None else self.bandit.snapshot(), self.writes,
                                 self.positions.snapshot())

    def _state(self) -> dict[str, Any]:
        return {"writes": self.writes, "ranker": self.ranker.to_state(),
                "bandit": self.bandit.to_state() if self.bandit is not None else None,
                "positions": self.positions.to_state()}

    @classmethod
    def _from_state(cls, fields: Fields, version: int) -> "PartitionLearners":
        where = fields.where
        writes = fields.integer("writes") if version >= 2 else 0
        ranker = load_state(fields.nested("ranker").data, OnlineRanker, f"{where}.ranker")
        bandit = fields.raw("bandit")
        positions = (load_state(fields.nested("positions").data, RecencyPositions, f"{where}.positions")
                     if version >= 3 else None)
        return cls(ranker, None if bandit is None else load_state(bandit, StrategyBandit, f"{where}.bandit"), writes,
                   positions)


def _record_data(record: bytes, where: str) -> Any:
    if record[:1] == b"{":
        try:
            return orjson.loads(record)
        except orjson.JSONDecodeError as exc:
            raise StateError(f"{where}: not JSON ({exc})") from exc
    try:
        return legacy.migrate(record.decode("ascii"), where)
    except UnicodeDecodeError as exc:
        raise StateError(f"{where}: neither JSON nor a legacy record ({exc})") from exc


def read_partition_learners(record: bytes, where: str) -> PartitionLearners:
    """The learners of a partition-learners table record: JSON state, or a legacy pickle (base64) that is
    migrated; `StateError` for anything else."""
    return load_state(_record_data(record, where), PartitionLearners, where)


def before_record(writes: int, before: bytes | None) -> bytes:
    """The record of the learners as they were before their record `writes` (`before`: their state's JSON; None: new
    learners), which a worker takes up again when the profiles stored with that record were lost
    (`stream.learner_table`)."""
    return b'{"writes":%d,"before":%s}' % (writes, b"null" if before is None else before)


def read_before_record(record: bytes, where: str) -> tuple[int, PartitionLearners | None]:
    """(the `writes` of the record it is the state before, that state: None for new learners); `StateError` if it
    cannot be read."""
    fields = Fields(_record_data(record, where), where)
    writes, before = fields.integer("writes"), fields.raw("before")
    fields.done()
    return writes, None if before is None else load_state(before, PartitionLearners, f"{where}.before")


def learners_writes(record: bytes) -> int | None:
    """The `writes` of a partition-learners table record (0 before v2), None if it is not JSON state."""
    try:
        writes = orjson.loads(record).get("writes", 0)
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return writes if type(writes) is int and 0 <= writes <= MAX_COUNT else None
