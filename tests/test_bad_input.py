"""Bad input on the topics the workers read: refused with a reason, never applied."""

from __future__ import annotations

import time

import jsonschema
import orjson

from stream_app.config import Settings
from stream_app.contracts import ErasureRequest, Rejection, Source, load_schema
from stream_app.partitioning import partition_of
from stream_app.stream.erasures import ErasedUsers, ErasureFeed

YEAR = 365 * 24 * 3600 * 1000


def test_an_erasure_request_dated_ahead_of_its_record_is_a_dead_letter_not_a_silenced_user():
    """A request dated a century ahead was applied: every event of the user until then was dropped (counted,
    never dead-lettered), and the erased-users record keeps the latest time for good."""
    settings = Settings(partitions=4)
    feed = ErasureFeed(settings, 4, lambda: None, "w", None)
    user, now = "u-ahead", int(time.time() * 1000)
    mine = partition_of(user, 4)

    def push(offset: int, requested_at: int, stamp: int) -> None:
        value = orjson.dumps({"request_id": f"r{offset}", "user_id": user, "requested_at": requested_at,
                              "schema_version": 1})
        feed.push(user.encode(), value, Source("erasures", mine, offset, stamp))

    push(0, now + 100 * YEAR, now)  # dated ahead of its record
    push(1, now + 100 * YEAR, now + 100 * YEAR)  # and its record stamped as far ahead
    push(2, now, now)  # as `stream-app erase` sends one
    push(3, now - YEAR, now)  # dated before: erases less, refused for nothing
    due = {offset: checked for _, offset, checked in feed.due({mine}, ErasedUsers({}, settings, "e", "p"))}
    for offset in (0, 1):
        assert isinstance(due[offset], Rejection) and due[offset].reason == "timestamp_out_of_range", due[offset]
        assert "MAX_FUTURE_MS" in due[offset].detail
        jsonschema.validate(due[offset].to_record(now_ms=1), load_schema("dead-letter"))
    assert isinstance(due[2], ErasureRequest) and isinstance(due[3], ErasureRequest)


def test_a_bad_control_record_is_logged_in_a_line_of_bounded_size_that_says_what_is_wrong(caplog):
    """A 900 KB control record breaking the schema was logged whole: one 900 KB log line per worker and start."""
    import asyncio
    from types import SimpleNamespace

    from stream_app.stream.model_control import ModelWatcher

    watcher = ModelWatcher(Settings())
    huge = "y" * 900_000
    records = [(b"live", orjson.dumps({"role": "live", "x": huge})), (b"live", b"garbage" + huge.encode()),
               (b"live" + huge.encode(), orjson.dumps({"role": huge})), (b"live", None)]

    async def scenario() -> None:
        for offset, (key, value) in enumerate(records):
            await watcher.receive(SimpleNamespace(key=key, value=value, offset=offset))

    with caplog.at_level("ERROR", logger="stream_app.models"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and all(len(line) < 1000 for line in lines), [len(line) for line in lines]
    assert "breaks schemas/v1/model-control" in lines[0] and "unexpected character" in lines[1]
    assert "not by its role" in lines[2] and "tombstone" in lines[3]
    assert watcher.live is None and watcher.status()["errors"]


def test_the_status_stops_naming_an_invalid_control_record_once_a_valid_one_follows():
    """"control error: ignored an invalid control record" stood in the worker's status for good."""
    import asyncio

    from stream_app.stream.model_control import ModelWatcher

    watcher = ModelWatcher(Settings())

    async def scenario() -> None:
        await watcher.apply({"role": "live", "version": 3})
        assert "control" in watcher.status()["errors"]
        await watcher.apply({"role": "live", "version": None, "content_hash": None, "published_at": 1})

    asyncio.run(scenario())
    assert "control" not in watcher.status()["errors"]


def test_a_bad_control_record_keyed_by_a_role_is_reported_on_the_status_topic():
    """Compaction keeps the latest record per key: a bad one keyed `live` may come to stand alone for the role, and a
    worker started then serves no live model while the running ones keep theirs. Only the worker's log said so."""
    import asyncio
    from types import SimpleNamespace

    from stream_app.stream.model_control import ModelWatcher

    reports: list[dict] = []

    async def report(record: dict) -> None:
        reports.append(record)

    watcher = ModelWatcher(Settings(), report=report, worker_id="w1")
    records = [(b"live", None), (b"shadow", b"{not json"), (b"content", orjson.dumps({"role": "content", "x": 1})),
               (b"live", orjson.dumps({"role": "shadow"})), (b"nobody", None)]

    async def scenario() -> None:
        for offset, (key, value) in enumerate(records):
            await watcher.receive(SimpleNamespace(key=key, value=value, offset=offset))

    asyncio.run(scenario())
    assert [(r["role"], r["outcome"], r["version"]) for r in reports] == [
        ("live", "refused", None), ("shadow", "refused", None), ("content", "refused", None), ("live", "refused", None)]
    assert all("publish the version again" in r["reason"] and "keeps none" in r["reason"] for r in reports)
    assert "is a tombstone" in reports[0]["reason"] and "against schemas/v1/model-control" in reports[2]["reason"]
    from stream_app.contracts import validator

    for record in reports:
        validator("model-status")(record)


def test_a_control_record_that_breaks_the_schema_is_logged_with_where_it_was_read(caplog):
    """Every other bad control record's log line named its topic, partition and offset; one breaking the schema (a role
    of no model, a published_at of 1.5) did not, so an operator could not find it on the topic (helper-152)."""
    import asyncio
    from types import SimpleNamespace

    from stream_app.stream.model_control import ModelWatcher

    watcher = ModelWatcher(Settings())
    record = orjson.dumps({"role": "live", "version": None, "published_at": 1.5})

    with caplog.at_level("ERROR", logger="stream_app.models"):
        asyncio.run(watcher.receive(SimpleNamespace(topic="models.control", partition=0, key=b"live", value=record,
                                                    offset=7)))
    breaking = [r for r in caplog.records if "breaks schemas/v1/model-control" in r.getMessage()]
    assert len(breaking) == 1 and " at models.control[0]@7 that breaks" in breaking[0].getMessage()
    assert (breaking[0].topic, breaking[0].partition, breaking[0].offset) == ("models.control", 0, 7)
