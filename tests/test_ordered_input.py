"""The worker's own partitions against the schedule the reader built: a record read while its partition
was owned is applied from the reader's copy; one released before waits for Faust's delivery, and a
record Faust skips is fetched again, never taken for applied; a copy is never applied twice."""

from types import SimpleNamespace

import jsonschema
import orjson

import stream_app.stream.faust_delivery as faust_delivery
import stream_app.stream.ordered_input as ordered_input
from stream_app.config import Settings
from stream_app.contracts import COUNTED_HEADER, REDRIVE_HEADER, REDRIVE_OF_HEADER, load_schema
from stream_app.core.events import Event
from stream_app.core.items import InMemoryItemIndex
from stream_app.partitioning import partition_of
from stream_app.stream.ordered_input import OrderedInput
from stream_app.stream.ready import ReadRecord, counted_before, input_source

START = 1_700_000_000_000


def purchase(n: int) -> dict:
    return {"event_id": f"e{n}", "user_id": f"u{n % 3}", "item_id": f"i{n % 5}", "type": "purchase",
            "stage": "order", "ts": START + n, "schema_version": 1}


def record(offset: int) -> SimpleNamespace:
    return SimpleNamespace(offset=offset, key=f"u{offset % 3}".encode(), value=orjson.dumps(purchase(offset)),
                           timestamp=START + offset)  # the producer's clock, in ms


def browse_record(offset: int, ts: int) -> SimpleNamespace:
    event = {**purchase(offset), "type": "browse", "event_id": f"b{offset}", "ts": ts}
    del event["stage"]
    return SimpleNamespace(offset=offset, key=event["user_id"].encode(), value=orjson.dumps(event), timestamp=ts)


class Delivered:
    """What Faust's consumer hands the agent: an event with its message."""

    def __init__(self, topic: str, offset: int, rec: SimpleNamespace | None = None):
        rec = rec or record(offset)
        self.message = SimpleNamespace(topic=topic, partition=0, offset=offset, key=rec.key, value=rec.value,
                                       timestamp=rec.timestamp / 1000.0)  # Faust's are in seconds


def own_partition(count: int, read_while_owned: bool = True) -> tuple[OrderedInput, str, list]:
    """`read_while_owned` False: the records were read and released before the partition was the
    worker's (another worker's then), so only their place in the schedule is kept."""
    settings = Settings(partitions=1)
    ordered = OrderedInput(settings, 1, InMemoryItemIndex(settings))
    forgotten: list = []
    ordered.forget = forgotten.append
    topic = settings.topics.purchase
    ordered.sequencer.may_skip = lambda group, lane: True  # the other (empty) lanes are not waited for
    if not read_while_owned:
        ordered.push(topic, 0, [record(n) for n in range(count)])
        ordered.release()
    ordered.assign({0})
    ordered.resume_at({(t, 0): 0 for t in settings.topics.inputs})  # Faust's seek, every lane
    if read_while_owned:
        ordered.push(topic, 0, [record(n) for n in range(count)])
    return ordered, topic, forgotten


def drain_ready(ordered: OrderedInput) -> list:
    """Every round's events, each counted as applied (as the batch handler applies a round's events)."""
    out = []
    while True:
        ordered.release()
        epoch, ready = ordered.next_round(100)
        if not ready:
            return out
        ordered.count_applied(epoch, [r for r in ready if isinstance(r.checked, Event)])
        out += ready


def drain(ordered: OrderedInput) -> list[int]:
    return [r.event.message.offset for r in drain_ready(ordered)]


def frozen_clock(monkeypatch) -> list[float]:
    """The reader's monotonic clock, moved by hand."""
    clock = [1000.0]
    monkeypatch.setattr(ordered_input.time, "monotonic", lambda: clock[0])
    return clock


def regained_at(ordered: OrderedInput, topic: str, commit: int) -> None:
    """The partition lost and got back at the group's commit `commit` on `topic`'s lane (0 on the others)."""
    ordered.revoke()
    ordered.assign({0})
    ordered.resume_at({(t, 0): commit if t == topic else 0 for t in ordered.topics})


