"""The profile table's store: Faust's memory store, restoring its changelog newest-wins."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import faust
from faust.stores.memory import Store

from ..core.profile import supersedes

log = logging.getLogger(__name__)


class NewestProfileStore(Store):
    """Restores each user's newest snapshot (by generation and version) instead of the last record.

    A batch that outlived the revoke of its partitions (retries.batch_finished_or_late) can land its
    changelog records after the new owner's. Restored last-wins, such a record would put back a profile
    that lacks the new owner's events, and the events after it would be counted on top of it (in the
    table and in Redis). A tombstone always applies."""

    stale_skipped = 0

    def apply_changelog_batch(self, batch: Iterable[Any], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        data, partitions, skipped = self.data, self._key_partition, 0
        for event in batch:
            key = to_key(event.key)
            if event.message.value is None:
                data.pop(key, None)
                partitions.pop(key, None)
                continue
            value = to_value(event.value)
            if not supersedes(value, data.get(key)):
                skipped += 1
                continue
            data[key] = value
            partitions[key] = event.message.partition
        if skipped:
            self.stale_skipped += skipped
            log.warning("skipped %d profile changelog records older than the profile before them (late writes "
                        "of an earlier owner)", skipped)


class ProfileTable(faust.Table):
    """A Faust table whose store is a `NewestProfileStore`."""

    def _new_store_by_url(self, url: Any) -> Store:
        return NewestProfileStore(url, self.app, self, table_name=self.name, key_type=self.key_type,
                                  key_serializer=self.key_serializer, value_serializer=self.value_serializer,
                                  value_type=self.value_type, loop=self.loop, options=self.options)
