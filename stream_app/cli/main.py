"""`stream-app`: the command line. Each command reads the settings once and passes them down."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import signal
import sys
from typing import Any

from .. import __version__
from ..errors import StreamAppError
from ..tools.catalogue import FORMATS as CATALOGUE_FORMATS
from ..tools.recorded import FORMATS
from ..tools.sorted_log import RUN_EVENTS
from . import arg_types as arg
from .commands import (
    cmd_bench,
    cmd_chaos,
    cmd_content_bench,
    cmd_content_embed,
    cmd_content_export,
    cmd_demo,
    cmd_down,
    cmd_erase,
    cmd_repair_redis,
    cmd_replay,
    cmd_serve,
    cmd_synth,
    cmd_up,
    cmd_worker,
)
from .evaluate_command import cmd_evaluate
from .kafka_errors import CONNECTION_WARNINGS, check_brokers_resolve, kafka_unreachable
from .model_commands import cmd_items, cmd_models, cmd_train
from .profile_command import cmd_profile
from .status_command import cmd_status
from .terminal import escaping_terminal
from .topic_commands import cmd_dead_letters, cmd_erasure_receipts, cmd_recommendations, cmd_redrive

KEEP_HELP = ("keep the run's folder under the state directory (worker and service logs, the registry copy); "
             "removed by default when the run ends well, kept when it fails")

class CommandParser(argparse.ArgumentParser):
    """A command's parser: an argument it does not take is said with the command's own usage and the closest option
    it has (the top-level parser said it, with the usage of every command)."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extra = super().parse_known_args(args, namespace)
        if extra:
            options = [option for action in self._actions for option in action.option_strings]
            close = difflib.get_close_matches(extra[0].split("=", 1)[0], options, n=1) if extra[0][:1] == "-" else []
            self.error(f"unrecognized arguments: {' '.join(extra)}" + (f" (did you mean {close[0]}?)" if close else ""))
        return parsed, extra


