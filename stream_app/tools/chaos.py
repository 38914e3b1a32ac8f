"""`stream-app chaos`: replay events while workers crash, join and leave, Redis restarts and the broker
pauses, with poison input mixed in; then check that nothing was lost, nothing counted twice and every
rejected input was dead-lettered.

The run owns its services (an embedded broker, and a Redis that appends every write to its file before
acknowledging it, as a production Redis is set up to), because it restarts and pauses them. The
faults, drawn from `seed` over the time the events take to send:
- a SIGKILL of a random worker every `kill_every_s` (a uniform draw in the range), replaced at once;
- a second worker that joins, leaves (SIGTERM) and joins again: 1 -> 2 -> 1 -> 2 workers;
- one Redis restart (SIGKILL, then the same port and data): the workers see an outage;
- one broker pause (SIGSTOP for `broker_pause_s`, then SIGCONT): every client's requests stall;
- one poison input every `poison_every` events, cycling through the kinds of bad input.
The checks (`verify`), each a figure of the report, all of which must hold for the run to pass:
- every user's event_count in Redis and in the profile table (read from its changelog) equals the
  events sent for that user;
- every worker's item state (events in it, the popular items and their shares) equals the in-process
  item feed's over the same events;
- every valid input has exactly one recommendation id among those published (the same id published
  again after a crash is counted as a repeat: downstream drops it by id);
- every poison input is in the dead-letter topic with the reason of its kind.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson
import redis

from ..config import Settings
from ..errors import ServiceTimeout
from ..partitioning import partition_of
from ..store.redis_store import worker_statuses
from ..stream.topics import ensure_topics
from .bench import synthetic_events
from .chaos_checks import verify
from .consume import committed_offsets, wait_committed
from .embedded import (
    HOST,
    free_port,
    redis_password,
    start_broker,
    start_redis,
    wait_for_kafka,
    wait_for_redis,
    with_embedded,
)
from .processes import WorkerProcess
from .replay import Produced, make_producer

#: The kinds of bad input mixed in, each named by the dead-letter reason it must get.
POISON_KINDS = ("invalid_json", "not_utf8", "schema_violation", "type_topic_mismatch", "key_mismatch",
                "wrong_partition", "timestamp_out_of_range")
DAY_MS = 86_400_000
#: The worker's log lines of a retried output step or an unpublished status (stream/worker.py).
RETRY_LINES = ("cannot write to Redis", "cannot deliver to Kafka", "cannot publish the worker status")


@dataclass
class ChaosPlan:
    events: int = 100_000
    users: int = 2_000
    items: int = 4_000
    rate: float = 500.0  # events/s offered
    kill_every_s: tuple[float, float] = (10.0, 30.0)
    poison_every: int = 500
    broker_pause_s: float = 4.0
    redis_down_s: float = 5.0
    partitions: int = 8
    seed: int = 7
    drain_timeout_s: float = 900.0


def poison_record(kind: str, n: int, settings: Settings, now_ms: int) -> tuple[str, bytes, bytes, int | None]:
    """One bad input as (topic, key, value, partition: None for the key's); its key names it, so its dead
    letter can be found."""
    key = f"poison-{n}"
    event: dict[str, Any] = {"event_id": key, "user_id": key, "item_id": "i0", "type": "click", "ts": now_ms,
                             "schema_version": 1}
    topic = settings.topics.click
    if kind == "invalid_json":
        return topic, key.encode(), b'{"event_id": "' + key.encode() + b'", ', None
    if kind == "not_utf8":
        return topic, key.encode(), b"\xff\xfe" + key.encode(), None
    if kind == "schema_violation":
        del event["item_id"]
    elif kind == "type_topic_mismatch":
        topic = settings.topics.browse
    elif kind == "key_mismatch":
        event["user_id"] = "someone-else"
    elif kind == "wrong_partition":  # a producer with another partitioner
        return topic, key.encode(), orjson.dumps(event), (partition_of(key, settings.partitions) + 1) % settings.partitions
    elif kind == "timestamp_out_of_range":
        event["ts"] = now_ms + settings.max_future_ms + DAY_MS
    else:
        raise ValueError(f"unknown poison kind {kind!r}")
    return topic, key.encode(), orjson.dumps(event), None


def fault_schedule(plan: ChaosPlan, duration_s: float, rng: random.Random) -> list[tuple[float, str]]:
    """(seconds from the start, fault) in time order."""
    faults = [(duration_s * 0.15, "join"), (duration_s * 0.3, "restart_redis"), (duration_s * 0.45, "leave"),
              (duration_s * 0.6, "join"), (duration_s * 0.75, "pause_broker")]
    at = rng.uniform(*plan.kill_every_s)
    while at < duration_s:
        faults.append((at, "kill"))
        at += rng.uniform(*plan.kill_every_s)
    return sorted(faults)


class ChaosServices:
    """The run's own broker and Redis, which it can restart (Redis) and pause (the broker)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.redis_dir = log_dir / "redis-data"
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        kafka_port, self.redis_port, self.redis_password = free_port(), free_port(), redis_password()
        self.kafka_bootstrap_servers = f"{HOST}:{kafka_port}"
        self.redis_url = f"redis://:{self.redis_password}@{HOST}:{self.redis_port}/0"
        self.broker = start_broker(kafka_port, log_dir / "broker.log")
        self.redis = start_redis(self.redis_port, log_dir / "redis.log", self.redis_dir, self.redis_password)
        try:
            wait_for_redis(self.redis_url)
            wait_for_kafka(self.kafka_bootstrap_servers)
        except BaseException:
            self.stop()
            raise

    def restart_redis(self, down_s: float) -> None:
        self.redis.kill()
        self.redis.wait()
        time.sleep(down_s)
        self.redis = start_redis(self.redis_port, self.log_dir / "redis.log", self.redis_dir, self.redis_password)
        wait_for_redis(self.redis_url)

    def pause_broker(self, seconds: float) -> None:
        os.kill(self.broker.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(self.broker.pid, signal.SIGCONT)

    def stop(self) -> None:
        for proc in (self.broker, self.redis):
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # a service that will not stop is killed
                proc.kill()
                proc.wait()


#: How long a "leave" waits for every live worker to be ready before it stops one anyway.
LEAVE_WAIT_S = 30.0


@dataclass
class Crew:
    """The worker processes; every fault on them is counted."""

    settings: Settings
    log_dir: Path
    rng: random.Random
    workers: list[WorkerProcess] = field(default_factory=list)
    killed: int = 0
    joined: int = 0
    left: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    ended: set[int] = field(default_factory=set)  # pids this run stopped or killed

    def start(self) -> WorkerProcess:
        # info: Faust logs its group joins, assignments and table recovery, which a stuck drain is read by
        worker = WorkerProcess(self.settings, self.log_dir / f"worker-{len(self.workers)}.log", "info")
        self.workers.append(worker)
        return worker

    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    def live_pids(self) -> set[int]:
        return {w.pid for w in self.live()}

    def watch(self) -> None:
        """A worker that exited by itself is a failure of the run (it must never die of input): note
        it, with its log's end, and start another so the run goes on."""
        for worker in self.workers:
            if worker.pid not in self.ended and not worker.alive():
                self.ended.add(worker.pid)
                self.unexpected_exits.append(f"worker {worker.pid} exited ({worker.proc.returncode}):\n"
                                             f"{worker.log_tail(15)}")
                self.start()

    def kill_one(self) -> None:
        live = self.live()
        if not live:  # every worker exited by itself just now: `watch` reports and replaces them
            self.watch()
            return
        victim = self.rng.choice(live)
        self.ended.add(victim.pid)
        victim.kill()
        self.killed += 1
        self.start()

    def join(self) -> None:
        self.start()
        self.joined += 1

    def leave(self) -> None:
        """Stop one worker (SIGTERM: it leaves the group), once every live worker is ready, as a rolling
        deploy steps. Tansu's group coordinator wedges when the group's leader leaves between the join
        and the sync of a rebalance: every later join gets the same generation and no leader, for good
        (Apache Kafka starts a new generation), so a leave in the middle of a rebalance would test the
        embedded broker, not the workers."""
        deadline = time.monotonic() + LEAVE_WAIT_S
        while time.monotonic() < deadline and not all(readyz(w)[0] for w in self.live()):
            time.sleep(0.5)
        live = self.live()
        if len(live) > 1:
            leaving = self.rng.choice(live)
            self.ended.add(leaving.pid)
            leaving.stop()
            self.left += 1

    def retries_logged(self) -> dict[str, int]:
        """How often the workers met the outages: output steps retried, statuses not published."""
        counts = dict.fromkeys(RETRY_LINES, 0)
        for worker in self.workers:
            text = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
            for line in RETRY_LINES:
                counts[line] += text.count(line)
        return counts

    def stop(self) -> None:
        for worker in self.workers:
            self.ended.add(worker.pid)
            worker.stop()


class Feeder(threading.Thread):
    """Sends the events at the plan's rate, a poison input among every `poison_every`, from its own thread
    while the faults happen."""

    def __init__(self, settings: Settings, events: list[dict[str, Any]], plan: ChaosPlan):
        super().__init__(name="chaos-feeder", daemon=True)
        self.settings, self.events, self.plan = settings, events, plan
        self.produced = Produced()
        self.poison: dict[str, str] = {}  # key -> expected dead-letter reason
        self.failures: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._send()
        except BaseException as exc:  # noqa: BLE001 - reported by the run
            self.error = exc

    def _failed(self, exc: BaseException) -> None:
        self.failures.append(repr(exc))

    def _send(self) -> None:
        settings, plan = self.settings, self.plan
        producer = make_producer(settings)
        started = time.monotonic()
        try:
            for i, event in enumerate(self.events):
                ahead = i / plan.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
                if i % plan.poison_every == plan.poison_every // 2:
                    kind = POISON_KINDS[len(self.poison) % len(POISON_KINDS)]
                    topic, key, value, partition = poison_record(kind, len(self.poison), settings,
                                                                 int(time.time() * 1000))
                    self.poison[key.decode()] = kind
                    producer.send(topic, key=key, value=value, partition=partition).add_callback(
                        self.produced.acked).add_errback(self._failed)
                producer.send(settings.topics.for_type(event["type"]), key=event["user_id"].encode(),
                              value=orjson.dumps(event)).add_callback(self.produced.acked).add_errback(self._failed)
            producer.flush()
        finally:
            producer.close()


def run_chaos(plan: ChaosPlan, base: Settings, log_dir: Path,
              say: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Run the plan on services of its own; the report's `passed` says whether every check held."""
    events = synthetic_events(plan.events, users=plan.users, items=plan.items, seed=plan.seed, prefix="chaos")
    rng = random.Random(plan.seed)
    services = ChaosServices(log_dir)
    name = f"chaos{os.getpid()}"
    # The idle wait of a replay (evaluate --via-kafka): no input waits on another's stall for less.
    settings = with_embedded(base, services.kafka_bootstrap_servers, services.redis_url).replace(
        namespace=f"{name}.", app_id=f"stream-app-{name}", partitions=plan.partitions,
        max_idle_ms=max(base.max_idle_ms, 2000))
    crew = Crew(settings, log_dir, rng)
    faults: collections.Counter[str] = collections.Counter()
    try:
        ensure_topics(settings)
        crew.start()
        duration = plan.events / plan.rate
        schedule = fault_schedule(plan, duration, rng)
        feeder = Feeder(settings, events, plan)
        started = time.monotonic()
        feeder.start()
        say(f"sending {plan.events:,} events at {plan.rate:g}/s ({duration:.0f} s) with {len(schedule)} faults; "
            f"logs in {log_dir}")
        for at, fault in schedule:
            while time.monotonic() - started < at:
                crew.watch()
                time.sleep(0.2)
            say(f"{time.monotonic() - started:6.1f} s  {fault} ({len(crew.live())} workers)")
            apply_fault(fault, crew, services, plan)
            faults[fault] += 1
        while feeder.is_alive():
            crew.watch()
            feeder.join(0.5)
        if feeder.error is not None:
            raise feeder.error
        say(f"{time.monotonic() - started:6.1f} s  all sent; waiting for the workers to take everything")
        drain(settings, crew, feeder.produced, plan.drain_timeout_s)
        seconds = time.monotonic() - started
        crew.watch()  # one that exited while the others drained is a failure too, not only one gone before
        report = verify(settings, events, feeder.poison, crew)
        report.update(events_sent=len(events), poison_sent=len(feeder.poison), seconds=round(seconds, 1),
                      events_per_s=round(len(events) / seconds, 1), faults=dict(faults), kills=crew.killed,
                      joins=crew.joined, leaves=crew.left, producer_failures=len(feeder.failures),
                      unexpected_exits=crew.unexpected_exits, log_dir=str(log_dir))
        report["retries_logged"] = crew.retries_logged()
        report["passed"] = report["passed"] and not crew.unexpected_exits and not feeder.failures
        return report
    finally:
        crew.stop()
        services.stop()


def apply_fault(fault: str, crew: Crew, services: ChaosServices, plan: ChaosPlan) -> None:
    if fault == "kill":
        crew.kill_one()
    elif fault == "join":
        crew.join()
    elif fault == "leave":
        crew.leave()
    elif fault == "restart_redis":
        services.restart_redis(plan.redis_down_s)
    elif fault == "pause_broker":
        services.pause_broker(plan.broker_pause_s)
    else:
        raise ValueError(f"unknown fault {fault!r}")


def drain(settings: Settings, crew: Crew, produced: Produced, timeout_s: float) -> None:
    """Wait until the workers committed every input (so every effect is flushed) and every live worker's
    item state holds every input event; a worker dying meanwhile is replaced (and reported)."""
    deadline = time.monotonic() + timeout_s
    while True:
        crew.watch()
        try:
            wait_committed(settings, produced.marks, timeout=min(30.0, max(1.0, deadline - time.monotonic())))
            return
        except ServiceTimeout as exc:
            if time.monotonic() > deadline:
                raise ServiceTimeout(f"{exc}; {stuck_report(settings, produced, crew.live())}") from None


def readyz(worker: WorkerProcess) -> tuple[bool, str]:
    """Whether the worker takes events (its /readyz answers 200), and its answer (what it waits for) or
    why there is none: a worker whose status is missing from Redis may still answer here, or its event
    loop may be stuck."""
    try:
        with urllib.request.urlopen(f"{worker.url}/readyz", timeout=2) as answer:
            return answer.status == 200, answer.read().decode(errors="replace")[:300]
    except urllib.error.HTTPError as refused:  # 503: not ready, and why
        return False, refused.read().decode(errors="replace")[:300]
    except OSError as exc:
        return False, f"no answer ({exc!r:.100})"


def stuck_report(settings: Settings, produced: Produced, live: Sequence[WorkerProcess] = ()) -> str:
    """Where the workers' commits stopped short of what was sent, what each worker holds (its status in
    Redis) and what each live worker's /readyz says."""
    committed = committed_offsets(settings, produced.marks)
    behind = {f"{tp.topic}[{tp.partition}]": (committed[tp], mark) for tp, mark in produced.marks.items()
              if committed[tp] < mark}
    client = redis.Redis.from_url(settings.require_redis())
    try:
        held = {s["pid"]: (s["input_partitions"], s["ordering"].get("held"), s["ordering"].get("owned_pending"))
                for s in worker_statuses(client, settings.namespace)}
    finally:
        client.close()
    answers = {worker.pid: readyz(worker)[1] for worker in live}
    return (f"committed/sent where behind: {behind}; workers (partitions, held, pending): {held}; "
            f"live workers' /readyz: {answers}")
