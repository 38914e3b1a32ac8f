"""Per-user online learners (River) whose state lives in the profile.

Each learner is one class in its own file, built on `ProfileLearner`; `LEARNERS` lists the ones the
core runs. Their state is pickled into the profile (`Profile.learner_state`), so it is persisted in
the table's changelog and recovered with it; public snapshots leave it out.
"""

from .base import ProfileLearner
from .interest_drift import InterestDrift

#: Every learner, for the shared pickle/clone test.
LEARNERS: tuple[type[ProfileLearner], ...] = (InterestDrift,)

__all__ = ["LEARNERS", "ProfileLearner", "InterestDrift"]
