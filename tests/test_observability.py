"""Log lines (stream_app/logs.py) and the metrics' exposition (stream/metrics.py) without services."""

from __future__ import annotations

import io
import logging
import logging.config
import time

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_app.config import Settings
from stream_app.errors import ConfigError
from stream_app.logs import logging_config
from stream_app.stream.batch import Counters
from stream_app.stream.metrics import Snapshot, WorkerMetrics
from stream_app.stream.stage_latency import STAGES
from stream_app.tools.bench import gc_pauses, late_events, profiles_taken_up, stage_quantiles
from stream_app.tools.scrape import quantile
from stream_app.urls import redact_url

SECRET = "s3cr3t-pw"


def emit(log_format: str, *calls) -> list[str]:
    """Run `calls` (each: logger -> None) under the config the worker uses; the lines written."""
    stream = io.StringIO()
    config = logging_config(log_format, "info", "app:host:42")
    config["handlers"]["default"]["stream"] = stream
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logging.config.dictConfig(config)
    try:
        log = logging.getLogger("stream_app.test")
        for call in calls:
            call(log)
    finally:  # pytest's own capture goes on as before
        root.handlers[:] = handlers
        root.setLevel(level)
    return stream.getvalue().splitlines()


def test_json_lines_parse_one_by_one_with_the_fields_and_no_password():
    def fail(log):
        try:
            raise ConnectionError(f"cannot reach redis://:{SECRET}@redis:6379/0")
        except ConnectionError:
            log.error("write failed", exc_info=True, extra={"partition": 3, "event_id": "e-1"})

    lines = emit("json",
                 lambda log: log.info("connecting to %s", f"redis://default:{SECRET}@redis:6379/0"),
                 lambda log: log.warning("rejected %s", "events.click[2]@7", extra={"partition": 2}),
                 fail)
    records = [orjson.loads(line) for line in lines]
    assert len(records) == 3
    assert all(set(r) >= {"timestamp", "level", "logger", "worker", "message"} for r in records)
    assert records[0]["message"] == "connecting to redis://default:***@redis:6379/0"
    assert records[1] == {**records[1], "level": "WARNING", "logger": "stream_app.test", "worker": "app:host:42",
                          "partition": 2}
    assert "event_id" not in records[1]
    assert records[2]["partition"] == 3 and records[2]["event_id"] == "e-1"
    assert "ConnectionError" in records[2]["message"] and "Traceback" in records[2]["message"]
    assert SECRET not in "\n".join(lines)


def test_text_lines_name_the_worker_and_hide_passwords_too():
    lines = emit("text", lambda log: log.warning("Redis at %s does not answer", f"rediss://u:{SECRET}@h:6380"))
    assert len(lines) == 1 and "[app:host:42] [WARNING] stream_app.test:" in lines[0]
    assert SECRET not in lines[0] and "rediss://u:***@h:6380" in lines[0]