def test_an_own_record_is_applied_from_the_readers_copy_and_faust_s_copy_is_let_go_when_it_comes():
    ordered, topic, forgotten = own_partition(4)
    ordered.deliver(Delivered(topic, 0))  # Faust's copy came first: it is the one applied (and acknowledged)
    ordered.release()
    _, ready = ordered.next_round(100)
    assert [r.event.message.offset for r in ready] == [0, 1, 2, 3]
    assert isinstance(ready[0].event, Delivered) and all(isinstance(r.event, ReadRecord) for r in ready[1:])
    assert ready[3].event.message.timestamp == (START + 3) / 1000  # in seconds, as Faust's
    assert ready[3].event.message.value == record(3).value and ready[3].checked.event_id == "e3"
    assert ordered.applied_marks() == {(topic, 0): 4}
    for offset in (1, 2, 3):  # Faust's copies of what the reader's applied: let go, not duplicates
        ordered.deliver(Delivered(topic, offset))
    assert [m.offset for m in forgotten] == [1, 2, 3] and ordered.status()["held"] == []
    ordered.deliver(Delivered(topic, 2))  # delivered twice by Faust: that one is a duplicate
    assert ordered.status()["duplicates"] == 1 and drain(ordered) == []


def test_the_readers_copy_waits_until_faust_has_sought_the_lane_to_the_commit():
    ordered, topic, forgotten = own_partition(4)
    ordered.assign({0})  # a rebalance kept the partition: where the group's commit is, Faust's seek tells
    assert drain(ordered) == []
    ordered.resume_at({(topic, 0): 2})  # the earlier owner applied 0 and 1
    assert drain(ordered) == [2, 3] and ordered.applied_marks() == {(topic, 0): 4}


def test_a_record_faust_skipped_is_fetched_again_not_taken_for_applied(monkeypatch):
    ordered, topic, forgotten = own_partition(6, read_while_owned=False)
    for offset in (0, 1, 4, 5):  # Faust's read position jumped past 2 and 3
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [0, 1]
    assert ordered.take_refetches() == [(topic, 0, 2)]
    assert ordered.take_refetches() == []  # asked once; again only if nothing comes
    assert [m.offset for m in forgotten] == [4, 5]  # let go unacknowledged
    assert ordered.status()["owned_pending"] == 4  # 2..5 still to apply
    for offset in (1, 2, 3, 4, 5):  # the seek brings 2.. again (and maybe a copy of 1)
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [2, 3, 4, 5]
    assert ordered.status()["duplicates"] == 1 and ordered.status()["refetches"] == 1
    assert ordered.status()["owned_pending"] == 0 and ordered.unscheduled == 0


def test_records_fetched_before_the_seek_back_do_not_make_the_re_fetched_one_look_delivered(monkeypatch):
    ordered, topic, forgotten = own_partition(9, read_while_owned=False)
    for offset in (0, 1, 4, 5):  # Faust's read position jumped past 2 and 3
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [0, 1] and ordered.take_refetches() == [(topic, 0, 2)]
    # the lane keeps streaming: what Faust's consumer fetched before the seek comes first, then what the seek brings,
    # all before the next round
    for offset in (6, 7, 2, 3, 4, 5, 6, 7, 8):
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [2, 3, 4, 5, 6, 7, 8]  # it had dropped 2..7 as copies and asked again 5 s later
    assert ordered.status()["refetches"] == 1 and ordered.take_refetches() == []
    assert ordered.status()["owned_pending"] == 0


def test_a_straggler_from_before_the_lanes_start_is_not_taken_for_what_the_seek_back_brings():
    ordered, topic, forgotten = own_partition(10, read_while_owned=False)
    for offset in range(5):
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [0, 1, 2, 3, 4]
    regained_at(ordered, topic, 5)  # what was handed out is forgotten with the lanes
    ordered.deliver(Delivered(topic, 7))  # 5 and 6 skipped
    assert drain(ordered) == [] and ordered.take_refetches() == [(topic, 0, 5)]
    ordered.deliver(Delivered(topic, 8))
    ordered.deliver(Delivered(topic, 2))  # a copy from before the rebalance, below the lane's start: let go
    assert [m.offset for m in forgotten][-1] == 2 and ordered.refetch_wanted
    for offset in (5, 6, 7, 8, 9):
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [5, 6, 7, 8, 9] and ordered.unscheduled == 0  # 2 had been applied again


def test_a_record_never_delivered_is_fetched_again_after_a_bounded_wait(monkeypatch):
    import stream_app.stream.ordered_input as ordered_input

    clock = [1000.0]
    monkeypatch.setattr(ordered_input.time, "monotonic", lambda: clock[0])
    ordered, topic, forgotten = own_partition(3, read_while_owned=False)
    ordered.deliver(Delivered(topic, 0))
    assert drain(ordered) == [0]
    assert ordered.take_refetches() == []  # waiting for 1 is normal at first
    clock[0] += faust_delivery.UNDELIVERED_WAIT_S / 2
    assert drain(ordered) == [] and ordered.take_refetches() == []
    clock[0] += faust_delivery.UNDELIVERED_WAIT_S / 2
    assert drain(ordered) == []
    assert ordered.take_refetches() == [(topic, 0, 1)]
    clock[0] += faust_delivery.REFETCH_AGAIN_S
    assert ordered.take_refetches() == [(topic, 0, 1)]  # nothing came: asked again
    for offset in (1, 2):
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [1, 2] and ordered.take_refetches() == []


