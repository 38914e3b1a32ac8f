"""What the CLI says when a Kafka client reaches no broker: the clients end with a timeout that names neither the
cause they logged nor a name that never resolves."""

from __future__ import annotations

import contextlib
import logging

from ..config import Settings
from ..urls import check_resolvable, redact_url

#: Commands that need the brokers from their first step: a broker name that does not resolve is said at once,
#: not after the clients' 30 s (the worker waits for names, as one started before its network's may).
NEED_BROKERS = frozenset({"replay", "recommendations", "dead-letters", "redrive", "erase", "erasure-receipts"})


def check_brokers_resolve(command: str) -> None:
    if command in NEED_BROKERS and (settings := Settings.from_env()).kafka_bootstrap_servers:
        check_resolvable(settings.require_kafka())


class LastConnectionWarning(logging.Handler):
    """The last warning a Kafka client logged (a refused TLS handshake, a failed login): the timeout the command
    ends with does not say it, and the clients log to handlers of their own, which print nothing here."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # a log call that cannot be formatted is not this handler's to raise
            self.last = record.getMessage()

    def attach(self) -> "LastConnectionWarning":
        for name in ("kafka", "aiokafka"):
            logging.getLogger(name).addHandler(self)
        return self


CONNECTION_WARNINGS = LastConnectionWarning()


def kafka_unreachable(exc: BaseException) -> str | None:
    """What to tell the user when `exc` (or what caused it) is a Kafka client failing to reach any
    broker; None for any other error (those keep their traceback: they are bugs)."""
    from aiokafka.errors import KafkaConnectionError as AioConnectionError
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    kinds = (KafkaTimeoutError, KafkaConnectionError, AioConnectionError)
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kinds) and "bootstrap" in str(seen).lower():
            last = CONNECTION_WARNINGS.last
            cause = f"; the client's last warning: {redact_url(last)[:300]}" if last else ""
            return (f"cannot reach a Kafka broker ({str(seen).strip() or type(seen).__name__}{cause}): start it, or "
                    "point KAFKA_BOOTSTRAP_SERVERS at a running one (`stream-app up` starts the embedded broker); with "
                    "TLS or SASL, a refused handshake or login ends the same way: check KAFKA_SECURITY_PROTOCOL, "
                    "KAFKA_SSL_CAFILE and the SASL user and password")
        seen = seen.__cause__  # not __context__: a bug raised while handling a timeout keeps its traceback
    return None
