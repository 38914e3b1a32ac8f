"""The erasure steps of a worker's batch (`BatchHandler`'s): a user's profile removed (erased, reset or idle),
erasure and reset requests applied between rounds, and the events and dead letters of erased users held back."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import orjson

from ..config import Settings
from ..contracts import ErasureRequest, Rejection, input_users
from ..core.events import Event
from ..core.profile import MAX_EXACT, Profile, snapshot_order
from ..partitioning import partition_of
from .erasures import ErasedUsers, receipt
from .profile_cache import ProfileCache

log = logging.getLogger("stream_app.worker")


class ErasureSteps:
    """Mixed into `BatchHandler`, whose state these steps read and write (the attributes below)."""

    settings: Settings
    erased: ErasedUsers | None
    profiles: Any
    loaded: dict[str, Profile]
    receipts: list[dict[str, Any]]
    evicted: dict[str, int]
    counters: Any
    outbox: Any
    now: int
    as_stored: dict[str, bytes]
    changed: dict[str, tuple[Profile, int]]
    mirror: set[str]
    removed: list[tuple[str, int]]
    idle: Any
    cache: ProfileCache
    redeliverable: Any

    def remove(self, user_id: str, partition: int) -> bool:
        """Drop the user's profile from the table and this batch (tombstones: `snapshots`; Redis: the worker)
        and from the idle users; returns whether the idle users had it."""
        self.profiles.pop(user_id.encode(), None)
        self.loaded.pop(user_id, None)
        self.as_stored.pop(user_id, None)
        self.changed.pop(user_id, None)
        self.mirror.discard(user_id)
        self.cache.drop(user_id)  # an erased user's profile is not to stay in the worker's memory either
        self.redeliverable.drop(user_id)  # nor the lists of its events before (they are dropped if read again)
        self.removed.append((user_id, partition))
        return self.idle is not None and self.idle.drop(user_id)

    def remove_for_request(self, user_id: str, partition: int) -> list[str]:
        """`remove` for an erasure or reset request: the worker's own per-user state it dropped, for the receipt."""
        kept = self.cache.holds(user_id)
        idle = self.remove(user_id, partition)
        return [*(["idle users"] if idle else []), *(["kept profiles"] if kept else []), "freshness metrics"]

    def erase_restored(self, owned: set[int], partitions: int) -> dict[str, int]:
        """Remove again the profiles the table restored of users erased after those profiles began: a batch
        of an earlier owner that outlived its partitions' revoke landed its changelog record after the
        erasure's tombstone, and a restore takes such a record up (nothing before it is left to compare
        it with, once compacted). Tombstones and Redis as for an erasure, without a receipt (one was
        sent). Returns user -> erasure time, for Redis's markers. Once per assignment, before its rounds."""
        erased = self.erased
        if erased is None or not erased.data or self.settings.replay_erased:
            return {}
        found: dict[str, int] = {}
        for key, stored in list(self.profiles.items()):
            user_id = key.decode()
            erased_at = erased.erased_at(user_id)
            if erased_at is None:
                continue
            order, partition = snapshot_order(stored), partition_of(user_id, partitions)
            if order is None or order[0] > erased_at or partition not in owned:  # begun after: a new profile
                continue
            self.remove(user_id, partition)
            found[user_id] = erased_at
        if found:
            self.counters.erased_profiles_restored += len(found)
            log.warning("the profile table restored %d profiles of users erased after they began (a late write "
                        "of an earlier owner); erased them again", len(found))
        return found

    def erase(self, request: ErasureRequest, partition: int, worker_id: str) -> None:
        """Erase the user between two rounds (under the batch lock): the profile with its learner state, digests and
        pending lists, the idle-users entry; remember the erasure (changelog record with the batch); the receipt."""
        user_id = request.user_id
        profile = self.loaded.get(user_id)
        stored = self.profiles.get(user_id.encode()) if profile is None else None
        if stored is not None:
            try:
                profile = Profile.from_json(stored)
            except Exception as exc:  # unreadable: erased all the same, the receipt says what was found
                log.error("the stored profile of a user to %s cannot be read (%r); deleted unread",
                          "reset" if request.reset else "erase", exc)
        found = profile is not None or stored is not None
        if request.reset:
            self.reset(request, partition, profile, stored, worker_id)
            return
        # Applied again (the same request, by id: a recreated erasures topic): a profile begun after the recorded
        # erasure is kept, of later events only. Applied first: erased whole, and events stamped after the request's
        # time (a client's clock ahead) with it: the erasure's time then covers them, so neither they nor a late
        # write come back
        recorded = self.erased.erased_at(user_id, requested=True)
        kept_later_profile = (profile is not None and (profile.generation or 0) > request.requested_at
                              and recorded is not None and recorded >= request.requested_at
                              and self.erased.applied_before(user_id, request.request_id))
        if kept_later_profile:
            profile, found, worker_state = None, False, []
        else:
            worker_state = self.remove_for_request(user_id, partition)
        through = max(request.requested_at, profile.last_seen or 0) if profile is not None else request.requested_at
        key, value = self.erased.record(replace(request, requested_at=through))
        self.outbox.add(self.erased.changelog, key, value, partition, owner=partition)
        self.counters.erased_users += 1
        self.receipts.append(receipt(request, partition, profile, found, self.erased, self.settings, worker_state,
                                     worker_id, self.now, kept_later_profile, orjson.loads(value)["erased_at"]))
        log.info("erased a user of partition %d (request %s)", partition, request.request_id,
                 extra={"partition": partition})

    def reset(self, request: ErasureRequest, partition: int, profile: Profile | None, stored: bytes | None,
              worker_id: str) -> None:
        """A reset (`stream-app reset-profile`): the profile deleted as an erasure deletes it (one that cannot be read
        too: its user's events were parked), but no erasure recorded, so the user's next events, and the parked ones
        re-driven, start a new profile. Redis's key refuses late writes of the deleted profile, as after an eviction.
        Whatever the profile's time: a reset is asked for the profile there is (a generation is an event's time, which
        may be ahead of the request's, and an unreadable record's may be anything)."""
        user_id = request.user_id
        order = snapshot_order(stored) if profile is None and stored is not None else None
        # an unreadable record whose generation cannot be read: any profile Redis holds is that record's (a newer one
        # would be in the table), so the removal takes it whatever its generation (with 1, Redis's guard kept it and
        # the read API served the reset profile on); later writes are let in by their batch's time, as after any
        # eviction
        generation = (profile.generation or 0) if profile is not None else order[0] if order is not None else \
            MAX_EXACT if stored is not None else 0
        found = profile is not None or stored is not None
        worker_state = self.remove_for_request(user_id, partition)
        if found:
            self.evicted[user_id] = max(generation, 1)
        self.counters.reset_users += 1
        self.receipts.append(receipt(request, partition, profile, found, self.erased, self.settings, worker_state,
                                     worker_id, self.now))
        log.info("reset the profile of a user of partition %d (request %s)", partition, request.request_id,
                 extra={"partition": partition})

    def redis_erasures(self, erased_again: dict[str, int]) -> dict[str, int]:
        """User -> erasure time, for the markers of the users this batch's erasures removed (`erased_again`: those
        `erase_restored` removed): none if events dated before an erasure are to be applied again
        (STREAM_APP_REPLAY_ERASED). Not of a request that kept a later profile: it removed nothing, and its time,
        sent with an idle eviction of that user later in the batch, had Redis keep the evicted profile, unmarked."""
        if self.settings.replay_erased:
            return {}
        return erased_again | {sent["user_id"]: sent["erased_through"] for sent in self.receipts
                               if not sent.get("reset") and not sent["deleted"].get("kept_later_profile")}

    def send_receipts(self, redis_existed: dict[str, bool]) -> None:
        for sent in self.receipts:  # with what Redis answered (`delete_profiles`; once per user)
            if not sent["deleted"].get("kept_later_profile"):  # it left Redis's key (to an eviction, if any)
                sent["deleted"]["redis"]["existed"] = redis_existed.pop(sent["user_id"], False)
            self.outbox.add(self.settings.topics.erasure_receipts, sent["user_id"].encode(), orjson.dumps(sent))

    def erased_before(self, event: Event) -> bool:
        """Is the event dated at or before its user's erasure (a replay of an old log): not applied, unless
        STREAM_APP_REPLAY_ERASED asks for it. Dropped, not dead-lettered: that would store it again."""
        if self.erased is None or self.settings.replay_erased:
            return False
        erased_at = self.erased.erased_at(event.user_id)
        return erased_at is not None and event.ts <= erased_at

    def erased_rejection(self, rejection: Rejection) -> bool:
        """Does an invalid event name an erased user, dated at or before the erasure or undated: dropped too,
        as `erased_before` drops valid ones (a dead letter would store the payload again)."""
        if self.erased is None or self.settings.replay_erased or not self.erased.data:
            return False
        users, ts = input_users(rejection.key, rejection.payload)
        return any((erased_at := self.erased.erased_at(user)) is not None and (ts is None or ts <= erased_at)
                   for user in users)
