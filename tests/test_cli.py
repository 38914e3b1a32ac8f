"""The CLI as a user runs it: real processes, real services."""

import html
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
import redis
from conftest import OTTO_SAMPLE

from stream_app.tools.embedded import wait_for_kafka


def cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "stream_app.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.mark.integration  # starts the embedded broker and Redis through the CLI
def test_up_prints_both_addresses_and_down_stops_them(tmp_path):
    env = {"STREAM_APP_STATE_DIR": str(tmp_path)}
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"):
        env[name] = ""  # nothing inherited: `up` must start its own
    up = cli("up", env=env)
    assert up.returncode == 0, up.stderr
    lines = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
    kafka, redis_url = lines["KAFKA_BOOTSTRAP_SERVERS"], lines["REDIS_URL"]
    serve = None
    try:
        wait_for_kafka(kafka, timeout=10)
        assert redis.Redis.from_url(redis_url).ping()
        again = cli("up", env=env)  # idempotent: finds the running services, and says so
        assert f"KAFKA_BOOTSTRAP_SERVERS={kafka}" in again.stdout and "running (already, since" in again.stderr
        status = cli("status", env=env)
        assert status.returncode == 0 and "no live workers" in status.stdout
        assert "profiles in Redis: no marker of the workers' yet (a worker writes it once its tables are restored" \
            in status.stdout
        assert "no live workers under STREAM_APP_NAMESPACE='' (start one with `stream-app worker`" in status.stdout
        assert f"KAFKA_BOOTSTRAP_SERVERS={kafka} (takes connections)" in status.stdout
        gone = cli("status", env={**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "REDIS_URL": redis_url})
        assert "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1 (no broker takes a connection" in gone.stdout  # it said nothing
        wrong = cli("status", env={**env, "KAFKA_BOOTSTRAP_SERVERS": kafka,
                                   "REDIS_URL": redis_url.replace(urlsplit(redis_url).password, "wrong")})
        assert wrong.returncode == 2 and "refused the credentials" in wrong.stderr and "password" in wrong.stderr
        # Redis dies alone: `up` brings it back where it was and leaves the broker (its topics) alone
        broker_pid, redis_pid = orjson.loads((tmp_path / "runtime.json").read_bytes())["pids"]
        os.kill(redis_pid, signal.SIGKILL)
        revived = cli("up", env=env)
        assert revived.returncode == 0 and f"REDIS_URL={redis_url}" in revived.stdout, revived.stderr
        assert f"KAFKA_BOOTSTRAP_SERVERS={kafka}" in revived.stdout and "repair-redis" in revived.stderr
        assert redis.Redis.from_url(redis_url).ping()
        assert orjson.loads((tmp_path / "runtime.json").read_bytes())["pids"][0] == broker_pid
        # a worker's status key: `down` says it is still attached
        redis.Redis.from_url(redis_url).set("worker:w-test", orjson.dumps({"worker_id": "w-test", "pid": 4242}),
                                            ex=60)
        # and a read API on that Redis (it was not named: left answering 503 for good)
        serve = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "serve", "--port", "0"],
                                 env={**os.environ, **env, "REDIS_URL": redis_url}, stderr=subprocess.PIPE, text=True)
        assert "serving GET /profiles" in serve.stderr.readline()
    finally:
        down = cli("down", env=env)
        if serve is not None:
            serve.terminate()
            serve.wait(10)
    assert down.returncode == 0 and "stopped" in down.stdout and "1 worker was still running" in down.stderr
    assert "4242" in down.stderr
    assert f"`stream-app serve` (pid {serve.pid}, http://127.0.0.1:" in down.stderr
    assert not list(tmp_path.glob("serve-*.json"))  # a serve that stops takes its record away
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
        raise AssertionError("Redis still answers after `down`")
    except redis.ConnectionError:
        pass


