"""Learner state as plain versioned data: `{"kind": <learner>, "v": <schema version>, ...}` with numbers,
strings, lists and objects only, read back field by field (`Fields`), each of the type it must have.

Whoever can write to a changelog topic chooses these records, so reading one runs no code it names and
a wrong record fails here, with a `StateError` that says what is wrong, never later in a learner. River
objects inside a learner are written as their numbers (`mean_state`, `random_state`, ...) and rebuilt
by constructing the River object from the learner's settings and setting those numbers back, so a
restored learner goes on exactly, float for float, as the one that was written.
"""

from __future__ import annotations

import base64
import math
import random
import struct
from typing import Any, Callable, TypeVar

import numpy as np
from river import stats


class StateError(ValueError):
    """A learner-state record of an unknown kind or version, or of the wrong shape."""


T = TypeVar("T")

#: The most a stored count may be: counting on from it stays within the 64-bit integers JSON (orjson) writes.
MAX_COUNT = 2**62


class Fields:
    """The fields of one state record (a learner's, or a River object's inside it), read by type.
    `done()` refuses fields nobody read: a record has the shape of its version, no more, no less."""

    def __init__(self, data: Any, where: str):
        if not isinstance(data, dict):
            raise StateError(f"{where}: expected an object, not {type(data).__name__}")
        self.data = data
        self.where = where
        self.seen: set[str] = set()

    def _get(self, name: str) -> Any:
        if name not in self.data:
            raise StateError(f"{self.where}: the field {name!r} is missing")
        self.seen.add(name)
        return self.data[name]

    def _wrong(self, name: str, wanted: str) -> StateError:
        return StateError(f"{self.where}: {name!r} must be {wanted}, not {self.data[name]!r:.80}")

    def raw(self, name: str) -> Any:
        """The field as stored, for the caller to check."""
        return self._get(name)

    def number(self, name: str, minimum: float = -math.inf, maximum: float = math.inf) -> float:
        value = self._get(name)
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not minimum <= value <= maximum):
            raise self._wrong(name, "a finite number" if (minimum, maximum) == (-math.inf, math.inf)
                              else f"a number from {minimum:g} to {maximum:g}")
        return float(value)

    def optional_number(self, name: str, minimum: float = -math.inf, maximum: float = math.inf) -> float | None:
        return None if self._get(name) is None else self.number(name, minimum, maximum)

    def share(self, name: str) -> float | None:
        """A mean of 0/1 outcomes, a probability or a rate: from 0 to 1, or None (none yet)."""
        return self.optional_number(name, 0.0, 1.0)

    def integer(self, name: str, minimum: int = 0, maximum: int = MAX_COUNT) -> int:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self._wrong(name, f"an integer of at least {minimum}, at most {maximum}")
        return value

    def optional_integer(self, name: str) -> int | None:
        return None if self._get(name) is None else self.integer(name, minimum=-(2**63), maximum=2**63 - 1)

    def flag(self, name: str) -> bool:
        value = self._get(name)
        if not isinstance(value, bool):
            raise self._wrong(name, "true or false")
        return value

    def text(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise self._wrong(name, "a string")
        return value

    def optional_text(self, name: str) -> str | None:
        return None if self._get(name) is None else self.text(name)

    def texts(self, name: str) -> tuple[str, ...]:
        value = self._get(name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._wrong(name, "a list of strings")
        return tuple(value)

    def numbers(self, name: str, minimum: float = -math.inf) -> list[float]:
        value = self._get(name)
        if not isinstance(value, list) or not all(
                not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v >= minimum
                for v in value):
            raise self._wrong(name, f"a list of finite numbers of at least {minimum}")
        return [float(v) for v in value]

    def floats(self, name: str) -> np.ndarray:
        """Finite float64s packed by `pack_floats`."""
        value = self._get(name)
        try:
            array = np.frombuffer(base64.b64decode(value, validate=True), dtype="<f8")
        except (ValueError, TypeError) as exc:
            raise self._wrong(name, "float64s packed as base64") from exc
        if not np.isfinite(array).all():
            raise self._wrong(name, "finite numbers")
        return array.astype(float)

    def mapping(self, name: str, read: Callable[["Fields", str], T]) -> dict[str, T]:
        """An object whose every value is read by `read` (e.g. `Fields.number`), in its stored order."""
        inner = self.nested(name)
        out = {key: read(inner, key) for key in inner.data}
        inner.done()
        return out

    def optional_mapping(self, name: str, read: Callable[["Fields", str], T]) -> dict[str, T] | None:
        return None if self._get(name) is None else self.mapping(name, read)

    def nested(self, name: str) -> "Fields":
        return Fields(self._get(name), f"{self.where}.{name}")

    def done(self) -> None:
        extra = self.data.keys() - self.seen
        if extra:
            raise StateError(f"{self.where}: unknown fields {sorted(extra)}")


def pack_floats(values: np.ndarray) -> str:
    """float64s as base64 of their little-endian bytes: exact, and read back by `Fields.floats`."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f8").tobytes()).decode("ascii")


# ---------------------------------------------------------------------------------- River objects

def mean_state(mean: stats.Mean) -> dict[str, float]:
    return {"n": float(mean.n), "mean": float(mean._mean)}


def mean_from(fields: Fields) -> stats.Mean:
    mean = stats.Mean()
    mean.n, mean._mean = fields.number("n"), fields.number("mean")
    fields.done()
    return mean


_MT_WORDS = 624  # Mersenne Twister: 624 state words and the position in them
_MT_VERSION = 3  # random.Random.getstate()'s format


def random_state(rng: random.Random) -> dict[str, Any]:
    """A `random.Random`'s whole state, its 625 words packed as base64 (3.3 kB instead of 7 as numbers)."""
    version, words, gauss = rng.getstate()
    return {"mt": base64.b64encode(struct.pack(f"<{_MT_WORDS + 1}I", *words)).decode("ascii"), "gauss": gauss}


def set_random_state(rng: random.Random, fields: Fields) -> None:
    try:
        packed = base64.b64decode(fields.text("mt"), validate=True)
        words = struct.unpack(f"<{_MT_WORDS + 1}I", packed)
        rng.setstate((_MT_VERSION, words, fields.optional_number("gauss")))
    except (ValueError, TypeError, struct.error) as exc:
        raise StateError(f"{fields.where}: not a random generator's state ({exc})") from exc
    fields.done()
