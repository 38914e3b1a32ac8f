"""Security settings. Kafka TLS/SASL (stream_app/kafka_security.py): read and checked once, never printed,
and given to every Kafka client the project builds. Redis: TLS and a password in the URL; the embedded
Redis wants a generated password; `status` shows no secret. The embedded broker (Tansu) has no TLS or SASL, so
these tests check each client as it is constructed, with a SASL_SSL + SCRAM-SHA-512 + CA file
configuration: the client objects aiokafka and Faust build are inspected, kafka-python's constructors
are captured (they connect as soon as they are built). A source scan finds every construction site,
so a new client built without the settings fails here."""

from __future__ import annotations

import ast
import asyncio
import ssl
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient

from stream_app.config import Settings
from stream_app.errors import ConfigError
from stream_app.kafka_security import (
    CONSUMER_RETRY_BACKOFF_MS,
    PLAINTEXT,
    KafkaSecurity,
    aiokafka_kwargs,
    consumer_kwargs,
    kafka_python_kwargs,
)

REPO = Path(__file__).resolve().parent.parent
TLS = Path(__file__).resolve().parent / "data" / "tls"
CA, CLIENT_CERT, CLIENT_KEY, KEY_PASSWORD = TLS / "ca.pem", TLS / "client.pem", TLS / "client.key", "test-key-password"
SASL_PASSWORD = "sasl-Secret-4711"
SECURE_ENV = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
              "KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD": SASL_PASSWORD, "KAFKA_SSL_CAFILE": str(CA)}


def secure_settings(**overrides) -> Settings:
    return Settings(kafka_bootstrap_servers="broker-a:9093,broker-b:9093", redis_url="redis://:redis-pw@r:6379/0",
                    kafka_security=KafkaSecurity.from_env(SECURE_ENV), **overrides)


def assert_trusts_the_test_ca(context: ssl.SSLContext) -> None:
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    issuers = [dict(pair[0] for pair in cert["subject"]) for cert in context.get_ca_certs()]
    assert {"commonName": "stream-app test CA"} in issuers


def assert_secure_kwargs(kwargs: dict) -> None:
    """What a client was given: SASL_SSL, SCRAM-SHA-512 as alice, TLS trusting the configured CA."""
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "alice" and kwargs["sasl_plain_password"] == SASL_PASSWORD
    assert_trusts_the_test_ca(kwargs["ssl_context"])


def assert_secure_client(client) -> None:
    """An aiokafka client (what a consumer or producer connects with) set up as configured."""
    assert_secure_kwargs({"security_protocol": client._security_protocol, "sasl_mechanism": client._sasl_mechanism,
                          "sasl_plain_username": client._sasl_plain_username,
                          "sasl_plain_password": client._sasl_plain_password, "ssl_context": client._ssl_context})


# --- the settings ---------------------------------------------------------------------------------

def test_security_settings_round_trip_to_worker_processes_and_are_never_shown():
    settings = secure_settings()
    env = settings.to_env()
    assert env["KAFKA_SASL_PASSWORD"] == SASL_PASSWORD  # a worker subprocess must be able to log in
    assert Settings.from_env(env) == settings
    shown = repr(settings) + settings.kafka_security.describe()
    assert SASL_PASSWORD not in shown and "redis-pw" not in shown
    assert settings.kafka_security.describe() == f"SASL_SSL, SCRAM-SHA-512 as alice, password set, CA {CA}"
    # lower case is what people type; the Kafka names are upper case
    relaxed = KafkaSecurity.from_env({**SECURE_ENV, "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
                                      "KAFKA_SASL_MECHANISM": "scram-sha-512"})
    assert relaxed == settings.kafka_security


def test_the_default_adds_nothing_to_any_client():
    settings = Settings.from_env({"STREAM_APP_STATE_DIR": "/nonexistent"})
    assert settings.kafka_security == PLAINTEXT and settings.kafka_security.ssl_context() is None
    assert kafka_python_kwargs(PLAINTEXT) == {} and aiokafka_kwargs(PLAINTEXT) == {}
    assert consumer_kwargs(PLAINTEXT) == {"retry_backoff_ms": CONSUMER_RETRY_BACKOFF_MS}
    from stream_app.stream.transport import faust_credentials

    assert faust_credentials(PLAINTEXT) is None  # Faust's own default
    assert Settings.from_env(Settings().to_env()).kafka_security == PLAINTEXT


