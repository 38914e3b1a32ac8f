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

    #: Users scored per matrix product: bounds the score matrix to CHUNK x items floats.
    CHUNK = 128

    def __init__(self, encoder: Encoder, new_items: dict[str, list[float]] | None = None):
        self.encoder = encoder
        self.version = encoder.version
        new_items = {item_id: vec for item_id, vec in (new_items or {}).items() if item_id not in encoder.row_of}
        self.n_model = len(encoder.item_ids)
        if new_items:
            self.ids = encoder.item_ids + list(new_items)
            self.row_of = {**encoder.row_of, **{item_id: self.n_model + row for row, item_id in enumerate(new_items)}}
            self.matrix = np.vstack([encoder.items, np.array(list(new_items.values()), dtype=np.float32)])
        else:
            self.ids, self.row_of, self.matrix = encoder.item_ids, encoder.row_of, encoder.items

    def knows(self, item_id: str) -> bool:
        return item_id in self.encoder.row_of

    def users(self, vectors: np.ndarray, nearest: int = 20) -> list["UserEncoding"]:
        """A batch's users against every item: exact dot products, one matrix product and one partial
        sort per chunk of users (fine up to ~10^5 items per worker; beyond, an ANN index would pay)."""
        out: list[UserEncoding] = []
        n = max(0, min(nearest, len(self.ids)))
        for start in range(0, len(vectors), self.CHUNK):
            chunk = vectors[start:start + self.CHUNK]
            scores = chunk @ self.matrix.T
            rows = len(chunk)
            if n:
                top = np.argpartition(scores, -n, axis=1)[:, -n:]
                top_scores = np.take_along_axis(scores, top, 1)
                order = np.argsort(-top_scores, axis=1, kind="stable")
                top, top_scores = np.take_along_axis(top, order, 1), np.take_along_axis(top_scores, order, 1)
                best = top_scores[:, 0]
            else:
                top, top_scores = np.zeros((rows, 0), dtype=np.int64), np.zeros((rows, 0), dtype=np.float32)
                best = np.zeros(rows, dtype=np.float32)
            mean = scores[:, : self.n_model].mean(axis=1) if self.n_model else np.zeros(rows, dtype=np.float32)
            span = np.where(best - mean > 1e-9, best - mean, 1.0)
            top_shares = np.clip((top_scores - mean[:, None]) / span[:, None], 0.0, 1.0)
            ids = self.ids
            for row in range(rows):
                nearest = list(zip([ids[i] for i in top[row]], top_shares[row].tolist()))
                out.append(UserEncoding(self, chunk[row], scores[row], nearest, float(mean[row]), float(span[row])))
        return out

    def user(self, vector: np.ndarray, nearest: int = 20) -> "UserEncoding":
        return self.users(vector[None, :], nearest)[0]


class UserEncoding:
    """A user's embedding and its scores against every item the view knows.

    Shares are (score - mean) / (best - mean) over the model's catalog, clipped to [0, 1]: 1 for the
    best item, 0 for an average one, linear between. The logits are peaked (the best item is often
    many standard deviations ahead), so exp(score - best) would leave the ranker only zeros."""

    def __init__(self, view: EncoderView, vector: np.ndarray, scores: np.ndarray,
                 nearest: list[tuple[str, float]], mean: float, span: float):
        self.view = view
        self.version = view.version
        self.vector = vector
        self.scores = scores
        self._nearest = nearest  # best first
        self.mean = mean
        self.span = span

    def nearest(self, n: int) -> list[tuple[str, float]]:
        """The n best items (at most as many as the view was asked for) as (item_id, share)."""
        return self._nearest[:n]

    def shares_for(self, item_ids: Sequence[str]) -> np.ndarray:
        row_of = self.view.row_of
        rows = np.fromiter((row_of.get(item_id, -1) for item_id in item_ids), dtype=np.int64, count=len(item_ids))
        shares = np.clip((self.scores[rows] - self.mean) / self.span, 0.0, 1.0)
        shares[rows < 0] = 0.0
        return shares


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
