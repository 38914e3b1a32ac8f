"""The record of erased users (`stream-app erase`, erasures.py): a changelog-backed table of keyed hashes of the
erased users' ids and their erasures' times, and per partition the erasures topic's offset applied through."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

import orjson

from ..config import Settings
from ..contracts import ErasureRequest
from ..core.learners.state import MAX_COUNT
from ..partitioning import partition_of
from .retries import EXIT_ERASURE_KEY, stop_worker

log = logging.getLogger("stream_app.erasures")

ERASED_TABLE = "erased-users"
#: Request ids kept in a user's erased-users record: a recreated erasures topic's copy of one of them is applied
#: again as such (a later profile kept); any other request erases
APPLIED_IDS = 32


class ErasedUsers:
    """The record of erased users in its changelog-backed table: key HMAC-SHA256(user id) in hex ->
    {"erased_at", "request_id", "request_ids", "key_id"}; and per partition, the erasures topic's next offset to apply."""

    def __init__(self, data: Any, settings: Settings, changelog: str, profile_changelog: str,
                 partitions: int | None = None):
        self.data = data  # the table's data: bytes -> JSON bytes
        self.key = (settings.erasure_key or settings.group_id).encode()
        self.group_id = settings.group_id  # the key when none is set: named when erasures made with it are not seen
        # keys erasures were recorded with before (a rotation): still looked up, written with only to put back a record
        # of theirs that could not be read (`_erased_at`)
        self.previous = [key.strip().encode() for key in settings.erasure_previous_keys.split(",") if key.strip()]
        # in every record: a record made with another key cannot be found by this one (its hash differs)
        self.key_id = key_id(self.key)
        self.known_ids = {self.key_id, *map(key_id, self.previous)}
        self.changelog = changelog
        self.partitions = partitions or settings.partitions  # the table's, as the profiles'
        self.max_future_ms = settings.max_future_ms
        self.profile_changelog = profile_changelog  # named in receipts
        # records that could not be read, written again readable (key, value, partition): for the batch's changelog
        self.rewritten: list[tuple[bytes, bytes, int]] = []

    @classmethod
    def table(cls, app: Any, settings: Settings, partitions: int, profile_changelog: str) -> "ErasedUsers":
        """On a Faust table of its own (memory store, changelog), partitioned like the profile table."""
        table = app.Table(ERASED_TABLE, partitions=partitions, key_type=bytes, value_type=bytes)
        return cls(table.data, settings, table.changelog_topic_name, profile_changelog, partitions)

    def user_hash(self, user_id: str, key: bytes | None = None) -> str:
        """The record's key of a user: HMAC-SHA256 with this worker's key, or with `key`."""
        return hmac.new(self.key if key is None else key, user_id.encode(), hashlib.sha256).hexdigest()

    def erased_at(self, user_id: str, requested: bool = False) -> int | None:
        """The time of the user's last erasure, None if never erased (a dict lookup when nobody was); `requested`:
        of the records an erasure request wrote only, not those put back for one that could not be read."""
        if not self.data:
            return None
        found = [self._erased_at(hashed, stored, user_id, key) for key in (self.key, *self.previous)
                 if (stored := self.data.get(hashed := self.user_hash(user_id, key).encode())) is not None]
        return max((at for at, put_back in found if not (requested and put_back)), default=None)

    def _erased_at(self, hashed: bytes, stored: bytes, user_id: str, key: bytes) -> tuple[int, bool]:
        """(the time of a record's erasure, whether it was put back). One that cannot be read (corrupt, forged) stays
        an erasure, of a time not known but before this worker read it, from a request dated at most
        STREAM_APP_MAX_FUTURE_MS after it was written: taken as that much after the moment it is first read and
        written again so (`take_rewritten`), so that no event of before comes back and a restart reads the same."""
        found = _record(stored) or {}
        erased_at = found.get("erased_at")
        if type(erased_at) is int and 0 <= erased_at <= MAX_COUNT:
            return erased_at, found.get("put_back") is True
        erased_at = int(time.time() * 1000) + self.max_future_ms
        value = orjson.dumps({"erased_at": erased_at, "request_id": None, "key_id": key_id(key), "put_back": True})
        self.data[hashed] = memoryview(value).tobytes()  # as `record` keeps it
        self.rewritten.append((hashed, value, partition_of(user_id, self.partitions)))
        log.error("the erased-users record %s cannot be read (%r): taken for an erasure at %d (when first read, and "
                  "STREAM_APP_MAX_FUTURE_MS), which a worker writes in its place", hashed.decode(errors="replace"),
                  stored[:80], erased_at)
        return erased_at, True

    def take_rewritten(self) -> list[tuple[bytes, bytes, int]]:
        """The changelog records (key, value, partition) of unreadable records written again since the last call."""
        taken, self.rewritten = self.rewritten, []
        return taken

    def applied_before(self, user_id: str, request_id: str) -> bool:
        """Whether this very request (by its id) was applied to the user before: a recreated erasures topic sends
        it again. Another request is not, whatever its time (a client's clock behind, or the first erasure's time
        raised to events stamped ahead: a second request within that span must erase the profile begun since)."""
        for key in (self.key, *self.previous):
            stored = self.data.get(self.user_hash(user_id, key).encode())
            found = _record(stored) if stored is not None else None
            if found is not None and request_id in _request_ids(found):
                return True
        return False

    def record(self, request: ErasureRequest) -> tuple[bytes, bytes]:
        """Remember the erasure in the table (its time, and the ids of the user's last APPLIED_IDS requests); return
        its changelog record (key, value)."""
        key = self.user_hash(request.user_id).encode()
        stored = self.data.get(key)  # a later request with an earlier time (another clock) must not shrink it
        erased_at = max(request.requested_at, self._erased_at(key, stored, request.user_id, self.key)[0]
                        if stored is not None else 0)
        earlier = [found for found in _request_ids(_record(stored) or {}) if found != request.request_id] \
            if stored is not None else []
        self.rewritten = [put_back for put_back in self.rewritten if put_back[0] != key]  # this record replaces it
        value = orjson.dumps({"erased_at": erased_at, "request_id": request.request_id, "key_id": self.key_id,
                              "request_ids": [*earlier, request.request_id][-APPLIED_IDS:]})
        self.data[key] = memoryview(value).tobytes()  # orjson's bytes hold a 4 KiB buffer; the table keeps 60 B
        return key, value

    def other_keys(self) -> set[str]:
        """The ids of other keys the restored records were made with (records of releases before key ids: not
        told apart). Non-empty: this worker cannot see those erasures, and would let their users' old events in."""
        return {found for key, value in list(self.data.items()) if not key.startswith(b"offset:")
                and isinstance(found := (_record(value) or {}).get("key_id", self.key_id), str)
                and found not in self.known_ids}  # a key id that cannot be read is no evidence of another key

    def check_key(self) -> None:
        """Stop the worker (EXIT_ERASURE_KEY) if past erasures were recorded with a key it does not have."""
        others = self.other_keys()
        default = key_id(self.group_id.encode())
        if default in others:  # recorded before a key was set: the group id was the key (what to list, said)
            log.critical("the erased-users table holds erasures recorded without STREAM_APP_ERASURE_KEY, keyed with "
                         "the group id: add it to STREAM_APP_ERASURE_PREVIOUS_KEYS=%s (each worker), so that this "
                         "worker sees them", self.group_id)
            stop_worker(EXIT_ERASURE_KEY)
            return
        if others:
            log.critical("the erased-users table holds erasures recorded with an erasure key this worker does not "
                         "have (key id %s; this worker's is %s): it would not see them and would let those users' "
                         "old events in. Give every worker the same STREAM_APP_ERASURE_KEY (and group id), and list "
                         "the keys used before in STREAM_APP_ERASURE_PREVIOUS_KEYS", ", ".join(sorted(others)),
                         self.key_id)
            stop_worker(EXIT_ERASURE_KEY)

    def next_offset(self, partition: int) -> int:
        return self.applied(partition)[0]

    def applied(self, partition: int) -> tuple[int, str | None]:
        """The erasures topic's partition's next offset to apply, and the id of the request applied before it
        (None: not recorded, by a release before 2026-11-30, or a rejected record)."""
        stored = self.data.get(b"offset:%d" % partition)
        found = _record(stored) if stored is not None else {}
        if found is not None:
            offset, request_id = found.get("next_offset", 0), found.get("request_id")
            if type(offset) is int and 0 <= offset <= MAX_COUNT and isinstance(request_id, (str, type(None))):
                return offset, request_id
        log.error("the erased-users record of partition %d's next erasure cannot be read (%r): the partition's "
                  "erasures are applied again from the start (an erasure applied again keeps later profiles)",
                  partition, stored[:80])
        return 0, None

    def applied_through(self, partition: int, offset: int, request_id: str | None = None) -> tuple[bytes, bytes]:
        """The erasures topic's partition is applied up to `offset` (the request `request_id`); return the
        changelog record."""
        key, value = b"offset:%d" % partition, orjson.dumps({"next_offset": offset + 1, "request_id": request_id})
        self.data[key] = value
        return key, value


def _request_ids(found: dict[str, Any]) -> list[str]:
    """The ids of the requests a record says were applied, oldest first (a record of before 2026-12-06 names only
    its last, `request_id`)."""
    ids = found.get("request_ids")
    listed = [one for one in ids if isinstance(one, str)] if isinstance(ids, list) else []
    last = found.get("request_id")
    return listed if not isinstance(last, str) or last in listed else [*listed, last]


def _record(stored: bytes) -> dict[str, Any] | None:
    """An erased-users record's fields; None if it is not a JSON object."""
    try:
        found = orjson.loads(stored)
    except orjson.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def key_id(key: bytes) -> str:
    """A name of an erasure key that says nothing about it."""
    return hmac.new(key, b"stream-app erasure key id", hashlib.sha256).hexdigest()[:16]
