"""A recorded log in event-time order without holding it in memory: an external merge sort.

`replay` sends a log in timestamp order, but published logs are not in it (OTTO's files are by session,
hundreds of millions of events). The reader's events are sorted in runs of `run_events` held in memory;
a log longer than one run spills each sorted run to a temporary file (JSON lines) and the runs are merged
as the events are sent, so memory holds one run, a line per run and 8 bytes an event (to count the repeated event
ids), and the system's temporary folder (TMPDIR) about the log's size. The events a worker would refuse (dead-letter)
are sorted in runs of their own the same way, merged when they are asked for (`SortedLog.refused_events`): while the
log is read, memory holds up to one run of each.
"""

from __future__ import annotations

import array
import errno
import heapq
import resource
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import numpy as np
import orjson

from ..errors import StreamAppError
from .line_rejections import IN_MEMORY, LineRejections
from .log_checks import LineRejection
from .log_files import reading_as
from .recorded import OnlineRetailStats, nothing_in, numbered_reads, own_stats

#: Events sorted in memory at once (about 0.8 KB each as Python objects): beyond, runs go to disk.
RUN_EVENTS = 500_000
#: Runs merged at once, each an open file: more runs are first merged in groups of this many into longer runs (a
#: 1,024 open files limit is common; OTTO's full log in runs of 100,000 makes over 2,000).
MERGE_FAN_IN = 128

Keyed = tuple[int, int, dict[str, Any]]  # (ts, position in the file, event): the sort key, ties in file order


# (event, reason, detail, line) of an event a worker would dead-letter: its line of the file (not its read index, as
# a csv's header and an Online Retail file's skipped rows are not events) names it in its dead letter
Refused = tuple[dict[str, Any], str, str, int]
KeyedRefused = tuple[int, int, Refused]  # (ts, position in the file, refused): sorted as Keyed
REFUSED_SLACK = 1_000  # with a limit, refused events past the kept ones' time go once this many over twice it


def _load_all(path: str | Path, fmt: str, refusal: Callable[[dict[str, Any]], tuple[str, str] | None],
              stats: OnlineRetailStats | None) -> tuple[list[dict[str, Any]], list[LineRejection], list[Refused]]:
    """`load_accepted` without a limit: the whole log in memory."""
    kept, rejected, refused, stats = [], [], [], own_stats(fmt, stats)
    with reading_as(path, fmt):
        for line, read in numbered_reads(path, fmt, stats):
            if isinstance(read, LineRejection):
                rejected.append(read)
            elif (why := refusal(read)) is not None:
                refused.append((read, *why, line))
            else:
                kept.append(read)
    if not kept and not refused:
        raise nothing_in(path, fmt, rejected, stats)
    kept.sort(key=lambda event: event["ts"])  # stable: ties in file order
    refused.sort(key=lambda found: found[0]["ts"])
    return kept, rejected, refused


@dataclass
class LimitCut:
    """Whether a `limit` left events of the file out: then the rejected and skipped lines, which have no time to
    cut them by, are counted over the whole file, not over the part kept."""

    events_beyond: bool = False


def load_accepted(path: str | Path, fmt: str, refusal: Callable[[dict[str, Any]], tuple[str, str] | None],
                  limit: int | None = None, stats: OnlineRetailStats | None = None, cut: LimitCut | None = None
                  ) -> tuple[list[dict[str, Any]], list[LineRejection] | LineRejections, list[Refused]]:
    """The log's events a worker accepts (`refusal(event)`: None, else why it dead-letters one) in time order (ties
    in file order), the first `limit` if given (a heap: memory holds `limit` events, not the log); its rejected lines
    (with a limit: in a `LineRejections`, which spills them to disk beyond its first);
    the refused events (with a limit: those up to the last kept one's time), in time order, each with its line.
    `cut` is told whether the limit left events out."""
    if limit is None:
        return _load_all(path, fmt, refusal, stats)
    latest_first: list[tuple[int, int, dict[str, Any]]] = []  # (-ts, -n, event): the latest kept on top
    stats = own_stats(fmt, stats)
    rejected, accepted, prune_at = LineRejections(), 0, 2 * limit + REFUSED_SLACK
    refused: list[Refused] = []
    with reading_as(path, fmt):
        for n, (line, read) in enumerate(numbered_reads(path, fmt, stats)):
            if isinstance(read, LineRejection):
                rejected.append(read)
            elif (why := refusal(read)) is not None:
                refused.append((read, *why, line))
                if len(refused) > prune_at and accepted > limit:  # those past the kept span go (as they would at the end)
                    refused = [found for found in refused if found[0]["ts"] <= -latest_first[0][0]]
                    prune_at = 2 * len(refused) + REFUSED_SLACK  # those left are kept: no pass per refusal
            else:
                accepted += 1
                entry = (-read["ts"], -n, read)
                if len(latest_first) < limit:
                    heapq.heappush(latest_first, entry)
                elif entry > latest_first[0]:
                    heapq.heapreplace(latest_first, entry)
    if not latest_first and not refused:
        raise nothing_in(path, fmt, list(rejected), stats)
    kept = [event for _, _, event in sorted(latest_first, reverse=True)]
    if cut is not None:
        cut.events_beyond = accepted > limit  # refused ones past the kept span were pruned only then
    if accepted > limit:
        refused = [found for found in refused if found[0]["ts"] <= kept[-1]["ts"]]
    refused.sort(key=lambda found: found[0]["ts"])  # in time order, as without a limit
    return kept, rejected, refused


