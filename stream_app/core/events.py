"""The input event record (schemas/v1/input-event.schema.json)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

_OPTIONAL = ("session_id", "category", "price", "quantity", "dwell_ms", "stage", "context")

KINDS = ("browse", "click", "cart", "order")


def event_kind(event_type: str, stage: str | None) -> str:
    """The funnel step of an event: browse, click, or a purchase's stage (cart, else order)."""
    if event_type == "purchase":
        return "cart" if stage == "cart" else "order"
    return event_type


@dataclass(slots=True)
class Event:
    event_id: str
    user_id: str
    item_id: str
    type: str
    ts: int
    session_id: str | None = None
    category: str | None = None
    price: float | None = None
    quantity: int | None = None
    dwell_ms: int | None = None
    stage: str | None = None
    context: dict[str, Any] | None = field(default=None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Event":
        """From a valid record. JSON Schema counts 1.0 as an integer: the integer fields become ints, so
        what the event passes on (event_ts, profile versions) is written as an integer."""
        # the item id interned: the item state keeps it in many neighbour and follower lists, one object for all
        event = cls(data["event_id"], data["user_id"], sys.intern(data["item_id"]), data["type"], int(data["ts"]),
                    *(data.get(name) for name in _OPTIONAL))
        if event.quantity is not None:
            event.quantity = int(event.quantity)
        if event.dwell_ms is not None:
            event.dwell_ms = int(event.dwell_ms)
        return event

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event_id": self.event_id, "user_id": self.user_id,
                               "item_id": self.item_id, "type": self.type, "ts": self.ts,
                               "schema_version": 1}
        for name in _OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out
