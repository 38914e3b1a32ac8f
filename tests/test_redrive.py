"""`stream-app redrive`: dead letters sent back to their topics once what refused them is fixed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import pytest
from conftest import wait_until
from kafka import KafkaProducer
from test_pipeline import read_all

from stream_app.config import Settings
from stream_app.contracts import REDRIVE_HEADER, REDRIVE_OF_HEADER, ErasureRequest, Rejection, Source
from stream_app.errors import StreamAppError
from stream_app.partitioning import partition_of
from stream_app.store.redis_store import read_profile
from stream_app.stream.erasures import ErasedUsers
from stream_app.tools.consume import read_to_end
from stream_app.tools.processes import wait_ready_workers
from stream_app.tools.redrive import ErasureCheck, Resend, check_reasons, redrive, resend_of


def _event(event_id: str, user: str, kind: str = "click", **extra) -> dict:
    return {"event_id": event_id, "user_id": user, "item_id": f"i-{event_id}", "type": kind,
            "ts": int(time.time() * 1000) - 60_000, "schema_version": 1, **extra}


def ranges_of(letters) -> str:
    by_partition: dict[int, list[int]] = {}
    for r in letters:
        by_partition.setdefault(r.partition, []).append(r.offset)
    return ", ".join(f"partition {p} offsets {min(o)} to {max(o)}" for p, o in sorted(by_partition.items()))


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_app.cli", "redrive", *args], capture_output=True,
                          text=True, env={**os.environ, **settings.to_env()}, timeout=120)


def _letter(reason: str, topic: str, payload: bytes, key: bytes | None = b"u1", line: int | None = None,
            stamp: int | None = None) -> dict:
    source = Source(topic, None if line else 0, None if line else 5, stamp)
    record = Rejection(reason, "why", source, key, payload).to_record()
    if line:
        record["source"]["line"] = line
    return orjson.loads(orjson.dumps(record))


def test_a_letter_is_sent_where_and_keyed_as_the_workers_require_or_says_why_it_cannot_be(make_settings):
    settings = make_settings()
    t = settings.topics
    event = _event("e1", "u1")
    on_wrong_topic = resend_of(_letter("type_topic_mismatch", t.purchase, orjson.dumps(event), b"u2", stamp=7),
                               b"u2", settings)
    assert (on_wrong_topic.topic, on_wrong_topic.key) == (t.click, b"u1")  # its type's topic, keyed by its user
    assert on_wrong_topic.record_ts == 7  # its record's timestamp: the time window judges it as it did
    assert not on_wrong_topic.counted  # refused at the gate: the item state never counted it
    failed = resend_of(_letter("processing_error", t.click, orjson.dumps(event)), b"u1", settings)
    counted_copy = {**_letter("timestamp_out_of_range", t.click, orjson.dumps(event))}
    counted_copy["source"]["counted"] = True  # a copy of a processing_error event, refused again
    assert failed.counted and resend_of(counted_copy, b"u1", settings).counted
    from_a_file = resend_of(_letter("timestamp_out_of_range", "/logs/a.jsonl", orjson.dumps(event)), b"u1", settings)
    assert from_a_file.topic == t.click and from_a_file.value == orjson.dumps(event)
    assert "correct the file" in resend_of(_letter("schema_violation", "/logs/a.csv", b"u,i", line=3), b"u1", settings)
    assert "not JSON" in resend_of(_letter("invalid_json", t.browse, b"{x"), b"u9", settings)
    raw = resend_of(_letter("schema_violation", t.browse, b'{"user_id": 5}'), b"u9", settings)
    assert (raw.topic, raw.key, raw.value) == (t.browse, b"u9", b'{"user_id": 5}')  # as it came
    truncated = {**_letter("payload_too_large", t.click, b"x"), "payload_truncated": True}
    assert "384 KiB" in resend_of(truncated, b"u1", settings)
    assert "not an input" in resend_of(_letter("bad_state", "x-changelog", b"\x80"), b"u1", settings)
    erasure = resend_of(_letter("key_mismatch", t.erasures, b'{"user_id": "u4"}', b"zz"), b"zz", settings)
    assert (erasure.topic, erasure.key) == (t.erasures, b"u4")
    tombstone = {**_letter("key_mismatch", t.click, b"", None), "payload_null": True}
    assert resend_of(tombstone, None, settings).value is None  # a null value stays null, not an empty one
    item = resend_of(_letter("key_mismatch", t.items, b'{"item_id": "i7", "title": "Mug"}', None), None, settings)
    assert (item.topic, item.key, item.ts) == (t.items, b"i7", None)  # a catalogue record, keyed by its item
    unread = resend_of(_letter("schema_violation", t.items, b'{"title": 5}', b"i8"), None, settings)
    assert (unread.topic, unread.key) == (t.items, b"i8")  # its item unknown: the key it came with
    # an item listed over 366 days after its record's time: sent again with that time, it is refused again
    far = resend_of(_letter("timestamp_out_of_range", t.items, b'{"item_id": "i9", "title": "Mug", '
                                                              b'"listed_at": 32503680000000}', None), None, settings)
    assert isinstance(far, str) and "correct the record and produce it again" in far


def test_a_letter_sends_its_inputs_own_headers_on_and_says_why_not_when_they_cannot_be_read():
    settings = Settings()
    t = settings.topics
    headers = (("traceparent", b"00-abc"), ("raw", b"\xff"), ("none", None), ("big", b"x" * 20_000))
    letter = orjson.loads(orjson.dumps(Rejection("key_mismatch", "why", Source(t.click, 0, 5, 7, headers=headers),
                                                 b"u2", orjson.dumps(_event("e1", "u1"))).to_record()))
    resend = resend_of(letter, b"u2", settings)
    assert resend.headers == (("traceparent", b"00-abc"), ("raw", b"\xff"), ("none", None))
    assert resend.headers_left_out == 1
    assert resend_of(_letter("key_mismatch", t.click, orjson.dumps(_event("e2", "u1"))), b"u1", settings).headers == ()
    letter["source"]["headers"] = [{"key": "raw", "value_base64": "not base64!"}]
    assert "source.headers" in resend_of(letter, b"u2", settings)


def test_a_foreign_record_whose_source_is_no_object_is_left_for_that_not_for_its_headers():
    """Another producer's record on the dead-letter topic, its source a topic's name (or a list, a number): the redrive
    left it as one whose source.headers could not be read."""
    settings = Settings()
    letter = _letter("key_mismatch", settings.topics.click, orjson.dumps(_event("e1", "u1")))
    for source, kind in ((settings.topics.click, "text"), ([settings.topics.click, 0, 5], "a list"), (5, "a number")):
        said = resend_of({**letter, "source": source}, b"u1", settings)
        assert isinstance(said, str) and said.startswith(f"its source is {kind}, not an object"), said
        assert "headers" not in said
    assert isinstance(resend_of({**letter, "source": None}, b"u1", settings), Resend)  # none: the event says where


def test_a_letter_of_a_schema_version_this_release_does_not_read_is_left_with_why():
    """helper-153: `dead-letters` says such a letter is of another release, but the redrive sent it as one of its own."""
    settings = Settings()
    letter = _letter("key_mismatch", settings.topics.click, orjson.dumps(_event("e1", "u1")))
    assert isinstance(resend_of(letter, b"u1", settings), Resend)
    for version in (2, 9, "1"):
        said = resend_of({**letter, "schema_version": version}, b"u1", settings)
        assert said == (f"the letter's schema_version {version!r} is not one this release reads (1): re-drive it "
                        "with the release that wrote it"), said
    assert isinstance(resend_of({**letter, "schema_version": 1.0}, b"u1", settings), Resend)


def test_an_erased_users_inputs_from_before_the_erasure_are_not_put_back_on_a_topic():
    settings = Settings()
    erased = ErasedUsers({}, settings, "", "")
    erased.record(ErasureRequest("r1", "u1", 1_000, Source(settings.topics.erasures, 0, 0)))
    check = ErasureCheck(erased, {"u2": 3_000})  # u2: a request on the erasures topic, not applied yet
    click = settings.topics.click

    def held(user: str, ts: int | None, letter_key: bytes | None = None, value: bytes = b"{}") -> bool:
        return check.holds_back(Resend(click, user.encode(), value, ts), letter_key)

    assert held("u1", 1_000) and held("u1", None)  # no time to tell: held back
    assert not held("u1", 1_001)  # after the erasure: the workers apply it
    assert held("u2", 2_999) and not held("u3", 5)
    # a broken line sent under another key still names its user
    assert held("k", None, b"k", b'{"user_id": "u1", "item_id": "secret", broken')
    check.add(Resend(settings.topics.erasures, b"u3", b'{"user_id": "u3", "requested_at": 50}', None))
    assert held("u3", 40)  # an erasure request sent in the same redrive
    # workers with STREAM_APP_REPLAY_ERASED apply such events (a replay meant to restore the users): sent
    check = ErasureCheck(erased, {"u2": 3_000}, replay_erased=True)
    assert not held("u1", 1_000) and not held("u2", 2_999) and not held("u1", None)


def test_an_erasure_request_the_workers_refuse_as_dated_ahead_holds_nothing_back(monkeypatch):
    """Workers dead-letter a request dated beyond MAX_FUTURE_MS after its record, and apply the user's events: a
    redrive that trusted its requested_at held the user's letters back until then (a century: for good)."""
    from types import SimpleNamespace

    from stream_app.tools import redrive as redrive_module

    settings = Settings()
    now = 1_800_000_000_000
    records = [SimpleNamespace(value=orjson.dumps({"user_id": "ahead", "requested_at": now + 100 * 365 * 86_400_000}),
                               timestamp=now),
               SimpleNamespace(value=orjson.dumps({"user_id": "due", "requested_at": now + 1_000}), timestamp=now)]
    monkeypatch.setattr(redrive_module, "read_to_end", lambda settings, topic: records)
    monkeypatch.setattr(redrive_module, "erased_users", lambda settings: ErasedUsers({}, settings, "", ""))
    check = ErasureCheck.read(settings)
    assert check.requested == {"due": now + 1_000}
    assert not check.holds_back(Resend(settings.topics.click, b"ahead", b"{}", now + 5_000), None)


