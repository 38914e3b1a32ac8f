"""The CLI's answers to wrong input and unreachable services: one line that says what to do, before any
long work starts, never a traceback."""

import argparse
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from kafka.errors import KafkaTimeoutError

from stream_app.cli import evaluate_command as commands
from stream_app.cli import kafka_errors, main
from stream_app.config import Settings
from stream_app.errors import ConfigError, InputFileError, StreamAppError
from stream_app.evaluate.prequential import read_truth
from stream_app.evaluate.tables import table

OTTO = str(Path(__file__).parents[1] / "stream_app" / "data" / "otto-sample.jsonl")


def test_a_kafka_client_that_reaches_no_broker_is_told_apart_from_other_errors():
    said = kafka_errors.kafka_unreachable(KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1"))
    assert "cannot reach a Kafka broker" in said and "KAFKA_BOOTSTRAP_SERVERS" in said and "127.0.0.1:1" in said
    try:  # as a library raises it: wrapped by the code that called it
        try:
            raise KafkaConnectionError("Unable to bootstrap from [('notahost', 9092)]")
        except KafkaConnectionError as inner:
            raise RuntimeError("start failed") from inner
    except RuntimeError as outer:
        assert "notahost" in kafka_errors.kafka_unreachable(outer)
    try:  # a bug raised while handling a timeout is a bug: it keeps its traceback
        try:
            raise KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1")
        except KafkaTimeoutError:
            raise KeyError("a bug in the handler")
    except KeyError as bug:
        assert kafka_errors.kafka_unreachable(bug) is None
    assert kafka_errors.kafka_unreachable(KafkaTimeoutError("Failed to update metadata after 60.0 secs")) is None
    assert kafka_errors.kafka_unreachable(ValueError("Unable to bootstrap")) is None


def test_main_reports_an_unreachable_broker_in_one_line_and_keeps_other_tracebacks(monkeypatch, capsys):
    def unreachable(_args):
        raise KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1")

    monkeypatch.setattr(main, "cmd_down", unreachable)
    assert main.main(["down"]) == 2
    assert capsys.readouterr().err.startswith("stream-app down: error: cannot reach a Kafka broker")

    def bug(_args):
        raise KeyError("a bug keeps its traceback")

    monkeypatch.setattr(main, "cmd_down", bug)
    with pytest.raises(KeyError):
        main.main(["down"])


def test_a_redis_url_without_a_redis_scheme_is_refused_by_name():
    with pytest.raises(ConfigError, match="REDIS_URL=garbage is not a Redis URL: use redis://host:port/0"):
        Settings(redis_url="garbage").require_redis()
    for url in ("redis://localhost:6379/0", "rediss://h:6380/1", "unix:///tmp/r.sock"):
        assert Settings(redis_url=url).require_redis() == url


@pytest.mark.parametrize("argv", [["serve", "--port", "99999"], ["worker", "--web-port", "65536"],
                                  ["worker", "--web-port", "-1"]])
def test_ports_out_of_range_are_refused_before_anything_starts(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main.parser().parse_args(argv)
    assert exited.value.code == 2 and "port" in capsys.readouterr().err


def test_evaluate_refuses_options_it_would_ignore(capsys):
    for argv, said in ((["--no-baselines"], "--no-baselines acts only with --via-kafka"),
                       (["--workers", "2"], "--workers acts only with --via-kafka"),
                       (["--content", "v1"], "--content acts only with --items"),
                       (["--via-kafka", "--truth", "t.json"], "--truth acts only in process"),
                       (["--via-kafka", "--html", "r.html"], "--html acts only in process"),
                       (["--via-kafka", "--sort-in-memory", "9"], "--sort-in-memory acts only in process")):
        assert main.main(["evaluate", OTTO, "--format", "otto", *argv]) == 2
        assert said in capsys.readouterr().err


def test_an_option_given_at_its_default_value_is_still_refused_where_it_would_be_ignored(capsys):
    args = main.parser().parse_args(["evaluate", "log.jsonl"])
    assert not any(hasattr(args, name) for name in commands._NEEDS)  # left out unless given: told apart
    assert all(getattr(args, name) is None for name in commands._NOT_VIA_KAFKA)
    for argv, said in ((["--workers", "1"], "--workers acts only with --via-kafka"),
                       (["--rate", "max"], "--rate acts only with --via-kafka"),
                       (["--items-format", "jsonl"], "--items-format acts only with --items"),
                       (["--via-kafka", "--light", "--no-baselines"], "--light chooses among the rows --no-baselines"),
                       (["--via-kafka", "--no-variants", "--no-baselines"],
                        "--no-variants chooses among the rows --no-baselines leaves out")):
        assert main.main(["evaluate", OTTO, "--format", "otto", *argv]) == 2
        assert said in capsys.readouterr().err


def test_evaluate_checks_where_its_reports_go_before_the_run(tmp_path, monkeypatch, capsys):
    def run(*_args, **_kwargs):
        raise AssertionError("the evaluation ran before its report paths were checked")

    monkeypatch.setattr("stream_app.evaluate.prequential.evaluate_log", run)
    monkeypatch.chdir(tmp_path)  # the default report folder, reports/, is made here
    unwritable = tmp_path / "no-such-folder-file"
    unwritable.write_text("a file where a folder is asked for")
    for option, path in (("--html", str(unwritable / "r.html")), ("--json", str(tmp_path))):
        assert main.main(["evaluate", OTTO, "--format", "otto", option, path]) == 2
        said = capsys.readouterr().err
        assert f"cannot write {path}" in said or f"cannot make the folder of {path}" in said
    assert commands._writable(str(tmp_path / "new" / "r.json"), "x").parent.is_dir()
    assert not (tmp_path / "new" / "r.json").exists()  # checked, not left behind


def test_evaluate_refuses_to_write_a_report_over_a_file_it_reads(tmp_path, monkeypatch, capsys):
    """`--json LOG` replaced a user's log with the results (helper-139 #1): the log, the catalogue and the ground
    truth, by any spelling of their path or a link to them."""
    def run(*_args, **_kwargs):
        raise AssertionError("the evaluation ran before its report paths were checked")

    monkeypatch.setattr("stream_app.evaluate.prequential.evaluate_log", run)
    monkeypatch.setattr("stream_app.evaluate.via_kafka.evaluate_via_kafka", run)
    monkeypatch.chdir(tmp_path)
    log, truth = tmp_path / "log.jsonl", tmp_path / "truth.json"
    log.write_bytes(Path(OTTO).read_bytes())
    truth.write_text("{}")
    (tmp_path / "link.jsonl").symlink_to(log)
    for argv, said in (
            (["--json", "log.jsonl"], "--json log.jsonl is the log this run reads"),
            (["--html", str(log)], f"--html {log} is the log this run reads"),
            (["--json", "link.jsonl"], "--json link.jsonl is the log"),
            (["--json", "./truth.json", "--truth", "truth.json"], "is the ground truth this run reads"),
            (["--via-kafka", "--json", "log.jsonl"], "--json log.jsonl is the log this run reads")):
        assert main.main(["evaluate", "log.jsonl", "--format", "otto", *argv]) == 2, argv
        assert said in capsys.readouterr().err
    assert log.read_bytes() == Path(OTTO).read_bytes() and truth.read_text() == "{}"


def test_an_interrupted_evaluate_says_that_nothing_was_written_and_how_to_make_it_shorter(tmp_path, monkeypatch,
                                                                                            capsys):
    """Ctrl-C of a long pass exited 130 without a word."""
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("stream_app.evaluate.prequential.evaluate_log", interrupted)
    monkeypatch.chdir(tmp_path)
    assert main.main(["evaluate", OTTO, "--format", "otto"]) == 130
    said = capsys.readouterr().err
    assert "interrupted: no table and no report written" in said and "--limit N" in said
    assert not list((tmp_path / "reports").glob("*"))


def test_default_report_names_drop_the_logs_suffixes_and_mark_light_runs():
    assert commands._log_name("data/online_retail.csv.gz") == "online_retail"
    assert commands._log_name("/tmp/synth/events.jsonl") == "events"
    args = argparse.Namespace(log="x.csv.gz", light=True, limit=None, encoder=None)
    assert commands.report_name(args) == "x-light"
    args.judge_from = 0.5
    assert commands.report_name(args) == "x-light-judged-from-0.5"
    assert commands.report_name(argparse.Namespace(log="x.csv", light=False, limit=1000, encoder="enc-1")) == \
        "x-first1000-enc-1"
    assert commands.report_name(argparse.Namespace(log="x.csv", light=False, limit=None, encoder=None,
                                                   no_variants=True)) == "x-no-variants"
    # a data-team walkthrough: a run with item text replaced the same run's reports without it
    assert commands.report_name(argparse.Namespace(log="x.csv", light=True, limit=None, encoder="e1", shadow="e2",
                                                   items="shop/items.csv.gz", content="c1")) == \
        "x-light-e1-shadow-e2-items-items-content-c1"
    # the names as the parser and its checks leave the options (--content defaults to latest, named by no run)
    from stream_app.cli.evaluate_command import _refuse_ignored_options
    from stream_app.cli.main import parser

    for argv, name in ((["evaluate", "x.jsonl"], "x"), (["evaluate", "x.jsonl", "--items", "i.csv"], "x-items-i")):
        parsed = parser().parse_args(argv)
        _refuse_ignored_options(parsed)
        assert commands.report_name(parsed) == name


def test_a_ground_truth_that_is_missing_or_not_synths_is_refused(tmp_path):
    with pytest.raises(InputFileError, match="cannot read the ground truth"):
        read_truth(tmp_path / "none.json")
    for text, said in (("{bad", "is not JSON"), ("[1, 2]", "is not a ground truth"),
                       ('{"users": {"u1": {"interests": [1]}}}', "is not a ground truth")):
        path = tmp_path / "t.json"
        path.write_text(text)
        with pytest.raises(InputFileError, match=said):
            read_truth(path)
    good = {"users": {"u1": {"interests": {"c1": 1.0}, "drift_at": None}}}
    (tmp_path / "ok.json").write_bytes(orjson.dumps(good))
    assert read_truth(tmp_path / "ok.json") == good


def _result(judged: int) -> dict:
    tally = {"judged": judged, "recall@20": 0.5, "mrr@20": 0.25, "ndcg@20": 0.3}
    model = {**tally, "by_type": {"purchase": tally}, "cold_start": tally, "coverage": 0.1,
             "popularity_percentile": 0.5, "events_per_s": 100.0}
    return {"k": 20, "events": 10, "users": 2, "items": 5, "batch": 500, "events_per_s": 100.0,
            "models": {"stream-app": model}}


def test_a_log_with_no_more_items_than_a_list_holds_is_said_to_tell_the_rows_little():
    """A new user's walkthrough: a 12-item csv evaluated at K 20 tied most rows at one Recall, and nothing said why."""
    assert "warning: the log has 5 items and a list holds 20: a model can list every item" in table(_result(7))
    assert "a model can list every item" not in table({**_result(7), "items": 21})
    assert "the log has 20 items and a list holds 20" in table({**_result(7), "items": 20})  # every item fits


def test_the_table_says_how_many_events_were_judged_and_when_none_were():
    text = table(_result(7))
    assert "judged: 7 events" in text and "nothing to judge" not in text
    head = next(line for line in text.splitlines() if line.startswith("model"))
    row = next(line for line in text.splitlines() if line.startswith("stream-app"))
    assert len(head) == len(row)  # every column as wide as its heading ("R@20 purchase" is 13)
    assert "coverage: the share of the log's items" in text
    assert "nothing to judge" in table(_result(0)) and "proposed no item" not in text
    silent = _result(7)
    silent["models"]["category only"] = {**silent["models"]["stream-app"], "coverage": 0.0}
    assert "proposed no item on this log (its source has nothing to work from here" in table(silent)
    assert table(silent).rstrip().endswith("(1: the most popular)") and ": category only" in table(silent)
    # a filled row covers popular items; that its source had none is said all the same
    filled = _result(7)
    filled["models"]["category only, then popular"] = {**filled["models"]["stream-app"], "source_proposed_nothing": True}
    assert ": category only, then popular" in table(filled)


def test_a_state_folder_that_cannot_be_used_is_named_with_the_setting_to_change(tmp_path, monkeypatch, capsys):
    blocked = tmp_path / "a-file"
    blocked.write_text("a file where the state folder's parent should be")
    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(blocked / "state"))
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"):
        monkeypatch.setenv(name, "")
    for command in ("up", "down"):
        assert main.main([command]) == 2
        said = capsys.readouterr().err
        assert "set STREAM_APP_STATE_DIR to a folder this user can write" in said and "Traceback" not in said


def test_an_erasure_of_an_invalid_user_id_is_refused_before_anything_is_sent(tmp_path, monkeypatch, capsys):
    """A worker would dead-letter such a request, the user id in it, and no receipt would come."""
    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path))  # a developer's `up` is not "an endpoint beside up"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens: no connection is made first
    for user in ("", "x" * 201):
        assert main.main(["erase", "u1", user, "--no-wait"]) == 2
        said = capsys.readouterr().err
        assert "cannot request the erasure of" in said and "1 to 200 characters" in said and "Nothing was sent" in said


