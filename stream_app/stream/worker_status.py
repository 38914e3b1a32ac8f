"""The worker's status record in Redis: what `stream-app status` lists (ready or not and why, partitions,
counters, models, catalogue), refreshed at the heartbeat; published from the start, before Faust's heartbeat
timer runs (once the app has started: partitions assigned, tables recovered), so a starting or stuck worker is
listed too."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import asdict, fields
from typing import Any

from ..config import ENV_PREFIX, Settings
from ..errors import described
from ..urls import redact_setting
from .retries import PERMANENT, RETRYABLE

log = logging.getLogger("stream_app.worker")

STATUS_TTL_S = 15
#: How often a worker writes its status (its heartbeat's period): three writes in each lifetime of the key.
STATUS_REFRESH_S = STATUS_TTL_S / 3
#: A status this old missed a refresh: its worker is gone or stuck, though its key lives on for seconds.
STATUS_STALE_S = 2 * STATUS_REFRESH_S
PEERS_CHECK_S = 60.0  # how often a worker reads its peers' statuses for settings that disagree
PEERS_READ_S = 30.0  # how long that read may take

#: Settings a worker may have of its own: where it finds things, how it logs and listens, its I/O pacing, and
#: secrets. Every other one shapes what the group computes, so the workers of a group must agree on it.
PER_WORKER = frozenset({"kafka_bootstrap_servers", "redis_url", "kafka_security", "app_id", "namespace",
                        "registry_dir", "log_format", "read_wait_ms", "web_host", "erasure_key",
                        "erasure_previous_keys", "fetch_max_wait_ms", "commit_interval_s", "batch_max",
                        "batch_within_s", "batch_work_s", "profile_cache_users", "max_idle_ms", "replication_factor",
                        "dlq_retention_ms",
                        "partitions"})  # a worker takes the input topics' partition count; the setting creates them


def group_settings(settings: Settings) -> dict[str, Any]:
    """The settings the workers of a group must share, by environment variable (the event weights by weight)."""
    out: dict[str, Any] = {}
    for f in fields(settings):
        if f.name == "weights":
            out.update({f"{ENV_PREFIX}WEIGHT_{kind.upper()}": value for kind, value in asdict(settings.weights).items()})
        elif f.name not in PER_WORKER:
            out[f"{ENV_PREFIX}{f.name.upper()}"] = getattr(settings, f.name)
    return out


def disagreements(statuses: list[dict[str, Any]]) -> list[str]:
    """What `stream-app status` and each worker warn of: several consumer groups in one namespace (each reads
    every input and publishes its own recommendations), and workers of one group whose shared settings differ
    (their partitions' lists would follow different rules). Statuses of releases before 2026-12-01 have no
    settings: not compared."""
    out: list[str] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for status in statuses:  # as the store reads them (redis_store._statuses): each a dict with a worker_id
        groups.setdefault(str(status.get("app_id", "?")), []).append(status)
    if len(groups) > 1:
        listed = "; ".join(f"{app_id}: {', '.join(s['worker_id'] for s in members)}" for app_id, members in groups.items())
        out.append(f"{len(groups)} consumer groups in this namespace ({ENV_PREFIX}APP_ID: {listed}): each reads every "
                   "input and publishes its own recommendations and profiles, so downstream gets each event's twice; "
                   f"give every worker one {ENV_PREFIX}APP_ID, or each group its own {ENV_PREFIX}NAMESPACE")
    for app_id, members in groups.items():
        compared = [s for s in members if isinstance(s.get("settings"), dict)]
        # a setting some release lacks (a rolling upgrade adding one) is no disagreement
        names = sorted(set.intersection(*(set(s["settings"]) for s in compared))) if compared else []
        for name in names:
            values: dict[str, list[str]] = {}
            for s in compared:
                values.setdefault(repr(s["settings"].get(name)), []).append(s["worker_id"])
            if len(values) > 1:
                said = "; ".join(f"{value} on {', '.join(workers)}" for value, workers in values.items())
                out.append(f"the workers of {app_id} disagree on {name} ({said}): their partitions' lists follow "
                           "different rules; give every worker the same value")
    return out


def heard_ago(status: dict[str, Any], now_s: float) -> float:
    """How long ago the worker wrote `status`: by Redis's clock where the reader gave it (`age_s`, from its key's time
    left), else by the worker's own stamp against `now_s` (a worker's clock may be ahead or behind the reader's)."""
    if isinstance(status.get("age_s"), (int, float)):
        return float(status["age_s"])
    updated = status.get("updated_at")
    return now_s - updated / 1000 if isinstance(updated, (int, float)) else 0.0


