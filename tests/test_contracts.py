import base64

import jsonschema
import orjson
import pytest

from stream_app.contracts import (
    ErasureRequest,
    Rejection,
    Source,
    check_erasure,
    check_input,
    dead_letter_users,
    input_headers,
    input_users,
    load_schema,
)
from stream_app.core.events import Event

SRC = Source("events.click", 3, 42)
VALID = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "click", "ts": 1_700_000_000_000,
         "schema_version": 1}


def check(payload, key=b"u1", expected="click", max_bytes=64 * 1024):
    return check_input(payload, key, SRC, expected, max_bytes)


def test_valid_event_with_every_optional_field():
    data = {**VALID, "type": "purchase", "stage": "order", "session_id": "s", "category": "c", "price": 9.5,
            "quantity": 2, "dwell_ms": 1200, "context": {"device": "mobile"}}
    event = check(orjson.dumps(data), expected="purchase")
    assert isinstance(event, Event)
    assert event.to_dict() == data


@pytest.mark.parametrize("payload,key,expected,reason", [
    (b"x" * 70_000, b"u1", "click", "payload_too_large"),
    (b"\xff\xfe{\"a\": 1}", b"u1", "click", "not_utf8"),
    (b"{not json", b"u1", "click", "invalid_json"),
    (orjson.dumps({k: v for k, v in VALID.items() if k != "ts"}), b"u1", "click", "schema_violation"),
    (orjson.dumps({**VALID, "type": "like"}), b"u1", "click", "schema_violation"),
    (orjson.dumps({**VALID, "ts": "yesterday"}), b"u1", "click", "schema_violation"),
    (orjson.dumps({**VALID, "stage": "cart"}), b"u1", "click", "schema_violation"),
    (orjson.dumps({**VALID, "surprise": 1}), b"u1", "click", "schema_violation"),
    (orjson.dumps(VALID), b"u1", "purchase", "type_topic_mismatch"),
    (orjson.dumps(VALID), b"someone-else", "click", "key_mismatch"),
    (orjson.dumps(VALID), None, "click", "key_mismatch"),
    (b"", b"u1", "click", "invalid_json"),
])
def test_each_kind_of_bad_input_is_rejected_with_its_reason(payload, key, expected, reason):
    result = check(payload, key, expected)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.source == SRC
    record = result.to_record(now_ms=5)
    jsonschema.validate(record, load_schema("dead-letter"))
    assert record["source"] == {"topic": "events.click", "partition": 3, "offset": 42}
    if "payload_text" in record:
        kept = record["payload_text"].encode()
    else:
        kept = base64.b64decode(record["payload_base64"])
    assert kept == payload  # nothing is lost


def test_non_utf8_payload_is_kept_as_base64():
    record = check(b"\xff\x00abc").to_record(now_ms=1)
    assert "payload_text" not in record
    assert base64.b64decode(record["payload_base64"]) == b"\xff\x00abc"


def test_a_tombstone_is_told_from_an_empty_payload_and_a_long_key_cut_mid_character_keeps_its_text():
    tombstone, empty = check(None).to_record(now_ms=1), check(b"").to_record(now_ms=1)
    assert tombstone["payload_null"] is True and "payload_null" not in empty
    assert "tombstone" in tombstone["detail"] and tombstone["payload_text"] == empty["payload_text"] == ""
    key = "€".encode() * 400  # 1,200 bytes: the first 1 KiB ends inside a character
    record = check(b"{", key=key).to_record(now_ms=1)
    assert record["key_text"] == "€" * 341
    for written in (tombstone, empty, record):
        jsonschema.validate(written, load_schema("dead-letter"))