def test_up_after_the_broker_died_says_it_starts_both_anew(tmp_path):
    """An operator's trial: with the broker killed, `up` started a new broker and a new Redis on new ports (the old
    Redis stopped with its profiles) and said nothing of it, while the workers still pointed at the old ones."""
    env = {"STREAM_APP_STATE_DIR": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": "", "REDIS_URL": ""}
    try:
        assert cli("up", env=env).returncode == 0
        broker_pid = orjson.loads((tmp_path / "runtime.json").read_bytes())["pids"][0]
        os.kill(broker_pid, signal.SIGKILL)
        again = cli("up", env=env)
        assert again.returncode == 0, again.stderr
        assert f"the embedded broker of the last `up` (pid {broker_pid}) was gone: starting a new broker" in again.stderr
        assert "restart the workers started against the old addresses" in again.stderr
    finally:
        cli("down", env=env)


def test_commands_without_services_explain_what_to_do(tmp_path):
    env = {"STREAM_APP_STATE_DIR": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": "", "REDIS_URL": ""}
    result = cli("worker", env=env)
    assert result.returncode == 2
    assert "stream-app up" in result.stderr and "Traceback" not in result.stderr
    missing = cli("replay", str(tmp_path / "nope.jsonl"), "--format", "jsonl", env=env)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    folder = cli("evaluate", str(tmp_path), env=env)
    assert folder.returncode == 2 and f"{tmp_path}: is a directory, not a file" in folder.stderr
    bad_rate = cli("replay", "x", "--format", "otto", "--rate", "fast", env=env)
    assert bad_rate.returncode == 2 and "argument --rate: takes events per second or 'max'" in bad_rate.stderr
    for args, said in ((("bench", "--events", "0"), "argument --events: must be 1 or more, not 0"),
                       (("evaluate", "x", "--limit", "-5"), "argument --limit: must be 1 or more, not -5"),
                       (("evaluate", "x", "--k", "twenty"), "argument --k: expected a whole number, not 'twenty'")):
        refused = cli(*args, env=env)
        assert refused.returncode == 2 and said in refused.stderr and "Traceback" not in refused.stderr
    not_a_log = tmp_path / "notes.md"
    not_a_log.write_text("# notes\nnothing here is an event\n")
    wrong = cli("evaluate", str(not_a_log), "--format", "otto", env=env)
    assert wrong.returncode == 2 and "no events read as otto: all 2 lines rejected" in wrong.stderr


def test_evaluate_picks_up_the_logs_ground_truth_and_writes_json_and_html(tmp_path):
    log = tmp_path / "log.jsonl"
    made = cli("synth", str(log), "--events", "2000", "--seed", "5")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "log.jsonl.truth.json").is_file()
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    done = cli("evaluate", str(log), "--json", str(out_json), "--html", str(out_html))
    assert done.returncode == 0, done.stderr
    result = orjson.loads(out_json.read_bytes())
    assert set(result["profile_accuracy"]) >= {"stream-app"}  # the truth file beside the log was used
    assert result["events"] == sum(1 for _ in log.open())
    # a data-team walkthrough: the file alone did not say how the run was made (--limit, --light, ...)
    assert result["run"]["options"]["log"] == str(log) and result["run"]["options"]["light"] is False
    assert result["run"]["options"]["json"] == str(out_json) and result["run"]["release"]
    assert f"full results: {out_json}" in done.stdout and f"report: {out_html}" in done.stdout
    page = out_html.read_text()
    assert "Profile accuracy" in page and all(html.escape(name) in page for name in result["models"])
    assert result["ceiling"]["recall@20"] > 0 and "Ceiling: Recall@20" in page and "ceiling: Recall@20" in done.stdout


@pytest.mark.integration
def test_embedded_services_retry_on_new_ports_when_a_port_was_taken_meanwhile(tmp_path, monkeypatch):
    import socket

    from stream_app.tools import embedded

    taken = socket.socket()
    taken.bind((embedded.HOST, 0))
    taken.listen()
    port = taken.getsockname()[1]
    real_free_port = embedded.free_port
    ports = iter([port, port])  # the first attempt's two ports: both taken by someone else meanwhile
    monkeypatch.setattr(embedded, "free_port", lambda: next(ports, None) or real_free_port())
    try:
        running = embedded.Embedded.start(tmp_path, timeout=3)
    finally:
        taken.close()
    try:
        assert str(port) not in running.kafka_bootstrap_servers and str(port) not in running.redis_url
        redis.Redis.from_url(running.redis_url).ping()
        wait_for_kafka(running.kafka_bootstrap_servers, timeout=10)
    finally:
        running.stop()


def test_the_demo_replays_the_bundled_shop_sample_and_shows_profiles_in_words(services, tmp_path):
    """Quick start line 1 runs this: every event gets its recommendation, nothing is dead-lettered,
    and the profiles it prints name what the users like and why items are recommended."""
    env = {**os.environ, **services, "STREAM_APP_STATE_DIR": str(tmp_path / "state")}
    out = cli("demo", "--rate", "max", "--timeout", "300", env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "events in: 1887   recommendations out: 1887   dead letters: 0" in out.stdout
    assert "items     1,286 products with their names" in out.stdout  # guests bought some of them
    likes = [line for line in out.stdout.splitlines() if "likes (item text, content model):" in line]
    assert len(likes) == 2 and all(line.split(":", 1)[1].strip() for line in likes)
    assert "similar to " in out.stdout  # a reason in words, from the item text
    assert "Online Retail sample" in out.stdout  # the data's attribution
    assert "/metrics (Prometheus text format" in out.stdout
    scraped = next(line for line in out.stdout.splitlines() if line.startswith("one scrape of http://"))
    assert "1,887 events in" in scraped and "1,887 recommendations, 0 dead letters" in scraped
    assert "consumer lag 0;" in scraped and "p99 latency -" not in scraped
    assert "kept from an earlier demo" not in out.stdout
    assert "1,286 items indexed by their text: 2,348 texts embedded by the worker, 0 vectors taken" in out.stdout

    # again: the worker takes the text vectors the first run's embedded, and its index is the same
    again = cli("demo", "--rate", "max", "--timeout", "300", env=env, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(2,348 text vectors kept from an earlier demo in Redis: only the rest)" in again.stdout  # titles, terms
    assert "1,286 items indexed by their text: 0 texts embedded by the worker, 2,348 vectors taken" in again.stdout
    assert [line for line in again.stdout.splitlines() if "likes (item text, content model):" in line] == likes


def test_bench_measures_every_event_it_sent_by_the_worker_and_by_the_plain_faust_app(services, tmp_path):
    """The figures bench prints come from all the events it produced: each has its recommendation (or the
    plain app's record) and a latency; p50 <= p99; the throughput is events over the measured span; the
    ratio is the two rates'."""
    import re

    env = {**os.environ, **services, "STREAM_APP_STATE_DIR": str(tmp_path / "state")}
    out = cli("bench", "--events", "1500", "--users", "100", "--items", "200", "--rate", "500", "--baseline",
              env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    # at an offered rate, event time keeps pace with the clock, as in a live stream
    assert "bench: 1500 events at 500 events/s, event times 2 ms apart on average, 100 users, 200 items, 1 worker" \
        in out.stdout
    assert re.search(r"garbage collector: \d+ collections of the oldest generation, [\d,]+ ms in all", out.stdout)
    reused, parsed = (int(n.replace(",", "")) for n in re.search(
        r"stored profiles taken up: ([\d,]+) as the objects the worker wrote them from, ([\d,]+) parsed", out.stdout
    ).groups())
    assert reused > parsed  # 100 users, 1,500 events: most of a user's batches find the profile it last wrote
    spans = re.findall(r"throughput: ([\d,]+) events/s( \(both at the offered rate: no ratio; without --rate the two "
                       r"are compared\))? \(first event sent -> last recommendation published, ([\d.]+)s\)", out.stdout)
    assert len(spans) == 2, out.stdout  # the plain app, then the worker
    rates = []
    for rate, _, seconds in spans:
        rates.append(int(rate.replace(",", "")))
        assert abs(rates[-1] - 1500 / float(seconds)) <= 1500 / float(seconds) * 0.01
        assert float(seconds) >= 1500 / 500 * 0.9  # offered at 500/s: the span covers the sending
    assert [bool(no_ratio) for _, no_ratio, _ in spans] == [False, True]  # both capped by the rate: no ratio
    lats = re.findall(r"p50 (\d+) ms, p99 (\d+) ms \(the event's send to its recommendation's record timestamp, "
                      r"[^;]*; over (\d+) recommendations\)", out.stdout)
    assert len(lats) == 2 and all(int(n) == 1500 and int(p50) <= int(p99) for p50, p99, n in lats)
    assert re.search(r"a user profile [\d,]+ bytes in the table's changelog \(the latest record per user, 100 "
                     r"profiles\), [\d,]+ bytes in Redis", out.stdout), out.stdout


def test_bench_gives_the_ratio_of_the_two_rates_at_full_speed_only(capsys):
    """At an offered rate both keep up with it, and a ratio near 1.00x said nothing of either's capacity."""
    from stream_app.tools.bench import Measured, print_measured

    latency = {"p50_ms": 5.0, "p99_ms": 9.0, "count": 100}
    plain, worker = Measured(1000, 1.0, 0.5, latency), Measured(1000, 1.25, 0.5, latency)
    print_measured("stream-app", worker, None, plain)
    assert "throughput: 800 events/s = 0.80x the plain app's (first event sent" in capsys.readouterr().out
    print_measured("stream-app", worker, 500.0, plain)
    assert "800 events/s (both at the offered rate: no ratio;" in capsys.readouterr().out


def test_bench_rounds_alternate_which_runs_first_and_end_with_every_ratio_and_their_median(monkeypatch, capsys):
    """`--baseline` ran the plain app first, once: on a machine whose speed drifts within minutes the one ratio
    favoured whichever ran in the faster minutes (a review)."""
    from types import SimpleNamespace

    from stream_app.config import Settings
    from stream_app.tools import bench

    latency = {"p50_ms": 5.0, "p99_ms": 9.0, "count": 100}
    ran, plain_s, ours_s = [], iter([1.0, 2.0, 1.0]), iter([2.0, 2.5, 4.0])

    def plain(run, events, rate, timeout, tag="", ours=None):
        ran.append(("plain", tag, ours is not None))
        return bench.Measured(1000, next(plain_s), 0.5, latency)

    def workers(run, settings, count, events, rate, timeout, version, plain, memory):
        ran.append(("stream-app", settings.namespace, plain is not None, memory))
        return bench.Measured(1000, next(ours_s), 0.5, latency)

    monkeypatch.setattr(bench, "run_plain", plain)
    monkeypatch.setattr(bench, "run_workers", workers)
    run = SimpleNamespace(settings=Settings(namespace="b."))
    bench.print_rounds([bench.run_round(run, [], 60.0, None, 1, number, 3) for number in range(3)])
    assert ran == [("plain", "r1", False), ("stream-app", "b.r1w1.", True, True),
                   ("stream-app", "b.r2w1.", False, False), ("plain", "r2", True),
                   ("stream-app", "b.r3w1.", False, False), ("plain", "r3", True)]  # ABBA (helper-145)
    out = capsys.readouterr().out
    assert "round 2 of 3, stream-app first:" in out and "round 3 of 3, stream-app first:" in out
    # rates 1000/s and 500/s, 1000/s and 400/s, 1000/s and 250/s: ratios 0.50x, 0.80x, 0.25x
    assert ("over 3 rounds: the plain app 1,000 events/s, stream-app 400 events/s (medians); stream-app / the plain app of "
            "the same round: 0.50x, 0.80x, 0.25x; median 0.50x, from 0.25x to 0.80x") in out


def test_demo_checks_its_files_before_starting_any_service(tmp_path, monkeypatch, capsys):
    from conftest import OTTO_SAMPLE

    from stream_app.cli.main import main
    from stream_app.tools import demo

    def no_services(label):
        raise AssertionError("the demo started services before reading its files")

    monkeypatch.setattr(demo, "one_off_run", no_services)
    missing = tmp_path / "nope.jsonl"
    for args, said in ((("--file", str(missing), "--format", "otto"), f"{missing}: no such file"),
                       (("--file", str(OTTO_SAMPLE)), "no events read as jsonl: all 20 lines rejected"),
                       (("--file", str(OTTO_SAMPLE), "--format", "otto", "--items", str(missing)),
                        f"{missing}: no such file"),
                       (("--items", str(OTTO_SAMPLE)), "--items describes --file: add --file LOG"),
                       (("--format", "otto"), "--format describes --file: add --file LOG (the bundled sample has its "
                                              "own catalogue), or leave it out"),
                       (("--format", "otto", "--items", str(OTTO_SAMPLE)), "--items and --format describe --file"),
                       (("--file", str(OTTO_SAMPLE), "--format", "otto", "--items-format", "csv"),
                        "--items-format describes --items")):
        assert main(["demo", *args]) == 2
        assert said in capsys.readouterr().err


def test_models_list_says_when_the_registry_is_not_a_folder(tmp_path, monkeypatch, capsys):
    from stream_app.cli.main import main

    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path / "state"))
    missing, a_file, empty = tmp_path / "nonexistent", tmp_path / "registry.txt", tmp_path / "registry"
    a_file.write_text("not a registry\n")
    empty.mkdir()
    assert main(["models", "list", "--registry", str(missing)]) == 2
    assert f"the registry folder {missing} does not exist" in capsys.readouterr().err
    assert main(["models", "list", "--registry", str(a_file)]) == 2
    assert f"the registry {a_file} is a file, not a folder" in capsys.readouterr().err
    assert main(["models", "list", "--registry", str(empty)]) == 0
    assert f"no models in {empty} (train one" in capsys.readouterr().out
    assert main(["models", "list", "--content", "--registry", str(empty)]) == 0  # --content was not heeded
    assert f"no content models in {empty} (export one with `stream-app content export`)" in capsys.readouterr().out
    # publishing from a registry that is not there said to export a content model into it
    assert main(["models", "publish", "latest", "--content", "--registry", str(missing)]) == 2
    assert f"the registry folder {missing} does not exist" in capsys.readouterr().err
    assert main(["models", "list", "--content", "--shadow", "--registry", str(empty)]) == 2  # one was heeded, unsaid
    assert "give one of --content (the item text encoder) and --shadow" in capsys.readouterr().err


def test_status_accounts_for_every_event_and_gives_the_item_epoch_as_a_time():
    from stream_app.cli.status_command import describe_worker

    counters = {"events": 863, "applied": 860, "duplicates": 1, "rejected": 0, "recommendations": 860, "late": 0,
                "erased_events_dropped": 2, "evicted_users": 5, "encoder_failures": 3}
    ordering = {"read": 863, "buffered": 0, "owned_pending": 0, "item_epoch_applied": 28_000_000,
                "late_in_partition": 0, "late_for_item_state": 0}
    status = {"worker_id": "w1", "ready": True, "web_port": 8000, "input_partitions": [0, 1], "counters": counters,
              "ordering": ordering}
    first, _, timing = describe_worker(status, item_epoch_ms=60_000)
    assert ("events 863 (applied 860, duplicates 1, rejected 0, erased users' events dropped 2), recommendations "
            "860, idle users evicted 5, rounds ranked without the encoder (it raised) 3") in first
    # epoch 28,000,000 of a minute holds the events of 2023-03-28 10:40 UTC; the next one starts at 10:41
    assert "item state through epoch 28000000 (events before 2023-03-28 10:41:00 UTC)" in timing
    assert "stale" not in timing and "past their epoch" not in timing
    ordering["stale_item_state"] = 7
    assert describe_worker(status, item_epoch_ms=60_000)[2].endswith(
        "; 7 ranked with an item state already past their epoch (their lists saw later events)")
    ordering["item_epoch_ms"] = 30_000  # the worker's own epoch length, when its status gives it
    assert "(events before 1996-08-14 05:20:30 UTC)" in describe_worker(status, item_epoch_ms=60_000)[2]
    quiet = {**counters, "events": 861, "erased_events_dropped": 0, "evicted_users": 0, "encoder_failures": 0}
    line = describe_worker({**status, "counters": quiet, "ordering": {**ordering, "item_epoch_applied": None}}, 60_000)
    assert line[0].endswith("rejected 0), recommendations 860") and "no item epoch applied yet" in line[2]
    # the dead letters of the items and erasures topics are no events': the events still add up
    letters = {**quiet, "events": 868, "rejected": 12}
    assert describe_worker({**status, "counters": letters}, 60_000)[0].endswith(
        "rejected 7), recommendations 860, dead letters of other topics and state 5")
    # the shown lists' hit rate is not said to be an encoder's when none is live
    judged = {**counters, "live_judged": 200, "live_hits": 50}
    assert describe_worker({**status, "counters": judged}, 60_000)[1] == \
        "  no sequence encoder live; next event in the shown list 25.0% of 200, no content model"
    assert describe_worker({**status, "counters": judged, "models": {"live": "enc-1"}}, 60_000)[1] == \
        "  encoder live enc-1 (next event in the shown list 25.0% of 200 since it began serving here), no content model"
    # each role's figures since its version began serving, the shadow's beside the shown lists' over the same events:
    # the lifetime counts gave a new shadow the last one's rate, and a promoted live the earlier version's (helper-141)
    since = {**judged, "since_serving": {"live": {"version": "enc-2", "judged": 40, "hits": 30},
                                         "shadow": {"version": "enc-3", "judged": 20, "hits": 5, "live_hits": 16}}}
    assert describe_worker({**status, "counters": since, "models": {"live": "enc-2", "shadow": "enc-3"}},
                           60_000)[1] == ("  encoder live enc-2 (next event in the shown list 75.0% of 40 since it "
                                          "began serving here), shadow enc-3 (would have hit 25.0% of 20, the lists "
                                          "shown 80.0% of the same, not published), no content model")
    fresh = {**since, "since_serving": {**since["since_serving"], "shadow": {"version": "enc-4", "judged": 0,
                                                                              "hits": 0, "live_hits": 0}}}
    assert "shadow enc-4 (would have hit n/a: no list judged since it began serving here" in describe_worker(
        {**status, "counters": fresh, "models": {"live": "enc-2", "shadow": "enc-4"}}, 60_000)[1]
    # the content model serving was left out
    assert describe_worker({**status, "models": {"live": "enc-1", "content": "content-2"}}, 60_000)[1] == \
        "  encoder live enc-1, content model content-2 (item text)"


def test_a_worker_is_listed_with_what_it_waits_for_from_its_start_not_once_faust_has_started(monkeypatch):
    """Faust starts its heartbeat timer only once the app has started: a starting, recovering or stuck worker
    was missing from `stream-app status`, which then said to start one."""
    import asyncio
    from types import SimpleNamespace

    from stream_app.cli.status_command import describe_worker
    from stream_app.stream import worker_status

    published: list[dict] = []

    async def publish_worker_status(worker_id: str, status: dict, ttl_s: int) -> None:
        published.append(status)
        if len(published) == 2:
            worker.processing = True  # the input loop runs: the heartbeat takes over

    async def no_risk() -> None:
        return None

    async def peers() -> list:
        return []

    waiting = {"partitions": "input partitions not assigned, or their tables not recovered yet"}
    worker = SimpleNamespace(
        processing=False, worker_id="w1", settings=SimpleNamespace(app_id="a", redis_url="redis://x"), web_port=1,
        status_failing_since=None, redis_refusal=None,
        missing=lambda: dict(waiting), assigned_inputs=set, counters=SimpleNamespace(),
        ordered=SimpleNamespace(status=dict), watcher=SimpleNamespace(status=dict),
        catalogue=SimpleNamespace(status=dict), store=SimpleNamespace(publish_worker_status=publish_worker_status,
                                                                      eviction_risk=no_risk, worker_statuses=peers),
        peers=worker_status.PeerSettings({}))
    monkeypatch.setattr(worker_status, "STATUS_REFRESH_S", 0.01)
    monkeypatch.setattr(worker_status, "asdict", lambda counters: {"events": 0, "applied": 0, "duplicates": 0,
                                                                   "rejected": 0, "recommendations": 0})
    asyncio.run(asyncio.wait_for(worker_status.status_until_processing(worker), 5))
    assert len(published) == 2 and published[0]["ready"] is False and published[0]["missing"] == waiting
    lines = describe_worker(published[0], item_epoch_ms=60_000)
    assert "w1: not ready" in lines[0]
    assert lines[1] == "  waiting for: partitions (input partitions not assigned, or their tables not recovered yet)"


def test_repair_redis_with_redis_stopped_says_so_before_it_reads_the_topic(monkeypatch, capsys):
    from stream_app.cli.main import main

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # no broker either: Redis is asked first
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    started = time.monotonic()
    assert main(["repair-redis"]) == 2
    err = capsys.readouterr().err
    assert "Redis at redis://127.0.0.1:1/0 does not answer" in err and "Traceback" not in err
    assert time.monotonic() - started < 10  # not after the broker's bootstrap timeout


def test_a_worker_redis_refuses_is_not_ready_so_a_rollout_with_a_wrong_password_stops_there(monkeypatch):
    import asyncio
    from types import SimpleNamespace

    from redis.exceptions import AuthenticationError

    from stream_app.stream import worker_status
    from stream_app.stream.worker import StreamWorker

    async def refuse(worker_id: str, status: dict, ttl_s: int) -> None:
        raise AuthenticationError("invalid username-password pair or user is disabled.")

    ready = asyncio.Event()
    ready.set()
    worker = SimpleNamespace(
        processing=True, partitions_ready=True, models_ready=ready, catalogue_ready=ready, outages={},
        redis_refusal=None, status_failing_since=None, input_ends=SimpleNamespace(missing=dict), worker_id="w1", settings=SimpleNamespace(app_id="a", redis_url="redis://:pw@x:1"),
        web_port=1, assigned_inputs=set, counters=SimpleNamespace(),
        ordered=SimpleNamespace(status=dict, reading_at=time.monotonic()),
        watcher=SimpleNamespace(status=dict), catalogue=SimpleNamespace(status=dict),
        store=SimpleNamespace(publish_worker_status=refuse), peers=worker_status.PeerSettings({}))
    worker.missing = lambda: StreamWorker.missing(worker)
    monkeypatch.setattr(worker_status, "asdict", lambda counters: {})
    assert worker.missing() == {}
    asyncio.run(worker_status.publish_status(worker))
    assert "invalid username-password pair" in worker.missing()["redis"]
    # an input reader that stopped going round its loop (it ended, or hangs): not ready, whatever else holds
    worker.ordered.reading_at = time.monotonic() - 61
    assert "input reader has not gone round its loop for 61s" in worker.missing()["input"]


def test_an_idle_worker_whose_redis_does_not_answer_is_not_ready(monkeypatch, caplog):
    """With no events to store, nothing but the status write met a stopped Redis, and /readyz said ready."""
    import asyncio
    from types import SimpleNamespace

    from redis.exceptions import ConnectionError as RedisConnectionError

    from stream_app.stream import worker_status
    from stream_app.stream.worker import OUTAGE_NOT_READY_S, StreamWorker

    async def unanswered(worker_id: str, status: dict, ttl_s: int) -> None:
        raise RedisConnectionError("Timeout reading from socket")

    async def no_risk() -> None:
        return None

    async def no_peers() -> list:
        return []

    ready = asyncio.Event()
    ready.set()
    worker = SimpleNamespace(
        processing=True, partitions_ready=True, models_ready=ready, catalogue_ready=ready, outages={},
        redis_refusal=None, status_failing_since=None, input_ends=SimpleNamespace(missing=dict), worker_id="w1",
        settings=SimpleNamespace(app_id="a", redis_url="redis://x:1"), web_port=1, assigned_inputs=set,
        counters=SimpleNamespace(), ordered=SimpleNamespace(status=dict, reading_at=time.monotonic()),
        watcher=SimpleNamespace(status=dict), catalogue=SimpleNamespace(status=dict),
        store=SimpleNamespace(publish_worker_status=unanswered, eviction_risk=no_risk, worker_statuses=no_peers),
        peers=worker_status.PeerSettings({}))
    worker.missing = lambda: StreamWorker.missing(worker)
    monkeypatch.setattr(worker_status, "asdict", lambda counters: {})
    asyncio.run(worker_status.publish_status(worker))
    assert worker.missing() == {}  # a moment's failure is retried, not yet a reason
    worker.status_failing_since -= OUTAGE_NOT_READY_S + 1
    asyncio.run(worker_status.publish_status(worker))  # failing still: the first failure's time stays
    assert "cannot write the worker status to Redis for 6s" in worker.missing()["redis"]
    written: list[dict] = []

    async def kept(worker_id: str, status: dict, ttl_s: int) -> None:
        written.append(status)

    worker.store.publish_worker_status = kept
    asyncio.run(worker_status.publish_status(worker))
    assert worker.missing() == {}
    assert "Redis takes the worker status again, after 6s" in caplog.text  # the log says when the outage ended
    # the record the outage's end wrote said "not ready, Redis failing": written again at once as it now is
    assert [(status["ready"], status["missing"]) for status in written] == [
        (False, {"redis": written[0]["missing"]["redis"]}), (True, {})]
    asyncio.run(worker_status.publish_status(worker))
    assert len(written) == 3  # a heartbeat of a worker Redis takes: one write


def test_workers_of_one_namespace_in_two_groups_or_with_different_settings_are_warned_of(monkeypatch, capsys,
                                                                                           caplog):
    """An operator's trial: a peer started with STREAM_APP_TOP_K=5 joined the group without a word (its partitions'
    users got 5 items, the others 20), and one with another STREAM_APP_APP_ID re-read every input and published
    every recommendation again. `status` and the workers (in their log, once) now say so."""
    import asyncio
    from types import SimpleNamespace

    from stream_app.cli import status_command
    from stream_app.config import Settings
    from stream_app.store import redis_store
    from stream_app.stream import worker_status

    def status(worker_id: str, app_id: str, settings: Settings) -> dict:
        return {"worker_id": worker_id, "app_id": app_id, "ready": True, "missing": {}, "input_partitions": [0],
                "counters": {"events": 0, "applied": 0, "duplicates": 0, "rejected": 0, "recommendations": 0},
                "settings": worker_status.group_settings(settings)}

    statuses = [status("a:1", "a", Settings()), status("a:2", "a", Settings(top_k=5, web_host="127.0.0.1")),
                status("b:3", "b", Settings())]
    assert worker_status.disagreements(statuses[:1] + [status("a:4", "a", Settings(web_host="127.0.0.1",
                                                                                   batch_max=9))]) == []
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(redis_store, "worker_statuses", lambda client, namespace, ttl_s=None: statuses)
    assert status_command.cmd_status(None) == 0
    out = capsys.readouterr().out
    assert "warning: 2 consumer groups in this namespace (STREAM_APP_APP_ID: a: a:1, a:2; b: b:3)" in out
    assert "warning: the workers of a disagree on STREAM_APP_TOP_K (20 on a:1; 5 on a:2)" in out
    assert "WEB_HOST" not in out  # a worker's own

    async def peers() -> list:
        return statuses

    checker = worker_status.PeerSettings(statuses[0]["settings"])
    store = SimpleNamespace(worker_statuses=peers)

    async def twice() -> None:
        for _ in range(2):  # a minute on, the same disagreements are not logged again
            checker.check(store)
            await checker.reading  # off the heartbeat, in a task of its own
            checker.checked_at -= worker_status.PEERS_CHECK_S

    asyncio.run(twice())
    assert caplog.text.count("disagree on STREAM_APP_TOP_K") == 1 and caplog.text.count("2 consumer groups") == 1
    # a review: an ACL refusing SCAN raised out of the heartbeat (a stray value: tests/test_redis_store.py)
    assert worker_status.disagreements([statuses[0], {**statuses[1], "settings": {"STREAM_APP_NEW": 1}}]) == []

    async def refused() -> list:
        raise redis.exceptions.NoPermissionError("this user has no permissions to run the 'scan' command")

    asyncio.run(worker_status.PeerSettings({}).compare(SimpleNamespace(worker_statuses=refused)))
    assert "could not compare this worker's settings with its peers' (NoPermissionError" in caplog.text


def test_readiness_says_how_a_wedged_group_looks_after_minutes_without_partitions():
    """Tansu 0.6.0 can keep a group without a leader for good once all its workers left at once: the workers
    then wait for partitions forever, and nothing said why."""
    import asyncio
    import time as clock
    from types import SimpleNamespace

    from stream_app.stream.worker import StreamWorker
    from stream_app.stream.worker_status import WEDGE_HINT_S

    ready = asyncio.Event()
    worker = SimpleNamespace(partitions_ready=False, processing=False, models_ready=ready, catalogue_ready=ready,
                             outages={}, redis_refusal=None, status_failing_since=None,
                             unassigned_since=clock.monotonic() - 10)
    assert "Elected group leader" not in StreamWorker.missing(worker)["partitions"]
    worker.unassigned_since = clock.monotonic() - WEDGE_HINT_S - 1
    said = StreamWorker.missing(worker)["partitions"]
    assert "Elected group leader" in said and "STREAM_APP_APP_ID" in said


def test_a_stop_that_hangs_ends_at_its_deadline_with_its_own_exit_status():
    """With the broker gone, Faust's consumer waited 65 s to stop; an orchestrator's grace is often 30 s."""
    code = ("import time; from stream_app.stream.retries import exit_if_stop_hangs; exit_if_stop_hangs(0.3); "
            "time.sleep(30)")
    started = time.monotonic()
    ended = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert ended.returncode == 75 and time.monotonic() - started < 10
    assert "stopping has taken 0s" in ended.stderr and "nothing is lost" in ended.stderr


def test_the_stop_deadline_starts_at_the_signal(monkeypatch):
    """Faust's consumer waits for unacknowledged input before the app's own stop hook runs: a deadline started
    there would never start on the stop that hangs."""
    import faust

    from stream_app.stream import foreground

    started: list[str] = []
    monkeypatch.setattr(foreground, "exit_if_stop_hangs", lambda: started.append("deadline"))
    monkeypatch.setattr(faust.Worker, "_on_sigterm", lambda self: started.append("stop"))
    monkeypatch.setattr(faust.Worker, "_on_sigint", lambda self: started.append("stop"))
    worker = foreground.Worker.__new__(foreground.Worker)
    worker._on_sigterm()
    worker._on_sigint()
    assert started == ["deadline", "stop", "deadline", "stop"]


def test_the_cli_runs_as_a_module_by_either_name():
    """`python -m stream_app.cli.main worker` printed nothing and exited 0: a container given that command
    restarted without end, its log empty."""
    for module in ("stream_app.cli", "stream_app.cli.main"):
        ran = subprocess.run([sys.executable, "-m", module, "worker", "--help"], capture_output=True, text=True,
                             timeout=60)
        assert ran.returncode == 0 and "--web-port" in ran.stdout, (module, ran.stdout, ran.stderr)


def test_status_says_when_a_worker_has_missed_its_heartbeats():
    """A SIGKILLed worker stayed listed as ready, with the partitions another worker had taken, until its key
    expired 15 s later."""
    import time

    from stream_app.cli.status_command import describe_worker

    counters = {"events": 0, "applied": 0, "duplicates": 0, "rejected": 0, "recommendations": 0}
    now_ms = int(time.time() * 1000)
    status = {"worker_id": "w1", "ready": True, "web_port": 8000, "input_partitions": [0], "counters": counters,
              "updated_at": now_ms - 2_000}
    assert describe_worker(status, 60_000)[0].startswith("worker w1: ready, HTTP port 8000")
    stale = describe_worker({**status, "updated_at": now_ms - 12_000}, 60_000)[0]
    assert stale.startswith("worker w1: ready as of 12s ago (gone or stuck?), HTTP port 8000")
    # by Redis's clock where the reader gave it: a worker's clock a minute ahead stamped a stopped worker as fresh
    ahead = describe_worker({**status, "updated_at": now_ms + 60_000, "age_s": 12.4}, 60_000)[0]
    assert ahead.startswith("worker w1: ready as of 12s ago (gone or stuck?)")
    assert describe_worker({**status, "updated_at": now_ms - 20_000, "age_s": 1.0}, 60_000)[0].startswith(
        "worker w1: ready, HTTP port")  # a clock behind: not "gone"


def test_a_status_keys_age_is_read_by_redis_clock(redis_client):
    from stream_app.store.redis_store import worker_key, worker_statuses

    status = {"worker_id": "w9", "ready": True, "updated_at": 1}  # a clock decades behind: not what the age reads
    redis_client.set(worker_key("agetest.", "w9"), orjson.dumps(status), px=3_000)  # 12 s of its 15 gone
    (found,) = worker_statuses(redis_client, "agetest.", ttl_s=15)
    assert 11.5 <= found["age_s"] <= 12.5 and found["worker_id"] == "w9"
    assert "age_s" not in worker_statuses(redis_client, "agetest.")[0]


def test_status_from_a_shell_that_reaches_no_broker_says_so_of_this_shell_not_of_the_workers(tmp_path, monkeypatch,
                                                                                             capsys):
    """A walkthrough: `status` run with a wrong KAFKA_BOOTSTRAP_SERVERS said "the workers below cannot read or
    commit" of workers that were ready and reported so through Redis; the address is this shell's own."""
    from stream_app.cli.main import main
    from stream_app.store import redis_store

    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path))  # not a developer's running `up`
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    counters = {"events": 5, "applied": 5, "duplicates": 0, "rejected": 0, "recommendations": 5}
    ready = {"worker_id": "w1", "ready": True, "missing": {}, "input_partitions": [0], "counters": counters,
             "updated_at": int(time.time() * 1000)}
    foreign = {"worker_id": "other-app", "ready": True}  # another app's key under the namespace: no traceback
    monkeypatch.setattr(redis_store, "worker_statuses", lambda client, namespace, ttl_s=None: [ready, foreign])
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "worker key of 'other-app': not a stream-app worker's status" in out
    kafka_line = out.splitlines()[0]
    assert kafka_line.startswith("KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1 (no broker takes a connection from this shell "
                                 "at 127.0.0.1:1")
    assert "set KAFKA_BOOTSTRAP_SERVERS in this shell" in kafka_line and "stream-app up" in kafka_line
    assert kafka_line.count("(") == kafka_line.count(")")
    assert "cannot read or commit" not in out and "ready" not in kafka_line  # the workers say so themselves
    assert "worker w1: ready" in out
    # an address no client can read is said as such: "start the broker" was the wrong advice for a URL or a port
    for servers, said in (("http://x:9092", "http://x:9092 is not a broker address: give host:port"),
                          (",,", "an empty entry is not a broker address"),
                          ("x:99999", "x:99999 is not a broker address: give host:port (port 1 to 65535")):
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", servers)
        assert main(["status"]) == 0
        kafka_line = capsys.readouterr().out.splitlines()[0]
        assert said in kafka_line and "start the broker" not in kafka_line, kafka_line


