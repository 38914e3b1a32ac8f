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
from stream_app.stream.batch_recommendations import Redeliverable
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


def run_batch(settings: Settings, profiles: dict, index: InMemoryItemIndex, items: list[Ready],
              redeliverable: Redeliverable | None = None) -> BatchHandler:
    """One batch; the lanes handed out up to its last event (a worker's `applied_marks`)."""
    handler = BatchHandler(settings, profiles, PartitionState({}, settings), index, Counters(), now=0,
                           redeliverable=redeliverable)
    handler.process_round(items, None, None)
    handed = {}
    for item in items:
        message = item.event.message
        handed[(message.topic, message.partition)] = message.offset + 1
    handler.snapshots("profiles.changelog", {}, "learners.changelog", handed)
    return handler


def changelog(handler: BatchHandler) -> dict[bytes, bytes]:
    """The profile records the batch sent to the table's changelog: what a worker taking the partition up restores."""
    return {key: value for topic, key, value, _ in handler.outbox.records if topic == "profiles.changelog"}


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
    # the worker died after the profiles' changelog was stored: its next owner restores it, gets the events again
    again = run_batch(settings, changelog(first), index_ahead(settings), items)
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
    first = run_batch(settings, {}, InMemoryItemIndex(settings), [ready(e, offset) for offset, e in enumerate(events)])
    retry = run_batch(settings, changelog(first), InMemoryItemIndex(settings), [ready(events[0], 99)])  # another offset
    assert retry.counters.duplicates == 1 and lists(retry, settings) == []


def test_the_worker_that_made_the_lists_keeps_none_in_its_table_and_publishes_none_again(settings):
    """It published them before its next batch, or died; a redelivery to it (a rebalance that kept the partition,
    before the commit) is dropped as before."""
    items = [ready(e, offset) for offset, e in enumerate(batch_events())]
    table: dict = {}
    first = run_batch(settings, table, InMemoryItemIndex(settings), items)
    assert all(b"batch_recommendations" not in record for record in table.values())
    assert all(b"batch_recommendations" in record for record in changelog(first).values())
    again = run_batch(settings, table, InMemoryItemIndex(settings), items)
    assert again.counters.duplicates == 5 and lists(again, settings) == []


def test_a_kept_list_whose_event_comes_after_a_new_one_of_its_user_is_published_and_kept_through_a_second_crash(
        settings):
    """The next owner reads u1's new event (lane B, offset 9) before the redelivered ones of lane A (a lane read late):
    the record it writes for u1 keeps the lists not yet read again, so the list of each comes out once its event does,
    even if that owner dies too after storing its record (helper-161's review)."""
    events = [event(0, "u1", "a"), event(1, "u1", "b")]
    lane_a = [ready(e, offset) for offset, e in enumerate(events)]
    first = run_batch(settings, {}, InMemoryItemIndex(settings), lane_a)
    made = lists(first, settings)
    book = Redeliverable()
    new = ready(event(2, "u1", "c"), 9)
    new.event.message.topic = "events.purchases"
    second = run_batch(settings, changelog(first), index_ahead(settings), [new], book)
    assert second.counters.applied == 1 and second.counters.recommendations_resent == 0
    kept = orjson.loads(changelog(second)[b"u1"])["batch_recommendations"]
    assert [(topic, offset) for topic, offset, _ in kept] == [(TOPIC, 0), (TOPIC, 1), ("events.purchases", 9)]
    # lane A comes now, on this owner ...
    third = run_batch(settings, second.profiles, index_ahead(settings), lane_a, book)
    assert lists(third, settings) == made and third.counters.recommendations_resent == 2
    # ... or on the next one, had this one died after storing its record
    after_second_crash = run_batch(settings, changelog(second), index_ahead(settings), lane_a)
    assert lists(after_second_crash, settings) == made


def test_kept_lists_are_let_go_once_their_lane_has_passed_them(settings):
    items = [ready(e, offset) for offset, e in enumerate(batch_events())]
    first = run_batch(settings, {}, InMemoryItemIndex(settings), items)
    book = Redeliverable()
    past = ready(event(7, "u1", "d"), 7)  # lane A handed out up to offset 7: the kept lists' events were read again
    second = run_batch(settings, changelog(first), InMemoryItemIndex(settings), [past], book)
    kept = orjson.loads(changelog(second)[b"u1"])["batch_recommendations"]
    assert [(topic, offset) for topic, offset, _ in kept] == [(TOPIC, 7)] and "u1" not in book.by_user


