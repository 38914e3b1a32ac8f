"""`stream-app evaluate --tune-baselines SHARE`: each baseline row's main parameters chosen on the log's first SHARE
of events, as Ludewig and Jannach (2018) tune every algorithm per data set, before the pass over the whole log.

The stream-app rows' defaults were chosen on these logs and the baselines' were not, so a table of the baselines at
their defaults flatters the hybrid. `tune` runs one pass over the prefix alone, with the prequential machinery
itself (`prequential.evaluate_events`: the same rounds, item epochs and popular items that fill the lists): every
tunable baseline row once for each value of its grid (`GRIDS`, by class: SKNN and V-SKNN their neighbours and sample
size, sequential rules their steps, the co-visitation rows how many recent items they read), and no stream-app row
(the hybrid's item state is kept, without profiles or lists: the baselines' fill reads it). Each row keeps the
values of highest Recall@K on the prefix (ties: the fewest changed from its defaults; `choose`), and the whole pass
runs it with them (`Tuning.rows`), its name saying them. The stream-app rows are never tuned: their defaults are the
same for every log. The prefix is judged again in the whole pass (as the defaults were chosen on the logs the hybrid
is judged on): that can favour the tuned baselines, never the hybrid.
"""

from __future__ import annotations

import inspect
import itertools
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..config import Settings
from ..core.content import ContentIndex
from ..tools.progress import tracked
from ..tools.replay import gate
from ..tools.sorted_log import RUN_EVENTS, SortedLog
from .baselines import CoVisitationUnseen, RecentThenCoVisitation, SequentialRules, SessionBaseline
from .models import ItemStateOf, Model, StreamAppModel
from .prequential import Rows, evaluate_events
from .processes import split_pass
from .rules_then_text import SequentialRulesThenText
from .session_knn import SKNN, VSKNN

Params = Mapping[str, int]

#: neighbour sessions x the sample of recent sessions they are found in (the defaults: 100 of 500)
KNN_GRID = tuple({"neighbours": n, "sample_size": s} for n in (50, 100, 200) for s in (250, 500, 1000))
STEPS_GRID = tuple({"steps": steps} for steps in (1, 3, 5, 10, 20))  # the default: 10
#: the grid of each tunable baseline class (by exact class: a subclass has its own), default values included
GRIDS: dict[type, tuple[Params, ...]] = {
    SKNN: KNN_GRID, VSKNN: KNN_GRID, SequentialRules: STEPS_GRID, SequentialRulesThenText: STEPS_GRID,
    CoVisitationUnseen: tuple({"recent": n} for n in (1, 3, 5, 10)),  # the default: 3
    RecentThenCoVisitation: tuple({"recent": n} for n in (3, 5, 10, 15, 20)),  # the default: 5
}
#: the families as the table names them, each by a class of it (the others of a family have its grid and defaults)
FAMILIES = {"SKNN, V-SKNN": SKNN, "sequential rules (also then similar text)": SequentialRules,
            "co-visitation, unseen": CoVisitationUnseen, "recent, then co-visitation": RecentThenCoVisitation}


def params_of(model: Any) -> dict[str, int]:
    """The values a tunable baseline row runs with, of its grid's parameters."""
    return {name: getattr(model, name) for name in GRIDS[type(model)][0]}


def defaults_of(cls: type) -> dict[str, int]:
    """The values a tunable class runs with unless told, of its grid's parameters."""
    parameters = inspect.signature(cls.__init__).parameters
    return {name: parameters[name].default for name in GRIDS[cls][0]}


def variant(model: Any, params: Params) -> Any:
    """`model` (a baseline row not yet run) built anew with `params` in place of its own, every other option kept;
    its name says the tuned values (the co-visitation rows' names say their recent items only then)."""
    names = {name for cls in (type(model), SessionBaseline) for name in inspect.signature(cls.__init__).parameters
             if name not in ("self", "options")}
    built = type(model)(**{**{name: getattr(model, name) for name in names}, **params})
    if "recent" in params:
        built.label = f"{type(built).label} (recent {built.recent})"
    return built