def test_status_says_which_input_partitions_the_workers_have_not_written_back_to_redis():
    """The read API answers 503 for users Redis does not hold in such partitions; an operator saw no reason why."""
    from stream_app.cli.status_command import mirror_said

    assert "no marker of the workers'" in mirror_said({})
    assert "no marker of the workers'" in mirror_said({b"token": b"t", b"partition:0": b"t"})  # no count yet
    assert "partitions 1, 3 of 4 not written back yet" in mirror_said(
        {b"token": b"t", b"partitions": b"4", b"partition:0": b"t", b"partition:1": b"old", b"partition:2": b"t"})
    assert "partition 3 of 4 not written back" in mirror_said(
        {b"token": b"t", b"partitions": b"4", b"partition:0": b"t", b"partition:1": b"t", b"partition:2": b"t"})
    assert mirror_said({b"token": b"t", b"partitions": b"4", **{f"partition:{p}".encode(): b"t" for p in range(4)}}) \
        == "profiles in Redis: all 4 input partitions written back"


def test_up_warns_when_this_shells_settings_name_the_services_of_an_earlier_up():
    """After `export $(stream-app up)`, `down` and `up` again (new ports), every Kafka command in that shell waited
    30 s for the old broker before it said it could not reach it (a walkthrough, helper-137)."""
    from stream_app.tools.embedded import running_since, shell_elsewhere

    record = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:2000", "REDIS_URL": "redis://:p@127.0.0.1:3000/0"}
    assert shell_elsewhere(record, {}) == shell_elsewhere(record, dict(record)) == ""
    said = shell_elsewhere(record, {**record, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1999"})
    assert said.startswith("; this shell's KAFKA_BOOTSTRAP_SERVERS names other hosts or ports") and "export $(" in said
    # the same places written otherwise are not other services
    assert shell_elsewhere(record, {"KAFKA_BOOTSTRAP_SERVERS": "localhost:2000",
                                    "REDIS_URL": "redis://:p@localhost:3000"}) == ""
    assert "KAFKA_BOOTSTRAP_SERVERS and REDIS_URL" in shell_elsewhere(record, {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1999", "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert running_since({"already_running": True, "started_at": 1}) == " (already, since 1970-01-01 00:00:01 UTC)"
    assert running_since({}) == "" and running_since({"already_running": True}) == " (already)"


def test_the_demo_says_when_its_worker_fell_behind_the_offered_rate(capsys):
    """A latency of seconds at 300 events/s on a slow machine is a queue, not the worker's latency: said so."""
    from stream_app.tools.demo import say_behind

    sent = {f"e{i}": 1_000.0 + i * 10 for i in range(630)}  # 100 events/s over 6.3 s
    say_behind(sent, 12.6, 100.0)
    said = capsys.readouterr().out
    assert "went out in 6.3s" in said and "after 12.6s" in said and "took 50 events/s of the 100 offered" in said
    say_behind(sent, 6.6, 100.0)  # kept up: the last recommendation within a few batches of the last send
    say_behind(sent, 12.6, None)  # full speed: nothing was offered at a rate to keep up with
    assert capsys.readouterr().out == ""


def test_a_damaged_file_of_kept_text_vectors_leaves_the_demo_to_embed(tmp_path, monkeypatch, capsys):
    """The demo's kept vectors are a cache: a truncated file is said and skipped, never a failed demo."""
    from stream_app.config import Settings
    from stream_app.tools.demo import seed_vectors, vectors_file

    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path))
    path = vectors_file("content-v1")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 truncated")
    assert seed_vectors(Settings(redis_url="redis://127.0.0.1:1/0"), "content-v1") == 0
    assert "were not used" in capsys.readouterr().out
    assert seed_vectors(Settings(redis_url="redis://127.0.0.1:1/0"), "content-v2") == 0  # none kept: nothing said
    assert capsys.readouterr().out == ""


def test_a_failed_write_of_the_kept_text_vectors_leaves_no_partial_file(tmp_path, monkeypatch, capsys, make_settings,
                                                                        redis_client):
    """Keeping the worker's vectors for the next demo fails (a full disk, say): said, the kept file as it was, and no
    half-written file beside it."""
    import numpy as np

    from stream_app.store.text_vectors import vectors_key
    from stream_app.tools import demo

    settings = make_settings()
    redis_client.hset(vectors_key(settings.namespace, "content-v1"), mapping={"a" * 32: b"\x00<" * 4})
    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path))
    path = demo.vectors_file("content-v1")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"kept before")

    def full_disk(file, **arrays):
        file.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    demo.keep_vectors(settings, "content-v1")
    assert "were not kept" in capsys.readouterr().out
    assert sorted(path.parent.iterdir()) == [path] and path.read_bytes() == b"kept before"
    monkeypatch.undo()
    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path))
    demo.keep_vectors(settings, "content-v1")  # written whole when it can be
    with np.load(path) as kept:
        assert kept["keys"].tolist() == ["a" * 32] and kept["vectors"].shape == (1, 4)


