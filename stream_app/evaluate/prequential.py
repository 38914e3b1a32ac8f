"""`stream-app evaluate`: prequential (test-then-train) evaluation of a recorded log, in process.

The events are replayed in the order a worker applies them (ordering.rounds: event time, one item
epoch per round) through the same core the workers run; item-side signals of an epoch become
visible to the next one, as they do in a worker.
Every model publishes, after each event of a user, the list it would show that user next; the
user's following event judges that list. Baselines run in the same pass on the same stream, and
their lists are taken at the same moment, so no model sees fresher state than another.

Metrics: Recall@K (the next item is in the list), MRR@K, NDCG@K (one relevant item:
1/log2(rank+1)), overall and per event type of the judged event; catalog coverage (distinct
items recommended / distinct items in the log); popularity bias (mean popularity percentile of
the recommended items, 1.0 = the most popular); Recall on cold targets (the next item had fewer
than COLD_START interactions before); events/s of the pass. With a ground-truth file (`stream-app
synth` writes one), profile accuracy: NDCG of the user's true interests over top categories
against the profile's long-term interests.
"""

from __future__ import annotations

import bisect
import collections
import functools
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sized

import orjson

from ..config import Settings
from ..core.content import ContentIndex
from ..core.events import Event
from ..core.ordering import rounds
from ..core.profile import event_digest
from ..errors import InputFileError
from ..partitioning import partition_of
from ..serving.encoder import Encoder
from ..tools.line_rejections import not_evaluated
from ..tools.log_checks import warn_if_seconds
from ..tools.progress import tracked
from ..tools.recorded import OnlineRetailStats
from ..tools.replay import gate
from ..tools.sorted_log import RUN_EVENTS, SortedLog
from .baselines import CoVisitationUnseen, RecentThenCoVisitation, SequentialRules
from .ceiling import CeilingLeftOut, GeneratorCeiling, ceiling_for
from .metrics import COLD_START, PopularityPercentiles, Scoreboard, profile_accuracy
from .models import SOURCE_WEIGHTS, ItemJustSeen, ItemStateOf, Model, MostPopular, RiverMF, SingleSource, StreamAppModel
from .rules_then_text import SequentialRulesThenText
from .session_knn import SKNN, VSKNN, rates_alone, share_searches

#: The running session's items the kNN rows with reminders put first (session-rec's default number of reminders).
REMINDERS = 3


def models_to_run(settings: Settings, k: int, baselines: bool, light: bool, encoder: Encoder | None,
                  shadow: Encoder | None, content: ContentIndex | None,
                  record: bool, truth: dict[str, Any] | None = None) -> tuple[StreamAppModel, list[Model]]:
    """The stream-app model as configured, and every row of the evaluation, that one first (see
    `evaluate_events`), and last, with a synthetic log's `truth`, its generator's ceiling (ceiling.py)."""
    hybrid = StreamAppModel(settings, encoder=encoder, record=record, content=content, expects_scans=True)
    models: list[Model] = [hybrid]
    if encoder is not None:
        models.append(StreamAppModel(settings, name="stream-app, River only (no encoder)", content=content, variant=True))
    if content is not None and baselines:
        models.append(StreamAppModel(settings, name="stream-app, no content", encoder=encoder, variant=True))
    if shadow is not None:
        models.append(StreamAppModel(settings, name=f"stream-app, shadow encoder {shadow.version}", encoder=shadow))
    single_sources = [SingleSource(hybrid, source, then_popular=True) for source in SOURCE_WEIGHTS
                      if (source != "encoder" or encoder is not None) and (source != "content" or content is not None)]
    # the session baselines' lists are filled with popular items, as the hybrid's are; where a basket or a
    # session is not bought twice, leaving its items out is what such a baseline would be tuned to do
    filled: dict[str, Any] = {"then_popular": hybrid.index.popular}  # the popular items the hybrid has
    out = {**filled, "session_items_out": True}
    # and where no user has an item twice (a rating log), leaving out all the user had: the hybrid learns it
    seen_out = {**filled, "seen_items_out": True}
    # and where users come back to what they just had, the session-rec framework's reminders (helper-144's review
    # found SKNN with them the best other row on the synthetic log)
    reminded = {**filled, "reminders": REMINDERS}
    with_text = [SequentialRulesThenText(content, k, **filled)] if content is not None else []
    if baselines and light:
        models += [*(s for s in single_sources if s.source in ("content", "sequential rules")),
                   SequentialRules(k, **filled), SequentialRules(k, **out), VSKNN(k, idf_weight=1.0, **out),
                   *with_text]
    elif baselines:
        models += [StreamAppModel(settings.replace(drift_handling=not settings.drift_handling), encoder=encoder,
                                  content=content, variant=True,
                                  name="stream-app, drift handling " + ("off" if settings.drift_handling else "on")),
                   StreamAppModel(settings.replace(ranker=not settings.ranker), encoder=encoder, content=content,
                                  variant=True, name="stream-app, ranker " + ("off (prior)" if settings.ranker else "on")),
                   StreamAppModel(settings.replace(bandit=not settings.bandit), encoder=encoder, content=content,
                                  variant=True,
                                  name="stream-app, exploration " + ("off" if settings.bandit else "on (bandit)")),
                   *single_sources,
                   ItemJustSeen(), MostPopular(k), MostPopular(k, window_events=10_000),
                   RiverMF("FunkMF", k), RiverMF("BiasedMF", k),
                   CoVisitationUnseen(k, **filled), RecentThenCoVisitation(k, **filled),
                   *(knn(k, **options) for options in (filled, out, seen_out, reminded)
                     for knn in (SKNN, functools.partial(VSKNN, idf_weight=0.0), functools.partial(VSKNN, idf_weight=1.0))),
                   SequentialRules(k, **filled), SequentialRules(k, **out), SequentialRules(k, **seen_out), *with_text]
    ceiling = ceiling_for(truth, k)
    return hybrid, models + ([ceiling] if ceiling is not None else [])


