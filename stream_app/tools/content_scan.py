"""What the content sources cost per event at a catalogue's size: `stream-app content bench --scan-items N`.

The scan's cost depends on the catalogue's size and the vectors' dimension, not on the texts, so it is timed on
random unit vectors (seeded) in an index built the way the worker builds one."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from ..core.content import EXPECT_CHUNK, ContentIndex, quantised
from ..errors import StreamAppError


@dataclass(frozen=True)
class ScanTimes:
    items: int
    dim: int
    interest_ms: float  # median time to list the k items nearest an interest vector
    similar_ms: float  # median time to list the k items nearest an item not seen before (the cache misses)
    told_ms: float  # the interest vector's nearest per event when a round of EXPECT_CHUNK is told ahead (median)
    vector_mib: float  # the index's vectors in memory

    def line(self) -> str:
        return (f"content sources at {self.items:,} items of {self.dim} dimensions: {self.interest_ms:.1f} ms per "
                f"event for the interest vector's nearest, {self.similar_ms:.1f} ms per new item's similar items, "
                f"{self.told_ms:.1f} ms per event for the interest vector's nearest in a round told ahead (medians), "
                f"{self.vector_mib:,.0f} MiB of vectors")


def scan_bytes(items: int, dim: int) -> int:
    """About the most memory `time_scans` holds at once: the random float32 rows, the index's copy of them and its
    working arrays, and two lists of ids."""
    return items * (dim * 12 + 200)


def available_bytes() -> int | None:
    """The memory the system can give without swapping (MemAvailable), None where it does not say."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def time_scans(items: int, dim: int, k: int = 20, repeats: int = 30, seed: int = 0) -> ScanTimes:
    """Median milliseconds of the two catalogue scans of `recommend`, over `repeats` calls each."""
    needed, free = scan_bytes(items, dim), available_bytes()
    if free is not None and needed > free:  # numpy's MemoryError would end it in a traceback
        raise StreamAppError(f"--scan-items {items:,} needs about {needed / 2**30:,.1f} GiB at {dim} dimensions and "
                             f"{free / 2**30:,.1f} GiB is available: give fewer items")
    rng = np.random.default_rng(seed)
    ids = [f"i{n}" for n in range(items)]
    index = ContentIndex("scan", ids, ids, quantised(rng.standard_normal((items, dim), dtype=np.float32)))
    interest = rng.standard_normal(dim)
    interest /= np.linalg.norm(interest)
    interest_times, similar_times = [], []
    for repeat in range(repeats):
        started = time.perf_counter()
        index.nearest(interest, k)
        interest_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        index.similar(ids[(repeat * 7919) % items], k)  # a different item each time: never a cached list
        similar_times.append(time.perf_counter() - started)
    told_times = []
    for _ in range(max(1, repeats // 10)):
        queries = rng.standard_normal((EXPECT_CHUNK, dim))
        queries = list(queries / np.linalg.norm(queries, axis=1, keepdims=True))
        started = time.perf_counter()
        index.expect(queries)
        for query in queries:
            index.nearest(query, k)
        told_times.append((time.perf_counter() - started) / len(queries))
    return ScanTimes(items, dim, statistics.median(interest_times) * 1000, statistics.median(similar_times) * 1000,
                     statistics.median(told_times) * 1000, index.vectors.nbytes / 2**20)
