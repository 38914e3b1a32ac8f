"""Topic contracts: the JSON Schemas in `schemas/` compiled once, and the gate every input passes.

`check_input` turns raw Kafka bytes into an `Event` or a `Rejection` with a reason from a closed set
(the dead-letter schema lists them); nothing here raises on bad input.
"""

from __future__ import annotations

import base64
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import fastjsonschema
import orjson

from .core.events import Event

SCHEMA_VERSION = 1


def schema_dir() -> Path:
    """`schemas/` of a source checkout, or the copy packed into an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "schemas", here / "_schemas"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no schemas folder beside {here}")


@functools.cache
def load_schema(name: str, version: int = SCHEMA_VERSION) -> dict[str, Any]:
    return orjson.loads((schema_dir() / f"v{version}" / f"{name}.schema.json").read_bytes())


@functools.cache
def validator(name: str, version: int = SCHEMA_VERSION) -> Callable[[Any], Any]:
    return fastjsonschema.compile(load_schema(name, version))


@dataclass(frozen=True, slots=True)
class Source:
    topic: str
    partition: int | None = None
    offset: int | None = None

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str
    source: Source
    key: bytes | None
    payload: bytes

    def to_record(self, now_ms: int | None = None) -> dict[str, Any]:
        """The dead-letter message: the raw payload kept whole, as text when it is UTF-8."""
        record: dict[str, Any] = {
            "reason": self.reason,
            "detail": self.detail,
            "source": {"topic": self.source.topic, "partition": self.source.partition,
                       "offset": self.source.offset},
            "key_text": _text_or_none(self.key),
            "rejected_at": int(time.time() * 1000) if now_ms is None else now_ms,
            "schema_version": SCHEMA_VERSION,
        }
        text = _text_or_none(self.payload)
        if text is None:
            record["payload_base64"] = base64.b64encode(self.payload).decode("ascii")
        else:
            record["payload_text"] = text
        return record


def _text_or_none(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def check_input(payload: bytes | None, key: bytes | None, source: Source, expected_type: str | None,
                max_bytes: int) -> Event | Rejection:
    """Validate one input message. `expected_type` is the type the topic carries (None: any)."""
    payload = payload if payload is not None else b""

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(reason, detail, source, key, payload)

    if len(payload) > max_bytes:
        return reject("payload_too_large", f"{len(payload)} bytes, the limit is {max_bytes}")
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return reject("not_utf8", str(exc))
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return reject("invalid_json", str(exc))
    try:
        validator("input-event")(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        return reject("schema_violation", exc.message)
    if expected_type is not None and data["type"] != expected_type:
        return reject("type_topic_mismatch",
                      f"a {data['type']!r} event on the topic for {expected_type!r} events")
    if key is not None and key != data["user_id"].encode("utf-8"):
        return reject("key_mismatch", "the message key must be the user_id (profiles are partitioned by user)")
    if key is None:
        return reject("key_mismatch", "the message has no key: it must be the user_id (profiles are partitioned by user)")
    return Event.from_dict(data)
