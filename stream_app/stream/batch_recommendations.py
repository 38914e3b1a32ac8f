"""A batch's recommendations, kept in its changed profiles' table records, published again if their events come again.

A batch stores its records in three steps (output.Outbox): the rest (dead letters, snapshots, learners), the profiles'
changelog, then the recommendations. A worker that dies before the changelog step published no recommendation of the
batch: whoever owns the partition next applies its events again, as new. One that dies after it left the events applied:
read again, they are duplicates, and their recommendations are in their users' records, published as they were made.
Ranking them again would not do: the next owner's item state may be ahead of the one the batch ranked from (it builds
it from every partition, and its own ran ahead), and two different lists for one event tell downstream two things.

A producer's retry of an input record (the same event at another offset) is a duplicate but not a redelivery: only the
input record a recommendation was made for (topic and offset; the partition is the user's) brings it back.
"""

from __future__ import annotations

from typing import Any

import orjson

#: The table record's field: [[input topic, input offset, recommendation], ...] of the batch that wrote the record.
FIELD = "batch_recommendations"
_FIELD_BYTES = FIELD.encode()


class BatchRecommendations:
    """The recommendations a batch made, by user (`add`), for its profile records (`record_with`).

    >>> made = BatchRecommendations()
    >>> made.add("u1", "events.clicks", 41, b'{"trigger_event_id":"e1","items":[]}')
    >>> record = made.record_with("u1", b'{"user_id":"u1"}')
    >>> record
    b'{"user_id":"u1","batch_recommendations":[["events.clicks",41,{"trigger_event_id":"e1","items":[]}]]}'
    >>> published_for(record, "events.clicks", 41, "e1")
    b'{"trigger_event_id":"e1","items":[]}'
    >>> published_for(record, "events.clicks", 42, "e1") is None  # a producer's retry: not resent
    True
    """

    def __init__(self) -> None:
        self.by_user: dict[str, list[bytes]] = {}

    def add(self, user_id: str, topic: str, offset: int, recommendation: bytes) -> None:
        """The recommendation made for the input record at (`topic`, the user's partition, `offset`), serialised as
        published."""
        entry = b"[%s,%d,%s]" % (orjson.dumps(topic), offset, recommendation)
        self.by_user.setdefault(user_id, []).append(entry)

    def record_with(self, user_id: str, record: bytes) -> bytes:
        """The user's table record (a JSON object) with the recommendations the batch made for them."""
        made = self.by_user.get(user_id)
        if not made:
            return record
        return b'%s,"%s":[%s]}' % (record[:-1], _FIELD_BYTES, b",".join(made))


def published_for(record: bytes | None, topic: str, offset: int, event_id: str) -> bytes | None:
    """The recommendation the batch that wrote `record` made for the input record at (`topic`, `offset`), serialised as it was
    published (orjson writes what it read back byte for byte); None if it made none (or the record is not readable)."""
    if record is None or _FIELD_BYTES not in record:  # most duplicates: a producer's retry, or no list was made
        return None
    try:
        made: Any = orjson.loads(record).get(FIELD)
    except (orjson.JSONDecodeError, AttributeError):
        return None
    for entry in made if isinstance(made, list) else ():
        if (isinstance(entry, list) and len(entry) == 3 and entry[:2] == [topic, offset]
                and isinstance(entry[2], dict) and entry[2].get("trigger_event_id") == event_id):
            return orjson.dumps(entry[2])
    return None
