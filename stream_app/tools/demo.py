"""`stream-app demo`: embedded broker and Redis, one worker, a bundled real log (the Online Retail
sample with its product names, by default), a summary."""

from __future__ import annotations

import collections
import functools
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis

from ..config import Settings
from ..errors import ServiceTimeout, StreamAppError
from ..serving.registry import validation_said
from ..store.redis_store import read_profile
from ..stream.model_control import publish
from ..urls import redact_setting
from .bench import latency_summary
from .catalogue import load_catalogue
from .consume import TopicReader, wait_committed
from .log_checks import rejection_said
from .processes import Run, WorkerProcess, one_off_run, wait_ready_workers
from .recorded import LineRejection
from .replay import Progress, dead_letter_lines, dead_letter_of, dead_letters_of, gate, make_producer, produce_events
from .scrape import Headline, scrape
from .sorted_log import load_accepted

SAMPLE = Path(__file__).parent.parent / "data" / "online-retail-sample.csv"
SAMPLE_FORMAT = "online-retail"
Catalogue = tuple[dict[str, dict[str, Any]], list[LineRejection]]  # what load_catalogue returns
ATTRIBUTION = ("Online Retail sample: a UK gift shop's first day in the UCI log, CC BY 4.0 - Chen, Sain, Guo, "
               "J. Database Marketing & Customer Strategy Mgmt 19(3) 2012; UCI ML Repository, doi:10.24432/C5BW33")


