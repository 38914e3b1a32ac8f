"""`stream-app evaluate --via-kafka`: the log replayed through real workers, the recommendations topic
read back and scored like the in-process pass, and set beside it."""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any

import orjson

from ..config import Settings
from ..core.content import ContentIndex
from ..core.ordering import rounds
from ..errors import ServiceTimeout
from ..partitioning import partition_of
from ..tools.line_rejections import not_evaluated
from ..tools.log_checks import warn_if_seconds
from ..tools.progress import tracked
from ..tools.recorded import OnlineRetailStats
from ..tools.replay import gate
from ..tools.sorted_log import LimitCut, load_accepted
from .metrics import COLD_START, PopularityPercentiles, Scoreboard
from .prequential import Rows, evaluate_events, interactions_before, time_split, without_variants
from .processes import split_pass


def score_published(events: list[dict[str, Any]], published: dict[tuple[str, str], list[str]], k: int,
                    settings: Settings, judge_from_ts: int | None = None) -> dict[str, Any]:
    """Metrics of published recommendations ((user_id, trigger_event_id) -> items: an event id is its user's, as
    the workers' idempotence key is, so two users' equal ids are two lists), judged like the in-process
    pass and in its order (`ordering.rounds`, the order a worker applies the log): each event by the
    list published after its user's previous event; an item's interactions before an event, which
    make its target cold or not, are those stamped before it (`interactions_before`), as in process. Only events at or after `judge_from_ts` are judged."""
    board = Scoreboard(k)
    popularity = PopularityPercentiles()
    previous: dict[str, tuple[str, str]] = {}
    catalog: set[str] = set()
    interactions: collections.Counter[str] = collections.Counter()
    missing = 0
    applied: set[tuple[str, str]] = set()  # a redelivered event is neither judged nor counted (as in process)
    for _, released in rounds(events, settings, partition_of):
        round_events = [r.item for r in released]
        new = []  # a user's events come in its order: a repeat is known before the round is walked
        for event in round_events:
            key = (event["user_id"], event["event_id"])
            new.append(key not in applied)
            applied.add(key)
        counts_before = interactions_before([e["item_id"] for e in round_events], [e["ts"] for e in round_events],
                                            new, interactions)
        for event, is_new, item_before in zip(round_events, new, counts_before):
            if not is_new:
                continue
            before = previous.get(event["user_id"])
            if before is not None and (judge_from_ts is None or event["ts"] >= judge_from_ts):
                items = published.get(before)
                if items is None:
                    missing += 1
                    items = []
                board.judge(items, event, popularity, item_before < COLD_START)
            interactions[event["item_id"]] += 1
            previous[event["user_id"]] = (event["user_id"], event["event_id"])
            popularity.learn(event["item_id"])
            catalog.add(event["item_id"])
        popularity.refresh()
    result = board.summary(catalog)
    result["missing_recommendations"] = missing
    return result


