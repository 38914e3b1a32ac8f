"""A worker's metrics in the Prometheus text format (`/metrics` on its HTTP port, stream/health.py).

One source of truth: counts are the worker's `Counters` (batch.py) and the status of its parts, the same
figures `stream-app status` reads from Redis, turned into metric families at each scrape by a collector;
only what is a distribution (batch size and time, latency) is observed here, into histograms. Every
worker has its own `CollectorRegistry`, so several apps (or tests) in one process never clash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .counters import Counters
from .gc_pauses import PAUSES
from .stage_latency import LATENCY_BUCKETS, StageLatency

BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000)
BATCH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FRESHNESS_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0)


@dataclass
class Snapshot:
    """What a worker knows at a scrape (the worker builds it: StreamWorker.snapshot)."""

    counters: Counters
    ordering: dict[str, Any]  # OrderedInput.status()
    models: dict[str, Any]  # ModelWatcher.status()
    catalogue: dict[str, Any]  # CatalogueFeed.status()
    missing: dict[str, str]  # what readiness still waits for, and why (empty: ready)
    lag: dict[tuple[str, int], int] = field(default_factory=dict)  # owned input partition -> records behind
    users: int = 0  # profiles in the worker's table
    items: int = 0  # items in the item state
    ranker_labels: dict[int, int] = field(default_factory=dict)  # owned partition -> labels its ranker learned


class Freshness:
    """The last applied event time of each user the worker applied an event of since it took the user's
    partition: a profile's freshness is now minus that."""

    def __init__(self) -> None:
        self.last_applied: dict[int, dict[str, int]] = {}  # partition -> user -> event time, ms

    def applied(self, user_id: str, partition: int, event_ms: int) -> None:
        self.last_applied.setdefault(partition, {})[user_id] = event_ms

    def forget(self, user_id: str, partition: int) -> None:
        """An evicted user (STREAM_APP_USER_IDLE_MS) has no profile to be fresh or stale."""
        self.last_applied.get(partition, {}).pop(user_id, None)

    def keep(self, partitions: set[int]) -> None:
        """After a rebalance: the users of partitions that moved away are another worker's now."""
        for partition in set(self.last_applied) - partitions:
            del self.last_applied[partition]

    def ages_s(self, now_ms: int) -> np.ndarray:
        """Every tracked user's freshness, in seconds (numpy: a scrape must not stall the event loop for
        long on a million users)."""
        count = sum(len(users) for users in self.last_applied.values())
        last = np.fromiter((ts for users in self.last_applied.values() for ts in users.values()), np.int64, count)
        return np.maximum(0, now_ms - last) / 1000


