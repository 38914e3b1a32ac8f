"""The deep sequence encoder at serving time: onnxruntime, one call per micro-batch. No torch.

`Encoder` loads one registry version: the ONNX graph (recent steps -> user embedding, plus the exact
top-k of the item table it was trained with) and that table's ids. `encode` featurises many users'
recent sequences and runs them in one onnxruntime call. Items newer than the model reach users
through the other candidate sources (co-visitation, popular, trending) until a new version knows them.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..core.events import Event
from ..core.profile import Profile, add_step, event_digest
from ..core.sequences import Featurizer, Step, featurizer_id
from ..errors import ConfigError
from .registry import loaded, read_version

KIND = "sequence"  # the registry's kind of this model
OUTPUTS = ("user", "top_items", "top_scores", "mean_score")


@dataclass(slots=True)
class EncodedBatch:
    """What one onnxruntime call returns for a batch: embeddings [B, dim], the indices and scores of
    each user's `retrieve` best rows of the item table [B, retrieve], the mean score over the table [B]."""

    user: np.ndarray
    top_items: np.ndarray
    top_scores: np.ndarray
    mean: np.ndarray


class Encoder:
    def __init__(self, folder: Path, manifest: dict[str, Any], files: dict[str, bytes], threads: int = 1):
        import onnxruntime as ort

        if tuple(manifest.get("outputs", ())) != OUTPUTS:
            raise ConfigError(f"model {manifest['version']} has outputs {manifest.get('outputs')}, this worker needs "
                              f"{list(OUTPUTS)}: retrain it with this version (`stream-app train`)")
        self.folder = folder
        self.manifest = manifest
        self.version: str = manifest["version"]
        dims = manifest["dims"]
        for name in ("embedding", "buckets", "max_len"):  # a max_len of 0 read a profile's whole history ([-0:])
            if type(dims[name]) is not int or dims[name] < 1:
                raise ValueError(f"its manifest's dims.{name} is {dims[name]!r}, not a whole number of at least 1")
        self.dim: int = dims["embedding"]
        trained_on = manifest.get("featurizer")  # absent: trained before 2026-12-06, when it was not kept
        if trained_on is not None and trained_on != featurizer_id(dims["buckets"]):
            raise ConfigError(f"model {self.version} was trained on another featurisation of the events than this "
                              "release's (core/sequences.py): retrain it with this release (`stream-app train`)")
        self.featurizer = Featurizer(dims["buckets"], dims["max_len"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # workers are one process per core
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(files["encoder.onnx"], options, providers=["CPUExecutionProvider"])
        self.item_ids: list[str] = json.loads(files["items.json"])
        self.row_of = {item_id: row for row, item_id in enumerate(self.item_ids)}
        # the mean score over the table, as user . (the table's mean row): the graph's own mean_score is a reduction
        # whose last bits change with the batch's size, and the shares (and the ranker's features) with them
        self.mean_row = np.load(io.BytesIO(files["items.npy"])).astype(np.float64).mean(axis=0)

    @classmethod
    def load(cls, registry: str | Path, version: str, threads: int = 1, expected_hash: str | None = None) -> "Encoder":
        folder, manifest, files = read_version(registry, version, kind=KIND, expected_hash=expected_hash)
        return loaded(cls, folder, manifest, files, threads)

    def trial(self) -> None:
        """Run the model once on a batch of trial sequences of one step to its longest, as rounds hand it (raises if
        it cannot serve): a graph of a fixed batch size, or one whose outputs are not finite past one step, passed a
        trial of one sequence of one step and then failed, or ranked with NaN, every round after."""
        longest = self.featurizer.max_len
        lengths = sorted({1, 2, min(3, longest), longest})
        sequences = [[[f"trial-item-{step % 3}", ("browse", "click", "purchase")[step % 3], 60_000 * step]
                      for step in range(length)] for length in lengths]
        batch = self.encode(sequences)
        retrieve, rows = self.manifest["retrieve"], len(sequences)
        if batch.user.shape != (rows, self.dim):
            raise ValueError(f"encoder {self.version} gave user vectors of shape {batch.user.shape}, its manifest says "
                             f"({rows}, {self.dim}) (dims.embedding) for a batch of {rows}")
        if not (np.all(np.isfinite(batch.user)) and np.all(np.isfinite(batch.top_scores))):
            raise ValueError(f"encoder {self.version} gave non-finite embeddings or scores on trial sequences of "
                             f"{', '.join(map(str, lengths))} steps")
        if batch.top_items.shape != (rows, retrieve) or batch.top_scores.shape != (rows, retrieve):
            raise ValueError(f"encoder {self.version} gave {batch.top_items.shape[-1]} best items, its manifest says "
                             f"{retrieve} (retrieve)")
        if batch.top_items.size and not (0 <= batch.top_items.min() and batch.top_items.max() < len(self.item_ids)):
            raise ValueError(f"encoder {self.version} names item rows up to {int(batch.top_items.max())}, its items.json "
                             f"holds {len(self.item_ids)}: the item table and items.json are of different models")

    def require_fits(self, recent_max: int) -> None:
        """ConfigError unless the profiles here keep every step the model reads: with fewer, a batch's sequence
        grows past the profile's (its earlier events are in it) and the next batch's starts short again, so a user's
        embedding would depend on how the events fell into batches (what `train` refuses by --max-len)."""
        if self.featurizer.max_len > recent_max:
            raise ConfigError(f"encoder {self.version} reads a user's last {self.featurizer.max_len} events, and a "
                              f"profile here keeps {recent_max} (STREAM_APP_RECENT_MAX): set STREAM_APP_RECENT_MAX to "
                              f"{self.featurizer.max_len} or more, or train a model with --max-len {recent_max}")

    def encode(self, sequences: Sequence[Sequence[Step]]) -> "EncodedBatch":
        """User embeddings and each user's best items of the table, from one onnxruntime call."""
        if not sequences:
            k = self.manifest["retrieve"]
            return EncodedBatch(np.zeros((0, self.dim), np.float32), np.zeros((0, k), np.int64),
                                np.zeros((0, k), np.float32), np.zeros(0, np.float32))
        inputs = self.featurizer.arrays(sequences)
        user, top_items, top_scores, _ = self.session.run(list(OUTPUTS), inputs)
        mean = np.array([float(np.dot(row, self.mean_row)) for row in user.astype(np.float64)], dtype=np.float32)
        return EncodedBatch(user, top_items, top_scores, mean)


class EncoderView:
    """One encoder version as a batch sees it: the model and its item table's ids."""

    def __init__(self, encoder: Encoder):
        self.encoder = encoder
        self.version = encoder.version

    def users(self, batch: EncodedBatch, nearest: int = 20) -> list["UserEncoding | None"]:
        """Every user of a batch: the model's table was scanned inside the onnxruntime call (exact top-k). None for
        a user whose embedding or scores are not finite (a model that gives NaN on some sequences): that event is
        ranked without the encoder, as one NaN feature would take the whole list's order."""
        finite = (np.isfinite(batch.user).all(axis=1) & np.isfinite(batch.top_scores).all(axis=1)
                  & np.isfinite(batch.mean))
        return [UserEncoding(self, batch.user[row], batch.top_items[row], batch.top_scores[row], float(batch.mean[row]),
                             nearest) if finite[row] else None
                for row in range(len(batch.user))]


class UserEncoding:
    """A user's embedding and the shares of its best items.

    A share is (score - mean) / (best - mean), the mean over the model's catalog, clipped to [0, 1]:
    1 for the best item, 0 for an average one, linear between (the logits are peaked: the best item
    is often many standard deviations ahead, so exp(score - best) would leave the ranker only
    zeros). Shares are known for the `retrieve` best items of the table (from the graph); any other
    item counts as 0."""

    def __init__(self, view: EncoderView, vector: np.ndarray, top_items: np.ndarray, top_scores: np.ndarray,
                 mean: float, nearest: int):
        self.view = view
        self.version = view.version
        self.vector = vector
        ids = view.encoder.item_ids
        scored_ids = [ids[i] for i in top_items.tolist()]
        scores = top_scores
        best = float(scores[0]) if len(scores) else 0.0
        span = best - mean if best - mean > 1e-9 else 1.0
        self._ids = scored_ids
        self._shares = np.clip((scores - mean) / span, 0.0, 1.0).tolist()
        self._nearest_n = nearest
        self._by_item: dict[str, float] | None = None

    def nearest(self, n: int) -> list[tuple[str, float]]:
        """The n best items (at most as many as the view was asked for) as (item_id, share)."""
        n = min(n, self._nearest_n)
        return list(zip(self._ids[:n], self._shares[:n]))

    def shares_for(self, item_ids: Sequence[str]) -> list[float]:
        if self._by_item is None:
            self._by_item = dict(zip(self._ids, self._shares))
        shares = self._by_item
        return [shares.get(item_id, 0.0) for item_id in item_ids]


def batch_sequences(profile_of: Callable[[str], Profile | None], events: Sequence[Event],
                    max_len: int) -> list[list[Step]]:
    """For each event of a batch (in processing order) the user's recent steps up to and including it:
    the profile's `recent` before the batch (`profile_of(user_id)`, None: a new user), then the batch's
    earlier events of that user, then this one, in time order (as the profile keeps them). An event the
    profile will skip as a duplicate (its id applied before, or earlier in the batch) adds no step, so a
    sequence does not depend on how the events fell into batches."""
    grown: dict[str, list[Any]] = {}
    taken: set[tuple[str, str]] = set()  # (user, event digest) of the batch's events so far
    out = []
    for event in events:
        profile = profile_of(event.user_id)
        steps = grown.get(event.user_id)
        if steps is None:
            steps = grown[event.user_id] = list(profile.recent[-max_len:]) if profile is not None else []
        digest = event_digest(event.event_id)
        if (event.user_id, digest) not in taken and (profile is None or profile.admits(digest, event.ts)):
            taken.add((event.user_id, digest))
            add_step(steps, (event.item_id, event.type, event.ts), max_len)
        out.append(list(steps))
    return out


def encode_batch(encoder: Encoder, events: Sequence[Event], profile_of: Callable[[str], Profile | None],
                 nearest: int) -> list[UserEncoding | None]:
    """Every event's user encoding (recent steps through that event; None where the model's outputs are not
    finite), from one onnxruntime call: what a worker and the in-process evaluation run at the start of each
    batch."""
    sequences = batch_sequences(profile_of, events, encoder.featurizer.max_len)
    return EncoderView(encoder).users(encoder.encode(sequences), nearest)
