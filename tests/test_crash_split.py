"""A worker killed between the produce requests of one batch: the broker stored part of the batch's records.

Several produce requests carry one batch's output (one per partition leader: on a cluster of several
brokers they go out side by side; on one broker a record batch over 1 MiB, or a partial failure being
retried, splits them too). Here a fault injected in the worker process (a `sitecustomize` on its PYTHONPATH)
holds back the Nth record batch the worker sends to one topic, lets every other request it has sent be
stored, then SIGKILLs the worker. A new worker then takes the events up again.
"""

from __future__ import annotations

import os
import textwrap
import time

import orjson
import pytest
from conftest import wait_until

from stream_app.tools.consume import TopicReader, wait_committed
from stream_app.tools.recorded import load_sorted
from stream_app.tools.replay import produce_events

INJECTION = textwrap.dedent('''
    import os, signal, sys
    if os.environ.get("CRASHSPLIT_WITHHOLD") and "worker" in sys.argv:
        import asyncio
        from aiokafka import AIOKafkaProducer

        send_batch, seen = AIOKafkaProducer.send_batch, [0]

        async def split_send_batch(self, batch, topic, *, partition):
            mark = os.environ["CRASHSPLIT_MARK"]
            if topic != os.environ["CRASHSPLIT_WITHHOLD"] or os.path.exists(mark):
                return await send_batch(self, batch, topic, partition=partition)
            seen[0] += 1
            if seen[0] < int(os.environ["CRASHSPLIT_AT"]):
                return await send_batch(self, batch, topic, partition=partition)
            open(mark, "w").close()  # once: the worker started next takes the events up again
            loop = asyncio.get_running_loop()
            loop.call_later(3.0, os.kill, os.getpid(), signal.SIGKILL)  # the others' requests answered by then
            return loop.create_future()  # this request never reaches the broker

        AIOKafkaProducer.send_batch = split_send_batch
''')


def test_a_kill_between_the_produce_requests_of_a_batch_loses_no_recommendation(make_settings, start_worker,
                                                                                 tmp_path, monkeypatch):
    """The request of a batch's recommendations is lost, the others are stored, the worker dies: every event
    still gets its recommendation, and every list is the one the in-process pass gives. The recommendations go out
    once the profiles' changelog is stored, whose records keep them: the new worker reads the events as duplicates
    and publishes the lists kept (batch_recommendations.py). Until 2026-12-01 the changelog was stored beside the
    recommendations, and the new worker skipped the events: their recommendations were never published (90 of 1888
    here)."""
    settings = make_settings(ranker_warm_up=100, commit_interval_s=0.5, max_idle_ms=2000)
    missing, differ, total = kill_between_requests(settings, settings.topics.recommendations, start_worker, tmp_path,
                                                   monkeypatch)
    assert not missing, f"{len(missing)} of {total} events have no recommendation"
    assert differ == [], f"{len(differ)} of {total} events published another list or version"


@pytest.mark.parametrize("table", ["profiles", "partition-learners"])
def test_a_kill_between_the_two_changelogs_of_a_batch_keeps_the_lists_of_the_in_process_pass(
        table, make_settings, start_worker, tmp_path, monkeypatch):
    """The request of one table's changelog is lost, the other's is stored, the worker dies: the learners
    the next worker restores are those of the profiles it restores, so every list is the in-process pass's.
    Before, a stored learners record beside lost profiles had learned the batch the new worker applied again
    (and lost learners beside stored profiles never learned it): later lists differed."""
    settings = make_settings(ranker_warm_up=100, commit_interval_s=0.5, max_idle_ms=2000)
    missing, differ, total = kill_between_requests(settings, f"{settings.group_id}-{table}-changelog", start_worker,
                                                   tmp_path, monkeypatch, at=5)
    assert not missing, f"{len(missing)} of {total} events have no recommendation"
    assert differ == [], f"{len(differ)} of {total} events published another list or version"
    if table == "profiles":  # the new worker took up the learners before that batch (not the same lists by chance)
        assert "was stored without the profiles of its batch" in (tmp_path / "worker-1.log").read_text()


def kill_between_requests(settings, withhold: str, start_worker, tmp_path, monkeypatch, at: int = 3):
    """Run the sample through a worker that loses its `at`th record batch to `withhold` and is killed, then
    through a new one: (events without a recommendation, events whose lists differ from the in-process pass's,
    events)."""
    from stream_app.evaluate.prequential import evaluate_events
    from stream_app.tools.demo import SAMPLE, SAMPLE_FORMAT

    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(INJECTION)
    mark = tmp_path / "fired"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "inject"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CRASHSPLIT_WITHHOLD", withhold)
    monkeypatch.setenv("CRASHSPLIT_MARK", str(mark))
    monkeypatch.setenv("CRASHSPLIT_AT", str(at))
    events, _ = load_sorted(SAMPLE, SAMPLE_FORMAT)
    first = start_worker(settings)
    marks = produce_events(settings, events).marks
    wait_until(lambda: not first.alive(), 90, "the injected kill")
    assert mark.exists(), first.log_tail()
    start_worker(settings)
    wait_committed(settings, marks, timeout=120)
    published: dict[str, set] = {}  # a batch redone after the crash publishes its lists again: the same ones
    with TopicReader(settings.kafka_bootstrap_servers, settings.topics.recommendations) as recs:
        deadline = time.monotonic() + 30  # all of it (a lost recommendation is said below)
        while time.monotonic() < deadline:
            new = recs.poll()
            if not new and len(published) == len(events):
                break
            for record in new:
                rec = orjson.loads(record.value)
                published.setdefault((rec["user_id"], rec["trigger_event_id"]), set()).add(
                    (rec["profile_version"], tuple(item["item_id"] for item in rec["items"])))
    in_process = evaluate_events(events, settings, settings.top_k, baselines=False, record=True)["recorded"]
    missing = set(in_process) - set(published)
    differ = [e for e, (version, items) in in_process.items()
              if e in published and published[e] != {(version, tuple(items))}]
    return missing, differ, len(in_process)
