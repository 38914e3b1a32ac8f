"""Read-only migration of learner state written by releases up to 0.1.0 (8c798f3), which pickled it (base64),
into today's versioned data (state.py). The one module of the service that imports pickle.

Nothing a legacy record names is imported or run: `DataUnpickler` turns every object in it into a
`Pickled` (the name of its class, the arguments it was made with, its state and items) and refuses any
name that learner state was never made of (`os.system`, `eval`, ...). `migrate` then reads the numbers
out of those records, the way each release laid them out, and builds the state today's learners read,
which `load_state` checks like any other record. So a River upgrade cannot break it either.
"""

from __future__ import annotations

import base64
import io
import pickle
import struct
from typing import Any

from ..events import KINDS
from .state import StateError

#: Where the learners lived (the flat layout, then core/).
_PACKAGES = ("stream_app.learners.", "stream_app.core.learners.")
#: The classes legacy learner state is made of, by module (after the package prefix for the learners').
_LEARNERS = {"behaviour.BehaviourStats", "interest_drift.InterestDrift", "ranker.OnlineRanker",
             "strategy_bandit.StrategyBandit", "partition_state.PartitionLearners"}
_GLOBALS = {
    "river.stats.ewmean.EWMean", "river._river_rust.stats.RsEWMean", "river.stats.mean.Mean",
    "river.drift.page_hinkley.PageHinkley", "river.linear_model.log_reg.LogisticRegression",
    "river.optim.adam.Adam", "river.optim.schedulers.Constant", "river.optim.losses.Log",
    "river.optim.initializers.Zeros", "river._river_rust.vectordict.VectorDict",
    "river.bandit.epsilon_greedy.EpsilonGreedy", "collections.defaultdict", "collections.Counter",
    "random.Random", "builtins.getattr",
}


