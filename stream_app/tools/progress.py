"""Progress of a long run on stderr: a one-line bar on a terminal, a line per 10% elsewhere (CI logs, nohup files),
with the time left once the run has gone on for a minute (a replay or an evaluation of a year's log takes hours)."""

from __future__ import annotations

import sys
import time
from typing import Any, Iterator, Sized, TextIO

#: The time left is said once a run has gone on this long (before, its rate says little).
ESTIMATE_AFTER_S = 60.0


class Progress:
    """`label`: what is counted ("replay": events sent)."""

    def __init__(self, total: int, stream: TextIO | None = sys.stderr, width: int = 30, label: str = "replay"):
        self.total, self.stream, self.width, self.label = max(total, 1), stream, width, label
        self.tty = bool(stream and stream.isatty())
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, done: int, force: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        elapsed = now - self.started
        left = f", about {time_said(elapsed * (self.total - done) / done)} to go" \
            if done and done < self.total and elapsed >= ESTIMATE_AFTER_S else ""
        if self.tty:
            if not force and now - self._last_draw < 0.2:
                return
            self._last_draw = now
            filled = int(self.width * done / self.total)
            rate = done / max(elapsed, 1e-9)
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
                              f"{rate:,.0f} ev/s{left}\033[K")
            if force:
                self.stream.write("\n")
        else:
            decile = 10 * done // self.total
            if decile != self._last_decile and (decile > self._last_decile):
                self._last_decile = decile
                self.stream.write(f"{self.label}: {done}/{self.total} ({100 * done // self.total}%){left}\n")
        self.stream.flush()


def time_said(seconds: float) -> str:
    """4 s, 12 min, 1 h 05 min."""
    minutes = round(seconds / 60)
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Tracked:
    """`items` (sized) as they are taken, `progress` told every `every` of them and at the end."""

    def __init__(self, items: Any, progress: Progress, every: int = 1000):
        self.items, self.progress, self.every = items, progress, every

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Any]:
        done = 0
        for done, item in enumerate(self.items, 1):
            if done % self.every == 0:
                self.progress.update(done)
            yield item
        self.progress.update(done, force=True)


def tracked(items: Sized, label: str, shown: bool) -> Any:
    """`items` with their progress on stderr (as it is when they are taken: a forked process of a split pass has
    none) when `shown`, else as they are."""
    return Tracked(items, Progress(len(items), sys.stderr, label=label)) if shown else items
