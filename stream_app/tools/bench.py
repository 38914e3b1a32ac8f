"""`stream-app bench`: the Kafka path end to end.

N synthetic events (Zipf-popular items, random users) are produced as fast as possible (or at
--rate) after a warm-up; once the workers have committed them all, the bench reads the recommendations like
a downstream service and reports events/s (first event sent -> last recommendation published) and
the event -> recommendation latency (event handed to the producer -> recommendation's publication
timestamp). At full speed the latency is mostly time spent queued behind the backlog.

`--baseline` first runs a plain Faust app (tools/plain_app.py) through the same steps on the same
events, and prints both rates and their ratio; with `--rounds N` the two run N times each, which goes first
in the order ABBA (a shared machine's speed drifts within minutes), and the ratios' median and range close the
output. `--workers 1,2,4` runs the worker group at each size (a scale-out curve). Each run has its own
namespace: the same events, no shared state.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import orjson
import redis

from ..config import Settings
from ..errors import ServiceTimeout, StreamAppError
from ..store.redis_store import worker_statuses
from ..stream.gc_pauses import PAUSE_BUCKETS
from ..stream.model_control import publish
from ..stream.stage_latency import STAGES
from ..stream.topics import ensure_topics
from .consume import TopicReader, read_to_end, wait_committed
from .plain_app import output_topic, plain_settings
from .processes import Run, WorkerProcess, one_off_run, wait_ready_workers
from .replay import produce_events
from .scrape import Samples, quantile, scrape

#: Event times this far apart on average when bench offers events as fast as possible (a recorded log
#: replayed: its event time runs far ahead of the clock). At an offered rate they are 1 / rate apart,
#: as in a live stream, whose event time keeps pace with the clock. A log's event time run 200 times
#: faster than the clock turns the one-minute item epochs over every 0.3 s at 1,000 events/s; every
#: turn holds all partitions' events until the last partition has passed it, then releases them at
#: once (the longest batches of such a run: 88 to 149 events, 62 to 83 ms each). A live stream turns
#: an epoch once a minute.
LOG_GAP_MS = 200.0


def synthetic_events(n: int, users: int, items: int, seed: int = 7, start_ms: int = 1_700_000_000_000,
                     prefix: str = "bench", gap_ms: float = LOG_GAP_MS, id_prefix: str = "") -> list[dict[str, Any]]:
    """A simple, reproducible stream for load: Zipf item popularity (cut at `items`), a funnel of event types, event
    times `gap_ms` apart on average; ids `u<n>` and `i<n>` after `id_prefix`."""
    rng = np.random.default_rng(seed)
    user_ids = rng.integers(0, users, size=n)
    item_ids = rng.zipf(1.3, size=n) - 1
    while (beyond := item_ids >= items).any():  # a Zipf law cut at `items`: clipped, its tail made the last item hot
        item_ids[beyond] = rng.zipf(1.3, size=int(beyond.sum())) - 1
    kinds = rng.choice(3, size=n, p=[0.5, 0.45, 0.05])
    ts = start_ms + np.cumsum(rng.exponential(gap_ms, size=n)).astype(np.int64)  # whole ms, the mean gap kept
    names = ("browse", "click", "purchase")
    out = []
    for i in range(n):
        event = {"event_id": f"{prefix}-{i}", "user_id": f"{id_prefix}u{user_ids[i]}",
                 "item_id": f"{id_prefix}i{item_ids[i]}",
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
    events into the run's registry (each run announces it live before its workers start). Needs the
    `train` extra."""
    from ..errors import StreamAppError

    try:
        from stream_app_train.train import TrainConfig, train
    except ImportError as exc:
        raise StreamAppError(f"`bench --encoder` trains a model first and needs PyTorch ({exc}): "
                             "`pip install -e '.[train]'`") from None
    log = run.log_dir / "bench-events.jsonl"
    log.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    manifest = train(log, "jsonl", run.settings.registry_dir, TrainConfig(epochs=1))
    return manifest["version"]