def test_redact_url_keeps_what_locates_the_service():
    assert redact_url("redis://:pw@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact_url("redis://redis:6379/0") == "redis://redis:6379/0"
    assert redact_url("sasl_ssl://alice:pw@k1:9093,k2:9093") == "sasl_ssl://alice:***@k1:9093,k2:9093"
    assert redact_url(None) == "(not set)"
    # a password holding "@" or "/" (managed Redis keys are base64), and the TLS key's passphrase in the query
    assert redact_url("redis://:Ab+c%2FDe=Fg@x@10.0.0.1:6379/0") == "redis://:***@10.0.0.1:6379/0"
    assert redact_url("redis://:Ab+c/De=Fg@10.0.0.1:6379/0 and redis://:p@ss@h:1") == \
        "redis://:***@10.0.0.1:6379/0 and redis://:***@h:1"
    assert redact_url("rediss://h:1/0?ssl_keyfile=k.pem&ssl_password=kp") == "rediss://h:1/0?ssl_keyfile=k.pem&ssl_password=***"
    assert redact_url("redis://:p@ss/word@host:6379/0 x") == "redis://:***@host:6379/0 x"
    assert redact_url("redis://u:p@x#y@host:1/0") == "redis://u:***@host:1/0"
    assert redact_url("see http://x/y,redis://:pw@h:1") == "see http://x/y,redis://:***@h:1"


def test_redact_url_is_linear_on_text_without_whitespace():
    import time

    started = time.process_time()
    for text in ("a://b:" * 8000, "a://" * 10000 + "@", "x:" * 20000 + "@" * 5, "a" * 40_000 + "://@",
                 "redis://" + "u" * 40_000 + "@", ("a" * 50 + "://") * 3000 + "@", "a://b/" * 20_000 + "@"):
        redact_url(text)
    assert time.process_time() - started < 0.5  # 4 s for 40 KB of letters when a regex searched for the scheme


def test_a_redis_url_redis_py_would_fail_on_later_is_refused_at_once_without_repeating_it(tmp_path):
    with pytest.raises(ConfigError, match="percent-encode") as refused:
        Settings(redis_url="redis://:Ab+c/De=Fg@127.0.0.1:6379/0").require_redis()
    assert "Ab+c" not in str(refused.value)
    with pytest.raises(ConfigError, match="ssl_ca_certs .* is not a file"):
        Settings(redis_url=f"rediss://h:1/0?ssl_ca_certs={tmp_path}/nope.pem").require_redis()


def test_log_format_and_read_wait_are_settings():
    assert Settings.from_env({"STREAM_APP_LOG_FORMAT": "json"}).log_format == "json"
    assert Settings.from_env({"STREAM_APP_READ_WAIT_MS": "500"}).read_wait_ms == 500
    with pytest.raises(ConfigError, match="STREAM_APP_LOG_FORMAT"):
        Settings.from_env({"STREAM_APP_LOG_FORMAT": "xml"})


def test_metrics_are_the_counters_and_every_worker_has_its_own_registry():
    counters = Counters(applied=7, recommendations=6, late=2, live_judged=9, live_hits=3, erased_events_dropped=1)
    counters.serving("seq-1", None)  # since it began serving: 1 of 4 (the lifetime counts go on: 3 of 9)
    for hit in (True, False, False, False):
        counters.count_hits(hit, None)
    for _ in range(5):
        counters.count_input("events.click", "click")
    counters.count_input("events.browse", "invalid")
    counters.dead_letters["invalid_json"] = 1
    snapshot = Snapshot(counters, {"late_in_partition": 3}, {"live": "seq-1", "shadow": None},
                        {"items": 9, "embedded": 3, "shared": 12}, {}, lag={("events.click", 0): 4}, users=2, items=11, ranker_labels={0: 40})
    first, second = WorkerMetrics(lambda: snapshot), WorkerMetrics(lambda: snapshot)
    first.freshness.applied("u1", 0, 0)
    first.observe_batch(6, 0.02, [(1_000, 1.5)] * 6, delivered_s=2.0)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(first.exposition().decode()) for s in f.samples}
    assert samples[("stream_app_events_total", (("topic", "events.click"), ("type", "click")))] == 5
    assert samples[("stream_app_events_total", (("topic", "events.browse"), ("type", "invalid")))] == 1
    assert samples[("stream_app_recommendations_total", ())] == 6
    # an operator's walkthrough: status counted them, the metrics did not (applied + duplicates fell short of events)
    assert samples[("stream_app_events_erased_dropped_total", ())] == 1
    assert samples[("stream_app_dead_letters_total", (("reason", "invalid_json"),))] == 1
    assert samples[("stream_app_out_of_order_events_total", ())] == 2
    assert samples[("stream_app_late_events_total", (("clock", "partition"),))] == 3
    assert samples[("stream_app_consumer_lag", (("partition", "0"), ("topic", "events.click")))] == 4
    assert samples[("stream_app_model_info", (("role", "live"), ("version", "seq-1")))] == 1
    assert samples[("stream_app_model_hit_rate", (("role", "live"), ("version", "seq-1")))] == 0.25
    assert samples[("stream_app_model_judged_total", (("role", "live"),))] == 13
    assert samples[("stream_app_ranker_labels", (("partition", "0"),))] == 40
    assert samples[("stream_app_table_entries", (("table", "items"),))] == 11
    assert samples[("stream_app_text_vectors_total", (("source", "embedded"),))] == 3
    assert samples[("stream_app_text_vectors_total", (("source", "shared"),))] == 12
    assert samples[("stream_app_event_to_recommendation_seconds_sum", (("since", "event_time"),))] == 6.0
    assert samples[("stream_app_event_to_recommendation_seconds_sum", (("since", "arrival"),))] == 3.0
    assert samples[("stream_app_user_freshness_seconds_count", ())] == 1
    assert samples[("stream_app_ready", ())] == 1
    assert b"stream_app_batch_size_count 0.0" in second.exposition()  # nothing observed in the first leaks


