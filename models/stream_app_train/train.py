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

from stream_app.core.sequences import Featurizer, featurizer_id
from stream_app.serving import registry
from stream_app.tools.log_checks import first_rejection, warn_if_seconds
from stream_app.tools.sorted_log import load_accepted

from .export import INPUTS, OUTPUTS, export_onnx, torch_encode
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
    limit: int | None = None  # only the log's first N events in time a worker accepts, as `evaluate --limit`


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
                   featurizer: Featurizer) -> tuple[Examples, Examples, int]:
    """Next-item examples: each event with an earlier one of its user is a target, its user's previous
    `max_len` events the input. Targets before `cutoff` train (those whose item is in the vocabulary), the
    others validate; a held-out event on an item the training part lacks cannot be retrieved: counted
    (the third value), a miss of the validation figures."""
    history: dict[str, list[tuple[str, str, int]]] = {}
    train_seqs, train_targets, valid_seqs, valid_targets = [], [], [], []
    unknown = 0
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
        elif seq and e["ts"] >= cutoff:
            unknown += 1
        seq.append((e["item_id"], e["type"], e["ts"]))
        if len(seq) > 2 * featurizer.max_len:
            del seq[: len(seq) - featurizer.max_len]
    return (Examples(featurizer.arrays(train_seqs), np.array(train_targets, dtype=np.int64)),
            Examples(featurizer.arrays(valid_seqs), np.array(valid_targets, dtype=np.int64)), unknown)


def _tensors(examples: Examples, rows: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(examples.arrays[name][rows]) for name in INPUTS]


def evaluate(model: NextItemModel, examples: Examples, k: int, unknown: int = 0, batch: int = 1024
             ) -> dict[str, Any]:
    """Recall and MRR over the held-out events, `unknown` of them (items the training part lacks) misses by
    construction; None when nothing is held out."""
    n = len(examples.targets)
    total = n + unknown
    if total == 0:
        return {f"recall@{k}": None, f"mrr@{k}": None, "examples": 0, "on_known_items": 0}
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
    return {f"recall@{k}": hits / total, f"mrr@{k}": rr / total, "examples": total, "on_known_items": n}


def read_events(log: str | Path, fmt: str, refusal: Callable[[dict[str, Any]], tuple[str, str] | None] | None,
                progress: Callable[[str], None], limit: int | None = None) -> list[dict[str, Any]]:
    """The log's events as the workers take them: without the lines they cannot read, the events their gate
    refuses (`refusal`: a time outside the accepted window would stretch the time split) and repeated event ids
    of a user (applied once); each count said."""
    events, rejected, refused = load_accepted(log, fmt, refusal or (lambda event: None), limit)
    warn_if_seconds(fmt, events[0]["ts"] if events else None, events[-1]["ts"] if events else None)  # as replay and evaluate warn
    seen: set[tuple[str, str]] = set()
    kept = []
    for event in events:
        key = (event["user_id"], event["event_id"])
        if key not in seen:
            seen.add(key)
            kept.append(event)
    left = [f"{len(rejected):,} lines or events it cannot read ({first_rejection([next(iter(rejected))])}, ...)"
            ] if rejected else []
    left += [f"{len(refused):,} events the workers would refuse ({refused[0][1]}, ...)"] if refused else []
    left += [f"{len(events) - len(kept):,} repeated event ids"] if len(kept) < len(events) else []
    if left:
        progress(f"train: left out {', '.join(left)}")
    return kept


def parity(model: NextItemModel, path: Path, examples: Examples, rows: int = 512) -> float:
    """The largest difference between the exported graph's user vectors (onnxruntime) and torch's, over the first
    `rows` examples: the graph the workers serve must be the model that was validated."""
    import onnxruntime as ort

    n = min(rows, len(examples.targets))
    if n == 0:
        return 0.0
    arrays = {name: examples.arrays[name][:n] for name in INPUTS}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    served = session.run(["user"], arrays)[0]
    return float(np.max(np.abs(served - torch_encode(model.encoder, arrays).numpy())))


#: Fewer training examples than this (four batches) fit a model that mostly shows its random start.
FEW_EXAMPLES = 1_000


def thin_log(examples: int, items: int, k: int) -> list[str]:
    """What leaves the model or its validation figures with little meaning, said before the figures (a log of three
    events trained on one example, registered, and reported Recall@20 1.0000, MRR@20 1.0000)."""
    said = []
    if examples < FEW_EXAMPLES:
        said.append(f"only {examples:,} training examples (under {FEW_EXAMPLES:,}): the model will be of little use; "
                    "train on a longer log")
    if items <= k:
        said.append(f"the training part has {items:,} items, no more than the {k} each held-out event is judged in: "
                    f"Recall@{k} counts every one on a known item as a hit")
    return said


#: The largest difference between onnxruntime's and torch's user vectors an export may show.
PARITY_TOLERANCE = 1e-4


class TooLittleToTrain(ValueError):
    """The log holds too few events, or too little time, to train an encoder on: no fault of the code."""


