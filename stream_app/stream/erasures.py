"""Erasing one user (`stream-app erase`): the requests on the erasures topic, the record of erased users,
and the receipt.

Every worker reads every partition of the erasures topic from its beginning (`ErasureFeed.run`); a
request waits until the worker that owns the user's partition has listed the dead letters naming the
user (a task reading that topic beside the batches) and applies it between two rounds of a batch,
under the batch lock, so it never races with a batch touching the same user (`BatchHandler.erase`).
That worker deletes the profile (table, changelog and profiles-topic tombstones, Redis: the path of
idle-user eviction) and writes a record of the erasure to the `erased-users` table: a keyed hash of
the user id and the erasure's time. From then on the user's events dated at or before that time are
dropped (counted, not dead-lettered: a dead letter would store their payload again), so a replay of
an old log does not bring the profile back; later events start a new profile. The table also keeps, per partition, the offset of the erasures
topic applied through, so a request is applied once and a restarted worker skips what was applied.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import logging
import time
from typing import Any, Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from ..config import Settings
from ..contracts import ErasureRequest, Rejection, Source, check_erasure, dead_letter_users
from ..core.learners.state import MAX_COUNT
from ..core.profile import Profile
from ..errors import described
from ..kafka_security import consumer_kwargs
from ..store.redis_store import MARKER_S, profile_key
from .partitioning import partition_of
from .retries import EXIT_ERASURE_KEY, PERMANENT, stop_worker
from .topics import topic_retention_ms
from .transport import CONTROL_FETCH_WAIT_MS, true_end_offsets

log = logging.getLogger("stream_app.erasures")

ERASED_TABLE = "erased-users"
#: How long the dead-letter topic is searched for a user's letters before the erasure goes on without
#: the rest (its receipt says where the search stopped).
LISTING_S = 120.0
#: What an erasure leaves, said in every receipt.
NOT_ERASED = [
    "item state (popularity, trending, co-visitation, sequential rules, category tops): aggregates of every "
    "user's events, the user's share included",
    "the partition's learners (ranker, bandit): trained on every user's feedback of that partition",
    "the input topics' records of the user's events, until the topics' retention.ms (Kafka cannot delete "
    "one record); a worker that starts reads them to rebuild the item state",
    "the recommendations topic's records of the user (the user id and the lists shown), until its retention.ms",
    "the earlier records of the user on the compacted profile changelog and profiles topics, until the broker "
    "compacts them behind the tombstones (min.compaction.lag.ms, segment rolls)",
    "this request and its receipt on the erasures topics (they name the user), for their 30 days",
    "each worker's item-feed trail of the user, in memory only (the last few item and event ids the item "
    "state is derived from, and the session id of the user's last event, kept the same in every worker): it leaves "
    "once the co-visitation window and the session's end have passed with no event of the user (the session gap; "
    "for events with a session_id, STREAM_APP_SESSION_IDLE_MS, 30 days by default, or never when that is 0)",
]
DEAD_LETTER_NOTE = ("Kafka cannot delete single records: these dead letters leave the topic when retention_ms has "
                    "passed since they were written (set STREAM_APP_DLQ_RETENTION_MS before the topic is created, "
                    "or the topic's retention.ms on the broker)")


class ErasedUsers:
    """The record of erased users in its changelog-backed table: key HMAC-SHA256(user id) in hex ->
    {"erased_at", "request_id"}; and per partition, the erasures topic's next offset to apply."""

    def __init__(self, data: Any, settings: Settings, changelog: str, profile_changelog: str,
                 partitions: int | None = None):
        self.data = data  # the table's data: bytes -> JSON bytes
        self.key = (settings.erasure_key or settings.group_id).encode()
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

    def record(self, request: ErasureRequest) -> tuple[bytes, bytes]:
        """Remember the erasure in the table; return its changelog record (key, value)."""
        key = self.user_hash(request.user_id).encode()
        stored = self.data.get(key)  # a later request with an earlier time (another clock) must not shrink it
        erased_at = max(request.requested_at, self._erased_at(key, stored, request.user_id, self.key)[0]
                        if stored is not None else 0)
        self.rewritten = [put_back for put_back in self.rewritten if put_back[0] != key]  # this record replaces it
        value = orjson.dumps({"erased_at": erased_at, "request_id": request.request_id, "key_id": self.key_id})
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


