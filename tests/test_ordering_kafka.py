"""Deterministic replay through real workers: the Kafka path gives the in-process pass's profiles and
recommendations event for event, whatever the topic skew, ties, late events, number of workers,
replay speed or machine load."""

from __future__ import annotations

import orjson
from conftest import wait_until
from kafka import TopicPartition
from test_pipeline import read_all

from stream_app.evaluate.prequential import evaluate_events
from stream_app.evaluate.via_kafka import evaluate_via_kafka
from stream_app.store.redis_store import read_profile
from stream_app.tools.consume import committed_offsets
from stream_app.tools.processes import wait_ready_workers
from stream_app.tools.recorded import load_sorted
from stream_app.tools.replay import produce_events
from stream_app.tools.scrape import scrape
from stream_app.tools.synth import SynthConfig, write


def skewed_log_with_ties_and_late_events(path) -> list[dict]:
    """A synthetic log as a producer might send it: topic by topic (every browse event first, then
    clicks, then purchases), with ties across topics and events out of time order within a topic."""
    write(SynthConfig(events=3000, seed=11), path)
    events, _ = load_sorted(path, "jsonl")
    for i in range(0, len(events) - 1, 50):  # ties: the next event of the log at the same millisecond
        events[i + 1]["ts"] = events[i]["ts"]
    for i in range(25, len(events) - 30, 100):  # late: an event stamped 20 events earlier than its place
        events[i]["ts"] = events[i - 20]["ts"] - 1
    return sorted(events, key=lambda e: ["browse", "click", "purchase"].index(e["type"]))  # stable: topic by topic


def test_skewed_topics_ties_and_late_events_through_two_workers_match_the_in_process_pass(
        make_settings, start_worker, redis_client, tmp_path):
    events = skewed_log_with_ties_and_late_events(tmp_path / "events.jsonl")
    settings = make_settings(max_idle_ms=5000)  # covers the gap between the topics as they are produced
    # the first worker ends each batch after its first round (STREAM_APP_BATCH_WORK_S=0): a batch's size changes no list
    workers = [start_worker(settings.replace(batch_work_s=0.0), wait_ready=False),
               start_worker(settings, wait_ready=False)]
    wait_ready_workers(settings, workers, 90)
    produce_events(settings, events, rate=None)
    tps = [TopicPartition(t, p) for t in settings.topics.inputs for p in range(settings.partitions)]
    wait_until(lambda: sum(committed_offsets(settings, tps).values()) == len(events), 180,
               "the workers to commit every event")
    recs = [orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap_servers,
                                                    settings.topics.recommendations, len(events))]
    in_process = evaluate_events(events, settings, baselines=False, record=True)
    expected = in_process["recorded"]
    assert len(recs) == len(expected) == len(events)  # one recommendation per event, none twice
    published = {(r["user_id"], r["trigger_event_id"]): (r["profile_version"], [i["item_id"] for i in r["items"]])
                 for r in recs}
    assert published == expected
    for user_id, profile in in_process["profiles"].items():
        stored = read_profile(redis_client, user_id, settings.namespace)
        assert stored["profile_version"] == profile.version
        assert stored["profile"]["recent"] == profile.recent
    assert all(w.alive() for w in workers)
    # a round is one item epoch of a worker's partitions: a few events of this log; the other worker took the backlog
    # the producer left while the topics were skewed in batches of up to STREAM_APP_BATCH_MAX
    one_round, unbounded = (batch_sizes(w) for w in workers)
    assert one_round[25.0] == one_round[float("inf")] > 0
    assert unbounded[25.0] < unbounded[float("inf")]


def batch_sizes(worker) -> dict[float, float]:
    """A worker's batches by size: the cumulative count at each bucket's bound."""
    return {float(dict(labels)["le"]): count for (name, labels), count in scrape(f"{worker.url}/metrics").items()
            if name == "stream_app_batch_size_bucket"}


def test_full_speed_replay_of_20000_events_on_two_workers_beside_a_cpu_hog_agrees_with_in_process(
        services, tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", services["KAFKA_BOOTSTRAP_SERVERS"])
    monkeypatch.setenv("REDIS_URL", services["REDIS_URL"])
    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path))
    log = tmp_path / "events.jsonl"
    write(SynthConfig(events=20_000), log)
    events, _ = load_sorted(log, "jsonl")
    result = evaluate_via_kafka(log, "jsonl", rate=None, workers=2, busy=True)
    judged = len(events) - len({e["user_id"] for e in events})
    assert result["via_kafka"]["judged"] == result["in_process"]["judged"] == judged
    assert result["via_kafka"]["missing_recommendations"] == 0
    assert result["recommendations_published"] == result["recommendations_in_process"] == len(events)
    assert result["repeated_recommendations"] == 0
    assert result["lists_differ"] == 0 and result["versions_differ"] == 0
    for metric in ("recall@20", "mrr@20", "ndcg@20"):
        assert result["abs_difference"][metric] == 0.0, (metric, result["abs_difference"])
