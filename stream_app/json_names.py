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

#: The deepest nesting of objects and arrays a record may have: the standard library's reading below checks names
#: by recursion, which a deeper record could exhaust (orjson reads 1,023 levels); a fixed bound refuses the same
#: records in every worker and in `evaluate`, whatever their call stacks.
MAX_DEPTH = 100


def repeated_name(payload: bytes, data: Any) -> str | None:
    """Why `payload` (JSON; `data`: orjson's reading of it) is refused for a name given twice in one object with two
    values, or None.

    The usual record is settled without a second reading. In a payload without a backslash every quote opens or
    closes a text, so each `":` ends a name (no value is followed by a colon) or opens a text that starts with a colon;
    where no quote is followed by white space either (a name's colon may come after some), every name is counted so.
    A repeat is a name written twice and read once: a payload holding no more `":` than orjson's reading holds names
    has none. Other payloads are read again with the standard library, which hands every name, repeats included."""
    names, depth = _shape(data)
    if depth > MAX_DEPTH:
        return (f"its objects and arrays nest {depth} levels deep, more than {MAX_DEPTH} (too deep to check that no "
                "object gives a name two values): nest them less")
    if (b"\\" not in payload and b'" ' not in payload and b'"\n' not in payload and b'"\t' not in payload
            and b'"\r' not in payload and payload.count(b'":') <= names):
        return None
    try:
        json.loads(payload, object_pairs_hook=_refuse_repeats)
    except _Repeated as repeated:
        name = repr(repeated.args[0])
        return (f"the name {name if len(name) <= 60 else name[:60] + '...'} is given twice in one object with two values "
                "(JSON readers differ on which counts): give each field once")
    except ValueError:  # read by orjson, refused by the stdlib (an integer of over 4,300 digits): nothing to compare
        return None
    return None


_CONTAINERS = {dict, list}  # orjson reads no subclass of them


def _shape(data: Any) -> tuple[int, int]:
    """How many names the objects in `data` hold, and how deep its objects and arrays nest (walked with a list, not
    by recursion: orjson reads 1,023 levels, more than Python's recursion would)."""
    names = depth = 0
    pending = [(data, 1)] if data.__class__ in _CONTAINERS else []
    while pending:
        value, level = pending.pop()
        depth = max(depth, level)
        if value.__class__ is dict:
            names += len(value)
            value = value.values()
        pending.extend([(inner, level + 1) for inner in value if inner.__class__ in _CONTAINERS])
    return names, depth


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
    """A value as one text: 1, 1.0 and true apart, which Python's == holds equal (1.0 and 1e0, one double, alike)."""
    return json.dumps(value, sort_keys=True)