@dataclass
class Measured:
    events: int
    seconds: float  # first event sent -> last output published
    produced_s: float
    latency: dict[str, float]
    stages: list[tuple[str, float, float]] | None = None  # (stage, p50 s, p99 s) from the workers' histograms
    late: int | None = None  # events the workers released after a later one of their partition
    gc: GcSummary | None = None  # the workers' garbage collections
    profiles: tuple[int, int] | None = None  # stored profiles the workers took up as kept objects, and parsed
    rss_warm: int | None = None  # the first worker's RSS once the warm-up was applied, before the events

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def measure(settings: Settings, output: str, events: list[dict[str, Any]], rate: float | None,
            timeout: float, processes: list[WorkerProcess], stages: bool = True, rss_pid: int | None = None
            ) -> Measured:
    """The warm-up, then the events; the output read once every input is committed (a reader running
    meanwhile would take CPU from the workers; each output record carries its publication time).
    `stages`: also read the workers' input-stage histograms over the events (not the warm-up)."""
    # users and items of their own: the measured events' hottest would otherwise have profiles and item state already
    warmup = synthetic_events(200, 50, 100, seed=1, prefix="warmup", start_ms=events[0]["ts"] - 3_600_000,
                              id_prefix="warmup-")
    committed(settings, produce_events(settings, warmup).marks, timeout, processes)
    rss_warm = rss_bytes(rss_pid) if rss_pid is not None else None  # the warm-up's one-off growth is not per user
    before = [scrape(f"{p.url}/metrics") for p in processes] if stages else []
    sent_ms: dict[str, float] = {}
    marks = produce_events(settings, events, rate,
                           on_send=lambda e: sent_ms.setdefault(e["event_id"], time.time() * 1000)).marks
    # from the first event sent, not from the producer's connecting; offered: over the sends themselves
    started, produced = min(sent_ms.values()) / 1000, max(sent_ms.values()) / 1000
    committed(settings, marks, timeout, processes)
    with TopicReader(settings.kafka_bootstrap_servers, output, settings.kafka_security) as reader:
        measured = read_each_trigger(reader, sent_ms, len(warmup) + len(events), timeout)
    last_publish = max(r.timestamp for r in measured) / 1000
    after = [scrape(f"{p.url}/metrics") for p in processes] if stages else []
    return Measured(len(events), last_publish - started, max(produced - started, 1e-3), latency_summary(sent_ms, measured),
                    stage_quantiles(before, after) if stages else None, late_events(before, after) if stages else None,
                    gc_pauses(before, after) if stages else None, profiles_taken_up(before, after) if stages else None,
                    rss_warm)


def read_each_trigger(reader: TopicReader, sent_ms: Mapping[str, float], at_least: int, timeout: float) -> list[Any]:
    """The output records of the events sent (`sent_ms`), the first of each: read until every event has one, not
    until a count of records (a record published twice, at-least-once, would end the read before the last one)."""
    reader.read_until(at_least, timeout)
    deadline, first, read = time.monotonic() + timeout, {}, 0
    while True:
        for record in reader.records[read:]:
            trigger = orjson.loads(record.value)["trigger_event_id"]
            if trigger in sent_ms:
                first.setdefault(trigger, record)
        read = len(reader.records)
        if len(first) == len(sent_ms):
            return list(first.values())
        if time.monotonic() > deadline:
            raise ServiceTimeout(f"read outputs of {len(first):,} of the {len(sent_ms):,} events sent from "
                                 f"{reader.topic} in {timeout:.0f}s")
        reader.poll()


@dataclass
class GcSummary:
    count: int  # of the oldest generation
    seconds: float  # in those
    longest_at_most_s: float  # the upper bound of the highest histogram bucket any counted pause fell in
    all_seconds: float  # in every generation's collections


