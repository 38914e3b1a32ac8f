"""Erasing one user (`stream-app erase`): the requests on the erasures topic, the record of erased users,
and the receipt.

Every worker reads the erasures topic (`ErasureFeed.run`): every partition from its beginning until it knows its own,
then only its own, a partition taken up read again from where it was applied (the record of erased users:
erased_users.py). A request waits until the worker that owns the user's partition has listed the dead letters naming the
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
import logging
import time
from typing import Any, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from ..config import Settings
from ..contracts import ErasureRequest, Rejection, Source, check_erasure, dead_letter_users
from ..core.profile import Profile
from ..errors import described
from ..kafka_security import consumer_kwargs
from ..partitioning import partition_of
from ..store.redis_store import MARKER_S, profile_key
from .erased_users import ErasedUsers
from .ready import headers_of, redrive_of
from .retries import PERMANENT
from .topics import topic_retention_ms
from .transport import CONTROL_FETCH_WAIT_MS, true_end_offsets

log = logging.getLogger("stream_app.erasures")

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


def receipt(request: ErasureRequest, partition: int, profile: Profile | None, found: bool, erased: ErasedUsers,
            settings: Settings, worker_state: list[str], worker_id: str, now_ms: int,
            kept_later_profile: bool = False, erased_through: int | None = None) -> dict[str, Any]:
    """The receipt of one erasure, but for Redis's answer and the dead letters (filled in by the worker).
    `kept_later_profile`: a request applied again to a user whose profile began after the recorded erasure, which
    stays: no tombstone is written and Redis's key is left as it is, so the receipt names neither.
    `erased_through`: the erasure's time as recorded (None for a reset), at or after the request's: the user's events
    dated at or before it are dropped from now on (the profile's last event, when stamped ahead of the request)."""
    topics = settings.topics
    removed = {} if kept_later_profile else {
        "changelog": {"topic": erased.profile_changelog, "partition": partition, "tombstone": True},
        "profiles_topic": {"topic": topics.profiles, "tombstone": True}}
    return {
        "request_id": request.request_id, **({"reset": True} if request.reset else {}),
        "user_id": request.user_id, "requested_at": request.requested_at,
        **({"erased_through": erased_through} if erased_through is not None else {}),
        "applied_at": now_ms, "worker_id": worker_id, "partition": partition,
        "deleted": {
            "profile_table": {"found": found, "version": profile.version if profile else None,
                              "event_count": profile.event_count if profile else None},
            **removed,
            **({"kept_later_profile": True} if kept_later_profile else {}),
            "redis": {"key": profile_key(request.user_id, settings.namespace), "existed": False,
                      # a reset marks a deleted profile as an eviction does; an erasure, unless its events are replayed
                      "marker_s": (MARKER_S if found else 0) if request.reset
                      else 0 if settings.replay_erased or kept_later_profile else MARKER_S},
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
    """The erasure requests of the worker's own partitions, waiting in `pending` until a batch applies them (`due`).
    It reads every partition from the topic's beginning until the worker's partitions are known, then holds only
    theirs: a partition taken up later is read again from where the erased-users table says it was applied."""

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
        self.owned: set[int] | None = None  # the worker's partitions as the last batch had them; None: not yet known
        self.seeks: dict[int, int] = {}  # partitions taken up -> the offset to read them again from
        self.read = 0
        self.retention: tuple[int, str] | None = None  # the dead-letter topic's, once asked
        # The dead letters naming each user with a request due, listed outside the batch lock (reading the
        # whole topic can take minutes): user -> (records, "complete" | "partial" | "failed", a note when not complete,
        # the offset of each partition read up to)
        self.listed: dict[str, tuple[list[dict[str, int]], str, str | None, dict[int, int]]] = {}
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
                self.seek_taken_up(consumer, topic)  # here: the consumer is this task's
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for tp, records in batches.items():
                    for record in records:
                        self.push(record.key, record.value,
                                  Source(topic, tp.partition, record.offset, record.timestamp,
                                         redrive_of=redrive_of(record), headers=headers_of(record)))
                if batches:
                    self.wake()
        finally:
            await consumer.stop()

    def seek_taken_up(self, consumer: Any, topic: str) -> None:
        """Read each partition taken up again from its offset (`follow`)."""
        while self.seeks:
            partition, offset = self.seeks.popitem()  # first: a seek that raises is not tried again for ever
            # a first record below it: the topic was recreated (`_start`), as for a record read before it
            self.last_read[partition] = offset - 1
            consumer.seek(TopicPartition(topic, partition), offset)

    def push(self, key: bytes | None, value: bytes | None, source: Source) -> None:
        if source.partition in self.seeks or (self.owned is not None and source.partition not in self.owned):
            # another worker's, or one taken up whose records come from where the reader was: those up to the
            # seek would be handed out past the requests between the applied offset and them
            self.read += 1
            return
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
        self.follow(owned, erased)
        out = []
        for partition in sorted(owned & self.pending.keys()):
            start = self._start(partition, erased)
            waiting = self.pending.pop(partition)
            out.extend((partition, offset, waiting[offset]) for offset in sorted(waiting) if offset >= start)
            ids = self.request_ids[partition]  # only the one before the next to apply is looked up (`_start`)
            if len(ids) > 1:
                self.request_ids[partition] = {offset: found for offset, found in ids.items() if offset >= start - 1}
        return out

    def follow(self, owned: set[int], erased: ErasedUsers) -> None:
        """Hold the requests of `owned` only: those of a partition that left are dropped, and one taken up is read
        again from the offset before its next to apply (whose request id tells a recreated topic, `_start`)."""
        if owned == self.owned:
            return
        for partition in set(self.pending) | set(self.request_ids) | set(self.last_read):
            if partition not in owned:
                self.pending.pop(partition, None)
                self.request_ids.pop(partition, None)
                self.last_read.pop(partition, None)
                self.restarted.discard(partition)
        if self.owned is not None:  # before: every partition was held since the topic's beginning
            for partition in owned - self.owned:
                self.pending.pop(partition, None)
                self.request_ids.pop(partition, None)
                self.seeks[partition] = max(0, erased.next_offset(partition) - 1)  # sought within a poll (500 ms)
        self.owned = set(owned)

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

    async def dead_letters(self, users: set[str], since: dict[int, int] | None = None
                           ) -> tuple[dict[str, list[dict[str, int]]], str, str | None, dict[int, int]]:
        """The dead letters naming each user (key or payload), how far they were listed ("complete", "partial") and,
        when partial, a note of where it stopped, and the offset of each partition read up to: the whole dead-letter
        topic (or from `since`'s offsets: what an earlier listing did not read), read to its end, or as far as
        LISTING_S let it (the erasures wait for no listing)."""
        settings = self.settings
        topic, servers = settings.topics.dlq, settings.require_kafka().split(",")
        found: dict[str, list[dict[str, int]]] = {user: [] for user in users}
        consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest",  # a start retention removed: the first left, not the end
                                    fetch_max_wait_ms=settings.fetch_max_wait_ms, **consumer_kwargs(settings.kafka_security))
        try:  # started inside: a cancel while it starts stops it too
            await consumer.start()
            await consumer.topics()
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not tps:
                return found, "complete", None, {}
            consumer.assign(tps)
            if since is None:
                await consumer.seek_to_beginning(*tps)
            else:
                for tp in tps:  # a partition added since: from its start
                    consumer.seek(tp, since.get(tp.partition, 0))
            ends = await true_end_offsets(servers, await consumer.end_offsets(tps), settings.kafka_security)
            read_to = {tp.partition: ends[tp] or 0 for tp in tps}
            deadline = time.monotonic() + LISTING_S
            while behind := [tp for tp in tps if await consumer.position(tp) < (ends[tp] or 0)]:
                if time.monotonic() > deadline:
                    where = ", ".join(f"partition {tp.partition} from offset {await consumer.position(tp)}"
                                      for tp in behind)
                    return (found, "partial",
                            f"{topic} was not read to its end in {LISTING_S:.0f} s; not searched: {where}", read_to)
                for tp, records in (await consumer.getmany(timeout_ms=200, max_records=5000)).items():
                    for record in records:
                        if record.offset < (ends[tp] or 0):
                            for user in dead_letter_users(record.key, record.value) & users:
                                found[user].append({"partition": tp.partition, "offset": record.offset})
        finally:
            await consumer.stop()
        return found, "complete", None, read_to

    async def _dead_letters_or_refusal(self, users: set[str], since: dict[int, int] | None = None
                                       ) -> tuple[dict[str, list[dict[str, int]]], str, str | None, dict[int, int]]:
        """`dead_letters`, an outage retried by the caller; a refusal no retry changes (no right to read the
        topic) is a note in the receipts: the erasures go on (a worker stopped for it would stop the next owner)."""
        try:
            return await self.dead_letters(users, since)
        except PERMANENT as exc:
            log.error("cannot list the dead letters of erased users: %s; their receipts say so", described(exc))
            return {}, "failed", (f"{self.settings.topics.dlq} could not be read ({described(exc)}): "
                                  "give the worker read access"), {}

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
        await self._read_tails({checked.user_id for _, _, checked in ready if isinstance(checked, ErasureRequest)})
        for partition, offset, checked in ready:
            if isinstance(checked, Rejection):
                handler.dead_letter(checked)
            else:
                records, listed, failure, _ = self.listed[checked.user_id]
                handler.erase(checked, partition, self.worker_id)
                handler.receipts[-1]["dead_letters"].update(
                    records=records, listed=listed, retention_ms=retention_ms, retention_source=source,
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
            found, listed, failure, ends = await self.retry("list the dead letters of erased users",
                                                            self._dead_letters_or_refusal, users)
        except Exception as exc:  # a bug must not stop the partition: erase all the same, say what is missing
            log.error("cannot list the dead letters of erased users (%r); their receipts say so", exc)
            found, listed, failure, ends = {}, "failed", f"the topic could not be read ({exc!r})", {}
        self.listed.update({user: (found.get(user, []), listed, failure, ends) for user in users})
        self.wake()

    async def _read_tails(self, users: set[str]) -> None:
        """The dead letters of `users` written after their listing read the topic (the batches go on meanwhile, and
        the users are not erased yet: their bad inputs are dead-lettered as before), added to what was listed: read
        from where the listing ended to the topic's end now, once the batches before this one are delivered. Not
        retried (a batch waits on it): one that fails leaves the listing "partial", saying from where."""
        by_ends: dict[tuple[tuple[int, int], ...], set[str]] = collections.defaultdict(set)
        for user in users:
            records, listed, failure, ends = self.listed[user]
            if listed == "complete":
                by_ends[tuple(sorted(ends.items()))].add(user)
        for ends_items, of in by_ends.items():
            since = dict(ends_items)
            try:
                found, listed, failure, read_to = await self.dead_letters(of, since)
            except Exception as exc:  # noqa: BLE001 - an outage, a refusal: said in the receipts, the erasures go on
                where = ", ".join(f"partition {p} from offset {o}" for p, o in sorted(since.items()))
                found, listed, read_to = {}, "partial", since
                failure = f"the dead letters written after the listing could not be read ({described(exc)}); " \
                          f"not searched: {where or 'the whole topic'}"
            for user in of:
                records = self.listed[user][0] + found.get(user, [])
                self.listed[user] = (records, listed, failure, read_to)
