"""Operations on a live stack: a worker's /metrics, /healthz and /readyz, its JSON log lines, and the
profile read API (`stream-app serve`) beside `stream-app profile`."""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import orjson
import pytest
from conftest import wait_until
from kafka import KafkaProducer

from stream_app.stream.stage_latency import STAGES
from stream_app.tools.bench import synthetic_events
from stream_app.tools.consume import TopicReader
from stream_app.tools.embedded import free_port
from stream_app.tools.processes import wait_ready_workers
from stream_app.tools.replay import produce_events
from stream_app.tools.scrape import Samples
from stream_app.tools.scrape import scrape as scrape_url


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(url: str) -> Samples:
    return scrape_url(f"{url}/metrics")


def by_label(samples: dict, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for (n, labels), value in samples.items() if n == name}


def bad_inputs(settings) -> list[tuple[str, bytes, bytes, str]]:
    """(topic, key, value, reason) of inputs the worker must dead-letter."""
    t = settings.topics
    valid = {"event_id": "bad-1", "user_id": "u1", "item_id": "i1", "type": "click", "ts": 1_700_000_000_000,
             "schema_version": 1}
    return [(t.click, b"u1", b"{not json", "invalid_json"),
            (t.browse, b"u1", b"[1, 2", "invalid_json"),
            (t.click, b"u1", orjson.dumps({**valid, "ts": None}), "schema_violation"),
            (t.click, b"u2", orjson.dumps(valid), "key_mismatch"),
            (t.purchase, b"u1", orjson.dumps(valid), "type_topic_mismatch")]