def unowned(statuses: list[dict[str, Any]], partitions: int | None, now_s: float,
            stale_after_s: float = STATUS_STALE_S) -> list[str]:
    """Per consumer group, the input partitions no live worker's status lists: their events wait, and nothing says
    so elsewhere (each worker reports only what it owns). Judged: those below `partitions` (the workers' count in
    their marker; None: not written yet) and below any a status lists (partition numbers are dense; one listed at
    or past the count is said: the topics grew). A worker heard from `stale_after_s` ago or more owns nothing here:
    its key outlives it by seconds. A group with a fresh status whose partitions are not a list is not judged: what
    it owns is unknown."""
    listed = [(s, _listed(s) or []) for s in statuses]
    known = max([partitions or 0] + [p + 1 for _, ps in listed for p in ps])
    total = f"{known}" if partitions is not None and partitions >= known else f"at least {known}"
    beyond = [(s["worker_id"], [p for p in ps if p >= partitions]) for s, ps in listed] if partitions else []
    beyond = [(worker_id, ps) for worker_id, ps in beyond if ps]
    out = [_grown(partitions, known, beyond)] if beyond else []
    for app_id, (owned, stale) in _owners(statuses, now_s, stale_after_s).items():
        if owned is None:
            continue
        silent: dict[tuple[str, ...], list[int]] = {}  # the stale workers listing a partition -> the partitions
        for p in sorted({p for _, theirs in stale.values() for p in theirs if p < known} - owned):
            silent.setdefault(tuple(w for w, (_, theirs) in stale.items() if p in theirs), []).append(p)
        for workers, only in silent.items():
            heard = " and ".join(f"{w} (last heard {stale[w][0]:.0f}s ago)" for w in workers)
            logs = "that worker's log" if len(workers) == 1 else "those workers' logs"
            out.append(f"input {_numbered(_runs(only))} of {total} owned by no live worker of group {app_id} "
                       f"({ENV_PREFIX}APP_ID): only {heard} list{'s' if len(workers) == 1 else ''} them (gone or "
                       "stuck?); their events wait until the group gives them to a live worker (the broker drops "
                       f"one gone without leaving within seconds); if this stays, see {logs} (restart a worker that "
                       "is stuck) and each worker's readiness")
        # runs, not each number: a hand-edited status may list a partition in the billions
        unlisted = _gaps(owned.union(*silent.values()), known)
        if unlisted:
            out.append(f"input {_numbered(unlisted)} of {total} owned by no live worker of group {app_id} "
                       f"({ENV_PREFIX}APP_ID): their events wait until the group gives them to one (seconds, while a "
                       "worker joins or leaves; if it stays, a worker stopped without leaving and the broker has not "
                       "noticed yet, or the group is wedged: see each worker's readiness)")
    return out


def _listed(status: dict[str, Any]) -> list[int] | None:
    """The input partitions a status lists; None when they are not a list (a key edited by hand, another app's)."""
    found = status.get("input_partitions")
    if not isinstance(found, list):
        return None
    return [p for p in found if isinstance(p, int) and not isinstance(p, bool) and p >= 0]


