"""Which model versions serve: announced on the control topic, heard by every worker.

The control topic (`models.control`, one partition, compacted) holds one record per role, "live" or
"shadow" (the sequence encoder) or "content" (the text encoder of the item catalogue):
{"role", "version" (null: none), "content_hash", "published_at", "schema_version"} (a record written before
2026-12-06 has no schema_version and is read as version 1; one of another version is refused, logged with where it
was read). `publish` writes one, with the
hash of the version's files as they are then; a worker loads only files that still hash to it (a
folder changed after the announcement is refused) and runs the model once on a trial input before it
swaps it in. Each worker reports what it did with each announcement (serving, refused with the
reason, withdrawn) on the `models.status` topic, and keeps what served before whenever it refuses (loading
the refused version again after RETRY_S, then twice as long each time up to RETRY_MAX_S, so that workers
converge once its files are in place). Each worker runs a
`ModelWatcher`: a consumer outside the consumer group (every worker must read every record), assigned
to the one partition from its beginning, that loads each newly announced version from the registry
folder off the event loop and then swaps it in. The batch loop only reads `watcher.live` /
`watcher.shadow` at the start of a batch, so a swap never splits a batch and never stops the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
from fastjsonschema import JsonSchemaException

from ..config import Settings
from ..contracts import SCHEMA_VERSION, plain_message, validator, version_not_read
from ..errors import ConfigError, StreamAppError
from ..kafka_security import kafka_python_kwargs
from ..serving.encoder import Encoder
from ..serving.text_encoder import TextEncoder
from .transport import from_the_beginning

log = logging.getLogger("stream_app.models")

ROLES = ("live", "shadow", "content")
#: How often a refused announcement is loaded again: a registry copy still on its way to this host (or
#: a folder being repaired) must not leave this worker serving another version than the rest for good.
RETRY_S = 30.0
RETRY_MAX_S = 600.0  # a refusal that lasts (files changed for good) costs a load every 10 minutes at most


def publish(settings: Settings, role: str, version: str | None, workers_registry: str | None = None) -> dict[str, Any]:
    """Announce `version` (None: withdraw) for `role`. The version must be in the registry folder the
    workers read (`settings.registry_dir`; `workers_registry`: theirs, when the caller read another)."""
    from kafka import KafkaProducer

    from .topics import ensure_topics

    if role not in ROLES:
        raise StreamAppError(f"role {role!r} is not one of {', '.join(ROLES)}")
    digest = None
    if version is not None:
        # the workers' own load (its files checked against their hash) and trial run: a version they would refuse
        # is not announced; a version the registry lacks, or of another kind, is said so as the load says it
        model = model_class(role).load(settings.registry_dir, version)
        try:
            tried(model, settings)
        except Exception as exc:
            raise ConfigError(f"model {version} cannot serve as {role}, not published: {exc}") from exc
        digest = model.manifest["content_hash"]
        if workers_registry is not None and Path(settings.registry_dir).resolve() != Path(workers_registry).resolve():
            raise StreamAppError(f"the workers load models from {workers_registry} (STREAM_APP_REGISTRY_DIR), not "
                                 f"{settings.registry_dir}: publishing would announce a version they cannot find. "
                                 "Copy the version's folder into theirs, or set STREAM_APP_REGISTRY_DIR for them and "
                                 "here")
    ensure_topics(settings)
    # workers since d23da6b (2026-11-30) read schema_version; those before refuse a record with it
    # (docs/contracts.md: upgrade them before publishing with this release)
    record = {"role": role, "version": version, "content_hash": digest, "published_at": int(time.time() * 1000),
              "schema_version": SCHEMA_VERSION}
    validator("model-control")(record)
    producer = KafkaProducer(bootstrap_servers=settings.require_kafka(), acks="all",
                             **kafka_python_kwargs(settings.kafka_security))
    try:
        producer.send(settings.topics.model_control, key=role.encode(), value=orjson.dumps(record)).get(timeout=30)
    finally:
        producer.close()
    return record


def model_class(role: str) -> type[Encoder] | type[TextEncoder]:
    """What serves in a role: the text encoder for `content`, the sequence encoder for `live` and `shadow`."""
    return TextEncoder if role == "content" else Encoder


def tried(model: Encoder | TextEncoder, settings: Settings) -> None:
    """Run the model once on a trial input and check it fits these settings (raises if it cannot serve here)."""
    model.trial()
    if isinstance(model, Encoder):
        model.require_fits(settings.recent_max)


Report = Callable[[dict[str, Any]], Awaitable[None]]

#: How much of a bad control record a log line shows: a record may be as large as the broker allows (1 MB).
SHOWN_CHARS = 200


def shown(value: Any) -> str:
    """`value` as a log line shows it: its repr, cut to SHOWN_CHARS with the length said."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def valid_for_its_key(message: Any) -> bool:
    """A control record the watcher acts on: JSON, of a schema_version this release reads (none: 1), of the schema,
    keyed by its role."""
    try:
        record = orjson.loads(message.value) if message.value is not None else None
        validator("model-control")(record)
    except (orjson.JSONDecodeError, JsonSchemaException):
        return False
    return version_not_read(record) is None and message.key == str(record["role"]).encode()