def test_a_letters_id_is_the_same_in_every_copy_and_differs_for_any_other_letter():
    """Letters of a file's lines and events have no partition or offset: deduplicated on (topic, partition, offset),
    as the README said, every letter of a replayed file was one (helper-143)."""
    letter = check(b"{not json")
    again = check(b"{not json").to_record(now_ms=99)  # a redone batch: later, the same letter
    assert again["letter_id"] == letter.to_record(now_ms=1)["letter_id"]
    others = [check(b"{not jsom"), check(b"{not json", key=b"u2"), check_input(b"{not json", b"u1",
              Source("events.click", 3, 43), "click", 64 * 1024)]
    on_file = Rejection("invalid_json", "line 7", Source("log.jsonl"), None, b"{")
    ids = {letter.to_record()["letter_id"], *(other.to_record()["letter_id"] for other in others),
           on_file.to_record(line=7)["letter_id"], on_file.to_record(line=8)["letter_id"]}
    assert len(ids) == 6
    numbered = on_file.to_record(now_ms=1, line=7)
    assert numbered["source"]["line"] == 7
    jsonschema.validate(numbered, load_schema("dead-letter"))


def test_schemas_are_valid_draft7():
    for name in ("input-event", "recommendation", "profile", "dead-letter", "erasure-request", "erasure-receipt",
                 "model-control", "model-status"):
        jsonschema.Draft7Validator.check_schema(load_schema(name))