def _owners(statuses: list[dict[str, Any]], now_s: float, stale_after_s: float
            ) -> dict[str, tuple[set[int] | None, dict[str, tuple[float, set[int]]]]]:
    """Per group: the partitions its fresh workers list (None: one of them lists no list), and per stale worker how
    long ago it was heard and what it lists."""
    groups: dict[str, tuple[set[int] | None, dict[str, tuple[float, set[int]]]]] = {}
    for status in statuses:
        app_id = str(status.get("app_id", "?"))
        owned, stale = groups.setdefault(app_id, (set(), {}))
        heard_s, listed = heard_ago(status, now_s), _listed(status)
        if heard_s >= stale_after_s:
            stale[status["worker_id"]] = (heard_s, set(listed or []))
        elif owned is not None:
            groups[app_id] = (owned | set(listed) if listed is not None else None, stale)
    return groups


def _grown(partitions: int, known: int, beyond: list[tuple[str, list[int]]]) -> str:
    """The workers' marker counts fewer input partitions than workers list."""
    said = "; ".join(f"{worker_id} lists {', '.join(map(str, ps))}" for worker_id, ps in beyond)
    return (f"the workers' marker in Redis counts {partitions} input partitions, but {said}: the input topics have "
            f"more (partitions added in place?), so a user's events may reach another partition than its profile. A "
            "topic's partitions cannot be changed in place: create the topics anew under another "
            f"{ENV_PREFIX}NAMESPACE and replay the log there. Partitions 0 to {known - 1} are judged here meanwhile")


def _gaps(taken: set[int], known: int) -> list[tuple[int, int]]:
    """The runs (first, last) of the partitions below `known` not in `taken`."""
    runs, start = [], 0
    for p in sorted(p for p in taken if p < known):
        if p > start:
            runs.append((start, p - 1))
        start = p + 1
    return runs + [(start, known - 1)] if start < known else runs


def _runs(partitions: list[int]) -> list[tuple[int, int]]:
    """Sorted partition numbers as runs (first, last)."""
    runs: list[tuple[int, int]] = []
    for p in partitions:
        if runs and runs[-1][1] == p - 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return runs


def _numbered(runs: list[tuple[int, int]]) -> str:
    said = ", ".join(f"{a}" if a == b else f"{a}, {b}" if b == a + 1 else f"{a} to {b}" for a, b in runs)
    return f"partition{'s' if sum(b - a + 1 for a, b in runs) > 1 else ''} {said}"


#: After this long without partitions, readiness says how a wedged consumer group looks.
WEDGE_HINT_S = 180


def partitions_wait(waited_s: float) -> str:
    """What readiness says while the worker has no partitions (or is recovering their tables)."""
    said = "input partitions not assigned, or their tables not recovered yet"
    if waited_s < WEDGE_HINT_S:
        return said
    return (f"{said}, for {waited_s:.0f}s: a large changelog takes that long to recover, but if the worker's log "
            "(--loglevel info) repeats \"Joined group\" with no \"Elected group leader\", the broker keeps the group "
            "without a leader (Tansu 0.6.0 does after all its workers left at once): restart the broker, or give "
            "the workers a new STREAM_APP_APP_ID")


async def publish_status(worker: Any) -> None:
    """`worker`: a `StreamWorker`. The first record Redis takes after an outage was made while the outage lasted
    (not ready, Redis failing): written again at once, not left for the next heartbeat while /readyz says ready."""
    if await _publish_once(worker):
        await _publish_once(worker)


