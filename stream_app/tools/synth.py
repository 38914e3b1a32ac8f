"""`stream-app synth`: a synthetic event log with ground truth, streamed in timestamp order.

The world: a two-level category tree (top categories with leaf subcategories); items belong to a
leaf, are Zipf-popular within it and some appear only later; each leaf has a complementary leaf
(shoes -> socks) that sessions wander into. Users arrive over time with sparse latent interests
over top categories (and leaves within them); a share of them drift to new interests at a random
moment. A session picks a leaf from the user's interests and runs a funnel: browse items, click
some, put some in the cart, order a few.

Beside the log (`events.jsonl`, input events) it writes the ground truth (`<log>.truth.json`): each
user's true interest weights over top categories, before and after a drift, and when it drifted.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, TextIO

import numpy as np
import orjson

from ..errors import StreamAppError

DAY_MS = 24 * 3600 * 1000
#: A session's steps: 1 + Poisson(STEPS_MEAN). A step's funnel: a browse, then a click with CLICK_P, then a cart
#: with CART_P, then an order with ORDER_P (evaluate/ceiling.py reads the same numbers).
STEPS_MEAN = 4
CLICK_P, CART_P, ORDER_P = 0.45, 0.2, 0.4


@dataclass(frozen=True)
class SynthConfig:
    events: int = 100_000
    seed: int = 7
    top_categories: int = 8
    leaves_per_top: int = 6
    days: int = 28
    start_ms: int = 1_700_000_000_000
    drift_share: float = 0.25  # users whose interests change once
    late_item_share: float = 0.2  # items that appear after the start
    late_user_share: float = 0.5  # users who arrive after the start
    zipf: float = 1.1  # popularity skew of items within a leaf
    complement_prob: float = 0.25  # a session step wanders to the complementary leaf
    interest_concentration: float = 0.3  # Dirichlet alpha over top categories: small = focused users
    # A user never interacts twice with one item: a step that would pick an item the user already had
    # picks among the leaf's other items (same popularity weights; skipped if none is left), and an
    # item's funnel is one event, of the deepest stage it reached (browse, click, cart or order).
    no_repeat: bool = False

    @property
    def users(self) -> int:
        return max(50, self.events // 60)

    @property
    def items(self) -> int:
        return max(200, self.events // 25)


@dataclass
class _User:
    user_id: str
    arrives: int
    interests: np.ndarray  # over top categories
    leaf_prefs: np.ndarray  # top x leaves_per_top
    drift_at: int | None
    after: np.ndarray | None = None
    sessions: int = 0
    starts: list[int] = field(default_factory=list)  # each generated session's start, by its number
    seen: set[int] = field(default_factory=set)  # items interacted with (kept only with no_repeat)


@dataclass
class World:
    config: SynthConfig
    rng: np.random.Generator
    item_leaf: np.ndarray = field(init=False)
    item_born: np.ndarray = field(init=False)
    leaf_items: list[np.ndarray] = field(init=False)
    leaf_weights: list[np.ndarray] = field(init=False)
    complement: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        c, rng = self.config, self.rng
        leaves = c.top_categories * c.leaves_per_top
        self.item_leaf = rng.integers(0, leaves, size=c.items)
        horizon = c.days * DAY_MS
        late = rng.random(c.items) < c.late_item_share
        self.item_born = np.where(late, c.start_ms + rng.integers(0, int(horizon * 0.8), size=c.items), c.start_ms)
        self.leaf_items, self.leaf_weights = [], []
        for leaf in range(leaves):
            members = np.flatnonzero(self.item_leaf == leaf)
            rng.shuffle(members)
            self.leaf_items.append(members)
            self.leaf_weights.append(1.0 / np.arange(1, len(members) + 1) ** c.zipf)
        self.complement = rng.permutation(leaves)

    def leaf_name(self, leaf: int) -> str:
        per = self.config.leaves_per_top
        return f"c{leaf // per}.{leaf % per}"

    def pick_item(self, leaf: int, ts: int, exclude: set[int] | None = None) -> int | None:
        """An item of the leaf born by `ts`, by popularity; none of `exclude` if given."""
        members = self.leaf_items[leaf]
        if len(members) == 0:
            return None
        weights = np.where(self.item_born[members] <= ts, self.leaf_weights[leaf], 0.0)
        if exclude:
            taken = np.fromiter((int(m) in exclude for m in members), dtype=bool, count=len(members))
            weights = np.where(taken, 0.0, weights)
        total = weights.sum()
        if total <= 0:
            return None
        return int(members[self.rng.choice(len(members), p=weights / total)])


def _interests(rng: np.random.Generator, c: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    top = rng.dirichlet([c.interest_concentration] * c.top_categories)
    leaves = rng.dirichlet([0.5] * c.leaves_per_top, size=c.top_categories)
    return top, leaves


def generate(config: SynthConfig) -> tuple[Iterator[dict[str, Any]], dict[str, _User]]:
    """Events in timestamp order (lazily), and the users (complete once the iterator is exhausted)."""
    rng = np.random.default_rng(config.seed)
    world = World(config, rng)
    horizon = config.days * DAY_MS
    users: dict[str, _User] = {}
    for u in range(config.users):
        late = rng.random() < config.late_user_share
        arrives = config.start_ms + (int(rng.integers(0, int(horizon * 0.8))) if late else 0)
        top, leaves = _interests(rng, config)
        drift_at = None
        if rng.random() < config.drift_share:
            drift_at = int(rng.integers(arrives, config.start_ms + horizon)) if arrives < config.start_ms + horizon else None
        user = _User(f"s{u}", arrives, top, leaves, drift_at)
        if drift_at is not None:
            user.after = _interests(rng, config)[0]
        users[user.user_id] = user

    def events() -> Iterator[dict[str, Any]]:
        sessions: list[tuple[int, str]] = []  # (start ts, user)
        for user in users.values():
            heapq.heappush(sessions, (user.arrives + int(rng.exponential(DAY_MS / 2)), user.user_id))
        pending: list[tuple[int, int, dict[str, Any]]] = []
        seq = 0
        emitted = 0
        end = config.start_ms + horizon
        while emitted < config.events and (sessions or pending):
            next_start = sessions[0][0] if sessions else None
            while pending and (next_start is None or pending[0][0] <= next_start):
                _, _, event = heapq.heappop(pending)
                yield event
                emitted += 1
                if emitted >= config.events:
                    return
            if not sessions:
                continue
            start, user_id = heapq.heappop(sessions)
            if start >= end:
                continue
            user = users[user_id]
            for event in _session(world, user, start, rng):
                seq += 1
                heapq.heappush(pending, (event["ts"], seq, event))
            user.starts.append(start)
            user.sessions += 1
            gap = rng.exponential(DAY_MS * config.days / 12)
            heapq.heappush(sessions, (start + int(gap) + 60_000, user_id))

    return events(), users


def _session(world: World, user: _User, start: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    c = world.config
    interests = user.after if user.drift_at is not None and start >= user.drift_at else user.interests
    top = int(rng.choice(c.top_categories, p=interests))
    leaf = top * c.leaves_per_top + int(rng.choice(c.leaves_per_top, p=user.leaf_prefs[top]))
    ts = start
    out: list[dict[str, Any]] = []
    n = 0

    def emit(item: int, kind: str, stage: str | None = None) -> None:
        nonlocal ts, n
        event = {"event_id": f"{user.user_id}-{user.sessions}-{n}", "user_id": user.user_id,
                 "item_id": f"i{item}", "type": kind, "ts": ts, "session_id": f"{user.user_id}-{user.sessions}",
                 "category": world.leaf_name(int(world.item_leaf[item])), "schema_version": 1}
        if stage:
            event["stage"] = stage
        if kind == "browse":
            event["dwell_ms"] = int(rng.exponential(15_000))
        out.append(event)
        n += 1
        ts += int(rng.exponential(40_000)) + 1000

    for _ in range(1 + int(rng.poisson(STEPS_MEAN))):
        step_leaf = int(world.complement[leaf]) if rng.random() < c.complement_prob else leaf
        item = world.pick_item(step_leaf, ts, user.seen if c.no_repeat else None)
        if item is None:
            continue
        if c.no_repeat:  # the same funnel draws, one event of the deepest stage reached
            user.seen.add(item)
            kind, stage = "browse", None
            if rng.random() < CLICK_P:
                kind = "click"
                if rng.random() < CART_P:
                    kind, stage = "purchase", "cart"
                    if rng.random() < ORDER_P:
                        stage = "order"
            emit(item, kind, stage)
            continue
        emit(item, "browse")
        if rng.random() < CLICK_P:
            emit(item, "click")
            if rng.random() < CART_P:
                emit(item, "purchase", "cart")
                if rng.random() < ORDER_P:
                    emit(item, "purchase", "order")
    return out


def truth_path(log: str | Path) -> Path:
    log = Path(log)
    return log.with_name(log.name + ".truth.json")


def write(config: SynthConfig, out: str | Path, progress: TextIO | None = None) -> dict[str, Any]:
    """Write the log and its ground truth; return a summary."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        open(out, "ab").close()  # can it be written, before the work
    except OSError as exc:
        raise StreamAppError(f"cannot write {out} ({exc.strerror or exc}): give a file path in a folder you "
                             "can write, e.g. /tmp/synth/events.jsonl") from None
    events, users = generate(config)
    counts: dict[str, int] = {}
    n = 0
    # each user's last session in the log: sessions are generated ahead of the events written, so the last ones
    # generated may be cut off by --events (a user whose only session was is not in the log nor in the truth)
    last_session: dict[str, int] = {}
    with open(out, "wb") as fh:
        for event in events:
            fh.write(orjson.dumps(event) + b"\n")
            number = int(event["session_id"].rsplit("-", 1)[1])
            last_session[event["user_id"]] = max(number, last_session.get(event["user_id"], number))
            counts[event["type"]] = counts.get(event["type"], 0) + 1
            n += 1
            if progress is not None and n % 100_000 == 0:
                progress.write(f"synth: {n} events\n")
    top_names = [f"c{t}" for t in range(config.top_categories)]
    settings = dict(config.__dict__)
    if not config.no_repeat:
        del settings["no_repeat"]  # the default ground truth stays as it was before the option existed
    truth = {
        "config": settings,
        "users": {
            u.user_id: {
                "arrives": u.arrives,
                # what drove the user's last session: the interests an up-to-date profile should show
                "interests": dict(zip(top_names, map(float, u.after if drifted else u.interests))),
                "interests_before_drift": dict(zip(top_names, map(float, u.interests))) if drifted else None,
                "drift_at": u.drift_at if drifted else None,
            }
            for u in users.values() if u.user_id in last_session
            for drifted in [u.drift_at is not None and u.after is not None
                            and u.starts[last_session[u.user_id]] >= u.drift_at]
        },
    }
    truth_path(out).write_bytes(orjson.dumps(truth))
    return {"events": n, "by_type": counts, "users": len(truth["users"]), "items": config.items,
            "log": str(out), "truth": str(truth_path(out))}