def test_quantile_interpolates_within_a_bucket_as_prometheus_does():
    samples = {("h_bucket", (("le", "0.1"),)): 50.0, ("h_bucket", (("le", "0.5"),)): 90.0,
               ("h_bucket", (("le", "1.0"),)): 100.0, ("h_bucket", (("le", "+Inf"),)): 100.0}
    assert quantile(samples, "h", 0.5) == 0.1
    assert abs(quantile(samples, "h", 0.7) - 0.3) < 1e-9
    assert abs(quantile(samples, "h", 0.99) - 0.95) < 1e-9
    assert quantile({k: 0.0 for k in samples}, "h", 0.99) is None
    assert quantile({**samples, ("h_bucket", (("le", "+Inf"),)): 200.0}, "h", 0.99) == 1.0


def test_an_evicted_user_leaves_the_freshness_figures():
    from stream_app.stream.metrics import Freshness

    freshness = Freshness()
    freshness.applied("u1", 3, 1_000)
    freshness.applied("u2", 3, 5_000)
    freshness.forget("u1", 3)
    freshness.forget("nobody", 7)  # an unknown user or partition changes nothing
    assert freshness.ages_s(11_000).tolist() == [6.0]


def exposed(metrics: WorkerMetrics) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(metrics.exposition().decode()) for s in f.samples}


def test_bench_counts_the_late_events_between_its_two_scrapes_the_most_any_worker_counted():
    def scraped(late: int, item_state: int = 0) -> dict:
        ordering = {"late_in_partition": late, "late_for_item_state": item_state}
        return exposed(WorkerMetrics(lambda: Snapshot(Counters(), ordering, {}, {}, [])))

    assert late_events([scraped(3, 50)], [scraped(10, 90)]) == 7  # the partition clock's, not the item state's
    assert late_events([scraped(3), scraped(0)], [scraped(10), scraped(9)]) == 9  # each worker orders every partition


def test_bench_counts_the_stored_profiles_taken_up_kept_or_parsed_between_its_two_scrapes_over_every_worker():
    def scraped(reused: int, parsed: int) -> dict:
        return exposed(WorkerMetrics(lambda: Snapshot(Counters(profiles_reused=reused, profiles_parsed=parsed), {},
                                                      {}, {}, [])))

    assert profiles_taken_up([scraped(5, 40), scraped(0, 2)], [scraped(30, 45), scraped(7, 4)]) == (32, 7)


def test_input_stages_count_each_record_by_its_kafka_timestamp_and_bench_reads_them_between_two_scrapes():
    metrics = WorkerMetrics(lambda: Snapshot(Counters(), {}, {}, {}, []))
    # records stamped 12 ms, 12 ms and 90 ms before they were read; one without a timestamp is not counted
    metrics.stages.observe("read", 100.0, [99.988, 99.988, 99.91, None])
    before = exposed(metrics)
    assert before[("stream_app_input_stage_seconds_count", (("stage", "read"),))] == 3
    assert before[("stream_app_input_stage_seconds_bucket", (("le", "0.01"), ("stage", "read")))] == 0
    assert before[("stream_app_input_stage_seconds_bucket", (("le", "0.015"), ("stage", "read")))] == 2
    assert before[("stream_app_input_stage_seconds_bucket", (("le", "0.075"), ("stage", "read")))] == 2
    assert before[("stream_app_input_stage_seconds_bucket", (("le", "0.1"), ("stage", "read")))] == 3
    assert before[("stream_app_input_stage_seconds_sum", (("stage", "read"),))] == pytest.approx(0.114)
    assert {dict(labels)["stage"] for (name, labels) in before if name == "stream_app_input_stage_seconds_count"} \
        == set(STAGES)
    # a record stamped after it was read (clock skew) counts as 0 s, not as a negative time
    metrics.stages.observe("taken", 100.0, [100.05])
    assert exposed(metrics)[("stream_app_input_stage_seconds_bucket", (("le", "0.005"), ("stage", "taken")))] == 1
    # bench: only what was counted between the scrapes, so the warm-up before the first one is left out
    for _ in range(99):
        metrics.stages.observe("read", 100.0, [99.945])  # 55 ms
    after = exposed(metrics)
    (stage, p50, p99), = [q for q in stage_quantiles([before], [after]) if q[0] == "read"]
    assert 0.05 < p50 <= 0.06 and 0.05 < p99 <= 0.06
    assert quantile(after, "stream_app_input_stage_seconds", 0.01, stage="read") < 0.015  # the warm-up is in it


