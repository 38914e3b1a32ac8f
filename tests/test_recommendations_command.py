"""`stream-app recommendations USER` over fakes of the broker: which of the lists read it shows."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import kafka
import orjson

from stream_app.cli.topic_commands import cmd_recommendations
from stream_app.tools import consume, erase, redrive


def shown_lists(monkeypatch, capsys, recs: list[dict | bytes | None], json: bool = True, last: int = 10,
                erased_at: int | None = None) -> tuple[list[str], str]:
    """The trigger events of the lists the command prints (--json; else its text), and what it says on stderr
    (`recs`: a list, or a record's raw value, the n-th at Kafka time 1_000 + n; `erased_at`: the user's erasure)."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "localhost:9")  # never dialled: every reader below is a fake
    monkeypatch.setattr(kafka, "KafkaConsumer", lambda **kwargs: SimpleNamespace(
        partitions_for_topic=lambda topic: {0}, close=lambda: None))
    records = [SimpleNamespace(key=b"carol", value=rec if rec is None or isinstance(rec, bytes) else orjson.dumps(rec),
                               timestamp=1_000 + n, partition=0, offset=n)
               for n, rec in enumerate(recs)]
    monkeypatch.setattr(consume, "latest_records", lambda settings, topic, want, partition, match: [
        record for record in records if match(record)][-want:])
    monkeypatch.setattr(redrive.ErasureCheck, "read", classmethod(lambda cls, settings: SimpleNamespace(
        erased_time=lambda user: erased_at)))
    monkeypatch.setattr(erase, "reset_time", lambda settings, user: None)
    args = argparse.Namespace(user_id="carol", last=last, json=json, titles=False)
    assert cmd_recommendations(args) == 0
    out, err = capsys.readouterr()
    if not json:
        return [line.split()[3] for line in out.splitlines() if line.startswith("user ")], err
    return [orjson.loads(line)["trigger_event_id"] for line in out.splitlines()], err


def rec(trigger: str, rec_id: str | None = None) -> dict:
    return {**({"rec_id": rec_id} if rec_id is not None else {}), "user_id": "carol", "trigger_event_id": trigger,
            "event_ts": 1_000, "profile_version": 1, "model": {"ranking": "prior"},
            "items": [{"item_id": "item-1", "score": 1.0, "reasons": ["popular"]}]}


def test_lists_without_a_rec_id_are_each_shown_and_only_a_repeated_rec_id_is_shown_once(monkeypatch, capsys):
    """A list without a rec_id (another producer's) is never taken for one published again: `None` goes into the set
    of rec_ids seen, but the `rec_id is None` test comes first (a review read it as dropping every later one)."""
    shown, err = shown_lists(monkeypatch, capsys, [rec("e1"), rec("e2", "r2"), rec("e3"), rec("e2", "r2"), rec("e4")])
    assert shown == ["e1", "e2", "e3", "e4"]
    assert "1 of the lists read were published again" in err


def test_records_another_producer_wrote_are_passed_over_with_their_offsets_and_the_lists_still_shown(monkeypatch, capsys):
    """A rec_id that is a list made the set of rec_ids raise (helper-147); bytes that are not JSON, a tombstone and
    items of other shapes crashed the printing: each is passed over, counted, and named by partition@offset."""
    foreign = [{**rec("x1"), "rec_id": ["a", "list"]}, b"not json", None, {**rec("x2"), "items": "item-1"},
               {**rec("x3"), "items": [{"item_id": "item-1", "score": "high", "reasons": ["popular"]}]},
               {**rec("x4"), "model": "prior"}]
    for as_json in (True, False):
        shown, err = shown_lists(monkeypatch, capsys, [rec("e1", "r1"), *foreign, rec("e2", "r2")], json=as_json)
        assert shown == ["e1", "e2"], shown
        assert "6 of the records read are not lists a worker writes" in err
        assert "0@1, 0@2, 0@3, 0@4, 0@5 ..." in err
        assert "published again" not in err


def test_a_record_another_producer_wrote_takes_no_place_of_the_last_lists_nor_of_the_erased_ones(monkeypatch, capsys):
    """Such a record was one of the --last N read: after it, `recommendations carol` (the last 1) printed no list,
    with status 0. For an erased user, one written after the erasure was hidden as a list of before it (its event_ts
    taken for 0), not named."""
    shown, err = shown_lists(monkeypatch, capsys, [rec("e1", "r1"), rec("e2", "r2"), b"not json"], last=1)
    assert shown == ["e2"] and "1 of the records read are not lists a worker writes" in err and "0@2)" in err
    after = {**rec("e3", "r3"), "event_ts": 5_000}
    shown, err = shown_lists(monkeypatch, capsys, [rec("e1", "r1"), None, after], erased_at=1_000)
    assert shown == ["e3"] and "1 of the records read are not lists a worker writes" in err and "0@1)" in err
