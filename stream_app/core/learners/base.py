"""The contracts of the learners whose state the workers persist."""

from __future__ import annotations

import abc
import base64
import pickle
from typing import Any

from ..events import Event


class Persistent(abc.ABC):
    """State that travels in a table's changelog: pickled, base64 text. `clone` gives a fresh
    learner with the same settings and no state."""

    def clone(self) -> "Persistent":
        return self._fresh()

    @abc.abstractmethod
    def _fresh(self) -> "Persistent": ...

    def dumps(self) -> str:
        return base64.b64encode(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")

    @staticmethod
    def loads(text: str) -> Any:
        # Only ever the worker's own state, read back from its own changelog topic.
        return pickle.loads(base64.b64decode(text))


class ProfileLearner(Persistent):
    """Learns from a user's events, one at a time, and may adjust the user's profile.

    Settings are constructor arguments; randomness, if any, comes only from a `seed` argument.
    `learn_one` is called before the event is folded into the profile, so a learner sees the
    profile as it was when the event happened.
    """

    #: Key of this learner's state in `Profile.learner_state`.
    name: str = ""

    @abc.abstractmethod
    def learn_one(self, profile: Any, event: Event) -> None: ...

    def public(self) -> dict[str, Any]:
        """What the public profile shows of this learner (its `stats`)."""
        return {}
