"""The events a worker would refuse, sorted on disk in runs as the accepted ones are (`tools/sorted_log.py`): an old
log (mostly refused under STREAM_APP_MAX_AGE_MS) was held whole in memory, a Python tuple per refused event."""

from __future__ import annotations

import errno
import random
import time
import tracemalloc
from pathlib import Path

import orjson
import pytest

from stream_app.errors import StreamAppError
from stream_app.tools import sorted_log
from stream_app.tools.sorted_log import SortedLog, load_accepted

OLD = 1_700_000_000_000


def _write_log(path: Path, count: int, accepted_every: int = 0, seed: int = 5) -> list[dict]:
    """`count` events with many ties in time (the file's order must decide them), a broken line amid them."""
    rng = random.Random(seed)
    events = [{"event_id": f"e{n}", "user_id": f"u{rng.randrange(7)}",
               "item_id": "kept" if accepted_every and n % accepted_every == 0 else f"i{rng.randrange(50)}",
               "type": rng.choice(["browse", "click", "purchase"]), "ts": OLD + rng.randrange(40) * 1000,
               "schema_version": 1} for n in range(count)]
    lines = [orjson.dumps(event) for event in events]
    lines.insert(count // 2, b"{broken")
    path.write_bytes(b"\n".join(lines) + b"\n")
    return events


def _refuse_unkept(event: dict) -> tuple[str, str] | None:
    return None if event["item_id"] == "kept" else ("timestamp_out_of_range", f"old {event['event_id']}")


def _file_order(found: tuple[dict, str, str, int]) -> int:
    return int(found[0]["event_id"][1:])


def test_refused_events_spill_in_runs_and_merge_into_time_order_with_ties_in_file_order(tmp_path, monkeypatch):
    path = tmp_path / "log.jsonl"
    _write_log(path, 500, accepted_every=9)
    _, rejected, expected = load_accepted(path, "jsonl", _refuse_unkept)  # the whole log sorted in memory
    assert len(expected) == 444 and [(f[0]["ts"], _file_order(f)) for f in expected] == sorted(
        (f[0]["ts"], _file_order(f)) for f in expected)  # ties in file order
    held: list[int] = []
    spill_refused = SortedLog._spill_refused

    def spy(self, run):
        held.append(len(run))
        spill_refused(self, run)

    monkeypatch.setattr(SortedLog, "_spill_refused", spy)
    spill = tmp_path / "spill"
    spill.mkdir()
    with SortedLog.read(path, "jsonl", _refuse_unkept, run_events=7, spill_dir=spill, merge_fan_in=3) as log:
        assert held and max(held) <= 7 and sum(held) == 444  # never more than a run of them held at once
        assert log._refused == [] and 1 <= len(log.refused_runs) <= 3  # 64 runs merged down, by 3s
        assert log.refused_count == 444 and len(log) == 56
        assert [r.line for r in log.rejected] == [r.line for r in rejected] == [251]
        assert list(log.refused_events()) == expected
        assert list(log.refused_events()) == expected and log.refused == expected  # as often as asked
        [folder] = spill.iterdir()
        assert sorted(p.name for p in folder.iterdir() if p.name.startswith("refused")) == sorted(
            p.name for p in log.refused_runs) and log.refused_runs[0].name.startswith("refused-merged-")
    assert not any(spill.iterdir())  # the refused events' runs are removed with the others
    with pytest.raises(ValueError, match="let go by close"):
        next(log.refused_events())
    with SortedLog.read(path, "jsonl", _refuse_unkept, run_events=1_000, spill_dir=spill) as log:
        assert not log.refused_runs and list(log.refused_events()) == expected  # one run: in memory
        assert not any(spill.iterdir())
    with pytest.raises(ValueError, match="let go by close"):  # as when spilled: a short log finds that out too
        log.refused
    with SortedLog.read(path, "jsonl", _refuse_unkept, limit=5) as log:
        assert log.refused == load_accepted(path, "jsonl", _refuse_unkept, 5)[2] == list(log.refused_events())
        assert log.refused_count == len(log.refused)


def test_an_old_log_all_refused_holds_a_run_of_them_not_the_log(tmp_path):
    path = tmp_path / "log.jsonl"
    _write_log(path, 6_000)

    def peak(run_events: int, given: bool) -> int:
        """The peak of memory while the log is read, or (`given`) while its refused events are given."""
        tracemalloc.start()
        try:
            with SortedLog.read(path, "jsonl", _refuse_unkept, run_events=run_events, spill_dir=tmp_path) as log:
                if not given:
                    return tracemalloc.get_traced_memory()[1]
                tracemalloc.reset_peak()
                count, last = 0, 0
                for event, reason, _, _ in log.refused_events():
                    assert event["ts"] >= last and reason == "timestamp_out_of_range"
                    count, last = count + 1, event["ts"]
                assert (count, log.refused_count, len(log)) == (6_000, 6_000, 0)
                return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    whole, runs = peak(10_000, given=False), peak(300, given=False)
    assert runs < whole / 5, (runs, whole)  # every refused event was held while the log was read
    whole, runs = peak(10_000, given=True), peak(300, given=True)
    assert runs < whole / 5, (runs, whole)  # and while they were given


def test_a_disk_that_fills_with_refused_events_is_said_with_what_to_do(tmp_path, monkeypatch):
    path = tmp_path / "log.jsonl"
    _write_log(path, 600)  # all refused: their runs are the only files written

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sorted_log, "open", full, raising=False)
    with pytest.raises(StreamAppError, match="No space left on device .*TMPDIR.*--sort-in-memory"):
        SortedLog.read(path, "jsonl", _refuse_unkept, run_events=100, spill_dir=tmp_path)
    assert not list(tmp_path.glob("stream-app-sort-*"))  # the spill folder went with the failure