class Tuning:
    """What `tune` chose for each tunable row (by its default name) and the prefix's Recall@K of every value;
    `rows` applies the choice to a pass (`evaluate_events(rows=...)`)."""

    def __init__(self, share: float, events: int, judged: int, k: int, defaults: dict[str, dict[str, int]]):
        self.share, self.events, self.judged, self.k = share, events, judged, k
        self.defaults = defaults  # default row name -> its default values
        self.chosen: dict[str, dict[str, int]] = {}  # default row name -> its tuned values
        self.tried: dict[str, list[tuple[dict[str, int], float]]] = {}  # default row name -> (values, Recall@K)

    def rows(self, hybrid: StreamAppModel, models: list[Model]) -> tuple[StreamAppModel, list[Model]]:
        """Every tuned row with its values; the others (the stream-app rows among them) as they are."""
        return hybrid, [variant(m, self.chosen[m.name]) if m.name in self.chosen else m for m in models]

    def summary(self) -> dict[str, Any]:
        """The results' "tuning": the share, the prefix, the grids, and per row its values and the prefix's figures."""
        return {"share": self.share, "events": self.events, "judged": self.judged, "k": self.k,
                "by": f"recall@{self.k}",
                "grids": {family: {"values": [dict(p) for p in GRIDS[cls]], "default": defaults_of(cls)}
                          for family, cls in FAMILIES.items()},
                "rows": {name: {"default": self.defaults[name], "chosen": values,
                                "prefix_recall": [{"values": dict(p), f"recall@{self.k}": r} for p, r in self.tried[name]]}
                         for name, values in self.chosen.items()}}


def tune(events: Any, settings: Settings, k: int, share: float, light: bool = False,
         content: ContentIndex | None = None) -> Tuning:
    """The prefix pass over `events` (sized, in time order): the rows `evaluate` runs (`light`, `content` as there),
    each tunable one once per value of its grid, none of the others; what each row chose."""
    return tune_pass(lambda rows: evaluate_events(events, settings, k, rows=rows, light=light, content=content,
                                                  in_time_order=True), k, share)


def tune_pass(prefix_pass: Callable[[Rows], dict[str, Any]], k: int, share: float, processes: int = 1) -> Tuning:
    """`tune`, the pass being `prefix_pass(rows)`; its rows split over `processes` (`processes.split_pass`)."""
    tried: dict[str, list[tuple[dict[str, int], Any]]] = {}
    defaults: dict[str, dict[str, int]] = {}

    def candidates(hybrid: StreamAppModel, models: list[Model]) -> tuple[ItemStateOf, list[Model]]:
        for model in models:
            if type(model) in GRIDS:
                defaults[model.name] = params_of(model)
                tried[model.name] = [(dict(p), variant(model, p)) for p in GRIDS[type(model)]]
        state = ItemStateOf(hybrid)
        return state, [state, *(built for row in tried.values() for _, built in row)]

    result = split_pass(prefix_pass, processes, candidates) if processes > 1 else prefix_pass(candidates)
    rows = result["models"]
    judged = max((row["judged"] for row in rows.values()), default=0)
    tuning = Tuning(share, result["events"], judged, k, defaults)
    for name, row in tried.items():
        figures = [(params, rows[built.name][f"recall@{k}"]) for params, built in row]
        tuning.tried[name] = figures
        tuning.chosen[name] = choose(figures, defaults[name])
    return tuning


def choose(figures: list[tuple[dict[str, int], float]], default: Params) -> dict[str, int]:
    """The values of the highest Recall; of equal ones, those that change the fewest of the defaults (a tie changes
    nothing: a sample size that never binds on the share stays the default), then the grid's first."""
    return max(figures, key=lambda pair: (pair[1], sum(pair[0][name] == value for name, value in default.items())))[0]


class Prefix:
    """The first `count` events of `events` (sized, iterated once)."""

    def __init__(self, events: Any, count: int):
        self.events, self.count = events, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return itertools.islice(iter(self.events), self.count)


def tune_log(path: str | Path, fmt: str, settings: Settings, k: int, share: float, limit: int | None = None,
             content: ContentIndex | None = None, light: bool = False, run_events: int = RUN_EVENTS,
             processes: int = 1, progress: bool = False) -> Tuning:
    """`tune` over the first `share` of the events `evaluate_log` reads of the log (the same reading, its own; one in
    each of `processes`). `progress`: its progress on stderr."""
    def prefix_pass(rows: Rows) -> dict[str, Any]:
        with SortedLog.read(path, fmt, gate(settings), None, limit, run_events) as log:
            prefix = tracked(Prefix(log, round(share * log.count)), "evaluate, tuning", progress)
            return evaluate_events(prefix, settings, k, rows=rows, light=light, content=content, in_time_order=True)

    return tune_pass(prefix_pass, k, share, processes)