def test_a_dead_letter_stays_under_a_megabyte_whatever_came_in():
    """A 2 MB input of control bytes escapes to ~12 MB of JSON: kept whole, the dead letter would be
    refused by Apache Kafka (1 MB by default) and the partition would stop on it."""
    import hashlib

    payload = b"\x01" * 2_000_000
    key = "ü".encode() * 50_000  # 100 KB
    headers = [(f"h{i}", b"\x01" * 4000) for i in range(100)]  # 400 KB of headers, as many escaped
    rejection = check_input(payload, key, Source("events.click", 3, 42, headers=headers), "click", 64 * 1024)
    assert rejection.reason == "payload_too_large"
    record = rejection.to_record(now_ms=1)
    assert len(record["source"]["headers"]) == 4 and record["source"]["headers_left_out"] == 96
    written = orjson.dumps(record)
    assert len(written) < 600 * 1024  # Apache Kafka refuses records over 1 MiB by default
    jsonschema.validate(record, load_schema("dead-letter"))
    assert record["payload_truncated"] is True
    assert record["payload_bytes"] == len(payload)
    assert record["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert base64.b64decode(record["payload_base64"]) == payload[:384 * 1024]  # shorter than escaped text
    assert record["key_text"] == "ü" * 512
    assert rejection.message_key() == hashlib.sha256(key).hexdigest().encode()


def test_a_dead_letter_keeps_the_inputs_own_headers_in_order_but_those_it_states_itself():
    headers = (("traceparent", b"00-abc"), ("stream-app-counted", b"1"), ("raw", b"\xff\x00"), ("none", None),
               ("stream-app-redrive-of", b"events.dlq/0/1"), ("big", b"x" * 16_384), ("last", b"\x01"))
    rejection = check_input(b"{", b"u1", Source("events.click", 3, 42, headers=headers), "click", 64 * 1024)
    record = orjson.loads(orjson.dumps(rejection.to_record(now_ms=1)))
    jsonschema.validate(record, load_schema("dead-letter"))
    assert record["source"]["headers"] == [{"key": "traceparent", "value_text": "00-abc"},
                                           {"key": "raw", "value_base64": "/wA="}, {"key": "none", "value_null": True},
                                           {"key": "last", "value_base64": "AQ=="}]
    assert record["source"]["headers_left_out"] == 1  # "big": past the 16 KiB with the others
    assert input_headers(record) == [("traceparent", b"00-abc"), ("raw", b"\xff\x00"), ("none", None),
                                     ("last", b"\x01")]
    plain = check_input(b"{", b"u1", SRC, "click", 64 * 1024).to_record(now_ms=1)
    assert "headers" not in plain["source"] and "headers_left_out" not in plain["source"]


def test_a_dead_letter_keeps_a_payload_and_key_within_the_bound_whole():
    rejection = check(b"{not json", key=b"u1")
    record = rejection.to_record(now_ms=1)
    assert record["payload_text"] == "{not json" and "payload_truncated" not in record
    assert rejection.message_key() == b"u1" and record["key_text"] == "u1"


def test_event_times_outside_the_window_around_the_record_timestamp_are_rejected():
    record_ts = 1_700_000_000_000
    day = 86_400_000

    def at(ts, max_future_ms=day, max_age_ms=0, reference=record_ts):
        return check_input(orjson.dumps({**VALID, "ts": ts}), b"u1", SRC, "click", 64 * 1024, reference,
                           max_future_ms, max_age_ms)

    assert isinstance(at(record_ts + day), Event)  # on the bound: accepted
    late = at(record_ts + day + 1)
    assert late.reason == "timestamp_out_of_range" and "MAX_FUTURE_MS" in late.detail
    assert isinstance(at(record_ts - 10 * 365 * day), Event)  # no age bound by default: replays are old
    old = at(record_ts - 8 * day, max_age_ms=7 * day)
    assert old.reason == "timestamp_out_of_range" and "MAX_AGE_MS" in old.detail
    assert isinstance(at(record_ts + 365 * day, max_future_ms=0), Event)  # 0: no bound
    assert isinstance(at(record_ts + 365 * day, reference=None), Event)  # no record timestamp: not checked
    jsonschema.validate(late.to_record(now_ms=1), load_schema("dead-letter"))


def test_an_erasure_request_is_checked_like_an_event():
    request = {"request_id": "r1", "user_id": "u1", "requested_at": 5, "schema_version": 1}
    source = Source("erasures", 2, 7)
    checked = check_erasure(orjson.dumps(request), b"u1", source, 1024)
    assert checked == ErasureRequest("r1", "u1", 5, source)
    for payload, key, reason in [(orjson.dumps(request), b"u2", "key_mismatch"), (b"{", b"u1", "invalid_json"),
                                 (orjson.dumps({**request, "requested_at": "now"}), b"u1", "schema_violation"),
                                 (b"x" * 2000, b"u1", "payload_too_large")]:
        rejection = check_erasure(payload, key, source, 1024)
        assert rejection.reason == reason
        jsonschema.validate(rejection.to_record(now_ms=1), load_schema("dead-letter"))


def test_the_users_a_dead_letter_names_are_its_key_and_its_payloads_user():
    def dead_letter(payload, key):
        rejection = check(payload, key)
        return orjson.dumps(rejection.to_record(now_ms=1)), rejection.message_key()

    value, key = dead_letter(orjson.dumps({**VALID, "user_id": "u7", "ts": "x"}), b"u1")
    assert dead_letter_users(key, value) == {"u1", "u7"}
    value, key = dead_letter(b"\xff" + orjson.dumps(VALID), None)  # base64 payload, no key: not JSON, names one
    assert dead_letter_users(key, value) == {VALID["user_id"]}
    # a line cut short (replay's invalid_json, unkeyed): the user it spells out, escapes read as JSON reads them
    value, key = dead_letter(b'{"event_id": "bad1", "user_id": "z\\"ed", "item_id": "i', None)
    assert dead_letter_users(key, value) == {'z"ed'}
    value, key = dead_letter(b'{"event_id": "bad1", "item_id": "i', None)
    assert dead_letter_users(key, value) == set()
    assert dead_letter_users(b"u3", b"not a dead letter") == {"u3"}
    # an input as the worker's erasure check reads it: a broken line names its user too (dropped, not dead-lettered)
    assert input_users(None, b'{"user_id": "uc", "item_id": "secret", broken') == ({"uc"}, None)
    assert input_users(b"k", orjson.dumps({**VALID, "ts": 5})) == ({"k", VALID["user_id"]}, 5)


def test_the_gate_refuses_a_record_stamped_ahead_of_its_clock_and_reads_the_clock_for_nothing_else(monkeypatch):
    """A producer may stamp the record as far ahead as its event: that event must not pass. Every other
    verdict depends on the record alone, whenever it is read."""
    import time

    from stream_app.config import Settings
    from stream_app.partitioning import partition_of
    from stream_app.stream.ready import gate

    settings = Settings(max_age_ms=7 * 86_400_000)
    now = 1_800_000_000_000
    day, years = 86_400_000, 5 * 365 * 86_400_000
    source = Source("events.click", partition_of("u1", settings.partitions), 7)

    def verdict(ts, record_ts, read_at):
        monkeypatch.setattr(time, "time", lambda: read_at / 1000)
        out = gate(orjson.dumps({**VALID, "ts": ts}), b"u1", source, "click", record_ts, settings, settings.partitions)
        return out.reason if isinstance(out, Rejection) else "accepted"

    ahead = verdict(now + years, now + years, now)
    assert ahead == "timestamp_out_of_range"
    for ts, record_ts in ((now - day, now), (now + 2 * day, now), (now - 8 * day, now), (now, None),
                          (now + 3_600_000, now + 3_600_000)):  # an hour's clock skew: within the day
        at_first = verdict(ts, record_ts, now + 3_600_000)
        assert at_first == verdict(ts, record_ts, now + 30 * day), (ts, record_ts)  # read again a month later
    assert [verdict(now - day, now, now), verdict(now + 2 * day, now, now), verdict(now - 8 * day, now, now)] == [
        "accepted", "timestamp_out_of_range", "timestamp_out_of_range"]


def test_integral_floats_pass_as_integers_and_leave_as_integers():
    """JSON Schema counts 1.0 as an integer; what the event passes on must be written as one."""
    record = {**VALID, "ts": 1_700_000_000_000.0, "quantity": 2.0, "dwell_ms": 1500.0}
    event = check_input(orjson.dumps(record), b"u1", SRC, "click", 64 * 1024)
    assert isinstance(event, Event)
    assert [type(v) for v in (event.ts, event.quantity, event.dwell_ms)] == [int, int, int]
    assert orjson.dumps(event.to_dict()).count(b".0") == 0
    huge = check_input(orjson.dumps({**VALID, "quantity": 1e29}), b"u1", SRC, "click", 64 * 1024)
    assert isinstance(huge, Rejection) and huge.reason == "schema_violation"  # beyond what JSON numbers hold exactly


def test_an_empty_text_field_is_said_as_empty():
    """The validator said "item_id must be longer than or equal to 1 characters" (helper-137)."""
    rejected = check_input(orjson.dumps({**VALID, "item_id": ""}), b"u1", SRC, "click", 64 * 1024)
    assert (rejected.reason, rejected.detail) == ("schema_violation", "data.item_id is empty: give it at least one "
                                                                      "character")
    from stream_app.contracts import plain_message  # an item's category path: an empty entry of a list

    assert plain_message("item", {}, "data.category_path[1] must be longer than or equal to 1 characters") == \
        "data.category_path[1] is empty: give it at least one character"


def test_fields_the_contract_lacks_are_named_in_order_with_the_fields_it_has_and_where_others_go():
    """A new user's walkthrough: a catalogue line with "colour" was refused as "data must not contain {'colour'}
    properties", naming neither the fields an item has nor where its own go; the validator names them as a set, so
    two such fields came in either order (a dead letter's detail differed between runs of the same input)."""
    from stream_app.contracts import check_item

    rejected = check_input(orjson.dumps({**VALID, "zone": 1, "app": "m"}), b"u1", SRC, "click", 64 * 1024)
    assert rejected.reason == "schema_violation"
    assert rejected.detail.startswith("'app', 'zone' are not fields of an input event (its fields: event_id, user_id, "
                                      "item_id, type, ts, schema_version, session_id, category, ")
    assert rejected.detail.endswith("): give them in context, as {\"app\": value}")
    item = check_item(b'{"item_id": "a", "title": "Lamp", "colour": "oak", "schema_version": 1}', b"a", SRC)
    assert item.detail.startswith("'colour' is not a field of an item record (its fields: item_id, title, ")
    assert item.detail.endswith("): give it in attributes, as {\"colour\": value}")
    with_context = {**VALID, "context": {"zone": 1}}  # where the message sends them, they pass
    assert isinstance(check_input(orjson.dumps(with_context), b"u1", SRC, "click", 64 * 1024), Event)


def test_a_stage_on_an_event_that_is_not_a_purchase_is_named_in_the_reason():
    rejected = check_input(orjson.dumps({**VALID, "stage": "cart"}), b"u1", SRC, "click", 64 * 1024)
    assert rejected.reason == "schema_violation"
    assert rejected.detail == "'stage' is only on purchase events, not on a 'click' event"
    # a record with another fault is told that one first: the stage rule holds between two valid fields
    def detail(**fields):
        return check_input(orjson.dumps({**VALID, **fields}), b"u1", SRC, None, 64 * 1024).detail

    assert detail(type="Purchase", stage="cart").startswith("data.type must be one of")
    assert detail(stage="cart", schema_version=2).startswith("schema_version 2 is not one this release reads")
    assert detail(stage="bogus").startswith("data.stage must be one of")
    assert detail(stage="cart", price=-1).startswith("data.price must be bigger than or equal to 0")


def test_by_default_an_event_an_hour_ahead_of_its_record_is_refused_as_it_would_freeze_the_item_state():
    """Accepted ahead, an event moves its partition's clock and the item state waits for its epoch: with a day's
    bound one event stamped 23 hours ahead froze popularity, co-visitation and trending for 23 hours."""
    import time

    from stream_app.config import Settings
    from stream_app.stream.ready import gate

    now = int(time.time() * 1000)

    def gated(ahead_ms: int):
        value = orjson.dumps({**VALID, "ts": now + ahead_ms})
        return gate(value, b"u1", Source("events.click", 0, 42), "click", now, Settings(), 1)

    assert isinstance(gated(4 * 60_000), Event)  # clock skew
    assert gated(3_600_000).reason == "timestamp_out_of_range"


def test_a_schema_version_this_release_does_not_read_is_said_so_not_as_a_const_definition():
    """"data.schema_version must be same as const definition: 1" was what a dead letter of a newer producer said."""
    from stream_app.contracts import Source, check_input

    event = {"event_id": "e", "user_id": "u", "item_id": "i", "type": "click", "ts": 1, "schema_version": 2}
    rejection = check_input(orjson.dumps(event), b"u", Source("clicks", 0, 7), None, 100_000)
    assert rejection.reason == "schema_violation"
    assert rejection.detail.startswith("schema_version 2 is not one this release reads (1)")


def test_a_recommendation_that_shows_a_weakly_related_content_candidate_follows_its_schema():
    """A content candidate whose text is below the similarity floor is shown with a reason that says so (a "similar
    to" would be false; workers of 2026-12-01 to 2026-12-04 published an empty list, which the schema still admits)."""
    import numpy as np

    from stream_app.config import Settings
    from stream_app.core.content import ContentIndex
    from stream_app.core.items import InMemoryItemIndex
    from stream_app.core.process import new_profile, process

    index = ContentIndex("v", ["a", "b", "c"], ["CANDLE", "MUG", "LAMP"],
                         np.array([[1.0, 0.0, 0.0], [0.2, 0.98, 0.0], [0.8, 0.0, 0.6]], np.float32))
    settings = Settings(ranker=False)
    event = Event(event_id="e1", user_id="u", item_id="a", type="click", ts=1_700_000_000_000)
    rec = process(new_profile("u", settings), event, InMemoryItemIndex(settings), settings, 0,
                  content=index).recommendation
    assert {item["item_id"]: item["reasons"] for item in rec["items"]}["b"] == ["text loosely related to CANDLE"]
    jsonschema.Draft7Validator(load_schema("recommendation")).validate(rec)


#: Objects a schema leaves open on purpose: a learner's state is its kind's own numbers and settings.
OPEN_OBJECTS = {("profile", "/properties/learner_state/additionalProperties/oneOf/0")}


def _objects_with_properties(node, pointer=""):
    if isinstance(node, dict):
        # a condition (if, a dependency's subschema), not a shape
        if "properties" in node and not pointer.endswith("/if") and "/dependencies/" not in pointer:
            yield pointer, node
        for key, child in node.items():
            yield from _objects_with_properties(child, f"{pointer}/{key}")
    elif isinstance(node, list):
        for n, child in enumerate(node):
            yield from _objects_with_properties(child, f"{pointer}/{n}")


def test_every_record_schema_names_all_its_fields_so_a_field_the_producers_add_fails_the_tests():
    """The tests validate what the workers and the CLI write against schemas/: a field written but not described
    passes only where a schema leaves its object open (the dead letter and the receipt's parts did until
    2026-12-01)."""
    from stream_app.contracts import schema_dir

    names = sorted(path.name.removesuffix(".schema.json") for path in (schema_dir() / "v1").glob("*.schema.json"))
    assert "dead-letter" in names and "erasure-receipt" in names
    open_ones = [(name, pointer) for name in names for pointer, node in _objects_with_properties(load_schema(name))
                 if node.get("additionalProperties") is not False and (name, pointer) not in OPEN_OBJECTS]
    assert open_ones == []
    letter = Rejection("invalid_json", "x", SRC, b"u1", b"{").to_record(now_ms=1)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**letter, "added": 1}, load_schema("dead-letter"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**letter, "source": {**letter["source"], "added": 1}}, load_schema("dead-letter"))


