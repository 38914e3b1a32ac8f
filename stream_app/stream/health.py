"""The worker's HTTP port (`stream-app worker --web-port N`): `/metrics` (Prometheus text format),
`/healthz` (the event loop answers) and `/readyz` (200 once the worker takes events, else 503 saying
what it waits for, an output failing for seconds included). A small aiohttp server of its own, started
before anything else, so /readyz answers while the worker starts; Faust's own web server stays off (its
pages would expose tables)."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger("stream_app.worker")


def health_app(exposition: Callable[[], bytes], missing: Callable[[], list[str]]) -> web.Application:
    """`exposition`: the metrics as text; `missing`: what readiness still waits for (empty: ready)."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        waiting = missing()
        return web.json_response({"ready": not waiting, "missing": waiting}, status=503 if waiting else 200)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(app: web.Application, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    """Listen on `port`; the caller keeps the runner and calls `cleanup()` at shutdown."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def url_host(listen_host: str, every_interface_as: str) -> str:
    """The host part of a URL to a port listening on `listen_host`: `every_interface_as` for an address of every
    interface (0.0.0.0, ::), an IPv6 address in brackets."""
    if listen_host in ("0.0.0.0", "::"):
        return every_interface_as
    return f"[{listen_host}]" if ":" in listen_host else listen_host


def announce(port: int, log_format: str, host: str = "0.0.0.0") -> None:
    """Say where the worker's HTTP port is, whatever the log level. In text format on the process's own
    stderr: Faust's worker redirects `sys.stderr` into its log at WARNING, which printed this line as
    `[WARNING] mode.redirect: ...`; in json format a log line, as every line of that output is one."""
    where = f"http://{url_host(host, socket.gethostname())}:{port}/metrics, /healthz and /readyz"
    if log_format == "text":
        print(f"stream-app worker: {where}", file=sys.__stderr__ or sys.stderr, flush=True)
    else:
        log.warning("listening on %s", where)