def test_every_collection_of_the_garbage_collector_is_timed_by_generation_and_bench_reads_the_oldest():
    import gc

    from stream_app.stream.gc_pauses import GcPauses

    pauses = GcPauses()
    pauses.install()
    pauses.install()  # once only
    try:
        assert gc.callbacks.count(pauses._observe) == 1
        gc.collect(2)
        gc.collect(0)
    finally:
        gc.callbacks.remove(pauses._observe)
    assert pauses.counts[2].sum() == 1 and pauses.counts[0].sum() >= 1 and pauses.sums[2] > 0
    # the worker's metrics carry the process's record; bench counts what fell between its two scrapes
    metrics = WorkerMetrics(lambda: Snapshot(Counters(), {}, {}, {}, []))
    before = exposed(metrics)
    gc.collect(2)
    gc.collect(2)
    after = exposed(metrics)
    counted = gc_pauses([before], [after])
    assert counted.count >= 2 and counted.seconds > 0
    assert counted.longest_at_most_s >= counted.seconds / counted.count  # a bucket bound at or above the mean
    assert after[("stream_app_gc_pause_seconds_count", (("generation", "2"),))] >= 2


def test_bench_event_times_are_as_far_apart_as_asked():
    from stream_app.tools.bench import synthetic_events

    for gap_ms in (1.0, 200.0):
        ts = [event["ts"] for event in synthetic_events(20_000, 100, 100, gap_ms=gap_ms)]
        assert ts == sorted(ts)
        assert (ts[-1] - ts[0]) / (len(ts) - 1) == pytest.approx(gap_ms, rel=0.03)


