"""The replay tool's own checks, without a broker: a producer that fails, and what it says."""

from types import SimpleNamespace

import pytest
from kafka.errors import KafkaTimeoutError

from stream_app.config import Settings
from stream_app.tools import replay
from stream_app.tools.replay import ReplayIncomplete, produce_events


class FailingProducer:
    """Acknowledges every other event, fails the rest, as a broker going away would."""

    def __init__(self):
        self.n = 0

    def send(self, topic, key, value):
        self.n += 1
        return Sent(self.n)

    def flush(self):
        pass


class Sent:
    def __init__(self, n):
        self.n = n

    def add_callback(self, callback):
        if self.n % 2:
            callback(type("Metadata", (), {"topic": "t", "partition": 0, "offset": self.n})())
        return self

    def add_errback(self, errback):
        if not self.n % 2:
            errback(TimeoutError("delivery timed out"))
        return self


def test_a_replay_whose_events_the_broker_did_not_acknowledge_says_so_and_that_running_it_again_is_safe():
    events = [{"event_id": f"e{i}", "user_id": "u", "item_id": "i", "type": "click", "ts": i, "schema_version": 1}
              for i in range(10)]
    with pytest.raises(ReplayIncomplete) as failed:
        produce_events(Settings(), events, producer=FailingProducer())
    said = str(failed.value)
    assert "acknowledged 5 of 10 events" in said and "delivery timed out" in said
    assert "running the same command again is safe" in said


class StuckProducer:
    """A producer whose records never get acknowledged (the broker is away), as kafka-python 3.0.12 is:
    close(timeout) first flush(timeout)es, which raises KafkaTimeoutError when records are pending."""

    def __init__(self, interrupt_at=None, send_error=None, acked=0):
        self.n, self.closes = 0, []
        self.interrupt_at, self.send_error, self.acked = interrupt_at, send_error, acked

    def send(self, topic, key=None, value=None):
        self.n += 1
        if self.send_error is not None and self.n >= 2:
            raise self.send_error
        if self.interrupt_at is not None and self.n >= self.interrupt_at:
            raise KeyboardInterrupt
        return Acked() if self.n <= self.acked else Pending()

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        self.closes.append(timeout)
        if timeout is None:
            # the real one waits for the delivery timeout (120 s) here; fail loudly instead of hanging
            raise AssertionError("close() without a timeout after Ctrl-C: hangs until delivery_timeout_ms")
        raise KafkaTimeoutError("Timeout waiting for future")


class Pending:
    def add_callback(self, cb):
        return self

    def add_errback(self, eb):
        return self


class Acked(Pending):
    def add_callback(self, cb):
        cb(SimpleNamespace(topic="events.click", partition=0, offset=0))
        return self


