"""`evaluate --tune-baselines SHARE`: each baseline row's main parameters chosen on the log's first SHARE of events
(a pass of the baselines alone over that prefix, with the prequential machinery), then the whole pass with them."""

import orjson
import pytest
from conftest import OTTO_SAMPLE

from stream_app.cli import evaluate_command, main
from stream_app.config import Settings
from stream_app.evaluate.prequential import evaluate_events, evaluate_log, models_to_run
from stream_app.evaluate.tables import table
from stream_app.evaluate.tuning import GRIDS, choose, params_of, tune, variant
from stream_app.tools.replay import gate
from stream_app.tools.sorted_log import SortedLog

BASE = 1_700_000_000_000
SETTINGS = Settings(item_epoch_ms=1000)  # an event a minute: what one session taught, the next one sees
STEPS_1 = "sequential rules (steps 1), then popular"
STEPS_10 = "sequential rules (steps 10), then popular"


def sessions_log(sessions, start=0):
    """Each session a user of its own, one event a minute, one session after the other."""
    events, i = [], start
    for n, items in enumerate(sessions):
        for item in items:
            events.append({"event_id": f"e{i}", "user_id": f"s{start}-{n}", "item_id": item, "type": "click",
                           "ts": BASE + i * 60_000, "schema_version": 1})
            i += 1
    return events


def next_is_next(rounds, start=0):
    """After `a` comes `b` (a session "a b"), but three times as many sessions "a x c" put `c` two steps after `a`:
    rules of one step list `b` after `a` at K=1, rules of more steps `c` (three halves of a weight against one)."""
    return [s for r in range(rounds) for s in (["a", "b"], *(["a", f"x{start}-{r}-{j}", "c"] for j in range(3)))]


def write(path, events):
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def test_the_tuned_row_picks_the_value_clearly_better_on_the_share_and_says_it(tmp_path, capsys):
    log = write(tmp_path / "log.jsonl", sessions_log(next_is_next(12)))
    result = evaluate_log(log, "jsonl", SETTINGS, k=1, light=True, tune_baselines=0.5, progress=True)
    shown, events = capsys.readouterr().err, result["events"]  # both passes' progress
    assert f"evaluate, tuning: {round(events / 2)}/{round(events / 2)} (100%)\n" in shown
    assert f"evaluate: {events}/{events} (100%)\n" in shown
    tuning = result["tuning"]
    row = tuning["rows"][STEPS_10]
    assert row["default"] == {"steps": 10} and row["chosen"] == {"steps": 1}
    recalls = {p["values"]["steps"]: p["recall@1"] for p in row["prefix_recall"]}
    assert recalls[1] > 0.1 and all(recalls[steps] == 0.0 for steps in (3, 5, 10, 20))
    # the whole pass runs the row with its tuned value, named by it, and it beats the default's figures
    untuned = evaluate_log(log, "jsonl", SETTINGS, k=1, light=True)
    assert STEPS_1 in result["models"] and STEPS_10 not in result["models"]
    assert result["models"][STEPS_1]["recall@1"] > untuned["models"][STEPS_10]["recall@1"]
    # the light pass's other tunable rows were tuned too (V-SKNN among them), and the table says what and how
    assert set(tuning["rows"]) == {STEPS_10, "sequential rules (steps 10), session's items out, then popular",
                                   "V-SKNN (k=100, sample 500, idf), session's items out, then popular"}
    said = table(result)
    assert "tuned: each baseline row's main parameters, by Recall@1 over the log's first 0.5 of its events" in said
    assert "steps 1, 3, 5, 10, 20 (default 10)" in said and "neighbours 50, 100, 200 x sample 250, 500, 1000" in said
    assert f"{STEPS_10}: steps 10 -> 1 (Recall@1 on the share 0.0000 -> {recalls[1]:.4f})" in said