#: What changes the rows of a pass: (the stream-app model, every row) -> the same, changed (`tuning`)
Rows = Callable[[Any, list[Model]], tuple[Any, list[Model]]]


def _as_run(hybrid: StreamAppModel, models: list[Model]) -> tuple[StreamAppModel, list[Model]]:
    return hybrid, models


def without_variants(inner: Rows | None) -> Rows:
    """`inner`'s rows without the stream-app row's variants (`StreamAppModel.variant`): each is a whole hybrid, the
    largest share of a long log's pass, and none is a baseline the stream-app row is compared with."""
    def rows(hybrid: Any, models: list[Model]) -> tuple[Any, list[Model]]:
        hybrid, models = (inner or _as_run)(hybrid, models)
        return hybrid, [model for model in models if not getattr(model, "variant", False)]
    return rows


class Reachable:
    """Of the judged events, those on an item the log had before (no model that recommends only the
    items it has seen can hit the others: the ceiling of its Recall), those on an item the user had, and
    those on one of the user's k most recent distinct items (what a list of them alone would hit)."""

    def __init__(self, k: int):
        self.k = k
        self.counts = {"judged": 0, "known_item": 0, "own_item": 0, "recent_own_item": 0}
        self.interactions: collections.Counter[str] = collections.Counter()  # item -> events on it
        self.had: dict[str, set[str]] = collections.defaultdict(set)  # user -> the items the user had
        self.latest: dict[str, list[str]] = collections.defaultdict(list)  # user -> the k latest distinct, latest last

    def judge(self, event: Event, interactions_before: int) -> None:
        """`interactions_before`: the events on the item stamped before this one. The user's own events of the same
        time before it (a basket's lines) count too: every model has them, so the ceiling holds every own item."""
        counts = self.counts
        own = event.item_id in self.had[event.user_id]
        counts["judged"] += 1
        counts["known_item"] += interactions_before > 0 or own
        counts["own_item"] += own
        counts["recent_own_item"] += event.item_id in self.latest[event.user_id]

    def learn(self, event: Event) -> None:
        self.interactions[event.item_id] += 1
        self.had[event.user_id].add(event.item_id)
        latest = self.latest[event.user_id]
        if event.item_id in latest:
            latest.remove(event.item_id)
        elif len(latest) == self.k:
            del latest[0]
        latest.append(event.item_id)


def interactions_before(items: list[str], stamps: list[int], counted: list[bool],
                        counts: Mapping[str, int]) -> list[int]:
    """Each event's item's interactions before it, for a round of events (`items`, `stamps`; `counted`: those that
    count, not repeats): `counts` (of earlier rounds) and the round's events on it stamped earlier. A round comes
    partition by partition: counted as they came, a lower partition's later events counted before a higher one's
    earlier ones, and the cold and known-item figures moved with STREAM_APP_PARTITIONS."""
    by_item: dict[str, list[int]] = {}
    for item_id, ts, counts_it in zip(items, stamps, counted):
        if counts_it:
            by_item.setdefault(item_id, []).append(ts)
    for round_stamps in by_item.values():
        round_stamps.sort()
    return [counts.get(item_id, 0) + bisect.bisect_left(by_item.get(item_id, ()), ts)
            for item_id, ts in zip(items, stamps)]


