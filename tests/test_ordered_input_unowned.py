"""A worker that owns no partition (starting before its first assignment, or between a rebalance's revoke
and its assignment) must not apply item epochs: the events of the partitions it is about to take wait
in those epochs, and the item state they see must hold every earlier epoch and no later one."""

from types import SimpleNamespace

import orjson

from stream_app.config import Settings
from stream_app.core.items import InMemoryItemIndex
from stream_app.stream.ordered_input import OrderedInput

START = 1_700_000_000_000
EPOCH_MS = 60_000


def minute_record(n: int) -> SimpleNamespace:
    """A purchase in its own item epoch: the n-th minute."""
    ts = START + n * EPOCH_MS
    event = {"event_id": f"e{n}", "user_id": f"u{n % 3}", "item_id": f"i{n % 5}", "type": "purchase",
             "stage": "order", "ts": ts, "schema_version": 1}
    return SimpleNamespace(offset=n, key=event["user_id"].encode(), value=orjson.dumps(event), timestamp=ts)


def delivered(topic: str, n: int) -> SimpleNamespace:
    rec = minute_record(n)
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=0, offset=n, key=rec.key, value=rec.value,
                                                   timestamp=rec.timestamp / 1000.0))


def read_unowned(count: int) -> tuple[OrderedInput, str]:
    settings = Settings(partitions=1, item_epoch_ms=EPOCH_MS)
    ordered = OrderedInput(settings, 1, InMemoryItemIndex(settings))
    ordered.sequencer.may_skip = lambda group, lane: True  # the empty lanes are not waited for
    topic = settings.topics.purchase
    ordered.push(topic, 0, [minute_record(n) for n in range(count)])
    ordered.release()  # read and released before the partition is this worker's
    return ordered, topic


def test_a_worker_without_partitions_keeps_its_item_state_behind_what_it_may_be_assigned():
    ordered, _ = read_unowned(5)
    assert ordered.items.applied_through is None  # was epoch 3: the events of epochs 0..3 would see it


def test_events_taken_over_at_an_assignment_see_no_item_state_past_their_epoch():
    ordered, topic = read_unowned(5)
    ordered.assign({0})
    ordered.resume_at({(t, 0): 0 for t in ordered.topics})  # the group's commit: nothing applied yet
    for n in range(5):
        ordered.deliver(delivered(topic, n))
    taken = []
    while True:
        ordered.release()
        epoch, ready = ordered.next_round(100)
        if not ready:
            break
        assert ordered.items.applied_through == epoch - 1  # every earlier epoch, none of its own
        ordered.count_applied(epoch, ready)  # as the batch applies them
        taken += [r.event.message.offset for r in ready]
    assert taken == [0, 1, 2, 3, 4]
    assert ordered.status()["stale_item_state"] == 0


def test_a_revoke_holds_the_item_state_until_the_next_assignment():
    ordered, topic = read_unowned(0)
    ordered.assign({0})
    ordered.resume_at({(t, 0): 0 for t in ordered.topics})
    ordered.push(topic, 0, [minute_record(n) for n in range(2)])
    ordered.release()
    _, ready = ordered.next_round(100)
    assert [r.event.message.offset for r in ready] == [0]
    ordered.revoke()  # 1 is left to apply; more comes meanwhile
    ordered.push(topic, 0, [minute_record(n) for n in range(2, 6)])
    ordered.release()
    assert ordered.items.applied_through == START // EPOCH_MS - 1  # not past the epoch of 1 (its next owner)


def test_a_standby_worker_applies_the_epochs_past_a_bounded_buffer_so_its_memory_stays_bounded():
    settings = Settings(partitions=1, item_epoch_ms=EPOCH_MS)
    ordered = OrderedInput(settings, 1, InMemoryItemIndex(settings))
    ordered.sequencer.may_skip = lambda group, lane: True
    ordered.KEEP_OTHERS = 4
    records = [minute_record(n) for n in range(12)]
    for n, record in enumerate(records):  # a user each: one item entry per epoch (no co-visited pairs)
        record.key, record.value = f"v{n}".encode(), orjson.dumps({**orjson.loads(record.value), "user_id": f"v{n}"})
    ordered.push(settings.topics.purchase, 0, records)
    ordered.release()
    first = minute_record(0).timestamp // EPOCH_MS
    # epochs first..first+10 complete; the last 4 entries buffered (first+8..first+11), the rest applied
    assert ordered.items.applied_through == first + 7
    assert sum(len(b.by_item) for buffers in ordered.items.pending.values() for b in buffers.values()) == 4
    assert ordered.status()["stale_item_state"] == 0
