"""`stream-app`: the command line. Each command reads the settings once and passes them down."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..config import Settings
from ..errors import StreamAppError
from ..tools.catalogue import FORMATS as CATALOGUE_FORMATS
from ..tools.recorded import FORMATS


def _rate(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rate takes events per second or 'max', not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("--rate must be above 0 (or 'max')")
    return value


def cmd_up(args: argparse.Namespace) -> int:
    from ..tools import embedded

    record = embedded.up()
    print(f"KAFKA_BOOTSTRAP_SERVERS={record['KAFKA_BOOTSTRAP_SERVERS']}")
    print(f"REDIS_URL={record['REDIS_URL']}")
    print("embedded broker and Redis are running; `stream-app down` stops them", file=sys.stderr)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from ..tools import embedded

    print("stopped the embedded broker and Redis" if embedded.down() else "nothing was running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import redis

    from ..store.redis_store import worker_statuses

    settings = Settings.from_env()
    print(f"KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers or '(not set)'}")
    print(f"REDIS_URL={settings.redis_url or '(not set)'}")
    client = redis.Redis.from_url(settings.require_redis(), socket_connect_timeout=2)
    try:
        statuses = worker_statuses(client, settings.namespace)
    except redis.RedisError as exc:
        raise StreamAppError(f"Redis at {settings.redis_url} does not answer ({exc}); "
                             "is `stream-app up` running?") from exc
    finally:
        client.close()
    if not statuses:
        print("no live workers (start one with `stream-app worker`)")
    for s in statuses:
        c = s["counters"]
        print(f"worker {s['worker_id']}: {'ready' if s['ready'] else 'starting'}, partitions "
              f"{s['input_partitions']}, events {c['events']} (applied {c['applied']}, duplicates "
              f"{c['duplicates']}, rejected {c['rejected']}), recommendations {c['recommendations']}")
        models = s.get("models") or {}
        line = f"  encoder live {models.get('live') or 'none'}"
        if c.get("live_judged"):
            line += f" (next event in the list {c['live_hits'] / c['live_judged']:.1%} of {c['live_judged']})"
        if models.get("shadow"):
            rate = f"{c['shadow_hits'] / c['shadow_judged']:.1%}" if c.get("shadow_judged") else "n/a"
            line += f", shadow {models['shadow']} (would have hit {rate}, not published)"
        for role, error in (models.get("errors") or {}).items():
            line += f"; {role} error: {error}"
        print(line)
        o = s.get("ordering")
        if o:
            print(f"  event time: read {o['read']} inputs (all partitions), {o['buffered']} waiting for their turn, "
                  f"{o['owned_pending']} of its own scheduled; item state through epoch {o['item_epoch_applied']}; "
                  f"late: {c.get('late', 0)} older than their user's last event, {o['late_in_partition']} older "
                  f"than their partition's clock, {o['late_for_item_state']} after their item epoch was applied")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from ..stream.topics import ensure_topics
    from ..stream.worker import run_worker
    from ..tools.embedded import free_port

    settings = Settings.from_env()
    partitions = ensure_topics(settings)
    run_worker(settings, partitions, args.web_port or free_port(), args.loglevel)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from ..tools.replay import replay

    summary = replay(Settings.from_env(), args.file, args.format, args.rate)
    print("\n".join(summary.lines()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..tools.demo import run_demo

    return run_demo(args.file, args.format, args.rate, args.timeout, args.items, args.items_format)


def cmd_bench(args: argparse.Namespace) -> int:
    from ..tools.bench import run_bench

    return run_bench(args.events, args.users, args.items, args.timeout, args.rate, args.encoder)


def cmd_synth(args: argparse.Namespace) -> int:
    from ..tools.synth import SynthConfig, write

    summary = write(SynthConfig(events=args.events, seed=args.seed, days=args.days, no_repeat=args.no_repeat),
                    args.out, sys.stderr)
    print(f"wrote {summary['events']:,} events ({', '.join(f'{n:,} {t}' for t, n in sorted(summary['by_type'].items()))}) "
          f"of {summary['users']:,} users over {summary['items']:,} items to {summary['log']}")
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
    return Encoder.load(settings.registry_dir, version)


def cmd_train(args: argparse.Namespace) -> int:
    try:
        from stream_app_train.train import TrainConfig, train
    except ImportError as exc:
        raise StreamAppError(f"training needs PyTorch ({exc}): install the train extra, "
                             "`.venv/bin/pip install -e '.[train]'`") from None
    from ..stream import model_control

    settings = Settings.from_env()
    registry_dir = args.registry or settings.registry_dir
    config = TrainConfig(dim=args.dim, hidden=args.hidden, max_len=args.max_len, epochs=args.epochs,
                         train_fraction=args.train_fraction, seed=args.seed)
    try:
        manifest = train(args.log, args.format, registry_dir, config,
                         progress=lambda line: print(line, file=sys.stderr))
    except ValueError as exc:
        raise StreamAppError(str(exc)) from None
    print(f"trained {manifest['version']} in {manifest['training']['seconds']:.1f}s: validation "
          f"Recall@20 {manifest['validation']['recall@20']:.4f}, MRR@20 {manifest['validation']['mrr@20']:.4f} "
          f"({manifest['validation']['examples']:,} examples); registry {registry_dir}")
    if args.publish:
        role = "shadow" if args.shadow else "live"
        model_control.publish(settings.replace(registry_dir=registry_dir), role, manifest["version"])
        print(f"published {manifest['version']} as {role} on {settings.topics.model_control}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..serving import registry
    from ..stream import model_control

    settings = Settings.from_env()
    if args.registry:
        settings = settings.replace(registry_dir=args.registry)
    if args.action == "list":
        found = registry.versions(settings.registry_dir)
        if not found:
            print(f"no models in {settings.registry_dir} (train one with `stream-app train LOG`)")
        for m in found:
            if registry.kind_of(m) == "content":
                print(f"{m['version']}  {m['created_at']}  content: {m['base_model']}, dim {m['dim']}, up to "
                      f"{m['max_length']} tokens, parity with torch {m['parity']['max_abs_diff']:.1e}")
                continue
            print(f"{m['version']}  {m['created_at']}  dim {m['dims']['embedding']}, {m['dims']['items']:,} items, "
                  f"validation Recall@20 {m['validation']['recall@20']:.4f} MRR@20 {m['validation']['mrr@20']:.4f}, "
                  f"trained on {m['training']['events']:,} events of {m['training']['log']}")
        return 0
    role = "content" if args.content else "shadow" if args.shadow else "live"
    version = None
    if args.action == "publish":
        if not args.version:
            raise StreamAppError("`models publish` needs a VERSION (or `latest`); `stream-app models list` shows them")
        kind = "content" if role == "content" else "sequence"
        version = registry.latest(settings.registry_dir, kind) if args.version == "latest" else args.version
        if version is None:
            raise StreamAppError(f"the registry {settings.registry_dir} holds no model to publish")
    model_control.publish(settings, role, version)
    print(f"{role}: {version or 'none'} (announced on {settings.topics.model_control})")
    return 0


def _load_content(settings: Settings, items: str | None, fmt: str, version: str):
    """The catalogue file's text vectors under a content model of the registry (None without --items)."""
    if items is None:
        return None
    from ..core.content import item_text
    from ..stream.catalogue_feed import index_catalogue
    from ..tools.catalogue import load_catalogue

    catalogue, rejected = load_catalogue(items, fmt)
    if rejected:
        print(f"{items}: {len(rejected)} catalogue records rejected, e.g. {rejected[0].rejection.detail}")
    model = _load_text_encoder(settings.registry_dir, None if version == "latest" else version)
    started = time.monotonic()
    index = index_catalogue(model, {item_id: item_text(record) for item_id, record in catalogue.items()})
    print(f"content: {len(index):,} items and {len(index.terms):,} terms embedded by {model.version} "
          f"in {time.monotonic() - started:.1f}s")
    return index