def gc_pauses(before: list[Samples], after: list[Samples]) -> GcSummary:
    """Python's collections of the oldest generation in the workers between the two scrapes (summed over
    workers): how many, their total time, and the bound of the histogram bucket the longest fell in."""
    count, seconds, longest, every = 0, 0.0, 0.0, 0.0
    for was, now in zip(before, after):
        every += sum(value - was.get((name, have), 0.0) for (name, have), value in now.items()
                     if name == "stream_app_gc_pause_seconds_sum")
        counted = {key: value - was.get(key, 0.0) for key, value in now.items()
                   if key[0].startswith("stream_app_gc_pause_seconds") and ("generation", "2") in key[1]}
        count += int(counted.get(("stream_app_gc_pause_seconds_count", (("generation", "2"),)), 0.0))
        seconds += counted.get(("stream_app_gc_pause_seconds_sum", (("generation", "2"),)), 0.0)
        buckets = sorted((float(dict(have)["le"]), n) for (name, have), n in counted.items()
                         if name == "stream_app_gc_pause_seconds_bucket")
        if buckets and buckets[-1][1]:
            longest = max(longest, next(bound for bound, n in buckets if n >= buckets[-1][1]))
    return GcSummary(count, seconds, longest, every)


def profiles_taken_up(before: list[Samples], after: list[Samples]) -> tuple[int, int]:
    """Stored profiles the workers took up between the two scrapes, summed over workers: (as the objects they were
    written from, parsed from the table's record)."""
    def counted(name: str) -> int:
        key = (f"stream_app_profiles_{name}_total", ())
        return int(sum(now.get(key, 0.0) - was.get(key, 0.0) for was, now in zip(before, after)))

    return counted("reused"), counted("parsed")


def late_events(before: list[Samples], after: list[Samples]) -> int:
    """Events released after a later one of their partition, between the two scrapes: every worker orders
    every partition, so each counts them all; the most any counted."""
    key = ("stream_app_late_events_total", (("clock", "partition"),))
    return int(max((now.get(key, 0.0) - was.get(key, 0.0) for was, now in zip(before, after)), default=0.0))


def stage_quantiles(before: list[Samples], after: list[Samples]) -> list[tuple[str, float, float]]:
    """(stage, p50, p99) in seconds of each input stage and of the delivery, over what the workers counted
    between the two scrapes (histograms: linear within a bucket)."""
    counted: Samples = {}
    for was, now in zip(before, after):
        for key, value in now.items():
            counted[key] = counted.get(key, 0.0) + value - was.get(key, 0.0)
    out = []
    for stage, histogram, labels in [*((stage, "stream_app_input_stage_seconds", {"stage": stage}) for stage in STAGES),
                                     ("published", "stream_app_event_to_recommendation_seconds", {"since": "arrival"})]:
        p50, p99 = (quantile(counted, histogram, q, **labels) for q in (0.5, 0.99))
        if p50 is not None and p99 is not None:
            out.append((stage, p50, p99))
    return out