class ModelWatcher:
    """Follows the control topic; holds the loaded live and shadow encoders and the content model
    (None when none). `report`, when given, receives a `models.status` record for every announcement
    the watcher acts on."""

    def __init__(self, settings: Settings, report: Report | None = None, worker_id: str = ""):
        self.settings = settings
        self.report = report
        self.worker_id = worker_id
        self.live: Encoder | None = None
        self.shadow: Encoder | None = None
        self.content: TextEncoder | None = None
        self.wanted: dict[str, str | None] = {role: None for role in ROLES}
        self.errors: dict[str, str] = {}
        # role -> (its record, when to load it again, the wait after that)
        self.refused: dict[str, tuple[dict[str, Any], float, float]] = {}
        self.swaps = 0

    def status(self) -> dict[str, Any]:
        return {"live": self.live.version if self.live else None,
                "shadow": self.shadow.version if self.shadow else None,
                "content": self.content.version if self.content else None,
                "wanted": dict(self.wanted), "errors": dict(self.errors), "swaps": self.swaps}

    async def apply(self, record: Any, retry: bool = False, where: dict[str, Any] | None = None) -> bool:
        """Act on a control record (`retry`: a refused one, loaded again; reported only if it now serves; `where`: its
        topic, partition and offset, for the log). False: the record breaks the schema and is ignored."""
        try:
            validator("model-control")(record)
        except JsonSchemaException as exc:  # an operator's mistake must not stop the worker
            at = f" at {where['topic']}[{where['partition']}]@{where['offset']}" if where else ""
            log.error("ignoring a control record%s that breaks schemas/v1/model-control (%s): %s", at,
                      plain_message("model-control", record, exc.message)[:200], shown(record), extra=where)
            self.errors["control"] = f"ignored an invalid control record: {exc.message}"
            return False
        self.errors.pop("control", None)  # a valid record after it: the operator has published again
        role, version, digest = record["role"], record["version"], record.get("content_hash")
        self.wanted[role] = version
        current = getattr(self, role)
        serving = current.version if current else None
        if serving == version and (current is None or digest == current.manifest["content_hash"]):
            self.refused.pop(role, None)
            if self.errors.pop(role, None) is not None:  # back to what serves (a rollback): no refusal stands
                await self._report(role, version, digest, "serving" if version is not None else "withdrawn", None)
            return True
        # Any announcement replaces the role's refused one: a retry must never bring back a superseded version
        earlier = self.refused.pop(role, None)
        waited = earlier[2] if retry and earlier is not None else 0.0
        if version is None:
            setattr(self, role, None)
            self.errors.pop(role, None)
            log.warning("model %s withdrawn", role)
            await self._report(role, None, None, "withdrawn", None)
            return True
        try:
            if digest is None:
                raise ConfigError("the announcement carries no content hash (published by an earlier release): "
                                  "publish it again with `stream-app models publish`")
            loop = asyncio.get_running_loop()
            loaded = await loop.run_in_executor(None, partial(model_class(role).load, self.settings.registry_dir,
                                                              version, expected_hash=digest))
            # A trial run before the swap: a model that loads but fails when run keeps the old one serving
            await loop.run_in_executor(None, tried, loaded, self.settings)
        except Exception as exc:  # a bad announcement must not stop the worker: keep what serves
            error = f"cannot load {version}: {exc}"
            wait = min(waited * 2, RETRY_MAX_S) if waited else RETRY_S
            self.refused[role] = (record, time.monotonic() + wait, wait)
            if retry and self.errors.get(role) == error:  # as before: said once
                return True
            self.errors[role] = error
            log.error("cannot load model %s for %s from %s: %s; keeping %s (trying again in %.0f s)", version, role,
                      self.settings.registry_dir, exc, serving or "none", wait)
            await self._report(role, version, digest, "refused", f"{exc}; still serving {serving or 'none'}")
            return True
        setattr(self, role, loaded)
        self.errors.pop(role, None)
        self.swaps += 1
        log.warning("model %s is now %s", role, version)
        await self._report(role, version, digest, "serving", None)
        return True

    async def _report(self, role: str, version: str | None, digest: str | None, outcome: str,
                      reason: str | None) -> None:
        if self.report is None:
            return
        record = {"worker_id": self.worker_id, "role": role, "version": version, "content_hash": digest,
                  "outcome": outcome, "reason": reason, "at": int(time.time() * 1000), "schema_version": SCHEMA_VERSION}
        try:
            await self.report(record)
        except Exception as exc:  # the status topic is for operators; serving goes on without it
            log.error("cannot report model status %s: %s", record, exc)

    async def receive(self, message: Any) -> None:
        """One record of the control topic, as read."""
        where = {"topic": getattr(message, "topic", self.settings.topics.model_control),
                 "partition": getattr(message, "partition", 0), "offset": message.offset}
        at = f"{where['topic']}[{where['partition']}]@{where['offset']}"
        if message.value is None:
            log.error("ignoring a tombstone (a null value) keyed %s on the control topic at %s: withdraw a version "
                      "with `stream-app models publish` instead", shown(message.key), at, extra=where)
            await self._report_bad_record(message.key, "a tombstone")
            return
        try:
            record = orjson.loads(message.value)
        except orjson.JSONDecodeError as exc:
            log.error("ignoring an unreadable control record at %s (%s): %s", at, exc, shown(message.value),
                      extra=where)
            await self._report_bad_record(message.key, "not JSON")
            return
        if (unread := version_not_read(record)) is not None:
            # a later contract (its release's CLI, or a producer's mistake): its fields may mean other things
            log.error("ignoring a control record at %s keyed %s: %s; this worker keeps the models it serves (publish "
                      "with `stream-app models publish` of this release, or upgrade the workers to the release that "
                      "writes it)", at, shown(message.key), unread, extra=where)
            self.errors["control"] = f"ignored the control record at {at}: {unread}"
            await self._report_bad_record(message.key, f"of another contract ({unread})")
            return
        if isinstance(record, dict) and message.key != str(record.get("role")).encode():
            # compaction keeps the latest record per key: one keyed otherwise would hide the role's own
            log.error("ignoring a control record at %s keyed %s, not by its role %s", at, shown(message.key),
                      shown(record.get("role")), extra=where)
            await self._report_bad_record(message.key, f"keyed by it but for role {shown(record.get('role'))}")
            return
        if not await self.apply(record, where=where):
            await self._report_bad_record(message.key, "against schemas/v1/model-control")

    async def _report_bad_record(self, key: bytes | None, what: str) -> None:
        """A bad record keyed by a role: compaction keeps the latest record per key, so it may come to stand alone
        for its role, and a worker that starts then serves no model in that role while the running ones keep
        theirs. Said on models.status, where `stream-app models status` shows it."""
        role = key.decode("utf-8", "replace") if key else ""
        if role not in ROLES:
            return
        current = getattr(self, role)
        serving = current.version if current else None
        reason = (f"the role's latest control record is {what}: once the topic is compacted a worker that starts "
                  f"serves no {role} model (this one keeps {serving or 'none'}); publish the version again with "
                  "`stream-app models publish`")
        # an error of the role: publishing the serving version again, as said, clears it and reports it serving
        self.errors[role] = reason
        await self._report(role, None, None, "refused", reason)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Read the control topic from its beginning, then follow it. `ready` is set once the records
        that existed at start have been applied (a starting worker serves the current model at once)."""
        settings = self.settings
        async with from_the_beginning(settings, settings.topics.model_control) as (consumer, tp, end):
            # Up to the end that existed at start, only each role's latest valid record is acted on (and the bad
            # ones after it): every superseded version was loaded in turn, one since deleted logged and reported
            # refused
            unread: dict[Any, list[Any]] | None = {}
            while True:
                batches = await consumer.getmany(tp, timeout_ms=500)
                messages = batches.get(tp, [])
                if unread is not None:
                    for message in messages:  # kept in the order of each key's latest record
                        earlier = unread.pop(message.key, [])
                        unread[message.key] = [message] if valid_for_its_key(message) else [*earlier, message]
                    if await consumer.position(tp) < end:
                        continue
                    messages, unread = [message for kept in unread.values() for message in kept], None
                for message in messages:
                    await self.receive(message)
                for role, (record, due, _) in list(self.refused.items()):
                    if time.monotonic() >= due:
                        await self.apply(record, retry=True)
                if ready is not None and not ready.is_set() and await consumer.position(tp) >= end:
                    ready.set()
