"""The yardstick of `stream-app bench --baseline`: a plain Faust app on the same broker and events.

Per event it does the least a stream worker does: parse the JSON, update one table entry (the user's
event count, changelog-backed) and send one record. It runs with the project's Faust transport (the
corrections Tansu needs, nothing else) and the worker's commit settings, in its own consumer group,
as `python -m stream_app.tools.plain_app` with the settings in the environment.
"""

from __future__ import annotations

from typing import Any

import faust
import orjson

from ..config import Settings
from ..stream import transport
from ..stream.datadir import faust_datadir

#: Appended to the app id: the plain app's group, changelog and output share nothing with the workers'.
SUFFIX = "-plain"


def plain_settings(settings: Settings) -> Settings:
    return settings.replace(app_id=settings.app_id + SUFFIX)


def output_topic(settings: Settings) -> str:
    return f"{settings.namespace}{settings.app_id}.out"


def build_plain_app(settings: Settings, partitions: int) -> faust.App:
    scheme = transport.configure(settings.fetch_max_wait_ms, settings.kafka_security)
    app = faust.App(
        settings.group_id,
        broker=[f"{scheme}://{host}" for host in settings.require_kafka().split(",")],
        broker_credentials=transport.faust_credentials(settings.kafka_security),
        store="memory://",
        datadir=faust_datadir(settings.group_id),
        topic_partitions=partitions,
        topic_replication_factor=settings.replication_factor,  # the changelogs
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.commit_interval_s,
        table_standby_replicas=0,
        web_enabled=False,
        env={},  # else Faust's unprefixed variables (WEB_PORT, BROKER_URL, ...: Kubernetes sets some) override these
    )
    inputs = app.topic(*settings.topics.inputs, key_serializer="raw", value_serializer="raw")
    output = app.topic(output_topic(settings), key_serializer="raw", value_serializer="raw", partitions=partitions)
    counts = app.Table("event-counts", default=int, partitions=partitions, key_type=bytes, value_type=int)

    @app.agent(inputs, name=f"{settings.app_id}.count")
    async def count(stream: faust.StreamT) -> None:
        async for event in stream.events():
            value: dict[str, Any] = orjson.loads(event.value)
            counts[event.key] += 1  # keyed by user, as the inputs: the entry lives in this partition
            await output.send(key=event.key, value=orjson.dumps(
                {"trigger_event_id": value["event_id"], "user_id": value["user_id"], "events": counts[event.key]}))

    return app


def main() -> None:
    import logging

    settings = Settings.from_env()
    app = build_plain_app(settings, settings.partitions)
    logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)
    faust.Worker(app, loglevel="warn", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
