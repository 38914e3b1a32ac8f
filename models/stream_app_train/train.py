"""`stream-app train LOG`: train the sequence encoder on a time-based split of a recorded log, export it
to ONNX and write a new registry version."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from stream_app.core.sequences import Featurizer
from stream_app.serving import registry
from stream_app.tools.recorded import load_sorted

from .export import INPUTS, OUTPUTS, export_onnx
from .model import NextItemModel


@dataclass(frozen=True)
class TrainConfig:
    dim: int = 32
    hidden: int = 64
    buckets: int = 1 << 16
    max_len: int = 20
    max_items: int = 100_000  # most frequent training items kept as retrieval targets
    epochs: int = 4
    batch_size: int = 256
    learning_rate: float = 3e-3
    train_fraction: float = 0.8  # of the log's time span: earlier events train, later ones validate
    seed: int = 7
    k: int = 20
    retrieve: int = 100  # best items the exported graph returns per user (the worker uses the first few)


@dataclass
class Examples:
    arrays: dict[str, np.ndarray]
    targets: np.ndarray


def fingerprint(events: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for e in events:
        digest.update(f"{e['event_id']}\x1f{e['user_id']}\x1f{e['item_id']}\x1f{e['type']}\x1f{e['ts']}\n".encode())
    return digest.hexdigest()


def build_examples(events: list[dict[str, Any]], cutoff: int, vocab: dict[str, int],
                   featurizer: Featurizer) -> tuple[Examples, Examples]:
    """Next-item examples: each event whose item is in the vocabulary is a target, its user's
    previous `max_len` events the input. Targets before `cutoff` train, the others validate."""
    history: dict[str, list[tuple[str, str, int]]] = {}
    train_seqs, train_targets, valid_seqs, valid_targets = [], [], [], []
    for e in events:
        seq = history.setdefault(e["user_id"], [])
        target = vocab.get(e["item_id"])
        if seq and target is not None:
            window = seq[-featurizer.max_len:]
            if e["ts"] < cutoff:
                train_seqs.append(window)
                train_targets.append(target)
            else:
                valid_seqs.append(window)
                valid_targets.append(target)
        seq.append((e["item_id"], e["type"], e["ts"]))
        if len(seq) > 2 * featurizer.max_len:
            del seq[: len(seq) - featurizer.max_len]
    return (Examples(featurizer.arrays(train_seqs), np.array(train_targets, dtype=np.int64)),
            Examples(featurizer.arrays(valid_seqs), np.array(valid_targets, dtype=np.int64)))


def _tensors(examples: Examples, rows: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(examples.arrays[name][rows]) for name in INPUTS]


def evaluate(model: NextItemModel, examples: Examples, k: int, batch: int = 1024) -> dict[str, float]:
    n = len(examples.targets)
    if n == 0:
        return {f"recall@{k}": 0.0, f"mrr@{k}": 0.0, "examples": 0}
    hits = rr = 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, n, batch):
            rows = np.arange(start, min(n, start + batch))
            logits = model(*_tensors(examples, rows))
            top = torch.topk(logits, min(k, logits.size(1)), dim=1).indices.numpy()
            for found, target in zip(top, examples.targets[rows]):
                where = np.flatnonzero(found == target)
                if where.size:
                    hits += 1
                    rr += 1.0 / (where[0] + 1)
    return {f"recall@{k}": hits / n, f"mrr@{k}": rr / n, "examples": n}


def train(log: str | Path, fmt: str, registry_root: str | Path, config: TrainConfig = TrainConfig(),
          progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Train, validate, export and register; returns the new version's manifest."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    events, _ = load_sorted(log, fmt)
    if len(events) < 2:
        raise ValueError(f"{log} has {len(events)} readable events: too few to train an encoder")
    first, last = events[0]["ts"], events[-1]["ts"]
    cutoff = first + int((last - first) * config.train_fraction)
    training_events = [e for e in events if e["ts"] < cutoff]
    counts: dict[str, int] = {}
    for e in training_events:
        counts[e["item_id"]] = counts.get(e["item_id"], 0) + 1
    item_ids = sorted(counts, key=lambda i: (-counts[i], i))[: config.max_items]
    vocab = {item_id: row for row, item_id in enumerate(item_ids)}
    featurizer = Featurizer(config.buckets, config.max_len)
    train_set, valid_set = build_examples(events, cutoff, vocab, featurizer)
    if len(train_set.targets) == 0:
        raise ValueError(f"{log}: no training examples before the time split; use a longer log")
    progress(f"train: {len(events):,} events, {len(item_ids):,} items, {len(train_set.targets):,} training and "
             f"{len(valid_set.targets):,} validation examples")

    model = NextItemModel(config.buckets, config.dim, config.hidden, len(item_ids))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = len(train_set.targets)
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(n, generator=generator).numpy()
        total = 0.0
        for start in range(0, n, config.batch_size):
            rows = order[start:start + config.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(*_tensors(train_set, rows)), torch.from_numpy(train_set.targets[rows]))
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        progress(f"train: epoch {epoch + 1}/{config.epochs}, loss {total / n:.4f}")
    validation = evaluate(model, valid_set, config.k)
    progress(f"train: validation Recall@{config.k} {validation[f'recall@{config.k}']:.4f}, "
             f"MRR@{config.k} {validation[f'mrr@{config.k}']:.4f} ({validation['examples']:,} examples)")

    staged = registry.staging_dir(registry_root)
    try:  # an interrupted export leaves no half-written model in the registry folder
        export_onnx(model.encoder, staged / "encoder.onnx", model.items.weight, k=config.retrieve)
        np.save(staged / "items.npy", model.items.weight.detach().numpy().astype(np.float32))
        (staged / "items.json").write_text(json.dumps(item_ids))
        now = datetime.now(timezone.utc)
        version = f"enc-{now.strftime('%Y%m%d-%H%M%S')}-{registry.content_hash(staged)[:8]}"
        manifest = {
            "version": version,
            "created_at": now.isoformat(timespec="milliseconds"),
            "architecture": "gru4rec-hashed-v1",
            "dims": {"embedding": config.dim, "hidden": config.hidden, "buckets": config.buckets,
                     "max_len": config.max_len, "items": len(item_ids)},
            "training": {"log": str(log), "format": fmt, "events": len(training_events),
                         "fingerprint": fingerprint(training_events), "first_ts": first, "train_until_ts": cutoff,
                         "config": asdict(config), "seconds": round(time.perf_counter() - started, 2)},
            "validation": {f"recall@{config.k}": validation[f"recall@{config.k}"],
                           f"mrr@{config.k}": validation[f"mrr@{config.k}"], "examples": validation["examples"]},
            "inputs": list(INPUTS), "outputs": list(OUTPUTS), "retrieve": min(config.retrieve, len(item_ids)),
        }
        folder = registry.write_version(registry_root, staged, manifest)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    progress(f"train: wrote {folder}")
    return json.loads((folder / registry.MANIFEST).read_text())
