"""What each `stream-app` command does, given its parsed arguments (`main` builds the parser). Each
command reads the settings once and passes them down; what it needs (Faust, Kafka and Redis clients,
onnxruntime, torch) is imported when it runs, so a command loads only its own dependencies."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from ..config import Settings
from ..errors import ConfigError, StreamAppError
from ..state_files import read_runtime_file, running_serves, serve_file, state_dir, unusable_state_dir
from ..urls import redact_setting
from .model_commands import require_train_extra, tried


def cmd_up(args: argparse.Namespace) -> int:
    from ..tools import embedded

    try:
        record = embedded.up()
    except OSError as exc:
        raise StreamAppError(unusable_state_dir(exc)) from None
    print(f"KAFKA_BOOTSTRAP_SERVERS={record['KAFKA_BOOTSTRAP_SERVERS']}\nREDIS_URL={record['REDIS_URL']}")
    print(f"embedded broker and Redis are running{embedded.running_since(record)}; `stream-app down` stops them. The "
          "embedded broker keeps its topics in memory: `down` discards them all (profile changelogs, dead letters, the "
          "erased-users record); for topics that must outlive it, run Apache Kafka (docker-compose.yml)"
          + embedded.shell_elsewhere(record), file=sys.stderr)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from ..tools import embedded

    try:  # only to name the workers and serves still attached: a mistyped setting does not keep the services up
        attached = attached_workers(Settings.from_env())
        embedded_redis = redact_setting(read_runtime_file().get("REDIS_URL", ""))
        serves = [s for s in running_serves() if embedded_redis and s.get("redis") == embedded_redis]
    except (ConfigError, OSError):
        attached, serves = [], []
    try:
        stopped = embedded.down()
    except OSError as exc:
        raise StreamAppError(unusable_state_dir(exc)) from None
    print("stopped the embedded broker (its topics, kept in memory, are gone) and Redis" if stopped
          else "nothing was running")
    if stopped and attached:
        said, it = ("1 worker was", "it") if len(attached) == 1 else (f"{len(attached)} workers were", "them")
        print(f"{said} still running against them (pids {', '.join(map(str, attached))}): a worker retries the "
              f"connection until stopped (a later `up` takes new ports); stop {it} (Ctrl-C, or kill PID)",
              file=sys.stderr)
    for serve in serves if stopped else []:
        print(f"`stream-app serve` (pid {serve['pid']}, {serve.get('address')}) still reads the Redis stopped: it "
              "answers 503 until stopped (Ctrl-C, or kill PID)", file=sys.stderr)
    return 0


def attached_workers(settings: Settings) -> list[int]:
    """The pids of the live workers (of any namespace) the embedded Redis knows, before it stops; [] if none or
    it does not answer."""
    import redis

    from ..store.redis_store import worker_statuses

    if not settings.redis_url:
        return []
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return sorted(status["pid"] for status in worker_statuses(client, namespace="*"))  # any namespace
        finally:
            client.close()
    except (redis.RedisError, ValueError, KeyError, TypeError):
        return []


def redis_trouble(settings: Settings, exc: Exception) -> StreamAppError:
    """What to do when Redis does not serve a command: wrong credentials are not a stopped Redis."""
    import redis

    where = redact_setting(settings.redis_url)
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
        return StreamAppError(f"Redis at {where} refused the credentials ({exc}): check the password in REDIS_URL")
    if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSL" in str(exc) or "Hostname mismatch" in str(exc):
        return StreamAppError(f"Redis at {where} failed the TLS handshake ({exc}): name the CA that signed its "
                              "certificate with ssl_ca_certs=/path/ca.pem in REDIS_URL, and connect by the name the "
                              "certificate holds")
    try:
        embedded = read_runtime_file().get("REDIS_URL")
    except ConfigError:  # a garbled runtime file: `up`'s Redis is not known
        embedded = None
    if settings.redis_url == embedded:
        return StreamAppError(f"Redis at {where}, `stream-app up`'s, does not answer ({exc}): run `stream-app up` "
                              "again (Redis comes back empty; running workers write their profiles back to it)")
    return StreamAppError(f"Redis at {where} does not answer ({exc}): is that Redis running and reachable from here, "
                          "and REDIS_URL right?")


def cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import os
    import socket

    from ..logs import setup_logging
    from ..store.read_api import run_read_api

    settings = Settings.from_env()
    setup_logging(settings.log_format, "info", f"serve:{socket.gethostname()}:{os.getpid()}")
    redis_url = settings.require_redis()
    record = serve_file(os.getpid())

    def listening(address: str) -> None:
        logging.getLogger("stream_app.read_api").info(
            "serving GET /profiles/USER[?min_version=N] and /healthz on %s, from Redis %s", address,
            redact_setting(redis_url))
        with contextlib.suppress(OSError):  # only for `down` to name it
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"pid": os.getpid(), "address": address, "redis": redact_setting(redis_url)}))

    try:
        run_read_api(redis_url, settings, args.host, args.port, listening)
    except OSError as exc:
        raise StreamAppError(f"cannot listen on {args.host}:{args.port} ({exc}); {listen_advice(exc)}") from None
    finally:
        record.unlink(missing_ok=True)
    return 0


def listen_advice(exc: OSError) -> str:
    """What to change when a socket cannot be bound: the host when it is none of this machine's, else the port."""
    import errno
    import socket

    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return "give one of this machine's addresses with --host (127.0.0.1, or 0.0.0.0 for all)"
    if exc.errno == errno.EACCES:
        return "ports under 1024 need privileges: pick another with --port"
    return "pick another with --port"


