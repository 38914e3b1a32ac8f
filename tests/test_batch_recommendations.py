"""A batch's recommendations go out after its profile records, which keep them: a worker that died between the two
leaves the next owner to publish them as they were made, not ranked again from its own item state, which may be
ahead (the chaos test once saw a list published twice and different: 2026-12-07)."""

from __future__ import annotations

import asyncio
import doctest
from types import SimpleNamespace

import jsonschema
import orjson
import pytest

from stream_app.config import Settings
from stream_app.contracts import load_schema
from stream_app.core.events import Event
from stream_app.core.item_feed import ItemFeed
from stream_app.core.items import InMemoryItemIndex
from stream_app.core.profile import Profile
from stream_app.stream import batch_recommendations
from stream_app.stream.batch import BatchHandler, Counters, PartitionState
from stream_app.stream.output import BatchProducer, Outbox
from stream_app.stream.ready import Ready

T0 = 1_700_000_000_000
TOPIC = "events.clicks"


def event(n: int, user: str, item: str) -> Event:
    return Event.from_dict({"event_id": f"{user}-e{n}", "user_id": user, "item_id": item, "type": "click",
                            "ts": T0 + 60_000 * n, "schema_version": 1})


def ready(event: Event, offset: int) -> Ready:
    message = SimpleNamespace(topic=TOPIC, partition=0, offset=offset, key=event.user_id.encode(),
                              value=orjson.dumps({"event_id": event.event_id}), timestamp=event.ts / 1000)
    return Ready(entry=None, event=SimpleNamespace(message=message), checked=event)


def batch_events() -> list[Event]:
    return [event(n, user, item) for n, (user, item) in enumerate(
        [("u1", "a"), ("u2", "b"), ("u1", "c"), ("u2", "a"), ("u1", "b")])]


def index_ahead(settings: Settings) -> InMemoryItemIndex:
    """An item state that has applied epochs the batch was ranked before: other users made x, y and z popular."""
    index = InMemoryItemIndex(settings)
    feed = ItemFeed(settings, index)
    for n in range(30):
        feed.add(event(n, f"other{n}", "xyz"[n % 3]), 0, 1)
    feed.advance(1)
    return index


def run_batch(settings: Settings, profiles: dict, index: InMemoryItemIndex, items: list[Ready]) -> BatchHandler:
    handler = BatchHandler(settings, profiles, PartitionState({}, settings), index, Counters(), now=0)
    handler.process_round(items, None, None)
    handler.snapshots("profiles.changelog", {}, "learners.changelog")
    return handler


def lists(handler: BatchHandler, settings: Settings) -> list[tuple[bytes, bytes]]:
    return [(key, value) for topic, key, value, _ in handler.outbox.records if topic == settings.topics.recommendations]


@pytest.fixture
def settings() -> Settings:
    return Settings(ranker_warm_up=2)


def test_the_modules_docstring_example_runs():
    assert doctest.testmod(batch_recommendations).failed == 0


def test_a_redelivered_batch_whose_records_were_stored_publishes_its_lists_as_made_not_ranked_again(settings):
    items = [ready(e, offset) for offset, e in enumerate(batch_events())]
    table: dict = {}
    first = run_batch(settings, table, InMemoryItemIndex(settings), items)
    made = lists(first, settings)
    assert len(made) == 5
    # ranked again from the item state ahead, the lists would differ: what the test guards against
    fresh = run_batch(settings, {}, index_ahead(settings), items)
    assert lists(fresh, settings) != made
    # the worker died after the profiles' changelog was stored: its next owner gets the events again
    again = run_batch(settings, dict(table), index_ahead(settings), items)
    assert again.counters.duplicates == 5 and again.counters.applied == 0
    assert lists(again, settings) == made and again.counters.recommendations_resent == 5
    assert again.counters.recommendations == 0  # published again, not made