async def _publish_once(worker: Any) -> bool:
    """Whether the record written was the first after Redis refused or failed the status."""
    missing = worker.missing()
    was_failing = worker.status_failing_since is not None or worker.redis_refusal is not None
    try:
        await worker.store.publish_worker_status(worker.worker_id, {
            "worker_id": worker.worker_id, "app_id": worker.settings.app_id, "pid": os.getpid(),
            # ready: partitions assigned, tables recovered, models and catalogue loaded, no output failing (/readyz)
            "ready": not missing, "missing": missing, "web_port": worker.web_port,
            "input_partitions": sorted(worker.assigned_inputs()),
            "counters": asdict(worker.counters), "ordering": worker.ordered.status(),
            "models": worker.watcher.status(), "catalogue": worker.catalogue.status(),
            "settings": worker.peers.shared, "updated_at": int(time.time() * 1000)}, ttl_s=STATUS_TTL_S)
        if worker.status_failing_since is not None:
            log.warning("Redis takes the worker status again, after %.0fs", time.monotonic() - worker.status_failing_since)
        worker.redis_refusal = worker.status_failing_since = None
        worker.peers.check(worker.store)
        risk = await worker.store.eviction_risk()
        if risk:
            log.error("%s", risk)
        return was_failing
    except PERMANENT as exc:  # a wrong password or ACL: not ready, so a rollout with a bad REDIS_URL stops here
        worker.redis_refusal = described(exc)
        log.error("Redis at %s refuses the worker status (%s): check REDIS_URL's password or the ACL",
                  redact_setting(worker.settings.redis_url), worker.redis_refusal)
    except RETRYABLE as exc:
        if worker.status_failing_since is None:
            worker.status_failing_since = time.monotonic()
        worker.status_failure = described(exc)
        log.warning("cannot publish the worker status to Redis at %s (%s); retrying (%s)",
                    redact_setting(worker.settings.redis_url), worker.status_failure, redis_advice(worker.status_failure))
    return False


class PeerSettings:
    """A worker's shared settings (in its status: its peers and `stream-app status` compare them), and its
    check of its peers': once a minute, each disagreement logged once."""

    def __init__(self, shared: dict[str, Any]):
        self.shared = shared
        self.checked_at: float | None = None
        self.said: set[str] = set()
        self.reading: asyncio.Task | None = None

    def check(self, store: Any) -> None:
        """Start the minute's check off the heartbeat: reading the peers scans Redis's keys (seconds with millions of
        profiles), which must delay neither the status nor readiness."""
        now = time.monotonic()
        if (self.checked_at is not None and now - self.checked_at < PEERS_CHECK_S) or (
                self.reading is not None and not self.reading.done()):
            return
        self.checked_at = now
        self.reading = asyncio.ensure_future(self.compare(store))

    async def compare(self, store: Any) -> None:
        try:
            statuses = await asyncio.wait_for(store.worker_statuses(), timeout=PEERS_READ_S)
            found = disagreements(statuses)
        except Exception as exc:  # a stray key, an ACL without SCAN, a slow Redis: the check is advice, never a fault
            found = [f"could not compare this worker's settings with its peers' ({described(exc)})"]
        for said in found:
            if said not in self.said:
                self.said.add(said)
                log.warning("%s", said)


def redis_wait(worker: Any, after_s: float) -> dict[str, str]:
    """Redis as the status writes see it: refusing the worker, or not answering for `after_s` (an idle worker
    writes nothing else there, so only these tell it cannot store what comes)."""
    if worker.redis_refusal:
        return {"redis": f"Redis refuses this worker ({worker.redis_refusal}): check REDIS_URL's password or ACL"}
    since = worker.status_failing_since
    failing_s = time.monotonic() - since if since is not None else 0.0
    if since is None or failing_s < after_s:
        return {}
    return {"redis": f"cannot write the worker status to Redis for {failing_s:.0f}s; retrying "
                     f"({redis_advice(getattr(worker, 'status_failure', ''))})"}


def redis_advice(failure: str) -> str:
    """What to look at when Redis fails a write (`failure`: the error as said): a full Redis is up."""
    if "OOM" in failure or "OutOfMemory" in failure or "maxmemory" in failure:
        return "Redis is full: raise its maxmemory or free memory; nothing is lost meanwhile"
    return "is Redis up? else check REDIS_URL"


def output_waits(outages: dict[str, float], after_s: float) -> dict[str, str]:
    """The outputs (output name -> failing since, monotonic) whose writes have failed for `after_s` or longer."""
    now = time.monotonic()
    return {output.lower(): f"cannot write to {output} for {now - since:.0f}s; retrying (the events wait "
            "unacknowledged, nothing is lost)" for output, since in outages.items() if now - since >= after_s}


async def status_until_processing(worker: Any) -> None:
    """The status every third of its lifetime until the worker's input loop runs (then its heartbeat does it)."""
    while not worker.processing:
        await publish_status(worker)
        await asyncio.sleep(STATUS_REFRESH_S)