def test_a_redrive_of_some_reasons_says_the_letters_of_others_were_left_alone_as_not_asked_for(monkeypatch, capsys):
    """A walkthrough: `redrive --reason schema_violation --dry-run` said "never sent ... invalid_json 1", a reason the
    user never asked for, as if the redrive had refused it. `--reason all` (every reason a fix can make pass) still
    says which are never sent."""
    from argparse import Namespace
    from collections import Counter

    from stream_app.cli.topic_commands import cmd_redrive
    from stream_app.tools import redrive as redrive_module
    from stream_app.tools.redrive import RedriveSummary

    settings = Settings()
    summary = RedriveSummary(read=6, sent=Counter({settings.topics.click: 1}), by_reason=Counter(schema_violation=1),
                             other_reasons=Counter(invalid_json=1, processing_error=2, quota_exceeded=1,
                                                   timestamp_out_of_range=1), dry_run=True,
                             other_unsendable=Counter({("timestamp_out_of_range", "a line of a file: fix it"): 1}))
    monkeypatch.setattr(redrive_module, "redrive", lambda *args, **kwargs: summary)

    def said(*reasons: str) -> str:
        cmd_redrive(Namespace(reason=list(reasons), from_start=False, dry_run=True, json=False))
        return capsys.readouterr().out

    filtered = said("schema_violation")
    assert "would send 1 again: events.click=1 (schema_violation 1)" in filtered
    assert "never sent" not in filtered
    assert "  not asked for (--reason), left alone: processing_error 2 (a redrive that names them sends them); " \
           "timestamp_out_of_range 1 (no redrive sends these: a line of a file: fix it); " \
           "invalid_json 1 (no redrive sends these: no fix makes them pass)" in filtered
    everything = said("all")
    assert "never sent (no fix makes them pass; `dead-letters` shows them): invalid_json 1" in everything
    # a reason of a newer release or another producer: under `all` too, said (it went unsaid), and not as sendable
    unknown = "  reasons this release does not know, left alone (`dead-letters` shows them): quota_exceeded 1"
    assert unknown in everything and unknown in filtered and "quota_exceeded 1 (a redrive" not in filtered


