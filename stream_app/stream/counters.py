"""What a worker counts of its batches (the metrics' counters, stream/metrics.py), kept over its batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Counters:
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    # of the duplicates, events not known as applied but older than their user's dedupe floor: dropped unapplied,
    # too old to tell (a heavy user's late event, or a redelivery)
    below_dedupe_floor: int = 0
    rejected: int = 0
    recommendations: int = 0
    # published again as they were made, for events of a batch stopped between storing its records and publishing them
    recommendations_resent: int = 0
    late: int = 0  # applied after a later event of the same user (its recent items are reordered)
    # Hits of the next event on the list shown (live) and on the list a shadow encoder would have shown
    live_judged: int = 0
    live_hits: int = 0
    shadow_judged: int = 0
    shadow_hits: int = 0
    encoder_failures: int = 0  # rounds ranked without an encoder because it raised
    encoder_not_finite: int = 0  # events ranked without it because its outputs for them were not finite
    shadow_encoder_failures: int = 0  # rounds the shadow encoder raised on (the live lists untouched)
    evicted_users: int = 0  # idle profiles dropped (STREAM_APP_USER_IDLE_MS)
    erased_users: int = 0  # erasure requests applied (`stream-app erase`)
    reset_users: int = 0  # reset requests applied (`stream-app reset-profile`)
    erased_events_dropped: int = 0  # events of erased users dated at or before their erasure, not applied
    erased_profiles_restored: int = 0  # erased users' profiles a restore took up again, erased again
    # The same counts broken down, for the metrics (stream/metrics.py): input topic -> event type ->
    # events ("invalid": every rejected input, whatever its type), and dead letters by reason
    inputs: dict[str, dict[str, int]] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    # Failed attempts to deliver a batch's output, each retried (an outage stalls the worker)
    kafka_retries: int = 0
    redis_retries: int = 0
    redis_refills: int = 0  # times Redis lost the profile mirror and this worker wrote its profiles back
    profiles_refilled: int = 0  # ... profiles written then
    redis_writes_refused: int = 0  # profile writes Redis refused for good (a key of another type): logged, skipped
    # Stored profiles a batch took up: as the objects the worker wrote them from (profile_cache.py), or parsed
    profiles_reused: int = 0
    profiles_parsed: int = 0
    # Hits since each role's version began serving here (`serving`): role -> {"version", "judged", "hits"}, and for
    # the shadow "live_hits", the shown lists' hits over the same events: the figures an owner compares them by
    since_serving: dict[str, dict[str, Any]] = field(default_factory=dict)

    def serving(self, live: str | None, shadow: str | None) -> None:
        """The versions serving the batch: a role whose version changed counts its hits afresh (the lifetime counts
        above go on: they are the metrics' counters)."""
        for role, version in (("live", live), ("shadow", shadow)):
            now = self.since_serving.get(role)
            if now is None or now["version"] != version:
                self.since_serving[role] = {"version": version, "judged": 0, "hits": 0,
                                            **({"live_hits": 0} if role == "shadow" else {})}

    def count_hits(self, live_hit: bool | None, shadow_hit: bool | None) -> None:
        if live_hit is not None:
            self.live_judged += 1
            self.live_hits += live_hit
            if (live := self.since_serving.get("live")) is not None:
                live["judged"] += 1
                live["hits"] += live_hit
        if shadow_hit is not None:
            self.shadow_judged += 1
            self.shadow_hits += shadow_hit
            if (shadow := self.since_serving.get("shadow")) is not None:
                shadow["judged"] += 1
                shadow["hits"] += shadow_hit
                shadow["live_hits"] += bool(live_hit)  # a shadow list is made only where a live one was shown

    def count_dead_letter(self, reason: str) -> None:
        self.rejected += 1
        self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1

    def count_input(self, topic: str, event_type: str) -> None:
        self.events += 1
        by_type = self.inputs.setdefault(topic, {})
        by_type[event_type] = by_type.get(event_type, 0) + 1