def _command(sub: argparse._SubParsersAction, name: str, help: str, description: str | None = None,
             ) -> argparse.ArgumentParser:
    """A command whose own --help opens with what it does (argparse shows `help` only in the parent's list)."""
    return sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stream-app", description=(
        "A streaming, real-time user-profile updater for recommender systems: Kafka events in, profiles and "
        "recommendations out. Start with `stream-app demo`; `stream-app up` starts an embedded broker and Redis."))
    p.add_argument("--version", action="version", version=f"stream-app {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    add_service_commands(sub)
    add_evaluate_command(sub)
    add_model_commands(sub)
    add_content_commands(sub)
    add_bench_command(sub)
    add_chaos_command(sub)
    add_store_commands(sub)
    return p


def add_service_commands(sub: argparse._SubParsersAction) -> None:
    """up, down, status, worker, replay, demo, synth: the services, a worker, and logs to feed it."""
    _command(sub, "up", help="start the embedded broker and Redis; print their addresses", description=(
        "Start an embedded Kafka-protocol broker (Tansu) and Redis in the background, under the state directory "
        "(STREAM_APP_STATE_DIR), and print KAFKA_BOOTSTRAP_SERVERS and REDIS_URL. Every command finds them there; "
        "`stream-app down` stops them. The broker keeps its topics in memory: for topics that must outlive it, run "
        "Apache Kafka (docker-compose.yml) and set KAFKA_BOOTSTRAP_SERVERS and REDIS_URL instead.")
    ).set_defaults(fn=cmd_up)
    _command(sub, "down", help="stop what `up` started", description=(
        "Stop the embedded broker and Redis that `stream-app up` started (their topics and keys are gone), naming "
        "the workers still running against them.")).set_defaults(fn=cmd_down)
    _command(sub, "status", help="the endpoints in use and the live workers", description=(
        "The broker (and whether it takes connections), Redis and the Kafka security in use, and each live worker "
        "of the namespace: ready or what it waits for, its partitions, events applied, duplicate and rejected, "
        "recommendations, models and event-time progress.")).set_defaults(fn=cmd_status)
    w = _command(sub, "worker", help="run one stream worker (several share the partitions)")
    w.add_argument("--web-port", type=arg.port, default=0,
                   help="the HTTP port of /metrics, /healthz and /readyz (default: a free one, printed at start)")
    w.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info", "debug"],
                   help="the worker's log level (default warn)")
    w.set_defaults(fn=cmd_worker)
    r = _command(sub, "replay", help="produce a recorded log to the input topics in timestamp order")
    r.add_argument("file")
    r.add_argument("--format", default="jsonl", choices=FORMATS, help="the log's format (default jsonl, as evaluate)")
    r.add_argument("--rate", type=arg.rate, default=None, help="events per second, or 'max' (default)")
    r.add_argument("--limit", type=arg.count, default=None, help="only the log's first N events in time")
    r.add_argument("--sort-in-memory", type=arg.count, default=RUN_EVENTS, metavar="N",
                   help=f"events sorted in memory at once (default {RUN_EVENTS:,}, about 0.4 GB); a longer log is "
                        "sorted in runs of N written to the temporary folder (TMPDIR) and merged as it is sent")
    r.set_defaults(fn=cmd_replay)
    d = _command(sub, "demo", help="up + one worker + replay of the bundled Online Retail sample + a summary")
    d.add_argument("--file", default=None, help="replay this log instead of the bundled sample")
    d.add_argument("--format", default=None, choices=FORMATS, help="of --file (default jsonl)")
    d.add_argument("--items", default=None, help="with --file: its item catalogue (titles: item text in profiles)")
    d.add_argument("--items-format", default=None, choices=CATALOGUE_FORMATS, help="of --items (default jsonl)")
    d.add_argument("--rate", type=arg.rate, default=300.0,
                   help="events per second, or 'max' (default 300: a live stream, so item state flows between events)")
    d.add_argument("--timeout", type=arg.wait_seconds, default=120.0,
                   help="seconds to wait for all recommendations (default 120)")
    d.add_argument("--keep", action="store_true", help=KEEP_HELP)
    d.set_defaults(fn=cmd_demo)
    sy = _command(sub, "synth", help="write a synthetic event log with ground truth")
    sy.add_argument("out", help="the log to write (jsonl); the ground truth goes beside it")
    sy.add_argument("--events", type=arg.count, default=100_000,
                    help="about how many events (default 100,000; users leave when the days run out: the summary "
                         "gives the count)")
    sy.add_argument("--seed", type=arg.seed, default=7,
                    help="the random seed (default 7); user and event ids do not depend on it, so logs of two seeds share "
                         "ids: replay each into empty topics (another STREAM_APP_NAMESPACE), not one after the other")
    sy.add_argument("--days", type=arg.synth_days, default=28, help="the span of event time the log covers (default 28)")
    sy.add_argument("--no-repeat", action="store_true", help="a user never interacts twice with one item")
    sy.set_defaults(fn=cmd_synth)