def test_letters_of_reasons_not_asked_for_that_no_redrive_can_send_are_said_as_such_with_why(monkeypatch):
    """A new user's walkthrough: `redrive --reason schema_violation --dry-run` said "timestamp_out_of_range 1 (a
    redrive that names them sends them)" of a letter `replay` wrote for a line of a file; naming its reason sent
    nothing ("a line of a file: correct the file ...")."""
    from types import SimpleNamespace

    from kafka import TopicPartition

    from stream_app.tools import redrive as redrive_module

    settings = Settings()
    from_file = _letter("timestamp_out_of_range", "/logs/a.csv", b"u9,i,click,5", b"u9", line=3)
    from_topic = _letter("processing_error", settings.topics.click, orjson.dumps(_event("e1", "u1")))
    never = _letter("invalid_json", "/logs/a.csv", b"{broken", b"u9", line=4)  # said apart: no fix makes it pass
    records = [SimpleNamespace(value=orjson.dumps(letter), key=b"u1", partition=0, offset=offset)
               for offset, letter in enumerate([from_file, from_topic, never])]
    monkeypatch.setattr(redrive_module, "positions", lambda settings, reasons: {reason: {} for reason in reasons})
    monkeypatch.setattr(redrive_module, "read_range", lambda settings, topic, from_offsets: (
        records, {TopicPartition(topic, 0): 0}, {TopicPartition(topic, 0): 3}))
    summary = redrive(settings, {"schema_violation"}, dry_run=True)
    assert summary.other_reasons == {"timestamp_out_of_range": 1, "processing_error": 1, "invalid_json": 1}
    (((reason, why), n),) = summary.other_unsendable.items()
    assert (reason, n) == ("timestamp_out_of_range", 1) and why.startswith("a line of a file: correct the file")
    assert summary.as_dict()["other_reasons_no_redrive_sends"] == [{"reason": reason, "why": why, "letters": 1}]