class Pickled:
    """One object of a legacy pickle as plain data: `name` (its class), `args` (what it was made with),
    `state` (what it was set to) and `items` (what was stored in it)."""

    name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "Pickled":
        obj = super().__new__(cls)
        obj.args, obj.state, obj.items = args, None, {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def __repr__(self) -> str:
        return f"Pickled({self.name})"


_TYPES: dict[str, type[Pickled]] = {}


class DataUnpickler(pickle.Unpickler):
    """Each global a pickle names becomes a `Pickled` subclass of that name; names outside `_GLOBALS` and
    the learners are refused (`pickle.UnpicklingError`). No class or function is looked up."""

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        for package in _PACKAGES:
            if module.startswith(package) and f"{module[len(package):]}.{name}" in _LEARNERS:
                full = f"learners.{module[len(package):]}.{name}"
        if full not in _GLOBALS and not full.startswith("learners."):
            raise pickle.UnpicklingError(f"learner state may not name {module}.{name}")
        found = _TYPES.get(full)
        if found is None:
            found = _TYPES[full] = type("Pickled", (Pickled,), {"name": full})
        return found


def unpickle(text: str) -> Pickled:
    try:
        found = DataUnpickler(io.BytesIO(base64.b64decode(text, validate=True))).load()
    except Exception as exc:  # any malformed input (nothing in it ran): refused, whatever broke
        raise StateError(f"legacy learner state cannot be read: {exc}") from exc
    if not isinstance(found, Pickled):
        raise StateError(f"legacy learner state is a {type(found).__name__}, not a learner")
    return found


def migrate(text: str, where: str = "learner state") -> dict[str, Any]:
    """Today's state record of the learner a legacy record (base64 pickle) holds; `StateError` if it is
    not one, or not laid out as a release laid it out."""
    try:
        found = unpickle(text)
        convert = _LEARNER_STATE.get(found.name)
        if convert is None:
            raise StateError(f"legacy learner state holds a {found.name}, not a learner")
        return convert(found)
    except StateError as exc:
        raise StateError(f"{where}: {exc}") from exc
    except Exception as exc:  # data laid out otherwise than any release wrote it
        raise StateError(f"{where}: legacy learner state not laid out as a release wrote it: {exc!r}") from exc


def _attrs(obj: Any, name: str) -> dict[str, Any]:
    """The attributes a pickled `name` object was restored with."""
    if not isinstance(obj, Pickled) or obj.name != name or not isinstance(obj.state, dict):
        raise StateError(f"legacy learner state: expected a {name}, found {obj!r:.80}")
    return obj.state


def _ewmean(obj: Any) -> float | None:
    """River's EWMean kept its numbers in Rust: mean, alpha, 1 - alpha, started, alpha."""
    rust = _attrs(obj, "river.stats.ewmean.EWMean")["_ewmean"]
    if not isinstance(rust, Pickled) or rust.name != "river._river_rust.stats.RsEWMean":
        raise StateError(f"legacy learner state: expected River's Rust EWMean, found {rust!r:.80}")
    mean, _alpha, _rest, started, _ = struct.unpack("<ddd?d", rust.state)
    return mean if started else None


def _mean(obj: Any) -> dict[str, float]:
    attrs = _attrs(obj, "river.stats.mean.Mean")
    return {"n": attrs["n"], "mean": attrs["_mean"]}


def _vector(obj: Any) -> dict[str, float] | None:
    if obj is None:
        return None
    if not isinstance(obj, Pickled) or not obj.name.endswith(".VectorDict") or not isinstance(obj.args[0], dict):
        raise StateError(f"legacy learner state: expected a River VectorDict, found {obj!r:.80}")
    return obj.args[0]


def _behaviour(obj: Pickled) -> dict[str, Any]:
    attrs = _attrs(obj, "learners.behaviour.BehaviourStats")
    kinds = attrs["kinds"]
    return {"kind": "behaviour", "v": 1, "alpha": attrs["alpha"],
            "session_gap_ms": attrs.get("session_gap_ms", 1_800_000),
            "repeat": _ewmean(attrs["repeat"]), "kinds": {kind: _ewmean(kinds[kind]) for kind in KINDS},
            "dwell_ms": _ewmean(attrs["dwell_ms"]), "session_length": _mean(attrs["session_length"]),
            "sessions": attrs["sessions"], "current_session": attrs["current_session"],
            "current_length": attrs["current_length"], "last_ts": attrs["last_ts"]}


def _interest_drift(obj: Pickled) -> dict[str, Any]:
    attrs = _attrs(obj, "learners.interest_drift.InterestDrift")
    detector = _attrs(attrs["detector"], "river.drift.page_hinkley.PageHinkley")
    low = detector["_min_increase"]
    return {"kind": "interest_drift", "v": 1, "downweight": attrs["downweight"], "threshold": attrs["threshold"],
            "delta": attrs["delta"], "min_sessions": attrs["min_sessions"],
            "session_gap_ms": attrs.get("session_gap_ms", 1_800_000),
            "detector": {"x_mean": _mean(detector["_x_mean"]), "sum_increase": detector["_sum_increase"],
                         "sum_decrease": detector["_sum_decrease"],
                         "min_increase": None if low == float("inf") else low,
                         "max_decrease": float(detector["_max_decrease"]),
                         "drift_detected": detector["_drift_detected"]},
            "drifts": attrs["drifts"], "last_drift_ts": attrs["last_drift_ts"], "session": attrs["session"],
            "last_ts": attrs["last_ts"]}


def _ranker(obj: Any) -> dict[str, Any]:
    attrs = _attrs(obj, "learners.ranker.OnlineRanker")
    model = _attrs(attrs["model"], "river.linear_model.log_reg.LogisticRegression")
    adam = _attrs(model["optimizer"], "river.optim.adam.Adam")
    learning_rate = _attrs(adam["lr"], "river.optim.schedulers.Constant")["learning_rate"]
    # Settings an early release did not keep were its constructor's defaults.
    return {"kind": "ranker", "v": 1, "features": list(attrs["features"]),
            "learning_rate": attrs.get("learning_rate", learning_rate), "negatives": attrs.get("negatives", 4),
            "warm_up": attrs.get("warm_up", 1000), "seed": attrs.get("seed", 7),
            "hit_rate_alpha": attrs.get("hit_rate_alpha", 0.01), "labels": attrs["labels"],
            "positives": attrs["positives"], "ranker_rr": attrs.get("ranker_rr", 0.0),
            "prior_rr": attrs.get("prior_rr", 0.0),
            "model": {"weights": _vector(model["_weights"]), "intercept": model["intercept"],
                      "steps": adam["n_iterations"], "m": _vector(adam["m"]), "v": _vector(adam["v"])}}


def _policy(obj: Any) -> dict[str, Any]:
    attrs = _attrs(obj, "river.bandit.epsilon_greedy.EpsilonGreedy")
    version, words, gauss = _attrs_of_random(attrs["_rng"])
    rewards = attrs["_rewards"]
    if not isinstance(rewards, Pickled) or rewards.name != "collections.defaultdict":
        raise StateError(f"legacy learner state: expected the bandit's rewards, found {rewards!r:.80}")
    counts = attrs["_counts"]
    if not isinstance(counts, Pickled) or counts.name != "collections.Counter":
        raise StateError(f"legacy learner state: expected the bandit's counts, found {counts!r:.80}")
    return {"rng": {"mt": base64.b64encode(struct.pack(f"<{len(words)}I", *words)).decode("ascii"), "gauss": gauss},
            "rewards": {arm: _mean(mean) for arm, mean in rewards.items.items()},
            "counts": dict(counts.args[0]) if counts.args else {}, "n": attrs["_n"]}


def _attrs_of_random(obj: Any) -> tuple[int, tuple[int, ...], float | None]:
    if not isinstance(obj, Pickled) or obj.name != "random.Random" or not isinstance(obj.state, tuple):
        raise StateError(f"legacy learner state: expected a random generator, found {obj!r:.80}")
    return obj.state


def _bandit(obj: Any) -> dict[str, Any]:
    attrs = _attrs(obj, "learners.strategy_bandit.StrategyBandit")
    return {"kind": "strategy_bandit", "v": 1, "epsilon": attrs["epsilon"], "seed": attrs["seed"],
            "strategies": list(attrs["strategies"]),
            "policies": {segment: _policy(policy) for segment, policy in attrs["policies"].items()},
            "pulls": attrs["pulls"]}


def _partition_learners(obj: Pickled) -> dict[str, Any]:
    attrs = _attrs(obj, "learners.partition_state.PartitionLearners")
    bandit = attrs["bandit"]
    return {"kind": "partition_learners", "v": 1, "ranker": _ranker(attrs["ranker"]),
            "bandit": None if bandit is None else _bandit(bandit)}


_LEARNER_STATE = {"learners.behaviour.BehaviourStats": _behaviour,
                  "learners.interest_drift.InterestDrift": _interest_drift,
                  "learners.partition_state.PartitionLearners": _partition_learners}