class SortedLog:
    """The events of a log a worker accepts (`refusal(event)` None), in time order with ties in file order, as
    `load_accepted` gives them, but spilled in sorted runs beyond `run_events`. Iterate once (a run held
    in memory lets each event go as it is given); `close`
    (or the `with` block) removes the runs. The refused events (`refused_count` of them) are sorted the same way,
    in runs of their own beyond `run_events` (while reading, memory holds up to a run of each): `refused_events()` gives them in time order, ties in file order, as
    often as asked until `close`. Rejected lines (`rejected`, in file order) spill to disk the same way beyond a run,
    or beyond `line_rejections.IN_MEMORY` of them."""

    def __init__(self, spill_dir: str | Path | None = None):
        self.rejected = LineRejections(spill_dir=spill_dir)
        self.refused_count = 0
        self.refused_runs: list[Path] = []
        self._closed = False
        self._refused: list[KeyedRefused] = []  # the refused events' run in memory: at most `run_events`
        self.count = 0
        self.repeats = 0  # events whose (user, event id) an earlier accepted event of the log had: applied once
        self.cut = LimitCut()
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.runs: list[Path] = []
        self._folder: tempfile.TemporaryDirectory | None = None
        self._spill_dir = spill_dir
        self._memory: list[Keyed] = []

    @classmethod
    def read(cls, path: str | Path, fmt: str, refusal: Callable[[dict[str, Any]], tuple[str, str] | None],
             stats: OnlineRetailStats | None = None, limit: int | None = None, run_events: int = RUN_EVENTS,
             spill_dir: str | Path | None = None, merge_fan_in: int = MERGE_FAN_IN) -> "SortedLog":
        """The log read and sorted; with `limit`, its first events in time only, held in memory (a heap while the
        file is read: `load_accepted`)."""
        log = cls(spill_dir)
        if limit is not None:
            events, log.rejected, refused = load_accepted(path, fmt, refusal, limit, stats, log.cut)
            log._refused = [(found[0]["ts"], n, found) for n, found in enumerate(refused)]  # in time order
            log.refused_count = len(refused)
            log._memory = [(event["ts"], n, event) for n, event in enumerate(events)]
            log._count(log._memory)
            log.repeats = len(events) - len({(event["user_id"], event["event_id"]) for event in events})
            return log
        try:
            log._read(path, fmt, refusal, stats, run_events)
            log._merge_down(max(2, min(merge_fan_in, _open_file_room())))
        except BaseException:
            log.close()
            raise
        return log

    def _read(self, path: str | Path, fmt: str, refusal: Callable[[dict[str, Any]], tuple[str, str] | None],
              stats: OnlineRetailStats | None, run_events: int) -> None:
        run: list[Keyed] = []
        refused: list[KeyedRefused] = []
        self.rejected = LineRejections(min(run_events, IN_MEMORY), self._spill_dir)
        ids = array.array("q")  # a 64-bit hash of each accepted event's (user, event id): 8 bytes an event
        stats = own_stats(fmt, stats)
        with reading_as(path, fmt):
            for n, (line, read) in enumerate(numbered_reads(path, fmt, stats)):
                if isinstance(read, LineRejection):
                    self.rejected.append(read)
                elif (why := refusal(read)) is not None:
                    refused.append((read["ts"], n, (read, *why, line)))
                    self.refused_count += 1
                    if len(refused) >= run_events:
                        self._spill_refused(refused)
                        refused = []
                else:
                    run.append((read["ts"], n, read))
                    ids.append(hash((read["user_id"], read["event_id"])))
                    if len(run) >= run_events:
                        self._spill(run)
                        run = []
        if not run and not self.runs and not self.refused_count:
            raise nothing_in(path, fmt, list(self.rejected), stats)
        if self.refused_runs:
            self._spill_refused(refused)
        else:
            refused.sort(key=_order)
            self._refused = refused
        self.repeats = len(ids) - len(np.unique(np.frombuffer(ids, dtype=np.int64))) if ids else 0
        del ids
        if self.runs:
            self._spill(run)
        else:
            run.sort(key=_order)
            self._memory = run
            self._count(run)

    def _count(self, run: list[Keyed]) -> None:
        """Called with each sorted run: the count and the time span of the whole log."""
        if not run:
            return
        self.count += len(run)
        self.first_ts = run[0][0] if self.first_ts is None else min(self.first_ts, run[0][0])
        self.last_ts = run[-1][0] if self.last_ts is None else max(self.last_ts, run[-1][0])

    def _run_path(self, name: str) -> Path:
        """Where a run is written: the spill folder, made with the first run."""
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="stream-app-sort-", dir=self._spill_dir)
        return Path(self._folder.name) / name

    def _spill(self, run: list[Keyed]) -> None:
        if not run:
            return
        run.sort(key=_order)
        self._count(run)
        path = self._run_path(f"run-{len(self.runs):05d}.jsonl")
        _write_run(path, run)
        self.runs.append(path)

    def _spill_refused(self, run: list[KeyedRefused]) -> None:
        if not run:
            return
        run.sort(key=_order)
        path = self._run_path(f"refused-{len(self.refused_runs):05d}.jsonl")
        _write_run(path, run)
        self.refused_runs.append(path)

    def _merge_down(self, fan_in: int) -> None:
        """Merge the runs (and the refused events' runs) in groups of `fan_in` into longer runs until at most
        `fan_in` of each are left: both may be merged at once, within the room `_open_file_room` gives."""
        self.runs = _merged_down(self.runs, fan_in, "merged")
        self.refused_runs = _merged_down(self.refused_runs, fan_in, "refused-merged")

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.runs:
            return self._drained()
        return self._merged()

    def _drained(self) -> Iterator[dict[str, Any]]:
        """The run held in memory, each event let go once given (the caller holds what it keeps: `evaluate` one
        item epoch), not the whole log until the end of the pass."""
        memory, self._memory = self._memory, []
        memory.reverse()
        while memory:
            yield memory.pop()[2]

    def _merged(self) -> Iterator[dict[str, Any]]:
        for _, _, event in _merged_runs(self.runs):
            yield event

    def refused_events(self) -> Iterator[Refused]:
        """The refused events, (event, reason, detail, line) in time order with ties in file order: their runs on
        disk merged as they are given (memory holds a line per run), or the one run held in memory."""
        if self._closed:
            raise ValueError("the refused events were let go by close(): ask for them before")
        if not self.refused_runs:
            yield from (found for _, _, found in self._refused)
            return
        for _, _, (event, reason, detail, line) in _merged_runs(self.refused_runs):
            yield event, reason, detail, line

    @property
    def refused(self) -> list[Refused]:
        """`refused_events()` in a list: memory for each of them (for callers that need them all at once)."""
        return list(self.refused_events())

    def close(self) -> None:
        self._memory = []
        self._refused, self._closed = [], True  # a caller that asks after close finds out on a short log too
        self.rejected.close()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def __enter__(self) -> "SortedLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _merged_down(runs: list[Path], fan_in: int, name: str) -> list[Path]:
    """`runs` merged in groups of `fan_in` into longer runs (`name`-level-n.jsonl) until at most `fan_in` are left."""
    level = 0
    while len(runs) > fan_in:
        level += 1
        merged: list[Path] = []
        for start in range(0, len(runs), fan_in):
            group = runs[start:start + fan_in]
            if len(group) == 1:
                merged.append(group[0])
                continue
            path = group[0].with_name(f"{name}-{level}-{len(merged):05d}.jsonl")
            _write_run(path, _merged_runs(group))
            for done in group:
                done.unlink()
            merged.append(path)
        runs = merged
    return runs