@pytest.mark.parametrize("env, message", [
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, r"KAFKA_SECURITY_PROTOCOL='TLS' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT"),
    ({**SECURE_ENV, "KAFKA_SASL_MECHANISM": "GSSAPI"}, r"KAFKA_SASL_MECHANISM='GSSAPI' is not one of PLAIN, SCRAM"),
    ({**SECURE_ENV, "KAFKA_SASL_PASSWORD": ""}, r"SASL_SSL needs KAFKA_SASL_PASSWORD: set the client's SASL user"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
    ({"KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD": SASL_PASSWORD},
     "KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not authenticate: set it to SASL_SSL"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "a", "KAFKA_SASL_PASSWORD": "b",
      "KAFKA_SSL_CAFILE": str(CA)}, "KAFKA_SSL_CAFILE set but KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does not use TLS"),
    ({**SECURE_ENV, "KAFKA_SSL_CAFILE": "/no/such/ca.pem"}, "KAFKA_SSL_CAFILE=/no/such/ca.pem: no such file"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": str(CLIENT_KEY)}, "without KAFKA_SSL_CERTFILE"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(CLIENT_KEY)}, "cannot load the Kafka TLS files"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": str(CLIENT_CERT), "KAFKA_SSL_KEYFILE": str(CLIENT_KEY),
      "KAFKA_SSL_KEY_PASSWORD": "wrong-key-password"}, "check they are PEM files and the key password"),
])
def test_wrong_security_settings_are_refused_at_start_saying_what_to_do(env, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as refused:
        Settings.from_env({**env, "STREAM_APP_STATE_DIR": str(tmp_path)})
    assert SASL_PASSWORD not in str(refused.value) and "wrong-key-password" not in str(refused.value)


def test_mutual_tls_loads_the_client_certificate_with_its_key_password():
    security = KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(CA),
                                       "KAFKA_SSL_CERTFILE": str(CLIENT_CERT), "KAFKA_SSL_KEYFILE": str(CLIENT_KEY),
                                       "KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD})
    kwargs = kafka_python_kwargs(security)
    assert kwargs["security_protocol"] == "SSL" and "sasl_mechanism" not in kwargs
    assert_trusts_the_test_ca(kwargs["ssl_context"])
    assert KEY_PASSWORD not in repr(security) + security.describe()
    from stream_app.stream.transport import faust_credentials

    credentials = faust_credentials(security)
    assert credentials.protocol.value == "SSL" and credentials.context is kwargs["ssl_context"]
    without = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(CA), "KAFKA_SSL_CERTFILE": str(CLIENT_CERT),
               "KAFKA_SSL_KEYFILE": str(CLIENT_KEY)}  # OpenSSL would ask on a terminal for the passphrase, and wait
    with pytest.raises(ConfigError, match="is encrypted: set KAFKA_SSL_KEY_PASSWORD"):
        kafka_python_kwargs(KafkaSecurity.from_env(without))


# --- kafka-python clients: replay, tools, topic admin, model publishing ------------------------------

class Captured(Exception):
    """Raised by a stand-in constructor once it has the arguments: nothing connects."""


@pytest.fixture
def capture(monkeypatch):
    """capture(module, name, real_class): calls of `module.name` record their keyword arguments, which
    must be options the real kafka-python class accepts, and stop there."""
    calls: list[dict] = []

    def install(module, name, real) -> list[dict]:
        def stand_in(*args, **kwargs):
            unknown = set(kwargs) - set(real.DEFAULT_CONFIG)
            assert not unknown, f"{real.__name__} does not take {unknown}"
            calls.append(kwargs)
            raise Captured(real.__name__)

        monkeypatch.setattr(module, name, stand_in)
        return calls

    return install