def cmd_repair_redis(args: argparse.Namespace) -> int:
    import redis

    from ..tools.repair import repair_redis

    settings = Settings.from_env()
    try:
        summary = repair_redis(settings, force=args.force)
    except redis.RedisError as exc:  # nothing half-done to undo: a rerun writes what is missing
        raise redis_trouble(settings, exc) from None
    print(f"read {summary.snapshots_read} snapshots of {summary.users} users from the profiles topic ({summary.tombstoned} "
          f"with a tombstone last: erased or evicted); wrote {summary.written} to Redis (the others were there already, "
          f"or newer), deleted {summary.deleted} (users with a tombstone last, erased, or not on the topic), left out "
          f"{summary.erased} snapshots of users erased after, in {summary.seconds:.1f}s{summary.passed_over_note()}")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    from ..tools.erase import erase_users

    return erase_users(Settings.from_env(), args.users, None if args.no_wait else args.timeout, args.json, args.reset)


def cmd_worker(args: argparse.Namespace) -> int:
    from ..stream.foreground import run_worker
    from ..stream.topics import ensure_topics
    from ..tools.embedded import free_port
    from .worker_start import before_joining

    settings = Settings.from_env()
    partitions = ensure_topics(settings)
    before_joining(settings, partitions)  # a worker that cannot write would hold its partitions
    port = args.web_port or free_port()  # the worker says where it listens once it does
    run_worker(settings, partitions, port, args.loglevel)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from ..tools.replay import replay

    summary = replay(Settings.from_env(), args.file, args.format, args.rate, limit=args.limit,
                     run_events=args.sort_in_memory)
    print("\n".join(summary.lines()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..tools.demo import run_demo

    return run_demo(args.file, args.format, args.rate, args.timeout, args.items, args.items_format, args.keep)


def cmd_bench(args: argparse.Namespace) -> int:
    from ..tools.bench import run_bench

    return run_bench(args.events, args.users, args.items, args.timeout, args.rate, args.encoder, args.baseline,
                     args.workers, args.keep, args.rounds)


def cmd_chaos(args: argparse.Namespace) -> int:
    from ..tools.chaos import ChaosPlan, run_chaos
    from ..tools.chaos_checks import print_report

    low, high = args.kill_every
    # A MIN under a second drew a fault schedule of ever more kills that never ended (1e-9: not one line said)
    if not 1 <= low <= high < math.inf or args.events <= 0 or args.rate <= 0 or args.poison_every <= 0:
        raise StreamAppError("--events, --rate and --poison-every must be above 0, and --kill-every MIN MAX "
                             "with 1 <= MIN <= MAX (seconds)")
    plan = ChaosPlan(events=args.events, users=args.users, items=args.items, rate=args.rate,
                     kill_every_s=(low, high), poison_every=args.poison_every, seed=args.seed)
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="chaos-", dir=folder))
    report = run_chaos(plan, Settings.from_env(), log_dir, say=lambda line: print(line, file=sys.stderr))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if report["passed"] else 1


def cmd_synth(args: argparse.Namespace) -> int:
    from ..tools.synth import SynthConfig, write

    summary = write(SynthConfig(events=args.events, seed=args.seed, days=args.days, no_repeat=args.no_repeat),
                    args.out, sys.stderr)
    print(f"wrote {summary['events']:,} events ({', '.join(f'{n:,} {t}' for t, n in sorted(summary['by_type'].items()))}) "
          f"of {summary['users']:,} users, from a catalogue of {summary['items']:,} items, to {summary['log']}")
    print(f"ground truth: {summary['truth']}")
    return 0


def _load_encoder(settings: Settings, version: str | None):
    from ..serving.encoder import Encoder
    from ..serving.registry import latest

    if version is None:
        return None
    if version == "latest":
        version = latest(settings.registry_dir, kind="sequence")
        if version is None:
            raise StreamAppError(f"the registry {settings.registry_dir} holds no sequence model; train one with "
                                 f"`stream-app train LOG --registry {settings.registry_dir}`")
    return tried(Encoder.load(settings.registry_dir, version), settings)


