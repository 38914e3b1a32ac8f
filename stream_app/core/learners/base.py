"""The contracts of the learners whose state the workers persist."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, TypeVar

from ..events import Event
from . import legacy
from .state import Fields, StateError

P = TypeVar("P", bound="Persistent")

#: Every persisted learner class by its state's "kind".
KINDS: dict[str, type["Persistent"]] = {}


class Persistent(abc.ABC):
    """State that travels in a table's changelog as plain versioned data: `to_state()` is a JSON-able
    object `{"kind", "v", ...}` and `load_state` the one way back (no pickle: a record can choose data,
    never code). `clone` gives a fresh learner with the same settings and no state."""

    #: The state's "kind" (unique) and schema version; a class reads the versions in `reads`.
    kind: ClassVar[str] = ""
    version: ClassVar[int] = 1
    reads: ClassVar[frozenset[int]] = frozenset({1})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            KINDS[cls.kind] = cls

    def clone(self) -> "Persistent":
        return self._fresh()

    @abc.abstractmethod
    def _fresh(self) -> "Persistent": ...

    def snapshot(self: P) -> P:
        """An independent copy as it is now, to put back if what changes it next fails part-way: its record read
        back (a subclass with a cheaper copy overrides this)."""
        return load_state(self.to_state(), type(self))

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "v": self.version, **self._state()}

    @abc.abstractmethod
    def _state(self) -> dict[str, Any]:
        """The learner's settings and state: numbers, strings, lists and objects of them."""

    @classmethod
    @abc.abstractmethod
    def _from_state(cls: type[P], fields: Fields, version: int) -> P:
        """The learner `_state` wrote (version `version`, one of `reads`); reads every field."""


def load_state(data: Any, expected: type[P], where: str = "learner state") -> P:
    """The learner a state record describes, which must be an `expected`; a record of an unknown kind or
    version, or of the wrong shape, raises `StateError` (nothing it names is run or imported)."""
    fields = Fields(data, where)
    kind = fields.text("kind")
    cls = KINDS.get(kind)
    if cls is None or not issubclass(cls, expected):
        raise StateError(f"{where}: unknown kind {kind!r} (expected a {expected.__name__})")
    version = fields.integer("v")
    if version not in cls.reads:
        raise StateError(f"{where}: {kind} version {version} is not one this release reads {sorted(cls.reads)}")
    fields.where = f"{where} ({kind} v{version})"
    try:
        learner = cls._from_state(fields, version)
    except StateError:
        raise
    except (TypeError, ValueError, KeyError, OverflowError) as exc:  # settings a constructor refuses
        raise StateError(f"{fields.where}: {exc!r}") from exc
    fields.done()
    return learner


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


def read_profile_learner(stored: Any, name: str, where: str) -> ProfileLearner:
    """The learner `name` of a profile's `learner_state`: state data, or a legacy pickle (text) that is
    migrated; `StateError` for anything else, or another learner's state."""
    data = legacy.migrate(stored, where) if isinstance(stored, str) else stored
    learner = load_state(data, ProfileLearner, where)
    if learner.name != name:
        raise StateError(f"{where}: holds the state of {learner.name!r}")
    return learner


__all__ = ["KINDS", "Persistent", "ProfileLearner", "StateError", "load_state", "read_profile_learner"]
