"""The worker's status record in Redis: what `stream-app status` lists (ready or not and why, partitions,
counters, models, catalogue), refreshed at the heartbeat; published from the start, before Faust's heartbeat
timer runs (once the app has started: partitions assigned, tables recovered), so a starting or stuck worker is
listed too."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import asdict
from typing import Any

from ..errors import described
from ..urls import redact_url
from .retries import PERMANENT, RETRYABLE

log = logging.getLogger("stream_app.worker")

STATUS_TTL_S = 15


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
    """`worker`: a `StreamWorker`."""
    missing = worker.missing()
    try:
        await worker.store.publish_worker_status(worker.worker_id, {
            "worker_id": worker.worker_id, "app_id": worker.settings.app_id, "pid": os.getpid(),
            # ready: partitions assigned, tables recovered, models and catalogue loaded, no output failing (/readyz)
            "ready": not missing, "missing": missing, "web_port": worker.web_port,
            "input_partitions": sorted(worker.assigned_inputs()),
            "counters": asdict(worker.counters), "ordering": worker.ordered.status(),
            "models": worker.watcher.status(), "catalogue": worker.catalogue.status(),
            "updated_at": int(time.time() * 1000)}, ttl_s=STATUS_TTL_S)
        worker.redis_refusal = worker.status_failing_since = None
        risk = await worker.store.eviction_risk()
        if risk:
            log.error("%s", risk)
    except PERMANENT as exc:  # a wrong password or ACL: not ready, so a rollout with a bad REDIS_URL stops here
        worker.redis_refusal = described(exc)
        log.error("Redis at %s refuses the worker status (%s): check REDIS_URL's password or the ACL",
                  redact_url(worker.settings.redis_url), worker.redis_refusal)
    except RETRYABLE as exc:
        if worker.status_failing_since is None:
            worker.status_failing_since = time.monotonic()
        log.warning("cannot publish the worker status to Redis at %s (%s): check REDIS_URL",
                    redact_url(worker.settings.redis_url), described(exc))


def redis_wait(worker: Any, after_s: float) -> dict[str, str]:
    """Redis as the status writes see it: refusing the worker, or not answering for `after_s` (an idle worker
    writes nothing else there, so only these tell it cannot store what comes)."""
    if worker.redis_refusal:
        return {"redis": f"Redis refuses this worker ({worker.redis_refusal}): check REDIS_URL's password or ACL"}
    since = worker.status_failing_since
    failing_s = time.monotonic() - since if since is not None else 0.0
    if since is None or failing_s < after_s:
        return {}
    return {"redis": f"cannot write the worker status to Redis for {failing_s:.0f}s; retrying (check REDIS_URL)"}


async def status_until_processing(worker: Any) -> None:
    """The status every third of its lifetime until the worker's input loop runs (then its heartbeat does it)."""
    while not worker.processing:
        await publish_status(worker)
        await asyncio.sleep(STATUS_TTL_S / 3)