def _iso(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _say(text: str = "") -> None:
    print(text, flush=True)


def item_named(item_id: str, titles: dict[str, str]) -> str:
    """An item id with its title in quotes (ids and titles both hold spaces), or the id alone."""
    return f'{item_id} "{titles[item_id]}"' if titles.get(item_id) else item_id


def describe_user(profile: dict[str, Any], rec: dict[str, Any] | None, shown: int = 5,
                  titles: dict[str, str] | None = None) -> list[str]:
    titles = titles or {}
    named = functools.partial(item_named, titles=titles)

    p = profile["profile"]
    counts = ", ".join(f"{n} {t}" for t, n in sorted(p["counts"].items()))
    stages = ", ".join(f"{n} {s}" for s, n in sorted(p["stages"].items()))
    top_items = sorted(p["item_affinity"].items(), key=lambda kv: kv[1], reverse=True)[:3]
    recent = list(dict.fromkeys(item for item, _t, _ts in reversed(p["recent"])))[:shown]  # each item once
    events = profile["event_count"]
    between = "; " if titles else ", "  # a title may hold commas ("TEA POT, WHITE")
    # the stages split the purchases ("250 purchase; 250 order" read as 500 events: helper-137)
    lines = [f"user {p['user_id']}: {events} event{'' if events == 1 else 's'} ({counts}"
             f"{'; purchase stages given: ' + stages if stages else ''}), "
             f"profile v{profile['profile_version']}, seen {_iso(p['first_seen'])} .. {_iso(p['last_seen'])} UTC",
             f"  strongest item affinities: {between.join(named(i) for i, _ in top_items)}",
             f"  most recent items: {between.join(named(i) for i in recent)}"]
    if p.get("likes"):
        lines.append(f"  likes (item text, content model): {', '.join(p['likes'])}")
    else:  # the Quick start says the demo shows "what they like, in words": say what that takes
        lines.append("  likes: none in words (they come from a content model served with the catalogue's titles, once "
                     "the user has had items with text: docs/item-text.md)")
    stats = p.get("stats") or {}
    if stats:
        sessions, per_session = stats.get("sessions", 0), stats.get("events_per_session")
        lines.append(f"  behaviour: repeat propensity {stats.get('repeat_propensity', 0):.2f}, "
                     f"{sessions} session{'' if sessions == 1 else 's'}, "
                     + (f"{per_session} events per ended session" if per_session else "none ended yet"))
    if p.get("embedding"):
        first = ", ".join(f"{x:.3f}" for x in p["embedding"][:4])
        lines.append(f"  embedding: {len(p['embedding'])} numbers from encoder {p['encoder_version']}: {first}, ...")
    if rec is not None:
        ranking = rec["model"].get("ranking", "-")
        lines.append(f"  recommendations after its last event (the first {min(shown, len(rec['items']))} of "
                     f"{len(rec['items'])} items, best first, ranked by "
                     f"{'the online ranker' if ranking == 'ranker' else 'the prior (ranker still warming up)'}):")
        for rank, item in enumerate(rec["items"][:shown], 1):
            lines.append(f"    {rank}. {named(item['item_id'])}  score {item['score']:.3f}  "
                         f"({'; '.join(item['reasons'])})")
    return lines


def train_demo_encoder(source: Path, fmt: str, registry_dir: Path) -> dict[str, Any] | None:
    """A small sequence encoder trained on the log the demo replays (seconds on a CPU), or None
    without PyTorch (the `train` extra)."""
    try:
        from stream_app_train.train import TooLittleToTrain, TrainConfig, train
    except ImportError:
        _say("  encoder   none: PyTorch is not installed (`pip install -e '.[train]'` adds the deep encoder)")
        return None
    started = time.monotonic()
    _say(f"  encoder   training on {source.name} (seconds on the sample, minutes on a log of hundreds of thousands "
         "of events)")

    def warned(line: str) -> None:  # what `train` warns of (a model of a few examples), not its progress
        if line.startswith("train: warning: "):
            _say(f"  encoder   {line.removeprefix('train: ')}")

    try:
        manifest = train(source, fmt, registry_dir, TrainConfig(dim=32, hidden=64, epochs=5), progress=warned)
    except TooLittleToTrain as exc:  # the demo goes on without it, as `train` says (an export that fails is raised)
        _say(f"  encoder   none: {exc}")
        return None
    _say(f"  encoder   trained {manifest['version']} on {source.name} in {time.monotonic() - started:.1f}s "
         f"(GRU over hashed item ids, event types and time gaps; ONNX for the worker; {validation_said(manifest)} "
         "on the last 20% of the log's time)")
    return manifest


def content_model(registry_dir: Path) -> str | None:
    """The content model's version in `registry_dir`: exported once (all-MiniLM-L6-v2 to ONNX, about
    20 s) into a cache beside the runtime file, then copied; None without the train extra."""
    import shutil

    from ..serving import registry
    from ..state_files import state_dir

    cache = state_dir() / "demo-content-models"
    version = registry.latest(cache, "content")
    if version is None:
        try:
            from stream_app_train.content_export import export_content
        except ImportError:
            _say("  content   none: PyTorch/transformers are not installed (`pip install -e '.[train]'` adds item text)")
            return None
        started = time.monotonic()
        version = export_content(None, cache)["version"]
        _say(f"  content   exported {version} in {time.monotonic() - started:.1f}s (all-MiniLM-L6-v2, a pre-trained "
             f"sentence encoder, to ONNX; cached in {cache})")
    else:
        _say(f"  content   {version} (all-MiniLM-L6-v2 as ONNX, exported before; cache {cache})")
    registry_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(cache / version, registry_dir / version)
    return version


def kept_as(settings: Settings, version: str) -> str:
    """What the content version's vectors are kept under (`TextEncoder.vectors_id`), from its manifest."""
    from ..serving import registry
    from ..serving.text_encoder import vectors_id

    return vectors_id(registry.read_manifest(Path(settings.registry_dir) / version))


def vectors_file(version: str) -> Path:
    from ..state_files import state_dir

    return state_dir() / "demo-content-models" / f"{version}.text-vectors.npz"


def seed_vectors(settings: Settings, version: str) -> int:
    """Put the text vectors an earlier demo's worker embedded under `version` (a content version's `kept_as`) into
    this run's Redis, where its worker takes them (store/text_vectors.py) instead of embedding the catalogue again;
    how many."""
    from ..store.text_vectors import CHUNK, TTL_S, as_field, vectors_key

    path = vectors_file(version)
    if not path.exists():
        return 0
    try:  # a cache: whatever is wrong with it (a truncated file, another format), the worker embeds the texts
        with np.load(path, allow_pickle=False) as saved:
            keys, vectors = saved["keys"].tolist(), saved["vectors"]
        if vectors.dtype != np.float16 or vectors.ndim != 2 or len(vectors) != len(keys):
            raise ValueError(f"{len(keys)} keys and vectors of shape {vectors.shape} and type {vectors.dtype}")
        client, name = redis.Redis.from_url(settings.require_redis()), vectors_key(settings.namespace, version)
        try:
            pipe = client.pipeline(transaction=False)
            for start in range(0, len(keys), CHUNK):
                pipe.hset(name, mapping={key: as_field(vector) for key, vector
                                         in zip(keys[start:start + CHUNK], vectors[start:start + CHUNK])})
            pipe.expire(name, TTL_S)
            pipe.execute()
        finally:
            client.close()
    except Exception as exc:
        _say(f"            (the text vectors kept in {path} were not used: {exc!r}; the worker embeds the texts)")
        return 0
    return len(keys)


def keep_vectors(settings: Settings, version: str) -> None:
    """Keep this run's shared text vectors for the next demo (`seed_vectors`)."""
    from ..store.text_vectors import vectors_key

    path = vectors_file(version)
    try:  # a cache: the demo's results are out already, and a next demo embeds what is not kept
        client = redis.Redis.from_url(settings.require_redis())
        try:
            fields = client.hgetall(vectors_key(settings.namespace, version))
        finally:
            client.close()
        if not fields:
            return
        width = collections.Counter(map(len, fields.values())).most_common(1)[0][0]  # one model: one length
        kept = {key.decode(): raw for key, raw in fields.items() if len(raw) == width}
        partial = tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False)
        try:  # a full disk, say (at a write, or the close that flushes): no half-written file beside the kept one
            with partial:
                np.savez(partial, keys=np.array(list(kept)),
                         vectors=np.stack([np.frombuffer(raw, "<f2") for raw in kept.values()]))
            Path(partial.name).replace(path)
        except BaseException:
            Path(partial.name).unlink(missing_ok=True)
            raise
    except Exception as exc:
        _say(f"(the worker's text vectors were not kept for the next demo: {exc!r})")


