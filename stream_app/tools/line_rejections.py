"""The lines of a recorded log that cannot be read as events, in file order, without holding them all in memory.

A log can hold millions of them (a producer that wrote a wrong field for a month), each with its raw line for its
dead letter. The first `in_memory` are held; the rest are written in chunks of that many to an anonymous temporary
file (JSON lines, bytes in base64: no pickle in the service), read back one chunk at a time as they are asked for.
"""

from __future__ import annotations

import base64
import collections
import os
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator

import orjson

from ..contracts import Rejection, Source
from ..errors import StreamAppError
from .log_checks import OTTO_LINE_UNREAD, LineRejection, rejection_said

if TYPE_CHECKING:  # sorted_log keeps its rejected lines here; recorded reads them
    from .recorded import OnlineRetailStats
    from .sorted_log import LimitCut

#: Rejected lines held in memory, and the size of each chunk written to disk beyond them
IN_MEMORY = 10_000


class LineRejections:
    """Rejected lines in the order appended (file order): `len`, truth and iteration as a list's, as often as asked
    until `close`; memory holds up to `in_memory` of them twice over (the first ones, and the chunk being filled).

    >>> from stream_app.contracts import Rejection, Source
    >>> rejections = LineRejections(in_memory=2)
    >>> for line in range(1, 6):
    ...     rejections.append(LineRejection(line, Rejection("invalid_json", f"line {line}", Source("log", 0, line),
    ...                                                     None, b"{")))
    >>> len(rejections), [found.line for found in rejections]
    (5, [1, 2, 3, 4, 5])
    >>> rejections.close()
    """

    def __init__(self, in_memory: int = IN_MEMORY, spill_dir: str | Path | None = None):
        self._in_memory = max(1, in_memory)
        self._spill_dir = spill_dir
        self._first: list[LineRejection] = []
        self._filling: list[LineRejection] = []
        self._chunks: list[tuple[int, int]] = []  # (offset, length) of each chunk in the file
        self._file: IO[bytes] | None = None
        self._count = 0
        self._closed = False

    def append(self, rejection: LineRejection) -> None:
        self._count += 1
        if len(self._first) < self._in_memory:
            self._first.append(rejection)
            return
        self._filling.append(rejection)
        if len(self._filling) >= self._in_memory:
            self._spill()

    def _spill(self) -> None:
        data = b"".join(orjson.dumps(_as_record(found)) + b"\n" for found in self._filling)
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="stream-app-rejected-", dir=self._spill_dir)
            offset = self._file.seek(0, os.SEEK_END)
            self._file.write(data)
            self._file.flush()
        except OSError as exc:
            folder = self._spill_dir or tempfile.gettempdir()
            raise StreamAppError(f"keeping the log's unreadable lines on disk in {folder}: {exc.strerror or exc}: "
                                 "free space there, or set TMPDIR to a folder with room") from None
        self._chunks.append((offset, len(data)))
        self._filling = []

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[LineRejection]:
        if self._closed:
            raise ValueError("the rejected lines were let go by close(): ask for them before")
        yield from list(self._first)
        chunks, file = list(self._chunks), self._file
        for offset, length in chunks:  # read by position: appending between two chunks moves nothing read
            assert file is not None
            yield from map(_from_record, map(orjson.loads, os.pread(file.fileno(), length, offset).splitlines()))
        yield from list(self._filling)

    def close(self) -> None:
        self._first, self._filling, self._chunks, self._closed = [], [], [], True
        if self._file is not None:
            self._file.close()
            self._file = None


def _as_record(found: LineRejection) -> dict[str, Any]:
    rejection, source = found.rejection, found.rejection.source
    return {"line": found.line, "reason": rejection.reason, "detail": rejection.detail,
            "key": None if rejection.key is None else base64.b64encode(rejection.key).decode(),
            "payload": base64.b64encode(rejection.payload).decode(), "null_value": rejection.null_value,
            "source": [source.topic, source.partition, source.offset, source.timestamp, source.counted,
                       source.redrive_of, [[name, None if value is None else base64.b64encode(value).decode()]
                                           for name, value in source.headers]]}


def _from_record(record: dict[str, Any]) -> LineRejection:
    topic, partition, offset, timestamp, counted, redrive_of, headers = record["source"]
    source = Source(topic, partition, offset, timestamp, counted, redrive_of,
                    tuple((name, None if value is None else base64.b64decode(value)) for name, value in headers))
    key = None if record["key"] is None else base64.b64decode(record["key"])
    return LineRejection(record["line"], Rejection(record["reason"], record["detail"], source, key,
                                                   base64.b64decode(record["payload"]), record["null_value"]))


def not_evaluated(rejected: Iterable[LineRejection], refused: collections.Counter[str],
                  skipped: OnlineRetailStats | None, cut: LimitCut, fmt: str = "") -> dict[str, Any]:
    """The results' counts of what the log held and no pass judged: lines that cannot be read as events (`rejected`,
    in file order, read once), events the workers refuse (`refused`: how many for each reason), and the Online Retail
    lines skipped as not a customer's purchase; whether a --limit left events out (`cut`), and so the line counts are
    the whole file's (a line not read has no time to cut it by)."""
    lines, count, last_line, sessions = 0, 0, None, 0
    first: dict[str, LineRejection] = {}  # each reason's first: the first line alone hides the other kinds
    by_reason: collections.Counter[str] = collections.Counter()
    for found in rejected:
        count += 1
        if found.line != last_line:  # an OTTO line may hold several bad events, and its good ones are read
            lines, last_line = lines + 1, found.line
        sessions += fmt == "otto" and (found.rejection.reason == "not_utf8" or found.rejection.detail.startswith(
            f"line {found.line}: {OTTO_LINE_UNREAD}:"))  # a session line rejected whole, not one of its events
        by_reason[found.rejection.reason] += 1
        first.setdefault(found.rejection.reason, found)
    found_first = next(iter(first.values()), None)
    result: dict[str, Any] = {
        "rejected_lines": lines,
        "rejections": count,
        **({"rejected_sessions": sessions} if fmt == "otto" else {}),  # session lines rejected whole
        "first_rejection": rejection_said(found_first.rejection) if found_first is not None else None,
        "rejections_by_reason": {reason: {"count": n, "first": rejection_said(first[reason].rejection)}
                                 for reason, n in by_reason.items()},
        "line_counts_include_beyond_limit": cut.events_beyond}
    if skipped is not None:
        result["skipped_lines"] = skipped.as_dict()
    for reason in ("timestamp_out_of_range", "payload_too_large"):
        result[reason] = refused[reason]
    return result
