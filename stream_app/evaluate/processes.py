"""`stream-app evaluate --processes N`: the rows of one pass split over N processes, each reading the log itself.

The full pass runs thirty rows, each learning from every event; on the shop's year-long log that is over two hours
in one process, while the rows are independent of each other but for those that read the stream-app row's own state
(its single sources rank its candidates and read its profiles). Those stay with it in the first process. Every
other process runs its share of the rows and the hybrid's item state alone (`ItemStateOf`, as the tuning pass does:
the popular items the baselines' lists are filled with), so every row sees the stream it sees in one process and
its figures are the same; the results are merged in the rows' order. The processes are forked after the log's
models are loaded (the content index, the tuning's choice), and each reads the log as `evaluate_log` reads it.
"""

from __future__ import annotations

import _thread
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable

from ..errors import StreamAppError
from .baselines import CoVisitationUnseen, RecentThenCoVisitation
from .models import ItemStateOf, Model, RiverMF, SingleSource, StreamAppModel
from .prequential import Rows
from .rules_then_text import SequentialRulesThenText
from .session_knn import SKNN, VSKNN

#: Each row's time per event relative to the others, a guess from the rows' own times in full passes over the shop's
#: and the synthetic logs: it only balances the processes, never changes a figure (other rows: 0.5).
ROW_COSTS: tuple[tuple[type, float], ...] = (
    (StreamAppModel, 10.0), (SingleSource, 6.0), (SKNN, 6.0), (VSKNN, 6.0), (CoVisitationUnseen, 2.0),
    (RecentThenCoVisitation, 2.0), (SequentialRulesThenText, 1.0), (RiverMF, 1.0))


def row_cost(model: Model) -> float:
    if isinstance(model, SingleSource) and model.reuses_candidates:
        return 0.5  # it ranks the stream-app row's candidates again: its time is mostly that row's
    return next((cost for cls, cost in ROW_COSTS if isinstance(model, cls)), 0.5)


def units(hybrid: Any, models: list[Model]) -> tuple[list[int], list[tuple[list[int], float]]]:
    """The rows that go to the first process (the stream-app row, `hybrid`, and those reading its state), and the
    others as units to place whole with their cost: one row, or the kNN rows sharing a search (`share_searches`: one
    process runs the search for all of them; in two, each would run it)."""
    first, shared = [], {}
    for at, model in enumerate(models):
        if model is hybrid or isinstance(model, SingleSource):
            first.append(at)
        else:
            shared.setdefault(("search", model.search_key()) if isinstance(model, (SKNN, VSKNN)) else at, []).append(at)
    # the rows of a search after the first only rank its scores
    return first, [(unit, row_cost(models[unit[0]]) + 0.5 * (len(unit) - 1)) for unit in shared.values()]


def assign(hybrid: Any, models: list[Model], processes: int) -> list[int]:
    """Each row's process (0 to processes - 1): the first's rows of `units` in it; each other unit, the costliest
    first, to the process with the least cost so far (ties: the first)."""
    groups = [0] * len(models)
    first, others = units(hybrid, models)
    load = [0.0] * processes
    load[0] = sum(row_cost(models[at]) for at in first)
    for unit, cost in sorted(others, key=lambda pair: -pair[1]):  # stable: the rows' own order among equals
        group = min(range(processes), key=load.__getitem__)
        for at in unit:
            groups[at] = group
        load[group] += cost
    return groups