def test_an_own_record_before_the_commit_is_skipped_as_applied_by_the_previous_owner():
    ordered, topic, forgotten = own_partition(4)
    ordered.assign({0})
    ordered.resume_at({(topic, 0): 2})  # the previous owner committed through 1
    for offset in (2, 3):
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [2, 3]
    assert ordered.take_refetches() == [] and not forgotten


def test_own_lanes_start_where_faust_seeks_to_the_commit_which_comes_after_the_assignment(monkeypatch):
    import stream_app.stream.ordered_input as ordered_input

    clock = [1000.0]
    monkeypatch.setattr(ordered_input.time, "monotonic", lambda: clock[0])
    ordered, topic, forgotten = own_partition(5)
    ordered.assign({0})  # a restart: the rebalance is complete, Faust has not sought yet, nothing delivered
    assert drain(ordered) == []
    clock[0] += faust_delivery.UNDELIVERED_WAIT_S  # a slow seek: offset 0 looks skipped meanwhile
    assert drain(ordered) == []
    ordered.resume_at({(topic, 0): 3, ("another.topic", 0): 9})  # the earlier owner committed through 2
    assert ordered.take_refetches() == []  # the seek made the re-fetch moot
    for offset in (3, 4):
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [3, 4]
    assert ordered.take_refetches() == [] and not forgotten
    assert ordered.status()["duplicates"] == 0 and ordered.unscheduled == 0


def test_events_handed_out_then_delivered_again_after_a_rebalance_back_are_applied_not_held_forever():
    # The chaos run's wedge: the worker applied 0..3, lost the partition before its next commit and got
    # it back at the old commit; Faust delivers 2 and 3 again, which its schedule had already passed.
    ordered, topic, forgotten = own_partition(4)
    for offset in range(4):
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [0, 1, 2, 3]
    ordered.revoke()
    ordered.assign({0})
    ordered.resume_at({(t, 0): 2 if t == topic else 0 for t in ordered.topics})  # the commit stayed at 2
    # Only Faust's consumer can bring 2 and 3 again: it must fetch the lane (paused, the commit stayed
    # at 2 for good, nothing newer coming to move it)
    assert ordered.faust_lanes() == {(topic, 0)}
    for offset in (2, 3):
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [2, 3]  # applied again (the profiles' digests drop them as duplicates)
    assert ordered.status()["held"] == [] and ordered.unscheduled == 2
    assert ordered.applied_marks() == {(topic, 0): 4} and ordered.faust_lanes() == set()
    ordered.push(topic, 0, [record(4)])
    ordered.deliver(Delivered(topic, 4))
    assert drain(ordered) == [4] and ordered.unscheduled == 2


def test_passed_records_after_the_commit_that_faust_never_brings_are_fetched_again(monkeypatch):
    clock = frozen_clock(monkeypatch)
    ordered, topic, forgotten = own_partition(4)
    assert drain(ordered) == [0, 1, 2, 3]
    ordered.revoke()
    assert ordered.faust_lanes() == set()  # until the next assignment's seek, no lane is wanted or waited for
    clock[0] += faust_delivery.UNDELIVERED_WAIT_S
    assert drain(ordered) == [] and ordered.take_refetches() == []
    regained_at(ordered, topic, 1)  # the commit stayed at 1
    assert drain(ordered) == [] and ordered.take_refetches() == []
    clock[0] += faust_delivery.UNDELIVERED_WAIT_S
    assert drain(ordered) == [] and ordered.take_refetches() == [(topic, 0, 1)]  # never brought: asked again
    for offset in (1, 2, 3):
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [1, 2, 3] and ordered.applied_marks() == {(topic, 0): 4}
    assert ordered.take_refetches() == [] and ordered.faust_lanes() == set()


def test_a_lane_behind_with_newer_records_waits_for_the_passed_ones_then_asks_for_them_again(monkeypatch):
    clock = frozen_clock(monkeypatch)
    ordered, topic, forgotten = own_partition(4)
    assert drain(ordered) == [0, 1, 2, 3]
    regained_at(ordered, topic, 1)  # the commit stayed at 1
    ordered.push(topic, 0, [record(4), record(5)])  # newer records, the reader's copies: they wait
    assert drain(ordered) == []
    clock[0] += faust_delivery.UNDELIVERED_WAIT_S / 2
    assert drain(ordered) == [] and ordered.take_refetches() == []
    clock[0] += faust_delivery.UNDELIVERED_WAIT_S / 2
    assert drain(ordered) == [] and ordered.take_refetches() == [(topic, 0, 1)]  # one wait, not two resetting
    for offset in (1, 2, 3):
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [1, 2, 3, 4, 5] and ordered.applied_marks() == {(topic, 0): 6}
    clock[0] += faust_delivery.REFETCH_AGAIN_S
    assert ordered.take_refetches() == []


