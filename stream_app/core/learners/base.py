"""The contracts of the learners whose state the workers persist."""

from __future__ import annotations

import abc
import base64
import io
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
        """Learner state read back from a changelog topic. Whoever can write to that topic chooses
        these bytes, so only the classes learner state is made of may be named (`StateUnpickler`):
        a forged record raises `pickle.UnpicklingError` instead of running code."""
        return StateUnpickler(io.BytesIO(base64.b64decode(text))).load()


def _attribute(obj: Any, name: str) -> Any:
    """`getattr` for pickled bound methods (River keeps some as attributes), without dunder names,
    the way from an allowed object to a function's globals and the builtins."""
    if name.startswith("__"):
        raise pickle.UnpicklingError(f"learner state may not name the attribute {name!r}")
    return getattr(obj, name)


class StateUnpickler(pickle.Unpickler):
    """Resolves only the globals learner state is made of: classes of River and of this package's
    learners, plain containers and `random.Random`. Anything else (os, subprocess, eval, ...) is refused."""

    ALLOWED_PREFIXES = ("river.", "stream_app.core.learners.")
    #: Where earlier releases kept the learners (state they wrote still loads).
    MOVED = {"stream_app.learners.": "stream_app.core.learners."}
    ALLOWED = {("collections", "defaultdict"), ("collections", "Counter"), ("collections", "OrderedDict"),
               ("collections", "deque"), ("random", "Random"), ("copyreg", "_reconstructor"),
               *(("builtins", name) for name in ("object", "dict", "list", "tuple", "set", "frozenset", "int",
                                                 "float", "complex", "bool", "str", "bytes", "bytearray"))}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("builtins", "getattr"):
            return _attribute
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        for old, new in self.MOVED.items():
            if module.startswith(old):
                module = new + module[len(old):]
        if module.startswith(self.ALLOWED_PREFIXES) and not name.startswith("__"):
            found = super().find_class(module, name)
            if isinstance(found, type):  # classes only: no function of those packages is called
                return found
        raise pickle.UnpicklingError(f"learner state may not name {module}.{name}")


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
