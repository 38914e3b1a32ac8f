"""`evaluate --processes N`: the rows of one pass split over N forked processes, the same figures as one pass."""

import os
import signal
import time

import numpy as np
import orjson
import pytest
from conftest import OTTO_SAMPLE

from stream_app.cli import main
from stream_app.config import Settings
from stream_app.core.content import ContentIndex
from stream_app.errors import StreamAppError
from stream_app.evaluate.models import SingleSource, StreamAppModel
from stream_app.evaluate.prequential import evaluate_log, models_to_run, without_variants
from stream_app.evaluate.processes import SplitRows, assign, row_cost, split_pass, units
from stream_app.evaluate.session_knn import SKNN, VSKNN
from stream_app.evaluate.tables import table
from stream_app.tools.synth import SynthConfig, truth_path, write


def without_rates(rows):
    return {name: {key: value for key, value in row.items() if key != "events_per_s"} for name, row in rows.items()}


def test_a_split_pass_gives_every_row_the_figures_of_one_pass_in_its_order(tmp_path):
    log = tmp_path / "log.jsonl"
    write(SynthConfig(events=1500, seed=5), log)
    one = evaluate_log(log, "jsonl", Settings(), truth_path=truth_path(log))
    split = evaluate_log(log, "jsonl", Settings(), truth_path=truth_path(log), processes=3)
    assert list(split["models"]) == list(one["models"])  # no row of the item state, none lost
    assert without_rates(split["models"]) == without_rates(one["models"])
    assert without_rates({"ceiling": split["ceiling"]}) == without_rates({"ceiling": one["ceiling"]})
    assert split["profile_accuracy"] == one["profile_accuracy"]
    assert split["reachable"] == one["reachable"] and split["events"] == one["events"] == 1500
    # each row ran in one process, the stream-app row and its single sources in the first
    rows = split["processes"]["rows"]
    assert split["processes"]["count"] == 3 and all(rows)
    assert sorted(name for names in rows for name in names) == sorted([*one["models"], one["ceiling"]["name"]])
    assert {"stream-app", "co-visitation only, then popular"} <= set(rows[0])
    assert "events/s for all models together in 3 processes" in table(split)
    # without the stream-app row's variants: the other rows, each with the same figures
    lean = evaluate_log(log, "jsonl", Settings(), truth_path=truth_path(log), processes=2, variants=False)
    variants = {"stream-app, drift handling on", "stream-app, ranker off (prior)", "stream-app, exploration on (bandit)"}
    assert list(lean["models"]) == [name for name in one["models"] if name not in variants]
    assert without_rates(lean["models"]) == {name: row for name, row in without_rates(one["models"]).items()
                                             if name not in variants}
    assert lean["variants"] is False and one["variants"] is True
    assert "--no-variants: the stream-app row's variants" in table(lean) and "--no-variants" not in table(one)


def test_the_variants_left_out_are_the_stream_app_rows_with_a_setting_changed_or_a_model_left_out():
    content = ContentIndex("v", ["a", "b"], ["A", "B"], np.eye(2, dtype=np.float32))
    hybrid, models = models_to_run(Settings(), 20, True, False, None, None, content, False)
    kept_hybrid, kept = without_variants(None)(hybrid, models)
    assert kept_hybrid is hybrid and hybrid in kept
    assert {m.name for m in models} - {m.name for m in kept} == {
        "stream-app, no content", "stream-app, drift handling on", "stream-app, ranker off (prior)",
        "stream-app, exploration on (bandit)"}
    assert not any(isinstance(m, StreamAppModel) for m in kept if m is not hybrid)
    assert sum(isinstance(m, SingleSource) for m in kept) == sum(isinstance(m, SingleSource) for m in models) > 5


def test_the_rows_are_shared_out_by_cost_and_those_reading_the_stream_app_rows_state_stay_with_it():
    hybrid, models = models_to_run(Settings(), 20, True, False, None, None, None, False)
    groups = assign(hybrid, models, 2)
    assert groups[models.index(hybrid)] == 0
    assert all(group == 0 for model, group in zip(models, groups) if isinstance(model, SingleSource))
    first, others = units(hybrid, models)
    load = [sum(row_cost(models[at]) for at in first), 0.0]
    for unit, cost in others:
        assert len({groups[at] for at in unit}) == 1  # a unit's rows in one process
        load[groups[unit[0]]] += cost
    assert abs(load[0] - load[1]) <= max(cost for _, cost in others)  # as even as one unit allows
    # the twelve kNN rows are two units, one per search (SKNN's four options; V-SKNN's, with and without IDF)
    knn = [unit for unit, _ in others if isinstance(models[unit[0]], (SKNN, VSKNN))]
    assert sorted(map(len, knn)) == [4, 8]
    assert assign(hybrid, models, 1) == [0] * len(models)


def test_a_failing_process_is_named_with_its_error():
    parent = os.getpid()

    def one_pass(rows):
        if os.getpid() != parent:
            raise ValueError("the log went away")
        return {"events": 0, "models": {}}

    with pytest.raises(StreamAppError, match=r"process 2 of 2 failed: ValueError: the log went away \(at .*test_processes.py:\d+, in one_pass\)"):
        split_pass(one_pass, 2)


def test_a_process_that_dies_is_named_with_its_exit_code():
    parent = os.getpid()

    def one_pass(rows):
        if os.getpid() != parent:
            os._exit(3)
        return {"events": 0, "models": {}}

    with pytest.raises(StreamAppError, match=r"process 2 of 2 ended with exit code 3 and no results"):
        split_pass(one_pass, 2)