def test_a_lane_behind_takes_what_faust_brings_across_offsets_that_do_not_exist(monkeypatch):
    # Offsets are not consecutive: a transaction marker (here 2), or a log start past the commit
    # (retention): what Faust brings from the commit is taken, not asked for again and again.
    clock = frozen_clock(monkeypatch)
    ordered, topic, forgotten = own_partition(0)
    offsets = [0, 1, 3, 4]
    ordered.push(topic, 0, [record(n) for n in offsets])
    assert drain(ordered) == offsets
    regained_at(ordered, topic, 0)  # never committed; the log now starts at 3
    assert drain(ordered) == []
    clock[0] += faust_delivery.UNDELIVERED_WAIT_S  # Faust slow to come: asked again from 0
    assert drain(ordered) == [] and ordered.take_refetches() == [(topic, 0, 0)]
    for offset in (3, 4):
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [3, 4]
    clock[0] += faust_delivery.UNDELIVERED_WAIT_S + faust_delivery.REFETCH_AGAIN_S
    assert drain(ordered) == [] and ordered.take_refetches() == []  # moot once the lane went past it
    assert ordered.faust_lanes() == set()


def test_the_readers_copy_does_not_overtake_passed_records_an_earlier_owner_has_not_applied():
    # Kept of another worker's partition, the schedule trimmed its purchases 0..2 (KEEP_OTHERS) and kept
    # three browses; their owner committed nothing. The reader's copy of purchase 3 must wait for
    # Faust's 0..2, or the lane's commit would go past records nobody applied.
    settings = Settings(partitions=1)
    ordered = OrderedInput(settings, 1, InMemoryItemIndex(settings))
    ordered.KEEP_OTHERS = 3
    ordered.forget = lambda message: None
    ordered.sequencer.may_skip = lambda group, lane: True
    purchases, browses = settings.topics.purchase, settings.topics.browse
    ordered.push(purchases, 0, [record(n) for n in range(3)])
    ordered.push(browses, 0, [browse_record(n, START + 10 + n) for n in range(3)])
    ordered.release()  # another worker's partition
    ordered.assign({0})
    ordered.resume_at({(t, 0): 0 for t in settings.topics.inputs})
    late = {**purchase(3), "ts": START + 20}
    ordered.push(purchases, 0, [SimpleNamespace(offset=3, key=b"u0", value=orjson.dumps(late), timestamp=START + 20)])
    for n in range(3):  # Faust brings the browses first
        ordered.deliver(Delivered(browses, n, browse_record(n, START + 10 + n)))
    applied = [(r.event.message.topic, r.event.message.offset) for r in drain_ready(ordered)]
    for n in range(3):  # ... then the purchases from the commit
        ordered.deliver(Delivered(purchases, n))
    applied += [(r.event.message.topic, r.event.message.offset) for r in drain_ready(ordered)]
    assert sorted(offset for topic, offset in applied if topic == purchases) == [0, 1, 2, 3]
    assert ordered.applied_marks()[(purchases, 0)] == 4


def test_an_event_on_another_partition_than_its_users_is_dead_lettered_as_wrong_partition():
    from stream_app.contracts import Rejection, Source
    from stream_app.core.events import Event
    from stream_app.partitioning import partition_of

    settings = Settings(partitions=8)
    ordered = OrderedInput(settings, 8, InMemoryItemIndex(settings))
    event = purchase(4)
    right = partition_of(event["user_id"], 8)
    lane = ordered.lane_of_topic[settings.topics.purchase]
    value, key = orjson.dumps(event), event["user_id"].encode()
    assert isinstance(ordered.checked(value, key, Source(settings.topics.purchase, right, 0), lane, START), Event)
    wrong = ordered.checked(value, key, Source(settings.topics.purchase, (right + 1) % 8, 0), lane, START)
    assert isinstance(wrong, Rejection) and wrong.reason == "wrong_partition" and f"partition {right}" in wrong.detail