class SplitRows:
    """The rows of each process of a split pass; the first's (run in this process) keeps the whole pass's order."""

    def __init__(self, processes: int, inner: Rows | None):
        self.processes, self.inner = processes, inner
        self.names: list[list[str]] = [[] for _ in range(processes)]  # each process's rows, filled by the first
        self.order: list[str] = []  # every row's, in the pass's order

    def of(self, group: int) -> Rows:
        def rows(hybrid: Any, models: list[Model]) -> tuple[Any, list[Model]]:
            hybrid, models = self.inner(hybrid, models) if self.inner is not None else (hybrid, models)
            groups = assign(hybrid, models, self.processes)
            if group == 0:
                self.order = [model.name for model in models]
                for model, to in zip(models, groups):
                    self.names[to].append(model.name)
                return hybrid, [model for model, to in zip(models, groups) if to == 0]
            state = hybrid if isinstance(hybrid, ItemStateOf) else ItemStateOf(hybrid)
            mine = [model for model, to in zip(models, groups) if to == group]
            reads_text = [m for m in mine if isinstance(m, StreamAppModel) and m.content is not None]
            if reads_text:  # the hybrid tells the content index its round's scans ahead, in its process only
                reads_text[0].expects_scans = True
            return state, [state, *mine]
        return rows


def split_pass(one_pass: Callable[[Rows], dict[str, Any]], processes: int, inner: Rows | None = None) -> dict[str, Any]:
    """`one_pass(rows)` (a whole pass over the log with those rows) in `processes` processes, each with its share of the
    rows (`inner`: what the pass would do with them in one process), merged as one pass's results."""
    split = SplitRows(processes, inner)
    context = multiprocessing.get_context("fork")  # the children take the loaded models as they are, unpickled
    started = time.perf_counter()
    children = []
    parent = os.getpid()
    try:
        for group in range(1, processes):
            receive, send = context.Pipe(duplex=False)
            child = context.Process(target=_child, args=(one_pass, split.of(group), send, parent), daemon=True,
                                    name=f"evaluate-{group + 1}")
            child.start()
            send.close()
            children.append((group, child, receive))
        reading = ChildResults(children, processes)
        try:
            with reading:
                results = [one_pass(split.of(0))]
        except ChildFailed:  # raised in the pass, or on the way out of it
            raise reading.failure from None
        finally:
            reading.disarm()
        if any(child.is_alive() for _, child, _ in children):  # its progress said 100%: the wait is said too
            print(f"evaluate: the first process's rows are done; waiting for the other {len(children)} process"
                  f"{'es' if len(children) > 1 else ''}", file=sys.stderr)
        results += reading.collected()
    finally:
        for _, child, _ in children:
            if child.is_alive():
                child.terminate()
            child.join(CHILD_END_S)
            if child.is_alive():  # stuck (a send into a full pipe): its work is not wanted
                child.kill()
                child.join()
    return merged(results, split, time.perf_counter() - started)


#: How long a process of a split pass has to end once terminated, before it is killed.
CHILD_END_S = 5.0


class ChildFailed(BaseException):
    """Raised in the first process's pass when another process failed (a BaseException, as KeyboardInterrupt is, so
    that no `except Exception` in the pass takes it for its own)."""


def _raise_child_failed(_signum: int, _frame: Any) -> None:
    raise ChildFailed()


class ChildResults:
    """What the other processes of a split pass send, read as it comes, while the first process runs its own pass
    (the `with` block): the first failure stops that pass at once (SIGUSR1, simulated in the main thread by
    `_thread.interrupt_main` and raised there as `ChildFailed`; SIGINT would do nothing under nohup, which ignores
    it), where it would otherwise run the whole pass, hours on a long log, before reading that another had failed in
    its first minute."""

    def __init__(self, children: list[tuple[int, Any, Any]], processes: int):
        self.children, self.processes = children, processes
        self.results: dict[int, dict[str, Any]] = {}
        self.failure: StreamAppError | None = None
        self._lock = threading.Lock()
        # only the main thread gets signals: a pass run in another thread reads a failure at its end
        self._armed = threading.current_thread() is threading.main_thread()
        self._handler: Any = None
        self._thread = threading.Thread(target=self._read, daemon=True, name="evaluate-results")

    def __enter__(self) -> "ChildResults":
        if self._armed:
            self._handler = signal.signal(signal.SIGUSR1, _raise_child_failed)
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.disarm()

    def disarm(self) -> None:
        """No failure read from now on stops the pass (its end or its own error come first); the handler put back
        (a simulated signal still pending is then dropped: Python skips one without a handler of its own)."""
        with self._lock:
            armed, self._armed = self._armed, False
        if armed:
            signal.signal(signal.SIGUSR1, self._handler)

    def _read(self) -> None:
        waiting = {receive: (group, child) for group, child, receive in self.children}
        while waiting:
            for receive in multiprocessing.connection.wait(list(waiting)):
                group, child = waiting.pop(receive)
                try:
                    self.results[group] = _received(group, self.processes, child, receive)
                except Exception as exc:  # noqa: BLE001 - a broken pipe's message too: this thread reports, never dies
                    failure = exc if isinstance(exc, StreamAppError) else StreamAppError(
                        f"evaluate's process {group + 1} of {self.processes} sent no readable results: "
                        f"{type(exc).__name__}: {exc}")
                    with self._lock:
                        self.failure = failure
                        if self._armed:
                            _thread.interrupt_main(signal.SIGUSR1)
                    return

    def collected(self) -> list[dict[str, Any]]:
        """Every other process's results, in their order, once all are in; the first failure raised."""
        self._thread.join()
        if self.failure is not None:
            raise self.failure
        return [self.results[group] for group, _, _ in self.children]