def test_a_key_mismatch_names_the_key_and_the_user_id():
    """"the message key must be the user_id" named neither: the producer's bug had to be found in the payload."""
    detail = check(orjson.dumps(VALID), b"someone-else", "click").detail
    assert detail == (f"the message key 'someone-else' is not the user_id {VALID['user_id']!r}: key each event by its "
                      "user_id (profiles are partitioned by user)")
    request = {"request_id": "r1", "user_id": "u1", "requested_at": 1, "schema_version": 1}
    refused = check_erasure(orjson.dumps(request), b"u2", Source("erasures", 0, 1), 1024)
    assert refused.detail == ("the message key 'u2' is not the user_id 'u1': key each request by its user_id (requests "
                              "go to the user's partition)")


def test_a_record_without_schema_version_reads_as_version_1_and_another_version_is_named_in_few_characters():
    """models.control and models.status records written before 2026-12-06 carry no schema_version (read as 1); one
    naming another is refused for it, said as the schemas' const would count it (1.0 is 1, true is not)."""
    from stream_app.contracts import version_not_read

    assert [version_not_read(r) for r in ({}, {"schema_version": 1}, {"schema_version": 1.0}, [2])] == [None] * 4
    assert version_not_read({"schema_version": True}) == "schema_version True is not one this release reads (1)"
    long = version_not_read({"schema_version": "v" * 900_000})
    assert long.startswith("schema_version 'vvv") and "..." in long and len(long) < 120


