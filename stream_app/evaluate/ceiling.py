"""The ceiling of a synthetic log: the list its own generator would rank, knowing every one of its parameters.

`stream-app synth` writes its settings into the ground truth, and the same settings draw the same world (the
category tree, each leaf's complement, the items' popularity and birth) and the same users (their interests, leaf
preferences and drift). From them this row ranks every item by its probability of being the user's next event:
the funnel on the item just seen (a click after a browse, and so on); else another step of the session, in the
session's leaf or its complement, the leaf weighed by the user's preferences and the session's steps so far;
or, as the session's step count makes its end likely, a new session from the user's interests. No model that
learns from the log can expect to beat it: it is printed beside the table, not ranked among the rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.events import Event
from ..tools.synth import CART_P, CLICK_P, ORDER_P, STEPS_MEAN, SynthConfig, World, generate

NAME = "the generator itself, knowing its parameters"
#: Above this many events the ceiling is not worked out: it draws the log again and ranks every item at each event.
MAX_EVENTS = 2_000_000
_OTHER_LOG = ("the log is not the one its ground truth's settings draw (another log, or one another release of "
              "`stream-app synth` wrote): give the <log>.truth.json written beside this log, or leave --truth out")
_FUNNEL = {("browse", None): CLICK_P, ("click", None): CART_P, ("purchase", "cart"): ORDER_P}


def session_end_chance(steps: int) -> float:
    """P(a session of 1 + Poisson(STEPS_MEAN) steps ends after step `steps` | it had `steps`)."""
    pmf = [math.exp(-STEPS_MEAN) * STEPS_MEAN ** j / math.factorial(j) for j in range(steps)]
    tail = 1.0 - sum(pmf[:-1])
    return min(1.0, pmf[-1] / tail) if tail > 1e-12 else 1.0


class GeneratorCeiling:
    """The generator's next-event probabilities as a list of `k`, for a log `stream-app synth` wrote with `config`
    (the truth's "config"). `fits` turns False once an event is not the one those settings draw (another log, or
    one another release's generator wrote): the row then means nothing and is left out, `reason` saying why.

    >>> config = SynthConfig(events=300, seed=3)
    >>> events, _users = generate(config)
    >>> ceiling = GeneratorCeiling(config, k=5)
    >>> lists = [ceiling.learn(Event.from_dict(raw)) for raw in events]
    >>> ceiling.fits, all(len(items) == 5 for items in lists)
    (True, True)
    """

    name = NAME

    def __init__(self, config: SynthConfig, k: int):
        self.config, self.k = config, k
        self.world = World(config, np.random.default_rng(config.seed))  # generate() draws its world first, the same
        events, self.users = generate(config)
        self.drawn = {raw["event_id"]: (raw["item_id"], raw["ts"]) for raw in events}
        self.fits, self.reason = True, ""
        leaves = config.top_categories * config.leaves_per_top
        self.leaf_of_item = self.world.item_leaf
        self.from_leaf = np.empty(leaves, dtype=np.intp)  # the leaf whose complement each leaf is
        self.from_leaf[self.world.complement] = np.arange(leaves)
        self.zipf = np.zeros(config.items)
        for leaf, members in enumerate(self.world.leaf_items):
            self.zipf[members] = self.world.leaf_weights[leaf]
        self.births = np.unique(self.world.item_born)
        self.within_leaf, self.born_weights = np.zeros(config.items), np.zeros(config.items)
        self.born_through = -1  # within_leaf holds the items born by births[born_through]
        self.sessions: dict[str, tuple[str | None, int, np.ndarray, int]] = {}  # user -> id, start, likelihood, steps
        self.had: dict[str, set[int]] = {}

    def begin_batch(self, events: list[Event], epoch: int) -> None:
        pass

    def end_batch(self) -> None:
        pass

    def learn(self, event: Event) -> list[str]:
        if self.drawn.get(event.event_id) != (event.item_id, event.ts):
            self.fits, self.reason = False, _OTHER_LOG
        if not self.fits:
            return []
        scores = self.chances(event)
        k = min(self.k, len(scores))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.lexsort((best, -scores[best]))]
        return [f"i{i}" for i in best.tolist() if scores[i] > 0]  # not an item the user had (no repeats), nor unborn

    def chances(self, event: Event) -> np.ndarray:
        """Per item (by its number): the generator's chance that the user's next event, after `event`, is on it
        (-1: an item the user had, with no repeats). Past the user's last session they sum to 1, short of it by the
        steps the generator skips (a leaf with no item born, or none the user has not had)."""
        config, item = self.config, int(event.item_id[1:])
        leaf = int(self.leaf_of_item[item])
        session_id, start, likelihood, steps = self.sessions.get(event.user_id, (None, event.ts, None, 0))
        if session_id != event.session_id or likelihood is None:
            start, likelihood, steps = event.ts, np.ones(len(self.from_leaf)), 0
        if config.no_repeat or event.type == "browse":  # a step begins with a browse (one event with no repeats)
            steps += 1
            leaves = np.arange(len(self.from_leaf))
            likelihood = likelihood * ((leaves == leaf) * (1 - config.complement_prob)
                                       + (self.world.complement == leaf) * config.complement_prob)
        self.sessions[event.user_id] = (event.session_id, start, likelihood, steps)
        had = self.had.setdefault(event.user_id, set())
        had.add(item)
        user = self.users[event.user_id]
        interests = user.after if user.drift_at is not None and start >= user.drift_at else user.interests
        prior = (interests[:, None] * user.leaf_prefs).ravel()  # P(a new session's leaf)
        posterior = prior * likelihood
        posterior = posterior / posterior.sum() if posterior.sum() > 0 else prior
        excluded = list(had) if config.no_repeat else None  # the generator draws none of them again
        within = self._within_leaf(event.ts, excluded)
        end = session_end_chance(steps) if steps else 1.0
        scores = within * ((1 - end) * self._leaf_mix(posterior) + end * self._leaf_mix(prior))
        funnel = 0.0 if config.no_repeat else _FUNNEL.get((event.type, event.stage), 0.0)
        scores *= 1 - funnel
        scores[item] += funnel
        if excluded:
            scores[excluded] = -1.0
        return scores

    def _leaf_mix(self, leaf_chance: np.ndarray) -> np.ndarray:
        """Per item: P(a step is in its leaf), the step's leaf being the session's (chance `leaf_chance`) or its
        complement."""
        p = self.config.complement_prob
        return (1 - p) * leaf_chance[self.leaf_of_item] + p * leaf_chance[self.from_leaf[self.leaf_of_item]]

    def _within_leaf(self, ts: int, had: list[int] | None) -> np.ndarray:
        """Per item: P(a step in its leaf picks it), among the leaf's items born by `ts` and, with no repeats, not
        in `had` (the generator draws among the others)."""
        through = int(np.searchsorted(self.births, ts, side="right")) - 1
        if through != self.born_through:
            self.born_weights = np.where(self.world.item_born <= ts, self.zipf, 0.0)
            self.within_leaf = self._shares(self.born_weights)
            self.born_through = through
        if not had:
            return self.within_leaf
        weights = self.born_weights.copy()
        weights[had] = 0.0
        return self._shares(weights)

    def _shares(self, weights: np.ndarray) -> np.ndarray:
        totals = np.bincount(self.leaf_of_item, weights=weights, minlength=len(self.from_leaf))
        return weights / np.where(totals > 0, totals, 1.0)[self.leaf_of_item]


class CeilingLeftOut:
    """The ceiling of a ground truth whose settings cannot draw the log: no list, and why (`reason`)."""

    name = NAME
    fits = False

    def __init__(self, reason: str):
        self.reason = reason

    def begin_batch(self, events: list[Event], epoch: int) -> None:
        pass

    def learn(self, event: Event) -> list[str]:
        return []

    def end_batch(self) -> None:
        pass


def ceiling_for(truth: dict[str, Any] | None, k: int) -> GeneratorCeiling | CeilingLeftOut | None:
    """The ceiling row of a synthetic log's truth (None: no truth, or one without the generator's settings)."""
    settings = (truth or {}).get("config")
    if not isinstance(settings, dict):
        return None
    try:
        config = SynthConfig(**settings)
        if config.events > MAX_EVENTS:
            return CeilingLeftOut(f"the generator drew {config.events:,} events, above {MAX_EVENTS:,}: the ceiling "
                                  "draws the log again and ranks every item at each event, hours at that size")
        return GeneratorCeiling(config, k)
    except (TypeError, ValueError) as exc:  # settings of another release's generator, or edited
        return CeilingLeftOut(f"the ground truth's settings are not this release's `stream-app synth`'s ({exc}): "
                              "write the log and its truth again with this release, or leave --truth out")