def test_a_replay_dead_letters_the_spilled_refused_events_in_time_order_less_those_of_erased_users(make_settings,
                                                                                                   tmp_path):
    from stream_app.tools.consume import read_to_end
    from stream_app.tools.erase import publish_erasures
    from stream_app.tools.replay import replay

    settings = make_settings(max_age_ms=86_400_000)
    now = int(time.time() * 1000)
    path = tmp_path / "old.jsonl"
    events = _write_log(path, 60)  # from 2023: all refused, as over a day old
    fresh = [{"event_id": f"f{n}", "user_id": "u1", "item_id": "i1", "type": "click", "ts": now - 60_000 + n,
              "schema_version": 1} for n in range(3)]
    with path.open("ab") as log:
        log.write(b"".join(orjson.dumps(event) + b"\n" for event in fresh))
    publish_erasures(settings, ["u0"], requested_at=now)  # u0's refused events are not dead-lettered again

    summary = replay(settings, path, "jsonl", progress_stream=None, run_events=7)

    kept = [e for e in sorted(events, key=lambda e: e["ts"]) if e["user_id"] != "u0"]  # stable: ties in file order
    assert summary.total == 3 and summary.rejected == 1 + len(kept) and summary.erased == 60 - len(kept) > 0
    assert summary.first_rejection.startswith("invalid_json")  # the unreadable line's, first as before
    letters = [orjson.loads(record.value) for record in read_to_end(settings, settings.topics.dlq)]
    refused = [orjson.loads(letter["payload_text"]) for letter in letters if letter["reason"] != "invalid_json"]
    assert sorted(e["event_id"] for e in refused) == sorted(e["event_id"] for e in kept)
    for user in {e["user_id"] for e in kept}:  # a user's letters share a partition: in the order they were sent
        assert [e["event_id"] for e in refused if e["user_id"] == user] == [
            e["event_id"] for e in kept if e["user_id"] == user]


def _write_mostly_unreadable(path: Path, count: int, good_every: int = 50) -> None:
    """`count` lines, one in `good_every` an event, the others JSON no event has (a producer's bad month)."""
    lines = [orjson.dumps({"event_id": f"e{n}", "user_id": "u1", "item_id": "kept", "type": "browse",
                           "ts": OLD + n, "schema_version": 1}) if n % good_every == 0
             else b'{"user": "u1", "note": "' + b"x" * 200 + b'"}' for n in range(count)]
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_unreadable_lines_spill_to_disk_beyond_a_run_in_file_order(tmp_path):
    path = tmp_path / "log.jsonl"
    _write_mostly_unreadable(path, 1_000)
    everything = load_accepted(path, "jsonl", lambda event: None)[1]  # held in a list
    assert len(everything) == 980
    with SortedLog.read(path, "jsonl", lambda event: None, run_events=30, spill_dir=tmp_path) as log:
        assert len(log.rejected._first) == 30 and len(log.rejected._chunks) == 31  # the rest written to disk
        assert len(log.rejected) == 980 and list(log.rejected) == everything  # each read back whole
        assert [r.line for r in log.rejected] == [r.line for r in everything]  # as often as asked
        assert {r.rejection.reason for r in log.rejected} == {"schema_violation"} and len(log) == 20
    with pytest.raises(ValueError, match="let go by close"):
        next(iter(log.rejected))
    with SortedLog.read(path, "jsonl", lambda event: None, limit=5) as log:  # the heap's path keeps them as well
        assert list(log.rejected) == everything and len(log) == 5


def test_a_log_of_mostly_unreadable_lines_holds_a_run_of_them_not_the_log(tmp_path):
    path = tmp_path / "log.jsonl"
    _write_mostly_unreadable(path, 6_000)

    def peak(run_events: int) -> int:
        tracemalloc.start()
        try:
            with SortedLog.read(path, "jsonl", lambda event: None, run_events=run_events, spill_dir=tmp_path) as log:
                assert len(log.rejected) == 5_880
                return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    whole, runs = peak(10_000), peak(300)
    assert runs < whole / 4, (runs, whole)  # every unreadable line, its raw bytes with it, was held


