"""The worker process in the foreground: Faust's worker running the app `worker.build_app` makes, until
SIGTERM/SIGINT."""

from __future__ import annotations

import logging
from typing import Any

import faust

from ..config import Settings
from ..logs import logging_config
from .retries import exit_if_stop_hangs
from .worker import build_app

log = logging.getLogger("stream_app.worker")


class Worker(faust.Worker):
    """Faust's worker, with the HTTP port opened first and no terminal spinner (its cursor escapes end up
    in the worker's log lines)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None

    def _on_sigterm(self) -> None:
        exit_if_stop_hangs()  # from the signal: Faust's consumer waits for unacknowledged input before the app's stop
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        exit_if_stop_hangs()
        super()._on_sigint()

    async def on_execute(self) -> None:
        # The HTTP port first: /healthz and /readyz answer while partitions are assigned and tables recovered.
        await self.app.stream_worker.start_http()
        for warning in settings_warnings(self.app.stream_worker.settings, self.app.stream_worker.erased.changelog):
            log.warning("%s", warning)  # here, after Faust set up the logging: one JSON object a line with --log-format json
        await super().on_execute()


def settings_warnings(settings: Settings, erased_changelog: str) -> list[str]:
    """What an operator should change in defaults that are fine for a trial but not for a deployment."""
    said = []
    if settings.namespace and settings.namespace[-1] not in "._-":  # put before every name as it is
        said.append(f"STREAM_APP_NAMESPACE={settings.namespace!r} ends in no separator: the topics are named "
                    f"{settings.namespace}{settings.topics.inputs[0].removeprefix(settings.namespace)} and the like "
                    f"(end it with one: {settings.namespace}.)")
    if not settings.erasure_key:  # the group id starts the changelog's name: a reader of it can test user ids
        said.append(f"STREAM_APP_ERASURE_KEY is not set: erased users are recorded by an HMAC keyed with the group id, "
                    f"which anyone who reads {erased_changelog} knows, so they can test ids for an erasure; give every "
                    "worker the same secret key, and, once erasures were recorded with the group id, list it in "
                    f"STREAM_APP_ERASURE_PREVIOUS_KEYS ({settings.group_id})")
    never = [(name, noun) for name, noun, ms in (("STREAM_APP_USER_IDLE_MS", "user", settings.user_idle_ms),
                                                 ("STREAM_APP_ITEM_IDLE_MS", "item", settings.item_idle_ms)) if ms == 0]
    if never:
        said.append(f"{' and '.join(name for name, _ in never)} {'is' if len(never) == 1 else 'are'} 0: no "
                    f"{' or '.join(noun for _, noun in never)} ever leaves this worker's memory, which "
                    "grows with every new id (a flood of made-up ids too); set how long an idle one stays, in ms")
    return said


def run_worker(settings: Settings, partitions: int, web_port: int, loglevel: str = "warn") -> None:
    """Run one worker in the foreground until SIGTERM/SIGINT."""
    app = build_app(settings, partitions, web_port)
    logging.captureWarnings(True)  # library warnings become log lines too (one JSON object a line)
    worker = Worker(app, loglevel=loglevel, quiet=True,
                    logging_config=logging_config(settings.log_format, loglevel, app.stream_worker.worker_id))
    # A batch sends more than Faust's 100-message producer buffer; the throttle is intended,
    # its per-batch warning is noise.
    logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)
    worker.execute_from_commandline()
