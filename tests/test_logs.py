import orjson
import pytest

from conftest import OTTO_SAMPLE
from stream_app.errors import InputFileError
from stream_app.logs import LineRejection, load_sorted, read_log


def events_of(path, fmt):
    return [r for r in read_log(path, fmt) if not isinstance(r, LineRejection)]


def test_otto_sample_maps_types_and_sessions_deterministically():
    events, rejected = load_sorted(OTTO_SAMPLE, "otto")
    assert len(events) == 862 and not rejected
    kinds = {(e["type"], e.get("stage")) for e in events}
    assert kinds == {("click", None), ("purchase", "cart"), ("purchase", "order")}
    assert sum(e.get("stage") == "cart" for e in events) == 52
    assert sum(e.get("stage") == "order" for e in events) == 10
    assert len({e["user_id"] for e in events}) == 20
    assert len({e["event_id"] for e in events}) == 862
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    again, _ = load_sorted(OTTO_SAMPLE, "otto")
    assert [e["event_id"] for e in again] == [e["event_id"] for e in events]


def test_otto_bad_lines_are_rejected_not_fatal(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"session": 1, "events": [{"aid": 5, "ts": 1000, "type": "clicks"}]}\n'
                    'garbage\n'
                    '{"session": 2, "events": [{"aid": 6, "ts": 1000, "type": "likes"}]}\n')
    events, rejected = load_sorted(path, "otto")
    assert [e["item_id"] for e in events] == ["5"]
    assert [(r.line, r.rejection.reason) for r in rejected] == [(2, "invalid_json"), (3, "schema_violation")]


def test_jsonl_reads_input_events_and_rejects_invalid_lines(tmp_path):
    good = {"event_id": "a", "user_id": "u", "item_id": "i", "type": "browse", "ts": 5, "schema_version": 1}
    path = tmp_path / "e.jsonl"
    path.write_bytes(orjson.dumps(good) + b"\n\n{\"event_id\": 1}\n")
    events, rejected = load_sorted(path, "jsonl")
    assert events == [good]
    assert rejected[0].line == 3 and rejected[0].rejection.reason == "schema_violation"


def test_csv_with_optional_columns_and_stable_ids(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("user_id,item_id,type,ts,category,stage\n"
                    "u1,i1,click,2000,shoes,\n"
                    "u1,i2,purchase,1000,,order\n"
                    "u2,i3,teleport,3000,,\n")
    events, rejected = load_sorted(path, "csv")
    assert [(e["item_id"], e["ts"]) for e in events] == [("i2", 1000), ("i1", 2000)]
    assert events[1]["category"] == "shoes" and events[0]["stage"] == "order"
    assert len(rejected) == 1 and rejected[0].line == 4
    assert [e["event_id"] for e in load_sorted(path, "csv")[0]] == [e["event_id"] for e in events]


def test_retailrocket_and_movielens_as_published(tmp_path):
    rr = tmp_path / "events.csv"
    rr.write_text("timestamp,visitorid,event,itemid,transactionid\n"
                  "1433221332117,257597,view,355908,\n"
                  "1433224214164,992329,addtocart,248676,\n"
                  "1433221999827,111016,transaction,385333,4000\n")
    kinds = [(e["type"], e.get("stage")) for e in load_sorted(rr, "retailrocket")[0]]
    assert kinds == [("browse", None), ("purchase", "order"), ("purchase", "cart")]
    ml = tmp_path / "ratings.csv"
    ml.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n")
    (event,) = load_sorted(ml, "movielens")[0]
    assert event["ts"] == 1260759144000 and event["context"] == {"rating": 2.5} and event["type"] == "click"


def test_unusable_files_say_what_is_wrong(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        load_sorted(tmp_path / "missing.csv", "csv")
    wrong = tmp_path / "w.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(InputFileError, match="expected columns user_id, item_id, type, ts"):
        load_sorted(wrong, "csv")
    with pytest.raises(InputFileError, match="unknown format"):
        load_sorted(wrong, "parquet")
