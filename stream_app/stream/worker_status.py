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


def unowned(statuses: list[dict[str, Any]], partitions: int) -> list[str]:
    """Per consumer group, the input partitions (of `partitions`, the workers' count) that no live worker's status
    lists: their events wait, and nothing says so elsewhere (each worker reports only what it owns). A group with a
    status whose partitions are not a list (a key edited by hand, another app's) is not judged: what it owns is
    unknown."""
    out: list[str] = []
    groups: dict[str, set[int] | None] = {}
    for status in statuses:
        app_id, listed = str(status.get("app_id", "?")), status.get("input_partitions")
        owned = groups.setdefault(app_id, set())
        if owned is not None:
            groups[app_id] = owned | {p for p in listed if isinstance(p, int)} if isinstance(listed, list) else None
    for app_id, owned in groups.items():
        missing = [p for p in range(partitions) if p not in owned] if owned is not None else []
        if missing:
            out.append(f"input partition{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of "
                       f"{partitions} owned by no live worker of group {app_id} ({ENV_PREFIX}APP_ID): their events "
                       "wait until the group gives them to one (seconds, while a worker joins or leaves; if it stays, "
                       "a worker stopped without leaving and the broker has not noticed yet, or the group is wedged: "
                       "see each worker's readiness)")
    return out


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
        await asyncio.sleep(STATUS_TTL_S / 3)
