"""Scoring a stream of recommendations: rank metrics, the scoreboard of one model (overall, per event
type, cold targets, coverage, popularity bias) and profile accuracy against a ground truth."""

from __future__ import annotations

import bisect
import collections
import math
from dataclasses import dataclass, field
from typing import Any

from ..core import decay
from ..core.profile import Profile

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
        if popularity.ready:  # before the first snapshot there is no percentile to speak of (it read 0)
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
    """Interaction counts, and percentiles of the snapshot taken after each round (`refresh`): an item's place among
    the counts of that snapshot, its own count read from the same snapshot (a live count beside snapshot counts put
    an item just bought many times above where any snapshot had it)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._sorted: list[int] = []
        self._at_snapshot: dict[str, int] = {}  # the snapshot's count of each item counted since
        self._percentiles: dict[str, float] = {}  # of this snapshot, as asked (every model's every list asks)

    @property
    def ready(self) -> bool:
        """Whether a snapshot with any count was taken."""
        return bool(self._sorted)

    def learn(self, item_id: str) -> None:
        self._at_snapshot.setdefault(item_id, self.counts[item_id])
        self.counts[item_id] += 1

    def refresh(self) -> None:
        """The counts now: each item counted since moves from its snapshot count to its count (sorting every count
        after each round took longer than the baselines' work on a long log)."""
        ordered = self._sorted
        for item_id, before in self._at_snapshot.items():
            if before:
                del ordered[bisect.bisect_left(ordered, before)]
            bisect.insort(ordered, self.counts[item_id])
        self._at_snapshot.clear()
        self._percentiles.clear()

    def percentile(self, item_id: str) -> float:
        found = self._percentiles.get(item_id)
        if found is None:
            count = self._at_snapshot.get(item_id, self.counts.get(item_id, 0))
            found = self._percentiles[item_id] = bisect.bisect_right(self._sorted, count) / len(self._sorted)
        return found




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
        "users_drifted": len(scores["drifted"]), "users_stable": len(scores["stable"]),
        "users_in_truth": len(truth["users"])}


def truth_unmatched(accuracy: dict[str, Any]) -> str | None:
    """What to say when no user of the ground truth was judged (a 0-of-0 accuracy reads as a result), else None."""
    if accuracy["users_drifted"] + accuracy["users_stable"]:
        return None
    return (f"none of the ground truth's {accuracy.get('users_in_truth', 0):,} users has a profile from this log: "
            "is --truth the <log>.truth.json of another log?")