class AppliedEvents:
    """The event ids each user had, as 64-bit digests (a log's event dicts are not held: about 60 bytes an event)."""

    def __init__(self) -> None:
        self.by_user: dict[str, set[int]] = {}
        self.repeats = 0  # events whose id their user had

    def add(self, user_id: str, event_id: str) -> bool:
        """Whether the user's event id is new (then it is kept)."""
        digest = int(event_digest(event_id), 16)  # the profile's idempotence key, as a number
        had = self.by_user.setdefault(user_id, set())
        if digest in had:
            self.repeats += 1
            return False
        had.add(digest)
        return True


def timed(spent: dict[str, float], clock: Callable[[], float], model: Any, call: Callable[..., Any], *args: Any) -> Any:
    """`call(*args)`, its time added to the model's own (each model's events/s alone)."""
    t = clock()
    try:
        return call(*args)
    finally:
        spent[model.name] += clock() - t


def end_epoch(models: list[Any], spent: dict[str, float], clock: Callable[[], float]) -> None:
    """The models fold in what they learned from other users (popularity, factors, session indexes)."""
    for model in models:
        timed(spent, clock, model, model.end_batch)


def evaluate_events(events: Iterable[dict[str, Any]], settings: Settings, k: int = 20,
                    truth: dict[str, Any] | None = None, window: int | None = None,
                    baselines: bool = True, encoder: Encoder | None = None, shadow: Encoder | None = None,
                    judge_from_ts: int | None = None, record: bool = False, content: ContentIndex | None = None,
                    light: bool = False, in_time_order: bool = False, rows: Rows | None = None) -> dict[str, Any]:
    """With `encoder`, the stream-app rows run it (as workers with that version live), a "River only" row without;
    `shadow` adds a row for a second version. With `content` (the item catalogue's text vectors) the stream-app rows
    use it and a "no content" row runs without. Only events at or after `judge_from_ts` are judged (all are learned):
    the encoder's training cutoff when the log overlaps its training data. `light` (long logs): the rows
    `models_to_run` says. `in_time_order`: `events` (a sized iterable) come in time order and are taken one epoch at
    a time (`ordering.rounds`), not held. `rows`: changes `models_to_run`'s (tuning's baselines' parameters)."""
    settings = settings.replace(rec_policy="every", top_k=k)  # every event is judged by the next one
    hybrid, models = (rows or _as_run)(*models_to_run(settings, k, baselines, light, encoder, shadow, content, record, truth))
    share_searches(models)  # the kNN rows of one method find each event's neighbours once
    events = events if isinstance(events, Sized) else list(events)
    window = max(20, len(events) // 60) if window is None else window
    boards = {m.name: Scoreboard(k, window) for m in models}
    shown: dict[str, dict[str, list[str]]] = {m.name: {} for m in models}
    popularity = PopularityPercentiles()
    catalog: set[str] = set()
    reachable = Reachable(k)
    n = 0
    spent = dict.fromkeys(boards, 0.0)  # each model's own seconds (its events/s alone)
    clock = time.perf_counter
    started = clock()
    applied = AppliedEvents()  # a redelivered event is not the user's action
    last_epoch = None
    for epoch, released in rounds(events, settings, partition_of, in_time_order):
        if epoch != last_epoch and last_epoch is not None:
            end_epoch(models, spent, clock)  # what others did shows at the next epoch, as the item state does
        last_epoch = epoch
        batch_events = [r.item for r in released]
        parsed = [Event.from_dict(raw) for raw in batch_events]
        for model in models:
            timed(spent, clock, model, model.begin_batch, parsed, epoch)
        repeats = [not applied.add(event.user_id, event.event_id) for event in parsed]  # a user's: in its order
        before = interactions_before([e.item_id for e in parsed], [e.ts for e in parsed], [not r for r in repeats],
                                     reachable.interactions)
        for raw, event, repeat, item_before in zip(batch_events, parsed, repeats, before):
            if not repeat and (judge_from_ts is None or event.ts >= judge_from_ts):
                cold = item_before < COLD_START
                if event.user_id in shown[hybrid.name]:
                    reachable.judge(event, item_before)
                for model in models:
                    previous = shown[model.name].get(event.user_id)
                    if previous is not None:
                        boards[model.name].judge(previous, raw, popularity, cold)
            if not repeat:
                reachable.learn(event)
                popularity.learn(event.item_id)
                catalog.add(event.item_id)
            for model in models:
                if repeat and not isinstance(model, (StreamAppModel, ItemStateOf)):  # the workers' core drops it itself
                    continue
                listed = timed(spent, clock, model, model.learn, event)
                if listed is not None:  # None: a duplicate the model skipped, its list stays
                    shown[model.name][event.user_id] = listed
            n += 1
        popularity.refresh()
    end_epoch(models, spent, clock)
    seconds = clock() - started
    result: dict[str, Any] = {
        "events": n, "repeated_event_ids": applied.repeats, "users": len(applied.by_user), "items": len(catalog),
        "k": k, "batch": settings.batch_max, "seconds": seconds, "events_per_s": n / seconds if seconds else None,
        "judged_from_ts": judge_from_ts, "encoder": encoder.manifest if encoder is not None else None,
        "shadow_encoder": shadow.manifest if shadow is not None else None,
        "content": {"version": content.version, "items": len(content), "terms": len(content.terms)}
        if content is not None else None,
        "reachable": reachable.counts,
        "models": {name: {**board.summary(catalog), "events_per_s": n / spent[name] if spent[name] else None}
                   for name, board in boards.items()},
    }
    _mark_rows(models, result)
    if record and isinstance(hybrid, StreamAppModel):  # else a process of a split pass without it
        result["recorded"] = hybrid.recorded
        result["profiles"] = hybrid.profiles
    if truth is not None:
        result["profile_accuracy"] = {model.name: profile_accuracy(model.profiles, truth)
                                      for model in models if isinstance(model, StreamAppModel)}
    return result


def _mark_rows(models: list[Any], result: dict[str, Any]) -> None:
    """A filled row of a source with nothing to work from shows popular items only; a row that ranks the stream-app
    row's candidates has no events/s of its own (its time is mostly that row's); a kNN row sharing a search, its own
    with the search's (`rates_alone`). The generator's ceiling is no row:
    it goes to "ceiling" ({"left_out": why} when its truth's settings cannot draw the log)."""
    rows = result["models"]
    for model in models:
        if isinstance(model, (GeneratorCeiling, CeilingLeftOut)):
            row = rows.pop(model.name)
            result["ceiling"] = {"name": model.name, **row} if model.fits else {"left_out": model.reason}
        if isinstance(model, SingleSource) and not model.proposed:
            rows[model.name]["source_proposed_nothing"] = True
        if isinstance(model, SingleSource) and model.reuses_candidates:
            rows[model.name]["events_per_s"] = None
    rates_alone(models, rows, result["events"])  # the kNN rows sharing a search: each with its time


def time_split(first_ts: int, last_ts: int, share: float) -> int:
    """The event time `share` of the way from `first_ts` to `last_ts`: the events from it on are judged."""
    return first_ts + round(share * (last_ts - first_ts))


def read_truth(path: str | Path) -> dict[str, Any]:
    """A ground truth `stream-app synth` wrote (users -> their true interests and drift), checked."""
    try:
        truth = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise InputFileError(f"cannot read the ground truth {path} ({exc.strerror or exc}): give the "
                             "<log>.truth.json `stream-app synth` wrote beside the log, or leave --truth out") from None
    except orjson.JSONDecodeError as exc:
        raise InputFileError(f"the ground truth {path} is not JSON ({exc}): give the <log>.truth.json "
                             "`stream-app synth` wrote beside the log") from None
    users = truth.get("users") if isinstance(truth, dict) else None
    if not isinstance(users, dict) or not all(
            isinstance(user, dict) and isinstance(user.get("interests"), dict) and "drift_at" in user
            for user in users.values()):
        raise InputFileError(f"{path} is not a ground truth of `stream-app synth` (it holds users -> their "
                             "interests and drift_at): give the <log>.truth.json written beside the log")
    return truth


def evaluate_log(path: str | Path, fmt: str, settings: Settings, k: int = 20,
                 truth_path: str | Path | None = None, encoder: Encoder | None = None,
                 shadow: Encoder | None = None, limit: int | None = None, content: ContentIndex | None = None,
                 light: bool = False, run_events: int = RUN_EVENTS, judge_from: float | None = None,
                 tune_baselines: float | None = None, processes: int = 1, variants: bool = True,
                 progress: bool = False) -> dict[str, Any]:
    """`evaluate_events` over a recorded log, read as replay reads it: in time order, sorted in runs of `run_events`
    spilled to disk beyond the first (`SortedLog`), so memory holds a run, not the log. `judge_from`: judge only the
    events from that share of the log's time span on (a time split; `time_split`). `tune_baselines`: first choose
    the baselines' main parameters on that share of the log's events (`tuning`), then run them with those.
    `processes`: the rows split over that many processes (`processes.split_pass`), the same figures. `variants`:
    False leaves out the stream-app row's variants (`without_variants`); every other row's figures stay the same.
    `progress`: the pass's progress on stderr."""
    truth = read_truth(truth_path) if truth_path else None
    tuning = None
    if tune_baselines is not None:
        from .tuning import tune_log  # it runs this module's pass
        tuning = tune_log(path, fmt, settings, k, tune_baselines, limit, content, light, run_events, processes,
                          progress)
    rows = tuning.rows if tuning is not None else None
    rows = rows if variants else without_variants(rows)

    def one_pass(rows: Rows | None) -> dict[str, Any]:
        return _log_pass(path, fmt, settings, k, truth, encoder, shadow, limit, content, light, run_events,
                         judge_from, rows, progress)

    if processes > 1:
        from .processes import split_pass  # it runs this module's pass

        result = split_pass(one_pass, processes, rows)
    else:
        result = one_pass(rows)
    if tuning is not None:
        result["tuning"] = tuning.summary()
    result["variants"] = variants
    return result


def _log_pass(path: str | Path, fmt: str, settings: Settings, k: int, truth: dict[str, Any] | None,
              encoder: Encoder | None, shadow: Encoder | None, limit: int | None, content: ContentIndex | None,
              light: bool, run_events: int, judge_from: float | None, rows: Rows | None,
              progress: bool = False) -> dict[str, Any]:
    """One pass of `evaluate_log` over the log, with `rows` (None: every row as built)."""
    skipped = OnlineRetailStats() if fmt == "online-retail" else None
    # what the workers dead-letter is not judged; `limit`: the log's first events in time
    with SortedLog.read(path, fmt, gate(settings), skipped, limit, run_events) as log:
        warn_if_seconds(fmt, log.first_ts, log.last_ts)  # as replay warns
        judge_from_ts, because = None, []
        for model in (encoder, shadow):
            if model is not None and log.count:
                training = model.manifest["training"]
                cutoff = training["train_until_ts"]
                if training["first_ts"] <= log.last_ts and cutoff > log.first_ts:
                    judge_from_ts = max(judge_from_ts or cutoff, cutoff)  # never judge on what a model trained on
                    same = Path(str(training.get("log"))).name == Path(path).name and training.get("format") == fmt
                    because.append("the encoder trained on the earlier part of this log" if same else
                                   f"the encoder trained on {training.get('log')} ({training.get('format')}) up to "
                                   "then, in this log's time span: what it may hold of this log is not judged")
        if judge_from is not None and log.count:
            split = time_split(log.first_ts, log.last_ts, judge_from)
            judge_from_ts = max(judge_from_ts or split, split)
            because.append(f"--judge-from {judge_from:g}: the log's time from that share of its span on")
        # an encoder of another catalogue knows few of the log's items (by event: it keeps its log's most frequent)
        known = {role: set(model.item_ids) for role, model in (("encoder", encoder), ("shadow_encoder", shadow),
                                                               ("content", content)) if model is not None}
        counts = dict.fromkeys(known, 0)
        result = evaluate_events(KnownItems(tracked(log, "evaluate", progress), known, counts), settings, k, truth,
                                 encoder=encoder, shadow=shadow,
                                 judge_from_ts=judge_from_ts, content=content, light=light, in_time_order=True,
                                 rows=rows)
        # both read back from their runs on disk before the log lets them go, not held as lists
        refused = collections.Counter(why for _, why, _, _ in log.refused_events())
        unread = not_evaluated(log.rejected, refused, skipped, log.cut, fmt)
    result["log"], result["format"] = str(path), fmt
    result["judged_from_because"] = because
    for role, found in counts.items():
        if result["events"]:
            result[f"{role}_log_events_known"] = found / result["events"]
    result.update(unread)
    return result


class KnownItems:
    """`events` (sized), counting per role the events whose item is in its set of `known` items into `counts`."""

    def __init__(self, events: Any, known: dict[str, set[str]], counts: dict[str, int]):
        self.events, self.known, self.counts = events, known, counts

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for event in self.events:
            for role, items in self.known.items():
                self.counts[role] += event["item_id"] in items
            yield event
