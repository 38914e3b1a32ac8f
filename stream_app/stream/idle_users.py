"""Which users of a worker's profile table are idle (STREAM_APP_USER_IDLE_MS), without reading every profile at
each eviction pass."""

from __future__ import annotations

from typing import Any

import orjson


class IdleUsers:
    """The last event time of each user in the worker's profile table, to find idle users without
    reading every profile: what the batches applied, and for the other users their stored profiles,
    read once after an assignment."""

    def __init__(self, data: Any):
        self.data = data
        self.last_seen: dict[str, int] = {}
        self.complete = False  # the stored profiles were read

    def forget(self) -> None:
        """After a rebalance: the table changed under us."""
        self.last_seen = {}
        self.complete = False

    def before(self, cutoff_ms: int) -> list[str]:
        if not self.complete:
            for key, value in self.data.items():
                user_id = key.decode()
                if user_id in self.last_seen:  # applied since: newer than the stored profile
                    continue
                try:
                    seen = orjson.loads(value).get("last_seen")
                except (orjson.JSONDecodeError, AttributeError):  # not a profile: its user's events are
                    continue  # dead-lettered (bad_state), it is never evicted
                if isinstance(seen, int) and not isinstance(seen, bool):
                    self.last_seen[user_id] = seen
            self.complete = True
        return [user_id for user_id, seen in self.last_seen.items() if seen < cutoff_ms]

    def touched(self, user_id: str, last_seen: int | None) -> None:
        if last_seen is not None:
            self.last_seen[user_id] = last_seen

    def drop(self, user_id: str) -> bool:
        return self.last_seen.pop(user_id, None) is not None
