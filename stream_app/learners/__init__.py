"""Online learners (River) whose state the workers persist.

Each learner is one class in its own file. Per-user learners (`ProfileLearner`) keep their state
in the profile (`Profile.learner_state`), so it is persisted in the table's changelog and recovered
with it; public snapshots leave it out. The ranker is one per input partition, in its own table.
"""

from .base import Persistent, ProfileLearner
from .behaviour import BehaviourStats
from .interest_drift import InterestDrift
from .ranker import OnlineRanker, feedback_labels

#: Every learner, each with a way to build one, for the shared pickle/clone test.
LEARNERS: tuple[type[Persistent], ...] = (BehaviourStats, InterestDrift, OnlineRanker)

__all__ = ["LEARNERS", "BehaviourStats", "InterestDrift", "OnlineRanker", "Persistent", "ProfileLearner",
           "feedback_labels"]
