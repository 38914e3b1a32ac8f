"""Log lines: text for people (the default) or one JSON object a line (`STREAM_APP_LOG_FORMAT=json`) for a
log pipeline. Either way every line names the worker, and a URL's password never reaches it: messages,
arguments and tracebacks pass through `redact_url` (endpoints may carry credentials)."""

from __future__ import annotations

import logging
import logging.config
from datetime import datetime, timezone
from typing import Any

import orjson

from .urls import redact_url

#: The worker's --loglevel words (Faust's) as logging levels.
LEVELS = {"crit": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO,
          "debug": logging.DEBUG}
#: Fields a log call may add with `extra=`, copied into the JSON object when present.
EXTRA_FIELDS = ("partition", "event_id", "topic", "offset", "user_id")


class _Redacting(logging.Formatter):
    def __init__(self, worker: str):
        super().__init__()
        self.worker = worker

    def message_of(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        return redact_url(message)


class TextFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        where = "".join(f" {name}={getattr(record, name)}" for name in EXTRA_FIELDS if hasattr(record, name))
        return f"[{stamp}] [{self.worker}] [{record.levelname}] {record.name}:{where} {self.message_of(record)}"


class JsonFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "worker": self.worker}
        for name in EXTRA_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        line["message"] = self.message_of(record)
        return orjson.dumps(line, default=str).decode()


def logging_config(log_format: str, loglevel: str, worker: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the root logger on stderr (Faust's worker takes it as is)."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"default": {"()": formatter, "worker": worker}},
            "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                     "stream": "ext://sys.stderr"}},
            "root": {"level": LEVELS.get(loglevel, logging.WARNING), "handlers": ["default"]}}


def setup_logging(log_format: str, loglevel: str, worker: str) -> None:
    """For commands that run without Faust (`serve`)."""
    logging.config.dictConfig(logging_config(log_format, loglevel, worker))