def _log(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text("".join(
        f'{{"event_id":"e{i}","user_id":"u{i}","item_id":"i","type":"click","ts":{1700000000000 + i},'
        f'"schema_version":1}}\n' for i in range(5)))
    return path


def test_ctrl_c_with_the_broker_away_says_rerun_is_safe_and_stays_a_keyboard_interrupt(tmp_path, monkeypatch, capsys):
    producer = StuckProducer(interrupt_at=4, acked=2)
    monkeypatch.setattr(replay, "ensure_topics", lambda settings: None)
    monkeypatch.setattr(replay, "make_producer", lambda settings, rate=None: producer)
    with pytest.raises(KeyboardInterrupt):  # close(timeout=5) raised a KafkaTimeoutError over it
        replay.replay(Settings(), _log(tmp_path), "jsonl", progress_stream=None)
    # how far it got (an operator's trial: a SIGTERM'd replay said nothing of it)
    assert ("interrupted: the broker acknowledged 2 of the log's 5 events; running the same command again is safe"
            in capsys.readouterr().err)
    assert None not in producer.closes


def test_a_log_whose_every_event_a_worker_would_refuse_is_not_sent_and_says_what_to_do(tmp_path, monkeypatch):
    """It replayed 0 events and sent the whole log to the dead-letter topic, exit 0 (helper-139 #5)."""
    from stream_app.errors import InputFileError

    def no_producer(*args, **kwargs):
        raise AssertionError("a producer was made for a log of which no event is sent")

    monkeypatch.setattr(replay, "ensure_topics", lambda settings: None)
    monkeypatch.setattr(replay, "make_producer", no_producer)
    with pytest.raises(InputFileError, match="a worker would take none of its 5 events .*nothing sent; for an old "
                                             "log, unset STREAM_APP_MAX_AGE_MS"):
        replay.replay(Settings(max_age_ms=1000), _log(tmp_path), "jsonl", progress_stream=None)


def test_a_send_that_times_out_mid_replay_is_a_replay_incomplete_not_a_traceback():
    # kafka-python's send() raises KafkaTimeoutError("Failed to update metadata after 60.0 secs.") for the first
    # record of a topic while the broker is away: the CLI's kafka_unreachable() wants "bootstrap" in it -> traceback
    events = [{"event_id": f"e{i}", "user_id": "u", "item_id": "i", "type": "click", "ts": i, "schema_version": 1}
              for i in range(4)]
    producer = StuckProducer(send_error=KafkaTimeoutError("Failed to update metadata after 60.0 secs."))
    with pytest.raises(replay.ReplayIncomplete):
        replay.produce_events(Settings(), events, producer=producer)


def test_the_summary_says_what_the_online_retail_reader_left_out_on_purpose():
    from stream_app.tools.recorded import OnlineRetailStats, load_sorted

    stats = OnlineRetailStats()
    events, _ = load_sorted("stream_app/data/online-retail-sample.csv", "online-retail", stats)
    summary = replay.ReplaySummary("sample.csv", {"events.purchase": len(events)}, skipped=stats)
    line = next(line for line in summary.lines() if "skipped" in line)
    assert stats.skipped > 0 and f"skipped {stats.skipped:,} lines" in line
    assert f"{stats.guest:,} without a customer" in line and f"{stats.cancelled:,} cancellations" in line


def test_replays_dead_letters_are_keyed_by_their_user_as_a_workers_are():
    from types import SimpleNamespace

    from stream_app.contracts import Rejection, Source
    from stream_app.tools.recorded import LineRejection

    class Producer:
        def __init__(self):
            self.sent = []

        def send(self, topic, key=None, value=None):
            self.sent.append((topic, key))
            outcome = SimpleNamespace(add_callback=lambda fn: (fn(SimpleNamespace(topic=topic, partition=0,
                                                                                 offset=len(self.sent))), outcome)[1],
                                      add_errback=lambda fn: outcome)
            return outcome

        def flush(self):
            pass

    settings, producer = Settings(), Producer()
    refused = Rejection("timestamp_out_of_range", "days ahead", Source("log.jsonl"), b"u7", b"{}")
    unreadable = LineRejection(3, Rejection("invalid_json", "line 3", Source("log.jsonl"), None, b"{"))
    replay.dead_letter_lines(settings, [refused, unreadable], producer)
    assert producer.sent == [(settings.topics.dlq, b"u7"), (settings.topics.dlq, None)]


def test_only_records_a_worker_accepts_for_their_time_tell_where_the_input_topics_end_in_event_time():
    from types import SimpleNamespace

    settings, now = Settings(), 1_796_000_000_000

    def at(value: bytes | None) -> int | None:
        return replay.accepted_time(SimpleNamespace(value=value, timestamp=now), settings)

    assert at(b'{"ts": %d, "user_id": "u"}' % (now - 5)) == now - 5
    for refused in (b'{"item_id": "i1", "title": "Lamp"}', None, b"[1]", b"not json", b'{"ts": "soon"}',
                    b'{"ts": true}', b'{"ts": %d}' % (now + 30 * 86_400_000)):  # a catalogue record, days ahead
        assert at(refused) is None, refused


def test_progress_lines_give_the_share_sent_not_its_tenth_rounded_down():
    """A six-event replay printed "1/6 (10%)" and "2/6 (30%)"."""
    import io

    said = io.StringIO()
    progress = replay.Progress(6, said)
    for done in range(1, 7):
        progress.update(done)
    assert said.getvalue().splitlines()[:3] == ["replay: 1/6 (16%)", "replay: 2/6 (33%)", "replay: 3/6 (50%)"]


def test_a_run_past_its_first_minute_says_the_time_left_and_a_tracked_pass_says_its_progress():
    import io

    from stream_app.tools import progress as progress_module

    clock = [1000.0]
    said = io.StringIO()
    progress = progress_module.Progress(4000, said, label="evaluate", clock=lambda: clock[0])
    taken = []
    for event in progress_module.Tracked(range(4000), progress, every=100):
        taken.append(event)
        clock[0] += 0.1  # 10 events/s: 400 s in all
    assert taken == list(range(4000))
    lines = said.getvalue().splitlines()
    assert lines[:3] == ["evaluate: 100/4000 (2%)", "evaluate: 400/4000 (10%)",
                         "evaluate: 800/4000 (20%), about 5 min to go"]
    assert lines[-2:] == ["evaluate: 3600/4000 (90%), about 40 s to go", "evaluate: 4000/4000 (100%)"]
    assert [progress_module.time_said(s) for s in (4, 59.6, 719, 3900)] == ["4 s", "1 min", "12 min", "1 h 05 min"]


def test_a_movielens_rating_off_the_half_star_scale_is_that_lines_rejection_keyed_by_its_user(tmp_path):
    """MovieLens rates 0.5 to 5.0 in half stars (ml-100k and ml-1m in whole stars 1 to 5, which fit): a 7, a 0, a 3.3
    or a rating out of 10 was an event, its rating taken into the context unsaid."""
    from stream_app.tools.recorded import load_sorted

    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n1,31,0.5,1260759144\n1,32,5.0,1260759145\n2,33,3,1260759146\n"
                       "3,34,7,1260759147\n4,35,0,1260759148\n5,36,3.3,1260759149\n6,37,-1.5,1260759150\n"
                       "7,38,5.5,1260759151\n")
    events, rejected = load_sorted(ratings, "movielens")
    assert [e["context"]["rating"] for e in events] == [0.5, 5.0, 3.0]
    assert [(r.line, r.rejection.reason, r.rejection.key) for r in rejected] == [
        (line, "schema_violation", str(line - 2).encode()) for line in range(5, 10)]
    assert rejected[0].rejection.detail == (
        "line 5: cannot read the row (rating '7' is not a MovieLens rating: 0.5 to 5.0 in steps of 0.5)")
    assert [r.rejection.detail.split("(rating ")[1].split(" is")[0] for r in rejected] == [
        "'7'", "'0'", "'3.3'", "'-1.5'", "'5.5'"]


