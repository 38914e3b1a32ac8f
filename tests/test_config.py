import pytest

from stream_app.config import Settings
from stream_app.errors import ConfigError
from stream_app.state_files import runtime_file


def test_settings_read_from_environment_round_trip_through_to_env():
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "REDIS_URL": "redis://r:6379/0", "STREAM_APP_TOP_K": "7",
           "STREAM_APP_REC_POLICY": "purchase", "STREAM_APP_WEIGHT_ORDER": "9.5", "STREAM_APP_NAMESPACE": "x."}
    settings = Settings.from_env(env)
    assert settings.top_k == 7 and settings.rec_policy == "purchase" and settings.weights.order == 9.5
    assert settings.topics.click == "x.events.click"
    assert Settings.from_env(settings.to_env()) == settings


def test_endpoints_come_from_the_runtime_file_when_not_in_the_environment(tmp_path):
    env = {"STREAM_APP_STATE_DIR": str(tmp_path)}
    import os

    running = f'"pids": [{os.getpid()}]'  # this process stands for up's: alive
    runtime_file(env).write_text('{"KAFKA_BOOTSTRAP_SERVERS": "h:1", "REDIS_URL": "redis://h:2/0", ' + running + '}')
    settings = Settings.from_env(env)
    assert settings.kafka_bootstrap_servers == "h:1" and settings.redis_url == "redis://h:2/0"
    assert Settings.from_env({**env, "KAFKA_BOOTSTRAP_SERVERS": "h:1"}).redis_url == "redis://h:2/0"  # up's own
    env["KAFKA_BOOTSTRAP_SERVERS"] = "override:9"  # one endpoint of a deployment beside the embedded other: refused
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS is set and REDIS_URL is not, while `stream-app up`"):
        Settings.from_env(env)
    runtime_file(env).write_text('{"KAFKA_BOOTSTRAP_SERVERS": "h:1", "REDIS_URL": "redis://h:2/0", "pids": [999999]}')
    stale = Settings.from_env(env)  # a file a crash or a reboot left: neither refused nor read
    assert (stale.kafka_bootstrap_servers, stale.redis_url) == ("override:9", None)
    env["REDIS_URL"] = "redis://override:6/0"
    overridden = Settings.from_env(env)
    assert (overridden.kafka_bootstrap_servers, overridden.redis_url) == ("override:9", "redis://override:6/0")


