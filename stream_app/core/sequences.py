"""How a user's recent events become the encoder's input. Pure numpy: shared by the workers (which
never import torch) and the training code, so both featurise identically.

Item ids are hashed into `buckets` twice, with two independent salts; the encoder sums the two
bucket embeddings. Any item id, seen in training or not, encodes; two items share a representation
only if both hashes collide (about 1 / buckets**2 per pair instead of 1 / buckets), and a single
collision is told apart by the other half. Bucket 0 is padding.
"""

from __future__ import annotations

import hashlib
import math
from typing import Iterable, Sequence

import numpy as np

KIND_IDS = {"browse": 1, "click": 2, "purchase": 3}  # 0 is padding
N_KINDS = 4
N_GAPS = 18  # 0 padding, 1 first event, 2.. log2 seconds since the previous event (capped)

Step = Sequence  # (item_id, type, ts), as in Profile.recent


def bucket_pair(item_id: str, buckets: int) -> tuple[int, int]:
    digest = hashlib.blake2b(item_id.encode("utf-8"), digest_size=16).digest()
    a = int.from_bytes(digest[:8], "little")
    b = int.from_bytes(digest[8:], "little")
    return 1 + a % (buckets - 1), 1 + b % (buckets - 1)


def gap_bucket(gap_ms: int | None) -> int:
    if gap_ms is None:
        return 1
    return 2 + min(N_GAPS - 3, int(math.log2(1 + max(gap_ms, 0) / 1000)))


#: Steps every encoder version is featurised on when it is trained and again when it loads (`featurizer_id`).
_PROBE = [[("probe-a", "browse", 0), ("probe-b", "click", 1_500), ("probe-a", "purchase", 90_000_000)],
          [("é-Ω 1", "other", 5)]]


def featurizer_id(buckets: int) -> str:
    """What this code makes of a fixed set of steps (hex): the hashes, kinds and gap buckets a model learned from.
    A model's manifest keeps it, so one trained on another featurisation is refused at load, not fed inputs that
    mean something else to it."""
    arrays = Featurizer(buckets, 8).arrays(_PROBE)
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(arrays[name].tobytes())
    return digest.hexdigest()[:16]


class Featurizer:
    """Turns step sequences into padded int64 arrays (right-padded; `length` marks the end).
    Caches item hashes (bounded) because the same items recur across batches."""

    def __init__(self, buckets: int, max_len: int, cache_max: int = 200_000):
        self.buckets = buckets
        self.max_len = max_len
        self.cache_max = cache_max
        self._pairs: dict[str, tuple[int, int]] = {}

    def pair(self, item_id: str) -> tuple[int, int]:
        found = self._pairs.get(item_id)
        if found is None:
            if len(self._pairs) >= self.cache_max:
                self._pairs.clear()
            found = self._pairs[item_id] = bucket_pair(item_id, self.buckets)
        return found

    def arrays(self, sequences: Iterable[Sequence[Step]]) -> dict[str, np.ndarray]:
        sequences = [list(s)[-self.max_len:] for s in sequences]
        steps = max(1, max((len(s) for s in sequences), default=1))
        n = len(sequences)
        item_a = np.zeros((n, steps), dtype=np.int64)
        item_b = np.zeros((n, steps), dtype=np.int64)
        kind = np.zeros((n, steps), dtype=np.int64)
        gap = np.zeros((n, steps), dtype=np.int64)
        length = np.zeros(n, dtype=np.int64)
        for row, seq in enumerate(sequences):
            previous_ts = None
            for col, (item_id, event_type, ts) in enumerate(seq):
                item_a[row, col], item_b[row, col] = self.pair(item_id)
                kind[row, col] = KIND_IDS.get(event_type, 1)
                gap[row, col] = gap_bucket(None if previous_ts is None else ts - previous_ts)
                previous_ts = ts
            length[row] = len(seq)
        return {"item_a": item_a, "item_b": item_b, "kind": kind, "gap": gap, "length": length}
