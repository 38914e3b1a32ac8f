"""A batch's recommendations, kept in its changed profiles' changelog records, published again if their events come
again.

A batch stores its records in three steps (output.Outbox.later): the rest (dead letters, snapshots, learners), the
profiles' changelog, then the recommendations. A worker that dies before the changelog step ends published none of the
batch's recommendations: whoever owns the partition next applies its events again, as new. One that dies after it left
the events applied: read again, they are duplicates, and their recommendations are in their users' changelog records,
published as they were made. Ranking them again would not do: the next owner's item state may be ahead of the one the
batch ranked from (it builds it from every partition, and its own ran ahead), and two different lists for one event
tell downstream two things.

The worker's own table keeps its records without them (`BatchRecommendations.record_with` gives both): it published
them itself before its next batch, or died. A record taken up from the changelog (a restore, a takeover) holds those of
another owner's last batch for that user: `Redeliverable` keeps them in memory and writes them on into the user's next
records until the user's input lanes have passed their offsets, since a redelivered event may come after the user's
next new one here (a lane read late). A producer's retry of an input record (the same event at another offset) is a
duplicate but not a redelivery: only the input record a recommendation was made for brings it back.
"""

from __future__ import annotations

from typing import Any, Mapping

import orjson

from ..partitioning import partition_of
from .learner_table import MARK_AT_END

#: The changelog record's field: [[input topic, input offset, recommendation], ...] its batch published after it.
FIELD = "batch_recommendations"
_FIELD_BYTES = FIELD.encode()
#: How `record_with` writes it, the record's last field but the learners mark (learner_table.with_learners_mark)
_WRITTEN = b',"%s":[' % _FIELD_BYTES


class BatchRecommendations:
    """The recommendations a batch made, by user (`add`), for its profile records (`record_with`).

    >>> made = BatchRecommendations()
    >>> made.add("u1", "events.clicks", 41, b'{"trigger_event_id":"e1","items":[]}')
    58
    >>> changelog, table = made.record_with("u1", b'{"user_id":"u1"}', [])
    >>> changelog
    b'{"user_id":"u1","batch_recommendations":[["events.clicks",41,{"trigger_event_id":"e1","items":[]}]]}'
    >>> table
    b'{"user_id":"u1"}'
    >>> later = Redeliverable()
    >>> later.take_up("u1", orjson.loads(changelog)[FIELD])
    >>> later.published_for("u1", "events.clicks", 41, "e1")
    b'{"trigger_event_id":"e1","items":[]}'
    >>> later.published_for("u1", "events.clicks", 42, "e1") is None  # a producer's retry: not resent
    True
    """

    def __init__(self) -> None:
        self.by_user: dict[str, list[bytes]] = {}

    def add(self, user_id: str, topic: str, offset: int, recommendation: bytes) -> int:
        """The recommendation made for the input record at (`topic`, the user's partition, `offset`), serialised as
        published; returns the bytes it adds to the user's changelog record."""
        entry = _entry(topic, offset, recommendation)
        self.by_user.setdefault(user_id, []).append(entry)
        return len(entry) + 1

    def record_with(self, user_id: str, record: bytes, kept: list[tuple[str, int, bytes]]) -> tuple[bytes, bytes]:
        """(changelog, table) records of the user's profile `record` (a JSON object): the changelog's with the
        recommendations the batch made for the user and those `kept` (`Redeliverable.still_ahead`)."""
        made = [*(_entry(topic, offset, rec) for topic, offset, rec in kept), *self.by_user.get(user_id, ())]
        if not made:
            return record, record
        return b'%s,"%s":[%s]}' % (record[:-1], _FIELD_BYTES, b",".join(made)), record


def _entry(topic: str, offset: int, recommendation: bytes) -> bytes:
    """One element of `FIELD`, as written."""
    return b"[%s,%d,%s]" % (orjson.dumps(topic), offset, recommendation)


def without_lists(record: bytes) -> bytes:
    """A changelog record as the worker that wrote it keeps it in its table (`record_with`): without its lists.

    >>> without_lists(b'{"user_id":"u1","batch_recommendations":[["t",1,{}]],"learners_writes":3}')
    b'{"user_id":"u1","learners_writes":3}'
    """
    at = record.rfind(_WRITTEN)  # a quote inside a JSON text is escaped: only the field itself matches
    if at < 0:
        return record
    mark = MARK_AT_END.search(record, max(0, len(record) - 40))
    return record[:at] + record[mark.start() if mark is not None else len(record) - 1:]


class Redeliverable:
    """Recommendations kept in changelog records this worker took up (another owner's, or its own before a restart),
    by user: {(input topic, input offset): (trigger event id, recommendation as published)}."""

    def __init__(self) -> None:
        self.by_user: dict[str, dict[tuple[str, int], tuple[str, bytes]]] = {}

    def take_up(self, user_id: str, kept: Any) -> None:
        """The field `FIELD` of a changelog record of the user as read (entries not of its shape are passed over)."""
        entries = self.by_user.get(user_id, {})
        for entry in kept if isinstance(kept, list) else ():
            if (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and type(entry[1]) is int
                    and isinstance(entry[2], dict) and isinstance(trigger := entry[2].get("trigger_event_id"), str)):
                entries[(entry[0], entry[1])] = (trigger, orjson.dumps(entry[2]))  # as read: orjson writes it back
        if entries:
            self.by_user[user_id] = entries

    def published_for(self, user_id: str, topic: str, offset: int, event_id: str) -> bytes | None:
        """The recommendation kept for the input record at (`topic`, `offset`) if made for `event_id`, else None."""
        found = self.by_user.get(user_id, {}).get((topic, offset))
        return found[1] if found is not None and found[0] == event_id else None

    def kept_bytes(self, user_id: str) -> int:
        """About what the user's kept recommendations add to the user's next changelog record."""
        return sum(len(rec) + len(topic) + 24 for (topic, _), (_, rec) in self.by_user.get(user_id, {}).items())

    def still_ahead(self, user_id: str, partition: int, settled: Mapping[tuple[str, int], int]
                    ) -> list[tuple[str, int, bytes]]:
        """The user's kept recommendations whose input records may still be handed out again (`settled`: (topic,
        partition) -> the offset before which none of the lane will be: those before it came again and were published
        again, or were committed); the others are forgotten."""
        entries = self.by_user.get(user_id)
        if not entries:
            return []
        for key in [key for key in entries if key[1] < settled.get((key[0], partition), 0)]:
            del entries[key]
        if not entries:
            del self.by_user[user_id]
        return [(topic, offset, rec) for (topic, offset), (_, rec) in entries.items()]

    def drop(self, user_id: str) -> None:
        self.by_user.pop(user_id, None)

    def keep_only(self, owned: set[int], partitions: int) -> None:
        """After a rebalance: a partition's next owner takes its records up again."""
        for user_id in [user for user in self.by_user if partition_of(user, partitions) not in owned]:
            del self.by_user[user_id]