def add_evaluate_command(sub: argparse._SubParsersAction) -> None:
    """evaluate: a recorded log, in process beside baselines, or through real workers."""
    ev = _command(sub, "evaluate", help="prequential evaluation of a recorded log, with baselines")
    ev.add_argument("log")
    ev.add_argument("--format", default="jsonl", choices=FORMATS, help="the log's format (default jsonl)")
    ev.add_argument("--k", type=arg.count, default=20, help="the length of a judged list: Recall@K, MRR@K (default 20)")
    ev.add_argument("--limit", type=arg.count, default=None, help="only the log's first N events in time")
    ev.add_argument("--judge-from", type=arg.fraction, default=None, metavar="SHARE",
                    help="judge only the events from this share of the log's time span on (0.5: its second half, a "
                         "time split); every model still learns from every event")
    ev.add_argument("--batch", type=arg.count, default=None, help="events per batch (default: the workers' batch size)")
    ev.add_argument("--sort-in-memory", type=arg.count, default=None, metavar="N",
                    help=f"as replay's (default {RUN_EVENTS:,}): a longer log is sorted in runs of N on disk, and the "
                         "pass holds one item epoch of it, not the log")
    ev.add_argument("--truth", default=None, help="ground truth (default: <log>.truth.json when present)")
    ev.add_argument("--json", default=None, help="where to write the full results (default: reports/)")
    ev.add_argument("--html", default=None, help="where to write the HTML report (default: reports/)")
    ev.add_argument("--via-kafka", action="store_true",
                    help="replay through a real worker and score the recommendations topic, beside in-process")
    ev.add_argument("--rate", type=arg.rate, default=argparse.SUPPRESS,
                    help="with --via-kafka: replay rate, events/s, or 'max' (default)")
    ev.add_argument("--workers", type=arg.count, default=argparse.SUPPRESS,
                    help="with --via-kafka: how many workers (default 1)")
    ev.add_argument("--max-idle-ms", type=arg.at_least(0), default=argparse.SUPPRESS,
                    help="with --via-kafka: the workers' STREAM_APP_MAX_IDLE_MS (default 2000)")
    ev.add_argument("--busy", action="store_true", default=argparse.SUPPRESS,
                    help="with --via-kafka: a CPU-bound process runs beside the workers")
    ev.add_argument("--timeout", type=arg.wait_seconds, default=argparse.SUPPRESS,
                    help="with --via-kafka: seconds to wait for the workers to take the whole log (default 900)")
    ev.add_argument("--encoder", default=None, help="a registry version (or `latest`) to run as the live encoder")
    ev.add_argument("--shadow", default=None, help="a second registry version, scored beside the live one")
    ev.add_argument("--registry", default=None, help="the registry folder (default: STREAM_APP_REGISTRY_DIR)")
    ev.add_argument("--items", default=None,
                    help="an item catalogue: the stream-app rows use its text (content model), beside a no-content row")
    ev.add_argument("--items-format", default=argparse.SUPPRESS, choices=CATALOGUE_FORMATS,
                    help="of --items (default jsonl)")
    ev.add_argument("--content", default=argparse.SUPPRESS,
                    help="with --items: the content model version (default: latest)")
    ev.add_argument("--light", action="store_true",
                    help="only the stream-app rows, content and sequential rules alone, the sequential-rules "
                         "baseline (also without the session's items), V-SKNN (IDF, without the session's items) "
                         "and, with --items, sequential rules then similar text (for long logs)")
    ev.add_argument("--no-variants", action="store_true",
                    help="leave out the stream-app row's variants (drift handling, ranker and exploration toggled, "
                         "no content, River only): each is a whole hybrid, most of a long log's full pass, and none "
                         "is a baseline; every other row's figures stay the same")
    ev.add_argument("--tune-baselines", type=arg.events_share, default=None, metavar="SHARE",
                    help="first choose each baseline's main parameters (kNN neighbours and sample, rules' steps, "
                         "co-visitation's recent items) by Recall@K on the log's first SHARE of events (0.2: its "
                         "first fifth), then run the baselines with them; the stream-app rows are never tuned. Costs a "
                         "second reading of the log and each kNN row's time nine times over the share; the share is "
                         "judged again in the whole pass, which can favour the tuned rows only")
    ev.add_argument("--processes", type=arg.count, default=None, metavar="N",
                    help="split the rows over N processes, each reading the log and running its share of the rows: "
                         "the same figures, in less time on a machine with N cores (each process holds its rows' "
                         "state and a copy of the item state; the stream-app row and its single sources stay in one, "
                         "so --light moves few rows); not with --encoder or --shadow")
    ev.add_argument("--no-baselines", action="store_true", default=argparse.SUPPRESS,
                    help="with --via-kafka: the in-process pass runs the stream-app row only (the baselines "
                         "cost most of a long log's time)")
    ev.add_argument("--keep", action="store_true", default=argparse.SUPPRESS, help="with --via-kafka: " + KEEP_HELP)
    ev.set_defaults(fn=cmd_evaluate)


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    """items, train, models: the catalogue and the sequence encoder's versions."""
    it = _command(sub, "items", help="the item catalogue: load a file to the items topic")
    it.add_argument("action", choices=["load"])
    it.add_argument("file")
    it.add_argument("--format", default="jsonl", choices=CATALOGUE_FORMATS, help="the file's format (default jsonl)")
    it.add_argument("--wait", type=arg.wait_seconds, default=None, metavar="SECONDS",
                    help="then wait up to SECONDS until every running worker makes its lists with it (its texts "
                         "embedded): replay the events that should see it only then")
    it.set_defaults(fn=cmd_items)
    t = _command(sub, "train", help="train the sequence encoder on a log, export to ONNX, register it")
    t.add_argument("log")
    t.add_argument("--format", default="jsonl", choices=FORMATS, help="the log's format (default jsonl)")
    t.add_argument("--limit", type=arg.count, default=None, help="only the log's first N events in time (as evaluate "
                                                                  "--limit reads them)")
    t.add_argument("--registry", default=None, help="the registry folder (default: STREAM_APP_REGISTRY_DIR)")
    t.add_argument("--epochs", type=arg.count, default=4, help="passes over the training events (default 4)")
    t.add_argument("--dim", type=arg.count, default=32, help="embedding size (default 32)")
    t.add_argument("--hidden", type=arg.count, default=64, help="GRU state size (default 64)")
    t.add_argument("--max-len", type=arg.count, default=20, help="recent events the encoder reads (default 20)")
    t.add_argument("--train-fraction", type=arg.fraction, default=0.8,
                   help="of the log's time span, for training; the rest validates (default 0.8)")
    t.add_argument("--seed", type=arg.seed, default=7, help="the random seed (default 7)")
    t.add_argument("--publish", action="store_true", help="announce the new version to the workers")
    t.add_argument("--shadow", action="store_true", help="with --publish: as the shadow, not the live model")
    t.set_defaults(fn=cmd_train)
    m = _command(sub, "models", help="the model registry: list versions, publish one to the workers, "
                                      "what each worker serves")
    m.add_argument("action", choices=["list", "publish", "withdraw", "status"],
                   help="status: each worker's last outcome per role, from the models.status topic")
    m.add_argument("version", nargs="?", help="with publish: a version, or `latest`; with withdraw: "
                                                "withdraw only if this one is published")
    m.add_argument("--shadow", action="store_true", help="publish/withdraw the shadow instead of the live model; "
                                                         "with list: only the sequence encoders (what it takes)")
    m.add_argument("--content", action="store_true",
                   help="publish/withdraw the content model (item text encoder) instead of the live model; with "
                        "list: only the content models")
    m.add_argument("--registry", default=None, help="the registry folder (default: STREAM_APP_REGISTRY_DIR)")
    m.add_argument("--all", action="store_true",
                   help="with status: also the workers no longer running (by default left out when Redis knows "
                        "which run)")
    m.set_defaults(fn=cmd_models)