def test_the_replay_producer_gets_the_security_settings(capture):
    from stream_app.tools import replay

    calls = capture(replay, "KafkaProducer", KafkaProducer)
    with pytest.raises(Captured):
        replay.make_producer(secure_settings())
    assert_secure_kwargs(calls[0])


def test_the_topic_readers_and_the_group_offset_reader_get_the_security_settings(capture):
    from stream_app.tools import consume

    calls = capture(consume, "KafkaConsumer", KafkaConsumer)
    settings = secure_settings()
    for read in (lambda: consume.TopicReader(settings.require_kafka(), "t", settings.kafka_security),
                 lambda: consume.read_to_end(settings, "t"),
                 lambda: consume.committed_offsets(settings, [])):
        with pytest.raises(Captured):
            read()
    assert len(calls) == 3
    for kwargs in calls:
        assert_secure_kwargs(kwargs)


def test_topic_admin_gets_the_security_settings(capture):
    from stream_app.stream import topics

    calls = capture(topics, "KafkaAdminClient", KafkaAdminClient)
    with pytest.raises(Captured):
        topics.ensure_topics(secure_settings())
    assert_secure_kwargs(calls[0])


def test_the_model_control_publisher_gets_the_security_settings(capture, monkeypatch):
    import kafka

    from stream_app.stream import model_control, topics

    monkeypatch.setattr(topics, "ensure_topics", lambda settings: 1)
    calls = capture(kafka, "KafkaProducer", KafkaProducer)
    with pytest.raises(Captured):
        model_control.publish(secure_settings(), "live", None)  # a withdrawal: no registry needed
    assert_secure_kwargs(calls[0])


# --- aiokafka clients: the output producer, the ordered input, the control and items readers -------------

@pytest.fixture
def built(monkeypatch):
    """built(module, name, real_class): `module.name` builds the real aiokafka client (so aiokafka checks
    the arguments) and stops at start(); returns the clients built."""
    clients: list = []

    def install(module, name, real) -> list:
        class StandIn(real):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                clients.append(self)

            async def start(self):
                raise Captured(real.__name__)

        monkeypatch.setattr(module, name, StandIn)
        return clients

    return install


def test_the_output_producer_gets_the_security_settings(built):
    from stream_app.stream import output

    settings = secure_settings()
    producers = built(output, "AIOKafkaProducer", AIOKafkaProducer)
    with pytest.raises(Captured):
        asyncio.run(output.BatchProducer(settings.require_kafka(), settings.kafka_security).deliver(
            _one_record()))
    assert_secure_client(producers[0].client)


def _one_record():
    from stream_app.stream.output import Outbox

    outbox = Outbox()
    outbox.add("t", b"k", b"v", 0)
    return outbox


def test_the_ordered_input_reader_gets_the_security_settings(built):
    from stream_app.core.items import InMemoryItemIndex
    from stream_app.stream import items_check, ordered_input, transport
    from stream_app.stream.batch import Counters

    settings = secure_settings()
    consumers = built(transport, "AIOKafkaConsumer", AIOKafkaConsumer)  # the reader is built there (started_reader)
    with pytest.raises(Captured):
        asyncio.run(ordered_input.OrderedInput(settings, 4, InMemoryItemIndex(settings)).run())
    assert_secure_client(consumers[0]._client)
    checkers = built(items_check, "AIOKafkaConsumer", AIOKafkaConsumer)  # the items topic's check group
    with pytest.raises(Captured):
        asyncio.run(items_check.ItemsCheck(settings, None, Counters()).run())  # type: ignore[arg-type]
    assert_secure_client(checkers[0]._client)


def test_the_model_control_and_catalogue_readers_and_the_end_offset_probe_get_the_security_settings(built):
    from stream_app.stream import transport
    from stream_app.stream.catalogue_feed import CatalogueFeed
    from stream_app.stream.model_control import ModelWatcher

    settings = secure_settings()
    consumers = built(transport, "AIOKafkaConsumer", AIOKafkaConsumer)
    for run in (ModelWatcher(settings).run, lambda: CatalogueFeed(settings).run(lambda: None),
                lambda: transport.true_end_offsets(["b:1"], {TopicPartition("t", 0): 3}, settings.kafka_security)):
        with pytest.raises(Captured):
            asyncio.run(run())
    assert len(consumers) == 3
    for consumer in consumers:
        assert_secure_client(consumer._client)


