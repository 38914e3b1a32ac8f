"""One output batch of a worker: the pure core run over rounds of the worker's own events, and its effects
collected (recommendations, dead letters, changed profiles and partition learners) for the app to deliver
at once: the worker (worker.py) sends the outbox to Kafka and the snapshots to Redis, awaiting both.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from ..config import Settings
from ..contracts import Rejection, Source
from ..core.content import ContentIndex
from ..core.events import Event
from ..core.items import InMemoryItemIndex
from ..core.learners import PartitionLearners
from ..core.process import (
    expected_scans,
    new_profile,
    process,
    shadow_recommendation,
    shown_hits,
)
from ..core.profile import Profile, snapshot_order
from ..partitioning import partition_of
from ..serving.encoder import Encoder, UserEncoding, encode_batch
from .batch_recommendations import FIELD, BatchRecommendations, Redeliverable
from .counters import Counters
from .erasure_steps import ErasureSteps
from .erasures import ErasedUsers
from .idle_users import IdleUsers
from .learner_table import PartitionState, restored_offset, with_learners_mark
from .output import MAX_BATCH_BYTES, Outbox
from .profile_cache import ProfileCache
from .ready import Ready, input_source

log = logging.getLogger("stream_app.worker")

#: Events of one round at most: a batch checks its time (STREAM_APP_BATCH_WORK_S) between rounds, and a dense
#: item epoch would otherwise be one round of STREAM_APP_BATCH_MAX.
ROUND_EVENTS = 100
#: A partition's profile records of one batch are kept within this many bytes, so that they go out as one record
#: batch (output.MAX_BATCH_BYTES), stored all or nothing: a batch whose profiles' changelog were cut between two
#: produce requests by a crash would apply the rest of its events again with the learners already past them.
PARTITION_PROFILE_BYTES = MAX_BATCH_BYTES * 3 // 4
#: A changed profile's record, guessed before it is written: its stored size and this much more, or for a user
#: without one NEW_PROFILE_BYTES; until the worker's first records were written (`ProfileSizes` then learns both).
PROFILE_GROWTH_BYTES = 1024
NEW_PROFILE_BYTES = 4096


@dataclass
class ProfileSizes:
    """What `round_room` guesses a changed profile's record takes: at least the defaults, and what the largest record
    of the worker's last batch took, a new user's first one (about 2.8 KB with a warm item state, its shown candidates
    and their rows; more with an encoder or a content model) or a stored one's growth. A fixed guess of 2 KiB let a
    burst of new users of one partition pass one record batch, which a crash can cut in two."""

    new: int = NEW_PROFILE_BYTES
    growth: int = PROFILE_GROWTH_BYTES
    recommendation: int = 0  # the most a recommendation added to its user's record so far (batch_recommendations.py)
    largest: int = 0  # the largest record of the last batch (without its lists)

    def learn(self, written: dict[str, int], stored: dict[str, int | None]) -> None:
        """From a batch's records (user -> bytes written) and their sizes before it (None: a new user)."""
        firsts = [size for user, size in written.items() if stored.get(user) is None]
        growths = [size - before for user, size in written.items() if (before := stored.get(user)) is not None]
        if firsts:
            self.new = max(NEW_PROFILE_BYTES, max(firsts))
        if growths:
            self.growth = max(PROFILE_GROWTH_BYTES, max(growths))
        if written:
            self.largest = max(written.values())


def unreadable_profile(event: Event, exc: Exception, msg: Any) -> Rejection:
    """The dead letter of an event parked because its user's stored profile cannot be read, with what to do."""
    return Rejection("processing_error", f"the stored profile of {event.user_id!r} cannot be read: {exc!r}; "
                     "`stream-app reset-profile USER` deletes it, then `stream-app redrive --reason processing_error` "
                     "applies the parked events", input_source(msg), msg.key, msg.value)


def withdrawn_outputs(profile: Profile, live: Encoder | None, content: ContentIndex | None) -> None:
    """A profile keeps no output of a model withdrawn (its embedding, the likes its text model named): a vector of a
    model that no longer serves, frozen at its last event, read as the user's current one downstream."""
    if live is None and profile.encoder_version is not None:
        profile.embedding, profile.encoder_version = None, None
    if content is None and profile.likes:
        profile.likes = []