def receipt(request: ErasureRequest, partition: int, profile: Profile | None, found: bool, erased: ErasedUsers,
            settings: Settings, worker_state: list[str], worker_id: str, now_ms: int) -> dict[str, Any]:
    """The receipt of one erasure, but for Redis's answer and the dead letters (filled in by the worker)."""
    topics = settings.topics
    return {
        "request_id": request.request_id, **({"reset": True} if request.reset else {}),
        "user_id": request.user_id, "requested_at": request.requested_at,
        "applied_at": now_ms, "worker_id": worker_id, "partition": partition,
        "deleted": {
            "profile_table": {"found": found, "version": profile.version if profile else None,
                              "event_count": profile.event_count if profile else None},
            "changelog": {"topic": erased.profile_changelog, "partition": partition,
                          "tombstone": True},
            "profiles_topic": {"topic": topics.profiles, "tombstone": True},
            "redis": {"key": profile_key(request.user_id, settings.namespace), "existed": False,
                      # a reset marks a deleted profile as an eviction does; an erasure, unless its events are replayed
                      "marker_s": (MARKER_S if found else 0) if request.reset else 0 if settings.replay_erased
                      else MARKER_S},
            "learner_state": sorted(set(profile.learner_state) | set(profile.learners)) if profile else [],
            "digests": len(profile.seen_event_ids) if profile else 0,
            "pending_lists": {"shown": len(profile.shown),
                              "shown_features": int(profile.shown_features is not None
                                                    or profile.shown_rows is not None),
                              "shadow_shown": len(profile.shadow_shown)} if profile else {},
            "worker_state": worker_state,
            **({} if request.reset else {
                "erased_record": {"table": erased.changelog, "user_hash": erased.user_hash(request.user_id)}}),
        },
        "dead_letters": {"topic": topics.dlq, "records": [], "retention_ms": settings.dlq_retention_ms,
                         "retention_source": "setting", "note": DEAD_LETTER_NOTE},
        "not_erased": NOT_ERASED,
        "schema_version": 1,
    }


