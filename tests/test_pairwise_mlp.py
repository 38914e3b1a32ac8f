"""The ranker's scorer (PairwiseMLP): its gradient, what it can learn, and its state by feature name."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from stream_app.core.learners import OnlineRanker, StateError, load_state
from stream_app.core.learners.pairwise_mlp import PairwiseMLP
from stream_app.core.learners.state import pack_floats


def test_the_gradient_is_the_losss_derivative():
    rng = np.random.default_rng(3)
    model = PairwiseMLP([f"f{i}" for i in range(5)], learning_rate=0.01, hidden=4, seed=2)
    model.theta[:] = rng.normal(0.0, 0.5, model.theta.shape)  # v and u away from 0: every part has a slope
    better, worse = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    analytic = model.gradient(better, worse)
    numeric = np.zeros_like(analytic)
    for i in range(len(model.theta)):
        keep = model.theta[i]
        model.theta[i] = keep + 1e-6
        up = model.loss(better, worse)
        model.theta[i] = keep - 1e-6
        down = model.loss(better, worse)
        model.theta[i] = keep
        numeric[i] = (up - down) / 2e-6
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_it_learns_an_interaction_no_linear_score_holds():
    """Hit: both sources agree, or neither proposes it; not hit: one alone (XOR). A linear score ranks
    at least one not-hit row above a hit row for any weights; the hidden layer separates them."""
    rows = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    model = PairwiseMLP(("a", "b"), learning_rate=0.05, hidden=4, seed=7)
    for _ in range(300):
        model.learn_pairs(rows[[0, 0, 1, 1]], rows[[2, 3, 2, 3]])
    scores = model.decision(rows)
    assert min(scores[:2]) > max(scores[2:])
    assert model.steps == 300


def test_a_ranker_restored_from_its_record_goes_on_float_for_float():
    rng = np.random.default_rng(1)
    ranker = OnlineRanker(("a", "b", "c"), warm_up=1)
    for _ in range(20):
        ranker.learn_pairs(rng.random((4, 3)), rng.random((4, 3)))
    again = load_state(orjson.loads(orjson.dumps(ranker.to_state())), OnlineRanker)
    probe = rng.random((6, 3))
    assert again.score_many(probe).tolist() == ranker.score_many(probe).tolist()
    assert (again.labels, again.positives, again.model.steps) == (160, 80, 20)
    better, worse = rng.random((4, 3)), rng.random((4, 3))
    ranker.learn_pairs(better, worse)
    again.learn_pairs(better, worse)
    assert again.model.theta.tolist() == ranker.model.theta.tolist()
    assert again.model.m.tolist() == ranker.model.m.tolist() and again.model.s.tolist() == ranker.model.s.tolist()


@pytest.mark.parametrize("d, h", [(3, 5), (1, 1), (4, 2), (0, 3)])
def test_each_features_column_in_the_record_is_its_own_numbers(d, h):
    # the record encodes every column at once and cuts the text: each piece must be that feature's numbers alone
    rng = np.random.default_rng(4)
    names = [f"f{j}" for j in range(d)]
    model = PairwiseMLP(names, learning_rate=0.01, hidden=h, seed=1)
    for _ in range(3):
        model.learn_pairs(rng.random((2, d)), rng.random((2, d)))
    model.retired = {"gone": np.arange(3.0 * (1 + h))}
    state = model.state()
    for j, name in enumerate(names):
        w_column = [d + k * d + j for k in range(h)]
        expected = np.concatenate([array[[j, *w_column]] for array in (model.theta, model.m, model.s)])
        assert state["columns"][name] == pack_floats(expected)
    assert list(state["columns"]) == [*names, "gone"] and state["columns"]["gone"] == pack_floats(model.retired["gone"])
    assert model._columns().keys() == state["columns"].keys()  # no features: no columns of its own, and no error


def test_features_keep_what_they_learned_by_name_across_releases():
    rng = np.random.default_rng(4)
    model = PairwiseMLP(("a", "b", "c"), learning_rate=0.05, hidden=3)
    for _ in range(10):
        model.learn_pairs(rng.random((2, 3)), rng.random((2, 3)))
    before = model.state()
    model.adopt(("c", "new", "a"))  # b dropped, new added, order changed
    columns = model.state()["columns"]
    assert {name: columns[name] for name in "abc"} == {name: before["columns"][name] for name in "abc"}
    assert columns["new"] == pack_floats(np.zeros(12)) and model.u[1] == 0.0 and not model.W[:, 1].any()
    rows = rng.random((5, 3))
    old = load_state(OnlineRanker(("a", "b", "c"), hidden=3).to_state() | {"model": before}, OnlineRanker).model
    # the same score as before on the features both know (new is 0 in every row, b in none)
    assert model.decision(rows[:, [2, 1, 0]] * [1, 0, 1]).tolist() == pytest.approx(
        old.decision(rows * [1, 0, 1]).tolist(), rel=1e-12)
    model.adopt(("a", "b", "c"))
    assert model.state()["columns"] == before["columns"] | {"new": pack_floats(np.zeros(12))}
    assert model.state()["rest"] == before["rest"] and "new" in model.retired


def test_a_linear_ranker_an_earlier_release_wrote_ranks_as_it_did_then():
    record = {"kind": "ranker", "v": 1, "features": ["a", "b"], "learning_rate": 0.005, "negatives": 4,
              "warm_up": 1000, "seed": 7, "hit_rate_alpha": 0.01, "labels": 1200, "positives": 600,
              "ranker_rr": 0.3, "prior_rr": 0.2,
              "model": {"weights": {"a": 0.5, "b": -0.25}, "intercept": 0.1, "steps": 1200,
                        "m": {"a": 0.0, "b": 0.0}, "v": {"a": 0.0, "b": 0.0}}}
    ranker = load_state(record, OnlineRanker)
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert ranker.score_many(rows).tolist() == [0.5, -0.25, 0.25]  # the linear decision, less its intercept
    assert ranker.ready and ranker.labels == 1200 and ranker.to_state()["v"] == 2


def test_a_record_of_the_wrong_shape_is_refused_with_what_is_wrong():
    state = OnlineRanker(("a", "b")).to_state()
    state["model"]["columns"]["a"] = pack_floats(np.zeros(50))
    with pytest.raises(StateError, match="16 hidden units has 51 numbers per feature"):
        load_state(state, OnlineRanker)


def test_a_step_is_adams_textbook_step():
    """Each of 3 steps against Kingma and Ba's algorithm written out (bias-corrected moments)."""
    rng = np.random.default_rng(6)
    model = PairwiseMLP([f"f{i}" for i in range(4)], learning_rate=0.01, hidden=3, seed=1)
    theta, m, s = model.theta.copy(), np.zeros_like(model.theta), np.zeros_like(model.theta)
    for t in range(1, 4):
        better, worse = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
        g = model.gradient(better, worse)
        m = 0.9 * m + 0.1 * g
        s = 0.999 * s + 0.001 * g * g
        # the paper's "more efficient" order: its epsilon-hat is 1e-8 before the bias correction of s
        theta = theta - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(s / (1 - 0.999 ** t)) + 1e-8 / (1 - 0.999 ** t) ** 0.5)
        model.learn_pairs(better, worse)
        assert model.theta == pytest.approx(theta, rel=1e-6, abs=1e-12)