class BatchHandler(ErasureSteps):
    """One output batch of the worker's own events: `process_round` runs the core over a round of one
    item epoch (ordered_input) and collects the effects (outbox, changed profiles and learners);
    `snapshots` writes the tables and returns Redis's share; the app delivers both at once."""

    def __init__(self, settings: Settings, profiles: Any, learners: PartitionState, index: InMemoryItemIndex,
                 counters: Counters, now: int, idle: IdleUsers | None = None, profile_changelog: str | None = None,
                 erased: ErasedUsers | None = None, sizes: ProfileSizes | None = None,
                 cache: ProfileCache | None = None, redeliverable: Redeliverable | None = None):
        self.settings = settings
        self.profile_changelog = profile_changelog or f"{settings.group_id}-profiles-changelog"
        self.idle = idle
        self.erased = erased
        self.profiles = profiles  # the profile table's data: user_id bytes -> snapshot bytes
        self.learners = learners
        self.index = index
        self.counters = counters
        self.now = now
        self.outbox = Outbox()
        self.made = BatchRecommendations()  # kept in the profiles' changelog records until published
        # the worker's: recommendations kept in changelog records it took up, for their events read again
        self.redeliverable = redeliverable if redeliverable is not None else Redeliverable()
        self.loaded: dict[str, Profile] = {}
        # the stored bytes of a loaded profile until its first event here: that event's undo copy, unserialised
        self.as_stored: dict[str, bytes] = {}
        self.changed: dict[str, tuple[Profile, int]] = {}
        self.sizes = sizes if sizes is not None else ProfileSizes()  # the worker's, learned over its batches
        self.cache = cache if cache is not None else ProfileCache(0)  # the worker's: the profiles it last wrote
        self.stored_bytes: dict[str, int | None] = {}  # a changed user's record size before the batch (None: new)
        self.profile_bytes: dict[int, int] = {}  # partition -> its changed profiles' guessed record bytes
        # the largest guess so far (a stored record grows by `growth`), each user of the next round's (`round_room`)
        self.largest_profile = max(self.sizes.new, self.sizes.largest + self.sizes.growth)
        self.mirror: set[str] = set()  # unchanged profiles to write to Redis again
        self.used_learners: set[int] = set()
        self.removed: list[tuple[str, int]] = []  # users whose profile leaves, idle or erased: (user_id, partition)
        self.evicted: dict[str, int] = {}  # idle users evicted -> their profile's generation (Redis's marker)
        self.receipts: list[dict[str, Any]] = []  # of this batch's erasures, sent once Redis has answered
        self.events: list[Any] = []  # the input events: Faust's, acknowledged after the flush, or the reader's copies
        self.recommended: list[tuple[int, float]] = []  # (event ms, input record's Kafka timestamp s): latencies

    def evict_idle(self, boundary_ms: int, owned: set[int], partitions: int) -> None:
        """Drop the profiles of the worker's users with no event since `boundary_ms - user_idle_ms`
        (before a round at or after that boundary, as `evaluate` does): from the table, with a tombstone
        in its changelog and on the profiles topic (`snapshots`); Redis is told by `removed`."""
        if self.idle is None:
            return
        for user_id in self.idle.before(boundary_ms - self.settings.user_idle_ms):
            partition = partition_of(user_id, partitions)
            if partition not in owned:  # another worker's user: it evicts it
                continue
            loaded, stored = self.loaded.get(user_id), self.profiles.get(user_id.encode())
            self.evicted[user_id] = (loaded.generation or 0) if loaded is not None else \
                (snapshot_order(stored) or (0, 0))[0] if stored is not None else 0
            self.remove(user_id, partition)
            self.counters.evicted_users += 1

    def dead_letter(self, rejection: Rejection, event_id: str | None = None) -> None:
        self.counters.count_dead_letter(rejection.reason)
        where = {"topic": rejection.source.topic, "partition": rejection.source.partition,
                 "offset": rejection.source.offset, "repeat_key": (rejection.source.topic, rejection.reason)}
        log.warning("rejected %s: %s (%s)", rejection.source, rejection.reason, rejection.detail[:200],
                    extra=where if event_id is None else {**where, "event_id": event_id})
        self.outbox.add(self.settings.topics.dlq, rejection.message_key(),
                        orjson.dumps(rejection.to_record(self.now)))

    def profile(self, user_id: str) -> Profile:
        found = self.loaded.get(user_id)
        if found is None:
            stored = self.profiles.get(user_id.encode())
            if stored is None:
                found = new_profile(user_id, self.settings)
            else:
                found = self.cache.take(user_id, stored)
                if found is None:
                    data = orjson.loads(stored)
                    found = Profile.from_dict(data)
                    if (kept := data.get(FIELD)) is not None:  # a record of another owner, or of before a restart
                        self.redeliverable.take_up(user_id, kept)
                    self.counters.profiles_parsed += 1
                else:
                    self.counters.profiles_reused += 1
                self.as_stored[user_id] = stored
            self.loaded[user_id] = found
        return found

    def readable_profile(self, user_id: str) -> Profile | None:
        """The user's profile, None if its stored record cannot be read (the event is dead-lettered in the round:
        one such user must not take the encoder away from every other event of it)."""
        try:
            return self.profile(user_id)
        except Exception:
            return None

    def encode(self, encoder: Encoder | None, valid: list[tuple[Ready, Event]],
               shadow: bool = False) -> list[UserEncoding | None]:
        if encoder is None or not valid:
            return [None] * len(valid)
        try:
            encodings = encode_batch(encoder, [event for _, event in valid], self.readable_profile,
                                     self.settings.encoder_candidates)
            if (not_finite := encodings.count(None)) and not shadow:
                self.counters.encoder_not_finite += not_finite
                log.error("live encoder %s gave non-finite outputs for %d of a round's %d events: those ranked without "
                          "it (publish an earlier version, or `stream-app models withdraw`)", getattr(encoder, "version", "?"),
                          not_finite, len(valid))
            return encodings
        except Exception as exc:  # a model that fails at run time: rank this round without it, go on
            failures = "shadow_encoder_failures" if shadow else "encoder_failures"
            setattr(self.counters, failures, getattr(self.counters, failures) + 1)
            log.error("%s encoder %s failed on a round of %d events (%r): %s", "shadow" if shadow else "live",
                      getattr(encoder, "version", "?"), len(valid), exc,
                      "no shadow lists this round" if shadow else "ranked without it")
            return [None] * len(valid)

    def expect_scans(self, content: ContentIndex, events: list[Event]) -> None:
        """Tell the content index the round's catalogue scans ahead (one matrix product per chunk of them)."""
        try:
            content.expect(expected_scans(events, self.readable_profile, content, self.settings))
        except Exception as exc:  # a guess only: a state it cannot read is the round's events' own concern
            log.warning("content scans of a round of %d events not known ahead (%r): each scanned alone",
                        len(events), exc)
            content.expect([])

    def process_round(self, ready: list[Ready], live: Encoder | None, shadow: Encoder | None,
                      content: ContentIndex | None = None) -> list[Ready]:
        """The round's events applied (not the redeliveries, rejections and failures among them)."""
        counters, applied = self.counters, []
        valid: list[tuple[Ready, Event]] = []
        for item in ready:
            rejected = isinstance(item.checked, Rejection)
            counters.count_input(item.event.message.topic, "invalid" if rejected else item.checked.type)
            self.events.append(item.event)
            if rejected and self.erased_rejection(item.checked):
                counters.erased_events_dropped += 1
            elif rejected:
                self.dead_letter(item.checked)
            elif self.erased_before(item.checked):
                counters.erased_events_dropped += 1
            else:
                valid.append((item, item.checked))
        encodings = self.encode(live, valid)
        shadow_encodings = self.encode(shadow, valid, shadow=True)
        if content is not None:
            self.expect_scans(content, [event for _, event in valid])
        for position, (item, event) in enumerate(valid):
            msg = item.event.message
            try:
                profile = self.profile(event.user_id)
            except Exception as exc:  # the user's stored profile cannot be read: park the event, go on
                self.dead_letter(unreadable_profile(event, exc, msg), event.event_id)
                continue
            late = profile.last_seen is not None and event.ts < profile.last_seen
            learners = self.learners.get(msg.partition, self.dead_letter)
            # All or nothing: a failure part-way through must not leave the event half-applied (its
            # digest kept, its feedback learned), or a re-drive from the dead-letter topic would be
            # dropped as a duplicate. The undo copy of a user's first event here is the profile as stored
            # (unless part of it was refused as it was read: restored, it would be dead-lettered again).
            stored = self.as_stored.pop(event.user_id, None)
            profile_before = (stored, None) if stored is not None and not profile.rejected_state else profile.undo_copy()
            learners_before = learners.snapshot() if learners is not None else None
            try:
                live_hit, shadow_hit = shown_hits(profile, event, self.settings.top_k)
                outcome = process(profile, event, self.index, self.settings, self.now, learners,
                                  encodings[position], content)
                withdrawn_outputs(profile, live, content)
                # beside a live list only: the two hit rates are then over the same events
                if outcome.recommendation is not None and shadow_encodings[position] is not None:
                    shadow_recommendation(profile, event, self.index, self.settings, learners,
                                          shadow_encodings[position], content)
            except Exception as exc:  # a bug must not stop the partition: undo, then park the event
                self.reject_state(profile, msg.partition)
                self.restore(event.user_id, profile_before, msg.partition, learners_before)
                self.dead_letter(Rejection("processing_error", f"{exc!r}\n{traceback.format_exc(limit=3)}",
                                           input_source(msg), msg.key, msg.value),
                                 event.event_id)
                continue
            self.reject_state(profile, msg.partition)
            if not outcome.applied:
                self.duplicate(profile, event, msg)
                continue
            counters.applied += 1
            counters.late += late
            applied.append(item)
            if self.idle is not None:  # now: a later round of this batch may run an eviction pass
                self.idle.touched(event.user_id, profile.last_seen)
            counters.count_hits(live_hit, shadow_hit)
            if event.user_id not in self.changed:
                self.count_profile_bytes(event.user_id, msg.partition)
            self.changed[event.user_id] = (profile, msg.partition)
            if learners is not None:
                self.used_learners.add(msg.partition)
            if outcome.recommendation is not None:
                counters.recommendations += 1
                self.recommended.append((event.ts, msg.timestamp))
                recommendation = orjson.dumps(outcome.recommendation)
                added = self.made.add(event.user_id, msg.topic, msg.offset, recommendation)
                self.profile_bytes[msg.partition] += added  # the record grows by it (`round_room`)
                self.sizes.recommendation = max(self.sizes.recommendation, added)
                self.outbox.add(self.settings.topics.recommendations, msg.key, recommendation, owner=msg.partition)
        return applied

    def duplicate(self, profile: Profile, event: Event, msg: Any) -> None:
        """An event the profile has applied: a redelivery (a crash, a rebalance) or a producer's retry."""
        self.counters.duplicates += 1
        self.counters.below_dedupe_floor += profile.below_floor(event.event_id, event.ts)
        again = self.redeliverable.published_for(event.user_id, msg.topic, msg.offset, event.event_id)
        if again is not None:  # its batch may have stopped once its records were stored, before publishing this
            self.counters.recommendations_resent += 1
            self.profile_bytes[msg.partition] = self.profile_bytes.get(msg.partition, 0) + self.made.add(
                event.user_id, msg.topic, msg.offset, again)  # kept if the record is written again
            self.outbox.add(self.settings.topics.recommendations, msg.key, again, owner=msg.partition)
        # A redelivery follows a crash, which may have come between the Kafka delivery and the
        # Redis write of the event's batch: write the profile to Redis again (the version
        # guard drops it if Redis already has it), or Redis would lag until the user's next event.
        self.mirror.add(event.user_id)

    def count_profile_bytes(self, user_id: str, partition: int) -> None:
        stored = self.profiles.get(user_id.encode())
        self.stored_bytes[user_id] = len(stored) if stored is not None else None
        guess = len(stored) + self.sizes.growth if stored is not None else self.sizes.new
        guess += self.redeliverable.kept_bytes(user_id)  # lists of a record taken up, written on
        self.profile_bytes[partition] = self.profile_bytes.get(partition, 0) + guess
        self.largest_profile = max(self.largest_profile, guess)

    def round_room(self, batch_max: int) -> int:
        """How many events the next round may take (0: the batch is full): at most ROUND_EVENTS and what is left of
        `batch_max`, and few enough that no partition's profile records pass PARTITION_PROFILE_BYTES were each of
        them a new changed user of the fullest partition with the largest profile and recommendation guessed so far."""
        fullest = max(self.profile_bytes.values(), default=0)
        by_bytes = max(0, PARTITION_PROFILE_BYTES - fullest) // (self.largest_profile + self.sizes.recommendation)
        return min(batch_max - len(self.events), ROUND_EVENTS, by_bytes)

    def reject_state(self, profile: Profile, partition: int) -> None:
        """Dead letters for the user's learner states that could not be read (their learners started afresh)."""
        for name, stored, reason in profile.rejected_state:
            key = profile.user_id.encode()
            payload = stored.encode() if isinstance(stored, str) else orjson.dumps(stored)
            self.dead_letter(Rejection("bad_state", f"{reason}; it starts afresh",
                                       Source(self.profile_changelog, partition, restored_offset(self.profiles, key)),
                                       key, payload))
        profile.rejected_state.clear()

    def restore(self, user_id: str, profile_before: tuple[bytes, Any], partition: int,
                learners_before: PartitionLearners | None) -> None:
        """Put the user's profile (`Profile.undo_copy`) and the partition's learners back as before an event."""
        profile = Profile.from_undo(profile_before)
        self.loaded[user_id] = profile
        if self.idle is not None:
            self.idle.touched(user_id, profile.last_seen)
        if user_id in self.changed:
            self.changed[user_id] = (profile, self.changed[user_id][1])
        if learners_before is not None:
            self.learners.loaded[partition] = learners_before

    def snapshots(self, profile_changelog: str, learner_table: Any, learner_changelog: str,
                  settled: Mapping[tuple[str, int], int] | None = None) -> list[tuple[Profile, bytes]]:
        """Write changed profiles and learners to their tables and the outbox: the profiles' changelog once every
        other record of the batch is stored but the recommendations, which follow it (output.Outbox.later), each
        profile with its recommendations (batch_recommendations.py) and marked with its partition's learners record
        (learner_table); return Redis's share. `settled`: (topic, partition) -> the offset before which no record of
        that lane will be handed out again (`Redeliverable.still_ahead`)."""
        self.outbox.later = [{profile_changelog}, {self.settings.topics.recommendations}]
        for key, value, partition in self.erased.take_rewritten() if self.erased is not None else ():
            self.outbox.add(self.erased.changelog, key, value, partition, owner=partition)
        to_redis: list[tuple[Profile, bytes]] = []
        for user_id, partition in self.removed:
            self.outbox.add(profile_changelog, user_id.encode(), None, partition, owner=partition)
            self.outbox.add(self.settings.topics.profiles, user_id.encode(), None, owner=partition)
        marks = {partition: self.learners.loaded[partition].writes + 1 for partition in self.used_learners}
        marked: set[int] = set()
        written: dict[int, int] = {}
        sizes: dict[str, int] = {}
        for user_id, (profile, partition) in self.changed.items():
            key = user_id.encode()
            snapshot, public = profile.snapshots()
            kept = self.redeliverable.still_ahead(user_id, partition, settled or {})
            changelog, table = self.made.record_with(user_id, snapshot, kept)
            written[partition] = written.get(partition, 0) + len(changelog)
            sizes[user_id] = len(table)  # the lists are guessed apart (`count_profile_bytes`, `round_room`)
            to_redis.append((profile, public))
            mark = marks.get(partition)
            if mark is not None:
                marked_table = with_learners_mark(table, mark)
                changelog, table = (marked_table if changelog is table else with_learners_mark(changelog, mark),
                                    marked_table)
                marked.add(partition)
            else:  # orjson's bytes keep the buffer it grew (4 KiB at least): the table holds an exact-size copy
                exact = memoryview(table).tobytes()
                changelog, table = (exact if changelog is table else changelog), exact
            # The table's changelog record, written with the batch: same partition as the user's input.
            self.profiles[key] = table
            self.cache.keep(user_id, table, profile)
            self.outbox.add(profile_changelog, key, changelog, partition, owner=partition)
            self.outbox.add(self.settings.topics.profiles, key, public, owner=partition)
        self.sizes.learn(sizes, self.stored_bytes)
        for partition, size in written.items():
            if size > MAX_BATCH_BYTES:  # the guesses behind `round_room` fell short: said, as docs/delivery.md says
                log.warning("the profile records of partition %d in this batch take %d bytes, more than one record "
                            "batch: a crash between their produce requests applies the rest again with the "
                            "partition's learners past them", partition, size)
        for user_id in self.mirror - self.changed.keys():
            profile = self.loaded[user_id]
            to_redis.append((profile, profile.to_json(internal=False)))
        for partition in sorted(self.used_learners):
            for key, value in self.learners.records(partition, before=partition in marked):
                learner_table[key] = value
                self.outbox.add(learner_changelog, key, value, partition, owner=partition)
        # records without a mark (tombstones; the ranker off) may replace those that carried the last one: the state
        # before the partition's last learners record is no longer to be taken up (learner_table)
        unmarked = {partition for _, partition in self.removed} | {partition for _, partition in self.changed.values()}
        for partition in sorted(unmarked - marked):
            key = self.learners.drop_before(partition, self.dead_letter)
            if key is not None:
                self.outbox.add(learner_changelog, key, None, partition, owner=partition)
        return to_redis