@pytest.mark.parametrize("argv, said", [
    (["synth", "/tmp", "--events", "10"], "cannot write /tmp (Is a directory): give a file path"),
    (["content", "bench", "/no/such/titles.csv"], "/no/such/titles.csv: no such file"),
    (["evaluate", OTTO, "--rate", "nan", "--via-kafka"], "argument --rate: must be a number of 0.001 or more"),
    (["train", OTTO, "--train-fraction", "1.5"], "must be between 0 and 1"),
    (["bench", "--timeout", "inf"], "must be a number of seconds above 0, not 'inf'"),
    (["bench", "--rounds", "3"], "--rounds repeats the comparison with the plain app at full speed: give it with "
                                 "--baseline"),
    (["bench", "--rounds", "3", "--baseline", "--rate", "500"], "without --rate and with one worker count"),
    (["bench", "--rounds", "3", "--baseline", "--workers", "1,2"], "without --rate and with one worker count"),
    (["bench", "--rounds", "0"], "argument --rounds: must be 1 or more, not 0"),
    # a misspelt option: the command's own usage and the option meant (the top level's usage listed every command)
    (["replay", "log.csv", "--limt", "100"], "stream-app replay: error: unrecognized arguments: --limt 100 (did you "
                                             "mean --limit?)"),
    (["evaluate", "log.csv", "--via-kafka", "--rate=max", "--wrokers", "2"], "stream-app evaluate: error: "
                                                                           "unrecognized arguments: --wrokers 2 (did "
                                                                           "you mean --workers?)"),
    (["status", "now"], "stream-app status: error: unrecognized arguments: now"),
])
def test_mistakes_in_paths_and_numbers_are_one_line_not_a_traceback(argv, said, capsys):
    try:
        code = main.main(argv)
    except SystemExit as exc:  # argparse's refusal
        code = exc.code
    assert code == 2 and said in capsys.readouterr().err


