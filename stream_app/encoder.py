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
