"""A JSON object that gives a name twice, found.

JSON readers disagree on `{"user_id": "a", "user_id": "b"}`: orjson (the workers') keeps the last value, others keep
the first or refuse it (RFC 8259: the names of an object SHOULD be unique, and readers then behave unpredictably). An
input the workers applied to user b could be read by another consumer of the topic, or by a re-drive, as user a's,
so a record that gives a name two values is refused, as unreadable JSON is (the same value twice reads alike
everywhere and passes).
"""

from __future__ import annotations

import json
from typing import Any


def repeated_name(payload: bytes, data: Any) -> str | None:
    """Why `payload` (JSON; `data`: orjson's reading of it) is refused for a name given twice in one object with two
    values, or None.

    The usual record is settled without a second reading. In a payload without a backslash every quote opens or
    closes a text, so each `":` ends a name (no value is followed by a colon) or opens a text that starts with a colon;
    where no quote is followed by white space either (a name's colon may come after some), every name is counted so.
    A repeat is a name written twice and read once: a payload holding no more `":` than orjson's reading holds names
    has none. Other payloads are read again with the standard library, which hands every name, repeats included."""
    if (b"\\" not in payload and b'" ' not in payload and b'"\n' not in payload and b'"\t' not in payload
            and b'"\r' not in payload and payload.count(b'":') <= _name_count(data)):
        return None
    try:
        json.loads(payload, object_pairs_hook=_refuse_repeats)
    except _Repeated as repeated:
        name = repr(repeated.args[0])
        return (f"the name {name if len(name) <= 60 else name[:60] + '...'} is given twice in one object with two values "
                "(JSON readers differ on which counts): give each field once")
    except (ValueError, RecursionError):  # read by orjson, refused by the stdlib (nested deeper than it reads)
        return None
    return None


_CONTAINERS = {dict, list}  # orjson reads no subclass of them


def _name_count(data: Any) -> int:
    """How many names the objects in `data` hold."""
    if isinstance(data, dict):
        count = len(data)
        for value in data.values():
            if value.__class__ in _CONTAINERS:
                count += _name_count(value)
        return count
    if isinstance(data, list):
        return sum(_name_count(value) for value in data if value.__class__ in _CONTAINERS)
    return 0


class _Repeated(Exception):
    pass


def _refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out and _written(out[name]) != _written(value):  # the same value again reads alike everywhere
            raise _Repeated(name)
        out[name] = value
    return out


def _written(value: Any) -> str:
    """A value as one text (1, 1.0 and true apart, which Python's == holds equal)."""
    return json.dumps(value, sort_keys=True)