def test_a_log_lines_number_past_64_bits_is_named_as_the_line_writes_it(tmp_path):
    """A replayed line's schema_version of 1180000000000000000000 was named 1.18e+21 in its dead letter (orjson's
    float for an integer past 64 bits), a value not in the log."""
    from stream_app.tools.recorded import load_sorted

    log = tmp_path / "events.jsonl"
    event = '{"event_id": "e", "user_id": "u", "item_id": "i", "type": "click", "ts": 5, "schema_version": '
    log.write_text(f"{event}1}}\n{event}1180000000000000000000}}\n")
    (_,), (refused,) = load_sorted(log, "jsonl")
    assert refused.rejection.detail.startswith("line 2: schema_version 1180000000000000000000 is not one this release")


def test_with_a_limit_the_summary_says_the_skipped_and_rejected_lines_are_the_whole_files():
    """A walkthrough: `replay ... --limit 2000` printed "skipped 1,281 lines" counted over the whole file, unlabelled,
    where evaluate says so."""
    from stream_app.tools.recorded import OnlineRetailStats
    from stream_app.tools.sorted_log import SortedLog

    stats = OnlineRetailStats()
    with SortedLog.read("stream_app/data/online-retail-sample.csv", "online-retail", lambda event: None, stats,
                        limit=100) as log:
        cut = log.cut.events_beyond
    assert cut is True
    summary = replay.ReplaySummary("sample.csv", {"events.purchase": 100}, rejected=3, skipped=stats, limit_cut=cut)
    said = "(counted over the whole file, of which --limit replayed the first 100 events in time)"
    assert len([line for line in summary.lines() if said in line and ("skipped" in line or "rejected" in line)]) == 2
    assert not [line for line in replay.ReplaySummary("s.csv", {"events.purchase": 5}, rejected=3).lines() if said in line]


class Recording(Acked):
    """A producer whose every record is acknowledged, keeping what was sent."""

    def __init__(self):
        self.sent = []

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, value))
        return self

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def test_a_refused_events_dead_letter_and_what_replay_says_of_it_name_its_line_of_the_log(tmp_path, monkeypatch):
    """They named its event id only, where a rejected line's name its line: a csv's header puts the line of an
    event one past its place among the events read (Online Retail's skipped rows, more)."""
    import time

    import orjson

    from stream_app.errors import InputFileError
    from stream_app.tools import redrive

    now, settings, producer = int(time.time() * 1000), Settings(), Recording()
    monkeypatch.setattr(replay, "ensure_topics", lambda settings: None)
    monkeypatch.setattr(replay, "make_producer", lambda settings, rate=None: producer)
    monkeypatch.setattr(redrive.ErasureCheck, "read", classmethod(lambda cls, settings: None))
    path = tmp_path / "log.csv"
    path.write_text(f"user_id,item_id,type,ts\nu1,i1,click,{now - 1000}\nu2,i2,click,{now + 3 * 86_400_000}\n")
    summary = replay.replay(settings, path, "csv", progress_stream=None)
    [letter] = [orjson.loads(value) for topic, value in producer.sent if topic == settings.topics.dlq]
    assert letter["reason"] == "timestamp_out_of_range" and letter["source"]["line"] == 3
    assert letter["detail"].startswith("line 3: event 'csv-") and "STREAM_APP_MAX_FUTURE_MS" in letter["detail"]
    assert summary.first_rejection.startswith("timestamp_out_of_range (line 3: event 'csv-")
    path.write_text(f"user_id,item_id,type,ts\nu1,i1,click,{now + 3 * 86_400_000}\n")  # none taken: nothing sent
    with pytest.raises(InputFileError, match=r"\(timestamp_out_of_range, the first as line 2: event 'csv-\w+': ts "):
        replay.replay(settings, path, "csv", progress_stream=None)


def test_a_terminals_bar_is_labelled_and_an_open_one_is_ended_before_an_error_is_printed():
    import io

    from stream_app.tools.progress import Progress, Tracked

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    shown = Terminal()
    with pytest.raises(ValueError):
        for done in Tracked(range(10), Progress(10, shown, label="evaluate"), every=5):
            if done == 7:
                raise ValueError("stopped")
    assert shown.getvalue().startswith("\revaluate [###############...............] 5/10 ")
    assert shown.getvalue().endswith("\n")  # the error's message goes on a line of its own