def _packed(values: np.ndarray) -> str:
    return pack_floats(values)


def test_a_forged_model_is_refused_as_state_not_later():
    """Negative second moments (NaN after one step), a hidden size the record does not hold (a MemoryError
    while building it), a feature without its column: each a StateError when read."""
    from stream_app.core.learners.state import Fields

    base = OnlineRanker(("a", "b")).to_state()
    model = base["model"]
    rest = Fields({"r": model["rest"]}, "t").floats("r")
    rest[-1] = -1.0
    with pytest.raises(StateError, match="second moments"):
        load_state(base | {"model": model | {"rest": _packed(rest)}}, OnlineRanker)
    column = Fields({"c": model["columns"]["a"]}, "t").floats("c")
    column[-1] = -1.0
    with pytest.raises(StateError, match="second moments"):
        load_state(base | {"model": model | {"columns": model["columns"] | {"a": _packed(column)}}}, OnlineRanker)
    column = Fields({"c": model["columns"]["a"]}, "t").floats("c")
    column[0] = 1e308  # finite, but a list's scores summed to inf, and learning made them NaN
    with pytest.raises(StateError, match=r"within \+-1e\+100"):
        load_state(base | {"model": model | {"columns": model["columns"] | {"a": _packed(column)}}}, OnlineRanker)
    with pytest.raises(StateError, match="1099511627776 hidden units"):
        load_state(base | {"model": model | {"hidden": 2 ** 40}}, OnlineRanker)
    with pytest.raises(StateError, match=r"no column for the features \['b'\]"):
        load_state(base | {"model": model | {"columns": {"a": model["columns"]["a"]}}}, OnlineRanker)


def test_a_linear_rankers_retired_weights_and_fields_are_kept_and_checked():
    record = {"kind": "ranker", "v": 1, "features": ["a"], "learning_rate": 0.005, "negatives": 4,
              "warm_up": 1000, "seed": 7, "hit_rate_alpha": 0.01, "labels": 0, "positives": 0,
              "ranker_rr": 0.0, "prior_rr": 0.0,
              "model": {"weights": {"a": 0.5, "old": 2.0}, "intercept": 0.0, "steps": 0, "m": None, "v": None}}
    ranker = load_state(record, OnlineRanker)
    ranker.adopt(("a", "old"))
    assert ranker.model.u.tolist() == [0.5, 2.0]
    with pytest.raises(StateError, match=r"every weight must be within \+-1e\+100"):
        load_state(record | {"model": record["model"] | {"weights": {"a": -1e200}}}, OnlineRanker)
    with pytest.raises(StateError, match="'intercept' must be a finite number"):
        load_state(record | {"model": record["model"] | {"intercept": "x"}}, OnlineRanker)