def test_faust_fetches_only_the_lanes_whose_records_the_reader_has_no_copy_of():
    ordered, topic, forgotten = own_partition(3)
    assert ordered.faust_lanes() == set()  # every record has the reader's copy: Faust's consumer is paused
    ordered.assign({0})
    assert (topic, 0) in ordered.faust_lanes()  # no start yet: Faust's seek to the commit is to come
    ordered.resume_at({(t, 0): 0 for t in ordered.topics})
    assert ordered.faust_lanes() == set()

    ordered, topic, forgotten = own_partition(3, read_while_owned=False)
    assert ordered.faust_lanes() == {(topic, 0)}  # released while another worker's: only Faust has them
    ordered.deliver(Delivered(topic, 0))
    ordered.deliver(Delivered(topic, 1))
    assert drain(ordered) == [0, 1] and ordered.faust_lanes() == {(topic, 0)}
    ordered.push(topic, 0, [record(3)])  # read while owned: applied from the reader's copy once 2 is
    ordered.deliver(Delivered(topic, 2))
    assert drain(ordered) == [2, 3] and ordered.faust_lanes() == set()


def test_an_empty_topic_is_gone_on_without_only_once_its_end_was_asked_after_the_group_s_latest_record():
    """The end must postdate what waits: an end asked earlier says nothing about the records appended
    before the one that waits (at full speed 857 of 30,000 bench events were released late before)."""
    import asyncio

    from aiokafka import TopicPartition

    settings = Settings(partitions=1, max_idle_ms=0)  # no idle wait: the end alone decides
    ordered = OrderedInput(settings, 1, InMemoryItemIndex(settings))
    browse = {**purchase(1), "type": "browse", "event_id": "b1"}
    del browse["stage"]
    ordered.push(settings.topics.browse, 0, [SimpleNamespace(offset=0, key=b"u1", value=orjson.dumps(browse),
                                                             timestamp=START + 1)])
    answered: list[list[TopicPartition]] = []

    async def end_offsets(tps):
        answered.append(tps)
        return {tp: 0 for tp in tps}  # click and purchase: nothing in them

    ends = ordered.lane_ends
    ends.ends = {(lane, 0): 0 for lane in (1, 2)}  # read to their ends, as asked before the browse came
    ends.asked = {(lane, 0): 0.0 for lane in (1, 2)}
    ordered.release()
    assert len(ordered.schedules[0]) == 0 and ordered.sequencer.buffered() == 1  # waits: those ends are stale
    ends.probe = SimpleNamespace(end_offsets=end_offsets)
    asyncio.run(ends.refresh(ordered.sequencer.groups.values(), ordered.next_offset, 0.0))
    assert {tp.topic for tp in answered[0]} == {settings.topics.click, settings.topics.purchase}
    ordered.release()
    assert len(ordered.schedules[0]) == 1 and ordered.sequencer.buffered() == 0  # asked after it: gone on


def test_the_history_an_earlier_owner_applied_is_neither_late_nor_slow_for_this_worker():
    """A worker joining a group reads every lane from its beginning: records before its lanes' start were
    applied by an earlier owner, so its late counter and stage histograms cover only the ones it applies."""
    settings = Settings(partitions=1)
    ordered = OrderedInput(settings, 1, InMemoryItemIndex(settings))
    ordered.sequencer.may_skip = lambda group, lane: True
    topic = settings.topics.browse
    ordered.assign({0})
    ordered.resume_at({(t, 0): 4 for t in settings.topics.inputs})  # an earlier owner applied offsets 0-3
    stamps = [START, START + 10, START + 5, START + 20, START + 30, START + 25]  # 2 and 5 late in their partition
    ordered.push(topic, 0, [browse_record(offset, ts) for offset, ts in enumerate(stamps)])
    assert [r.event.message.offset for r in drain_ready(ordered)] == [4, 5]
    assert ordered.sequencer.late == 2 and ordered.status()["late_in_partition"] == 1
    assert {stage: int(ordered.stages.counts[stage].sum()) for stage in ("read", "ordered")} == {"read": 2, "ordered": 2}


def test_events_taken_over_past_a_trimmed_schedule_are_not_counted_late():
    """Such events are given a placeholder entry (late=True, no item): counting them at the batch (count_applied)
    made a takeover's in-order events late (helper-138)."""
    settings = Settings(partitions=1)
    ordered = OrderedInput(settings, 1, InMemoryItemIndex(settings))
    ordered.forget = lambda message: None
    ordered.KEEP_OTHERS = 3
    ordered.sequencer.may_skip = lambda group, lane: True
    topic = settings.topics.purchase
    ordered.push(topic, 0, [record(n) for n in range(8)])  # in time order: none late
    ordered.release()
    ordered.assign({0})
    ordered.resume_at({(t, 0): 0 for t in settings.topics.inputs})
    for n in range(8):
        ordered.deliver(Delivered(topic, n))
    assert len(drain_ready(ordered)) == 8 and ordered.unscheduled > 0
    assert ordered.status()["late_in_partition"] == 0


