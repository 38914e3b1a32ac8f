"""Online learners (River) whose state the workers persist.

Each learner is one class in its own file. Per-user learners (`ProfileLearner`) keep their state
in the profile (`Profile.learner_state`), so it is persisted in the table's changelog and recovered
with it; public snapshots leave it out. The ranker and the strategy bandit are one per input
partition (`PartitionLearners`), in their own table.
"""

from .base import Persistent, ProfileLearner
from .behaviour import BehaviourStats
from .interest_drift import InterestDrift
from .partition_state import PartitionLearners
from .ranker import OnlineRanker, feedback_labels
from .strategy_bandit import StrategyBandit, segment_of

#: Every learner, for the shared pickle/clone test.
LEARNERS: tuple[type[Persistent], ...] = (BehaviourStats, InterestDrift, OnlineRanker, StrategyBandit)

__all__ = ["LEARNERS", "BehaviourStats", "InterestDrift", "OnlineRanker", "PartitionLearners", "Persistent",
           "ProfileLearner", "StrategyBandit", "feedback_labels", "segment_of"]
