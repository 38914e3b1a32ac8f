"""The external merge sort of a recorded log (`tools/sorted_log.py`): the order `load_accepted` gives, in runs."""

from __future__ import annotations

import random
import resource
import tracemalloc
from pathlib import Path

import orjson
from kafka import TopicPartition

from stream_app.tools.consume import read_to_end
from stream_app.tools.replay import replay
from stream_app.tools.sorted_log import SortedLog, load_accepted


def _write_log(path: Path, count: int, seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    events = [{"event_id": f"e{n}", "user_id": f"u{rng.randrange(7)}", "item_id": f"i{rng.randrange(50)}",
               "type": rng.choice(["browse", "click", "purchase"]), "ts": 1_700_000_000_000 + rng.randrange(40) * 1000,
               "schema_version": 1} for n in range(count)]  # many ties: the file's order must decide them
    lines = [orjson.dumps(event) for event in events]
    lines.insert(count // 2, b"{broken")
    path.write_bytes(b"\n".join(lines) + b"\n")
    return events


def _refuse_e5(event: dict) -> tuple[str, str] | None:
    return ("timestamp_out_of_range", "test") if event["event_id"] == "e5" else None


def test_runs_spilled_to_disk_merge_into_the_order_the_whole_log_sorted_in_memory_has(tmp_path):
    path = tmp_path / "log.jsonl"
    _write_log(path, 23)
    expected, rejected, refused = load_accepted(path, "jsonl", _refuse_e5)
    spill = tmp_path / "spill"
    spill.mkdir()
    with SortedLog.read(path, "jsonl", _refuse_e5, run_events=4, spill_dir=spill) as log:
        assert len(log.runs) == 6 and len(log) == 22  # 22 accepted in runs of 4
        assert list(log) == expected
        assert (log.first_ts, log.last_ts) == (expected[0]["ts"], expected[-1]["ts"])
        assert [r.line for r in log.rejected] == [r.line for r in rejected] == [12]
        assert log.refused == refused
        assert any(spill.iterdir())
    assert not any(spill.iterdir())  # the runs are removed
    with SortedLog.read(path, "jsonl", _refuse_e5, run_events=100, spill_dir=spill) as log:
        assert not log.runs and list(log) == expected  # one run: in memory, nothing written
    with SortedLog.read(path, "jsonl", _refuse_e5, limit=5) as log:
        assert list(log) == load_accepted(path, "jsonl", _refuse_e5, 5)[0] and len(log) == 5


def test_more_runs_than_files_may_be_open_merge_in_groups_into_the_same_order(tmp_path):
    path = tmp_path / "log.jsonl"
    _write_log(path, 700)
    expected = load_accepted(path, "jsonl", _refuse_e5)[0]
    spill = tmp_path / "spill"
    spill.mkdir()
    with SortedLog.read(path, "jsonl", _refuse_e5, run_events=3, spill_dir=spill, merge_fan_in=4) as log:
        assert len(log.runs) == 4 and len(list(next(spill.iterdir()).iterdir())) == 4  # 233 runs merged down, by 4s
        assert len(log) == 699 and list(log) == expected
    # and with the default fan-in under a limit of open files below the runs' count (233; an open file each
    # failed with "Too many open files") and below the default fan-in (128 at once failed as well)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(64, hard), hard))
    try:
        with SortedLog.read(path, "jsonl", _refuse_e5, run_events=3, spill_dir=spill) as log:
            assert list(log) == expected
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_memory_holds_a_run_not_the_log(tmp_path):
    path = tmp_path / "log.jsonl"
    _write_log(path, 6_000)

    def peak(run_events: int) -> int:
        tracemalloc.start()
        try:
            with SortedLog.read(path, "jsonl", lambda event: None, run_events=run_events, spill_dir=tmp_path) as log:
                assert sum(1 for _ in log) == 6_000
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    whole, runs = peak(6_000), peak(300)
    assert runs < whole / 5, (runs, whole)


def test_a_log_held_in_one_run_lets_each_event_go_once_given(tmp_path):
    """`evaluate` holds one item epoch of a log, not the log (docs/cli.md): with a log of one run (under
    --sort-in-memory, 500,000 events by default) the sorted run was held whole until the pass ended."""
    path = tmp_path / "log.jsonl"
    _write_log(path, 6_000)
    tracemalloc.start()
    try:
        with SortedLog.read(path, "jsonl", lambda event: None) as log:
            assert not log.runs
            held = tracemalloc.get_traced_memory()[0]
            events = iter(log)
            for _ in range(5_500):
                next(events)
            left = tracemalloc.get_traced_memory()[0]
            assert sum(1 for _ in events) == 500 and len(log) == 6_000
    finally:
        tracemalloc.stop()
    assert left < held / 3, (left, held)


def test_a_replay_in_runs_sends_each_partition_in_time_order(make_settings, tmp_path):
    settings = make_settings()
    path = tmp_path / "log.jsonl"
    events = _write_log(path, 60)
    summary = replay(settings, path, "jsonl", progress_stream=None, run_events=7)
    assert summary.total == 60 and summary.rejected == 1
    order = {event["event_id"]: n for n, event in enumerate(load_accepted(path, "jsonl", lambda e: None)[0])}
    by_partition: dict[TopicPartition, list[int]] = {}
    for topic in settings.topics.inputs:
        for record in read_to_end(settings, topic):
            by_partition.setdefault(TopicPartition(topic, record.partition), []).append(
                order[orjson.loads(record.value)["event_id"]])
    assert sorted(n for sent in by_partition.values() for n in sent) == list(range(len(events)))
    assert all(sent == sorted(sent) for sent in by_partition.values())  # the merged order, ties in file order


def test_events_that_repeat_their_users_event_id_are_counted_however_the_log_is_sorted(tmp_path):
    """`replay` said it replayed every event while the workers apply a user's event id once (a review's finding)."""
    path = tmp_path / "log.jsonl"
    events = [{"event_id": str(n % 2), "user_id": "u", "item_id": f"i{n}", "type": "click",
               "ts": 1_700_000_000_000 + n, "schema_version": 1} for n in range(6)]
    events.append({**events[0], "user_id": "v", "ts": 1_700_000_000_009})  # another user's id "0": its own
    path.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in events))
    for kwargs, count, repeats in (({}, 7, 4), ({"run_events": 2, "spill_dir": tmp_path}, 7, 4), ({"limit": 5}, 5, 3)):
        with SortedLog.read(path, "jsonl", lambda event: None, **kwargs) as log:
            assert (len(log), log.repeats) == (count, repeats), kwargs
    from stream_app.tools.replay import ReplaySummary

    said = ReplaySummary(str(path), sent={"events.click": 7}, repeats=4).lines()
    assert "  4 of them repeat an event id their user had earlier in the log: the workers apply each once (as " \
           "`evaluate` does), so 3 events are applied" in said


def test_a_disk_that_fills_while_the_log_is_sorted_is_said_with_what_to_do(tmp_path, monkeypatch):
    import errno

    import pytest

    from stream_app.errors import StreamAppError
    from stream_app.tools import sorted_log

    path = tmp_path / "log.jsonl"
    _write_log(path, 600)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sorted_log, "open", full, raising=False)
    with pytest.raises(StreamAppError, match="No space left on device .*TMPDIR.*--sort-in-memory"):
        SortedLog.read(path, "jsonl", lambda event: None, run_events=100, spill_dir=tmp_path)
    assert not list(tmp_path.glob("stream-app-sort-*"))  # the spill folder went with the failure