class WorkerMetrics:
    def __init__(self, snapshot: Callable[[], Snapshot]):
        self.registry = CollectorRegistry()
        self.freshness = Freshness()
        self.stages = StageLatency()
        self.batch_size = Histogram("stream_app_batch_size", "Input events per output batch",
                                    buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("stream_app_batch_seconds",
                                       "Time to process a batch and deliver its output (Kafka and Redis)",
                                       buckets=BATCH_SECONDS_BUCKETS, registry=self.registry)
        self.latency = Histogram("stream_app_event_to_recommendation_seconds",
                                 "From an event to its recommendation's delivery; since=event_time: the event's ts, "
                                 "since=arrival: the input record's Kafka timestamp",
                                 ["since"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_WorkerCollector(snapshot, self.freshness, self.stages))
        PAUSES.install()
        ProcessCollector(registry=self.registry)  # process_*: CPU seconds, resident memory, open files

    def observe_batch(self, size: int, seconds: float, recommended: Iterable[tuple[int, float]],
                      delivered_s: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        from_event, from_arrival = self.latency.labels("event_time"), self.latency.labels("arrival")
        for event_ms, arrival_s in recommended:
            from_event.observe(max(0.0, delivered_s - event_ms / 1000))
            if arrival_s:
                from_arrival.observe(max(0.0, delivered_s - arrival_s))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def freshness_histogram(ages: np.ndarray) -> HistogramMetricFamily:
    at_most = np.searchsorted(np.sort(ages), FRESHNESS_BUCKETS, side="right")  # cumulative, as `le` buckets are
    buckets = [(str(bound), int(n)) for bound, n in zip(FRESHNESS_BUCKETS, at_most)]
    return HistogramMetricFamily("stream_app_user_freshness_seconds",
                                 "Now minus each user's last applied event time, over the users this worker "
                                 "applied events of since it took their partition (computed at the scrape)",
                                 buckets=[*buckets, ("+Inf", len(ages))], sum_value=float(ages.sum()))


class _WorkerCollector:
    def __init__(self, snapshot: Callable[[], Snapshot], freshness: Freshness, stages: StageLatency):
        self.snapshot = snapshot
        self.freshness = freshness
        self.stages = stages

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        yield from counter_families(s.counters)
        yield from ordering_families(s.counters, s.ordering)
        yield from model_families(s.counters, s.models, s.ranker_labels)
        yield from state_families(s)
        ages = self.freshness.ages_s(int(time.time() * 1000))
        yield freshness_histogram(ages)
        yield self.stages.family()
        yield PAUSES.family()
        yield _gauge("stream_app_user_freshness_oldest_seconds", "The largest user freshness (0: no user yet)",
                     float(ages.max()) if len(ages) else 0.0)


def counter_families(c: Counters) -> Iterator[Metric]:
    events = CounterMetricFamily("stream_app_events", "Input events taken, by input topic and event type "
                                 "(invalid: every rejected input, whatever its type)", labels=["topic", "type"])
    for topic, by_type in sorted(c.inputs.items()):
        for event_type, n in sorted(by_type.items()):
            events.add_metric([topic, event_type], n)
    yield events
    yield _counter("stream_app_events_applied", "Events applied to a profile", c.applied)
    yield _counter("stream_app_events_duplicate", "Redelivered events recognised and skipped", c.duplicates)
    yield _counter("stream_app_events_erased_dropped", "Events of erased users dated at or before their erasure, "
                   "dropped (not applied)", c.erased_events_dropped)
    yield _counter("stream_app_events_below_dedupe_floor", "Of the duplicates, events older than their user's dedupe "
                   "floor, not known as applied: dropped, too old to tell", c.below_dedupe_floor)
    yield _counter("stream_app_recommendations", "Recommendations published", c.recommendations)
    yield _counter("stream_app_recommendations_resent", "Of the redelivered events, those whose recommendation was "
                   "published again as it was made (their batch may have stopped before publishing it)",
                   c.recommendations_resent)
    dead = CounterMetricFamily("stream_app_dead_letters", "Inputs sent to the dead-letter topic, by reason",
                               labels=["reason"])
    for reason, n in sorted(c.dead_letters.items()):
        dead.add_metric([reason], n)
    yield dead
    retries = CounterMetricFamily("stream_app_output_retries", "Failed deliveries of a batch's output, each "
                                  "retried with backoff (an outage of the broker or Redis)", labels=["output"])
    retries.add_metric(["kafka"], c.kafka_retries)
    retries.add_metric(["redis"], c.redis_retries)
    yield retries


def ordering_families(c: Counters, ordering: dict[str, Any]) -> Iterator[Metric]:
    yield _counter("stream_app_out_of_order_events", "Events applied after a later event of the same user", c.late)
    late = CounterMetricFamily("stream_app_late_events", "Events older than one already released: by their "
                               "partition's clock, or after their item epoch was applied", labels=["clock"])
    late.add_metric(["partition"], ordering.get("late_in_partition", 0))
    late.add_metric(["item_state"], ordering.get("late_for_item_state", 0))
    yield late
    yield _counter("stream_app_stale_item_state_events", "Events ranked with an item state already past their epoch "
                   "(a partition taken over from a worker whose item state was ahead): their lists saw later events",
                   ordering.get("stale_item_state", 0))
    yield _gauge("stream_app_events_waiting", "Events read and waiting for their turn in event time",
                 ordering.get("buffered", 0))


def model_families(c: Counters, models: dict[str, Any], ranker_labels: dict[int, int]) -> Iterator[Metric]:
    info = GaugeMetricFamily("stream_app_model_info", "The model version serving each role (1)",
                             labels=["role", "version"])
    for role in ("live", "shadow", "content"):
        if models.get(role):
            info.add_metric([role, models[role]], 1)
    yield info
    judged = CounterMetricFamily("stream_app_model_judged", "Lists judged by the user's next event: live, "
                                 "the lists shown, whatever ranked them (with or without a live encoder); shadow, "
                                 "those the shadow encoder would have shown", labels=["role"])
    hits = CounterMetricFamily("stream_app_model_hits", "Judged lists that held the user's next item",
                               labels=["role"])
    rate = GaugeMetricFamily("stream_app_model_hit_rate", "hits / judged since the role's version began serving "
                             "here (version: none while no encoder serves the role)", labels=["role", "version"])
    for role in ("live", "shadow"):
        n, hit = getattr(c, f"{role}_judged"), getattr(c, f"{role}_hits")
        judged.add_metric([role], n)
        hits.add_metric([role], hit)
        since = c.since_serving.get(role)
        if since and since["judged"]:
            rate.add_metric([role, since["version"] or "none"], since["hits"] / since["judged"])
    yield from (judged, hits, rate)
    yield _counter("stream_app_encoder_failures", "Rounds ranked without the encoder because it raised",
                   c.encoder_failures)
    yield _counter("stream_app_encoder_not_finite", "Events ranked without the encoder because its outputs for them "
                   "were not finite (NaN or infinite)", c.encoder_not_finite)
    yield _counter("stream_app_shadow_encoder_failures", "Rounds the shadow encoder raised on (live lists unaffected)",
                   c.shadow_encoder_failures)
    yield _counter("stream_app_users_evicted", "Idle profiles dropped from the table and Redis (STREAM_APP_USER_IDLE_MS)",
                   c.evicted_users)
    yield _counter("stream_app_profiles_reused", "Stored profiles a batch took up as the objects this worker wrote "
                   "them from (STREAM_APP_PROFILE_CACHE_USERS), not parsed", c.profiles_reused)
    yield _counter("stream_app_profiles_parsed", "Stored profiles a batch parsed from the table's record",
                   c.profiles_parsed)
    yield _counter("stream_app_redis_refills", "Times Redis lost the profile mirror and this worker wrote back the "
                   "profiles of its partitions", c.redis_refills)
    yield _counter("stream_app_redis_writes_refused", "Profile writes Redis refused for good (its key holds another "
                   "type): the mirror lacks those users until the key is fixed", c.redis_writes_refused)
    yield _counter("stream_app_profiles_refilled", "Profiles written back to Redis then (newer than what it held)",
                   c.profiles_refilled)
    labels = GaugeMetricFamily("stream_app_ranker_labels", "Labels each owned partition's online ranker has "
                               "learned (it ranks once warm)", labels=["partition"])
    for partition, n in sorted(ranker_labels.items()):
        labels.add_metric([str(partition)], n)
    yield labels


def state_families(s: Snapshot) -> Iterator[Metric]:
    yield _gauge("stream_app_ready", "1 when the worker takes events (what /readyz answers)", float(not s.missing))
    lag = GaugeMetricFamily("stream_app_consumer_lag", "Records of an owned input partition not yet committed: its "
                            "end (the latest of the broker's answer, the high watermark and the reader's position) "
                            "minus the committed offset", labels=["topic", "partition"])
    for (topic, partition), n in sorted(s.lag.items()):
        lag.add_metric([topic, str(partition)], n)
    yield lag
    sizes = GaugeMetricFamily("stream_app_table_entries", "Entries of the worker's state: users (profiles in its "
                              "table), items (item state), catalogue (items with text)", labels=["table"])
    sizes.add_metric(["users"], s.users)
    sizes.add_metric(["items"], s.items)
    sizes.add_metric(["catalogue"], s.catalogue.get("items", 0))
    yield sizes
    vectors = CounterMetricFamily("stream_app_text_vectors", "Catalogue texts given a vector by the content model: "
                                  "embedded by this worker, or taken from the workers' shared store in Redis",
                                  labels=["source"])
    vectors.add_metric(["embedded"], s.catalogue.get("embedded", 0))
    vectors.add_metric(["shared"], s.catalogue.get("shared", 0))
    yield vectors
    item_state = s.ordering.get("item_state", {})
    yield _counter("stream_app_items_evicted", "Idle items dropped from the item state (STREAM_APP_ITEM_IDLE_MS)",
                   item_state.get("evicted_items", 0))