def test_a_record_with_its_batchs_lists_is_a_profile_of_the_schema_and_reads_as_before(settings):
    items = [ready(e, offset) for offset, e in enumerate(batch_events())]
    table = changelog(run_batch(settings, {}, InMemoryItemIndex(settings), items))
    stored = orjson.loads(table[b"u1"])
    assert len(stored["batch_recommendations"]) == 3
    jsonschema.validate(stored, load_schema("profile"))
    for entry in stored["batch_recommendations"]:
        jsonschema.validate(entry[2], load_schema("recommendation"))
    without = {k: v for k, v in stored.items() if k != "batch_recommendations"}
    assert Profile.from_json(table[b"u1"]).to_dict() == Profile.from_dict(without).to_dict()
    assert "batch_recommendations" not in orjson.loads(Profile.from_json(table[b"u1"]).snapshots()[1])


@pytest.mark.parametrize("forged", [[["events.clicks", 0, {"items": []}]], {"events.clicks": 0},
                                    [["events.clicks", 0]], [["events.clicks", "0", {"trigger_event_id": "u1-e0"}]],
                                    [["events.clicks", 0, {"trigger_event_id": "another"}]], "text", None])
def test_a_record_without_a_list_made_for_that_event_brings_none(forged):
    book = Redeliverable()
    book.take_up("u1", forged)
    assert book.published_for("u1", TOPIC, 0, "u1-e0") is None


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
    steps.clear()
    other = Outbox()  # a worker's other records (a model control's, an erasure's): one step, even those topics'
    other.add("profiles.changelog", b"u1", None)
    other.add(settings.topics.recommendations, b"u1", b"{}")
    asyncio.run(BatchProducer("unused:9092", settings.kafka_security).deliver(other))
    assert steps == [{"profiles.changelog", settings.topics.recommendations}]


def test_a_restore_keeps_the_workers_own_records_as_held_and_anothers_with_their_lists(settings):
    """Read again when the worker keeps a partition through a rebalance, its own record stays without the lists (it
    published them: no parse, no lists written on); another owner's, of the same user at another version, has them."""
    import faust

    from stream_app.stream.table_stores import ProfileTable

    items = [ready(e, offset) for offset, e in enumerate(batch_events())]
    table: dict = {}
    first = run_batch(settings, table, InMemoryItemIndex(settings), items)
    app = faust.App("restore-lists", store="memory://", broker="kafka://localhost:1")
    store = ProfileTable(app, name="profiles", beacon=app.tables.beacon, key_type=bytes, value_type=bytes).data
    store.data.update(table)

    def restore(records: dict[bytes, bytes]) -> None:
        store.apply_changelog_batch([SimpleNamespace(key=key, value=value, message=SimpleNamespace(
            value=value, partition=0, offset=0)) for key, value in records.items()], lambda k: k, lambda v: v)

    restore(changelog(first))
    assert store.data == table  # as the worker holds them
    another = run_batch(settings, changelog(first), InMemoryItemIndex(settings), [ready(event(7, "u1", "d"), 7)])
    restore(changelog(another))
    assert store.data[b"u1"] == changelog(another)[b"u1"] and b"batch_recommendations" in store.data[b"u1"]
    assert store.data[b"u2"] == table[b"u2"]


def test_no_record_of_a_lane_before_its_start_or_past_what_was_handed_out_is_handed_out_again(settings):
    from stream_app.stream.ordered_input import OrderedInput

    ordered = OrderedInput(settings, 2, InMemoryItemIndex(settings))
    ordered.assign({0})
    clicks, purchases = settings.topics.inputs[0], settings.topics.inputs[2]
    ordered.resume_at({(clicks, 0): 40, (purchases, 0): 7})
    ordered.handed[(0, 0)] = 52
    assert ordered.settled_marks() == {(clicks, 0): 53, (purchases, 0): 7}
    ordered.handed[(2, 0)] = 3  # not before the start: a lane's start is the group's commit
    assert ordered.settled_marks()[(purchases, 0)] == 7