def committed(settings: Settings, marks: Mapping[Any, int], timeout: float, processes: list[WorkerProcess]) -> None:
    """wait_committed, failing as soon as one of the processes exits (its log tail says why)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return wait_committed(settings, marks, min(5.0, max(0.5, deadline - time.monotonic())))
        except ServiceTimeout:
            dead = [p for p in processes if not p.alive()]
            if dead:
                raise ServiceTimeout(f"{dead[0].log_path.name} exited ({dead[0].proc.returncode}):\n"
                                     f"{dead[0].log_tail()}") from None
            if time.monotonic() > deadline:
                raise


def start_workers(run: Run, settings: Settings, count: int, timeout: float) -> list[WorkerProcess]:
    """`count` workers of one group, once each is ready and they share the input partitions out."""
    workers = [WorkerProcess(settings, run.log_dir / f"{settings.namespace}worker-{i}.log", "warn")
               for i in range(count)]
    run.workers.extend(workers)
    wait_ready_workers(settings, workers, timeout)
    client = redis.Redis.from_url(settings.require_redis())
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            owned = [s["input_partitions"] for s in worker_statuses(client, settings.namespace)
                     if s["app_id"] == settings.app_id and s["pid"] in {w.pid for w in workers}]
            if len(owned) == count and all(owned) and sorted(p for ps in owned for p in ps) == list(
                    range(settings.partitions)):
                return workers
            time.sleep(0.2)
    finally:
        client.close()
    raise ServiceTimeout(f"{count} workers did not share the {settings.partitions} input partitions out "
                         f"within {timeout:.0f}s")


def run_bench(n: int, users: int, items: int, timeout: float, rate: float | None = None,
              encoder: bool = False, baseline: bool = False, worker_counts: tuple[int, ...] = (1,),
              keep: bool = False, rounds: int = 1) -> int:
    if rounds > 1 and (not baseline or rate is not None or len(worker_counts) > 1):
        raise StreamAppError("--rounds repeats the comparison with the plain app at full speed: give it with "
                             "--baseline, without --rate and with one worker count")
    with one_off_run("bench", keep=keep) as run:
        run.settings = run.settings.replace(registry_dir=str(run.log_dir / "registry"))
        gap_ms = LOG_GAP_MS if rate is None else 1000.0 / rate
        events = synthetic_events(n, users, items, gap_ms=gap_ms)
        version = train_bench_encoder(run, events) if encoder else None
        offered = "as fast as possible" if rate is None else f"at {rate:,.0f} events/s"
        print(f"bench: {n} events {offered}, event times {gap_ms:g} ms apart on average, {users} users, {items} items, "
              + ", ".join(f"{k} worker{'s' if k > 1 else ''}" for k in worker_counts)
              + f", batches of up to {run.settings.batch_max}, "
              + (f"sequence encoder {version} live (one onnxruntime call per batch)" if version else "no encoder")
              + (f", {rounds} rounds, which runs first in the order ABBA" if rounds > 1 else ""))
        if rounds > 1:
            print_rounds([run_round(run, events, timeout, version, worker_counts[0], number, rounds)
                          for number in range(rounds)])
            return 0
        plain = run_plain(run, events, rate, timeout) if baseline else None
        for count in worker_counts:
            settings = run.settings if len(worker_counts) == 1 and not baseline else run.settings.replace(
                namespace=f"{run.settings.namespace}w{count}.")
            run_workers(run, settings, count, events, rate, timeout, version, plain, memory=count == 1)
        return 0


def run_workers(run: Run, settings: Settings, count: int, events: list[dict[str, Any]], rate: float | None,
                timeout: float, version: str | None, plain: Measured | None, memory: bool) -> Measured:
    """A group of `count` workers in `settings`' namespace through the bench's steps, printed."""
    ensure_topics(settings)
    if version is not None:
        publish(settings, "live", version)
    workers = start_workers(run, settings, count, timeout)
    result = measure(settings, settings.topics.recommendations, events, rate, timeout, workers,
                     rss_pid=workers[0].pid)
    rss_done = rss_bytes(workers[0].pid)
    print_measured(f"stream-app, {count} worker{'s' if count > 1 else ''}", result, rate, plain)
    if memory:
        print_memory(settings, events, result.rss_warm, rss_done, backlog=rate is None)
    for worker in workers:
        worker.stop()
    return result


def plain_app_first(number: int) -> bool:
    """Does round `number` (from 0) run the plain app first: ABBA, so an even count of rounds gives each order as often
    and a drift of the machine's speed favours neither (alternating, rounds 1 and 3 of 3 ran it first)."""
    return number % 4 in (0, 3)