def test_missing_endpoints_and_bad_values_say_what_to_do(tmp_path):
    settings = Settings.from_env({"STREAM_APP_STATE_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="stream-app up"):
        settings.require_kafka()
    with pytest.raises(ConfigError, match="REDIS_URL"):
        settings.require_redis()
    with pytest.raises(ConfigError, match="STREAM_APP_TOP_K='many' is not a whole number"):
        Settings.from_env({"STREAM_APP_TOP_K": "many", "STREAM_APP_STATE_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="REC_POLICY"):
        Settings(rec_policy="sometimes")
    # a misspelt switch is an error naming the variable and the accepted words, not silently off
    with pytest.raises(ConfigError, match=r"STREAM_APP_RANKER='ture' .*true"):
        Settings.from_env({"STREAM_APP_RANKER": "ture", "STREAM_APP_STATE_DIR": str(tmp_path)})
    assert Settings.from_env({"STREAM_APP_RANKER": "Off", "STREAM_APP_STATE_DIR": str(tmp_path)}).ranker is False
    with pytest.raises(ConfigError, match="MAX_IDLE_MS"):
        Settings(max_idle_ms=-1)
    # the partition learners' RecencyPositions has one position per recent item: a negative count failed every
    # partition's learners (a ValueError and traceback out of every evaluate and worker batch), not the setting
    with pytest.raises(ConfigError, match="STREAM_APP_COVIS_PREV_ITEMS"):
        Settings.from_env({"STREAM_APP_COVIS_PREV_ITEMS": "-1", "STREAM_APP_STATE_DIR": str(tmp_path)})
    assert Settings(covis_prev_items=0).covis_prev_items == 0
    # kept in every partition's learners (times 1,000,003 for the bandit's): past 2^64 their state could not be
    # written (orjson holds 64 bits); negative, numpy refused it when the learners were made, in every batch
    for seed in ("-1", str(2**42 + 1)):
        with pytest.raises(ConfigError, match="STREAM_APP_RANKER_SEED"):
            Settings.from_env({"STREAM_APP_RANKER_SEED": seed, "STREAM_APP_STATE_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="STREAM_APP_BATCH_MAX"):
        Settings(batch_max=2**62)
    # kept in the ranker's state, whose reading refuses a negative one: the learners started afresh at every restore
    with pytest.raises(ConfigError, match="STREAM_APP_RANKER_WARM_UP"):
        Settings(ranker_warm_up=-1)
    assert Settings(dlq_retention_ms=2**63 - 1).dlq_retention_ms == 2**63 - 1  # Kafka's "keep for ever"


def test_the_namespace_prefixes_the_consumer_group_and_every_changelog():
    """Two deployments that differ only by namespace must share no Kafka state."""
    from stream_app.stream.worker import build_app

    names = {}
    for namespace in ("blue.", "green."):
        settings = Settings(kafka_bootstrap_servers="localhost:1", redis_url="redis://localhost:1", namespace=namespace)
        app = build_app(settings, 8)  # builds only: no connection
        changelogs = sorted(table.changelog_topic.get_topic_name() for table in app.tables.values())
        assert app.conf.id == settings.group_id == f"{namespace}stream-app"
        assert changelogs == [f"{namespace}stream-app-erased-users-changelog",
                              f"{namespace}stream-app-partition-learners-changelog",
                              f"{namespace}stream-app-profiles-changelog"]
        names[namespace] = {app.conf.id, *changelogs}
    assert not names["blue."] & names["green."]


def test_faust_s_own_environment_variables_change_nothing_in_a_worker_or_the_plain_app(monkeypatch):
    """Kubernetes sets WEB_PORT=tcp://... for a Service named `web`; BROKER_URL would drop the transport's corrections."""
    from stream_app.stream.worker import build_app
    from stream_app.tools.plain_app import build_plain_app

    for name, value in {"WEB_PORT": "tcp://10.96.0.12:80", "BROKER_URL": "kafka://other:9092", "TOPIC_PARTITIONS": "3",
                        "PROCESSING_GUARANTEE": "exactly_once", "TOPIC_REPLICATION_FACTOR": "3"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings(kafka_bootstrap_servers="localhost:1", redis_url="redis://localhost:1")
    for app in (build_app(settings, 8, 16067), build_plain_app(settings, 8)):
        assert [str(url) for url in app.conf.broker] == ["stream-app-kafka://localhost:1"]
        assert (app.conf.topic_partitions, app.conf.processing_guarantee.value) == (8, "at_least_once")
        assert app.conf.topic_replication_factor == 1
    assert build_app(settings, 8, 16067).conf.web_port == 16067
    on_a_cluster = settings.replace(replication_factor=3)  # STREAM_APP_REPLICATION_FACTOR: the changelogs' too
    assert build_app(on_a_cluster, 8).conf.topic_replication_factor == 3
    with pytest.raises(ConfigError, match="REPLICATION_FACTOR"):
        Settings(replication_factor=0)


def test_a_mistyped_setting_is_refused_with_the_nearest_name():
    with pytest.raises(ConfigError, match=r"STREAM_APP_TOPK is not a setting \(did you mean STREAM_APP_TOP_K\?\)"):
        Settings.from_env({"STREAM_APP_TOPK": "5"})
    with pytest.raises(ConfigError, match="also unknown: STREAM_APP_ZZZ"):
        Settings.from_env({"STREAM_APP_TOPK": "5", "STREAM_APP_ZZZ": "1"})
    # an operator's walkthrough: STREAM_APP_FOO was asked "did you mean STREAM_APP_TOP_K?" (the shared prefix)
    with pytest.raises(ConfigError) as nothing_near:
        Settings.from_env({"STREAM_APP_FOO": "1"})
    assert "did you mean" not in str(nothing_near.value)
    with pytest.raises(ConfigError, match=r"STREAM_APP_REDIS_URL is not a setting \(did you mean REDIS_URL\?\)"):
        Settings.from_env({"STREAM_APP_REDIS_URL": "redis://r:6379/0"})
    with pytest.raises(ConfigError, match=r"\(did you mean KAFKA_SECURITY_PROTOCOL\?\)"):
        Settings.from_env({"STREAM_APP_KAFKA_SECURITY_PROTOCOL": "SSL"})
    with pytest.raises(ConfigError, match="STREAM_APP_BATCH_MAX=0 must be at least 1"):
        Settings.from_env({"STREAM_APP_BATCH_MAX": "0"})
    read = Settings.from_env({"STREAM_APP_TOP_K": "5", "STREAM_APP_WEIGHT_ORDER": "9", "STREAM_APP_STATE_DIR": "/x",
                              "KAFKA_BOOTSTRAP_SERVERS": "k:9092", "REDIS_URL": "redis://r:6379/0"})
    assert (read.top_k, read.weights.order) == (5, 9.0)


def test_kubernetes_service_links_of_a_service_named_stream_app_are_not_refused_as_settings():
    """Kubernetes sets STREAM_APP_SERVICE_HOST, STREAM_APP_PORT_8080_TCP_ADDR, ... in every pod of a namespace with a
    Service named stream-app: refused as mistyped settings, they stopped every worker and `serve` (status 2)."""
    links = {"STREAM_APP_SERVICE_HOST": "10.0.0.7", "STREAM_APP_SERVICE_PORT": "8080",
             "STREAM_APP_SERVICE_PORT_HTTP": "8080", "STREAM_APP_PORT": "tcp://10.0.0.7:8080",
             "STREAM_APP_PORT_8080_TCP": "tcp://10.0.0.7:8080", "STREAM_APP_PORT_8080_TCP_PROTO": "tcp",
             "STREAM_APP_PORT_8080_TCP_PORT": "8080", "STREAM_APP_PORT_8080_TCP_ADDR": "10.0.0.7",
             "STREAM_APP_WORKERS_SERVICE_HOST": "fd00::1", "STREAM_APP_WORKERS_PORT_6066_UDP_ADDR": "fd00::1"}
    assert Settings.from_env({**links, "STREAM_APP_TOP_K": "5"}).top_k == 5
    for name, value in (("STREAM_APP_PORT", "8080x"), ("STREAM_APP_SERVICE_HOSTS", "10.0.0.7"),
                        ("STREAM_APP_WEB_PORTT", "80"), ("STREAM_APP_WEB_PORT", "8080"),
                        ("STREAM_APP_PORT_80_TCP_PROTO", "80")):
        # neither a link's name nor the value Kubernetes gives that name (a bare ..._PORT link is a URL): a mistyped setting
        with pytest.raises(ConfigError, match=f"{name} is not a setting"):
            Settings.from_env({**links, name: value})


def test_a_retired_setting_is_ignored_with_a_warning_not_refused_said_once(caplog, monkeypatch):
    from stream_app import config

    monkeypatch.setattr(config, "_retired_said", set())
    environ = {"STREAM_APP_EVENT_LOOP": "uvloop", "KAFKA_BOOTSTRAP_SERVERS": "k:9092", "REDIS_URL": "redis://r:6379/0"}
    read = Settings.from_env(environ)
    assert read.top_k == Settings().top_k
    Settings.from_env(environ)  # a command reading its settings twice (the broker check, then the command)
    assert caplog.text.count("STREAM_APP_EVENT_LOOP has no effect any more") == 1


def test_every_setting_is_in_the_table_of_docs_configuration_md_and_no_page_names_another():
    import re
    from pathlib import Path

    from stream_app.config import RETIRED_VARIABLES, known_variables

    root = Path(__file__).parents[1]
    section = (root / "docs" / "configuration.md").read_text()
    pages = "\n".join(page.read_text() for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    named = set(re.findall(r"STREAM_APP_[A-Z0-9_]+", section))
    named |= {f"STREAM_APP_{short}" for short in re.findall(r"`([A-Z_]+_WEIGHT)`", section)}  # listed short
    named |= {f"STREAM_APP_WEIGHT_{kind}" for kind in ("BROWSE", "CLICK", "CART", "ORDER")}  # WEIGHT_BROWSE/CLICK/...
    assert sorted(known_variables() - named) == []
    from stream_app.kafka_security import ENV
    rows = set(re.findall(r"^\| `([A-Z_]+)`", section, re.M)) | set(re.findall(r", `(KAFKA_[A-Z_]+)`", section))
    assert sorted({"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", *ENV.values()} - rows) == []  # read apart, listed too
    everywhere = set(re.findall(r"STREAM_APP_[A-Z0-9_]*[A-Z0-9]", pages)) - RETIRED_VARIABLES.keys()
    assert sorted(everywhere - known_variables()) == []


def test_a_web_host_that_is_no_address_is_refused_by_name():
    assert Settings.from_env({"STREAM_APP_WEB_HOST": "127.0.0.1"}).web_host == "127.0.0.1"
    for wrong in ("", "http://host", "a b"):
        with pytest.raises(ConfigError, match="STREAM_APP_WEB_HOST=.* is not an address to listen on"):
            Settings.from_env({"STREAM_APP_WEB_HOST": wrong})


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf"])
def test_an_event_weight_that_is_not_a_number_above_0_is_refused_by_name(raw):
    """A review: STREAM_APP_WEIGHT_BROWSE=0 (a natural way to ignore browses) or -1 made every browse fail the
    decayed sums' log (each dead-lettered as a processing error); nan filled affinities with NaN, unsaid."""
    with pytest.raises(ConfigError, match=r"STREAM_APP_WEIGHT_BROWSE=.* must be a number above 0"):
        Settings.from_env({"STREAM_APP_WEIGHT_BROWSE": raw})
    assert Settings.from_env({"STREAM_APP_WEIGHT_BROWSE": "0.01"}).weights.browse == 0.01


def test_a_fetch_wait_no_fetch_ends_within_is_refused_by_name():
    """60000 was taken, and the worker never became ready, its log naming no setting (helper-142 #4)."""
    Settings(fetch_max_wait_ms=30_000)
    with pytest.raises(ConfigError, match="fetch_max_wait_ms=60000 must be at most 30,000 .*STREAM_APP_FETCH_MAX_WAIT_MS"):
        Settings.from_env({"STREAM_APP_FETCH_MAX_WAIT_MS": "60000"})