def test_a_redelivery_the_batch_drops_is_counted_neither_late_nor_ranked_with_a_stale_item_state():
    """A log replayed again: every event older than its partition's clock, and the item state past its epoch, but
    the batch drops each as a redelivery. `status` said thousands late and "ranked with a stale item state" of events
    no list was made for (a walkthrough, helper-137)."""
    settings = Settings(partitions=1)
    ordered = OrderedInput(settings, 1, InMemoryItemIndex(settings))
    ordered.sequencer.may_skip = lambda group, lane: True
    ordered.assign({0})
    ordered.resume_at({(t, 0): 0 for t in settings.topics.inputs})
    stamps = [START, START + 10, START + 5]  # the third late in its partition
    ordered.push(settings.topics.browse, 0, [browse_record(offset, ts) for offset, ts in enumerate(stamps)])
    rounds = []
    while True:
        ordered.release()
        epoch, ready = ordered.next_round(100)
        if not ready:
            break
        rounds.append((epoch, ready))
    assert sum(r.entry.late for _, ready in rounds for r in ready) == 1
    ordered.items.applied_through = rounds[-1][0] + 5  # as after a takeover from a worker that was behind
    for epoch, _ in rounds:
        ordered.count_applied(epoch, [])  # all dropped as redeliveries
    assert (ordered.status()["late_in_partition"], ordered.status()["stale_item_state"]) == (0, 0)
    for epoch, ready in rounds:
        ordered.count_applied(epoch, ready)  # all applied
    assert (ordered.status()["late_in_partition"], ordered.status()["stale_item_state"]) == (1, 3)


def test_a_re_driven_event_a_worker_failed_on_is_applied_but_not_counted_again_in_the_item_state():
    """Every worker's item feed counted a `processing_error` event when it was first read (the failure was in
    the profile's processing); `stream-app redrive` marks the copy it sends, and only such a copy is skipped.
    Refused again for another reason, its dead letter says so, and its next copy is marked the same."""
    ordered, topic, _ = own_partition(0)
    redriven = [record(n) for n in range(3)]
    redriven[1].headers = ((REDRIVE_HEADER, b"processing_error"), (COUNTED_HEADER, b"1"))
    redriven[2].headers = ((REDRIVE_HEADER, b"key_mismatch"),)  # refused at the gate: never counted
    ordered.push(topic, 0, redriven)
    assert drain(ordered) == [0, 1, 2]
    assert ordered.items.events == 2
    late = SimpleNamespace(offset=3, key=b"u0", value=orjson.dumps({**purchase(3), "user_id": "u0"}),
                           timestamp=START + 3 - 2 * 86_400_000,  # its event two days after its record: refused
                           headers=((REDRIVE_HEADER, b"processing_error"), (COUNTED_HEADER, b"1")))
    ordered.push(topic, 0, [late])
    (refused,) = drain_ready(ordered)
    assert refused.checked.reason == "timestamp_out_of_range" and refused.checked.to_record()["source"]["counted"]
    # checked again from Faust's delivery (a record released before its partition was this worker's)
    delivered = SimpleNamespace(topic=topic, partition=0, offset=3, key=late.key, value=late.value,
                                timestamp=late.timestamp / 1000, headers=late.headers)
    assert input_source(delivered).counted and ReadRecord.of(topic, 0, late).headers == late.headers
    assert not counted_before(SimpleNamespace(headers=[(REDRIVE_HEADER, b"processing_error")]))  # the reason alone


def test_the_dead_letter_of_a_re_driven_copy_refused_again_names_the_letter_it_copies():
    """A copy refused again cited only its own topic, partition and offset: nothing linked it to the letter it
    came from but the event id in its payload. A header of another shape (a producer's) is not copied."""
    ordered, topic, _ = own_partition(0)
    late = SimpleNamespace(offset=0, key=b"u0", value=orjson.dumps({**purchase(0), "user_id": "u0"}),
                           timestamp=START - 2 * 86_400_000,  # its event two days after its record: refused
                           headers=((REDRIVE_HEADER, b"timestamp_out_of_range"), (REDRIVE_OF_HEADER, b"events.dlq/3/41")))
    odd = SimpleNamespace(offset=1, key=b"u0", value=b"{not json", timestamp=START,
                          headers=((REDRIVE_OF_HEADER, b"somewhere else"),))
    ordered.push(topic, 0, [late, odd])
    letters = [ready.checked.to_record() for ready in drain_ready(ordered)]
    assert [letter["source"].get("redrive_of") for letter in letters] == ["events.dlq/3/41", None]
    for letter in letters:
        jsonschema.validate(letter, load_schema("dead-letter"))
    delivered = SimpleNamespace(topic=topic, partition=0, offset=0, key=late.key, value=late.value,
                                timestamp=late.timestamp / 1000, headers=late.headers)
    assert input_source(delivered).redrive_of == "events.dlq/3/41"