def test_an_integer_past_64_bits_is_named_as_written_not_as_the_float_orjson_reads_it():
    """An item's listed_at of 1180000000000000000000 was named 1.18e+21 in its dead letter (orjson reads an integer past
    64 bits as a float): a value the operator could not find in the record."""
    from stream_app.contracts import check_item
    from stream_app.json_integers import as_written

    big, below = "1180000000000000000000", "-99999999999999999999"
    item = check_item(f'{{"item_id": "a", "title": "Lamp", "listed_at": {big}, "schema_version": 1}}'.encode(), b"a",
                      Source("items", 0, 5, 1_700_000_000_000))
    assert item.reason == "timestamp_out_of_range" and item.detail.startswith(f"listed_at {big} (after the year 9999)")
    for version in (big, below):  # an event's, an erasure request's
        event = check(orjson.dumps(VALID).replace(b'"schema_version":1', f'"schema_version":{version}'.encode()))
        assert event.detail.startswith(f"schema_version {version} is not one this release reads (1)"), event.detail
    request = f'{{"request_id": "r", "user_id": "u1", "requested_at": 1, "schema_version": {below}}}'.encode()
    assert check_erasure(request, b"u1", SRC, 1024).detail.startswith(f"schema_version {below} is not one")
    # what passes stays orjson's reading, which orjson writes again (it writes no integer past 64 bits)
    accepted = check(orjson.dumps(VALID).replace(b"}", f', "price": {big}}}'.encode()))
    assert isinstance(accepted, Event) and orjson.dumps(accepted.to_dict())
    nested = b"[" * 1000 + big.encode() + b"]" * 1000  # deeper than the stdlib's reader goes: orjson's reading kept
    assert as_written(nested, "orjson's") == "orjson's" and as_written(b"1,2", "a csv line's") == "a csv line's"