def test_processes_is_refused_with_a_sequence_encoder(capsys):
    assert main.main(["evaluate", str(OTTO_SAMPLE), "--format", "otto", "--processes", "2", "--encoder", "latest"]) == 2
    assert "leave out --processes, or --encoder and --shadow" in capsys.readouterr().err


def test_a_split_tuning_pass_chooses_and_scores_as_one_pass(tmp_path):
    log = tmp_path / "log.jsonl"
    write(SynthConfig(events=1200, seed=9), log)
    one = evaluate_log(log, "jsonl", Settings(), light=True, tune_baselines=0.5)
    split = evaluate_log(log, "jsonl", Settings(), light=True, tune_baselines=0.5, processes=2)
    assert split["tuning"] == one["tuning"] and len(one["tuning"]["rows"]) == 3
    assert without_rates(split["models"]) == without_rates(one["models"])


ORPHANED = """
import os, sys, time
from stream_app.evaluate.processes import split_pass
parent = os.getpid()
def one_pass(rows):
    if os.getpid() != parent:
        with open(sys.argv[1] + ".part", "w") as f:
            f.write(str(os.getpid()))
        os.rename(sys.argv[1] + ".part", sys.argv[1])
        return {"events": 1, "models": {"x": {"timeline": list(range(200_000))}}}  # more than a pipe holds
    time.sleep(120)  # the first process's own pass, still running when it is killed
split_pass(one_pass, 2)
"""


def _running(pid):
    # /proc: the suite runs on Linux, as --processes does (its processes are forked)
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # an orphan reaped late is gone all the same
    except FileNotFoundError:
        return False


def test_a_process_ends_when_the_first_is_killed(tmp_path):
    """helper-156: the first process killed (SIGTERM, SIGKILL, out of memory) ran no finally to end the others: each
    ran its whole pass for no one, then waited forever to send its results (the pipe's reading end stays open in it)."""
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    first = subprocess.Popen([sys.executable, "-c", ORPHANED, str(pid_file)])
    child = None
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        first.send_signal(signal.SIGTERM)
        first.wait(10)
        deadline = time.monotonic() + 5
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(child), "the second process outlived the first"
    finally:
        if first.poll() is None:
            first.kill()
        if child is not None and _running(child):
            os.kill(child, signal.SIGKILL)


def test_in_each_other_process_one_row_reading_text_tells_the_content_index_its_scans_ahead():
    """helper-156: only the stream-app row said the round's catalogue scans ahead, and it runs in the first process:
    a row reading text in another scanned the catalogue once per vector (the same lists, twice the scans)."""
    content = ContentIndex("v", ["a", "b"], ["A", "B"], np.eye(2, dtype=np.float32))
    hybrid, models = models_to_run(Settings(), 20, True, False, None, None, content, False)
    split = SplitRows(3, None)
    split.of(0)(hybrid, models)
    for group in (1, 2):
        _, rows = split.of(group)(hybrid, models)
        reading = [m for m in rows if isinstance(m, StreamAppModel) and m.content is not None]
        assert reading and [m.expects_scans for m in reading] == [True] + [False] * (len(reading) - 1)


@pytest.mark.parametrize("fails, sigint", [("raises", signal.default_int_handler), ("dies", signal.default_int_handler),
                                            ("raises", signal.SIG_IGN)])  # SIG_IGN: as under nohup
def test_a_failing_process_stops_the_first_processes_pass_at_once(fails, sigint):
    parent = os.getpid()
    finished = []

    def one_pass(rows):
        if os.getpid() != parent:
            if fails == "dies":
                os._exit(3)
            raise ValueError("the log went away")
        for _ in range(1200):  # a minute; the other process's failure ends it in its first
            time.sleep(0.05)
        finished.append(True)
        return {"events": 0, "models": {}}

    said = "failed: ValueError: the log went away" if fails == "raises" else "ended with exit code 3"
    before = signal.signal(signal.SIGINT, sigint)
    try:
        with pytest.raises(StreamAppError, match=f"process 2 of 2 {said}"):
            split_pass(one_pass, 2)
    finally:
        signal.signal(signal.SIGINT, before)
    assert not finished
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # put back


def test_a_ctrl_c_stays_an_interruption_and_the_other_processes_leave_it_to_the_first():
    parent = os.getpid()

    def one_pass(rows):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C reaches the whole process group
            time.sleep(0.2)
            return {"events": 0, "models": {}}
        time.sleep(0.5)
        return {"events": 0, "models": {}}

    assert split_pass(one_pass, 2)["processes"]["count"] == 2  # the other process ignored it and ended well

    def interrupted(rows):
        if os.getpid() != parent:
            time.sleep(0.2)
            raise ValueError("a later failure")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        split_pass(interrupted, 2)


def test_the_command_leaves_the_variants_out_when_asked_and_shows_its_progress(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main.main(["evaluate", str(OTTO_SAMPLE), "--format", "otto", "--no-variants", "--json", "r.json",
                      "--html", "r.html"]) == 0
    rows = orjson.loads((tmp_path / "r.json").read_bytes())["models"]
    assert "stream-app" in rows and "popular" in rows
    assert not [name for name in rows if name.startswith("stream-app, ")]
    assert "evaluate: 862/862 (100%)" in capsys.readouterr().err


def test_the_first_process_says_it_waits_for_the_others_once_its_own_rows_are_done(capsys):
    parent = os.getpid()

    def one_pass(rows):
        if os.getpid() != parent:
            time.sleep(1.0)
        return {"events": 0, "models": {}}

    split_pass(one_pass, 2)
    assert "the first process's rows are done; waiting for the other 1 process\n" in capsys.readouterr().err
