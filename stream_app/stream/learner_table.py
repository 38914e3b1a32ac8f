"""The partition learners' table, kept in step with the profiles' across a crash between their changelogs.

A batch's learners record (one per input partition) and its profile records go to two changelog topics, stored
each on its own: no transaction binds them (Tansu has none). The learners' record goes first, with the batch's other
records, beside a record of the learners as the record before it left them (key `<partition>:before`, in the same
record batch of the same changelog partition: stored both or neither; earlier releases pass over that key); the
profiles go once both are stored, each marked with the learners' `writes` of that record (`with_learners_mark`). A
worker that restores a partition whose newest mark is below its learners' writes knows the profiles of the learners'
last batch were lost: that batch is read again and applied to the profiles as they were, so it takes up the learners
as they were too. A batch that writes a profile record of a partition without a mark (a tombstone, or any record
with the ranker off) deletes the partition's state before, with the first records: such records may replace the
ones that carried the last mark, and the state before is only taken up beside a marked profile of its batch. Not while
that state is the one taken up and the batch it is before waits to be applied again: its profiles' marks are below
its record's whatever such records take away, and the state goes with the learners' next record.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Iterable

import orjson

from ..config import Settings
from ..contracts import Rejection, Source
from ..core.learners import (
    PartitionLearners,
    StateError,
    before_record,
    learners_writes,
    read_before_record,
    read_partition_learners,
)
from ..core.learners.state import MAX_COUNT
from ..core.process import new_partition_learners, with_current_settings

log = logging.getLogger("stream_app.worker")

#: The field of a profile's table record: its partition's learners `writes` in the record stored with it.
MARK_FIELD = b"learners_writes"
#: The learners mark at the end of a profile's table record (`with_learners_mark`)
MARK_AT_END = re.compile(rb',"' + re.escape(MARK_FIELD) + rb'":(\d{1,19})\}\Z')


def with_learners_mark(snapshot: bytes, writes: int) -> bytes:
    """A profile's table record (`Profile.snapshots`' internal JSON) marked with its partition's learners `writes`."""
    return b'%s,"%s":%d}' % (snapshot[:-1], MARK_FIELD, writes)


def learners_mark(record: bytes) -> int | None:
    """The learners `writes` a profile's table record was stored with (None: not marked)."""
    found = MARK_AT_END.search(record, max(0, len(record) - 40))
    mark = int(found.group(1)) if found is not None else None
    return mark if mark is not None and mark <= MAX_COUNT else None  # a forged one past any count of writes: none


def before_key(partition: int) -> bytes:
    """The key of the learners before the partition's last record (`before_record`)."""
    return b"%d:before" % partition


def restored_offset(table_data: Any, key: bytes) -> int | None:
    """The changelog offset of the key's value if a table restored it (table_stores.RestoredStore) and
    the worker has not written it since; else None."""
    offset_of = getattr(table_data, "restored_offset", None)
    return offset_of(key) if offset_of is not None else None