def watch_readiness(url: str, timeout: float) -> list[tuple[int, dict]]:
    """/readyz answers from the worker's start until it is ready (connection refused before it listens)."""
    answers: list[tuple[int, dict]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body = get(f"{url}/readyz", timeout=2)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
            continue
        answers.append((status, orjson.loads(body)))
        if status == 200:
            return answers
        time.sleep(0.05)
    raise AssertionError(f"/readyz not ready within {timeout:.0f}s: {answers[-1:]}")


def test_metrics_count_what_a_replay_sent_readyz_turns_ready_and_logs_are_json(make_settings, start_worker):
    settings = make_settings(log_format="json", web_host="127.0.0.1")
    worker = start_worker(settings, wait_ready=False)
    answers = watch_readiness(worker.url, 60)
    with pytest.raises(OSError):  # STREAM_APP_WEB_HOST=127.0.0.1: another loopback address is not it (was 0.0.0.0)
        socket.create_connection(("127.0.0.2", worker.web_port), timeout=5).close()
    assert answers[0][0] == 503 and answers[0][1]["ready"] is False and answers[0][1]["missing"]
    assert answers[-1] == (200, {"ready": True, "missing": {}})
    assert get(f"{worker.url}/healthz")[0] == 200

    events = synthetic_events(1200, users=60, items=200, prefix="ops")
    sent = collections.Counter((settings.topics.for_type(e["type"]), e["type"]) for e in events)
    bad = bad_inputs(settings)
    for topic, *_ in bad:
        sent[(topic, "invalid")] += 1
    with TopicReader(settings.kafka_bootstrap_servers, settings.topics.recommendations) as recs:
        produce_events(settings, events[:600])
        wait_until(lambda: scrape(worker.url).get(("stream_app_recommendations_total", ())) == 600, 60,
                   "the first half's recommendations in /metrics")
        mid = scrape(worker.url)  # during the replay: the second half and the bad inputs are still to come
        assert sum(by_label(mid, "stream_app_events_total", "type").values()) == 600
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        for topic, key, value, _ in bad:
            producer.send(topic, key=key, value=value)
        producer.flush()
        producer.close()
        produce_events(settings, events[600:])
        recs.read_until(len(events), 60)
        published = len(recs.records)
    wait_until(lambda: scrape(worker.url).get(("stream_app_recommendations_total", ())) == len(events), 30,
               "every recommendation in /metrics")
    wait_until(lambda: sum(by_label(scrape(worker.url), "stream_app_consumer_lag", "partition").values()) == 0, 30,
               "the consumer lag to reach 0 once the worker commits")
    m = scrape(worker.url)
    lag = {(dict(labels)["topic"], dict(labels)["partition"]) for (name, labels) in m if name == "stream_app_consumer_lag"}
    assert lag == {(topic, str(p)) for topic in settings.topics.inputs for p in range(settings.partitions)}
    events_in = {(dict(labels)["topic"], dict(labels)["type"]): v
                 for (name, labels), v in m.items() if name == "stream_app_events_total"}
    assert events_in == dict(sent)
    assert m[("stream_app_recommendations_total", ())] == published == len(events)
    assert by_label(m, "stream_app_dead_letters_total", "reason") == dict(collections.Counter(r for *_, r in bad))
    total_in = len(events) + len(bad)
    assert m[("stream_app_batch_size_sum", ())] == total_in
    assert m[("stream_app_event_to_recommendation_seconds_count", (("since", "event_time"),))] == len(events)
    assert m[("stream_app_event_to_recommendation_seconds_count", (("since", "arrival"),))] == len(events)
    # every own input record, the bad ones too, passed each stage of the input path once; Faust's consumer
    # delivers only what the reader has no copy of (here: what it fetched before the worker paused it)
    stages = by_label(m, "stream_app_input_stage_seconds_count", "stage")
    assert set(stages) == set(STAGES) and stages.pop("delivered") <= total_in
    assert stages == {"read": total_in, "ordered": total_in, "taken": total_in}
    users = len({e["user_id"] for e in events})
    assert by_label(m, "stream_app_table_entries", "table")["users"] == users
    assert m[("stream_app_user_freshness_seconds_count", ())] == users
    assert m[("stream_app_user_freshness_oldest_seconds", ())] > 0
    assert m[("stream_app_ready", ())] == 1
    assert sum(by_label(m, "stream_app_output_retries_total", "output").values()) == 0

    lines = [line for line in worker.log_path.read_text().splitlines() if line.strip()]
    records = [orjson.loads(line) for line in lines]  # raises on any line that is not one JSON object
    assert records and all({"timestamp", "level", "logger", "worker", "message"} <= set(r) for r in records)
    rejected = [r for r in records if r["message"].startswith("rejected ")]
    assert len(rejected) == len(bad) and all(isinstance(r["partition"], int) for r in rejected)
    assert {r["worker"] for r in records} == {f"{settings.app_id}:{socket.gethostname()}:{worker.pid}"}
    # the start's warnings of trial defaults, logged after Faust's logging set-up: JSON as every line
    assert any(r["level"] == "WARNING" and r["message"].startswith("STREAM_APP_ERASURE_KEY is not set")
               for r in records)


def test_a_worker_whose_port_is_taken_says_which_option_to_change(make_settings):
    settings = make_settings()
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(settings, "worker", "--web-port", str(port))
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on port {port}" in result.stderr and "--web-port" in result.stderr


def cli(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_app.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **settings.to_env()}, timeout=60)