def test_a_reader_that_stops_reading_ends_the_command_quietly(monkeypatch, capsys):
    """`stream-app status | head -1`: a traceback for a closed pipe."""
    def closed_pipe(args: argparse.Namespace) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    parsed = main.parser().parse_args(["status"])
    monkeypatch.setattr(main, "parser", lambda: argparse.Namespace(parse_args=lambda argv: argparse.Namespace(
        **{**vars(parsed), "fn": closed_pipe})))
    assert main.main(["status"]) == 0


def test_float_settings_out_of_their_range_are_refused_by_name():
    for name, value in [("covis_weight", -100.0), ("bandit_epsilon", 5.0), ("ranker_learning_rate", -1.0),
                        ("batch_within_s", float("nan")), ("commit_interval_s", 0.0), ("drift_downweight", 0.5)]:
        with pytest.raises(ConfigError, match=f"{name}=.*STREAM_APP_{name.upper()}"):
            Settings(**{name: value})
    Settings(covis_weight=0.0, bandit_epsilon=1.0)  # a source off, always exploring: allowed


def test_train_says_what_would_fail_after_the_training_before_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STREAM_APP_REGISTRY_DIR", str(tmp_path / "workers"))
    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path / "state"))  # not a developer's running `up`
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    for extra, said in [(["--shadow"], "add --publish"),
                        (["--max-len", "51"], "over the 50 events a profile keeps"),
                        (["--registry", str(tmp_path / "mine"), "--publish"], "a version they cannot find")]:
        assert main.main(["train", OTTO, "--format", "otto", *extra]) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "mine").exists() and not (tmp_path / "workers").exists()  # nothing trained or written


def test_an_unreachable_broker_message_gives_the_clients_last_warning_as_a_tls_or_login_failure_hides_there():
    import logging

    kafka_errors.CONNECTION_WARNINGS.attach()
    logging.getLogger("kafka.conn").warning("<BrokerConnection host=k1:9093>: Handshake failed: [SSL: "
                                            "CERTIFICATE_VERIFY_FAILED] certificate verify failed (sasl_ssl://u:pw@k1)")
    said = kafka_errors.kafka_unreachable(KafkaTimeoutError("Unable to bootstrap from k1:9093"))
    assert "CERTIFICATE_VERIFY_FAILED" in said and "KAFKA_SSL_CAFILE" in said
    assert "u:***@k1" in said and ":pw@" not in said