# --- the Faust app: its consumer group, its producer, and its end-offset probe -------------------------

def test_the_faust_apps_consumer_and_producer_get_the_security_settings(monkeypatch):
    import faust

    from stream_app.stream import transport
    from stream_app.stream.worker import build_app

    for name in ("fetch_max_wait_ms", "security"):  # class-wide: set back for the other tests
        monkeypatch.setattr(transport.ConsumerThread, name, getattr(transport.ConsumerThread, name))
    monkeypatch.setattr(transport.Consumer, "release_held", transport.Consumer.release_held)
    settings = secure_settings(namespace="secure.")

    async def clients():
        app = build_app(settings, 4)  # builds only: no connection
        consumer = app.consumer._new_consumer_thread()._create_worker_consumer(app.transport)
        producer = app.producer._new_producer()
        try:
            return app, consumer._client, producer.client
        finally:
            await consumer.stop()
            await producer.stop()

    app, consumer_client, producer_client = asyncio.run(clients())
    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)
    assert SASL_PASSWORD not in repr(app.conf.broker_credentials)
    assert_secure_client(consumer_client)
    assert_secure_client(producer_client)
    # the worker's own end-offset probe (correction 2 in transport.py) connects the same way
    assert transport.ConsumerThread.security == settings.kafka_security


# --- every construction site -------------------------------------------------------------------------

