"""`stream-app bench`: the Kafka path end to end with one worker.

N synthetic events (Zipf-popular items, random users) are produced as fast as possible (or at
--rate) after a warm-up; once the worker has committed them all, the bench reads the recommendations like a
downstream service and reports events/s (first event sent -> last recommendation published) and
the event -> recommendation latency (event handed to the producer -> recommendation's publication
timestamp). At full speed the latency is mostly time spent queued behind the backlog.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Mapping

import numpy as np
import orjson

from .consume import TopicReader, wait_committed
from .processes import one_off_run, wait_ready_workers
from .replay import produce_events


def synthetic_events(n: int, users: int, items: int, seed: int = 7, start_ms: int = 1_700_000_000_000,
                     prefix: str = "bench") -> list[dict[str, Any]]:
    """A simple, reproducible stream for load: Zipf item popularity, a funnel of event types."""
    rng = np.random.default_rng(seed)
    user_ids = rng.integers(0, users, size=n)
    item_ids = np.minimum(rng.zipf(1.3, size=n) - 1, items - 1)
    kinds = rng.choice(3, size=n, p=[0.5, 0.45, 0.05])
    gaps = rng.exponential(200.0, size=n).astype(np.int64)
    ts = start_ms + np.cumsum(gaps)
    names = ("browse", "click", "purchase")
    out = []
    for i in range(n):
        event = {"event_id": f"{prefix}-{i}", "user_id": f"u{user_ids[i]}", "item_id": f"i{item_ids[i]}",
                 "type": names[kinds[i]], "ts": int(ts[i]), "category": f"c{item_ids[i] % 50}",
                 "schema_version": 1}
        if kinds[i] == 2:
            event["stage"] = "cart"
        out.append(event)
    return out


def latency_summary(sent_ms: Mapping[str, float], records: Iterable[Any]) -> dict[str, float]:
    """Publication timestamp of each recommendation minus the send time of its triggering event."""
    lat = []
    for record in records:
        rec = orjson.loads(record.value)
        sent = sent_ms.get(rec["trigger_event_id"])
        if sent is not None:
            lat.append(record.timestamp - sent)
    if not lat:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "count": 0}
    arr = np.asarray(lat)
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "count": len(lat)}


def train_bench_encoder(run: Any, events: list[dict[str, Any]]) -> str:
    """A production-sized encoder (dim 32, GRU 64, 20 steps; one epoch) trained on the bench's own
    events, published as live before the worker starts. Needs the `train` extra."""
    from ..errors import StreamAppError
    from ..stream.model_control import publish

    try:
        from stream_app_train.train import TrainConfig, train
    except ImportError as exc:
        raise StreamAppError(f"`bench --encoder` trains a model first and needs PyTorch ({exc}): "
                             "`pip install -e '.[train]'`") from None
    log = run.log_dir / "bench-events.jsonl"
    log.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    manifest = train(log, "jsonl", run.settings.registry_dir, TrainConfig(epochs=1))
    publish(run.settings, "live", manifest["version"])
    return manifest["version"]


def run_bench(n: int, users: int, items: int, timeout: float, rate: float | None = None,
              encoder: bool = False) -> int:
    with one_off_run("bench") as run:
        run.settings = run.settings.replace(registry_dir=str(run.log_dir / "registry"))
        settings = run.settings
        warmup = synthetic_events(200, 50, 100, seed=1, prefix="warmup")
        events = synthetic_events(n, users, items)
        version = train_bench_encoder(run, events) if encoder else None
        worker = run.start_worker(loglevel="warn")
        wait_ready_workers(settings, [worker], timeout)
        wait_committed(settings, produce_events(settings, warmup).marks, timeout)
        sent_ms: dict[str, float] = {}
        started = time.time()
        marks = produce_events(settings, events, rate,
                               on_send=lambda e: sent_ms.__setitem__(e["event_id"], time.time() * 1000)).marks
        produced = time.time()
        # Nothing reads the output while the worker runs (a reader would take CPU from it); the
        # recommendations carry their publication time, so they are read once it is done.
        wait_committed(settings, marks, timeout)
        with TopicReader(settings.kafka_bootstrap_servers, settings.topics.recommendations,
                         settings.kafka_security) as recs:
            recs.read_until(len(warmup) + n, timeout)
            measured = [r for r in recs.records if orjson.loads(r.value)["trigger_event_id"] in sent_ms]
        last_publish = max(r.timestamp for r in measured) / 1000
        lat = latency_summary(sent_ms, measured)
        seconds = last_publish - started
        offered = "as fast as possible" if rate is None else f"at {rate:,.0f} events/s"
        print(f"bench: {n} events {offered}, {users} users, {items} items, 1 worker, "
              f"batches of up to {settings.batch_max}, "
              + (f"sequence encoder {version} live (one onnxruntime call per batch)" if version else "no encoder"))
        print(f"  produced in {produced - started:.2f}s ({n / (produced - started):,.0f} ev/s offered)")
        print(f"  throughput: {n / seconds:,.0f} events/s (first event sent -> last recommendation published, "
              f"{seconds:.2f}s)")
        print(f"  latency event -> recommendation: p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms "
              f"(over {lat['count']} recommendations"
              + ("; at full speed events queue behind the backlog)" if rate is None else ")"))
        return 0
