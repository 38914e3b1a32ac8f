"""The fault guarantees under chaos (tools/chaos.py): a short run of `stream-app chaos` in the suite, and
its checks shown to catch a loss, a missing dead letter and a diverging item state."""

from __future__ import annotations

import time

import orjson
import pytest
from conftest import wait_until

from stream_app.config import Settings
from stream_app.store.redis_store import profile_key
from stream_app.tools.bench import synthetic_events
from stream_app.tools.chaos import POISON_KINDS, ChaosPlan, poison_record, run_chaos
from stream_app.tools.chaos_checks import verify
from stream_app.tools.consume import wait_committed
from stream_app.tools.replay import Produced, make_producer, produce_events


@pytest.mark.integration
def test_a_short_chaos_run_loses_nothing_counts_nothing_twice_and_dead_letters_every_poison(tmp_path):
    plan = ChaosPlan(events=4000, users=200, items=800, rate=60.0, kill_every_s=(8.0, 14.0), poison_every=100,
                     broker_pause_s=3.0, redis_down_s=4.0, drain_timeout_s=240.0, seed=11)
    report = run_chaos(plan, Settings.from_env({}), tmp_path / "chaos", say=print)  # the timeline, on failure
    assert report["passed"], orjson.dumps(report, option=orjson.OPT_INDENT_2, default=str).decode()
    # the faults really happened
    assert report["kills"] >= 3 and report["joins"] == 2 and report["leaves"] == 1
    assert report["faults"]["restart_redis"] == 1 and report["faults"]["pause_broker"] == 1
    assert report["redis_count_mismatches"] == 0 and report["table_count_mismatches"] == 0
    assert report["recommendations"]["missing"] == 0 and report["recommendations"]["differing_repeats"] == 0
    assert report["dead_letters"]["expected"] == 40 and report["dead_letters"]["missing"] == 0
    assert set(report["dead_letters"]["by_reason"]) == set(POISON_KINDS)
    assert report["item_state"]["equal"] and report["item_state"]["workers"] >= 1


class OneWorker:
    def __init__(self, worker):
        self.worker = worker

    def live_pids(self) -> set[int]:
        return {self.worker.pid}


def test_the_chaos_checks_catch_a_lost_event_a_missing_dead_letter_another_item_state_and_a_missed_write(
        make_settings, start_worker, redis_client):
    settings = make_settings()
    worker = start_worker(settings)
    events = synthetic_events(400, users=30, items=80, prefix="checks")
    produced = produce_events(settings, events)
    poison: dict[str, str] = {}
    producer = make_producer(settings)
    sent = Produced()
    for n, kind in enumerate(POISON_KINDS):
        topic, key, value, partition = poison_record(kind, n, settings, int(time.time() * 1000))
        producer.send(topic, key=key, value=value, partition=partition).add_callback(sent.acked)
        poison[key.decode()] = kind
    producer.flush()
    producer.close()
    marks = dict(produced.marks)
    for tp, mark in sent.marks.items():
        marks[tp] = max(mark, marks.get(tp, 0))
    wait_committed(settings, marks, timeout=90)
    wait_until(lambda: verify(settings, events, poison, OneWorker(worker), item_wait_s=10)["passed"], 60,
               "the checks to pass on what was sent")

    unsent = {**events[0], "event_id": "never-sent", "user_id": "u-never"}
    lost = verify(settings, [*events, unsent], {**poison, "poison-99": "invalid_json"}, OneWorker(worker),
                  item_wait_s=6)
    assert not lost["passed"]
    assert lost["redis_count_mismatches"] == 1 and lost["table_count_mismatches"] == 1
    assert lost["version_mismatches"] == 0  # the unsent user is in neither
    behind = events[0]["user_id"]  # Redis a version behind the table, as if it had missed a write
    key = profile_key(behind, settings.namespace)
    redis_client.hincrby(key, "profile_version", -1)
    assert verify(settings, events, poison, OneWorker(worker), item_wait_s=6)["version_mismatches"] == 1
    redis_client.hincrby(key, "profile_version", 1)
    assert lost["recommendations"]["missing"] == 1
    assert lost["dead_letters"]["missing"] == 1
    assert not lost["item_state"]["equal"]  # the worker's item state lacks the unsent event
