"""Progress of a long run on stderr: a one-line bar on a terminal, a line per 10% elsewhere (CI logs, nohup files),
with the time left once the run has gone on for a minute (a replay or an evaluation of a year's log takes hours)."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Iterator, Sized, TextIO

#: The time left is said once a run has gone on this long (before, its rate says little).
ESTIMATE_AFTER_S = 60.0


class Progress:
    """`label`: what is counted ("replay": events sent)."""

    def __init__(self, total: int, stream: TextIO | None = sys.stderr, width: int = 30, label: str = "replay",
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.stream, self.width, self.label, self.clock = max(total, 1), stream, width, label, clock
        self.tty = bool(stream and stream.isatty())
        self.started = clock()
        self._last_draw = 0.0
        self._last_decile = -1
        self._line_open = False  # a bar drawn on a terminal line without its newline yet

    def update(self, done: int, force: bool = False) -> None:
        if self.stream is None:
            return
        now = self.clock()
        elapsed = now - self.started
        left = f", about {time_said(elapsed * (self.total - done) / done)} to go" \
            if done and done < self.total and elapsed >= ESTIMATE_AFTER_S else ""
        if self.tty:
            if not force and now - self._last_draw < 0.2:
                return
            self._last_draw = now
            filled = int(self.width * done / self.total)
            rate = done / max(elapsed, 1e-9)
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
                              f"{rate:,.0f}/s{left}\033[K")
            self._line_open = not force
            if force:
                self.stream.write("\n")
        else:
            decile = 10 * done // self.total
            if decile != self._last_decile and (decile > self._last_decile):
                self._last_decile = decile
                self.stream.write(f"{self.label}: {done}/{self.total} ({100 * done // self.total}%){left}\n")
        self.stream.flush()

    def end(self) -> None:
        """Ends a bar left open (a run stopped by an error: its message goes on a line of its own)."""
        if self.stream is not None and self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False


def time_said(seconds: float) -> str:
    """4 s, 12 min, 1 h 05 min."""
    minutes = round(seconds / 60)
    if seconds < 59.5:  # rounded below, not "60 s"
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
        try:
            for done, item in enumerate(self.items, 1):
                if done % self.every == 0:
                    self.progress.update(done)
                yield item
            self.progress.update(done, force=True)
        finally:
            self.progress.end()


def tracked(items: Sized, label: str, shown: bool) -> Any:
    """`items` with their progress on stderr (as it is when they are taken: a forked process of a split pass has
    none) when `shown`, else as they are."""
    return Tracked(items, Progress(len(items), sys.stderr, label=label)) if shown else items
