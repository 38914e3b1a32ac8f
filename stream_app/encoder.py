"""The deep sequence encoder at serving time: onnxruntime, one call per micro-batch. No torch.

`Encoder` loads one registry version: the ONNX graph (recent steps -> user embedding) and the item
embedding table it was trained with. `encode` featurises many users' recent sequences and runs them
in one onnxruntime call; `nearest` is an exact dot product over the table (plus the vectors of items
newer than the model, learned online from the users who interact with them: `items.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .registry import open_version
from .sequences import Featurizer, Step


class Encoder:
    def __init__(self, folder: Path, manifest: dict[str, Any], threads: int = 1):
        import onnxruntime as ort

        self.folder = folder
        self.manifest = manifest
        self.version: str = manifest["version"]
        dims = manifest["dims"]
        self.dim: int = dims["embedding"]
        self.featurizer = Featurizer(dims["buckets"], dims["max_len"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # workers are one process per core
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / "encoder.onnx"), options, providers=["CPUExecutionProvider"])
        self.items = np.load(folder / "items.npy").astype(np.float32)
        self.item_ids: list[str] = json.loads((folder / "items.json").read_text())
        self.row_of = {item_id: row for row, item_id in enumerate(self.item_ids)}

    @classmethod
    def load(cls, registry: str | Path, version: str, threads: int = 1) -> "Encoder":
        folder, manifest = open_version(registry, version)
        return cls(folder, manifest, threads)

    def encode(self, sequences: Sequence[Sequence[Step]]) -> np.ndarray:
        """User embeddings [len(sequences), dim] from one onnxruntime call. Empty sequences give zeros."""
        if not sequences:
            return np.zeros((0, self.dim), dtype=np.float32)
        inputs = self.featurizer.arrays(sequences)
        out = self.session.run(["user"], inputs)[0]
        out[inputs["length"] == 0] = 0.0
        return out

    def item_vector(self, item_id: str) -> np.ndarray | None:
        row = self.row_of.get(item_id)
        return self.items[row] if row is not None else None

    def scores(self, user: np.ndarray) -> np.ndarray:
        return self.items @ user


class EncoderView:
    """One encoder version as a batch sees it: the model's item table, plus the vectors of items newer
    than the model (learned online from the users who interacted with them, `items.py`)."""

    def __init__(self, encoder: Encoder, new_items: dict[str, list[float]] | None = None):
        self.encoder = encoder
        self.version = encoder.version
        new_items = {item_id: vec for item_id, vec in (new_items or {}).items() if item_id not in encoder.row_of}
        self.new_ids = list(new_items)
        self.new_row_of = {item_id: row for row, item_id in enumerate(self.new_ids)}
        self.new_vectors = (np.array([new_items[i] for i in self.new_ids], dtype=np.float32)
                            if new_items else np.zeros((0, encoder.dim), dtype=np.float32))

    def knows(self, item_id: str) -> bool:
        return item_id in self.encoder.row_of

    def user(self, vector: np.ndarray) -> "UserEncoding":
        return UserEncoding(self, vector)


class UserEncoding:
    """A user's embedding against every item the view knows: exact dot products (fine for catalogs of
    up to ~10^5 items per worker; beyond that an ANN index would pay off)."""

    def __init__(self, view: EncoderView, vector: np.ndarray):
        self.view = view
        self.version = view.version
        self.vector = vector
        self.model_scores = view.encoder.items @ vector
        self.new_scores = view.new_vectors @ vector
        best = self.model_scores.max(initial=-np.inf)
        self.best = float(max(best, self.new_scores.max(initial=-np.inf)))
        # Shares are (score - mean) / (best - mean) over the catalog, clipped to [0, 1]: 1 for the best
        # item, 0 for an average one, linear between. The logits are peaked (the best item is often
        # many standard deviations ahead), so exp(score - best) would leave the ranker only zeros.
        self.mean = float(self.model_scores.mean()) if self.model_scores.size else 0.0
        self.span = self.best - self.mean if self.best - self.mean > 1e-9 else 1.0

    def nearest(self, n: int) -> list[tuple[str, float]]:
        """The n best items as (item_id, share of the best, in (0, 1])."""
        scores = np.concatenate([self.model_scores, self.new_scores])
        if scores.size == 0 or n <= 0:
            return []
        n = min(n, scores.size)
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top], kind="stable")]
        model_ids, new_ids, m = self.view.encoder.item_ids, self.view.new_ids, len(self.model_scores)
        return [(model_ids[i] if i < m else new_ids[i - m], self._share(scores[i])) for i in top]

    def _share(self, score: float) -> float:
        return min(1.0, max(0.0, (float(score) - self.mean) / self.span))

    def shares_for(self, item_ids: Sequence[str]) -> list[float]:
        row_of, new_row_of = self.view.encoder.row_of, self.view.new_row_of
        out = []
        for item_id in item_ids:
            row = row_of.get(item_id)
            if row is not None:
                out.append(self._share(self.model_scores[row]))
                continue
            row = new_row_of.get(item_id)
            out.append(self._share(self.new_scores[row]) if row is not None else 0.0)
        return out


def batch_sequences(recent_of: Any, events: Sequence[Any], max_len: int) -> list[list[Step]]:
    """For each event of a batch (in processing order) the user's recent steps up to and including it:
    the profile's `recent` before the batch (`recent_of(user_id)`), then the batch's earlier events
    of that user, then this one, in time order (as the profile keeps them)."""
    grown: dict[str, list[Step]] = {}
    out = []
    for event in events:
        steps = grown.get(event.user_id)
        if steps is None:
            steps = grown[event.user_id] = [tuple(step) for step in recent_of(event.user_id)[-max_len:]]
        step = (event.item_id, event.type, event.ts)
        if not steps or event.ts >= steps[-1][2]:
            steps.append(step)
        else:
            at = len(steps)
            while at > 0 and steps[at - 1][2] > event.ts:
                at -= 1
            steps.insert(at, step)
        if len(steps) > max_len:
            del steps[: len(steps) - max_len]
        out.append(list(steps))
    return out
