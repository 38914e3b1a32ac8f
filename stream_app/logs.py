"""Log lines: text for people (the default) or one JSON object a line (`STREAM_APP_LOG_FORMAT=json`) for a
log pipeline. Either way every line names the worker, and a URL's password never reaches it: messages,
arguments and tracebacks pass through `redact_url` (endpoints may carry credentials)."""

from __future__ import annotations

import logging
import logging.config
import threading
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


class RepeatLimit(logging.Filter):
    """A line the same as one let through less than `window_s` ago is held back and counted, and the next one let
    through says how many were: a Kafka client retrying a lost broker logs the same error every 100 ms, thousands
    a minute, which would bury everything else. A line with a traceback is never held back (two failures can
    share a message, not a cause). A record logged with `extra={"repeat_key": K}` (a dead letter: its topic and
    reason) is limited by K instead of its message, `burst` lines a window: each rejected input's line names its
    offset, so none was the same as another, and a producer writing garbage wrote a line per record (3,000 in a
    second); every rejection is still on the dead-letter topic and counted in the metrics."""

    def __init__(self, window_s: float = 10.0, keep: int = 1000, burst: int = 10):
        super().__init__()
        self.window_s, self.keep, self.burst = window_s, keep, burst
        # key -> (when its window began, lines let through in it, held since): in the order windows began
        self.seen: dict[tuple[Any, ...], tuple[float, int, int]] = {}
        self.lock = threading.Lock()  # Faust's consumer thread logs too

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            return True
        try:
            with self.lock:
                return self._filter(record)
        except Exception:  # a log call whose arguments do not format: the handler reports it, as without the filter
            return True

    def _filter(self, record: logging.LogRecord) -> bool:
        grouped = getattr(record, "repeat_key", None)
        key = (record.name, record.levelno, record.getMessage() if grouped is None else grouped)
        burst = 1 if grouped is None else self.burst
        shown = self.seen.get(key)
        if shown is not None and record.created - shown[0] < self.window_s:
            let, held = (shown[1] + 1, shown[2]) if shown[1] < burst else (shown[1], shown[2] + 1)
            self.seen[key] = (shown[0], let, held)
            return held == shown[2]
        if shown is not None and shown[2]:
            message = record.getMessage()
            record.msg, record.args = f"{message} (and {shown[2]} more like it in {record.created - shown[0]:.0f}s)", None
        self.seen.pop(key, None)
        self.seen[key] = (record.created, 1, 0)
        while len(self.seen) > self.keep:  # the line let through longest ago is forgotten first
            del self.seen[next(iter(self.seen))]
        return True


def logging_config(log_format: str, loglevel: str, worker: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the root logger on stderr (Faust's worker takes it as is)."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"default": {"()": formatter, "worker": worker}},
            "filters": {"repeats": {"()": RepeatLimit}},
            "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                     "stream": "ext://sys.stderr", "filters": ["repeats"]}},
            "root": {"level": LEVELS.get(loglevel, logging.WARNING), "handlers": ["default"]}}


def setup_logging(log_format: str, loglevel: str, worker: str) -> None:
    """For commands that run without Faust (`serve`)."""
    logging.config.dictConfig(logging_config(log_format, loglevel, worker))


def utc_ms(ms: int | bytes) -> str:
    """A time in ms since the epoch (or as Redis holds it) for people, with the ms for a machine:
    `2026-12-01 18:40:30 UTC (1796150430000)`; what is no such number as it is."""
    text = ms.decode(errors="replace") if isinstance(ms, bytes) else str(ms)
    try:  # a value edited by hand ("²", 20 digits) is shown as it is
        at = datetime.fromtimestamp(int(text) / 1000, timezone.utc) if text.isascii() and text.isdigit() else None
    except (ValueError, OverflowError, OSError):
        at = None
    return f"{at.strftime('%Y-%m-%d %H:%M:%S')} UTC ({text})" if at is not None else text


def plural(count: int, noun: str) -> str:
    """`1 event`, `2 events`: a count and its noun, as printed lines say them."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
