"""`stream-app`: the command line. Each command reads the settings once and passes them down."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import Settings
from .errors import StreamAppError
from .logs import FORMATS


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
    from . import runtime

    record = runtime.up()
    print(f"KAFKA_BOOTSTRAP_SERVERS={record['KAFKA_BOOTSTRAP_SERVERS']}")
    print(f"REDIS_URL={record['REDIS_URL']}")
    print("embedded broker and Redis are running; `stream-app down` stops them", file=sys.stderr)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from . import runtime

    print("stopped the embedded broker and Redis" if runtime.down() else "nothing was running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import redis

    from .redis_store import worker_statuses

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
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .runtime import free_port
    from .topics import ensure_topics
    from .worker import run_worker

    settings = Settings.from_env()
    partitions = ensure_topics(settings)
    run_worker(settings, partitions, args.web_port or free_port(), args.loglevel)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import replay

    summary = replay(Settings.from_env(), args.file, args.format, args.rate)
    print("\n".join(summary.lines()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.file, args.format, args.rate, args.timeout)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    return run_bench(args.events, args.users, args.items, args.timeout, args.rate)


def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import SynthConfig, write

    summary = write(SynthConfig(events=args.events, seed=args.seed, days=args.days), args.out, sys.stderr)
    print(f"wrote {summary['events']:,} events ({', '.join(f'{n:,} {t}' for t, n in sorted(summary['by_type'].items()))}) "
          f"of {summary['users']:,} users over {summary['items']:,} items to {summary['log']}")
    print(f"ground truth: {summary['truth']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_log, evaluate_via_kafka, table, via_kafka_table
    from .report import render
    from .synth import truth_path

    if args.via_kafka:
        result = evaluate_via_kafka(args.log, args.format, args.k, args.rate)
        print(via_kafka_table(result))
        _write_json(result, args.json, f"evaluation-via-kafka-{Path(args.log).stem}.json")
        return 0

    truth = args.truth
    if truth is None and truth_path(args.log).is_file():
        truth = truth_path(args.log)
    settings = Settings.from_env()
    if args.batch:
        settings = settings.replace(batch_max=args.batch)
    result = evaluate_log(args.log, args.format, settings, args.k, truth)
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
    d = sub.add_parser("demo", help="up + one worker + replay of the bundled OTTO sample + a summary")
    d.add_argument("--file", default=None, help="replay this log instead of the bundled sample")
    d.add_argument("--format", default="otto", choices=FORMATS)
    d.add_argument("--rate", type=_rate, default=300.0,
                   help="events per second (default 300: a live stream, so item state flows between events)")
    d.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for all recommendations")
    d.set_defaults(fn=cmd_demo)
    sy = sub.add_parser("synth", help="write a synthetic event log with ground truth")
    sy.add_argument("out", help="the log to write (jsonl); the ground truth goes beside it")
    sy.add_argument("--events", type=int, default=100_000)
    sy.add_argument("--seed", type=int, default=7)
    sy.add_argument("--days", type=int, default=28)
    sy.set_defaults(fn=cmd_synth)
    ev = sub.add_parser("evaluate", help="prequential evaluation of a recorded log, with baselines")
    ev.add_argument("log")
    ev.add_argument("--format", default="jsonl", choices=FORMATS)
    ev.add_argument("--k", type=int, default=20)
    ev.add_argument("--batch", type=int, default=0, help="events per batch (default: the workers' batch size)")
    ev.add_argument("--truth", default=None, help="ground truth (default: <log>.truth.json when present)")
    ev.add_argument("--json", default=None, help="where to write the full results (default: reports/)")
    ev.add_argument("--html", default=None, help="where to write the HTML report (default: reports/)")
    ev.add_argument("--via-kafka", action="store_true",
                    help="replay through a real worker and score the recommendations topic, beside in-process")
    ev.add_argument("--rate", type=float, default=300.0, help="with --via-kafka: replay rate, events/s")
    ev.set_defaults(fn=cmd_evaluate)
    b = sub.add_parser("bench", help="end-to-end Kafka path: events/s and event->recommendation latency")
    b.add_argument("--events", type=int, default=50_000)
    b.add_argument("--users", type=int, default=5_000)
    b.add_argument("--items", type=int, default=20_000)
    b.add_argument("--rate", type=_rate, default=None,
                   help="events per second to offer (default: as fast as possible, for throughput)")
    b.add_argument("--timeout", type=float, default=600.0)
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


if __name__ == "__main__":
    sys.exit(main())