def test_the_reasons_must_be_named_and_known():
    with pytest.raises(StreamAppError, match="--reason"):
        check_reasons([])
    with pytest.raises(StreamAppError, match="unknown reason typo"):
        check_reasons(["typo"])
    with pytest.raises(StreamAppError, match="invalid_json letters cannot be re-driven: its bytes are not JSON"):
        check_reasons(["invalid_json"])
    assert "processing_error" in check_reasons(["all"]) and "invalid_json" not in check_reasons(["all"])


def test_redrive_sends_what_was_refused_once_fixed_and_each_letter_once(make_settings, start_worker,
                                                                         redis_client):
    settings = make_settings(max_payload_bytes=2048)
    worker = start_worker(settings)
    t = settings.topics
    wrong_key, wrong_topic = _event("k1", "u1"), _event("t1", "u1")
    wrong_partition = _event("p1", "u1")
    large = _event("big1", "u1", context={"blob": "x" * 4000})
    other_partition = (partition_of("u1", settings.partitions) + 1) % settings.partitions
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    producer.send(t.click, key=b"u2", value=orjson.dumps(wrong_key),
                  headers=[("traceparent", b"00-trace-01"), ("raw", b"\xff\x00")])  # the producer's own: sent on
    producer.send(t.purchase, key=b"u1", value=orjson.dumps(wrong_topic))
    producer.send(t.click, key=b"u1", value=orjson.dumps(wrong_partition), partition=other_partition)
    producer.send(t.click, key=b"u1", value=orjson.dumps(large))
    producer.send(t.click, key=b"u1", value=b"{not json")
    producer.flush()
    letters = read_all(settings.kafka_bootstrap_servers, t.dlq, 5)
    assert sorted(orjson.loads(r.value)["reason"] for r in letters) == sorted(
        ["key_mismatch", "type_topic_mismatch", "wrong_partition", "payload_too_large", "invalid_json"])

    dry = orjson.loads(_cli(settings, "--reason", "all", "--dry-run", "--json").stdout)
    assert dry["read"] == 5 and dry["sent"] == {t.click: 4} and dry["other_reasons"] == {"invalid_json": 1}
    assert dry["by_reason"] == {"key_mismatch": 1, "type_topic_mismatch": 1, "wrong_partition": 1,
                                "payload_too_large": 1}

    fixable = ["--reason", "key_mismatch", "--reason", "type_topic_mismatch", "--reason", "wrong_partition"]
    first = _cli(settings, *fixable)
    assert first.returncode == 0, first.stderr
    assert f"sent 3 again: {t.click}=3" in first.stdout
    # invalid_json not as one a redrive that names it sends: `--reason invalid_json` is refused (an operator's trial)
    assert ("not asked for (--reason), left alone: payload_too_large 1 (a redrive that names them sends them); "
            "invalid_json 1 (no redrive sends these: no fix makes them pass)\n") in first.stdout
    assert f"({ranges_of(letters)})" in first.stdout  # the last offset read, not the next one
    stamps = {orjson.loads(orjson.loads(r.value)["payload_text"])["event_id"]: orjson.loads(r.value)["source"]["timestamp"]
              for r in letters if orjson.loads(r.value)["reason"] != "invalid_json"}
    resent = [r for r in read_to_end(settings, t.click) if (REDRIVE_HEADER, b"key_mismatch") in r.headers]
    assert [(orjson.loads(r.value)["event_id"], r.timestamp) for r in resent] == [("k1", stamps["k1"])]
    (copied,) = [r for r in letters if orjson.loads(r.value)["reason"] == "key_mismatch"]
    assert (REDRIVE_OF_HEADER, f"{t.dlq}/{copied.partition}/{copied.offset}".encode()) in resent[0].headers
    assert orjson.loads(copied.value)["source"]["headers"] == [{"key": "traceparent", "value_text": "00-trace-01"},
                                                               {"key": "raw", "value_base64": "/wA="}]
    assert list(resent[0].headers)[:2] == [("traceparent", b"00-trace-01"), ("raw", b"\xff\x00")]
    recs = read_all(settings.kafka_bootstrap_servers, t.recommendations, 3)
    assert sorted(orjson.loads(r.value)["trigger_event_id"] for r in recs) == ["k1", "p1", "t1"]
    assert read_profile(redis_client, "u1", settings.namespace)["event_count"] == 3

    assert redrive(settings, {"key_mismatch"}).read == 0  # what the last redrive read is not read again

    # the limit raised: a worker started with the default takes the large event
    worker.stop()
    start_worker(settings.replace(max_payload_bytes=64 * 1024))
    again = redrive(settings, {"payload_too_large"})  # its letters were left unread by the redrives of others
    assert again.read == 5 and again.sent == {t.click: 1}
    assert redrive(settings, {"key_mismatch"}, from_start=True).sent == {t.click: 1}  # k1 once more
    wait_until(lambda: read_profile(redis_client, "u1", settings.namespace).get("event_count") == 4, 60,
               "the large event applied, k1 skipped as applied before")
    time.sleep(2)
    assert read_profile(redis_client, "u1", settings.namespace)["event_count"] == 4
    # a dead-letter topic recreated: the positions of earlier redrives are past its end, so it is read from its start
    producer.send(t.redrive_positions, key=b"wrong_partition", value=orjson.dumps(
        {"reason": "wrong_partition", "topic": t.dlq, "offsets": {str(p): 10**6 for p in range(settings.partitions)},
         "written_at": 1, "schema_version": 1}))
    producer.flush()
    recreated = redrive(settings, {"wrong_partition"}, dry_run=True)
    assert recreated.restarted and recreated.sent == {t.click: 1}


