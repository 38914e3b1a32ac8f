"""Shared fixtures: one real broker and one real Redis per test session (embedded ones on free
ports, or the ones KAFKA_BOOTSTRAP_SERVERS / REDIS_URL name), and factories with every argument
defaulted. Each test gets its own namespace and app id, so tests never see each other's data."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis

from stream_app.config import Settings
from stream_app.stream.topics import ensure_topics
from stream_app.tools.embedded import Embedded, wait_for_kafka, wait_for_redis
from stream_app.tools.processes import WorkerProcess, wait_ready_workers

REPO = Path(__file__).resolve().parent.parent
OTTO_SAMPLE = REPO / "stream_app" / "data" / "otto-sample.jsonl"
_counter = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    """The suite's own CLI state folder (its workers and commands inherit it): the user's, with a `stream-app up`
    running in it, made every command that takes the embedded services refuse or use them (6 tests failed)."""
    if "STREAM_APP_STATE_DIR" not in os.environ:
        os.environ["STREAM_APP_STATE_DIR"] = config._stream_app_state = tempfile.mkdtemp(prefix="stream-app-tests-")


def pytest_unconfigure(config: pytest.Config) -> None:
    state = getattr(config, "_stream_app_state", None)
    if state is not None:
        shutil.rmtree(state, ignore_errors=True)
        os.environ.pop("STREAM_APP_STATE_DIR", None)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    kafka, redis_url = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("REDIS_URL")
    if kafka and redis_url:
        wait_for_kafka(kafka)
        wait_for_redis(redis_url)
        yield {"KAFKA_BOOTSTRAP_SERVERS": kafka, "REDIS_URL": redis_url}
        return
    running = Embedded.start(tmp_path_factory.mktemp("services"))
    try:
        yield running.env()
    finally:
        running.stop()


@pytest.fixture
def make_settings(services: dict[str, str], request: pytest.FixtureRequest) -> Callable[..., Settings]:
    """Settings on the session's services, in a namespace of this test's own."""

    def make(**overrides) -> Settings:
        n = next(_counter)
        name = f"t{os.getpid()}-{n}-{request.node.name[:40]}".replace("[", "-").replace("]", "")
        defaults = dict(kafka_bootstrap_servers=services["KAFKA_BOOTSTRAP_SERVERS"],
                        redis_url=services["REDIS_URL"], namespace=f"{name}.", app_id=f"app-{name}",
                        partitions=4)
        return Settings(**{**defaults, **overrides})

    return make


@pytest.fixture
def redis_client(services: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(services["REDIS_URL"])
    yield client
    client.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes; all are stopped when the test ends."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, wait_ready: bool = True) -> WorkerProcess:
        ensure_topics(settings)
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        if wait_ready:
            wait_ready_workers(settings, [worker], 60)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """Two small sequence-encoder versions trained on the OTTO sample (different seeds), in one registry
    (torch, the train extra, is imported only by the tests that ask for them)."""
    from stream_app_train.train import TrainConfig, train

    small = TrainConfig(dim=16, hidden=32, epochs=1, buckets=1 << 12)
    root = tmp_path_factory.mktemp("registry")
    first = train(OTTO_SAMPLE, "otto", root, small)
    second = train(OTTO_SAMPLE, "otto", root, TrainConfig(**{**small.__dict__, "seed": 8}))
    return root, first["version"], second["version"]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs the broker and Redis (the `services` fixture, directly or through
    another fixture) is an integration test: `pytest -m "not integration"` runs the rest alone."""
    for item in items:
        if "services" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