def test_train_and_the_content_export_name_a_missing_package_of_the_train_extra_before_any_work(monkeypatch, capsys):
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else found(name, *a))
    assert main.main(["train", OTTO, "--format", "otto"]) == 2
    assert "training needs onnx" in capsys.readouterr().err
    assert main.main(["content", "export"]) == 2
    assert "the export needs onnx" in capsys.readouterr().err


def test_down_stops_the_services_whatever_the_settings_say(tmp_path, monkeypatch, capsys):
    """`up`, `down` and `synth` read no settings (docs/configuration.md): a mistyped STREAM_APP_ variable refuses
    every other command, but must not keep the embedded services running."""
    from stream_app.tools import embedded

    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("STREAM_APP_TOPK", "5")
    monkeypatch.setattr(embedded, "down", lambda: True)
    assert main.main(["down"]) == 0
    assert "stopped the embedded broker" in capsys.readouterr().out
    assert main.main(["status"]) == 2
    assert "STREAM_APP_TOPK is not a setting" in capsys.readouterr().err


@pytest.mark.parametrize("argv, said", [
    (["replay", OTTO, "--format", "otto", "--rate", "1e-300"], "argument --rate: 1e-300 is under 0.001 events per second"),
    (["demo", "--rate", "1e-9"], "give 0.001 or more"),
    (["chaos", "--rate", "nan"], "argument --rate: must be a number of 0.001 or more"),
    (["chaos", "--rate", "1e-300"], "is under 0.001 events per second"),
    (["chaos", "--rate", "max"], "argument --rate: takes events per second, not 'max'"),
    (["synth", "/tmp/never-written.jsonl", "--seed", "-1"], "must be 0 or more, not -1"),
    (["train", OTTO, "--seed", str(2 ** 64)], "a seed is 0 to 9223372036854775807"),
    (["chaos", "--seed", "99999999999999999999999"], "a seed is 0 to"),
])
def test_paces_and_seeds_the_clock_or_the_generators_cannot_take_are_refused_before_anything_starts(argv, said,
                                                                                                   capsys):
    """--rate 1e-300 ended replay in an OverflowError after its first event (time.sleep); chaos took any float
    (nan paced nothing, a tiny one drew kills for ever); a negative or huge --seed was numpy's or torch's
    traceback after the work began."""
    with pytest.raises(SystemExit) as refused:
        main.main(argv)
    assert refused.value.code == 2 and said in capsys.readouterr().err


@pytest.mark.parametrize("kill_every", [("1e-9", "1e-9"), ("0.5", "2"), ("5", "inf"), ("30", "10")])
def test_chaos_refuses_kill_intervals_whose_schedule_never_ends(kill_every, monkeypatch, capsys):
    """--kill-every 1e-9 1e-9 drew a fault schedule of a kill every nanosecond of the run: it never ended."""
    import stream_app.tools.chaos as chaos

    monkeypatch.setattr(chaos, "run_chaos", lambda *a, **k: pytest.fail("the run began"))
    assert main.main(["chaos", "--kill-every", *kill_every]) == 2
    assert "--kill-every MIN MAX with 1 <= MIN <= MAX" in capsys.readouterr().err


def test_sigterm_stops_what_the_command_started_and_exits_143(monkeypatch):
    """`kill PID` (or `timeout`, a container's stop) of a `demo` ended the process at once: its embedded broker,
    Redis and worker ran on for good. It is raised as Ctrl-C is, so the `finally` blocks stop them."""
    import os
    import signal

    stopped = []

    def long_command(_args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("SIGTERM did not reach the command")
        finally:
            stopped.append("the services")

    def ignored(*_):  # without main's own handler, the signal is ignored here: the test fails, not the runner
        pass

    monkeypatch.setattr(main, "cmd_demo", long_command)
    before = signal.signal(signal.SIGTERM, ignored)
    try:
        assert main.main(["demo"]) == 143 and stopped == ["the services"]
        assert signal.getsignal(signal.SIGTERM) is ignored  # the caller's handler is back
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("servers, named", [
    ("http://127.0.0.1:9092", "http://127.0.0.1:9092 is not a broker address"),
    ("127.0.0.1:99999", "127.0.0.1:99999 is not a broker address"),
    ("kafka1:9092,,kafka2:9092", "an empty entry is not a broker address"),
    ("kafka:port", "kafka:port is not a broker address"),
    ("sasl_ssl://user:secret@kafka:9092", "sasl_ssl://user:***@kafka:9092 is not a broker address"),
])
def test_a_bootstrap_address_the_clients_cannot_read_is_refused_at_once_by_name(servers, named):
    """KAFKA_BOOTSTRAP_SERVERS=http://host:9092 or a port of 99999: every command tried it for 30 s and said only
    "cannot reach a Kafka broker"."""
    with pytest.raises(ConfigError) as refused:
        Settings(kafka_bootstrap_servers=servers).require_kafka()
    said = str(refused.value)
    assert named in said and "give host:port" in said and "secret" not in said


@pytest.mark.parametrize("servers", ["127.0.0.1:9092", "kafka1:9092, kafka2:9093", "localhost", "[::1]:9092", "::1"])
def test_bootstrap_addresses_the_clients_read_are_taken(servers):
    assert Settings(kafka_bootstrap_servers=servers).require_kafka() == servers


@pytest.mark.parametrize("variable, value", [("STREAM_APP_APP_ID", ""), ("STREAM_APP_NAMESPACE", "team a/"),
                                             ("STREAM_APP_APP_ID", "app:1")])
def test_a_namespace_or_app_id_no_topic_name_can_hold_is_refused_by_name(variable, value, capsys):
    """STREAM_APP_APP_ID= ended the worker in Faust's traceback ("App requires an id!"), a namespace with a space or
    a slash in its temporary folder's (FileNotFoundError), and `dead-letters` said there were none."""
    with pytest.raises(ConfigError, match=f"{variable}={value!r}: topic and group names take letters"):
        Settings.from_env({variable: value})


def test_namespaces_and_app_ids_of_kafka_names_are_taken():
    settings = Settings.from_env({"STREAM_APP_NAMESPACE": "team-a.v2_", "STREAM_APP_APP_ID": "recs.Prod-1"})
    assert settings.topics.dlq == "team-a.v2_events.dlq" and settings.group_id == "team-a.v2_recs.Prod-1"


@pytest.mark.parametrize("ending, removed, said", [
    (KeyboardInterrupt, True, "the run did not end well"),
    (RuntimeError, False, "its topics and Redis keys are kept under the namespace demo"),
])
def test_a_run_on_the_users_services_interrupted_leaves_no_topics_and_a_failed_one_names_them(
        ending, removed, said, tmp_path, monkeypatch, capsys):
    """Ctrl-C of `stream-app demo` on the services of `up` (or a deployment's) left its 16 topics there, and a
    failed run left them without a word on where they are."""
    from stream_app.tools import processes

    gone = []
    monkeypatch.setattr(processes, "ensure_topics", lambda settings: None)
    monkeypatch.setattr(processes, "remove_namespace", lambda settings: gone.append(settings.namespace))
    environ = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "REDIS_URL": "redis://127.0.0.1:1/0",
               "STREAM_APP_STATE_DIR": str(tmp_path)}
    with pytest.raises(ending), processes.one_off_run("demo", environ) as run:
        raise ending("stopped")
    assert (gone == [run.settings.namespace]) is removed and run.settings.namespace.startswith("demo")
    assert said in capsys.readouterr().err