def test_faust_stops_fetching_a_lane_whose_deliveries_wait_unprocessed_beyond_the_lane_buffer():
    """A takeover of a partition far behind: what Faust's consumer fetched queued without bound (its own buffer
    pause never triggers, the agent drains its stream into the queue)."""
    ordered, topic, _ = own_partition(100, read_while_owned=False)  # 100 entries, no reader's copies
    ordered.release()
    assert not any([ordered.deliver(Delivered(topic, offset))
                    for offset in range(100, 100 + ordered.LANE_BUFFER_MAX - 1)])
    assert (topic, 0) in ordered.faust_lanes()
    assert ordered.deliver(Delivered(topic, 100 + ordered.LANE_BUFFER_MAX))  # full: the worker steers Faust at once
    assert (topic, 0) not in ordered.faust_lanes()  # paused by steer_faust until processing drains it
    ordered.refetch_wanted[(2, 0)] = (5, 0.0)
    assert (topic, 0) in ordered.faust_lanes()  # a fetch asked again is never held back


def test_scheduled_records_deleted_from_the_log_before_faust_brought_them_are_passed_and_counted(monkeypatch):
    """Records the reader saw while another worker owned the partition, then gone (retention) before this
    worker's Faust consumer fetched them: it delivered from the log's start on, past them, and the worker asked
    for them again every 5 s for ever, applying nothing of any partition after them."""
    import asyncio

    clock = frozen_clock(monkeypatch)
    ordered, topic, _ = own_partition(10, read_while_owned=False)  # 0..9 scheduled, released as another's

    class Probe:
        async def beginning_offsets(self, tps: list) -> dict:
            return {tp: 5 for tp in tps}  # the log starts at 5 now

    ordered.lane_ends.probe = Probe()
    for offset in range(5, 10):  # Faust's consumer, reset to the log's start
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [] and ordered.take_refetches() == [(topic, 0, 0)]
    clock[0] += 5.0
    asyncio.run(ordered.lane_ends.ask_starts(ordered.refetch_wanted))
    for offset in range(5, 10):  # the seek back to 0 was reset to 5 again
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [5, 6, 7, 8, 9]
    assert ordered.status()["gone_from_log"] == 5
    assert ordered._passed_behind() == {} and ordered.take_refetches() == []  # not asked for again for ever


def test_a_record_below_the_logs_new_start_that_the_reader_holds_is_applied_not_counted_gone(monkeypatch):
    """Passing every scheduled record below the log's start dropped those the reader had read while the worker
    owned the lane (it holds their copies): only Faust's consumer's missing records are gone."""
    import asyncio

    frozen_clock(monkeypatch)
    ordered, topic, _ = own_partition(5, read_while_owned=False)  # 0..4: another worker's then
    ordered.push(topic, 0, [record(n) for n in range(5, 10)])  # 5..9 read since the takeover: copies held

    class Probe:
        async def beginning_offsets(self, tps: list) -> dict:
            return {tp: 8 for tp in tps}

    ordered.lane_ends.probe = Probe()
    ordered.refetch_wanted[(2, 0)] = (0, 0.0)
    asyncio.run(ordered.lane_ends.ask_starts(ordered.refetch_wanted))
    for offset in (8, 9):  # Faust's consumer, reset to the log's start
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [5, 6, 7, 8, 9] and ordered.status()["gone_from_log"] == 5


def test_a_lane_whose_scheduled_records_are_all_gone_from_the_log_is_not_asked_for_again(monkeypatch):
    """Passing the gone records moved `passed` but not `handed`: a quiet lane asked Faust to seek back to 0 every
    5 s for ever."""
    import asyncio

    clock = frozen_clock(monkeypatch)
    ordered, topic, _ = own_partition(10, read_while_owned=False)

    class Probe:
        async def beginning_offsets(self, tps: list) -> dict:
            return {tp: 10 for tp in tps}  # all ten deleted; nothing new on the lane

    ordered.lane_ends.probe = Probe()
    drain(ordered)
    clock[0] += 11.0  # undelivered for longer than UNDELIVERED_WAIT_S: a re-fetch is asked
    drain(ordered)
    assert ordered.take_refetches() == [(topic, 0, 0)]
    asyncio.run(ordered.lane_ends.ask_starts(ordered.refetch_wanted))
    assert drain(ordered) == [] and ordered.status()["gone_from_log"] == 10
    clock[0] += 11.0
    drain(ordered)
    assert ordered._passed_behind() == {} and ordered.take_refetches() == []


