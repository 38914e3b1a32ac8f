"""Online learners (River) whose state the workers persist, as plain versioned data (state.py).

Each learner is one class in its own file. Per-user learners (`ProfileLearner`) keep their state
in the profile (`Profile.learner_state`), so it is persisted in the table's changelog and recovered
with it; public snapshots leave it out. The ranker, the recency positions and the strategy bandit are
one per input partition (`PartitionLearners`), in their own table. State written by releases that pickled it is
migrated once it is read (legacy.py).
"""

from .base import KINDS, Persistent, ProfileLearner, load_state, read_profile_learner
from .behaviour import BehaviourStats
from .interest_drift import InterestDrift
from .partition_state import (
    PartitionLearners,
    before_record,
    learners_writes,
    read_before_record,
    read_partition_learners,
)
from .ranker import OnlineRanker, feedback_labels
from .recency_positions import RecencyPositions
from .state import StateError
from .strategy_bandit import StrategyBandit, segment_of

#: Every learner, for the shared state/clone tests.
LEARNERS: tuple[type[Persistent], ...] = (BehaviourStats, InterestDrift, OnlineRanker, RecencyPositions, StrategyBandit)

__all__ = ["KINDS", "LEARNERS", "BehaviourStats", "InterestDrift", "OnlineRanker", "PartitionLearners", "Persistent",
           "ProfileLearner", "RecencyPositions", "StateError", "StrategyBandit", "feedback_labels", "before_record",
           "learners_writes", "load_state", "read_before_record", "read_partition_learners", "read_profile_learner",
           "segment_of"]