KAFKA_PYTHON = {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient", "KafkaClient"}
AIOKAFKA = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaClient", "AIOKafkaAdminClient"}
#: The project's own wrappers that build a client: they take the security settings as an argument.
WRAPPERS = {"TopicReader", "true_end_offsets"}
#: Sites that must not get them, with the reason.
EXEMPT = {("stream_app/tools/embedded.py", "KafkaAdminClient"):
          "wait_for_kafka probes the embedded Tansu broker, which speaks PLAINTEXT only"}


def construction_sites() -> list[tuple[str, int, str, ast.Call]]:
    sites = []
    for path in sorted((REPO / "stream_app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func).rsplit(".", 1)[-1]
            if name in KAFKA_PYTHON | AIOKAFKA | WRAPPERS or ast.unparse(node.func) == "faust.App":
                sites.append((path.relative_to(REPO).as_posix(), node.lineno, name, node))
    return sites


def spreads(call: ast.Call, function: str) -> bool:
    """Whether the call has `**function(...)` among its arguments."""
    return any(k.arg is None and isinstance(k.value, ast.Call) and ast.unparse(k.value.func).endswith(function)
               for k in call.keywords)


def test_every_kafka_client_the_project_builds_gets_the_security_settings():
    sites = construction_sites()
    missing, exempt_seen = [], set()
    for path, line, name, call in sites:
        if (path, name) in EXEMPT:
            exempt_seen.add((path, name))
            continue
        if name in KAFKA_PYTHON:
            ok = spreads(call, "kafka_python_kwargs")
        elif name in AIOKAFKA:
            ok = spreads(call, "aiokafka_kwargs") or spreads(call, "consumer_kwargs")  # the latter: the former and more
        elif name == "App":
            ok = any(k.arg == "broker_credentials" and "faust_credentials" in ast.unparse(k.value)
                     for k in call.keywords)
        else:  # a wrapper: the settings' security passed on (they default to PLAINTEXT for the tests' own use)
            ok = any("security" in ast.unparse(arg) for arg in [*call.args, *(k.value for k in call.keywords)])
        if not ok:
            missing.append(f"{path}:{line} {name}")
    assert not missing, f"Kafka clients built without the security settings: {missing}"
    assert exempt_seen == set(EXEMPT), "an exemption names a site that no longer exists"
    # the scan sees the sites this file tests one by one (a scan that finds nothing proves nothing)
    found = {(path, name) for path, _, name, _ in sites}
    assert {("stream_app/stream/worker.py", "App"), ("stream_app/stream/output.py", "AIOKafkaProducer"),
            ("stream_app/stream/items_check.py", "AIOKafkaConsumer"),
            ("stream_app/stream/transport.py", "AIOKafkaConsumer"), ("stream_app/stream/topics.py", "KafkaAdminClient"),
            ("stream_app/stream/model_control.py", "KafkaProducer"), ("stream_app/tools/replay.py", "KafkaProducer"),
            ("stream_app/tools/consume.py", "KafkaConsumer"), ("stream_app/tools/demo.py", "TopicReader"),
            ("stream_app/tools/bench.py", "TopicReader"), ("stream_app/evaluate/via_kafka.py", "TopicReader"),
            } <= found


def test_the_scan_catches_a_client_built_without_them():
    """The check above on a module that builds a consumer the plain way."""
    bad = ast.parse("consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None)").body[0].value
    good = ast.parse("KafkaConsumer(bootstrap_servers=s, **kafka_python_kwargs(settings.kafka_security))").body[0].value
    assert not spreads(bad, "kafka_python_kwargs") and spreads(good, "kafka_python_kwargs")


# --- Redis: TLS and password in the URL, as documented ------------------------------------------------

def test_the_documented_redis_tls_url_gives_a_verified_tls_connection_with_the_password():
    import redis
    from redis import asyncio as aioredis

    url = f"rediss://:redis-pw@redis.internal:6380/0?ssl_ca_certs={CA}"
    for client in (redis.Redis.from_url(url), aioredis.Redis.from_url(url)):  # tools; workers and the read API
        pool = client.connection_pool
        assert "SSL" in pool.connection_class.__name__
        assert pool.connection_kwargs["password"] == "redis-pw" and pool.connection_kwargs["ssl_ca_certs"] == str(CA)


# --- the embedded Redis: loopback, protected mode, a generated password; the runtime file owner-only ------

@pytest.mark.integration  # starts a redis-server
def test_the_embedded_redis_refuses_clients_without_its_password(tmp_path):
    import redis

    from stream_app.tools.embedded import HOST, free_port, redis_password, start_redis, wait_for_redis

    port, password = free_port(), redis_password()
    proc = start_redis(port, tmp_path / "redis.log", password=password)
    try:
        wait_for_redis(f"redis://:{password}@{HOST}:{port}/0")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=HOST, port=port).ping()
        client = redis.Redis(host=HOST, port=port, password=password)
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
        assert client.config_get("bind") == {"bind": HOST}
        client.close()
        assert password not in Path(f"/proc/{proc.pid}/cmdline").read_text()  # given on stdin, not in `ps`
    finally:
        proc.terminate()
        proc.wait()


@pytest.mark.integration  # starts the embedded broker and Redis through the CLI
def test_up_keeps_the_password_in_an_owner_only_file_and_status_shows_no_secret(tmp_path):
    import json
    import os
    import stat
    import subprocess
    import sys

    import redis

    def cli(*args, **env):
        return subprocess.run([sys.executable, "-m", "stream_app.cli", *args], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "STREAM_APP_STATE_DIR": str(tmp_path),
                                                "KAFKA_BOOTSTRAP_SERVERS": "", "REDIS_URL": "", **env})

    up = cli("up")
    assert up.returncode == 0, up.stderr
    try:
        runtime = tmp_path / "runtime.json"
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o600
        url = json.loads(runtime.read_text())["REDIS_URL"]
        password = redis.connection.parse_url(url)["password"]
        assert len(password) == 32 and f"REDIS_URL={url}" in up.stdout  # `up` prints what to export
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(url.replace(f":{password}@", "")).ping()
        status = cli("status", **SECURE_ENV)
        assert status.returncode == 0, status.stderr
        assert "REDIS_URL=redis://:***@127.0.0.1:" in status.stdout
        assert f"Kafka security: SASL_SSL, SCRAM-SHA-512 as alice, password set, CA {CA}" in status.stdout
        for secret in (password, SASL_PASSWORD):
            assert secret not in status.stdout + status.stderr
    finally:
        assert cli("down").returncode == 0