def train(log: str | Path, fmt: str, registry_root: str | Path, config: TrainConfig = TrainConfig(),
          progress: Callable[[str], None] = lambda _: None,
          refusal: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None) -> dict[str, Any]:
    """Train, validate, export and register; returns the new version's manifest (or, when the registry holds a
    version of the very same files, that version's, with `already_registered`)."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    registry.require_writable(registry_root)  # before minutes of training, not after
    events = read_events(log, fmt, refusal, progress, config.limit)
    if len(events) < 2:
        raise TooLittleToTrain(f"{log} has {len(events)} readable events: too few to train an encoder")
    first, last = events[0]["ts"], events[-1]["ts"]
    cutoff = first + int((last - first) * config.train_fraction)
    training_events = [e for e in events if e["ts"] < cutoff]
    counts: dict[str, int] = {}
    for e in training_events:
        counts[e["item_id"]] = counts.get(e["item_id"], 0) + 1
    item_ids = sorted(counts, key=lambda i: (-counts[i], i))[: config.max_items]
    vocab = {item_id: row for row, item_id in enumerate(item_ids)}
    featurizer = Featurizer(config.buckets, config.max_len)
    train_set, valid_set, unknown = build_examples(events, cutoff, vocab, featurizer)
    if len(train_set.targets) == 0:
        span = "all its events have one time" if last == first else "no user has two events before it"
        raise TooLittleToTrain(f"{log}: no training examples before the time split ({span}); use a longer log")
    progress(f"train: {len(events):,} events, {len(item_ids):,} items in its training part, "
             f"{len(train_set.targets):,} training and "
             f"{len(valid_set.targets) + unknown:,} validation examples ({unknown:,} on items the training part "
             "lacks: misses)")
    for warning in thin_log(len(train_set.targets), len(item_ids), config.k):
        progress(f"train: warning: {warning}")

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
    validation = evaluate(model, valid_set, config.k, unknown)
    progress(f"train: validation {said(validation, config.k)}")

    manifest = {
        "architecture": "gru4rec-hashed-v1",
        "dims": {"embedding": config.dim, "hidden": config.hidden, "buckets": config.buckets,
                 "max_len": config.max_len, "items": len(item_ids)},
        "training": {"log": str(log), "format": fmt, "events": len(training_events),
                     "fingerprint": fingerprint(training_events), "first_ts": first, "train_until_ts": cutoff,
                     # an unset limit left out: a version trained before the option holds the same recipe
                     "config": {k: v for k, v in asdict(config).items() if not (k == "limit" and v is None)},
                     "seconds": round(time.perf_counter() - started, 2)},
        "validation": validation,
        "inputs": list(INPUTS), "outputs": list(OUTPUTS), "retrieve": min(config.retrieve, len(item_ids)),
        "featurizer": featurizer_id(config.buckets),
    }
    return _register(model, item_ids, valid_set if len(valid_set.targets) else train_set, manifest, registry_root,
                     progress)


def _register(model: NextItemModel, item_ids: list[str], check_set: Examples, manifest: dict[str, Any],
              registry_root: str | Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Export the trained model, check the export against it on `check_set`, and register it with `manifest`
    (completed here), unless the registry holds the very files trained with the same recipe: then that version's
    manifest, with `already_registered`."""
    staged = registry.staging_dir(registry_root)
    try:  # an interrupted export leaves no half-written model in the registry folder
        retrieve = manifest["training"]["config"]["retrieve"]
        export_onnx(model.encoder, staged / "encoder.onnx", model.items.weight, k=retrieve)
        difference = parity(model, staged / "encoder.onnx", check_set)
        if not difference <= PARITY_TOLERANCE:  # NaN fails too
            raise ValueError(f"the exported ONNX graph differs from the trained model by {difference:.2e} (over "
                             f"{PARITY_TOLERANCE:.0e}) on the validation sequences: not registered; report it as a bug")
        np.save(staged / "items.npy", model.items.weight.detach().numpy().astype(np.float32))
        (staged / "items.json").write_text(json.dumps(item_ids))
        held = registry.holding_files_of(registry_root, staged, lambda held: _recipe(held) == _recipe(manifest))
        if held is not None:  # trained before from the same log, settings and seed: one version, not copies
            shutil.rmtree(staged, ignore_errors=True)
            progress(f"train: the registry already holds these files as {held['version']} (trained "
                     f"{held['created_at']}): not registered again")
            return {**held, "already_registered": True}
        now = datetime.now(timezone.utc)
        folder = registry.write_version(registry_root, staged, {
            "version": f"enc-{now.strftime('%Y%m%d-%H%M%S')}-{_named(registry.content_hash(staged), manifest)}",
            "created_at": now.isoformat(timespec="milliseconds"), **manifest,
            "parity": {"max_abs_diff": difference, "tolerance": PARITY_TOLERANCE}})
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    progress(f"train: wrote {folder}")
    return json.loads((folder / registry.MANIFEST).read_text())


def _named(files_hash: str, manifest: dict[str, Any]) -> str:
    """A version's name's last part: its files and recipe, so two trainings in one second differ by name when either
    does (the same files of another --max-len)."""
    return hashlib.sha256(f"{files_hash}{_recipe(manifest)!r}".encode()).hexdigest()[:8]


def _recipe(manifest: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two trainings the same model for the workers: the log's content (not its path) and every setting;
    a setting the files do not show (`max_len`: how long a user's input the workers build) included."""
    training = manifest.get("training", {})
    return (manifest.get("architecture"), manifest.get("dims"), manifest.get("inputs"), manifest.get("outputs"),
            manifest.get("retrieve"), training.get("format"), training.get("fingerprint"), training.get("config"),
            training.get("first_ts"), training.get("train_until_ts"))


def said(validation: dict[str, Any], k: int) -> str:
    """The validation figures in words: n/a when nothing was held out."""
    if not validation["examples"]:
        return "n/a (no held-out event after the time split)"
    return (f"Recall@{k} {validation[f'recall@{k}']:.4f}, MRR@{k} {validation[f'mrr@{k}']:.4f} "
            f"({validation['examples']:,} held-out events, {validation['on_known_items']:,} on items the training "
            "part has)")