def test_a_content_export_to_a_registry_that_is_a_file_is_refused_before_the_model_loads(tmp_path, monkeypatch,
                                                                                       capsys):
    """`content export --registry FILE` loaded the model (8 s) and ended in a FileExistsError traceback."""
    import stream_app_train.content_export as content_export

    monkeypatch.setattr(content_export, "export_content", lambda *a: pytest.fail("the export began"))
    a_file = tmp_path / "registry"
    a_file.write_text("not a folder")
    assert main.main(["content", "export", "--registry", str(a_file)]) == 2
    assert f"the registry {a_file} is a file, not a folder" in capsys.readouterr().err


def test_train_and_the_content_export_name_a_package_of_the_train_extra_that_is_installed_but_broken(monkeypatch,
                                                                                                    capsys):
    """A package found but failing to import (a missing shared library, a half-finished upgrade) was a traceback."""
    import importlib.abc
    import importlib.machinery
    import sys

    class Broken(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            return importlib.machinery.ModuleSpec(name, self) if name == "onnx" else None

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            raise ImportError("libonnx.so: cannot open shared object file")

    monkeypatch.delitem(sys.modules, "onnx", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    assert main.main(["train", OTTO, "--format", "otto"]) == 2
    err = capsys.readouterr().err
    assert "training needs onnx, which is installed but cannot be imported" in err and "libonnx.so" in err
    assert "pip install" in err and "Traceback" not in err
    assert main.main(["content", "export"]) == 2
    assert "the export needs onnx, which is installed but cannot be imported" in capsys.readouterr().err


def test_models_list_names_and_skips_a_manifest_that_reads_but_lacks_what_the_list_shows(tmp_path, capsys):
    """It was a KeyError traceback that hid every version listed after it."""
    from stream_app.serving import registry

    for version, dims in (("a-no-dims", None), ("b-good", {"embedding": 8, "items": 3})):
        staged = registry.staging_dir(tmp_path)
        for name in registry.files_of("sequence"):
            (staged / name).write_bytes(b"x")
        manifest = {"version": version, "created_at": f"2026-12-01T00:00:0{len(version)}", "dims": dims,
                    "training": {"events": 9, "log": "log.jsonl"}}
        registry.write_version(tmp_path, staged, {k: v for k, v in manifest.items() if v is not None})
    assert main.main(["models", "list", "--registry", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipped: the manifest of model version a-no-dims lacks or mangles 'dims'" in out
    assert "b-good  2026-12-01T00:00:06  dim 8, 3 items, validation n/a, trained on 9 events of log.jsonl" in out


def test_a_default_report_of_an_earlier_run_is_said_to_be_replaced_a_given_path_is_not(tmp_path, monkeypatch, capsys):
    """tiny.csv and tiny.jsonl both report to reports/evaluation-tiny.*: the second replaced the first unsaid."""
    monkeypatch.chdir(tmp_path)
    first = commands._writable(None, "evaluation-tiny.html")
    assert capsys.readouterr().err == ""
    first.write_text("an earlier run")
    assert commands._writable(None, "evaluation-tiny.html") == first
    assert "reports/evaluation-tiny.html holds an earlier run's report and will be replaced if this run ends well" in capsys.readouterr().err
    commands._writable(str(first), "ignored.html")  # the user named it: no note
    assert capsys.readouterr().err == "" and first.read_text() == "an earlier run"


@pytest.fixture
def resolver(monkeypatch):
    """The resolver's answers, as a resolver that answers gives them: `.invalid` names are not known (RFC 2606),
    `.unreachable` ones cannot be asked now (no DNS server answered), the rest as the machine resolves them."""
    import socket

    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if isinstance(host, str) and host.endswith(".unreachable"):
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize("command", [["recommendations", "u1"], ["dead-letters"], ["replay", OTTO, "--format", "otto"]])
def test_a_broker_name_that_does_not_resolve_is_said_at_once_by_the_commands_that_need_brokers(command, monkeypatch,
                                                                                                  capsys, resolver):
    """KAFKA_BOOTSTRAP_SERVERS=kafka:19092 (compose's name) outside compose: each command waited 32 s and said only
    that it could not bootstrap."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "nohost.invalid:9092,other.invalid:9093")
    assert main.main(command) == 2
    said = capsys.readouterr().err
    assert "nohost.invalid, other.invalid do not resolve" in said and "localhost:9092" in said


def test_a_list_with_one_broker_name_that_resolves_is_left_to_the_clients(resolver):
    from stream_app.urls import check_resolvable

    check_resolvable("nohost.invalid:9092, localhost:9092")
    check_resolvable("[::1]:9092,::1")
    check_resolvable("dns.unreachable:9092")  # the resolver cannot be asked now: the clients retry, as they may
    with pytest.raises(ConfigError, match=r"no such host \(nohost.invalid does not resolve\)"):
        check_resolvable("nohost.invalid:9092")
    # a name with an empty label: a UnicodeError from the resolver, which ended the command in a traceback
    with pytest.raises(ConfigError, match=r"'kafka..local' is not a host name"):
        check_resolvable("kafka..local:9092")


def test_a_dead_letter_from_a_file_names_its_line_once_and_comes_in_line_order(monkeypatch, capsys, tmp_path):
    """`dead-letters` printed "line 3 of events.jsonl: line 3: ..." for a line replay refused, and the letters of
    one replay in partition order (lines 3, 4, 10, 5, 7, ...)."""
    from types import SimpleNamespace

    from stream_app.tools import consume
    from stream_app.tools.recorded import load_sorted

    path = tmp_path / "events.jsonl"
    good = {"event_id": "a", "user_id": "u", "item_id": "i", "type": "browse", "ts": 5, "schema_version": 1}
    path.write_bytes(orjson.dumps(good) + b'\n{"broken\n')
    _, (refused,) = load_sorted(path, "jsonl")
    letter = refused.rejection.to_record(1_700_000_000_000)
    letter["source"]["line"] = refused.line  # as replay sends it
    # and a later line's letter sent in the same millisecond, to a partition read before
    later = {**letter, "source": {**letter["source"], "line": 7}, "detail": "line 7: a later one"}
    records = [SimpleNamespace(value=orjson.dumps(later), timestamp=5, partition=0, offset=0),
               SimpleNamespace(value=orjson.dumps(letter), timestamp=5, partition=1, offset=0)]
    def latest_records(settings, topic, want, order):  # the last `want` by `order`, as consume's picks them
        return sorted(records, key=order)[-want:]

    monkeypatch.setattr(consume, "latest_records", latest_records)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    assert main.main(["dead-letters", "--last", "1"]) == 0  # the file's last line, not the last partition's letter
    assert capsys.readouterr().out.strip().endswith(f"line 7 of {path}: a later one")
    assert main.main(["dead-letters"]) == 0
    first, second = capsys.readouterr().out.splitlines()
    # --json prints what the topic holds, whatever its shape (a source of null, a list): the order must not fail on it
    records += [SimpleNamespace(value=value, timestamp=5, partition=2, offset=n) for n, value in
                enumerate((b'{"source": null}', b"[1, 2]", b'{"source": {"line": "3"}}', b"not json"))]
    odd = b'{"source": {}, "detail": 5, "rejected_at": "soon", "reason": 7}'  # of the shape, not of its types
    records.append(SimpleNamespace(value=odd, timestamp=5, partition=2, offset=9))
    assert main.main(["dead-letters", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6
    assert main.main(["dead-letters"]) == 0  # a record another producer wrote is said, not a traceback
    shown = capsys.readouterr()
    assert len(shown.out.splitlines()) == 3 and shown.err.count("not a dead letter of stream-app") == 4
    assert any(line.startswith("soon  7 ") for line in shown.out.splitlines())
    assert f"invalid_json             line 2 of {path}: not JSON: unexpected end of data" in first
    assert first.count("line 2") == 1
    assert second.endswith(f"line 7 of {path}: a later one")


def test_a_dead_letter_of_a_schema_version_this_release_does_not_read_is_said_to_be_so(monkeypatch, capsys):
    """`dead-letters` showed a letter of schema_version 9 as one of its own, its reason and detail read as version 1's."""
    from types import SimpleNamespace

    from stream_app.tools import consume

    ours = {"reason": "schema_violation", "detail": "data.ts must be integer", "rejected_at": 1_700_000_000_000,
            "source": {"topic": "events.click", "partition": 0, "offset": 3}, "payload_text": "{}", "schema_version": 1}
    later = {**ours, "reason": "a_later_reason", "detail": "a later detail", "schema_version": 9}
    records = [SimpleNamespace(value=orjson.dumps(letter), timestamp=5, partition=0, offset=n)
               for n, letter in enumerate((ours, later, {**ours, "schema_version": 1.0}))]
    monkeypatch.setattr(consume, "latest_records", lambda settings, topic, want, order: sorted(records, key=order))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    assert main.main(["dead-letters"]) == 0
    first, second, third = capsys.readouterr().out.splitlines()
    assert first == third == "2023-11-14 22:13:20 UTC  schema_violation         events.click[0]@3: data.ts must be integer"
    assert second.startswith(f"{Settings().topics.dlq}[0]@1: a dead letter of schema version 9, which this release "
                             "does not read (it reads 1): read it with the release that wrote it")
    assert "a_later_reason" not in second and "a later detail" not in second
    assert main.main(["dead-letters", "--json"]) == 0  # what the topic holds, as it is
    assert orjson.loads(capsys.readouterr().out.splitlines()[1]) == later


def test_an_exception_without_a_message_is_described_by_what_it_is():
    """A worker's outage lines read "(TimeoutError: )" (an operator's trial): asyncio's timeout has no message."""
    import asyncio

    from stream_app.errors import described

    assert described(asyncio.TimeoutError()) == "TimeoutError: no answer in time"
    assert described(KeyError()) == "KeyError" and described(ValueError("bad")) == "ValueError: bad"


@pytest.mark.parametrize("command", ["profile", "recommendations", "erasure-receipts"])
@pytest.mark.parametrize("user_id", ["", "u" * 201])
def test_a_user_id_no_event_can_have_is_refused_before_any_service_is_asked(command, user_id, capsys, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(SystemExit) as done:
        main.main([command, user_id])
    assert done.value.code == 2
    assert "a user id is 1 to 200 characters of text" in capsys.readouterr().err


def test_serve_names_the_port_it_took_and_a_host_of_another_machine_is_said_to_be_the_host(tmp_path):
    """`serve --port 0` logged port 0 (the port asked for, not the one bound); an address of no interface here was
    answered "pick another with --port"."""
    import os
    import re
    import subprocess
    import sys
    import urllib.request

    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0", "STREAM_APP_STATE_DIR": str(tmp_path)}
    serve = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "serve", "--port", "0"], env=env,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = serve.stderr.readline()
        found = re.search(r"/healthz on http://127\.0\.0\.1:(\d+),", line)
        assert found and found.group(1) != "0", line
        with urllib.request.urlopen(f"http://127.0.0.1:{found.group(1)}/healthz", timeout=10) as answer:
            assert answer.status in (200, 503)  # it answers there (Redis is away here)
    except urllib.error.HTTPError as answer:
        assert answer.code == 503
    finally:
        serve.terminate()
        serve.wait(10)
    elsewhere = subprocess.run([sys.executable, "-m", "stream_app.cli", "serve", "--host", "192.0.2.1"], env=env,
                               capture_output=True, text=True, timeout=30)
    assert elsewhere.returncode == 2 and "give one of this machine's addresses with --host" in elsewhere.stderr
    assert "--port" not in elsewhere.stderr


@pytest.mark.parametrize("seconds", ["0", "-3", "nan", "soon"])
@pytest.mark.parametrize("command", [["items", "load", "catalogue.jsonl", "--wait"], ["demo", "--timeout"],
                                     ["evaluate", "log.jsonl", "--via-kafka", "--timeout"], ["bench", "--timeout"],
                                     ["erase", "u1", "--timeout"], ["reset-profile", "u1", "--timeout"]])
def test_a_wait_of_no_time_is_refused_before_anything_is_sent(command, seconds, capsys):
    """`items load F --wait 0` loaded the catalogue and then exited 2, saying the workers had not indexed it (and
    -3 was said to need "0 or more")."""
    with pytest.raises(SystemExit) as done:
        main.main([*command, seconds])
    assert done.value.code == 2 and f"must be a number of seconds above 0, not {seconds!r}" in capsys.readouterr().err


def model_outcomes(monkeypatch, *worker_ids: str) -> None:
    """The models.status topic as `models status` reads it: a serving outcome of each of `worker_ids`."""
    from types import SimpleNamespace

    from stream_app.tools import consume

    records = [SimpleNamespace(key=f"{w}/live".encode(), value=orjson.dumps(
        {"worker_id": w, "role": "live", "outcome": "serving", "version": "enc-1", "reason": None, "at": 0}))
        for w in worker_ids]
    monkeypatch.setattr(consume, "read_to_end", lambda settings, topic: records)


def test_models_status_with_redis_unreachable_says_so_and_lists_no_worker_it_cannot_tell_is_running(
        tmp_path, monkeypatch, capsys):
    """A walkthrough: with Redis down, `models status` listed every worker that ever reported, the gone ones too,
    and exited 0."""
    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path))  # not a developer's running `up`
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    model_outcomes(monkeypatch, "w-running", "w-gone")
    assert main.main(["models", "status"]) == 2
    said = capsys.readouterr()
    assert "Redis at redis://127.0.0.1:1/0 does not answer" in said.err and "REDIS_URL" in said.err
    assert "--all" in said.err and said.out == ""
    monkeypatch.setenv("REDIS_URL", "")
    assert main.main(["models", "status"]) == 2
    assert "No Redis configured" in (err := capsys.readouterr().err) and "models status --all" in err
    assert main.main(["models", "status", "--all"]) == 0  # every worker's rows: Redis is not asked
    assert "w-running" in (out := capsys.readouterr().out) and "w-gone" in out


def test_models_status_counts_the_workers_it_leaves_out_in_the_singular_and_the_plural(tmp_path, monkeypatch, capsys):
    from stream_app.store import redis_store

    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(redis_store, "worker_statuses", lambda client, namespace: [{"worker_id": "w-running"}])
    model_outcomes(monkeypatch, "w-running", "w-gone")
    assert main.main(["models", "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("w-running  live") and len(lines) == 2
    assert lines[1] == "(1 worker that is no longer running left out; --all shows it)"
    model_outcomes(monkeypatch, "w-running", "w-gone", "w-gone-too")
    assert main.main(["models", "status"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "(2 workers that are no longer running left out; --all shows them)"


def test_redis_not_answering_asks_about_up_only_when_the_url_is_ups(tmp_path, monkeypatch):
    """A deployed Redis that does not answer was met with "is `stream-app up` running", a command its operator never
    ran; the embedded Redis's own address still gets that question."""
    import json

    import redis

    from stream_app.cli.commands import redis_trouble
    from stream_app.config import Settings

    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path))
    down = redis.ConnectionError("Error 111 connecting")
    deployed = redis_trouble(Settings(redis_url="redis://redis.prod:6379/0"), down)
    assert "stream-app up" not in str(deployed) and "redis.prod:6379" in str(deployed) and "REDIS_URL" in str(deployed)
    (tmp_path / "runtime.json").write_text(json.dumps({"REDIS_URL": "redis://127.0.0.1:6390/0", "pids": []}))
    embedded = redis_trouble(Settings(redis_url="redis://127.0.0.1:6390/0"), down)
    assert "stream-app up" in str(embedded)


def test_profile_of_a_user_redis_lacks_says_when_no_broker_was_asked_about_erasures_and_resets():
    """Without KAFKA_BOOTSTRAP_SERVERS, a reset or erased user whose Redis marker was gone got only "has a worker
    applied an event ... repair-redis", as if the receipts had been read and said nothing."""
    from stream_app.cli.profile_command import no_profile
    from stream_app.config import Settings

    said = no_profile(Settings(redis_url="redis://127.0.0.1:1/0"), "gil", {})
    assert "KAFKA_BOOTSTRAP_SERVERS" in said and "erased or reset" in said
    marked = no_profile(Settings(redis_url="redis://127.0.0.1:1/0"), "gil", {b"erased_at": b"1700000000000"})
    assert "KAFKA_BOOTSTRAP_SERVERS" not in marked  # the marker says it all
    # an operator's walkthrough: right after Redis was flushed it said to run repair-redis, while the read API
    # answered 503 (the workers wrote the profiles back 3 s later)
    flushed = no_profile(Settings(redis_url="redis://127.0.0.1:1/0"), "gil", {}, partition_held=False)
    assert "Redis does not hold the profiles of this user's input partition yet" in flushed
    assert "try again in a moment" in flushed and "has a worker applied" not in flushed


def test_profile_asks_the_mirror_marker_on_a_miss_and_one_it_cannot_read_leaves_the_other_reasons(tmp_path,
                                                                                                     monkeypatch):
    """A review: the marker read beside the profile's made a marker key of another type fail every `profile` as "the
    Redis key 'profile:...' is not a profile: delete it"; the miss's reason must come from the marker."""
    import redis

    from stream_app.cli.profile_command import cmd_profile
    from stream_app.store.mirror_marker import marker_key

    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    namespace = Settings().namespace

    class Client:
        def __init__(self, marker):
            self.marker = marker

        def hgetall(self, key):
            if key != marker_key(namespace):
                return {}  # no profile
            if isinstance(self.marker, Exception):
                raise self.marker
            return self.marker

        def close(self):
            pass

    def said(marker) -> str:
        monkeypatch.setattr(redis.Redis, "from_url", lambda *args, **kwargs: Client(marker))
        with pytest.raises(StreamAppError) as refused:
            cmd_profile(argparse.Namespace(user_id="gil", json=False, titles=False))
        return str(refused.value)

    assert "try again in a moment" in said({})  # emptied: no token, no partition written back
    held = {b"token": b"t", b"partitions": b"1", b"partition:0": b"t"}
    assert "has a worker applied an event" in said(held) and "try again" not in said(held)
    unreadable = said(redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert "has a worker applied an event" in unreadable and "is not a profile" not in unreadable


def test_status_does_not_print_a_redis_password_that_holds_a_space(tmp_path, monkeypatch, capsys):
    """A security review: with REDIS_URL='redis://:hunter two@...', `status` printed the password, since the redaction
    of free text reads a URL up to whitespace. A setting is one address, whitespace and all."""
    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter two@127.0.0.1:1/0")
    code = main.main(["status"])
    said = capsys.readouterr()
    assert code != 0 and "REDIS_URL=redis://:***@127.0.0.1:1/0" in said.out
    assert "hunter" not in said.out + said.err and "two" not in said.out + said.err


def test_replay_reads_jsonl_unless_told_as_evaluate_and_train_do():
    """A walkthrough: `evaluate LOG` read jsonl by default, and `replay LOG` of the same file stopped asking for
    --format."""
    for command in ("replay", "evaluate", "train"):
        assert main.parser().parse_args([command, "log.jsonl"]).format == "jsonl", command


def test_a_worker_whose_redis_cannot_be_used_stops_before_it_joins_the_group(services):
    """A wrong host stalled the partitions the worker took for good (status named neither), a wrong password stopped
    it at its first batch, a restart loop with a rebalance each time (helper-142 #1)."""
    import time

    from stream_app.cli.worker_start import require_redis_answers
    from stream_app.errors import StreamAppError

    redis_url = services["REDIS_URL"]
    require_redis_answers(Settings(redis_url=redis_url))  # it answers
    require_redis_answers(Settings())  # no Redis set: the worker keeps no mirror
    started = time.monotonic()
    with pytest.raises(StreamAppError, match="127.0.0.1:1/0 does not answer"):
        require_redis_answers(Settings(redis_url="redis://127.0.0.1:1/0"), wait_s=1.5)
    assert 1.5 <= time.monotonic() - started < 10  # waited for it, within the bound
    wrong = redis_url.replace("redis://", "redis://:wrong-password@")
    started = time.monotonic()
    with pytest.raises(StreamAppError):  # refused at once: no wait changes it
        require_redis_answers(Settings(redis_url=wrong), wait_s=30)
    assert time.monotonic() - started < 5


def test_a_worker_given_a_redis_url_of_another_scheme_is_told_so_not_a_traceback():
    """An operator's walkthrough: REDIS_URL=http://host:port/0 (or host:port, no scheme) stopped the worker with
    redis-py's ValueError and a traceback, exit 1, where every other command says what to give."""
    from stream_app.cli.worker_start import require_redis_answers
    from stream_app.errors import ConfigError

    for url in ("http://127.0.0.1:6379/0", "127.0.0.1:6379"):
        with pytest.raises(ConfigError, match="is not a Redis URL: use redis://host:port/0"):
            require_redis_answers(Settings(redis_url=url), wait_s=0.1)


def test_a_worker_told_another_partition_count_than_its_topics_have_says_so(capsys, monkeypatch):
    """An operator repartitioning by STREAM_APP_PARTITIONS got no word that the topics' count was used (helper-142)."""
    from stream_app.cli import worker_start

    monkeypatch.setattr(worker_start, "require_redis_answers", lambda settings: None)
    worker_start.before_joining(Settings(partitions=8), 8)
    assert capsys.readouterr().err == ""
    worker_start.before_joining(Settings(partitions=4), 8)
    assert "warning: the input topics have 8 partitions and STREAM_APP_PARTITIONS says 4" in capsys.readouterr().err