def test_the_tuning_pass_sees_only_the_share(tmp_path):
    prefix = sessions_log(next_is_next(12))
    # after the share: sessions "a c", where rules of more steps list `c` after `a` from the start (their
    # weight from "a x c"), and rules of one step `b` until "a c" outnumbers "a b"
    later = sessions_log([["a", "c"]] * (len(prefix) // 2), start=len(prefix))
    other_later = sessions_log(next_is_next(12, start=1), start=len(prefix))
    assert len(later) == len(other_later) == len(prefix)
    both = write(tmp_path / "both.jsonl", prefix + later)
    other = write(tmp_path / "other.jsonl", prefix + other_later)

    def tuned(path, share):
        return evaluate_log(path, "jsonl", SETTINGS, k=1, light=True, tune_baselines=share)["tuning"]

    # the first half alone decides: what comes after it changes neither the figures nor the choice
    half, other_half = tuned(both, 0.5), tuned(other, 0.5)
    assert half["events"] == other_half["events"] == len(prefix)
    assert half["rows"] == other_half["rows"] and half["rows"][STEPS_10]["chosen"] == {"steps": 1}
    # and what comes after it would have changed the choice had the share held it
    assert tuned(both, 0.9)["rows"][STEPS_10]["chosen"] == {"steps": 10}


def test_the_stream_app_rows_are_never_tuned_and_without_the_option_no_row_changes():
    plain = evaluate_log(OTTO_SAMPLE, "otto", Settings())
    tuned = evaluate_log(OTTO_SAMPLE, "otto", Settings(), tune_baselines=0.3)
    assert "tuning" not in plain and "tuned" not in table(plain)
    figures = ("recall@20", "mrr@20", "ndcg@20", "judged", "coverage", "popularity_percentile", "by_type")
    for name, row in plain["models"].items():
        if name.startswith("stream-app") or " only" in name or name.startswith(("popular", "item just seen")):
            assert {f: tuned["models"][name][f] for f in figures} == {f: row[f] for f in figures}, name
    # the same rows in the same order; a tuned row keeps its place, its name says its values
    assert len(tuned["models"]) == len(plain["models"])
    tuning = tuned["tuning"]
    assert tuning["events"] == round(0.3 * 862) and set(tuning["rows"]) <= set(plain["models"])
    renamed = [(a, b) for a, b in zip(plain["models"], tuned["models"]) if a != b]
    assert renamed and all(a in tuning["rows"] for a, _ in renamed)


def test_a_row_rebuilt_with_its_own_values_runs_as_the_row_itself():
    """`variant` keeps every option of a row (fill, items out, reminders, IDF, text): with the row's own values
    every row scores as it does untouched, and only the co-visitation rows' names say their recent items."""
    events = otto_events(400)
    plain = evaluate_events(events, Settings(), 20)

    def same_values(hybrid, models):
        return hybrid, [variant(m, params_of(m)) if type(m) in GRIDS else m for m in models]

    rebuilt = evaluate_events(events, Settings(), 20, rows=same_values)
    names = {a: b for a, b in zip(plain["models"], rebuilt["models"])}
    assert {a: b for a, b in names.items() if a != b} == {
        "co-visitation, unseen, then popular": "co-visitation, unseen (recent 3), then popular",
        "recent, then co-visitation, then popular": "recent, then co-visitation (recent 5), then popular"}
    for name, row in plain["models"].items():
        assert rebuilt["models"][names[name]]["recall@20"] == row["recall@20"], name
        assert rebuilt["models"][names[name]]["mrr@20"] == row["mrr@20"], name


def otto_events(count):
    """The OTTO sample's first `count` events in time, as evaluate reads them."""
    with SortedLog.read(OTTO_SAMPLE, "otto", gate(Settings()), None, None) as log:
        return list(log)[:count]


def test_the_tuning_pass_scores_each_value_as_a_pass_over_the_share_alone_would():
    """Without the stream-app rows the baselines' lists are still filled with the hybrid's popular items: each
    default value's figure on the share is the row's in a plain pass over those events."""
    share = otto_events(round(0.3 * 862))
    plain = evaluate_events(share, Settings(), 20)
    tuning = tune(share, Settings(), 20, 0.3)
    assert len(tuning.tried) == 17
    for name, tried in tuning.tried.items():
        default = next(r for values, r in tried if values == tuning.defaults[name])
        assert default == plain["models"][name]["recall@20"], name


def test_of_equal_recall_the_values_changing_the_fewest_defaults_are_chosen():
    default = {"neighbours": 100, "sample_size": 500}
    figures = [({"neighbours": n, "sample_size": s}, r)
               for n, s, r in ((50, 250, 0.2), (100, 250, 0.3), (100, 500, 0.3), (200, 250, 0.4), (200, 500, 0.4))]
    # the best Recall wins over the default; of the two best, the one that keeps the sample size
    assert choose(figures, default) == {"neighbours": 200, "sample_size": 500}
    assert choose(figures[:3], default) == default  # a tie with the default changes nothing
    assert choose([({"steps": 1}, 0.1), ({"steps": 3}, 0.1)], {"steps": 10}) == {"steps": 1}  # then the grid's first


def test_every_tunable_class_of_the_rows_has_its_default_in_its_grid():
    hybrid, models = models_to_run(Settings(), 20, True, False, None, None, None, False)
    tunable = [m for m in models if type(m) in GRIDS]
    assert len(tunable) == 17
    for model in tunable:
        assert params_of(model) in GRIDS[type(model)], model.name
        assert 3 <= len(GRIDS[type(model)]) <= 9


def test_the_option_is_a_share_of_the_logs_events_in_process_only_and_marks_the_reports(capsys):
    assert main.main(["evaluate", str(OTTO_SAMPLE), "--format", "otto", "--via-kafka", "--tune-baselines", "0.2"]) == 2
    assert "--tune-baselines acts only in process" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main.parser().parse_args(["evaluate", "log.jsonl", "--tune-baselines", "1.5"])
    assert "must be between 0 and 1 (a share of the log's events)" in capsys.readouterr().err
    args = main.parser().parse_args(["evaluate", "x.csv.gz", "--light", "--tune-baselines", "0.2"])
    assert evaluate_command.report_name(args) == "x-light-tuned-0.2"


def test_with_limit_the_share_is_of_the_limited_log(tmp_path):
    """--limit N --tune-baselines S tunes on the first S x N events, not S of the whole log (a review found that
    tuning on the whole log passed every test)."""
    log = tmp_path / "log.jsonl"
    write(log, sessions_log(next_is_next(40)))
    whole = sum(1 for _ in log.open())
    result = evaluate_log(log, "jsonl", SETTINGS, k=1, limit=60, light=True, tune_baselines=0.5)
    assert whole > 300 and result["tuning"]["events"] == 30