#: How often a process of a split pass checks that the first is still there.
PARENT_CHECK_S = 0.5


def _child(one_pass: Callable[[Rows], dict[str, Any]], rows: Rows, send: Any, parent: int) -> None:
    # what the pass prints (warnings about the log) the first process prints once; an error goes back whole
    sys.stdout = sys.stderr = open(os.devnull, "w")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the first process's to handle: it ends this one
    threading.Thread(target=_exit_without, args=(parent,), daemon=True, name="parent-watch").start()
    try:
        send.send(("result", one_pass(rows)))
    except BaseException as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]  # the message alone ("KeyError: 'x'") says too little
        send.send(("error", f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno}, in {where.name})"))
    finally:
        send.close()


def _exit_without(parent: int) -> None:
    """End this process once the first is gone (killed: SIGTERM, SIGKILL, out of memory): no finally of its ran to
    end this one, which would run its whole pass (hours) for no one and then wait forever to send its results (the
    pipe's reading end stays open in this process and in those forked after it, so the send never fails)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


def _received(group: int, processes: int, child: Any, receive: Any) -> dict[str, Any]:
    try:
        kind, value = receive.recv()
    except EOFError:
        child.join()
        raise StreamAppError(f"evaluate's process {group + 1} of {processes} ended with exit code {child.exitcode} "
                             "and no results (out of memory? each process holds the log's models): run with fewer "
                             "--processes") from None
    if kind == "error":
        raise StreamAppError(f"evaluate's process {group + 1} of {processes} failed: {value}")
    return value


def merged(results: list[dict[str, Any]], split: SplitRows, seconds: float) -> dict[str, Any]:
    """The first process's results (the log's counts, the stream-app row's) with every process's rows, in the pass's
    order; the ceiling and profile accuracy from the process that ran them. `seconds`: the split pass's, wall time."""
    result = results[0]
    rows, accuracy = dict(result["models"]), dict(result.get("profile_accuracy") or {})
    for other in results[1:]:
        if other["events"] != result["events"]:  # the same reading of the same log: a difference is a fault
            raise StreamAppError(f"evaluate's processes read {result['events']:,} and {other['events']:,} events of "
                                 "the same log: was the log file changed during the pass?")
        rows.update((name, row) for name, row in other["models"].items() if name != ItemStateOf.NAME)
        accuracy.update(other.get("profile_accuracy") or {})
        if "ceiling" in other:
            result["ceiling"] = other["ceiling"]
    result["models"] = {name: rows[name] for name in split.order if name in rows}
    if accuracy:
        result["profile_accuracy"] = {name: accuracy[name] for name in split.order if name in accuracy}
    result["seconds"] = seconds
    result["events_per_s"] = result["events"] / seconds if seconds else None
    result["processes"] = {"count": len(split.names), "rows": split.names}
    return result
