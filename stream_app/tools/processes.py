"""Stream workers as child processes (demo, bench, tests): start, stop gracefully, or kill;
and the services of a one-off run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import redis

from ..config import Settings
from ..errors import ServiceTimeout
from ..state_files import state_dir
from ..store.redis_store import worker_statuses
from ..stream.health import url_host
from ..stream.topics import ensure_topics
from .embedded import Embedded, free_port, with_embedded


class WorkerProcess:
    def __init__(self, settings: Settings, log_path: Path, loglevel: str = "info", module: str | None = None):
        """A worker; or `module`, run as `python -m module` (bench's plain Faust app)."""
        self.log_path = log_path
        self.web_port = free_port()
        self.web_host = url_host(settings.web_host, "127.0.0.1")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings.to_env()}
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module] if module else
                [sys.executable, "-m", "stream_app.cli", "worker", "--loglevel", loglevel,
                 "--web-port", str(self.web_port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    @property
    def url(self) -> str:
        """The worker's HTTP port: /metrics, /healthz, /readyz."""
        return f"http://{self.web_host}:{self.web_port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no commit; what a crash looks like."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def wait_ready_workers(settings: Settings, workers: list[WorkerProcess], timeout: float) -> list[dict]:
    """Wait until each of these workers reports ready (partitions assigned, tables recovered, no output
    failing)."""
    client = redis.Redis.from_url(settings.require_redis())
    deadline = time.monotonic() + timeout
    wanted = {w.pid for w in workers}
    try:
        while time.monotonic() < deadline:
            ready = [s for s in worker_statuses(client, settings.namespace)
                     if s["ready"] and s["app_id"] == settings.app_id and s["pid"] in wanted]
            if len(ready) == len(wanted):
                return ready
            for worker in workers:
                if not worker.alive():
                    raise ServiceTimeout(f"worker {worker.pid} exited ({worker.proc.returncode}):\n"
                                         f"{worker.log_tail()}")
            time.sleep(0.2)
    finally:
        client.close()
    raise ServiceTimeout(f"workers {sorted(wanted)} not ready within {timeout:.0f}s")


@dataclass
class Run:
    """Services and workers of one demo or bench run."""

    settings: Settings
    log_dir: Path
    embedded: Embedded | None
    workers: list[WorkerProcess] = field(default_factory=list)
    failed: bool = False  # set by a run that ends badly without raising, so its logs are kept

    def start_worker(self, loglevel: str = "info") -> WorkerProcess:
        worker = WorkerProcess(self.settings, self.log_dir / f"worker-{len(self.workers)}.log", loglevel)
        self.workers.append(worker)
        return worker


@contextmanager
def busy_process(enabled: bool = True) -> Iterator[None]:
    """A CPU-bound process beside the workers for the duration (a loaded machine), if enabled."""
    if not enabled:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


@contextmanager
def one_off_run(label: str, environ: Mapping[str, str] = os.environ, keep: bool = False) -> Iterator[Run]:
    """The configured services under a fresh namespace (earlier runs' events would be duplicates),
    else embedded ones started here; everything started here is stopped on the way out. The run's
    folder under the state directory (worker and service logs, a registry copy: ~100 MB with the
    content model) is removed when the run ends well, unless `keep`; a run that raised or `failed`
    keeps it, for the logs its error points to, and says where it is."""
    base = Settings.from_env(environ)
    folder = state_dir(environ)
    folder.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=folder))
    run = Run(base, log_dir, None)
    ended_well = interrupted = False
    try:
        if base.kafka_bootstrap_servers and base.redis_url:
            name = f"{label}{uuid.uuid4().hex[:12]}"  # unique: a second run never meets the first one's state
            run.settings = base.replace(namespace=f"{name}.", app_id=f"stream-app-{name}")
        else:
            run.embedded = Embedded.start(log_dir)
            run.settings = with_embedded(base, run.embedded.kafka_bootstrap_servers, run.embedded.redis_url)
        ensure_topics(run.settings)
        yield run
        ended_well = not run.failed
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: nothing to look into on the services (the logs are kept)
        interrupted = True
        raise
    finally:
        for worker in run.workers:
            worker.stop()
        if run.embedded is not None:
            run.embedded.stop()
        elif (ended_well or interrupted) and not keep and run.settings.namespace != base.namespace:
            remove_namespace(run.settings)  # on services the user runs: leave nothing of the run behind
        elif run.settings.namespace != base.namespace:
            print(f"stream-app {label}: its topics and Redis keys are kept under the namespace "
                  f"{run.settings.namespace} (STREAM_APP_NAMESPACE={run.settings.namespace} reads them)", file=sys.stderr)
        if ended_well and not keep:
            shutil.rmtree(log_dir, ignore_errors=True)
        elif ended_well:
            print(f"stream-app {label}: this run's folder is kept (--keep): {log_dir}", file=sys.stderr)
        else:
            print(f"stream-app {label}: the run did not end well; its logs are kept in {log_dir}", file=sys.stderr)


def remove_namespace(settings: Settings) -> None:
    """Delete a one-off run's topics and Redis keys (everything under its own, unique namespace)."""
    from kafka.admin import KafkaAdminClient

    from ..kafka_security import kafka_python_kwargs

    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.require_kafka().split(","),
                                 **kafka_python_kwargs(settings.kafka_security))
        try:
            topics = [t for t in admin.list_topics() if t.startswith(settings.namespace)]
            if topics:
                admin.delete_topics(topics)
        finally:
            admin.close()
        client = redis.Redis.from_url(settings.require_redis())
        try:
            keys = list(client.scan_iter(match=f"{settings.namespace}*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start:start + 1000])
        finally:
            client.close()
    except Exception as exc:  # the run's results stand; what is left is named
        print(f"could not remove the run's topics and keys (namespace {settings.namespace}): {exc!r}", file=sys.stderr)