def add_content_commands(sub: argparse._SubParsersAction) -> None:
    """content: the item-text encoder (export, embed, bench)."""
    c = _command(sub, "content", help="the item-text encoder: export a pre-trained one, embed texts, measure it")
    content = c.add_subparsers(dest="action", required=True)
    ce = _command(content, "export", help="export a sentence encoder to ONNX as a registry version (train extra)")
    ce.add_argument("--model-dir", default=None,
                    help="a sentence-transformers model folder or zip (default: all-MiniLM-L6-v2 from its package)")
    ce.add_argument("--registry", default=None, help="the registry folder (default: STREAM_APP_REGISTRY_DIR)")
    ce.add_argument("--max-length", type=arg.count, default=None,
                    help="tokens read per text (default: the model's max_seq_length, else 256)")
    ce.set_defaults(fn=cmd_content_export)
    cm = _command(content, "embed", help="embed texts; print each one's nearest others by cosine")
    cm.add_argument("texts", nargs="+", metavar="TEXT")
    cm.add_argument("--version", default=None, help="a content version (default: the latest)")
    cm.add_argument("--registry", default=None, help="the registry folder (default: STREAM_APP_REGISTRY_DIR)")
    cm.set_defaults(fn=cmd_content_embed)
    cb = _command(content, "bench", help="titles/s of the content encoder on a file of texts")
    cb.add_argument("file", help="texts one a line, or a CSV (.csv, .csv.gz) with a column of them")
    cb.add_argument("--column", default="Description", help="the CSV's text column (default: Description)")
    cb.add_argument("--limit", type=arg.count, default=2000, help="distinct texts to embed (default 2000)")
    cb.add_argument("--batch-size", type=arg.count, nargs="+", default=[64, 256],
                    help="texts per encoder call, each size timed in turn (default 64 256)")
    cb.add_argument("--version", default=None, help="a content version (default: the latest)")
    cb.add_argument("--registry", default=None, help="the registry folder (default: STREAM_APP_REGISTRY_DIR)")
    cb.add_argument("--scan-items", type=arg.count, default=None, metavar="N",
                    help="also time the content sources' catalogue scans at N items (random unit vectors of the "
                         "model's dimension): ms per event, ms per new item, MiB of vectors")
    cb.set_defaults(fn=cmd_content_bench)