def test_a_batch_stopped_before_its_records_were_stored_is_ranked_anew_with_nothing_resent(settings):
    items = [ready(e, offset) for offset, e in enumerate(batch_events())]
    first = run_batch(settings, {}, InMemoryItemIndex(settings), items)
    again = run_batch(settings, {}, index_ahead(settings), items)  # nothing of the first batch was stored
    assert again.counters.applied == 5 and again.counters.recommendations_resent == 0
    assert lists(again, settings) != lists(first, settings)  # published once: the first batch published none


def test_a_producers_retry_of_an_event_is_a_duplicate_but_brings_no_list_again(settings):
    events = batch_events()
    table: dict = {}
    run_batch(settings, table, InMemoryItemIndex(settings), [ready(e, offset) for offset, e in enumerate(events)])
    retry = run_batch(settings, table, InMemoryItemIndex(settings), [ready(events[0], 99)])  # another offset
    assert retry.counters.duplicates == 1 and lists(retry, settings) == []


def test_a_list_published_again_stays_in_the_record_a_later_event_of_its_user_writes(settings):
    """A second crash after that batch's records were stored must still find it."""
    events = batch_events()
    items = [ready(e, offset) for offset, e in enumerate(events)]
    table: dict = {}
    made = dict(lists(run_batch(settings, table, InMemoryItemIndex(settings), items[:1]), settings))
    later = event(9, "u1", "d")
    run_batch(settings, table, InMemoryItemIndex(settings), [items[0], ready(later, 9)])
    kept = orjson.loads(table[b"u1"])["batch_recommendations"]
    assert [(topic, offset) for topic, offset, _ in kept] == [(TOPIC, 0), (TOPIC, 9)]
    assert orjson.dumps(kept[0][2]) == made[b"u1"]


def test_a_record_with_its_batchs_lists_is_a_profile_of_the_schema_and_reads_as_before(settings):
    items = [ready(e, offset) for offset, e in enumerate(batch_events())]
    table: dict = {}
    run_batch(settings, table, InMemoryItemIndex(settings), items)
    stored = orjson.loads(table[b"u1"])
    assert len(stored["batch_recommendations"]) == 3
    jsonschema.validate(stored, load_schema("profile"))
    for entry in stored["batch_recommendations"]:
        jsonschema.validate(entry[2], load_schema("recommendation"))
    without = {k: v for k, v in stored.items() if k != "batch_recommendations"}
    assert Profile.from_json(table[b"u1"]).to_dict() == Profile.from_dict(without).to_dict()
    assert "batch_recommendations" not in orjson.loads(Profile.from_json(table[b"u1"]).snapshots()[1])


@pytest.mark.parametrize("forged", [b'{"user_id":"u1","batch_recommendations":[["events.clicks",0,{"items":[]}]]}',
                                    b'{"user_id":"u1","batch_recommendations":{"events.clicks":0}}',
                                    b'{"user_id":"u1","batch_recommendations":[["events.clicks",0]]}',
                                    b'{"user_id":"u1","batch_recommendations":[', b"not json"])
def test_a_record_without_a_list_made_for_that_event_brings_none(forged):
    assert batch_recommendations.published_for(forged, TOPIC, 0, "u1-e0") is None


def test_a_batch_stores_its_profile_records_before_its_lists_and_everything_else_before_both(settings, monkeypatch):
    items = [ready(e, offset) for offset, e in enumerate(batch_events())]
    handler = run_batch(settings, {}, InMemoryItemIndex(settings), items)
    handler.dead_letter(SimpleNamespace(reason="r", source=SimpleNamespace(topic=TOPIC, partition=0, offset=7),
                                        detail="", message_key=lambda: b"k", to_record=lambda now: {"r": 1}))
    steps: list[set[str]] = []

    async def sent(self, records):
        steps.append({topic for topic, *_ in records})

    monkeypatch.setattr(BatchProducer, "_send", sent)
    asyncio.run(BatchProducer("unused:9092", settings.kafka_security).deliver(handler.outbox))
    assert steps == [{settings.topics.profiles, "learners.changelog", settings.topics.dlq}, {"profiles.changelog"},
                     {settings.topics.recommendations}]
    assert Outbox().later == []  # an outbox of a worker's other records: one step