def load_demo_catalogue(settings: Settings, items: str, catalogue: Catalogue) -> tuple[dict[str, str], str | None]:
    """Send the catalogue (as `load_catalogue` read it) to the items topic and publish a content model
    when the registry has one; item_id -> its title, to show users' items by name, and the content model."""
    from ..core.content import item_title
    from .catalogue import send_catalogue

    titles = {item_id: item_title(record) for item_id, record in catalogue[0].items()}
    loaded = send_catalogue(settings, items, *catalogue)
    _say(f"  items     {loaded.sent:,} products with their names on {settings.topics.items}"
         + (f" ({loaded.rejected} invalid, to the dead-letter topic)" if loaded.rejected else ""))
    version = content_model(Path(settings.registry_dir))
    if version is not None:
        publish(settings, "content", version)
        seeded = seed_vectors(settings, kept_as(settings, version))
        _say("            published as the content model: workers embed every title once"
             + (f" ({seeded:,} text vectors kept from an earlier demo in Redis: only the rest)" if seeded else ""))
    return titles, version


def say_behind(sent_ms: dict[str, float], elapsed_s: float, rate: float | None) -> None:
    """At an offered rate the worker could not keep up with, the latency measured is mostly the queue: said."""
    sending_s = (max(sent_ms.values()) - min(sent_ms.values())) / 1000 if sent_ms else 0.0
    if rate is None or elapsed_s <= sending_s * 1.1 + 0.5:
        return
    _say(f"behind: the events went out in {sending_s:.1f}s and their last recommendation came after {elapsed_s:.1f}s: "
         f"the worker took {len(sent_ms) / elapsed_s:,.0f} events/s of the {rate:,.0f} offered on this machine, so "
         "events queued and the latency above is mostly that wait (a lower --rate shows a worker that keeps up)")