def add_bench_command(sub: argparse._SubParsersAction) -> None:
    """bench: the end-to-end Kafka path."""
    b = _command(sub, "bench", help="end-to-end Kafka path: events/s and event->recommendation latency")
    b.add_argument("--events", type=arg.count, default=50_000, help="events to send (default 50,000)")
    b.add_argument("--users", type=arg.count, default=5_000, help="users they come from (default 5,000)")
    b.add_argument("--items", type=arg.count, default=20_000, help="items of the catalogue (default 20,000)")
    b.add_argument("--rate", type=arg.rate, default=None,
                   help="events per second to offer, or 'max' (default: as fast as possible, for throughput)")
    b.add_argument("--timeout", type=arg.wait_seconds, default=600.0,
                   help="seconds to wait for the recommendations of every event sent (default 600)")
    b.add_argument("--encoder", action="store_true",
                   help="train a sequence encoder on the bench events first and run with it live (train extra)")
    b.add_argument("--baseline", action="store_true",
                   help="first run a plain Faust app (parse, one table update, one send per event) on the same "
                        "events and print both rates and their ratio")
    b.add_argument("--rounds", type=arg.count, default=1, metavar="N",
                   help="with --baseline at full speed: run the plain app and stream-app N times each, which goes "
                        "first in the order ABBA (an even N gives each order as often), and print every round's "
                        "ratio and their median (default 1)")
    b.add_argument("--workers", type=arg.worker_counts, default=(1,), metavar="N[,N...]",
                   help="worker group sizes to run one after the other, e.g. 1,2,4 for a scale-out curve (default 1)")
    b.add_argument("--keep", action="store_true", help=KEEP_HELP)
    b.set_defaults(fn=cmd_bench)