def test_a_disk_that_fills_with_unreadable_lines_is_said_with_what_to_do(tmp_path, monkeypatch):
    from stream_app.tools import line_rejections

    path = tmp_path / "log.jsonl"
    _write_mostly_unreadable(path, 600)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(line_rejections.tempfile, "TemporaryFile", full)
    with pytest.raises(StreamAppError, match="unreadable lines on disk .*No space left on device.*TMPDIR"):
        SortedLog.read(path, "jsonl", lambda event: None, run_events=100, spill_dir=tmp_path)


def test_the_rejected_lines_docstring_example_runs():
    import doctest

    from stream_app.tools import line_rejections

    result = doctest.testmod(line_rejections)
    assert result.attempted >= 3 and result.failed == 0


def test_a_rejection_read_back_from_disk_is_the_one_written_bytes_and_headers_too(tmp_path):
    from stream_app.contracts import Rejection, Source
    from stream_app.tools.line_rejections import LineRejection, LineRejections

    written = [LineRejection(7, Rejection("not_utf8", "line 7: byte 0xff", Source("log.csv", None, None, 5, True,
                                                                                    "dlq[0]@3", (("h", b"\xff\x00"),
                                                                                                 ("n", None))),
                                          b"\x00key", b"\xff\xfe raw \n line", True)),
               LineRejection(8, Rejection("invalid_json", "line 8", Source("log.csv"), None, b""))]
    rejections = LineRejections(in_memory=1, spill_dir=tmp_path)
    for found in [*written, *written, *written]:
        rejections.append(found)
    assert rejections._chunks and list(rejections) == [*written, *written, *written]
    rejections.close()


T = 1_700_000_000_000
#: A log of each format with one event of item 777 (refused below) and its line: a blank or broken line, a csv's
#: header, an OTTO session's events and Online Retail's skipped rows put its read index elsewhere.
LOGS = {
    "jsonl": (f'{{"event_id": "a", "user_id": "u1", "item_id": "i1", "type": "click", "ts": {T}, "schema_version": 1}}'
              f'\n\n{{broken\n{{"event_id": "b", "user_id": "u2", "item_id": "777", "type": "click", "ts": {T - 1}, '
              '"schema_version": 1}\n', 4),
    "otto": (f'{{"session": 1, "events": [{{"aid": 5, "ts": {T}, "type": "clicks"}}, {{"aid": 6, "ts": {T + 1}, '
             f'"type": "carts"}}]}}\n{{"session": 2, "events": [{{"aid": 5, "ts": {T}, "type": "clicks"}}, '
             f'{{"aid": 777, "ts": {T - 1}, "type": "orders"}}]}}\n', 2),
    "csv": (f"user_id,item_id,type,ts\nu1,i1,click,{T}\nu2,777,click,{T - 1}\n", 3),
    "retailrocket": (f"timestamp,visitorid,event,itemid,transactionid\n{T},1,view,5,\n{T - 1},2,addtocart,777,\n", 3),
    "movielens": (f"userId,movieId,rating,timestamp\n1,5,4.0,{T // 1000}\n2,777,3.5,{T // 1000 - 1}\n", 3),
    "online-retail": ("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
                      "536365,85123A,LANTERN,6,12/1/2010 8:26,2.55,,United Kingdom\n"  # a guest's
                      "C536379,85123A,LANTERN,-1,12/1/2010 9:41,2.55,14527,United Kingdom\n"  # a cancellation
                      "536366,POST,POSTAGE,1,12/1/2010 8:28,18.0,12583,France\n"  # not a product
                      "536367,85123A,LANTERN,6,12/1/2010 8:34,2.55,13047,United Kingdom\n"
                      "536368,777,THING,2,12/1/2010 8:20,1.0,13047,United Kingdom\n", 6),
}


def _refuse_777(event: dict) -> tuple[str, str] | None:
    return ("timestamp_out_of_range", "test") if event["item_id"] == "777" else None


@pytest.mark.parametrize("fmt", sorted(LOGS))
def test_a_refused_event_names_its_line_of_the_log_in_its_dead_letter_in_every_format(tmp_path, fmt):
    """A refused event's dead letter named its event id only, a rejected line's its line: the sorted log kept the
    event's read index, which is not its line."""
    from stream_app.tools.replay import dead_letter_of

    text, line = LOGS[fmt]
    path = tmp_path / "log"
    path.write_text(text)
    found = [load_accepted(path, fmt, _refuse_777)[2], load_accepted(path, fmt, _refuse_777, limit=5)[2]]
    with SortedLog.read(path, fmt, _refuse_777, run_events=1, spill_dir=tmp_path) as log:
        assert log.refused_runs and log.runs  # read back from runs on disk
        found.append(log.refused)
    for refused in found:
        [(event, reason, detail, at)] = refused
        assert (event["item_id"], reason, detail, at) == ("777", "timestamp_out_of_range", "test", line)
    letter = dead_letter_of(refused[0], path)
    assert letter.line == line and letter.rejection.detail == f"line {line}: event {event['event_id']!r}: test"
    assert letter.rejection.to_record(line=letter.line)["source"]["line"] == line
