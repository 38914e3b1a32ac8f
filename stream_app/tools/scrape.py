"""One scrape of a worker's /metrics, read the way a dashboard would (the demo's closing figures)."""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, timeout: float = 5.0) -> Samples:
    """Every sample of `url` (a worker's /metrics): (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over the samples carrying these labels."""
    return sum(v for (n, have), v in samples.items() if n == name and set(labels.items()) <= set(have))


def quantile(samples: Samples, histogram: str, q: float, **labels: str) -> float | None:
    """Prometheus's histogram_quantile over one histogram's buckets (linear within a bucket); None when
    empty, the largest finite bound when the quantile falls in the +Inf bucket."""
    buckets = sorted((float(dict(have)["le"]), v) for (n, have), v in samples.items()
                     if n == f"{histogram}_bucket" and set(labels.items()) <= set(have))
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-12)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass
class Headline:
    events: float
    recommendations: float
    dead_letters: float
    p99_arrival_s: float | None  # event's record written to Kafka -> its recommendation delivered
    lag: float
    oldest_freshness_s: float

    @classmethod
    def of(cls, samples: Samples) -> "Headline":
        return cls(total(samples, "stream_app_events_total"), total(samples, "stream_app_recommendations_total"),
                   total(samples, "stream_app_dead_letters_total"),
                   quantile(samples, "stream_app_event_to_recommendation_seconds", 0.99, since="arrival"),
                   total(samples, "stream_app_consumer_lag"),
                   total(samples, "stream_app_user_freshness_oldest_seconds"))