def add_chaos_command(sub: argparse._SubParsersAction) -> None:
    """chaos: the fault guarantees, measured."""
    c = _command(sub, "chaos", help="replay events while workers crash, join and leave, Redis restarts and the "
                                     "broker pauses, with poison input; check nothing was lost or counted twice")
    c.add_argument("--events", type=arg.count, default=100_000, help="events to send (default 100,000)")
    c.add_argument("--users", type=arg.count, default=2_000, help="users they come from (default 2,000)")
    c.add_argument("--items", type=arg.count, default=4_000, help="items of the catalogue (default 4,000)")
    c.add_argument("--rate", type=arg.events_per_second, default=500.0, help="events per second to offer (default 500)")
    c.add_argument("--kill-every", type=float, nargs=2, default=(10.0, 30.0), metavar=("MIN_S", "MAX_S"),
                   help="seconds between SIGKILLs of a random worker, drawn uniformly (default 10 30)")
    c.add_argument("--poison-every", type=arg.count, default=500, help="one bad input per this many events (default 500)")
    c.add_argument("--seed", type=arg.seed, default=7, help="the random seed of kills, events and poison (default 7)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(fn=cmd_chaos)


def add_store_commands(sub: argparse._SubParsersAction) -> None:
    """profile, serve, erase, repair-redis: the profiles, for people and operators."""
    pr = _command(sub, "profile", help="one user's profile as Redis serves it, for a person to read")
    pr.add_argument("user_id", type=arg.user_id)
    pr.add_argument("--json", action="store_true", help="the stored record as JSON instead")
    pr.add_argument("--titles", action="store_true", help="show item titles from the items topic (reads it whole)")
    pr.set_defaults(fn=cmd_profile)
    rc = _command(sub, "recommendations", help="a user's last recommendations on the recommendations topic")
    rc.add_argument("user_id", type=arg.user_id)
    rc.add_argument("--last", type=arg.count, default=1, help="how many of the user's latest lists (default 1)")
    rc.add_argument("--json", action="store_true", help="the records as JSON, one a line")
    rc.add_argument("--titles", action="store_true", help="show item titles from the items topic (reads it whole)")
    rc.set_defaults(fn=cmd_recommendations)
    dl = _command(sub, "dead-letters", help="the last rejected inputs on the dead-letter topic, with their reasons")
    dl.add_argument("--last", type=arg.count, default=20, help="how many (default 20)")
    dl.add_argument("--json", action="store_true", help="the records as JSON, one a line")
    dl.set_defaults(fn=cmd_dead_letters)
    rd = _command(sub, "redrive", help="send dead letters of the reasons named back to their topics, once what "
                                        "refused them is fixed")
    rd.add_argument("--reason", action="append", metavar="REASON",
                    help="required: a dead letter's reason (repeatable), or all")
    rd.add_argument("--from-start", action="store_true",
                    help="read the dead-letter topic from its start, not from where earlier redrives of each reason "
                         "stopped (letters sent before are sent again)")
    rd.add_argument("--dry-run", action="store_true", help="count what would be sent; send nothing, mark nothing read")
    rd.add_argument("--json", action="store_true", help="print the summary as JSON")
    rd.set_defaults(fn=cmd_redrive)
    se = _command(sub, "serve", help="the profiles over HTTP from Redis: GET /profiles/USER[?min_version=N]")
    se.add_argument("--port", type=arg.port, default=8080, help="the port to listen on (default 8080)")
    se.add_argument("--host", default="127.0.0.1",
                    help="the address to listen on (default 127.0.0.1: profiles are personal data and the API has "
                         "no authentication; 0.0.0.0 in a container or behind a gateway)")
    se.set_defaults(fn=cmd_serve)
    er = _command(sub, "erase", help="erase users everywhere the workers keep them; print the workers' receipts")
    er.add_argument("users", nargs="+", metavar="USER",
                    help="user ids to erase: profile (table, changelog, profiles topic), Redis, learner state")
    er.set_defaults(fn=cmd_erase, reset=False)
    rs = _command(sub, "reset-profile", help="start users' profiles afresh (one a worker cannot read) without erasing "
                                             "them; print the workers' receipts", description=(
        "Delete the users' profiles everywhere the workers keep them, as `erase` does, but record no erasure: the "
        "users' next events start new profiles, whatever their time (an earlier erasure of a user stands: a reset "
        "removes none). For a profile a worker cannot read (its events "
        "are parked as processing_error dead letters): reset it, then `stream-app redrive --reason processing_error` "
        "applies the parked events. Erasing a user who asked for it is `stream-app erase`."))
    rs.add_argument("users", nargs="+", metavar="USER", type=arg.user_id, help="user ids whose profiles to reset")
    rs.set_defaults(fn=cmd_erase, reset=True)
    for requests in (er, rs):  # both publish requests on the erasures topic and print the workers' receipts
        requests.add_argument("--no-wait", action="store_true",
                              help="publish the requests only (receipts: erasures.receipts)")
        requests.add_argument("--timeout", type=arg.wait_seconds, default=60.0,
                              help="seconds to wait for the receipts (default 60)")
        requests.add_argument("--json", action="store_true", help="print each receipt as one JSON line")
    rr = _command(sub, "erasure-receipts", help="the workers' erasure receipts the receipts topic holds")
    rr.add_argument("users", nargs="*", metavar="USER", type=arg.user_id, help="only these users' receipts (default: every one)")
    rr.add_argument("--json", action="store_true", help="print each receipt as one JSON line")
    rr.set_defaults(fn=cmd_erasure_receipts)
    repair = _command(sub, "repair-redis", help="rebuild the Redis mirror from the compacted profiles topic "
                                                "(never rolls back a newer profile)", description=(
        "Rebuild the Redis mirror of the profiles from the compacted profiles topic, after Redis lost its data or "
        "was replaced: writes each user's last snapshot unless Redis holds a newer one, deletes users whose last "
        "record is a tombstone, and leaves out users erased since. Safe to run while workers run, and to rerun."))
    repair.add_argument("--force", action="store_true",
                        help="delete Redis's profiles even when the profiles topic holds no snapshot at all (refused "
                             "without it: a topic emptied or another cluster's would delete every profile)")
    repair.set_defaults(fn=cmd_repair_redis)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a container's stop), raised as Ctrl-C is: the command's `finally` blocks stop
    what it started. Python's default for SIGTERM ends the process at once, and a `demo`, `bench` or
    `evaluate --via-kafka` so stopped left its embedded broker, Redis and workers running for good."""


def _terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    CONNECTION_WARNINGS.attach()
    previous = signal.signal(signal.SIGTERM, _terminated)  # a worker's or serve's event loop installs its own
    # a worker's and serve's event loops own the streams (their logs: STREAM_APP_LOG_FORMAT=json escapes ESC)
    with escaping_terminal() if args.command not in ("worker", "serve") else contextlib.nullcontext():
        return _run(args, previous)


def _run(args: argparse.Namespace, previous: Any) -> int:
    """The command, its errors said (SIGTERM's handler `previous` put back after it)."""
    try:
        check_brokers_resolve(args.command)
        return args.fn(args)
    except StreamAppError as exc:
        print(f"stream-app {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `stream-app status | head`: the reader has what it wanted
        with contextlib.suppress(OSError, ValueError):  # nothing more to flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        message = kafka_unreachable(exc)
        if message is None:
            raise
        print(f"stream-app {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # `python -m stream_app.cli.main ...` ran nothing and exited 0 (a container that did so looped)
    sys.exit(main())