def _load_content(settings: Settings, items: str | None, fmt: str, version: str):
    """The catalogue file's text vectors under a content model of the registry (None without --items)."""
    if items is None:
        return None
    from ..stream.catalogue_feed import index_records
    from ..tools.catalogue import load_catalogue, rejected_note

    catalogue, rejected = load_catalogue(items, fmt, "--items-format")
    if rejected:
        print(f"{items}: {rejected_note(rejected)}")
    model = _load_text_encoder(settings.registry_dir, None if version == "latest" else version)
    started = time.monotonic()
    index = index_records(model, catalogue)
    print(f"content: {len(index):,} items and {len(index.terms):,} terms embedded by {model.version} "
          f"in {time.monotonic() - started:.1f}s")
    return index


def _load_text_encoder(registry_dir: str, version: str | None):
    from ..serving.registry import latest
    from ..serving.text_encoder import TextEncoder

    version = version or latest(registry_dir, kind="content")
    if version is None:
        missing = "does not exist" if not Path(registry_dir).exists() else "holds no content model"
        raise StreamAppError(f"the registry {registry_dir} {missing}; name the registry with --registry or "
                             f"STREAM_APP_REGISTRY_DIR, or export one with `stream-app content export --registry "
                             f"{registry_dir}`")
    return tried(TextEncoder.load(registry_dir, version))


def _titles_per_second(encoder, titles: list[str], batch_size: int) -> float:
    encoder.embed(titles[:batch_size], batch_size)  # warm-up: onnxruntime plans its first shapes
    start = time.perf_counter()
    encoder.embed(titles, batch_size)
    return len(titles) / (time.perf_counter() - start)


def _read_titles(path: str, column: str, limit: int) -> list[str]:
    """The first `limit` distinct non-empty texts of a file: one a line (.txt), or a CSV column."""
    import csv
    import gzip

    from ..tools.log_files import check_file

    check_file(Path(path))  # a missing file, a folder, an empty file: said, not a traceback
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        if ".csv" in Path(path).name:
            reader = csv.DictReader(f)
            if column not in (reader.fieldnames or ()):
                raise StreamAppError(f"{path} has no column {column!r} (it has {reader.fieldnames}); name one with --column")
            texts = (row[column] for row in reader)
        else:
            texts = (line.rstrip("\n") for line in f)
        distinct: dict[str, None] = {}
        for text in texts:
            if text.strip():
                distinct.setdefault(text.strip())
                if len(distinct) == limit:
                    break
    return list(distinct)


def cmd_content_export(args: argparse.Namespace) -> int:
    require_train_extra("the export", ("torch", "onnx", "transformers"))
    from stream_app_train.content_export import PARITY_TITLES, export_content

    from ..serving.registry import require_writable
    from ..serving.text_encoder import TextEncoder

    registry_dir = args.registry or Settings.from_env().registry_dir
    require_writable(registry_dir)  # before the model is loaded: a registry that is a file was a traceback after it
    try:
        manifest = export_content(args.model_dir, registry_dir, args.max_length)
    except ValueError as exc:
        raise StreamAppError(str(exc)) from None
    except OSError as exc:  # transformers' "no file named model.safetensors ...": a traceback
        raise StreamAppError(f"cannot load the model in {args.model_dir}: {exc}; give a sentence-transformers folder "
                             "with its weights and tokenizer files, or leave --model-dir out") from None
    speed = _titles_per_second(TextEncoder.load(registry_dir, manifest["version"]), list(PARITY_TITLES) * 32, 64)
    print(manifest["version"])
    print(f"{manifest['base_model']}: dim {manifest['dim']}, up to {manifest['max_length']} tokens; parity with torch "
          f"{manifest['parity']['max_abs_diff']:.1e} (max abs difference on {manifest['parity']['titles']} titles); "
          f"{speed:,.0f} titles/s on them (1 thread, batch 64); registry {registry_dir}")
    return 0


def cmd_content_embed(args: argparse.Namespace) -> int:
    registry_dir = args.registry or Settings.from_env().registry_dir
    encoder = _load_text_encoder(registry_dir, args.version)
    vectors = encoder.embed(args.texts)
    cosine = vectors @ vectors.T
    print(f"{encoder.version}: dim {encoder.dim}")
    for row, text in enumerate(args.texts):
        others = [col for col in (-cosine[row]).argsort() if col != row][:5]
        nearest = ", ".join(f"{args.texts[col]!r} {cosine[row, col]:.3f}" for col in others)
        print(f"{text!r} (norm {float((vectors[row] ** 2).sum()) ** 0.5:.4f}): {nearest or 'no other text'}")
    return 0


def cmd_content_bench(args: argparse.Namespace) -> int:
    registry_dir = args.registry or Settings.from_env().registry_dir
    titles = _read_titles(args.file, args.column, args.limit)  # a wrong file is said before a model loads
    encoder = _load_text_encoder(registry_dir, args.version)
    for batch_size in args.batch_size:
        speed = _titles_per_second(encoder, titles, batch_size)
        print(f"{encoder.version}: {speed:,.0f} titles/s over {len(titles):,} distinct texts of {args.file} "
              f"(1 thread, batch {batch_size})")
    if args.scan_items:
        from ..tools.content_scan import time_scans

        print(time_scans(args.scan_items, encoder.dim).line())
    return 0