class PartitionState:
    """The learners of each input partition (ranker, bandit): live objects, restored from their table
    on first use after an assignment, written back (table + changelog) for the partitions a batch used.
    `profile_marks(partition)`: the highest learners mark among the partition's profiles in their table."""

    def __init__(self, data: Any, settings: Settings, changelog: str | None = None,
                 profile_marks: Callable[[int], int | None] | None = None):
        self.data = data
        self.settings = settings
        self.changelog = changelog or f"{settings.group_id}-partition-learners-changelog"
        self.profile_marks = profile_marks or (lambda partition: None)
        self.loaded: dict[int, PartitionLearners] = {}  # restored or new since the last assignment
        self.written: dict[int, bytes | None] = {}  # their state as loaded or last written (None: new learners)
        self.taken_before: set[int] = set()  # loaded as before their stored record, which is to be written again
        self.stored_labels: dict[int, tuple[bytes, int | None]] = {}  # a record read for its labels -> them

    def get(self, partition: int, rejected: Callable[[Rejection], None]) -> PartitionLearners | None:
        """The partition's learners (a state that cannot be read goes to `rejected`: they start afresh)."""
        if not self.settings.ranker:
            return None
        learners = self.loaded.get(partition)
        if learners is None:
            key = str(partition).encode()
            stored, unreadable, redone = self.data.get(key), False, None
            if stored is not None:
                try:
                    restored, redone = self._restored(partition, stored, rejected)
                    if restored is not None:
                        learners = with_current_settings(restored, self.settings, partition)
                    if redone is not None:
                        self.taken_before.add(partition)
                except StateError as exc:  # forged, or of a release that did not write it: learn afresh, go on
                    unreadable = True
                    rejected(Rejection("bad_state", f"{exc}; they start afresh",
                                       Source(self.changelog, partition, restored_offset(self.data, key)), key, stored))
            if learners is None:
                learners = new_partition_learners(self.settings, partition)
                if unreadable:  # its writes counted on, above the profiles' marks and the record it replaces
                    learners.writes = max(learners_writes(stored) or 0, self.profile_marks(partition) or 0)
                elif redone is not None:  # new before that record: it is written again with its own writes
                    learners.writes = redone - 1
                self.written[partition] = None
            else:
                self.written[partition] = orjson.dumps(learners.to_state())
            self.loaded[partition] = learners
        return learners

    def _restored(self, partition: int, stored: bytes, rejected: Callable[[Rejection], None]
                  ) -> tuple[PartitionLearners | None, int | None]:
        """The learners of the partition's table record, or those before it if its profiles were lost (None: new),
        and in that case the record's writes."""
        where = f"partition {partition}'s learners"
        learners = read_partition_learners(stored, where)
        mark = self.profile_marks(partition)
        key = before_key(partition)
        before = self.data.get(key)
        if (mark is not None and mark >= learners.writes) or before is None:
            return learners, None
        try:
            before_writes, state = read_before_record(before, f"{where} before")
        except StateError as exc:
            rejected(Rejection("bad_state", f"{exc}; the learners after it are kept",
                               Source(self.changelog, partition, restored_offset(self.data, key)), key, before))
            return learners, None
        if before_writes != learners.writes:  # the state before an earlier record (an earlier release wrote since)
            return learners, None
        log.warning("partition %d: its learners' record %d was stored without the profiles of its batch (a crash "
                    "between the two changelogs; the newest profile mark is %s): that batch is applied again, to the "
                    "learners before it", partition, learners.writes, mark)
        return state, before_writes

    def records(self, partition: int, *, before: bool) -> list[tuple[bytes, bytes]]:
        """The partition's table records: its learners' state as JSON, one more write of them, and (`before`) the
        state its previous record held, as (key, value)."""
        learners = self.loaded[partition]
        learners.writes += 1
        self.taken_before.discard(partition)
        state = orjson.dumps(learners.to_state())
        previous = self.written.get(partition)
        self.written[partition] = state
        out = [(str(partition).encode(), state)]
        if before:
            out.append((before_key(partition), before_record(learners.writes, previous)))
        return out

    def drop_before(self, partition: int, rejected: Callable[[Rejection], None]) -> bytes | None:
        """Delete the partition's state before its last record from the table, unless its learners were taken up from
        it and have not been written since; its key if it was deleted."""
        key = before_key(partition)
        if key not in self.data:
            return None
        self.get(partition, rejected)  # decides, if no batch did yet, whether the state before is taken up
        if partition in self.taken_before:
            return None
        del self.data[key]
        return key

    def ranker_labels(self, partitions: Iterable[int]) -> dict[int, int]:
        """The labels each partition's ranker learned: of its learners if loaded, else of its table record (a rebalance
        clears the loaded ones, and a partition no batch used since still has them); for the metrics."""
        if not self.settings.ranker:
            return {}
        labels = {p: self.loaded[p].ranker.labels if p in self.loaded else self._stored_labels(p) for p in partitions}
        return {p: n for p, n in labels.items() if n is not None}

    def _stored_labels(self, partition: int) -> int | None:
        """The labels in the partition's table record (None: none, or not JSON state: shown once a batch loads it).
        Read, not loaded: a scrape must not take up learners, nor dead-letter a state it cannot read."""
        stored = self.data.get(str(partition).encode())
        if stored is None:
            return None
        seen = self.stored_labels.get(partition)
        if seen is not None and seen[0] is stored:  # each scrape would parse every record again
            return seen[1]
        try:
            labels = orjson.loads(stored)["ranker"]["labels"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            labels = None
        labels = labels if type(labels) is int and labels >= 0 else None
        self.stored_labels[partition] = (stored, labels)
        return labels

    def forget(self) -> None:
        """After a rebalance: the table holds the truth (recovered from the changelog)."""
        self.loaded.clear()
        self.written.clear()
        self.taken_before.clear()
        self.stored_labels.clear()
