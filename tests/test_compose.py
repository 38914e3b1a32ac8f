"""docker-compose.yml names the topics and settings the code uses (no Docker engine needed)."""

import re
import shlex
from pathlib import Path

import yaml

from stream_app.cli.main import parser
from stream_app.config import ENV_PREFIX, Settings
from stream_app.stream.topics import SINGLE_PARTITION, topic_specs
from stream_app.tools.recorded import FORMATS

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


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


def test_every_setting_named_is_one_the_code_reads():
    env = load()["services"]["worker-1"]["environment"]
    known = set(Settings().to_env()) | {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"}
    named = {k for k in env if k.startswith(ENV_PREFIX) or k in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    assert named <= known, named - known
    settings = Settings.from_env(env)
    assert settings.kafka_bootstrap_servers == "kafka:9092" and settings.redis_url.startswith("redis://redis:")


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