def cmd_items(args: argparse.Namespace) -> int:
    from ..tools.catalogue import load_items

    summary = load_items(Settings.from_env(), args.file, args.format)
    print("\n".join(summary.lines()))
    return 0


def _load_text_encoder(registry_dir: str, version: str | None):
    from ..serving.registry import latest
    from ..serving.text_encoder import TextEncoder

    version = version or latest(registry_dir, kind="content")
    if version is None:
        raise StreamAppError(f"the registry {registry_dir} holds no content model; export one with "
                             f"`stream-app content export --registry {registry_dir}`")
    return TextEncoder.load(registry_dir, version)


def _titles_per_second(encoder, titles: list[str], batch_size: int) -> float:
    encoder.embed(titles[:batch_size], batch_size)  # warm-up: onnxruntime plans its first shapes
    start = time.perf_counter()
    encoder.embed(titles, batch_size)
    return len(titles) / (time.perf_counter() - start)


def _read_titles(path: str, column: str, limit: int) -> list[str]:
    """The first `limit` distinct non-empty texts of a file: one a line (.txt), or a CSV column."""
    import csv
    import gzip

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
    try:
        from stream_app_train.content_export import PARITY_TITLES, export_content
    except ImportError as exc:
        raise StreamAppError(f"the export needs PyTorch and transformers ({exc}): install the train extra, "
                             "`.venv/bin/pip install -e '.[train]'`") from None
    from ..serving.text_encoder import TextEncoder

    registry_dir = args.registry or Settings.from_env().registry_dir
    try:
        manifest = export_content(args.model_dir, registry_dir, args.max_length)
    except ValueError as exc:
        raise StreamAppError(str(exc)) from None
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
    encoder = _load_text_encoder(registry_dir, args.version)
    titles = _read_titles(args.file, args.column, args.limit)
    for batch_size in args.batch_size:
        speed = _titles_per_second(encoder, titles, batch_size)
        print(f"{encoder.version}: {speed:,.0f} titles/s over {len(titles):,} distinct texts of {args.file} "
              f"(1 thread, batch {batch_size})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluate.prequential import evaluate_log
    from ..evaluate.report import render
    from ..evaluate.tables import table, via_kafka_table
    from ..evaluate.via_kafka import evaluate_via_kafka
    from ..tools.synth import truth_path

    if args.via_kafka:
        settings = Settings.from_env()
        if args.registry:
            settings = settings.replace(registry_dir=args.registry)
        content = _load_content(settings, args.items, args.items_format, args.content)
        result = evaluate_via_kafka(args.log, args.format, args.k, args.rate, workers=args.workers,
                                    max_idle_ms=args.max_idle_ms, busy=args.busy, limit=args.limit,
                                    timeout=args.timeout, items=(args.items, args.items_format) if content else None,
                                    content=content, registry_dir=settings.registry_dir)
        print(via_kafka_table(result))
        _write_json(result, args.json, f"evaluation-via-kafka-{Path(args.log).stem}.json")
        return 0

    truth = args.truth
    if truth is None and truth_path(args.log).is_file():
        truth = truth_path(args.log)
    settings = Settings.from_env()
    if args.batch:
        settings = settings.replace(batch_max=args.batch)
    if args.registry:
        settings = settings.replace(registry_dir=args.registry)
    result = evaluate_log(args.log, args.format, settings, args.k, truth, encoder=_load_encoder(settings, args.encoder),
                          shadow=_load_encoder(settings, args.shadow), limit=args.limit,
                          content=_load_content(settings, args.items, args.items_format, args.content),
                          light=args.light)
    print(table(result))
    _write_json(result, args.json, f"evaluation-{Path(args.log).stem}.json")
    page = Path(args.html) if args.html else Path("reports") / f"evaluation-{Path(args.log).stem}.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(render(result))
    print(f"report: {page}")
    return 0


def _write_json(result: dict, path: str | None, default_name: str) -> None:
    import orjson

    out = Path(path) if path else Path("reports") / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"\nfull results: {out}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stream-app", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the embedded broker and Redis; print their addresses").set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop what `up` started").set_defaults(fn=cmd_down)
    sub.add_parser("status", help="the endpoints in use and the live workers").set_defaults(fn=cmd_status)
    w = sub.add_parser("worker", help="run one stream worker (several share the partitions)")
    w.add_argument("--web-port", type=int, default=0, help="Faust's web port (default: a free one)")
    w.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info", "debug"])
    w.set_defaults(fn=cmd_worker)
    r = sub.add_parser("replay", help="produce a recorded log to the input topics in timestamp order")
    r.add_argument("file")
    r.add_argument("--format", required=True, choices=FORMATS)
    r.add_argument("--rate", type=_rate, default=None, help="events per second, or 'max' (default)")
    r.set_defaults(fn=cmd_replay)
    d = sub.add_parser("demo", help="up + one worker + replay of the bundled Online Retail sample + a summary")
    d.add_argument("--file", default=None, help="replay this log instead of the bundled sample")
    d.add_argument("--format", default=None, choices=FORMATS, help="of --file (default jsonl)")
    d.add_argument("--items", default=None, help="with --file: its item catalogue (titles: item text in profiles)")
    d.add_argument("--items-format", default="jsonl", choices=CATALOGUE_FORMATS)
    d.add_argument("--rate", type=_rate, default=300.0,
                   help="events per second (default 300: a live stream, so item state flows between events)")
    d.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for all recommendations")
    d.set_defaults(fn=cmd_demo)
    sy = sub.add_parser("synth", help="write a synthetic event log with ground truth")
    sy.add_argument("out", help="the log to write (jsonl); the ground truth goes beside it")
    sy.add_argument("--events", type=int, default=100_000)
    sy.add_argument("--seed", type=int, default=7)
    sy.add_argument("--days", type=int, default=28)
    sy.add_argument("--no-repeat", action="store_true", help="a user never interacts twice with one item")
    sy.set_defaults(fn=cmd_synth)
    ev = sub.add_parser("evaluate", help="prequential evaluation of a recorded log, with baselines")
    ev.add_argument("log")
    ev.add_argument("--format", default="jsonl", choices=FORMATS)
    ev.add_argument("--k", type=int, default=20)
    ev.add_argument("--limit", type=int, default=None, help="only the log's first N events in time")
    ev.add_argument("--batch", type=int, default=0, help="events per batch (default: the workers' batch size)")
    ev.add_argument("--truth", default=None, help="ground truth (default: <log>.truth.json when present)")
    ev.add_argument("--json", default=None, help="where to write the full results (default: reports/)")
    ev.add_argument("--html", default=None, help="where to write the HTML report (default: reports/)")
    ev.add_argument("--via-kafka", action="store_true",
                    help="replay through a real worker and score the recommendations topic, beside in-process")
    ev.add_argument("--rate", type=_rate, default=None,
                    help="with --via-kafka: replay rate, events/s, or 'max' (default)")
    ev.add_argument("--workers", type=int, default=1, help="with --via-kafka: how many workers (default 1)")
    ev.add_argument("--max-idle-ms", type=int, default=2000,
                    help="with --via-kafka: the workers' STREAM_APP_MAX_IDLE_MS (default 2000)")
    ev.add_argument("--busy", action="store_true", help="with --via-kafka: a CPU-bound process runs beside the workers")
    ev.add_argument("--timeout", type=float, default=900.0,
                    help="with --via-kafka: seconds to wait for the workers to take the whole log (default 900)")
    ev.add_argument("--encoder", default=None, help="a registry version (or `latest`) to run as the live encoder")
    ev.add_argument("--shadow", default=None, help="a second registry version, scored beside the live one")
    ev.add_argument("--registry", default=None, help="the registry folder (default: STREAM_APP_REGISTRY_DIR)")
    ev.add_argument("--items", default=None,
                    help="an item catalogue: the stream-app rows use its text (content model), beside a no-content row")
    ev.add_argument("--items-format", default="jsonl", choices=CATALOGUE_FORMATS)
    ev.add_argument("--content", default="latest", help="with --items: the content model version (default: latest)")
    ev.add_argument("--light", action="store_true",
                    help="only the stream-app rows, content and sequential rules alone, and the sequential-rules "
                         "baseline (for long logs)")
    ev.set_defaults(fn=cmd_evaluate)
    it = sub.add_parser("items", help="the item catalogue: load a file to the items topic")
    it.add_argument("action", choices=["load"])
    it.add_argument("file")
    it.add_argument("--format", default="jsonl", choices=CATALOGUE_FORMATS)
    it.set_defaults(fn=cmd_items)
    t = sub.add_parser("train", help="train the sequence encoder on a log, export to ONNX, register it")
    t.add_argument("log")
    t.add_argument("--format", default="jsonl", choices=FORMATS)
    t.add_argument("--registry", default=None, help="the registry folder (default: STREAM_APP_REGISTRY_DIR)")
    t.add_argument("--epochs", type=int, default=4)
    t.add_argument("--dim", type=int, default=32, help="embedding size")
    t.add_argument("--hidden", type=int, default=64, help="GRU state size")
    t.add_argument("--max-len", type=int, default=20, help="recent events the encoder reads")
    t.add_argument("--train-fraction", type=float, default=0.8, help="of the log's time span, for training")
    t.add_argument("--seed", type=int, default=7)
    t.add_argument("--publish", action="store_true", help="announce the new version to the workers")
    t.add_argument("--shadow", action="store_true", help="with --publish: as the shadow, not the live model")
    t.set_defaults(fn=cmd_train)
    m = sub.add_parser("models", help="the model registry: list versions, publish one to the workers")
    m.add_argument("action", choices=["list", "publish", "withdraw"])
    m.add_argument("version", nargs="?", help="with publish: a version, or `latest`")
    m.add_argument("--shadow", action="store_true", help="publish/withdraw the shadow instead of the live model")
    m.add_argument("--content", action="store_true",
                   help="publish/withdraw the content model (item text encoder) instead of the live model")
    m.add_argument("--registry", default=None, help="the registry folder (default: STREAM_APP_REGISTRY_DIR)")
    m.set_defaults(fn=cmd_models)
    c = sub.add_parser("content", help="the item-text encoder: export a pre-trained one, embed texts, measure it")
    content = c.add_subparsers(dest="action", required=True)
    ce = content.add_parser("export", help="export a sentence encoder to ONNX as a registry version (train extra)")
    ce.add_argument("--model-dir", default=None,
                    help="a sentence-transformers model folder or zip (default: all-MiniLM-L6-v2 from its package)")
    ce.add_argument("--registry", default=None, help="the registry folder (default: STREAM_APP_REGISTRY_DIR)")
    ce.add_argument("--max-length", type=int, default=None,
                    help="tokens read per text (default: the model's max_seq_length, else 256)")
    ce.set_defaults(fn=cmd_content_export)
    cm = content.add_parser("embed", help="embed texts; print each one's nearest others by cosine")
    cm.add_argument("texts", nargs="+", metavar="TEXT")
    cm.add_argument("--version", default=None, help="a content version (default: the latest)")
    cm.add_argument("--registry", default=None, help="the registry folder (default: STREAM_APP_REGISTRY_DIR)")
    cm.set_defaults(fn=cmd_content_embed)
    cb = content.add_parser("bench", help="titles/s of the content encoder on a file of texts")
    cb.add_argument("file", help="texts one a line, or a CSV (.csv, .csv.gz) with a column of them")
    cb.add_argument("--column", default="Description", help="the CSV's text column (default: Description)")
    cb.add_argument("--limit", type=int, default=2000, help="distinct texts to embed (default 2000)")
    cb.add_argument("--batch-size", type=int, nargs="+", default=[64, 256])
    cb.add_argument("--version", default=None, help="a content version (default: the latest)")
    cb.add_argument("--registry", default=None, help="the registry folder (default: STREAM_APP_REGISTRY_DIR)")
    cb.set_defaults(fn=cmd_content_bench)
    b = sub.add_parser("bench", help="end-to-end Kafka path: events/s and event->recommendation latency")
    b.add_argument("--events", type=int, default=50_000)
    b.add_argument("--users", type=int, default=5_000)
    b.add_argument("--items", type=int, default=20_000)
    b.add_argument("--rate", type=_rate, default=None,
                   help="events per second to offer (default: as fast as possible, for throughput)")
    b.add_argument("--timeout", type=float, default=600.0)
    b.add_argument("--encoder", action="store_true",
                   help="train a sequence encoder on the bench events first and run with it live (train extra)")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except StreamAppError as exc:
        print(f"stream-app {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

