"""Where an event's time goes on a worker's input path, before its recommendation is delivered.

Seconds from each own input record's Kafka timestamp to each stage (STAGES), counted a call at a time
into histograms that the worker's /metrics exposes (metrics.py) and `stream-app bench` prints.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from prometheus_client.core import HistogramMetricFamily

#: At most a quarter apart up to 10 s: a quantile is interpolated within its bucket, and bounds of 1, 2.5 and 5 s put
#: `bench`'s stage p99 of 3.1 s at 4.9 (helper-145)
LATENCY_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3,
                   0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.5, 10.0, 30.0,
                   60.0, 300.0, 3600.0)
#: The input path's stages, in the order an event passes them (ordered_input.py): read by the worker's own
#: reader, delivered by Faust's consumer (the same record, read a second time), released in event-time order,
#: taken into a batch. The recommendation's delivery is the end (stream_app_event_to_recommendation_seconds).
STAGES = ("read", "delivered", "ordered", "taken")


class StageLatency:
    """Seconds from each own input record's Kafka timestamp to each stage of the input path (STAGES), as
    histograms counted a call at a time (one bucket search per stage and call, not one observe per event)."""

    def __init__(self) -> None:
        self.counts = {stage: np.zeros(len(LATENCY_BUCKETS) + 1, dtype=np.int64) for stage in STAGES}
        self.sums = dict.fromkeys(STAGES, 0.0)

    def observe(self, stage: str, now_s: float, record_s: Iterable[float | None]) -> None:
        """Records whose Kafka timestamps (seconds; None: the record has none) reached `stage` at `now_s`."""
        stamps = np.fromiter((ts for ts in record_s if ts is not None), dtype=np.float64)
        if not stamps.size:
            return
        seconds = np.maximum(0.0, now_s - stamps)
        self.counts[stage] += np.bincount(np.searchsorted(LATENCY_BUCKETS, seconds, side="left"),
                                          minlength=len(LATENCY_BUCKETS) + 1)
        self.sums[stage] += float(seconds.sum())

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily("stream_app_input_stage_seconds",
                                       "From an own input record's Kafka timestamp to a stage of the worker's input "
                                       "path: read (its reader), delivered (Faust's consumer), ordered (released "
                                       "in event-time order), taken (into a batch)", labels=["stage"])
        for stage in STAGES:
            cumulative = np.cumsum(self.counts[stage]).tolist()
            family.add_metric([stage], [*((str(b), n) for b, n in zip(LATENCY_BUCKETS, cumulative)),
                                        ("+Inf", cumulative[-1])], sum_value=self.sums[stage])
        return family
