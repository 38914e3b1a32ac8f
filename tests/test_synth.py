import collections
import hashlib
import itertools

import orjson

from stream_app.tools.synth import SynthConfig, generate, truth_path, write

# sha256 of the first 300 lines of the default 3,000-event log, taken before `no_repeat` existed
DEFAULT_FIRST_LINES_SHA256 = "1bcf8920d22ec49e1022e17b12ab8e1006989220cace63f2f27bb1371b00c012"


def test_default_log_is_unchanged_by_the_no_repeat_option():
    events, _ = generate(SynthConfig(events=3000))
    head = b"".join(orjson.dumps(e) + b"\n" for e in itertools.islice(events, 300))
    assert hashlib.sha256(head).hexdigest() == DEFAULT_FIRST_LINES_SHA256


def test_no_repeat_never_pairs_a_user_with_an_item_twice(tmp_path):
    events, _ = generate(SynthConfig(events=3000, no_repeat=True))
    events = list(events)
    pairs = collections.Counter((e["user_id"], e["item_id"]) for e in events)
    assert len(events) > 1000 and max(pairs.values()) == 1
    assert {e["type"] for e in events} == {"browse", "click", "purchase"}
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    summary = write(SynthConfig(events=500, no_repeat=True), tmp_path / "e.jsonl")
    assert orjson.loads(truth_path(summary["log"]).read_bytes())["config"]["no_repeat"] is True
    write(SynthConfig(events=500), tmp_path / "d.jsonl")
    assert "no_repeat" not in orjson.loads(truth_path(tmp_path / "d.jsonl").read_bytes())["config"]


def test_the_truth_and_the_summary_count_the_users_of_the_log_only(tmp_path):
    """Sessions are generated ahead of the events written: a user whose only session --events cut off was counted
    in the summary ("of 45 users" for a log of 44) and listed in the ground truth without an event."""
    out = tmp_path / "events.jsonl"
    summary = write(SynthConfig(events=2000), out)
    logged = {orjson.loads(line)["user_id"] for line in out.read_bytes().splitlines()}
    truth = orjson.loads(truth_path(out).read_bytes())["users"]
    assert set(truth) == logged and summary["users"] == len(logged)
    generated_events, generated_users = generate(SynthConfig(events=2000))
    list(generated_events)
    assert sum(1 for user in generated_users.values() if user.sessions > 0) > len(logged)  # the case is there


def test_synth_days_are_bounded_by_the_event_times_the_schema_takes():
    import argparse

    import pytest

    from stream_app.cli.arg_types import synth_days

    assert synth_days("28") == 28 and synth_days("356524") == 356_524
    with pytest.raises(argparse.ArgumentTypeError, match="at most 356,524 days"):
        synth_days("356525")