def _events_sent(path: str | Path, fmt: str, limit: int | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The log's events a worker accepts, in time order (`limit`: the first), and the counts of what is not sent."""
    skipped, cut = OnlineRetailStats() if fmt == "online-retail" else None, LimitCut()
    events, rejected, refused = load_accepted(path, fmt, gate(Settings.from_env()), limit, skipped, cut)
    return events, not_evaluated(rejected, collections.Counter(why for _, why, _, _ in refused), skipped, cut,
                                 fmt)


def evaluate_via_kafka(path: str | Path, fmt: str, k: int = 20, rate: float | None = None, workers: int = 1,
                       timeout: float = 900.0, max_idle_ms: int = 2000, busy: bool = False,
                       limit: int | None = None, items: tuple[str | Path, str] | None = None,
                       content: ContentIndex | None = None, registry_dir: str | None = None,
                       baselines: bool = False, light: bool = False, keep: bool = False,
                       judge_from: float | None = None, processes: int = 1, variants: bool = True,
                       progress: bool = False) -> dict[str, Any]:
    """Replay the log at `rate` events/s (None: as fast as possible) through `workers` real workers,
    read the recommendations topic as a downstream service would, score it, and set it beside the
    in-process pass over the same log with the same settings. The workers order the input by event
    time and define item state by event time (ordering.py), so the two agree event for event: the
    result counts the recommendations whose profile version or list differ (the goal is none).
    `max_idle_ms`: how long a worker waits for an input topic that has nothing new; it covers the
    replay producer's stalls between topics. `busy`: run a CPU-bound process beside the workers.
    `items` (a catalogue file and its format) and `content` (its index under a content model of
    `registry_dir`): the catalogue is loaded to the items topic and the model announced before the
    workers start, and the in-process pass uses the same index. `baselines` (`light`: the light set):
    the in-process pass also runs the baselines, so the published recommendations are set against the
    best of them from the same pass (`compare_to_best`). `keep`: keep the run's folder of logs when it ends well.
    `judge_from`: both passes judge only the events from that share of the log's time span on (`time_split`).
    `processes`, `variants`: of the in-process pass, as `evaluate_log` takes them. `progress`: both passes' on stderr."""
    from ..tools.consume import wait_committed
    from ..tools.processes import busy_process, one_off_run, wait_ready_workers
    from ..tools.replay import produce_events

    # read before anything starts; what the workers dead-letter (their gate reads the same settings) is not sent
    events, left_out = _events_sent(path, fmt, limit)
    warn_if_seconds(fmt, events[0]["ts"] if events else None, events[-1]["ts"] if events else None)  # as replay warns
    with one_off_run("evaluate", keep=keep) as run:
        settings = run.settings.replace(rec_policy="every", top_k=k, max_idle_ms=max_idle_ms,
                                        **({"registry_dir": str(Path(registry_dir).resolve())} if registry_dir else {}))
        run.settings = settings
        if items is not None and content is not None:
            from ..stream.model_control import publish
            from ..tools.catalogue import load_items

            load_items(settings, *items)
            publish(settings, "content", content.version)
        started_workers = [run.start_worker(loglevel="warn") for _ in range(workers)]
        wait_ready_workers(settings, started_workers, timeout)
        with busy_process(busy):
            started = time.perf_counter()
            marks = produce_events(settings, events, rate).marks
            try:
                wait_committed(settings, marks, timeout, progress="evaluate, through Kafka" if progress else None)
            except ServiceTimeout as exc:
                raise ServiceTimeout(f"{exc}: a long log or a slow machine needs more time, "
                                     f"raise --timeout (now {timeout:.0f} s)") from exc
            seconds = time.perf_counter() - started
        published, versions, repeated = _read_published(settings, events, timeout)
        ordering = worker_ordering_counters(settings, len(started_workers), int(time.time() * 1000))
    judge_from_ts = time_split(events[0]["ts"], events[-1]["ts"], judge_from) if judge_from and events else None
    via_kafka = score_published(events, published, k, settings, judge_from_ts)
    via_kafka["events_per_s"] = len(events) / seconds

    in_process_run = _in_process(events, settings, k, judge_from_ts, content, progress, baselines=baselines,
                                 light=light, processes=processes, variants=variants)
    in_process = in_process_run["models"]["stream-app"]
    recorded = in_process_run["recorded"]
    differ_lists = sum(1 for key, (_, items) in recorded.items() if published.get(key) != items)
    differ_versions = sum(1 for key, (version, _) in recorded.items() if versions.get(key) != version)
    keys = [f"recall@{k}", f"mrr@{k}", f"ndcg@{k}"]
    if content is not None:  # Recall@k on cold targets, the figure content is for
        for scored in (via_kafka, in_process):
            scored[f"cold@{k}"] = scored["cold_start"][f"recall@{k}"]
        keys.append(f"cold@{k}")
    return {"log": str(path), "format": fmt, "events": len(events), "k": k, "rate": rate, "workers": workers, "busy": busy,
            "in_process_processes": processes, "variants": variants,
            "judge_from": judge_from, "judged_from_ts": judge_from_ts,
            "content": content.version if content is not None else None,
            "max_idle_ms": max_idle_ms, "via_kafka": via_kafka, "in_process": in_process,
            "recommendations_in_process": len(recorded), "recommendations_published": len(published),
            "repeated_recommendations": repeated, "lists_differ": differ_lists, "versions_differ": differ_versions,
            "ordering": ordering, "repeated_event_ids": in_process_run["repeated_event_ids"],
            "abs_difference": {key: abs(via_kafka[key] - in_process[key]) for key in keys},
            "other_rows": {name: row for name, row in in_process_run["models"].items() if name != "stream-app"},
            "against_best": compare_to_best(via_kafka, in_process_run["models"], k),
            **left_out}


def _in_process(events: list[dict[str, Any]], settings: Settings, k: int, judge_from_ts: int | None,
                content: ContentIndex | None, progress: bool, baselines: bool, light: bool, processes: int,
                variants: bool) -> dict[str, Any]:
    """The in-process pass of `evaluate_via_kafka` over `events` (in time order), with its options."""
    def one_pass(rows: Rows | None) -> dict[str, Any]:
        # taken an epoch at a time, as `evaluate_log` takes a log (the same rounds): so its progress is the pass's
        return evaluate_events(tracked(events, "evaluate, in process", progress), settings, k, baselines=baselines,
                               light=light, record=True, content=content, judge_from_ts=judge_from_ts, rows=rows,
                               in_time_order=True)

    rows = None if variants else without_variants(None)
    return split_pass(one_pass, processes, rows) if processes > 1 else one_pass(rows)


def _read_published(settings: Settings, events: list[dict[str, Any]], timeout: float
                    ) -> tuple[dict[tuple[str, str], list[str]], dict[tuple[str, str], int], int]:
    """The recommendations topic as a downstream service reads it: per (user, trigger event) its list and profile
    version, and how many were published twice. Read until every event's list is in (none for a repeat): a count of
    records stopped short when a list was published twice."""
    from ..tools.consume import TopicReader

    wanted = len({(e["user_id"], e["event_id"]) for e in events})
    published: dict[tuple[str, str], list[str]] = {}
    versions: dict[tuple[str, str], int] = {}
    repeated = 0
    deadline = time.monotonic() + timeout
    with TopicReader(settings.require_kafka(), settings.topics.recommendations, settings.kafka_security) as reader:
        while len(published) < wanted:
            if time.monotonic() > deadline:
                raise ServiceTimeout(f"read {len(published)} of {wanted} recommendations from "
                                     f"{settings.topics.recommendations} in {timeout:.0f}s")
            for record in reader.poll():
                rec = orjson.loads(record.value)
                key = (rec["user_id"], rec["trigger_event_id"])
                repeated += key in published
                published[key] = [item["item_id"] for item in rec["items"]]
                versions[key] = rec["profile_version"]
    return published, versions, repeated


def compare_to_best(scored: dict[str, Any], rows: dict[str, dict[str, Any]], k: int) -> dict[str, Any] | None:
    """The published recommendations' scores against the best baseline row of the same pass by
    Recall@k (rows named "stream-app..." are the hybrid's own variants, not baselines): its name,
    the relative difference in Recall@k, and whether MRR@k is not worse. None without baselines."""
    recall, mrr = f"recall@{k}", f"mrr@{k}"
    others = {name: row for name, row in rows.items() if not name.startswith("stream-app")}
    if not others:
        return None
    best = max(others, key=lambda name: (others[name][recall], others[name][mrr]))
    row = others[best]
    return {"row": best, recall: row[recall], mrr: row[mrr],
            "relative_recall": scored[recall] / row[recall] - 1 if row[recall] else None,
            "mrr_not_worse": scored[mrr] >= row[mrr]}


def worker_ordering_counters(settings: Settings, workers: int, after_ms: int, timeout_s: float = 20.0
                             ) -> dict[str, int]:
    """Late events, summed over the run's workers: their first statuses published after `after_ms`."""
    import redis

    from ..store.redis_store import worker_statuses

    client = redis.Redis.from_url(settings.require_redis())
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            statuses = [s for s in worker_statuses(client, settings.namespace)
                        if s["app_id"] == settings.app_id and s["updated_at"] >= after_ms]
            if len(statuses) >= workers or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        client.close()
    out = {"late_for_user": 0, "late_in_partition": 0, "late_for_item_state": 0, "unscheduled": 0,
           "stale_item_state": 0}
    for status in statuses:
        out["late_for_user"] += status["counters"].get("late", 0)
        for key in ("late_in_partition", "late_for_item_state", "unscheduled", "stale_item_state"):
            out[key] += status.get("ordering", {}).get(key, 0)
    return out