def say_scrape(url: str, elapsed_s: float) -> None:
    """The worker's own figures, from one scrape of its /metrics, as a dashboard would show them."""
    m = Headline.of(scrape(url))
    p99 = "-" if m.p99_arrival_s is None else f"{m.p99_arrival_s * 1000:,.0f} ms"
    _say(f"one scrape of {url}: {m.events:,.0f} events in ({m.events / elapsed_s:,.0f} events/s over the replay), "
         f"{m.recommendations:,.0f} recommendations, {m.dead_letters:,.0f} dead letters; p99 latency {p99} "
         f"(the worker's own histogram, estimated within its buckets, which widen to seconds); consumer lag "
         f"{m.lag:,.0f}; oldest profile's last event {m.oldest_freshness_s / 86400:,.0f} days before now "
         "(a recorded log)")


def _refuse_ignored(path: str | None, fmt: str | None, items: str | None, items_format: str | None) -> None:
    """Options that describe another one given without it would be ignored: refused."""
    if not path and (items is not None or fmt is not None):
        given = " and ".join(name for name, value in (("--items", items), ("--format", fmt)) if value is not None)
        raise StreamAppError(f"{given} {'describe' if ' and ' in given else 'describes'} --file: add --file LOG (the "
                             "bundled sample has its own catalogue), or leave "
                             f"{'them' if ' and ' in given else 'it'} out")
    if items_format is not None and items is None:
        raise StreamAppError("--items-format describes --items: add --items FILE, or leave it out")


def start_demo_worker(run: Run, content: bool, timeout: float) -> WorkerProcess:
    """One worker, ready; with a content model, how its index was made."""
    worker = run.start_worker()
    status = wait_ready_workers(run.settings, [worker], timeout)[0]
    _say(f"  worker    ready (pid {worker.pid}), log {worker.log_path}")
    indexed = status.get("catalogue") or {}
    if content and indexed.get("indexed"):
        _say(f"            {indexed['indexed']:,} items indexed by their text: {indexed['embedded']:,} texts embedded "
             f"by the worker, {indexed['shared']:,} vectors taken from Redis")
    return worker


def read_demo_log(source: Path, fmt: str) -> tuple[list[dict[str, Any]], list[Any], int]:
    """The log's events a worker takes, in time order; the dead letters of the others (lines it cannot read, events
    a worker would refuse for their time or size), as `replay` sends them; how many distinct event ids the events
    have (a repeated id is applied, and recommended, once)."""
    events, rejected, refused = load_accepted(source, fmt, gate(Settings.from_env()))
    if not events:
        raise StreamAppError(f"no event of {source} is one a worker takes: {len(refused)} refused, the first for "
                             f"{rejection_said(dead_letter_of(refused[0], source).rejection)}")
    return events, [*rejected, *dead_letters_of(refused, source)], len({event["event_id"] for event in events})