def test_a_namespace_without_a_dead_letter_topic_is_named(make_settings):
    settings = make_settings()  # no worker ever ran here
    with pytest.raises(StreamAppError, match=f"there is no dead-letter topic {settings.topics.dlq}"):
        redrive(settings, {"key_mismatch"})


def test_bad_records_of_the_items_topic_are_dead_lettered_once_across_the_workers_and_can_be_re_driven(
        make_settings, start_worker):
    settings = make_settings()
    t = settings.topics
    workers = [start_worker(settings, wait_ready=False) for _ in range(2)]
    wait_ready_workers(settings, workers, 90)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    good = {"item_id": "i1", "title": "Blue mug", "schema_version": 1}
    producer.send(t.items, key=b"i1", value=orjson.dumps(good))
    producer.send(t.items, key=b"i2", value=b"{not json")
    producer.send(t.items, key=b"i3", value=orjson.dumps({"item_id": "i3", "schema_version": 1}))  # no title
    producer.send(t.items, key=b"wrong", value=orjson.dumps({**good, "item_id": "i4", "title": "Red mug"}))
    producer.flush()
    letters = [orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap_servers, t.dlq, 3)]
    time.sleep(3)  # the other worker's letters, were it to write them, would be there by now
    letters = [orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap_servers, t.dlq, 3, timeout=5)]
    assert sorted((letter["reason"], letter["source"]["offset"]) for letter in letters) == [
        ("invalid_json", 1), ("key_mismatch", 3), ("schema_violation", 2)]
    assert {letter["source"]["topic"] for letter in letters} == {t.items}

    summary = redrive(settings, {"key_mismatch", "schema_violation"})
    assert summary.sent == {t.items: 2}  # nothing held back as an erased user's: an item is not a user
    resent = [r for r in read_to_end(settings, t.items) if r.headers]
    assert sorted((r.key, r.headers[0][1]) for r in resent) == [(b"i3", b"schema_violation"), (b"i4", b"key_mismatch")]
    # the re-driven i4 is an item now; i3, still without a title, comes back as a new letter (once)
    again = [orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap_servers, t.dlq, 4)]
    assert sorted(letter["reason"] for letter in again) == [
        "invalid_json", "key_mismatch", "schema_violation", "schema_violation"]