def test_a_name_given_twice_in_one_object_is_refused_as_readers_differ_on_which_value_counts():
    """orjson keeps the last of `"user_id": "a", "user_id": "b"`, other readers the first: an event the workers applied
    to one user could be read as another's downstream or by a re-drive."""
    fields = b'"event_id": "e1", "item_id": "i1", "type": "click", "ts": 1700000000000, "schema_version": 1'
    for payload in (b'{"user_id": "u0", "user_id": "u1", ' + fields + b"}",
                    b'{"user_id": "u0", "user\\u005fid": "u1", ' + fields + b"}",  # the second name escaped
                    b'{"user_id": "u1", "context": {"page": "a", "page": "b"}, ' + fields + b"}"):  # in a nested object
        rejection = check(payload)
        assert isinstance(rejection, Rejection) and rejection.reason == "invalid_json", payload
        assert "is given twice in one object" in rejection.detail and "give each field once" in rejection.detail
    assert "'user_id' is given twice" in check(b'{"user_id": "u0", "user_id": "u1", ' + fields + b"}").detail
    # a name written again as a value, in another object or escaped once is no repeat
    for payload in (b'{"user_id": "u1", "event_id": "user_id", "item_id": "i1", "type": "click", "ts": 1700000000000, '
                    b'"schema_version": 1, "context": {"user_id": "u1", "note": "a \\"quote\\""}}',
                    b'{"user\\u005fid": "u1", ' + fields + b"}",
                    b'{"user_id": "u1", "user_id": "u1", ' + fields + b"}",  # the same value twice reads alike
                    b'{"user_id":"u1","event_id":"user_id","item_id":"i1","type":"click","ts":1700000000000,'
                    b'"schema_version":1,"context":{"user_id":"u1"}}'):  # the same, compact: no second reading
        assert isinstance(check(payload), Event), payload
    assert check(b'{"user_id": "u1", "context": {"n": 1, "n": true}, ' + fields + b"}").reason == "invalid_json"  # 1 == True
    erasure = check_erasure(b'{"user_id": "u0", "user_id": "u1", "request_id": "r", "requested_at": 5, '
                            b'"schema_version": 1}', b"u1", Source("erasures", 0, 1), 1024)
    assert isinstance(erasure, Rejection) and erasure.reason == "invalid_json"


def test_a_record_nested_past_the_bound_is_refused_by_its_depth_and_never_raises():
    """A record nested 600 levels deep (orjson reads 1,023) raised RecursionError in the repeated-name check, which
    stopped the worker's input reader on it for good; it is refused with its depth, the same in every process."""
    def nested(depth, repeat=False):
        inner = b'{"a": 1, "a": 2}' if repeat else b"1"
        return (b'{"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "click", "ts": 1700000000000, '
                b'"schema_version": 1, "context": {"x": ' + b"[" * depth + inner + b"]" * depth + b"}}")
    for depth, repeat in ((600, False), (1000, True), (99, False)):
        rejection = check(nested(depth, repeat), max_bytes=4096)
        assert isinstance(rejection, Rejection) and rejection.reason == "invalid_json", depth
        assert f"nest {depth + 2 + repeat} levels deep, more than 100" in rejection.detail
    assert isinstance(check(nested(98), max_bytes=4096), Event)  # 100 levels: the record, its context and 98 arrays
    assert "is given twice" in check(nested(97, repeat=True), max_bytes=4096).detail  # the object: level 100