def run_round(run: Run, events: list[dict[str, Any]], timeout: float, version: str | None, count: int,
              number: int, rounds: int) -> tuple[float, float]:
    """One pair of full-speed runs in namespaces of their own, in `plain_app_first`'s order: (its events/s, the
    workers')."""
    plain_first = plain_app_first(number)
    print(f"  round {number + 1} of {rounds}, {'the plain app' if plain_first else 'stream-app'} first:")
    tag = f"r{number + 1}"
    plain = run_plain(run, events, None, timeout, tag) if plain_first else None
    settings = run.settings.replace(namespace=f"{run.settings.namespace}{tag}w{count}.")
    ours = run_workers(run, settings, count, events, None, timeout, version, plain, memory=number == 0)
    if plain is None:
        plain = run_plain(run, events, None, timeout, tag, ours)
    return plain.rate, ours.rate


def print_rounds(pairs: list[tuple[float, float]]) -> None:
    ratios = sorted(ours / plain for plain, ours in pairs)
    print(f"  over {len(pairs)} rounds: the plain app {np.median([p for p, _ in pairs]):,.0f} events/s, stream-app "
          f"{np.median([o for _, o in pairs]):,.0f} events/s (medians); stream-app / the plain app of the same round: "
          + ", ".join(f"{ours / plain:.2f}x" for plain, ours in pairs)
          + f"; median {np.median(ratios):.2f}x, from {ratios[0]:.2f}x to {ratios[-1]:.2f}x")


def run_plain(run: Run, events: list[dict[str, Any]], rate: float | None, timeout: float, tag: str = "",
              ours: Measured | None = None) -> Measured:
    """The plain Faust app through the same steps, in its own namespace and group (`tag`: the round's). `ours`: the
    workers' run of the same round, when it went first, to print the ratio beside the plain app's."""
    settings = plain_settings(run.settings.replace(namespace=f"{run.settings.namespace}{tag}plain."))
    ensure_topics(settings, extra=(output_topic(settings),))
    app = WorkerProcess(settings, run.log_dir / f"plain-app{tag}.log", "warn", module="stream_app.tools.plain_app")
    run.workers.append(app)
    result = measure(settings, output_topic(settings), events, rate, timeout, [app], stages=False)
    print_measured("plain Faust app (parse, one table update, one send per event)", result, rate, None)
    if ours is not None:
        print(f"    stream-app's run before it: {ours.rate / result.rate:.2f}x this rate")
    app.stop()
    return result


def print_measured(label: str, result: Measured, rate: float | None, plain: Measured | None) -> None:
    lat = result.latency
    # at an offered rate both keep up with it: a ratio would say nothing of what either can do
    versus = "" if plain is None else f" = {result.rate / plain.rate:.2f}x the plain app's" if rate is None else \
        " (both at the offered rate: no ratio; without --rate the two are compared)"
    print(f"  {label}:")
    print(f"    produced in {result.produced_s:.2f}s ({result.events / result.produced_s:,.0f} ev/s offered)")
    print(f"    throughput: {result.rate:,.0f} events/s{versus} (first event sent -> last recommendation "
          f"published, {result.seconds:.2f}s)")
    print(f"    latency event -> recommendation: p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms "
          f"(the event's send to its recommendation's record timestamp, taken as the worker hands it to its producer, "
          f"before the broker stores it; over {lat['count']} recommendations"
          + ("; at full speed events queue behind the backlog)" if rate is None else ")"))
    if result.stages:
        print("    where it goes (the workers' histograms, from the input record's Kafka timestamp, p50 / p99): "
              + ", ".join(f"{STAGE_NAMES[stage]} {p50 * 1000:.0f} / {p99 * 1000:.0f} ms"
                          for stage, p50, p99 in result.stages))
    if result.late is not None:
        print(f"    late: {result.late:,} events released after a later one of their partition (applied late; "
              "STREAM_APP_MAX_IDLE_MS is how long a partition waits for an input topic that has nothing new)")
    if result.profiles is not None:
        reused, parsed = result.profiles
        print(f"    stored profiles taken up: {reused:,} as the objects the worker wrote them from, {parsed:,} parsed "
              "from the table (STREAM_APP_PROFILE_CACHE_USERS)")
    if result.gc is not None:
        longest = "" if not result.gc.count else (f", each at most {result.gc.longest_at_most_s * 1000:g} ms"
                                                  if math.isfinite(result.gc.longest_at_most_s)
                                                  else f", one over {PAUSE_BUCKETS[-1] * 1000:g} ms")
        print(f"    garbage collector: {result.gc.count} collections of the oldest generation, "
              f"{result.gc.seconds * 1000:,.0f} ms in all{longest}; {result.gc.all_seconds * 1000:,.0f} ms in "
              "every generation's")