def test_a_worker_about_to_process_freezes_what_it_holds_and_lets_a_batch_die_young():
    import subprocess
    import sys

    code = ("import gc; from stream_app.stream.gc_pauses import GC_THRESHOLDS, freeze_long_lived; "
            "held = [[n] for n in range(1000)]; assert gc.get_freeze_count() == 0; freeze_long_lived(); "
            "assert gc.get_freeze_count() > 1000 and gc.get_threshold() == GC_THRESHOLDS; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_the_lag_is_the_brokers_end_offsets_minus_the_commit_not_fausts_paused_high_watermarks():
    """Faust's consumer is paused on the lanes the worker's reader serves: its high watermarks stood still,
    and the lag gauge read 0 through a backlog of thousands."""
    import asyncio
    from types import SimpleNamespace

    from faust.types import TP

    from stream_app.stream.commits import InputEnds

    class Reader:
        async def end_offsets(self, tps):
            return {tp: 500 + tp.partition for tp in tps}

    app = SimpleNamespace(assignor=SimpleNamespace(assigned_actives=lambda: {TP("events.click", 0), TP("other", 1),
                                                                              TP("events.click", 1)}),
                          consumer=SimpleNamespace(_committed_offset={TP("events.click", 0): 120},
                                                   highwater=lambda tp: 120))
    ends = InputEnds()
    asyncio.run(ends.refresh(app, Reader(), ["events.click"]))
    assert ends.lag(app, ["events.click"]) == {("events.click", 0): 380, ("events.click", 1): 501}
    asyncio.run(ends.refresh(app, None, ["events.click"]))  # the reader not started yet: Faust's high watermark
    assert ends.lag(app, ["events.click"]) == {("events.click", 0): 0, ("events.click", 1): 120}
    # the broker's answer of the last heartbeat (5 s apart) behind the commits: the reader's own reach counts
    # (it read 0 through steady input: helper-142 #3)
    asyncio.run(ends.refresh(app, Reader(), ["events.click"]))
    read_to = {("events.click", 0): 900, ("events.click", 1): 40, ("other", 1): 7}
    assert ends.lag(app, ["events.click"], read_to) == {("events.click", 0): 780, ("events.click", 1): 501}


def test_a_line_repeated_in_a_burst_is_written_once_and_the_next_one_says_how_many_were_held(monkeypatch):
    """aiokafka logs "Unable connect to node" every 100 ms while a broker is away: 5,103 lines in a minute."""
    clock = [1000.0]
    monkeypatch.setattr(logging.time, "time", lambda: clock[0])  # LogRecord.created

    def burst(log):
        for _ in range(500):
            log.error("Unable connect to node with id %d", 111)
        log.error("another line")
        clock[0] += 11
        log.error("Unable connect to node with id %d", 111)

    lines = emit("text", burst)
    assert len(lines) == 3 and lines[1].endswith("another line")
    assert lines[2].endswith("Unable connect to node with id 111 (and 499 more like it in 11s)")


def test_the_repeat_limit_never_holds_a_traceback_never_raises_and_stays_cheap_under_a_flood_of_distinct_lines():
    from stream_app.logs import RepeatLimit

    def failing(log):
        for key in ("k0", "k1"):
            try:
                raise KeyError(key)
            except KeyError:
                log.exception("batch failed")  # the same message, not the same cause

    lines = emit("text", failing)
    assert sum("KeyError: 'k0'" in line for line in lines) == 1 and sum("KeyError: 'k1'" in line for line in lines) == 1
    limit = RepeatLimit(keep=1000)
    bad = logging.LogRecord("lib", logging.WARNING, __file__, 1, "bad format %s %s", (1,), None)
    assert limit.filter(bad) is True  # the handler reports it, as it would without the filter
    started = time.perf_counter()
    for n in range(20_000):  # every input of a bad producer rejected: a distinct line each
        limit.filter(logging.LogRecord("w", logging.WARNING, __file__, 1, "rejected events.click[0]@%d", (n,), None))
    assert time.perf_counter() - started < 2.0 and len(limit.seen) == 1000


def test_a_broker_that_stops_answering_the_heartbeats_ask_of_the_input_ends_makes_the_worker_not_ready(monkeypatch):
    """With the broker paused (SIGSTOP) for 90 s, /readyz answered 200 throughout: the reader's poll still went
    round its loop, and no batch failed, since none came."""
    import asyncio
    from types import SimpleNamespace

    from faust.types import TP

    from stream_app.stream import commits

    clock = [100.0]
    monkeypatch.setattr(commits.time, "monotonic", lambda: clock[0])
    answer = [True]

    class Reader:
        async def end_offsets(self, tps):
            if not answer[0]:
                raise TimeoutError()
            return {tp: 5 for tp in tps}

    app = SimpleNamespace(assignor=SimpleNamespace(assigned_actives=lambda: {TP("events.click", 0)}))
    ends = commits.InputEnds()
    asyncio.run(ends.refresh(app, Reader(), ["events.click"]))
    assert ends.missing() == {}
    answer[0] = False
    asyncio.run(ends.refresh(app, Reader(), ["events.click"]))
    clock[0] += commits.BROKER_NOT_READY_S - 1
    asyncio.run(ends.refresh(app, Reader(), ["events.click"]))
    assert ends.missing() == {}  # a blip is not an outage
    clock[0] += 2
    assert "has not answered for 11s" in ends.missing()["broker"]
    answer[0] = True
    asyncio.run(ends.refresh(app, Reader(), ["events.click"]))
    assert ends.missing() == {}


def test_a_flood_of_rejected_inputs_writes_a_burst_of_lines_a_window_per_topic_and_reason(monkeypatch):
    """Each rejection's line names its offset, so no two were the same line: 3,000 garbage records on a topic
    wrote 3,000 warnings in a second."""
    clock = [1000.0]
    monkeypatch.setattr(logging.time, "time", lambda: clock[0])  # LogRecord.created

    def flood(log):
        for offset in range(3000):
            log.warning("rejected events.click[0]@%d: invalid_json", offset,
                        extra={"topic": "events.click", "offset": offset, "repeat_key": ("events.click", "invalid_json")})
        log.warning("rejected events.click[0]@5000: not_utf8",
                    extra={"topic": "events.click", "offset": 5000, "repeat_key": ("events.click", "not_utf8")})
        clock[0] += 11
        log.warning("rejected events.click[0]@3000: invalid_json",
                    extra={"topic": "events.click", "offset": 3000, "repeat_key": ("events.click", "invalid_json")})

    lines = [orjson.loads(line) for line in emit("json", flood)]
    assert len(lines) == 12 and [line["offset"] for line in lines[:10]] == list(range(10))
    assert lines[10]["message"].endswith("not_utf8") and lines[11]["offset"] == 3000
    assert lines[11]["message"].endswith("@3000: invalid_json (and 2990 more like it in 11s)")


def test_the_worker_says_its_http_port_plainly_though_faust_redirects_stderr_into_the_log(monkeypatch, caplog):
    """Faust's worker replaces sys.stderr with a proxy that logs at WARNING: the line naming the port came out
    as `[WARNING] mode.redirect: stream-app worker: ...`. It goes to the process's own stderr instead."""
    from mode.utils.logging import redirect_stdouts

    from stream_app.stream import health

    own = io.StringIO()
    monkeypatch.setattr("sys.__stderr__", own)
    with caplog.at_level(logging.WARNING), redirect_stdouts(logging.getLogger("mode.redirect")):
        health.announce(6066, "text")
    assert own.getvalue().startswith("stream-app worker: http://") and ":6066/metrics" in own.getvalue()
    assert not [r for r in caplog.records if r.name == "mode.redirect"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        health.announce(6066, "json")  # a json log stays all log lines
    assert [r.getMessage() for r in caplog.records if r.name == "stream_app.worker"] == [
        f"listening on {own.getvalue().split(': ', 1)[1].strip()}"]
