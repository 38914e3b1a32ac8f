"""The stores of the worker's tables: Faust's memory store, remembering where each restored value came
from and restoring each key's newest value (a user's profile, a partition's learners) rather than the
last record."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Set

import faust
from faust.stores.memory import Store
from faust.types import TP

from ..core.learners import learners_writes
from ..core.profile import supersedes
from ..partitioning import partition_of
from .batch_recommendations import without_lists
from .learner_table import learners_mark

log = logging.getLogger(__name__)


class RestoredStore(Store):
    """Faust's memory store that keeps the changelog offset of each value it restored, until the worker
    writes that key: a state found unreadable is then dead-lettered with its record's offset."""

    stale_skipped = 0
    not_text_skipped = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.restored_offsets: dict[Any, int] = {}

    def __setitem__(self, key: Any, value: Any) -> None:
        self.restored_offsets.pop(key, None)
        self.data[key] = value
        partition = self._key_partition.get(key)
        if partition is None:  # Faust drops a revoked partition's keys by this map, restored ones only
            partition = self.partition_of_key(key)  # a key's partition never changes: hashed once, not per write
            if partition is not None:
                self._key_partition[key] = partition
        if partition is not None:
            self.noted(value, partition)

    def noted(self, value: Any, partition: int) -> None:
        """A value the store now holds for a key of `partition`, restored or written."""

    def partition_of_key(self, key: Any) -> int | None:
        """The table partition of a key the worker writes (None: not known from the key alone)."""
        return None

    def __delitem__(self, key: Any) -> None:
        self.restored_offsets.pop(key, None)
        self._key_partition.pop(key, None)  # else every user ever erased or evicted keeps an entry
        del self.data[key]

    def restored_offset(self, key: Any) -> int | None:
        return self.restored_offsets.get(key)

    def takes(self, new: Any, held: Any) -> bool:
        """Does a restored value take the place of the one held (None: none)?"""
        return True

    def as_held(self, new: Any, held: Any) -> Any:
        """The restored value as the table is to hold it."""
        return new

    def apply_changelog_batch(self, batch: Iterable[Any], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        data, partitions, offsets, skipped = self.data, self._key_partition, self.restored_offsets, 0
        not_text: list[Any] = []
        for event in batch:
            key = to_key(event.key)
            if not _is_text(key):  # every key the worker writes is text (a user id, a partition): forged or corrupt
                not_text.append(event.message)
                continue
            if event.message.value is None:  # a tombstone
                data.pop(key, None)
                partitions.pop(key, None)
                offsets.pop(key, None)
                continue
            value = self.as_held(to_value(event.value), data.get(key))
            if not self.takes(value, data.get(key)):
                skipped += 1
                continue
            data[key] = value
            partitions[key] = event.message.partition
            offsets[key] = event.message.offset
            self.noted(value, event.message.partition)
        if not_text:
            self.not_text_skipped += len(not_text)
            first = not_text[0]
            log.error("%s: left out %d changelog records whose key is not UTF-8 text (no worker writes one: forged "
                      "or corrupt; the first at %s[%s]@%s)", self.table_name, len(not_text),
                      getattr(first, "topic", "?"), first.partition, first.offset)
        if skipped:
            self.stale_skipped += skipped
            # mostly the worker's own earlier writes, read again when it keeps a partition through a
            # rebalance (Faust reads on from where its last restore ended); rarely an earlier owner's late ones
            log.info("%s: kept %d values newer than changelog records read after them", self.table_name, skipped)

    async def on_recovery_completed(self, active_tps: Set[TP], standby_tps: Set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        for key in [key for key in self.restored_offsets if key not in self.data]:  # of partitions gone
            del self.restored_offsets[key]


def _is_text(key: Any) -> bool:
    if not isinstance(key, bytes):
        return key is not None
    try:
        key.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class NewestProfileStore(RestoredStore):
    """Restores each user's newest snapshot (by generation and version) instead of the last record, and keeps the
    highest learners mark of each partition's (`learners_mark`).

    A batch that outlived the revoke of its partitions (retries.batch_finished_or_late) can land its
    changelog records after the new owner's. Restored last-wins, such a record would put back a profile
    that lacks the new owner's events, and the events after it would be counted on top of it (in the
    table and in Redis). A tombstone always applies."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.marks: dict[int, int] = {}

    def takes(self, new: Any, held: Any) -> bool:
        return supersedes(new, held)

    def as_held(self, new: Any, held: Any) -> Any:
        """The worker's own record read again (it keeps a partition through a rebalance; Faust reads on from where its
        last restore ended) stays as it holds it, without the lists its changelog record keeps (batch_recommendations):
        it published them. Another's keeps them, for their events read again."""
        return held if held is not None and isinstance(new, bytes) and held == without_lists(new) else new

    def noted(self, value: Any, partition: int) -> None:
        mark = learners_mark(value)
        if mark is not None and mark > self.marks.get(partition, 0):
            self.marks[partition] = mark

    async def on_recovery_completed(self, active_tps: Set[TP], standby_tps: Set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        # A partition gone drops its mark with its profiles: one that comes back is restored from its changelog's
        # start, and a mark of the worker's own writes that never reached it (a fenced late batch) must not hide
        # that the profiles of its learners' last batch were lost.
        owned = {tp.partition for tp in active_tps}
        for partition in [partition for partition in self.marks if partition not in owned]:
            del self.marks[partition]

    def highest_mark(self, partition: int) -> int | None:
        """The highest learners mark among the profiles of `partition` the store took up or was given, tombstoned
        since or not (learner_table): None if none was marked."""
        return self.marks.get(partition)

    def partition_of_key(self, key: Any) -> int | None:
        return partition_of(key.decode(), self.table.partitions)  # the user's input partition


class NewestLearnersStore(RestoredStore):
    """Restores each partition's most written learners (`PartitionLearners.writes`) instead of the last
    record, for the reason `NewestProfileStore` gives; records that are not JSON state take the place."""

    def takes(self, new: Any, held: Any) -> bool:
        if held is None:
            return True
        new_writes, held_writes = learners_writes(new), learners_writes(held)
        return new_writes is None or held_writes is None or new_writes >= held_writes

    def partition_of_key(self, key: Any) -> int | None:
        return int(key.split(b":")[0])  # the partition's own learners, or those before its last record


class _StoreTable(faust.Table):
    store_class: type[Store] = RestoredStore

    def _new_store_by_url(self, url: Any) -> Store:
        return self.store_class(url, self.app, self, table_name=self.name, key_type=self.key_type,
                                key_serializer=self.key_serializer, value_serializer=self.value_serializer,
                                value_type=self.value_type, loop=self.loop, options=self.options)


class LearnersTable(_StoreTable):
    """A Faust table whose store is a `NewestLearnersStore`."""

    store_class = NewestLearnersStore


class ProfileTable(_StoreTable):
    """A Faust table whose store is a `NewestProfileStore`."""

    store_class = NewestProfileStore


def add_table(app: faust.App, table_class: type[_StoreTable], name: str, partitions: int) -> faust.Table:
    """A bytes -> bytes table of `table_class` in the app, as `app.Table` makes one."""
    return app.tables.add(table_class(app, name=name, beacon=app.tables.beacon, partitions=partitions,
                                      key_type=bytes, value_type=bytes))