STAGE_NAMES = {"read": "read by its reader", "delivered": "delivered by Faust's consumer",
               "ordered": "released in event-time order", "taken": "taken into a batch",
               "published": "its batch done (outputs acknowledged, Redis written, offsets committed)"}


def rss_bytes(pid: int) -> int | None:
    """A process's resident set size (Linux /proc; None elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def print_memory(settings: Settings, events: list[dict[str, Any]], rss_ready: int | None,
                 rss_done: int | None, backlog: bool) -> None:
    """Bytes per user profile (its changelog record, its Redis hash) and the worker's RSS growth."""
    users = {e["user_id"] for e in events}
    items = {e["item_id"] for e in events}
    sizes = profile_sizes(settings, users)
    print(f"  memory: a user profile {sizes['changelog']:,.0f} bytes in the table's changelog (the latest record "
          f"per user, {sizes['profiles']} profiles), {sizes['redis']:,.0f} bytes in Redis (MEMORY USAGE, "
          f"{sizes['sampled']} sampled)")
    if rss_ready is not None and rss_done is not None:
        grown = rss_done - rss_ready
        cache = settings.profile_cache_users
        print(f"  worker RSS {rss_ready / 2**20:,.0f} MiB after the warm-up -> {rss_done / 2**20:,.0f} MiB after "
              f"{len(users):,} users and {len(items):,} items: {grown / 2**20:,.0f} MiB more, "
              f"{grown / len(users) * 100_000 / 2**20:,.0f} MiB per 100k users with their items and events"
              + (" (at full speed the backlog the worker buffered counts in it: offer a --rate it keeps up "
                 "with for the state alone)" if backlog else "")
              + (f"; the profile cache holds up to {cache:,} profiles (STREAM_APP_PROFILE_CACHE_USERS) and grows no "
                 "further, so the figure per 100k users counts its share as if it did" if cache else ""))


def profile_sizes(settings: Settings, users: set[str]) -> dict[str, float]:
    """The mean latest changelog record of a profile of `users` (not the warm-up's), and the mean Redis MEMORY USAGE
    of 500 of them drawn at random (seed 0; until 2026-12-07 the first 500 by id, a sample of the ids' order)."""
    from ..store.redis_store import profile_key
    from ..stream.worker import PROFILE_TABLE

    latest, wanted = {}, {user.encode() for user in users}
    for record in read_to_end(settings, f"{settings.group_id}-{PROFILE_TABLE}-changelog"):
        if record.key not in wanted:
            continue
        if record.value is None:
            latest.pop(record.key, None)
        else:
            latest[record.key] = len(record.key) + len(record.value)
    with redis.Redis.from_url(settings.require_redis()) as client:  # closed on leaving
        usage = [client.memory_usage(profile_key(user, settings.namespace))
                 for user in np.random.default_rng(0).permutation(sorted(users))[:500].tolist()]
    usage = [u for u in usage if u]
    return {"changelog": sum(latest.values()) / max(1, len(latest)), "profiles": len(latest),
            "redis": sum(usage) / max(1, len(usage)), "sampled": len(usage)}