def _write_run(path: Path, keyed_events: Iterable[Keyed | KeyedRefused]) -> None:
    """A sorted run written to the spill folder; a full disk (or a file size limit) said as what to do."""
    try:
        with open(path, "wb") as out:
            out.writelines(orjson.dumps(keyed) + b"\n" for keyed in keyed_events)
    except OSError as exc:
        raise StreamAppError(f"sorting the log on disk in {path.parent.parent}: {exc.strerror or exc} (it needs about "
                             "the log's size): free space there, or set TMPDIR to a folder with room, or sort in "
                             "longer runs in memory (--sort-in-memory N)") from None


def _order(keyed: Keyed | KeyedRefused) -> tuple[int, int]:
    return keyed[0], keyed[1]


def _open_file_room() -> int:
    """How many runs to merge at once under this process's limit of open files (`ulimit -n`): half of what is left
    after 32 for the rest of the process (a replay's sockets, the log being read), so a low limit merges in more
    passes instead of failing."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return MERGE_FAN_IN if soft == resource.RLIM_INFINITY else max(2, (soft - 32) // 2)


def _merged_runs(runs: list[Path]) -> Iterator[Any]:
    """The keyed events of sorted run files, merged in order; the files are open until the merge ends or stops."""
    files: list[IO[bytes]] = []
    try:
        for path in runs:
            try:
                files.append(open(path, "rb"))
            except OSError as exc:
                if exc.errno != errno.EMFILE:
                    raise
                raise StreamAppError(f"sorting the log on disk: {len(runs)} runs cannot be open at once under this "
                                     "process's open files limit: raise it (ulimit -n 1024) or sort in longer runs "
                                     "(--sort-in-memory)") from None
        yield from heapq.merge(*map(_keyed_lines, files), key=_order)
    finally:
        for fh in files:
            fh.close()


def _keyed_lines(fh: IO[bytes]) -> Iterator[Any]:
    for line in fh:
        ts, n, event = orjson.loads(line)
        yield ts, n, event