class ErasureFeed:
    """Every erasure request of every partition, from the topic's beginning; those of the worker's own
    partitions wait in `pending` until a batch applies them (`due`)."""

    def __init__(self, settings: Settings, partitions: int, wake: Callable[[], None], worker_id: str,
                 retry: Callable[..., Any]):
        self.settings = settings
        self.partitions = partitions
        self.wake = wake
        self.worker_id = worker_id  # named in receipts
        self.retry = retry  # retry(what, action, *args): an I/O step retried through an outage
        self.pending: dict[int, dict[int, ErasureRequest | Rejection]] = collections.defaultdict(dict)
        # To tell a recreated topic (offsets from 0 again) from requests applied before: the request id read at
        # each offset, the last offset read, and the partitions seen to start again while read
        self.request_ids: dict[int, dict[int, str | None]] = collections.defaultdict(dict)
        self.last_read: dict[int, int] = {}
        self.restarted: set[int] = set()
        self.read = 0
        self.retention: tuple[int, str] | None = None  # the dead-letter topic's, once asked
        # The dead letters naming each user with a request due, listed outside the batch lock (reading the
        # whole topic can take minutes): user -> (records, a note when they could not be listed)
        self.listed: dict[str, tuple[list[dict[str, int]], str | None]] = {}
        self.listing: asyncio.Task | None = None

    async def run(self) -> None:
        settings = self.settings
        topic = settings.topics.erasures
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.require_kafka().split(","), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=max(settings.fetch_max_wait_ms, CONTROL_FETCH_WAIT_MS),
                                    **consumer_kwargs(settings.kafka_security))
        try:  # started inside: a cancel while it starts stops it too
            await consumer.start()
            await consumer.topics()  # the topic's metadata
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not tps:
                raise RuntimeError(f"the topic {topic} does not exist: run any stream-app command that creates "
                                   "the topics (`stream-app worker` does)")
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self.last_read.clear()  # read again from the start: not a topic that started again
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for tp, records in batches.items():
                    for record in records:
                        self.push(record.key, record.value,
                                  Source(topic, tp.partition, record.offset, record.timestamp))
                if batches:
                    self.wake()
        finally:
            await consumer.stop()

    def push(self, key: bytes | None, value: bytes | None, source: Source) -> None:
        checked = check_erasure(value, key, source, self.settings.max_payload_bytes, self.settings.max_future_ms)
        future_ms = self.settings.max_future_ms
        if (isinstance(checked, ErasureRequest) and source.timestamp is not None and future_ms
                and source.timestamp > time.time() * 1000 + future_ms):  # the record itself stamped ahead, as the gate
            checked = Rejection("timestamp_out_of_range", f"the record's timestamp {source.timestamp} is more than "
                                f"{future_ms} ms (STREAM_APP_MAX_FUTURE_MS) ahead of this worker's clock: an erasure "
                                "dated ahead would drop the user's events until then", source, key, value or b"")
        if isinstance(checked, ErasureRequest):
            owner = partition_of(checked.user_id, self.partitions)
            if owner != source.partition:
                checked = Rejection("wrong_partition", f"user {checked.user_id!r} belongs to partition {owner} of "
                                    f"{self.partitions}: produce with the default partitioner (murmur2 of the key)",
                                    source, key, value or b"")
        partition = source.partition
        if source.offset <= self.last_read.get(partition, -1):  # the topic was recreated under the reader
            self.request_ids[partition].clear()
            self.restarted.add(partition)
        self.last_read[partition] = source.offset
        self.pending[partition][source.offset] = checked
        self.request_ids[partition][source.offset] = checked.request_id if isinstance(checked, ErasureRequest) else None
        self.read += 1

    def due(self, owned: set[int], erased: ErasedUsers) -> list[tuple[int, int, ErasureRequest | Rejection]]:
        """The requests of the worker's own partitions not applied yet, in offset order: (partition, offset,
        request or rejection). Those an earlier owner applied are dropped."""
        out = []
        for partition in sorted(owned & self.pending.keys()):
            start = self._start(partition, erased)
            waiting = self.pending.pop(partition)
            out.extend((partition, offset, waiting[offset]) for offset in sorted(waiting) if offset >= start)
        return out

    def _start(self, partition: int, erased: ErasedUsers) -> int:
        """The partition's first offset not applied: where the erased-users table says, unless the topic was
        deleted and recreated since: another request stands at the offset applied last, or the reader saw the
        topic start again and has no request there yet. (A worker that starts after a recreation notices it once
        the new topic reaches that offset.)"""
        start, request_id = erased.applied(partition)
        there = self.request_ids[partition].get(start - 1)
        if request_id is not None and (there != request_id if there is not None else partition in self.restarted):
            log.error("the topic %s was deleted and recreated: its partition %d holds other requests than the ones "
                      "applied through offset %d; applying its requests from its start", self.settings.topics.erasures,
                      partition, start - 1)
            return 0
        return start

    async def dead_letters(self, users: set[str]) -> tuple[dict[str, list[dict[str, int]]], str | None]:
        """The dead letters naming each user (key or payload): the whole dead-letter topic, read to its end,
        or as far as LISTING_S let it (then a note of where it stopped: the erasures wait for no listing)."""
        settings = self.settings
        topic, servers = settings.topics.dlq, settings.require_kafka().split(",")
        found: dict[str, list[dict[str, int]]] = {user: [] for user in users}
        consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False,
                                    fetch_max_wait_ms=settings.fetch_max_wait_ms, **consumer_kwargs(settings.kafka_security))
        try:  # started inside: a cancel while it starts stops it too
            await consumer.start()
            await consumer.topics()
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not tps:
                return found, None
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await true_end_offsets(servers, await consumer.end_offsets(tps), settings.kafka_security)
            deadline = time.monotonic() + LISTING_S
            while behind := [tp for tp in tps if await consumer.position(tp) < (ends[tp] or 0)]:
                if time.monotonic() > deadline:
                    where = ", ".join(f"partition {tp.partition} from offset {await consumer.position(tp)}"
                                      for tp in behind)
                    return found, f"{topic} was not read to its end in {LISTING_S:.0f} s; not searched: {where}"
                for tp, records in (await consumer.getmany(timeout_ms=200, max_records=5000)).items():
                    for record in records:
                        if record.offset < (ends[tp] or 0):
                            for user in dead_letter_users(record.key, record.value) & users:
                                found[user].append({"partition": tp.partition, "offset": record.offset})
        finally:
            await consumer.stop()
        return found, None

    async def _dead_letters_or_refusal(self, users: set[str]) -> tuple[dict[str, list[dict[str, int]]], str | None]:
        """`dead_letters`, an outage retried by the caller; a refusal no retry changes (no right to read the
        topic) is a note in the receipts: the erasures go on (a worker stopped for it would stop the next owner)."""
        try:
            return await self.dead_letters(users)
        except PERMANENT as exc:
            log.error("cannot list the dead letters of erased users: %s; their receipts say so", described(exc))
            return {}, f"{self.settings.topics.dlq} could not be read ({described(exc)}): give the worker read access"

    async def dead_letter_retention(self) -> tuple[int, str]:
        """(retention.ms, "broker") as the broker reports it, else (the setting, "setting"); asked once."""
        if self.retention is None:
            try:
                reported = await asyncio.to_thread(topic_retention_ms, self.settings, self.settings.topics.dlq)
            except Exception as exc:  # an older broker without DescribeConfigs: the setting is what we know
                log.warning("cannot read the retention.ms of %s (%r); receipts state STREAM_APP_DLQ_RETENTION_MS",
                            self.settings.topics.dlq, exc)
                reported = None
            self.retention = ((reported, "broker") if reported is not None
                              else (self.settings.dlq_retention_ms, "setting"))
        return self.retention

    async def apply(self, handler: Any, owned: set[int]) -> None:
        """Apply the due requests of the worker's own partitions to this batch (before its rounds): each
        erases its user (`BatchHandler.erase`) or, invalid, is dead-lettered; the partition's applied
        offset goes with the batch. A request waits (and those after it in its partition) until the
        dead letters naming its user are listed, by a task that reads the topic beside the batches
        and wakes the worker when done: the batches go on meanwhile."""
        erased = handler.erased
        due = self.due(owned, erased)
        if not due:
            return
        ready = self._listed_prefix(due)
        due_users = {checked.user_id for _, _, checked in due if isinstance(checked, ErasureRequest)}
        self.listed = {user: found for user, found in self.listed.items() if user in due_users}
        retention_ms, source = await self.dead_letter_retention() if ready else (0, "")
        for partition, offset, checked in ready:
            if isinstance(checked, Rejection):
                handler.dead_letter(checked)
            else:
                records, failure = self.listed[checked.user_id]
                handler.erase(checked, partition, self.worker_id)
                handler.receipts[-1]["dead_letters"].update(
                    records=records, retention_ms=retention_ms, retention_source=source,
                    note=DEAD_LETTER_NOTE if failure is None else f"{DEAD_LETTER_NOTE}. NOT LISTED: {failure}")
            key, value = erased.applied_through(partition, offset, checked.request_id
                                                if isinstance(checked, ErasureRequest) else None)
            handler.outbox.add(erased.changelog, key, value, partition, owner=partition)
        for _, _, checked in ready:
            if isinstance(checked, ErasureRequest):
                self.listed.pop(checked.user_id, None)

    def _listed_prefix(self, due: list[tuple[int, int, ErasureRequest | Rejection]]
                       ) -> list[tuple[int, int, ErasureRequest | Rejection]]:
        """Of each partition's due requests (offset order), those up to the first whose user's dead letters
        are not listed yet; the rest go back to `pending` and a listing starts for their users."""
        ready, unlisted, held = [], set(), set()
        for partition, offset, checked in due:
            user = checked.user_id if isinstance(checked, ErasureRequest) else None
            if partition in held or (user is not None and user not in self.listed):
                held.add(partition)
                self.pending[partition][offset] = checked
                if user is not None and user not in self.listed:
                    unlisted.add(user)
            else:
                ready.append((partition, offset, checked))
        if unlisted and (self.listing is None or self.listing.done()):
            self.listing = asyncio.create_task(self._list(unlisted))
        return ready

    async def _list(self, users: set[str]) -> None:
        try:
            found, failure = await self.retry("list the dead letters of erased users", self._dead_letters_or_refusal,
                                              users)
        except Exception as exc:  # a bug must not stop the partition: erase all the same, say what is missing
            log.error("cannot list the dead letters of erased users (%r); their receipts say so", exc)
            found, failure = {}, f"the topic could not be read ({exc!r})"
        self.listed.update({user: (found.get(user, []), failure) for user in users})
        self.wake()