def test_an_event_stamped_ahead_of_the_clock_does_not_hold_back_its_partition(monkeypatch):
    """A client clock 90 s fast: the event's ts is 90 s after its record's Kafka timestamp and the reader's clock (the
    gate allows up to MAX_FUTURE_MS). Ordered by its ts, it sat in a later item epoch, and its lane's next events,
    stamped right, waited behind it until every other partition's event time reached it (46 s of no lists for one
    partition's users in a trial at 50 events/s). It is placed at the reader's clock: the same round as the rest. A
    producer whose clock is behind (its records stamped 120 s early) moves nothing: its events' ts are not ahead."""
    monkeypatch.setattr(ordered_input.time, "time", lambda: (START + 10) / 1000)  # the reader's clock
    settings = Settings(partitions=3)
    ordered = OrderedInput(settings, 3, InMemoryItemIndex(settings))
    ordered.forget = lambda _: None
    topic = settings.topics.browse
    ordered.sequencer.may_skip = lambda group, lane: True
    ordered.assign({0, 1, 2})
    ordered.resume_at({(t, p): 0 for t in settings.topics.inputs for p in (0, 1, 2)})

    def browse(partition: int, offset: int, ts: int, record_ts: int) -> SimpleNamespace:
        user = next(f"u{n}" for n in range(100) if partition_of(f"u{n}", 3) == partition)
        event = {"event_id": f"b{partition}-{offset}", "user_id": user, "item_id": "i1", "type": "browse", "ts": ts,
                 "schema_version": 1}
        return SimpleNamespace(offset=offset, key=user.encode(), value=orjson.dumps(event), timestamp=record_ts)

    ordered.push(topic, 0, [browse(0, 0, START + 90_000, START)] + [browse(0, n, START + 10 + n, START + 10 + n)
                                                                      for n in range(1, 4)])  # sent after it
    ordered.push(topic, 1, [browse(1, n, START + n, START + n) for n in range(4)])
    ordered.push(topic, 2, [browse(2, n, START + n, START + n - 120_000) for n in range(4)])  # a slow producer
    ordered.release()
    epoch, ready = ordered.next_round(100)
    assert epoch == START // settings.item_epoch_ms and len(ready) == 12
    assert ordered.sequencer.late == 0
    assert ready[0].checked.ts == START + 90_000  # applied with its own time: only its place in the order moved


def test_a_wait_for_faust_s_delivery_ends_when_the_record_comes():
    """A record of the schedule Faust had not delivered yet is waited for on a clock, and the reader wakes the batch
    loop at every poll while it is; once delivered and handed out it waits for nothing (it kept the reader waking the
    loop 40 times a second until the next rebalance)."""
    ordered, topic, _ = own_partition(4, read_while_owned=False)
    assert drain(ordered) == [] and ordered.waiting()  # released before the partition was owned: Faust brings it
    for offset in range(4):
        ordered.deliver(Delivered(topic, offset))
    assert drain(ordered) == [0, 1, 2, 3]
    assert not ordered.waiting()


def test_a_full_lane_of_faust_deliveries_is_paused_at_once_not_at_the_next_batch():
    """Only a batch steered Faust's consumer, and no batch runs while the worker waits for its models and catalogue
    (up to 10 minutes) or while one retries an outage: Faust's deliveries of the owned lanes queued without bound."""
    import asyncio

    from stream_app.stream.worker import StreamWorker

    ordered, topic, _ = own_partition(100, read_while_owned=False)
    ordered.release()
    steered: list[int] = []
    chunks = [[Delivered(topic, offset) for offset in range(start, start + 500)]
              for start in range(100, 100 + ordered.LANE_BUFFER_MAX + 500, 500)]

    class Stream:
        async def noack_take(self, size, within):
            for chunk in chunks:
                yield chunk

    worker = SimpleNamespace(settings=Settings(), ordered=ordered, steer_faust=lambda: steered.append(1),
                             metrics=SimpleNamespace(stages=SimpleNamespace(observe=lambda *args: None)))
    asyncio.run(StreamWorker.take_inputs(worker, Stream()))
    assert len(steered) == 2  # from the chunk that filled the lane on


def test_read_to_names_each_input_partition_by_its_topic():
    from types import SimpleNamespace

    from stream_app.stream.ordered_input import OrderedInput

    fake = SimpleNamespace(topics=["events.browse", "events.click"], next_offset={(0, 3): 17, (1, 0): 5})
    assert OrderedInput.read_to(fake) == {("events.browse", 3): 17, ("events.click", 0): 5}