def test_a_letter_written_twice_by_a_redone_batch_is_sent_again_once(monkeypatch):
    """At-least-once: a batch redone after a crash writes its dead letters again (the same letter_id); a redrive sent
    the input once per copy (helper-143)."""
    from types import SimpleNamespace

    from kafka import TopicPartition

    from stream_app.tools import redrive as redrive_module

    settings = Settings()
    payload = orjson.dumps(_event("k1", "u1"))
    letter = Rejection("key_mismatch", "why", Source(settings.topics.click, 0, 5), b"u2", payload).to_record()
    other = Rejection("key_mismatch", "why", Source(settings.topics.click, 0, 6), b"u2", payload).to_record()
    records = [SimpleNamespace(value=orjson.dumps(found), key=b"u2", partition=0, offset=offset)
               for offset, found in enumerate((letter, {**letter, "rejected_at": 9}, other))]
    tp = TopicPartition(settings.topics.dlq, 0)
    monkeypatch.setattr(redrive_module, "positions", lambda settings, reasons: {r: {} for r in reasons})
    monkeypatch.setattr(redrive_module, "read_range", lambda settings, topic, from_offsets: (records, {tp: 0}, {tp: 3}))
    monkeypatch.setattr(redrive_module.ErasureCheck, "read",
                        classmethod(lambda cls, settings: SimpleNamespace(add=lambda resend: None,
                                                                          holds_back=lambda resend, key: False)))
    summary = redrive(settings, {"key_mismatch"}, dry_run=True)
    assert summary.sent == {settings.topics.click: 2}  # the letter once, and the other input's letter
    assert sum(summary.left.values()) == 1 and "redone batch" in next(iter(summary.left))


def test_a_record_on_the_dead_letter_topic_that_is_no_letter_of_ours_is_left_with_why_not_a_traceback(monkeypatch):
    """Another producer's records on the dead-letter topic: a `payload_base64` that is not base64 (or not text) and a
    `reason` that is an object stopped `redrive --dry-run` with a traceback (helper-152), every letter after them
    unsent."""
    from types import SimpleNamespace

    from kafka import TopicPartition

    from stream_app.tools import redrive as redrive_module

    settings = Settings()
    good = Rejection("key_mismatch", "why", Source(settings.topics.click, 0, 5), b"u2",
                     orjson.dumps(_event("k1", "u1"))).to_record()
    bare = {key: value for key, value in good.items() if key not in ("payload_text", "letter_id")}
    found = [{**bare, "payload_base64": "!!!notbase64"}, {**bare, "payload_base64": 5}, {**good, "reason": {"a": 1}},
             {**good, "reason": ["key_mismatch"]}, good]
    records = [SimpleNamespace(value=orjson.dumps(letter), key=b"u2", partition=0, offset=offset)
               for offset, letter in enumerate(found)]
    tp = TopicPartition(settings.topics.dlq, 0)
    monkeypatch.setattr(redrive_module, "positions", lambda settings, reasons: {r: {} for r in reasons})
    monkeypatch.setattr(redrive_module, "read_range",
                        lambda settings, topic, from_offsets: (records, {tp: 0}, {tp: len(records)}))
    monkeypatch.setattr(redrive_module.ErasureCheck, "read",
                        classmethod(lambda cls, settings: SimpleNamespace(add=lambda resend: None,
                                                                          holds_back=lambda resend, key: False)))
    summary = redrive(settings, {"key_mismatch"}, dry_run=True)
    assert summary.sent == {settings.topics.click: 1}  # the letter of ours after them
    assert summary.left == {"its payload is not kept as a dead letter keeps it (payload_text, or payload_base64 as "
                            "base64)": 2, "not a dead letter of this project (no JSON with a reason)": 2}
