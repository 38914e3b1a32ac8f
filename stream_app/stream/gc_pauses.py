"""Python's cyclic garbage collector: timed, and kept off what the worker holds for its whole life.

A collection of the oldest generation walks every container object of the process, most of them the
libraries' and the app's, made at start-up and alive until exit: `stream-app bench --events 20000
--rate 1000` printed 9 of them, 627 ms in all, each at most 100 ms, every one holding up every event
in flight. `freeze_long_lived` moves what exists when the worker starts processing out of the
collector's sight (`gc.freeze`); the same command then printed 9, 62 ms in all, each at most 25 ms.
Reference counting still frees a frozen object once nothing refers to it; only a reference cycle
among objects made before the freeze would stay, a bounded set.

At full speed the worker holds a backlog of read events, new objects: the oldest generation still ran
17 times over `stream-app bench --events 30000` (678 ms; 1,084 ms in all generations). The youngest
generation is collected after 700 allocations by default, so objects that live for a batch are
promoted and promoted again and end up walked by every collection of the oldest. `GC_THRESHOLDS`
lets a batch's objects die young: the same command then ran no collection of the oldest generation
and 80 ms in all. Reference cycles are still collected, less often.

`GcPauses` times every collection into a histogram by generation: the worker's /metrics show it as
`stream_app_gc_pause_seconds`.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np
from prometheus_client.core import HistogramMetricFamily

#: gc.set_threshold: a collection of the youngest generation after this many allocations (default 700),
#: of the middle one after this many of the youngest's (10), of the oldest after this many of the middle's (10)
GC_THRESHOLDS = (50_000, 20, 10)
PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GENERATIONS = 3


class GcPauses:
    """Seconds each collection took, by generation (`install` hooks it into `gc.callbacks`, once)."""

    def __init__(self) -> None:
        self.counts = np.zeros((GENERATIONS, len(PAUSE_BUCKETS) + 1), dtype=np.int64)
        self.sums = [0.0] * GENERATIONS
        self._started = 0.0

    def install(self) -> None:
        if self._observe not in gc.callbacks:
            gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        seconds = time.perf_counter() - self._started
        generation = info["generation"]
        self.counts[generation, np.searchsorted(PAUSE_BUCKETS, seconds, side="left")] += 1
        self.sums[generation] += seconds

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily("stream_app_gc_pause_seconds",
                                       "How long each run of Python's cyclic garbage collector held the worker, by "
                                       "generation (2: the oldest; objects alive when processing began are frozen "
                                       "out of it)", labels=["generation"])
        for generation in range(GENERATIONS):
            cumulative = np.cumsum(self.counts[generation]).tolist()
            family.add_metric([str(generation)], [*((str(b), n) for b, n in zip(PAUSE_BUCKETS, cumulative)),
                                                  ("+Inf", cumulative[-1])], sum_value=self.sums[generation])
        return family


#: The process's collector is one: so is its record.
PAUSES = GcPauses()


def freeze_long_lived() -> None:
    """Collect once, move every object the process holds now out of later collections, and collect the
    young generation less often (GC_THRESHOLDS)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
