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
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np
import orjson

from . import core, decay
from .baselines import SKNN, VSKNN, CoVisitationUnseen, RecentThenCoVisitation, SequentialRules
from .config import Settings
from .content import ContentIndex
from .encoder import Encoder, UserEncoding, encode_batch
from .errors import ServiceTimeout
from .events import Event
from .items import InMemoryItemIndex
from .learners import PartitionLearners
from .logs import in_time_window, load_sorted
from .ordering import ItemFeed, rounds
from .partitioning import partition_of
from .profile import Profile
from .recommend import recommend


# ---------------------------------------------------------------------------------------- metrics

#: A target item with fewer interactions than this before the event is a cold-start target.
COLD_START = 5


def rank_metrics(items: list[str], target: str, k: int) -> tuple[float, float, float]:
    """(hit, reciprocal rank, NDCG) of one target in a ranked list cut at k."""
    try:
        rank = items.index(target, 0, k) + 1
    except ValueError:
        return 0.0, 0.0, 0.0
    return 1.0, 1.0 / rank, 1.0 / math.log2(rank + 1)


def ndcg_graded(truth: dict[str, float], ranked: list[str], k: int) -> float:
    """NDCG@k of a ranking against graded relevance."""
    dcg = sum(truth.get(name, 0.0) / math.log2(i + 2) for i, name in enumerate(ranked[:k]))
    ideal = sorted(truth.values(), reverse=True)[:k]
    idcg = sum(rel / math.log2(i + 2) for i, rel in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


@dataclass
class Tally:
    n: int = 0
    hits: float = 0.0
    rr: float = 0.0
    ndcg: float = 0.0

    def add(self, hit: float, rr: float, ndcg: float) -> None:
        self.n += 1
        self.hits += hit
        self.rr += rr
        self.ndcg += ndcg

    def summary(self, k: int) -> dict[str, float]:
        d = max(self.n, 1)
        return {"judged": self.n, f"recall@{k}": self.hits / d, f"mrr@{k}": self.rr / d,
                f"ndcg@{k}": self.ndcg / d}


@dataclass
class Scoreboard:
    """One model's running metrics."""

    k: int
    window: int = 1000  # judged events per point of the timeline
    overall: Tally = field(default_factory=Tally)
    cold: Tally = field(default_factory=Tally)  # targets with fewer than COLD_START interactions before
    by_type: dict[str, Tally] = field(default_factory=lambda: collections.defaultdict(Tally))
    recommended: set[str] = field(default_factory=set)
    pop_percentile_sum: float = 0.0
    pop_percentile_n: int = 0
    timeline: list[float] = field(default_factory=list)  # Recall@K per window of judged events
    _window_hits: float = 0.0
    _window_n: int = 0

    def judge(self, items: list[str], event: dict[str, Any], popularity: "PopularityPercentiles",
              cold: bool = False) -> None:
        hit, rr, ndcg = rank_metrics(items, event["item_id"], self.k)
        self.overall.add(hit, rr, ndcg)
        if cold:
            self.cold.add(hit, rr, ndcg)
        self.by_type[event["type"]].add(hit, rr, ndcg)
        self._window_hits += hit
        self._window_n += 1
        if self._window_n == self.window:
            self.timeline.append(self._window_hits / self.window)
            self._window_hits, self._window_n = 0.0, 0
        self.recommended.update(items[: self.k])
        for item in items[: self.k]:
            self.pop_percentile_sum += popularity.percentile(item)
            self.pop_percentile_n += 1

    def summary(self, catalog: set[str]) -> dict[str, Any]:
        out = self.overall.summary(self.k)
        out["by_type"] = {t: tally.summary(self.k) for t, tally in sorted(self.by_type.items())}
        out["cold_start"] = self.cold.summary(self.k)
        # items a model knows from elsewhere (an encoder's training data) but this log never shows do not count
        out["coverage"] = len(self.recommended & catalog) / max(len(catalog), 1)
        out["popularity_percentile"] = self.pop_percentile_sum / max(self.pop_percentile_n, 1)
        out["timeline"] = self.timeline
        out["timeline_window"] = self.window
        return out


class PopularityPercentiles:
    """Interaction counts so far, with percentiles refreshed at batch boundaries."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._sorted: list[int] = []

    def learn(self, item_id: str) -> None:
        self.counts[item_id] += 1

    def refresh(self) -> None:
        self._sorted = sorted(self.counts.values())

    def percentile(self, item_id: str) -> float:
        if not self._sorted:
            return 0.0
        return bisect.bisect_right(self._sorted, self.counts.get(item_id, 0)) / len(self._sorted)


# ----------------------------------------------------------------------------------------- models

class Model(Protocol):
    name: str

    def begin_batch(self, events: list[Event], epoch: int) -> None:
        """A round: events of one item epoch (ordering.py), in the order a worker applies them."""

    def learn(self, event: Event) -> list[str]:
        """Learn from one event; return the list to show its user next."""

    def end_batch(self) -> None: ...


class BatchAgnostic:
    def begin_batch(self, events: list[Event], epoch: int) -> None:
        pass

    def end_batch(self) -> None:
        pass


class StreamAppModel:
    """The workers' own core: profiles, the item feed, the recommender, one online ranker per input
    partition (users routed as Kafka's default partitioner routes them) and, if given, the sequence
    encoder, run over each round in one call before its events are processed, as in a worker.
    `record` keeps every recommendation (trigger event id -> (profile version, item ids))."""

    def __init__(self, settings: Settings, name: str = "stream-app", encoder: Encoder | None = None,
                 record: bool = False, content: ContentIndex | None = None):
        self.name = name
        self.settings = settings
        self.encoder = encoder
        self.content = content
        self.index = InMemoryItemIndex(settings)
        self.feed = ItemFeed(settings, self.index)
        self.profiles: dict[str, Profile] = {}
        self.partition_learners: dict[int, PartitionLearners] = {}
        self.encodings: list[UserEncoding] = []
        self.last_encoding: UserEncoding | None = None
        self.epoch = 0
        self.recorded: dict[str, tuple[int, list[str]]] | None = {} if record else None

    def begin_batch(self, events: list[Event], epoch: int) -> None:
        self.epoch = epoch
        self.feed.advance(epoch - 1)
        if self.encoder is None:
            return
        profiles = self.profiles
        self.encodings = encode_batch(
            self.encoder, events, lambda user_id: profiles[user_id].recent if user_id in profiles else [],
            self.settings.encoder_candidates)
        self.encodings.reverse()  # popped in event order

    def learners_for(self, partition: int) -> PartitionLearners | None:
        if not self.settings.ranker:
            return None
        learners = self.partition_learners.get(partition)
        if learners is None:
            learners = self.partition_learners[partition] = core.new_partition_learners(self.settings)
        return learners

    def learn(self, event: Event) -> list[str]:
        profile = self.profiles.get(event.user_id)
        if profile is None:
            profile = self.profiles[event.user_id] = core.new_profile(event.user_id, self.settings)
        self.last_encoding = self.encodings.pop() if self.encoder is not None else None
        partition = partition_of(event.user_id, self.settings.partitions)
        outcome = core.process(profile, event, self.index, self.settings, now_ms=0,
                               learners=self.learners_for(partition), encoding=self.last_encoding,
                               content=self.content)
        self.feed.add(event, partition, self.epoch)  # the feed sees every valid event, as in a worker
        if outcome.recommendation is None:
            return []
        items = [item["item_id"] for item in outcome.recommendation["items"]]
        if self.recorded is not None:
            self.recorded[event.event_id] = (outcome.recommendation["profile_version"], items)
        return items

    def end_batch(self) -> None:
        pass


#: The prior's weight settings; a single-source baseline keeps one of them and zeroes the others.
SOURCE_WEIGHTS = {"co-visitation": "covis_weight", "sequential rules": "rules_weight",
                  "viewed before": "repeat_weight",
                  "category": "category_weight", "trending": "trending_weight", "encoder": "encoder_weight",
                  "content": "content_weight"}


class SingleSource(BatchAgnostic):
    """Baseline: one candidate source of the stream-app model alone, ranked by its own score, on the
    same profiles and item state (no ranker)."""

    def __init__(self, base: StreamAppModel, source: str):
        self.name = f"{source} only"
        self.base = base
        self.settings = base.settings.replace(
            popularity_weight=0.0, **{weight: (getattr(base.settings, weight) if name == source else 0.0)
                                      for name, weight in SOURCE_WEIGHTS.items()})

    def learn(self, event: Event) -> list[str]:  # runs after the base model learned the event
        profile = self.base.profiles[event.user_id]
        return [r["item_id"] for r in recommend(profile, event, self.base.index, self.settings,
                                                encoding=self.base.last_encoding,
                                                content=self.base.content).items if r["score"] > 0]


class ItemJustSeen(BatchAgnostic):
    """Baseline: the one item the user just had. What a log where the next event is mostly on the
    same item (a funnel: browse, click, cart, order) makes easy; the synthetic generator is one."""

    name = "item just seen"

    def learn(self, event: Event) -> list[str]:
        return [event.item_id]


class MostPopular(BatchAgnostic):
    """Baseline: the most interacted-with items so far (refreshed per batch, like the workers)."""

    def __init__(self, k: int, window_events: int | None = None):
        self.name = "popular" if window_events is None else f"popular, last {window_events:,} events"
        self.k = k
        self.window = collections.deque() if window_events else None
        self.window_events = window_events
        self.counts: collections.Counter[str] = collections.Counter()
        self.top: list[str] = []

    def learn(self, event: Event) -> list[str]:
        self.counts[event.item_id] += 1
        if self.window is not None:
            self.window.append(event.item_id)
            if len(self.window) > self.window_events:
                old = self.window.popleft()
                self.counts[old] -= 1
                if not self.counts[old]:
                    del self.counts[old]
        return self.top

    def end_batch(self) -> None:
        self.top = [item for item, _ in self.counts.most_common(self.k)]


class RiverMF(BatchAgnostic):
    """Baseline: River matrix factorisation (FunkMF or BiasedMF) on implicit feedback. Each event is a
    positive (user, item, 1); `negatives` items drawn from the popular candidates are negatives (0).
    The list: the `candidates` most popular items, ranked by the user's factors (refreshed per batch)."""

    def __init__(self, kind: str, k: int, candidates: int = 200, negatives: int = 2, n_factors: int = 16,
                 seed: int = 7):
        from river import optim, reco

        self.name = f"River {kind} only"
        self.k = k
        self.candidates = candidates
        self.negatives = negatives
        self.biased = kind == "BiasedMF"
        if self.biased:
            self.model = reco.BiasedMF(n_factors=n_factors, bias_optimizer=optim.SGD(0.05),
                                       latent_optimizer=optim.SGD(0.05), seed=seed)
        else:
            self.model = reco.FunkMF(n_factors=n_factors, optimizer=optim.SGD(0.05), seed=seed)
        self.rng = np.random.default_rng(seed)
        self.counts: collections.Counter[str] = collections.Counter()
        self.pool: list[str] = []
        self.matrix = np.zeros((0, n_factors))
        self.bias = np.zeros(0)

    def learn(self, event: Event) -> list[str]:
        self.counts[event.item_id] += 1
        self.model.learn_one(event.user_id, event.item_id, 1.0)
        if self.pool:
            for j in self.rng.integers(0, len(self.pool), size=self.negatives):
                if self.pool[j] != event.item_id:
                    self.model.learn_one(event.user_id, self.pool[j], 0.0)
        if not self.pool:
            return []
        scores = self.matrix @ self.model.u_latents[event.user_id] + self.bias
        best = np.argsort(-scores, kind="stable")[: self.k]
        return [self.pool[i] for i in best]

    def end_batch(self) -> None:
        self.pool = [item for item, _ in self.counts.most_common(self.candidates)]
        self.matrix = np.array([self.model.i_latents[item] for item in self.pool])
        self.bias = (np.array([self.model.i_biases[item] for item in self.pool]) if self.biased
                     else np.zeros(len(self.pool)))


# --------------------------------------------------------------------------------------- the pass

def profile_accuracy(profiles: dict[str, Profile], truth: dict[str, Any], k: int = 3) -> dict[str, Any]:
    """NDCG@k of each user's true top-category interests against the profile's long-term interests
    (leaf categories `c<top>.<leaf>` summed into their top category)."""
    scores = {"all": [], "drifted": [], "stable": []}
    for user_id, t in truth["users"].items():
        profile = profiles.get(user_id)
        if profile is None or not profile.interests or profile.last_seen is None:
            continue
        per_top: dict[str, float] = collections.defaultdict(float)
        for leaf, stored in profile.interests.items():
            per_top[leaf.split(".")[0]] += decay.value_at(stored, profile.last_seen, profile.interest_half_life_ms)
        ranked = sorted(per_top, key=per_top.get, reverse=True)
        value = ndcg_graded(t["interests"], ranked, k)
        scores["all"].append(value)
        scores["drifted" if t["drift_at"] is not None else "stable"].append(value)
    return {f"ndcg@{k}_{group}": (sum(v) / len(v) if v else None) for group, v in scores.items()} | {
        "users_drifted": len(scores["drifted"]), "users_stable": len(scores["stable"])}


def evaluate_events(events: Iterable[dict[str, Any]], settings: Settings, k: int = 20,
                    truth: dict[str, Any] | None = None, window: int | None = None,
                    baselines: bool = True, encoder: Encoder | None = None, shadow: Encoder | None = None,
                    judge_from_ts: int | None = None, record: bool = False,
                    content: ContentIndex | None = None, light: bool = False) -> dict[str, Any]:
    """With `encoder`, the stream-app rows run it (as workers with that version live) and a "River
    only" row runs without; `shadow` adds a row for a second version. With `content` (the item
    catalogue's text vectors) the stream-app rows use it and a "no content" row runs without. Only
    events at or after `judge_from_ts` are judged (all are learned): set it to the encoder's training
    cutoff when the log overlaps its training data. `light`: only the stream-app rows, the content and
    sequential-rules sources alone and the sequential-rules baseline (for long logs)."""
    settings = settings.replace(rec_policy="every", top_k=k)  # every event is judged by the next one
    hybrid = StreamAppModel(settings, encoder=encoder, record=record, content=content)
    models: list[Model] = [hybrid]
    if encoder is not None:
        models.append(StreamAppModel(settings, name="stream-app, River only (no encoder)", content=content))
    if content is not None and baselines:
        models.append(StreamAppModel(settings, name="stream-app, no content", encoder=encoder))
    if shadow is not None:
        models.append(StreamAppModel(settings, name=f"stream-app, shadow encoder {shadow.version}", encoder=shadow))
    single_sources = [SingleSource(hybrid, source) for source in SOURCE_WEIGHTS
                      if (source != "encoder" or encoder is not None) and (source != "content" or content is not None)]
    if baselines and light:
        models += [*(s for s in single_sources if s.name in ("content only", "sequential rules only")),
                   SequentialRules(k)]
    elif baselines:
        models += [StreamAppModel(settings.replace(drift_handling=not settings.drift_handling), encoder=encoder,
                                  content=content,
                                  name="stream-app, drift handling " + ("off" if settings.drift_handling else "on")),
                   StreamAppModel(settings.replace(ranker=not settings.ranker), encoder=encoder, content=content,
                                  name="stream-app, ranker " + ("off (prior)" if settings.ranker else "on")),
                   StreamAppModel(settings.replace(bandit=not settings.bandit), encoder=encoder, content=content,
                                  name="stream-app, exploration " + ("off" if settings.bandit else "on (bandit)")),
                   *single_sources,
                   ItemJustSeen(), MostPopular(k), MostPopular(k, window_events=10_000),
                   RiverMF("FunkMF", k), RiverMF("BiasedMF", k),
                   CoVisitationUnseen(k), RecentThenCoVisitation(k), SKNN(k), VSKNN(k), SequentialRules(k)]
    if not isinstance(events, list):
        events = list(events)
    if window is None:
        window = max(20, len(events) // 60)
    boards = {m.name: Scoreboard(k, window) for m in models}
    shown: dict[str, dict[str, list[str]]] = {m.name: {} for m in models}
    popularity = PopularityPercentiles()
    catalog: set[str] = set()
    interactions: collections.Counter[str] = collections.Counter()
    n = 0
    started = time.perf_counter()
    for epoch, released in rounds(events, settings, partition_of):
        batch_events = [r.item for r in released]
        parsed = [Event.from_dict(raw) for raw in batch_events]
        for model in models:
            model.begin_batch(parsed, epoch)
        for raw, event in zip(batch_events, parsed):
            if judge_from_ts is None or event.ts >= judge_from_ts:
                cold = interactions[event.item_id] < COLD_START
                for model in models:
                    previous = shown[model.name].get(event.user_id)
                    if previous is not None:
                        boards[model.name].judge(previous, raw, popularity, cold)
            interactions[event.item_id] += 1
            for model in models:
                shown[model.name][event.user_id] = model.learn(event)
            popularity.learn(event.item_id)
            catalog.add(event.item_id)
            n += 1
            if n % settings.batch_max == 0:
                popularity.refresh()
        for model in models:
            model.end_batch()
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "events": n, "users": len(hybrid.profiles), "items": len(catalog), "k": k,
        "batch": settings.batch_max, "seconds": seconds, "events_per_s": n / seconds if seconds else None,
        "judged_from_ts": judge_from_ts, "encoder": encoder.manifest if encoder is not None else None,
        "shadow_encoder": shadow.manifest if shadow is not None else None,
        "content": {"version": content.version, "items": len(content), "terms": len(content.terms)}
        if content is not None else None,
        "models": {name: board.summary(catalog) for name, board in boards.items()},
    }
    if record:
        result["recorded"] = hybrid.recorded
        result["profiles"] = hybrid.profiles
    if truth is not None:
        result["profile_accuracy"] = {model.name: profile_accuracy(model.profiles, truth)
                                      for model in models if isinstance(model, StreamAppModel)}
    return result


def evaluate_log(path: str | Path, fmt: str, settings: Settings, k: int = 20,
                 truth_path: str | Path | None = None, encoder: Encoder | None = None,
                 shadow: Encoder | None = None, limit: int | None = None, content: ContentIndex | None = None,
                 light: bool = False) -> dict[str, Any]:
    events, rejected = load_sorted(path, fmt)
    events, out_of_range = in_time_window(events, settings)
    if limit is not None:
        events = events[:limit]  # the log's first events in time
    truth = orjson.loads(Path(truth_path).read_bytes()) if truth_path else None
    judge_from = None
    for model in (encoder, shadow):
        if model is not None and events:
            cutoff = model.manifest["training"]["train_until_ts"]
            if model.manifest["training"]["first_ts"] <= events[-1]["ts"] and cutoff > events[0]["ts"]:
                judge_from = max(judge_from or cutoff, cutoff)  # never judge on what a model trained on
    result = evaluate_events(events, settings, k, truth, encoder=encoder, shadow=shadow, judge_from_ts=judge_from,
                             content=content, light=light)
    result["log"] = str(path)
    result["rejected_lines"] = len(rejected)
    result["timestamp_out_of_range"] = out_of_range
    return result


def table(result: dict[str, Any]) -> str:
    k = result["k"]
    types = sorted({t for m in result["models"].values() for t in m["by_type"]})
    width = max(32, *(len(name) for name in result["models"]))
    head = f"{'model':<{width}} {'Recall@' + str(k):>9} {'MRR@' + str(k):>8} {'NDCG@' + str(k):>8} " + \
        " ".join(f"{'R@' + str(k) + ' ' + t:>12}" for t in types) + f" {'R@' + str(k) + ' cold':>11}" + \
        f" {'coverage':>9} {'pop.pct':>8}"
    lines = [f"{result['events']:,} events, {result['users']:,} users, {result['items']:,} items; "
             f"batches of {result['batch']}; {result['events_per_s']:,.0f} events/s for all models together"]
    for role in ("encoder", "shadow_encoder"):
        manifest = result.get(role)
        if manifest:
            lines.append(f"{role.replace('_', ' ')}: {manifest['version']} (validation Recall@20 "
                         f"{manifest['validation']['recall@20']:.4f}, trained on events before ts "
                         f"{manifest['training']['train_until_ts']})")
    if result.get("content"):
        content = result["content"]
        lines.append(f"content model: {content['version']} over {content['items']:,} catalogue items "
                     f"({content['terms']:,} terms for interests in words)")
    cold_judged = next(iter(result["models"].values()))["cold_start"]["judged"] if result["models"] else 0
    lines.append(f"cold: {cold_judged:,} judged events whose item had fewer than {COLD_START} interactions before")
    if result.get("judged_from_ts") is not None:
        lines.append(f"judged: events from ts {result['judged_from_ts']} on (the encoder trained on the earlier "
                     f"part of this log; every model still learns from all of it)")
    lines += [head, "-" * len(head)]
    for name, m in result["models"].items():
        per_type = " ".join(f"{m['by_type'].get(t, {}).get(f'recall@{k}', 0.0):>12.4f}" for t in types)
        lines.append(f"{name:<{width}} {m[f'recall@{k}']:>9.4f} {m[f'mrr@{k}']:>8.4f} {m[f'ndcg@{k}']:>8.4f} "
                     f"{per_type} {m['cold_start'][f'recall@{k}']:>11.4f} "
                     f"{m['coverage']:>9.3f} {m['popularity_percentile']:>8.3f}")
    accuracies = result.get("profile_accuracy")
    if accuracies:
        lines.append("")
        lines.append("profile accuracy (NDCG@3 of true top-category interests):")
        for name, accuracy in accuracies.items():
            lines.append(f"  {name:<{width + 2}}" + ", ".join(
                f"{key.split('_', 1)[1]} {value:.3f}" for key, value in accuracy.items()
                if key.startswith("ndcg") and value is not None)
                + f" ({accuracy['users_drifted']} drifted, {accuracy['users_stable']} stable users)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- through the workers

def score_published(events: list[dict[str, Any]], published: dict[str, list[str]], k: int,
                    batch: int) -> dict[str, Any]:
    """Metrics of published recommendations (trigger_event_id -> items), judged like the in-process
    pass: each event by the list published after its user's previous event."""
    board = Scoreboard(k)
    popularity = PopularityPercentiles()
    previous: dict[str, str] = {}
    catalog: set[str] = set()
    interactions: collections.Counter[str] = collections.Counter()
    missing = 0
    for i, event in enumerate(events, 1):
        before = previous.get(event["user_id"])
        if before is not None:
            items = published.get(before)
            if items is None:
                missing += 1
                items = []
            board.judge(items, event, popularity, interactions[event["item_id"]] < COLD_START)
        interactions[event["item_id"]] += 1
        previous[event["user_id"]] = event["event_id"]
        popularity.learn(event["item_id"])
        catalog.add(event["item_id"])
        if i % batch == 0:
            popularity.refresh()
    result = board.summary(catalog)
    result["missing_recommendations"] = missing
    return result


def evaluate_via_kafka(path: str | Path, fmt: str, k: int = 20, rate: float | None = None, workers: int = 1,
                       timeout: float = 900.0, max_idle_ms: int = 2000, busy: bool = False,
                       limit: int | None = None, items: tuple[str | Path, str] | None = None,
                       content: ContentIndex | None = None, registry_dir: str | None = None) -> dict[str, Any]:
    """Replay the log at `rate` events/s (None: as fast as possible) through `workers` real workers,
    read the recommendations topic as a downstream service would, score it, and set it beside the
    in-process pass over the same log with the same settings. The workers order the input by event
    time and define item state by event time (ordering.py), so the two agree event for event: the
    result counts the recommendations whose profile version or list differ (the goal is none).
    `max_idle_ms`: how long a worker waits for an input topic that has nothing new; it covers the
    replay producer's stalls between topics. `busy`: run a CPU-bound process beside the workers.
    `items` (a catalogue file and its format) and `content` (its index under a content model of
    `registry_dir`): the catalogue is loaded to the items topic and the model announced before the
    workers start, and the in-process pass uses the same index."""
    from .consume import TopicReader, wait_committed
    from .processes import busy_process, one_off_run, wait_ready_workers
    from .replay import produce_events

    events, _ = load_sorted(path, fmt)
    with one_off_run("evaluate") as run:
        settings = run.settings.replace(rec_policy="every", top_k=k, max_idle_ms=max_idle_ms,
                                        **({"registry_dir": str(Path(registry_dir).resolve())} if registry_dir else {}))
        run.settings = settings
        events, _ = in_time_window(events, settings)  # the workers dead-letter the others
        if limit is not None:
            events = events[:limit]
        if items is not None and content is not None:
            from .catalogue import load_items
            from .model_control import publish

            load_items(settings, *items)
            publish(settings, "content", content.version)
        started_workers = [run.start_worker(loglevel="warn") for _ in range(workers)]
        wait_ready_workers(settings, started_workers, timeout)
        with busy_process(busy):
            started = time.perf_counter()
            marks = produce_events(settings, events, rate).marks
            try:
                wait_committed(settings, marks, timeout)
            except ServiceTimeout as exc:
                raise ServiceTimeout(f"{exc}: a long log or a slow machine needs more time, "
                                     f"raise --timeout (now {timeout:.0f} s)") from exc
            seconds = time.perf_counter() - started
        with TopicReader(settings.require_kafka(), settings.topics.recommendations) as reader:
            reader.read_until(len(events), timeout)
            published: dict[str, list[str]] = {}
            versions: dict[str, int] = {}
            repeated = 0
            for record in reader.records:
                rec = orjson.loads(record.value)
                repeated += rec["trigger_event_id"] in published
                published[rec["trigger_event_id"]] = [item["item_id"] for item in rec["items"]]
                versions[rec["trigger_event_id"]] = rec["profile_version"]
        ordering = worker_ordering_counters(settings, len(started_workers), int(time.time() * 1000))
    via_kafka = score_published(events, published, k, settings.batch_max)
    via_kafka["events_per_s"] = len(events) / seconds
    in_process_run = evaluate_events(events, settings, k, baselines=False, record=True, content=content)
    in_process = in_process_run["models"]["stream-app"]
    recorded = in_process_run["recorded"]
    differ_lists = sum(1 for event_id, (_, items) in recorded.items() if published.get(event_id) != items)
    differ_versions = sum(1 for event_id, (version, _) in recorded.items() if versions.get(event_id) != version)
    keys = [f"recall@{k}", f"mrr@{k}", f"ndcg@{k}"]
    if content is not None:  # Recall@k on cold targets, the figure content is for
        for scored in (via_kafka, in_process):
            scored[f"cold@{k}"] = scored["cold_start"][f"recall@{k}"]
        keys.append(f"cold@{k}")
    return {"log": str(path), "events": len(events), "k": k, "rate": rate, "workers": workers, "busy": busy,
            "content": content.version if content is not None else None,
            "max_idle_ms": max_idle_ms, "via_kafka": via_kafka, "in_process": in_process,
            "recommendations_in_process": len(recorded), "recommendations_published": len(published),
            "repeated_recommendations": repeated, "lists_differ": differ_lists, "versions_differ": differ_versions,
            "ordering": ordering,
            "abs_difference": {key: abs(via_kafka[key] - in_process[key]) for key in keys}}


def worker_ordering_counters(settings: Settings, workers: int, after_ms: int, timeout_s: float = 20.0
                             ) -> dict[str, int]:
    """Late events, summed over the run's workers: their first statuses published after `after_ms`."""
    import redis

    from .redis_store import worker_statuses

    client = redis.Redis.from_url(settings.require_redis())
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            statuses = [s for s in worker_statuses(client, settings.namespace)
                        if s["app_id"] == settings.app_id and s["updated_at"] >= after_ms]
            if len(statuses) >= workers or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        client.close()
    out = {"late_for_user": 0, "late_in_partition": 0, "late_for_item_state": 0, "unscheduled": 0,
           "stale_item_state": 0}
    for status in statuses:
        out["late_for_user"] += status["counters"].get("late", 0)
        for key in ("late_in_partition", "late_for_item_state", "unscheduled", "stale_item_state"):
            out[key] += status.get("ordering", {}).get(key, 0)
    return out


def via_kafka_table(result: dict[str, Any]) -> str:
    keys = list(result["abs_difference"])
    rate = "full speed" if not result["rate"] else f"{result['rate']:,.0f} events/s"
    lines = [f"{result['events']:,} events of {result['log']} replayed at {rate} "
             f"({result['via_kafka']['events_per_s']:,.0f} events/s end to end) through {result['workers']} "
             f"worker(s){' beside a CPU-bound process' if result['busy'] else ''}, read back from the "
             f"recommendations topic; in process: the same core and settings",
             f"{'':<12}" + "".join(f"{key:>11}" for key in keys)]
    for name in ("via_kafka", "in_process"):
        lines.append(f"{name.replace('_', '-'):<12}" + "".join(f"{result[name][key]:>11.4f}" for key in keys))
    lines.append(f"{'|difference|':<12}" + "".join(f"{result['abs_difference'][key]:>11.4f}" for key in keys))
    lines.append(f"recommendations: {result['recommendations_published']:,} published, "
                 f"{result['recommendations_in_process']:,} in process; lists that differ: {result['lists_differ']:,}; "
                 f"profile versions that differ: {result['versions_differ']:,}; "
                 f"published twice: {result['repeated_recommendations']:,}")
    ordering = result["ordering"]
    lines.append(f"late events (workers): {ordering['late_for_user']:,} older than their user's last event, "
                 f"{ordering['late_in_partition']:,} older than their partition's clock, "
                 f"{ordering['late_for_item_state']:,} after their item epoch was applied, "
                 f"{ordering['unscheduled']:,} outside the schedule, {ordering['stale_item_state']:,} with an item "
                 f"state past their epoch (a partition taken over from a worker that was behind)")
    missing = result["via_kafka"]["missing_recommendations"]
    if missing:
        lines.append(f"{missing} judged events had no published recommendation before them")
    return "\n".join(lines)