def run_demo(path: str | None, fmt: str | None, rate: float | None, timeout: float,
             items: str | None = None, items_format: str | None = None, keep: bool = False) -> int:
    _refuse_ignored(path, fmt, items, items_format)
    items_format = items_format or "jsonl"
    _say("stream-app demo")
    source = Path(path) if path else SAMPLE
    fmt = (fmt or "jsonl") if path else SAMPLE_FORMAT
    if not path:
        items, items_format = str(SAMPLE), SAMPLE_FORMAT
    events, rejected, distinct = read_demo_log(source, fmt)  # before any service starts: a wrong path fails at once
    catalogue = load_catalogue(items, items_format, "--items-format") if items is not None else None
    with one_off_run("demo", keep=keep) as run:
        run.settings = run.settings.replace(registry_dir=str(run.log_dir / "registry"))
        settings = run.settings
        where = "embedded Tansu broker and Redis on loopback" if run.embedded else f"namespace {settings.namespace}"
        _say(f"  services  KAFKA_BOOTSTRAP_SERVERS={redact_setting(settings.kafka_bootstrap_servers)} "
             f"REDIS_URL={redact_setting(settings.redis_url)} ({where})")
        manifest = train_demo_encoder(source, fmt, Path(settings.registry_dir))
        if manifest is not None:
            publish(settings, "live", manifest["version"])
            _say(f"            published as the live model on {settings.topics.model_control}")
        titles, content = load_demo_catalogue(settings, str(items), catalogue) if catalogue is not None else ({}, None)
        worker = start_demo_worker(run, content is not None, timeout)
        _say(f"  metrics   {worker.url}/metrics (Prometheus text format; /healthz, /readyz beside it)")
        _say(f"  replay    {len(events)} events from {source.name} at "
             f"{'full speed' if rate is None else f'{rate:,.0f} events/s'}"
             + (f" ({len(rejected)} lines or events it cannot read or a worker would refuse, to the dead-letter topic)"
               if rejected else "")
             + (f"; {len(events) - distinct} repeat an event id (applied once)" if distinct < len(events) else ""))
        if not path:
            _say(f"            {ATTRIBUTION}")
        sent_ms: dict[str, float] = {}
        producer = make_producer(settings, rate)
        started = time.monotonic()
        produced = produce_events(settings, events, rate, Progress(len(events), sys.stderr), producer,
                                  on_send=lambda e: sent_ms.setdefault(e["event_id"], time.time() * 1000))
        dead_letter_lines(settings, rejected, producer)
        producer.close()
        with TopicReader(settings.kafka_bootstrap_servers, settings.topics.recommendations,
                         settings.kafka_security) as recs:
            try:
                recs.read_until(distinct, timeout)
            except ServiceTimeout as exc:
                _say(f"  timeout   {exc}; worker log tail:\n{worker.log_tail()}")
                run.failed = True
                return 1
            elapsed = time.monotonic() - started
            wait_committed(settings, produced.marks, timeout)
            records = list(recs.records)
        with TopicReader(settings.kafka_bootstrap_servers, settings.topics.dlq, settings.kafka_security) as dlq:
            dlq.poll()
            dead = len(dlq.records)
        latest: dict[str, dict[str, Any]] = {}
        for record in records:
            latest[record.key.decode()] = orjson.loads(record.value)
        lat = latency_summary(sent_ms, records)
        _say("")
        _say(f"events in: {len(events)}   recommendations out: {len(records)}   dead letters: {dead}")
        _say(f"throughput: {len(events) / elapsed:,.0f} events/s end to end (first event sent -> last "
             f"recommendation read, {elapsed:.2f}s; `stream-app bench` measures the ceiling)")
        _say(f"latency event sent -> recommendation published (its record's Kafka timestamp, each event; the first "
             f"copy of a repeated id): p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms")
        say_behind(sent_ms, elapsed, rate)
        say_scrape(f"{worker.url}/metrics", elapsed)
        by_user: dict[str, int] = {}
        for e in events:
            by_user[e["user_id"]] = by_user.get(e["user_id"], 0) + 1
        client = redis.Redis.from_url(settings.redis_url)
        for user_id, _n in sorted(by_user.items(), key=lambda kv: (-kv[1], kv[0]))[:2]:
            _say("")
            for line in describe_user(read_profile(client, user_id, settings.namespace), latest.get(user_id),
                                      titles=titles):
                _say(line)
        client.close()
        if content is not None:
            keep_vectors(settings, kept_as(settings, content))
        _say("")
        _say("done: stopping the worker" + (" and the embedded services" if run.embedded else "")
             + ("" if keep else f", removing {run.log_dir} (`--keep` keeps it)"))
        return 0