def test_read_api_waits_for_min_version_and_answers_as_the_profile_command(make_settings, start_worker, tmp_path):
    settings = make_settings(read_wait_ms=1500)
    worker = start_worker(settings)
    port = free_port()
    with open(tmp_path / "serve.log", "wb") as log:
        serve = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "serve", "--port", str(port),
                                  "--host", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT,
                                 env={**os.environ, **settings.to_env()})
    url = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            try:
                return get(f"{url}/healthz")[0] == 200
            except urllib.error.URLError:
                return False

        wait_until(healthy, 30, "stream-app serve to answer")
        assert f"serving GET /profiles/USER[?min_version=N] and /healthz on http://127.0.0.1:{port}" in \
            (tmp_path / "serve.log").read_text()  # said once bound, not before
        # 503 until the worker's first look at Redis marks its partitions written back (stream/redis_refill.py)
        wait_until(lambda: get(f"{url}/profiles/nobody")[0] != 503, 30, "the worker to mark the profile mirror")
        status, body = get(f"{url}/profiles/nobody")
        assert status == 404 and orjson.loads(body)["user_id"] == "nobody"

        events = [{"event_id": f"rw-{i}", "user_id": "reader", "item_id": f"i{i % 3}", "type": "click",
                   "ts": 1_700_000_000_000 + 1000 * i, "schema_version": 1} for i in range(5)]
        produce_events(settings, events)
        status, body = get(f"{url}/profiles/reader?min_version=5")  # sent just now: it waits for the worker
        assert status == 200, body
        profile = orjson.loads(body)
        assert profile["profile_version"] == 5 and profile["event_count"] == 5

        started = time.monotonic()
        status, body = get(f"{url}/profiles/reader?min_version=6")
        assert status == 409 and time.monotonic() - started >= 1.4
        assert orjson.loads(body)["profile_version"] == 5
        assert get(f"{url}/profiles/reader?min_version=soon")[0] == 400

        produce_events(settings, [{**events[0], "event_id": "rw-5", "ts": events[-1]["ts"] + 1000}])
        status, body = get(f"{url}/profiles/reader?min_version=6")
        assert status == 200 and orjson.loads(body)["profile_version"] == 6
        wait_ready_workers(settings, [worker], 5)  # the worker is still up and ready
        shown = cli(settings, "profile", "reader", "--json")
        assert shown.returncode == 0, shown.stderr
        assert orjson.loads(shown.stdout) == orjson.loads(body)
        unknown = cli(settings, "profile", "nobody")
        assert unknown.returncode == 2 and "no profile for user 'nobody'" in unknown.stderr
        # what a person reads of the output topics: the user's last lists, the dead letters
        shown = cli(settings, "recommendations", "reader", "--last", "2")
        assert shown.returncode == 0, shown.stderr
        assert "reader after rw-4" in shown.stdout and "reader after rw-5" in shown.stdout
        assert shown.stdout.index("after rw-4") < shown.stdout.index("after rw-5") and " 1. i" in shown.stdout
        last = cli(settings, "recommendations", "reader", "--json")
        assert orjson.loads(last.stdout)["trigger_event_id"] == "rw-5"
        assert cli(settings, "recommendations", "nobody").returncode == 2
        assert cli(settings, "dead-letters").stdout.startswith("no dead letters")
        with KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers) as producer:
            producer.send(settings.topics.click, key=b"reader", value=b"{broken").get(30)
        wait_until(lambda: "invalid_json" in cli(settings, "dead-letters").stdout, 30, "the dead letter")
        untitled = cli(settings, "recommendations", "reader", "--titles")  # no catalogue yet: said, ids shown
        assert "holds no title for these items: load a catalogue" in untitled.stderr and " 1. i" in untitled.stdout
        # --titles names the items as the items topic holds them now: a refused record changes nothing, a tombstone
        # removes the title
        with KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers) as producer:
            for item_id, item in (("i0", {"title": "Lamp  no. 0"}), ("i0", {}), ("i1", {}), ("i2", {"title": "Gone"}),
                                  ("i2", None)):
                value = None if item is None else orjson.dumps({"item_id": item_id, "schema_version": 1, **item})
                producer.send(settings.topics.items, key=item_id.encode(), value=value).get(30)
        named = cli(settings, "recommendations", "reader", "--titles")
        assert named.returncode == 0, named.stderr
        assert ' i0 "Lamp no. 0"  ' in named.stdout and " i1  " in named.stdout and " i2  " in named.stdout
        assert "Gone" not in named.stdout and " i0  " in shown.stdout  # without --titles: ids alone
        named = cli(settings, "profile", "reader", "--titles")
        assert 'most recent items: i0 "Lamp no. 0"; i1; ' in named.stdout, named.stdout
    finally:
        serve.terminate()
        serve.wait(timeout=10)