def test_the_demos_encoder_is_left_out_saying_why_when_its_log_is_too_small_to_train_on(tmp_path, capsys):
    """`demo --file` with a log of one event ended in a ValueError traceback (its run folder and topics left)."""
    from stream_app.tools.demo import train_demo_encoder

    log = tmp_path / "one.csv"
    log.write_text("user_id,item_id,type,ts\nu1,i1,click,1700000000000\n")
    assert train_demo_encoder(log, "csv", tmp_path / "registry") is None
    said = capsys.readouterr().out
    assert "encoder   none: " in said and "1 readable events: too few to train an encoder" in said
    # a log just large enough trains a model of little use: said, as `train` says it (the demo said nothing)
    log.write_text("user_id,item_id,type,ts\n" + "".join(f"u1,i{i},click,{1700000000000 + i * 60000}\n"
                                                         for i in range(6)))
    assert train_demo_encoder(log, "csv", tmp_path / "registry") is not None
    said = capsys.readouterr().out
    assert "encoder   training on one.csv" in said and "encoder   warning: only " in said


def test_the_demo_raises_an_encoder_export_that_differs_from_the_trained_model(tmp_path, monkeypatch, capsys):
    """Only a log too small to train on is said and passed over: a broken export is a fault to see, not a note."""
    from stream_app.tools.demo import train_demo_encoder
    from stream_app_train import train as training

    monkeypatch.setattr(training, "PARITY_TOLERANCE", -1.0)  # any export differs by more than that
    with pytest.raises(ValueError, match="the exported ONNX graph differs from the trained model"):
        train_demo_encoder(Path(OTTO_SAMPLE), "otto", tmp_path / "registry")
    assert "encoder   none" not in capsys.readouterr().out


def test_the_demo_of_a_log_with_an_event_a_worker_refuses_and_a_repeated_id_ends_with_its_summary(services, tmp_path):
    """The demo waited for one recommendation per event it read, and so timed out (exit 1, a Faust log tail) on a
    log with an event dated beyond the time window, which the worker dead-letters, or an event id sent twice."""
    now = int(time.time() * 1000)
    events = [{"event_id": f"e{i}", "user_id": f"u{i % 3}", "item_id": f"i{i % 7}", "type": "click",
               "ts": now - 3_600_000 + i * 60_000, "schema_version": 1} for i in range(30)]
    ahead = {**events[0], "event_id": "ahead", "ts": 4_102_444_800_000}  # the year 2100
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join(orjson.dumps(event) for event in [*events, events[5], ahead]) + b"\n")
    env = {**os.environ, **services, "STREAM_APP_STATE_DIR": str(tmp_path / "state")}
    out = cli("demo", "--file", str(log), "--rate", "max", "--timeout", "120", env=env, timeout=400)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 lines or events it cannot read or a worker would refuse" in out.stdout
    assert "1 repeat an event id (applied once)" in out.stdout
    assert "events in: 31   recommendations out: 30   dead letters: 1" in out.stdout
