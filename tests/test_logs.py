import gzip

import orjson
import pytest
from conftest import OTTO_SAMPLE

from stream_app.errors import InputFileError
from stream_app.tools import recorded as recorded_module
from stream_app.tools import retail_dates
from stream_app.tools.catalogue import load_catalogue
from stream_app.tools.recorded import LineRejection, OnlineRetailStats, load_sorted, read_log, read_online_retail


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


def test_otto_session_values_that_are_not_ids_are_rejected_not_merged_into_one_user(tmp_path):
    path = tmp_path / "s.jsonl"
    event = b'[{"aid": 5, "ts": 1659304800025, "type": "clicks"}]'
    path.write_bytes(b"".join(b'{"session": %s, "events": %s}\n' % (session, event) for session in
                              (b"null", b"true", b"2.5", b'{"a": 1}', b"123456789012345678901234567890", b'"s-1"', b"7")))
    events, rejected = load_sorted(path, "otto")
    assert sorted(e["user_id"] for e in events) == ["7", "s-1"]
    assert [r.line for r in rejected] == [1, 2, 3, 4, 5] and "session None is not an id" in rejected[0].rejection.detail


def test_an_otto_session_on_two_lines_keeps_the_events_of_both(tmp_path):
    path = tmp_path / "split.jsonl"
    path.write_text('{"session": 1, "events": [{"aid": 10, "ts": 1000, "type": "clicks"}, '
                    '{"aid": 11, "ts": 2000, "type": "clicks"}]}\n'
                    '{"session": 2, "events": [{"aid": 10, "ts": 1500, "type": "clicks"}]}\n'
                    '{"session": 1, "events": [{"aid": 12, "ts": 90000, "type": "clicks"}, '
                    '{"aid": 13, "ts": 91000, "type": "carts"}]}\n')
    events, _ = load_sorted(path, "otto")
    assert [(e["event_id"], e["item_id"]) for e in events] == [
        ("otto-1-1000000-10-clicks", "10"), ("otto-2-1500000-10-clicks", "10"), ("otto-1-2000000-11-clicks", "11"),
        ("otto-1-90000000-12-clicks", "12"), ("otto-1-91000000-13-carts", "13")]  # ts in seconds: its ms


def test_otto_ids_come_from_the_event_so_a_session_continued_in_another_file_keeps_distinct_ids(tmp_path):
    day1, day2 = tmp_path / "day1.jsonl", tmp_path / "day2.jsonl"  # a dump split by day
    day1.write_text('{"session": 1, "events": [{"aid": 10, "ts": 1659304800000, "type": "clicks"}, '
                    '{"aid": 11, "ts": 1659304802000, "type": "clicks"}]}\n')
    day2.write_text('{"session": 1, "events": [{"aid": 12, "ts": 1659391200000, "type": "clicks"}, '
                    '{"aid": 12, "ts": 1659391200000, "type": "clicks"}, '
                    '{"aid": 12, "ts": 1659391200000, "type": "carts"}]}\n'
                    '{"session": 1, "events": [{"aid": 12, "ts": 1659391200000, "type": "clicks"}]}\n')
    first, second = (load_sorted(day, "otto")[0] for day in (day1, day2))
    assert [e["event_id"] for e in first] == ["otto-1-1659304800000-10-clicks", "otto-1-1659304802000-11-clicks"]
    # a repeat within a line is its own event; the same event on another line is the same event (read again)
    assert [e["event_id"] for e in second] == ["otto-1-1659391200000-12-clicks", "otto-1-1659391200000-12-clicks-2",
                                               "otto-1-1659391200000-12-carts", "otto-1-1659391200000-12-clicks"]
    assert not {e["event_id"] for e in first} & {e["event_id"] for e in second}


def test_otto_bad_lines_are_rejected_not_fatal(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"session": 1, "events": [{"aid": 5, "ts": 1000, "type": "clicks"}]}\n'
                    'garbage\n'
                    '{"session": 2, "events": [{"aid": 6, "ts": 1000, "type": "likes"}]}\n')
    events, rejected = load_sorted(path, "otto")
    assert [e["item_id"] for e in events] == ["5"]
    assert [(r.line, r.rejection.reason) for r in rejected] == [(2, "invalid_json"), (3, "schema_violation")]
    # said as a reader says it, not as Python's repr of the exception (ValueError("..."), JSONDecodeError(...))
    assert rejected[0].rejection.detail.startswith("line 2: not an OTTO session: not JSON (unexpected character")
    assert rejected[1].rejection.detail == ("line 3: event 0 of session 2: event type 'likes' is not one of clicks, "
                                            "carts, orders")


def test_otto_sessions_that_are_not_sessions_are_rejected_with_a_reason_and_seconds_are_read_as_seconds(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"session": 1, "events": [{"aid": 5, "ts": 1659304800025, "type": "clicks"}]}\n'
                     b'{"session": 2, "events": null}\n'
                     b'{"session": 3, "events": 5}\n'
                     b'[{"session": 5}]\n{"session": 6, "events": [1]}\n'
                     b'{"session": 4, "events": [{"aid": null, "ts": 1659304800, "type": "carts"},'
                     b' {"aid": 7, "ts": true, "type": "orders"}, {"aid": 8, "ts": 1659304801, "type": "views"},'
                     b' {"aid": 9, "ts": 1659304802, "type": "orders"}]}\n')
    events, rejected = load_sorted(path, "otto")  # a byte-order mark before the first session is not JSON's
    assert [(e["user_id"], e["item_id"], e["ts"]) for e in events] == [("1", "5", 1659304800025),
                                                                       ("4", "9", 1659304802000)]
    reasons = [(r.line, r.rejection.reason, r.rejection.detail) for r in rejected]
    assert [line for line, _, _ in reasons] == [2, 3, 4, 5, 6, 6, 6]
    assert "'events' is NoneType, not a list" in reasons[0][2] and "'events' is int" in reasons[1][2]
    assert "a line is an object with session and events, not list" in reasons[2][2]  # not "list indices must be"
    assert "event 0 of session 6: an event is an object with aid, ts and type, not int" in reasons[3][2]
    assert "aid None is not an id" in reasons[4][2] and "ts True is not a number" in reasons[5][2]
    assert "event type 'views' is not one of clicks, carts, orders" in reasons[6][2]
    # JSON of another shape is a schema violation, not invalid JSON (helper-139 #8)
    assert [reason for _, reason, _ in reasons[:3]] == ["schema_violation"] * 3


def test_an_otto_id_past_64_bits_is_said_as_such_not_as_the_float_a_json_reader_makes_of_it(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"session": 18446744073709551617, "events": [{"aid": 5, "ts": 1659304800025, "type": "clicks"}]}\n'
                    '{"session": 7, "events": [{"aid": 36893488147419103232, "ts": 1659304800025, "type": "clicks"}]}\n'
                    '{"session": "18446744073709551617", "events": [{"aid": 5, "ts": 1659304800025, "type": "clicks"}]}\n')
    events, rejected = load_sorted(path, "otto")
    assert [e["user_id"] for e in events] == ["18446744073709551617"]  # as text: read as published
    assert [(r.line, r.rejection.reason) for r in rejected] == [(1, "schema_violation"), (2, "schema_violation")]
    assert "session is a whole number past 64 bits" in rejected[0].rejection.detail
    assert "aid is a whole number past 64 bits" in rejected[1].rejection.detail and "e+" not in rejected[1].rejection.detail


def test_an_otto_id_written_as_a_whole_valued_float_is_the_published_id_as_in_the_csv_formats(tmp_path):
    """A data-team walkthrough: `"aid": 1492293.0` (a data frame's) was refused as "not an id", while RetailRocket's and
    MovieLens' readers take `257597.0` as the published 257597; a float past 2**53 may not be the id written."""
    path = tmp_path / "s.jsonl"
    path.write_text('{"session": 7.0, "events": [{"aid": 1492293.0, "ts": 1659304800025, "type": "clicks"},'
                    '{"aid": 1492293, "ts": 1659304800026, "type": "clicks"}, {"aid": 1e17, "ts": 1659304800027, '
                    '"type": "clicks"}]}\n')
    events, rejected = load_sorted(path, "otto")
    assert [(e["user_id"], e["item_id"]) for e in events] == [("7", "1492293"), ("7", "1492293")]
    assert events[0]["event_id"] == "otto-7-1659304800025-1492293-clicks"
    assert len(rejected) == 1 and "aid 1e+17 is a float past 2**53" in rejected[0].rejection.detail


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
    ids = {e["ts"]: e["event_id"] for e in load_sorted(rr, "retailrocket")[0]}
    lines = rr.read_text().splitlines()
    rr.write_text("\n".join([lines[0], lines[3], lines[1], lines[2], lines[1]]) + "\n")  # re-sorted, a row twice
    again = load_sorted(rr, "retailrocket")[0]
    assert len(again) == 4 and {e["ts"]: e["event_id"] for e in again} == ids  # the twice-logged row: one id
    import hashlib

    assert ids[1433221332117] == "rr-" + hashlib.blake2b(b"1433221332117,257597,view,355908,",
                                                         digest_size=10).hexdigest()  # the ids of earlier releases
    rr.write_text("visitorid,timestamp,itemid,event\n257597,1433221332117,355908,view\n")  # reordered, 4 columns
    assert load_sorted(rr, "retailrocket")[0][0]["event_id"] == ids[1433221332117]
    ml = tmp_path / "ratings.csv"
    ml.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n")
    (event,) = load_sorted(ml, "movielens")[0]
    assert event["ts"] == 1260759144000 and event["context"] == {"rating": 2.5} and event["type"] == "click"
    # a copy in milliseconds was refused by the schema's bound on ts, which said nothing of seconds
    ml.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,32,4.0,1260759145000\n")
    _, (refused,) = load_sorted(ml, "movielens")
    assert "timestamp 1260759145000 looks like milliseconds: MovieLens' ratings.csv has seconds" in \
        refused.rejection.detail


def test_retailrocket_and_movielens_fields_written_with_a_space_after_each_comma_are_the_published_values(tmp_path):
    # the header's names are read without the spaces (the file is accepted): its values must be too, or
    # movie " 1" is another item than movie "1" and " view" is no event type
    ml = tmp_path / "ratings.csv"
    ml.write_text("userId, movieId, rating, timestamp\n1, 31, 2.5, 1260759144\n2,31,4.0,1260759145\n")
    events, rejected = load_sorted(ml, "movielens")
    assert not rejected and {e["item_id"] for e in events} == {"31"} and {e["user_id"] for e in events} == {"1", "2"}
    assert events[0]["event_id"] == "ml-1-31-1260759144"  # the id the published layout gives
    rr = tmp_path / "events.csv"
    rr.write_text("timestamp, visitorid, event, itemid, transactionid\n1433221332117, 257597, view, 355908,\n")
    published = tmp_path / "published.csv"
    published.write_text("timestamp,visitorid,event,itemid,transactionid\n1433221332117,257597,view,355908,\n")
    assert load_sorted(rr, "retailrocket") == load_sorted(published, "retailrocket")


def test_unusable_files_say_what_is_wrong(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        load_sorted(tmp_path / "missing.csv", "csv")
    wrong = tmp_path / "w.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(InputFileError, match="expected columns user_id, item_id, type, ts"):
        load_sorted(wrong, "csv")
    with pytest.raises(InputFileError, match="unknown format"):
        load_sorted(wrong, "parquet")


def test_a_log_read_in_another_format_says_which_formats_there_are_and_shows_its_first_line_short(tmp_path):
    sessions = tmp_path / "sessions.jsonl"
    sessions.write_text("".join(orjson.dumps({"session": s, "events": [{"aid": a, "ts": 1659304800025 + a,
                                                                          "type": "clicks"} for a in range(40)]}
                                             ).decode() + "\n" for s in range(3)))
    with pytest.raises(InputFileError) as as_csv:
        load_sorted(sessions, "retailrocket")
    message = str(as_csv.value)
    assert '\'{"session":0,"events":[{"aid":0,' in message and len(message) < 360 + len(str(sessions))  # as written, cut short
    assert "--format jsonl, or otto" in message
    with pytest.raises(InputFileError, match=r"all 3 lines rejected, the first as schema_violation .*its lines are "
                                             r"OTTO sessions \(JSON with session and events\): give --format otto"):
        load_sorted(sessions, "jsonl")  # JSON, but no session is an event
    assert len(load_sorted(sessions, "otto")[0]) == 120
    views = tmp_path / "views.jsonl"  # 3 sessions of 40 events each, every one of a type OTTO does not have
    views.write_text(sessions.read_text().replace('"clicks"', '"views"').replace('"carts"', '"views"').replace(
        '"orders"', '"views"'))
    with pytest.raises(InputFileError, match=r"no events read as otto: all 3 lines rejected"):  # said 120 lines
        load_sorted(views, "otto")
    header_only = tmp_path / "header.csv"
    header_only.write_text("user_id,item_id,type,ts\n")
    with pytest.raises(InputFileError, match="only a header line, no events"):
        load_sorted(header_only, "csv")
    with pytest.raises(InputFileError, match=r"its header is that of --format csv\)"):  # the format it has, named
        load_sorted(header_only, "movielens")


def test_a_directory_or_an_empty_file_is_named_as_such_by_every_reader(tmp_path):
    from stream_app.tools.catalogue import load_catalogue

    empty, blank = tmp_path / "empty.jsonl", tmp_path / "blank.jsonl"
    empty.write_bytes(b"")
    blank.write_text("\n \n")
    for load in (load_sorted, load_catalogue):
        with pytest.raises(InputFileError, match=f"{tmp_path}: is a directory, not a file"):
            load(tmp_path, "jsonl")
        with pytest.raises(InputFileError, match="empty.jsonl: the file is empty$"):
            load(empty, "jsonl")
    with pytest.raises(InputFileError, match="blank.jsonl: the file is empty"):
        load_sorted(blank, "jsonl")


ONLINE_RETAIL = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    '536366,22633,"HAND WARMER UNION JACK, RED",6,2010-12-01 08:28,1.85,17850.0,United Kingdom\n'
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,United Kingdom\n"
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850,United Kingdom\n"
    "536367,84879,ASSORTED COLOUR BIRD ORNAMENT,32,2010-12-01 08:34:00,1.69,,United Kingdom\n"
    "C536379,22556,PLASTERS IN TIN CIRCUS PARADE,-12,2010-12-01 09:41:00,1.65,14527,United Kingdom\n"
    "536370,POST,POSTAGE,3,2010-12-01 08:45:00,18,12583,France\n"
    "536371,22086,PAPER CHAIN KIT,-2,2010-12-01 09:00:00,2.95,12583,France\n"
    "536372,22632,HAND WARMER RED POLKA DOT,6,2010-12-32 09:01,1.85,17850,United Kingdom\n"
    "536373,22632,HAND WARMER RED POLKA DOT,six,2010-12-01 09:02:00,1.85,17850,United Kingdom\n"
)


def _order(event_id, user, item, ts, quantity, price, invoice):
    return {"event_id": event_id, "user_id": user, "item_id": item, "type": "purchase", "stage": "order",
            "ts": ts, "quantity": quantity, "price": price, "session_id": invoice, "schema_version": 1}


# 2010-12-01 08:26 and 08:28 UTC in ms
ONLINE_RETAIL_EVENTS = [
    _order("or-536365-3", "17850", "85123A", 1291191960000, 6, 2.55, "536365"),
    _order("or-536365-4", "17850", "71053", 1291191960000, 6, 3.39, "536365"),
    _order("or-536366-2", "17850", "22633", 1291192080000, 6, 1.85, "536366"),
]


def test_online_retail_keeps_customer_purchases_and_counts_what_it_skips(tmp_path):
    path = tmp_path / "online_retail.csv"
    path.write_text(ONLINE_RETAIL)
    stats = OnlineRetailStats()
    reads = list(read_online_retail(path, stats))
    in_file_order = [ONLINE_RETAIL_EVENTS[2], *ONLINE_RETAIL_EVENTS[:2]]
    assert [r for r in reads if not isinstance(r, LineRejection)] == in_file_order
    assert [(r.line, r.rejection.reason) for r in reads if isinstance(r, LineRejection)] == [
        (9, "schema_violation"), (10, "schema_violation")]
    assert stats.as_dict() == {"lines": 9, "events": 3, "guest": 1, "cancelled": 2, "not_product": 1,
                               "rejected": 2, "skipped": 4}
    events, rejected = load_sorted(path, "online-retail")  # the invoice's two lines keep their file order
    assert events == ONLINE_RETAIL_EVENTS and [r.line for r in rejected] == [9, 10]


@pytest.mark.parametrize("missing", ["NA", "nan", "NaN", "None", "NULL", "<NA>", " na "])
def test_an_online_retail_customer_written_as_a_missing_value_is_a_guest_not_one_customer(tmp_path, missing):
    """R's write.csv writes a missing CustomerID as NA, pandas' astype(str) as nan: all the guests' lines were read
    as one customer's, unsaid (helper-139 #2)."""
    from stream_app.tools.log_checks import line_user

    path = tmp_path / "online_retail.csv"
    path.write_text(ONLINE_RETAIL.replace("1.69,,United", f"1.69,{missing},United"))
    stats = OnlineRetailStats()
    events = [r for r in read_online_retail(path, stats) if not isinstance(r, LineRejection)]
    assert events == [ONLINE_RETAIL_EVENTS[2], *ONLINE_RETAIL_EVENTS[:2]] and stats.guest == 1
    assert line_user("online-retail", {"CustomerID": missing}) is None
    assert line_user("online-retail", {"CustomerID": "12346.0"}) == "12346"


def test_an_online_retail_date_that_is_no_date_is_rejected_naming_the_field_and_the_order_read(tmp_path):
    """"month must be in 1..12" alone left a user to guess which of the line's eight fields it meant."""
    path = tmp_path / "online_retail.csv"
    path.write_text(OR_HEAD + "536365,71053,WHITE METAL LANTERN,6,13/01/2010 08:26,3.39,17850,United Kingdom\n"
                    "536366,71053,WHITE METAL LANTERN,6,01/32/2010 08:26,3.39,17850,United Kingdom\n")
    [day_first] = [read.rejection.detail for read in read_online_retail(path) if isinstance(read, LineRejection)]
    assert "InvoiceDate '01/32/2010 08:26' is no date read as D/M/YYYY" in day_first and "month must be" in day_first
    path.write_text(OR_HEAD + "536366,71053,WHITE METAL LANTERN,6,12/32/2010 08:26,3.39,17850,United Kingdom\n")
    [month_first] = [read.rejection.detail for read in read_online_retail(path)]
    assert "InvoiceDate '12/32/2010 08:26' is no date read as M/D/YYYY" in month_first
    path.write_text(OR_HEAD + "536366,71053,WHITE METAL LANTERN,6,2010-13-01 08:26:00,3.39,17850,United Kingdom\n")
    [iso] = [read.rejection.detail for read in read_online_retail(path)]
    assert "InvoiceDate '2010-13-01 08:26:00' is no date read as YYYY-MM-DD: month must be" in iso


def test_an_online_retail_line_without_invoice_or_stock_code_is_rejected_not_read_nor_skipped(tmp_path):
    """An empty InvoiceNo made an event with the session "" (and an id of its line alone); an empty StockCode was
    counted as a non-product code, a kind of line the log has, not as the malformed line it is."""
    path = tmp_path / "online_retail.csv"
    path.write_text(OR_HEAD + ",85123A,X,6,2010-12-01 08:26:00,2.55,17850,United Kingdom\n"
                    "536365,,X,6,2010-12-01 08:26:00,2.55,17850,United Kingdom\n")
    stats = OnlineRetailStats()
    details = [read.rejection.detail for read in read_online_retail(path, stats)]
    assert details == ["line 2: InvoiceNo is empty", "line 3: StockCode is empty"]
    assert (stats.rejected, stats.not_product, stats.events) == (2, 0, 0)


def test_online_retail_reads_gzip_and_rejects_a_wrong_header(tmp_path):
    path = tmp_path / "online_retail.csv.gz"
    path.write_bytes(gzip.compress(ONLINE_RETAIL.encode()))
    events, rejected = load_sorted(path, "online-retail")
    assert events == ONLINE_RETAIL_EVENTS and len(rejected) == 2
    wrong = tmp_path / "w.csv"
    wrong.write_text("InvoiceNo,StockCode,Quantity\n536365,85123A,6\n")
    with pytest.raises(InputFileError, match="expected columns InvoiceNo, StockCode, Description"):
        load_sorted(wrong, "online-retail")
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(ONLINE_RETAIL.encode())[:-12])  # truncated
    with pytest.raises(InputFileError, match="cannot be read as online-retail"):
        load_sorted(broken, "online-retail")


def test_online_retail_ii_as_published_is_read_as_the_first_log(tmp_path):
    """UCI's later "Online Retail II" names three columns otherwise (Invoice, Price, Customer ID) and writes the
    customer as a float: its rows are the same events (its header was refused as not naming InvoiceNo)."""
    second = tmp_path / "online_retail_II.csv"
    second.write_text(ONLINE_RETAIL.replace(OR_HEAD, "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,"
                                                     "Customer ID,Country\n").replace(",17850,", ",17850.0,"))
    assert second.read_text() != ONLINE_RETAIL
    events, rejected = load_sorted(second, "online-retail")
    assert events == ONLINE_RETAIL_EVENTS and [r.line for r in rejected] == [9, 10]
    first = tmp_path / "online_retail.csv"
    first.write_text(ONLINE_RETAIL)
    items, _ = load_catalogue(second, "online-retail")  # its product names
    assert {"85123A", "71053", "22633"} <= set(items) and (items, _) == load_catalogue(first, "online-retail")
    # its rejections name its columns, not the first log's (the user looked for a "UnitPrice" it does not have)
    bad = ("536380,,HEART,6,2010-12-01 09:05,2.55,17851,United Kingdom\n"
           "536381,22632,HEART,6,2010-12-01 09:05,free,17851,United Kingdom\n"
           f"536382,22632,HEART,6,2010-12-01 09:05,2.55,{'9' * 201},United Kingdom\n")
    second.write_text(second.read_text() + bad)
    _, rejected = load_sorted(second, "online-retail")
    said = [r.rejection.detail for r in rejected[2:]]
    assert said[0] == "line 11: StockCode is empty" and "cannot read the row (Price 'free' is not a number)" in said[1]
    assert said[2].startswith("line 13: user_id (the file's Customer ID) must be")
    first.write_text(ONLINE_RETAIL + bad)
    _, rejected = load_sorted(first, "online-retail")
    assert "cannot read the row (UnitPrice 'free' is not a number)" in rejected[3].rejection.detail


def test_online_retail_as_its_shared_csv_copies_have_it(tmp_path):
    """Slashed dates, month first as the widely shared csv has them (12/1/2010 8:26) or day first as a
    British export writes them (01/12/2010 08:26): the first date with a field over 12 tells; Latin-1
    text (that csv is ISO-8859-1) and a UTF-8 byte-order mark (Excel's "CSV UTF-8") are read."""
    head = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\r\n"
    month_first = tmp_path / "data.csv"
    month_first.write_bytes((head + "536365,85123A,CAF\xc9 HEART,6,12/1/2010 8:26,2.55,17850,United Kingdom\r\n"
                             "537000,71053,LANTERN,6,12/13/2010 9:05,3.39,17850,United Kingdom\r\n").encode("latin-1"))
    day_first = tmp_path / "export.csv"
    day_first.write_bytes(b"\xef\xbb\xbf" + (head + "536365,85123A,CAF\u00c9 HEART,6,01/12/2010 08:26,2.55,17850,UK\r\n"
                                               "537000,71053,LANTERN,6,13/12/2010 09:05,3.39,17850,UK\r\n").encode())
    for path in (month_first, day_first):
        events, rejected = load_sorted(path, "online-retail")
        assert rejected == [] and [e["ts"] for e in events] == [1291191960000, 1292231100000], path


def test_online_retail_dates_with_a_spreadsheets_two_digit_year_are_read(tmp_path):
    """A copy saved from a spreadsheet writes its short date (12/1/10 8:26): it was refused line by line."""
    head = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    month_first = tmp_path / "short.csv"
    month_first.write_text(head + "536365,85123A,HEART,6,12/1/10 8:26,2.55,17850,UK\n"
                           "537000,71053,LANTERN,6,12/13/10 9:05,3.39,17850,UK\n")
    day_first = tmp_path / "short-uk.csv"
    day_first.write_text(head + "536365,85123A,HEART,6,01/12/10 08:26,2.55,17850,UK\n"
                         "537000,71053,LANTERN,6,13/12/10 09:05,3.39,17850,UK\n")
    for path in (month_first, day_first):
        events, rejected = load_sorted(path, "online-retail")
        assert rejected == [] and [e["ts"] for e in events] == [1291191960000, 1292231100000], path
    assert retail_dates.retail_ms("1/2/99 0:00", day_first=False) == 915235200000  # %y's rule: 69-99 the 1900s


def test_online_retail_dates_no_field_over_12_can_order_are_read_month_first_with_a_warning(tmp_path, capsys):
    """A British copy of the log's first days (01/12/2010 ... 12/12/2010) was read as January to December 2010
    without a word: no date had a field over 12 to tell the order by."""
    head = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    ambiguous = tmp_path / "first-days.csv"
    ambiguous.write_text(head + "536365,85123A,HEART,6,01/12/2010 08:26,2.55,17850,UK\n"
                         "537000,71053,LANTERN,6,02/12/2010 09:05,3.39,17850,UK\n")
    events, _ = load_sorted(ambiguous, "online-retail")
    assert [e["ts"] for e in events] == [1263284760000, 1265965500000]  # 12 January, 12 February: month first
    said = capsys.readouterr().err
    assert "first-days.csv: no InvoiceDate has a day or month over 12" in said and "YYYY-MM-DD" in said
    iso = tmp_path / "iso.csv"  # as pandas writes ISO times
    iso.write_text(head + "536365,85123A,HEART,6,2010-12-01T08:26:00,2.55,17850,UK\n")
    assert [e["ts"] for e in load_sorted(iso, "online-retail")[0]] == [1291191960000]
    same = tmp_path / "same.csv"  # the same day either way (01/1 is 1/01): nothing to say
    same.write_text(head + "536365,85123A,HEART,6,01/1/2011 08:26,2.55,17850,UK\n")
    load_sorted(same, "online-retail")
    assert "warning" not in capsys.readouterr().err


def test_evaluate_and_replay_leave_out_what_a_worker_would_dead_letter_for_its_time_or_size():
    import time

    from stream_app.config import Settings
    from stream_app.tools.replay import gate

    now = int(time.time() * 1000)
    events = [{"event_id": "old", "ts": 1_000_000_000_000}, {"event_id": "soon", "ts": now + 60_000},
              {"event_id": "next-year", "ts": now + 366 * 86_400_000},
              {"event_id": "large", "ts": now, "context": {"note": "x" * 70_000}}]

    def split(settings):
        whys = [(event["event_id"], gate(settings)(event)) for event in events]
        return [e for e, why in whys if why is None], [(e, why[0]) for e, why in whys if why is not None]

    assert split(Settings()) == (["old", "soon"], [("next-year", "timestamp_out_of_range"),
                                                   ("large", "payload_too_large")])
    assert split(Settings(max_age_ms=86_400_000, max_future_ms=0, max_payload_bytes=100_000)) == (
        ["soon", "next-year", "large"], [("old", "timestamp_out_of_range")])


@pytest.mark.parametrize("slack", [1_000, 0, -10**6])  # 0, less: refused events past the span go as they come
def test_a_limit_holds_only_the_first_events_a_worker_accepts_and_agrees_with_reading_the_whole_log(tmp_path, slack,
                                                                                                    monkeypatch):
    """`replay --limit` and `evaluate --limit`: the first N events a worker accepts (gate), in time order with ties
    in file order, read with N events in memory; dead letters of the refused ones up to the last kept one's time."""
    import random
    import time

    from stream_app.config import Settings
    from stream_app.tools import sorted_log
    from stream_app.tools.replay import gate
    from stream_app.tools.sorted_log import load_accepted

    now, rng = int(time.time() * 1000), random.Random(3)
    lines = []
    for n in range(400):  # out of time order, many ties; some too large, some too old
        event = {"event_id": f"e{n}", "user_id": f"u{n % 9}", "item_id": f"i{n % 13}", "type": "click",
                 "ts": now - rng.randrange(50) * 1000, "schema_version": 1}
        if n % 37 == 0:
            event["context"] = {"note": "x" * 70_000}
        if n % 41 == 0:
            event["ts"] = now - 10 * 86_400_000
        lines.append(orjson.dumps(event))
    lines.append(orjson.dumps({**event, "event_id": "last", "ts": now + 1_000, "context": {"note": "x" * 70_000}}))
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    refusal = gate(Settings(max_age_ms=86_400_000))
    monkeypatch.setattr(sorted_log, "REFUSED_SLACK", slack)
    everything, _, refused_all = load_accepted(path, "jsonl", refusal)
    assert len(everything) + len(refused_all) == 401 and {r for _, r, _, _ in refused_all} == {
        "payload_too_large", "timestamp_out_of_range"}
    for limit in (1, 7, 100, len(everything), 380, 1000):  # exactly as many as accepted: every refused one kept
        kept, _, refused = load_accepted(path, "jsonl", refusal, limit)
        assert kept == everything[:limit]
        last = kept[-1]["ts"] if limit < len(everything) else float("inf")
        assert refused == [found for found in refused_all if found[0]["ts"] <= last]  # with their lines


def test_the_worker_draws_no_terminal_spinner_into_its_log():
    import faust

    from stream_app.stream.foreground import Worker

    worker = Worker(faust.App("spinner-check", broker="kafka://127.0.0.1:1"), quiet=True, loglevel="warn")
    assert worker.spinner is None  # Faust's would write cursor escapes (ESC[?25l) into the log file


OR_HEAD = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


def test_day_first_detection_stops_at_an_iso_date_instead_of_parsing_the_whole_file(tmp_path, monkeypatch):
    rows = 5000
    path = tmp_path / "iso.csv"
    path.write_text(OR_HEAD + "".join(f"{536365 + i},85123A,HEART,6,2010-12-01 08:26:00,2.55,17850,UK\n"
                                   for i in range(rows)))
    looked = []
    real = retail_dates.SLASH_DATE

    class Counting:
        def fullmatch(self, text):
            looked.append(text)
            return real.fullmatch(text)

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(retail_dates, "SLASH_DATE", Counting())
    assert retail_dates.file_is_day_first(path) is False
    # every row of an ISO-dated file was parsed once more (541,909 for the full Online Retail log)
    assert len(looked) < 100, f"_day_first looked at {len(looked)} rows"


def test_one_stray_byte_does_not_turn_every_utf8_id_of_the_file_into_mojibake(tmp_path):
    path = tmp_path / "e.csv"
    path.write_bytes("user_id,item_id,type,ts\nJos\u00e9,caf\u00e9,click,1700000000000\n".encode()
                     + b"bob,x\xff,click,1700000000001\n")  # line 3: one byte that is not UTF-8
    events, _ = recorded_module.load_sorted(path, "csv")
    # the whole file was read as Latin-1 -> 'JosÃ©' / 'cafÃ©' (other ids, other digest event_ids)
    assert events[0]["user_id"] == "Jos\u00e9" and events[0]["item_id"] == "caf\u00e9"


def test_a_bom_is_dropped_also_when_the_file_falls_back_to_latin1(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"\xef\xbb\xbf" + OR_HEAD.encode() + b"536365,85123A,CAF\xc9,6,2010-12-01 08:26,2.55,17850,UK\n")
    events, rejected = recorded_module.load_sorted(path, "online-retail")  # a header it did not know
    assert len(events) == 1


def test_a_stray_quote_costs_its_own_line_only_and_a_row_of_other_width_is_rejected_not_cut(tmp_path):
    """With csv.DictReader one unclosed quote ran every later line into one field (a RetailRocket log's rows
    became one rejection, or a "field larger than field limit" error for the whole file)."""
    good = [f"14332213{n:05d},{n},view,{n % 7}," for n in range(300)]
    lines = ["timestamp,visitorid,event,itemid,transactionid", good[0], '1433221332117,257597,view,"355908,',
             *good[1:200], "1433221332999,5,view,6,,extra", *good[200:]]
    path = tmp_path / "events.csv"
    path.write_text("\n".join(lines) + "\n")
    events, rejected = load_sorted(path, "retailrocket")
    assert len(events) == 300 and {e["item_id"] for e in events} == {str(n % 7) for n in range(300)}
    assert [r.line for r in rejected] == [3, 203]
    assert 'quoted field opens on it' in rejected[0].rejection.detail and "355908" in rejected[0].rejection.payload.decode()
    assert "6 fields where the header names 5" in rejected[1].rejection.detail

    retail = tmp_path / "online_retail.csv"
    head, *rows = ONLINE_RETAIL.splitlines()
    broken = '536366,22633,"HAND WARMER UNION JACK RED,6,2010-12-01 08:28,1.85,17850.0,United Kingdom'  # no closing "
    retail.write_text("\n".join([head, broken, *rows[1:]]) + "\n")
    stats = OnlineRetailStats()
    reads = list(read_online_retail(retail, stats))
    assert stats.lines == len(rows) and stats.rejected == 3  # the broken line, besides the two rejected before
    assert [r.line for r in reads if isinstance(r, LineRejection)][0] == 2


def test_a_rating_json_cannot_hold_and_a_stray_quote_before_the_dates_tell_their_order_cost_one_line(tmp_path):
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n1,2,nan,978300760\n1,3,4.5,978300761\n")
    events, rejected = load_sorted(ratings, "movielens")
    assert [e["item_id"] for e in events] == ["3"] and "rating 'nan' is not a finite number" in rejected[0].rejection.detail
    retail = tmp_path / "online_retail.csv"  # British dates (day first), a stray quote on the first data line
    retail.write_text("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
                      '536365,85123A,"WHITE HANGING HEART,6,01/12/2010 08:26,2.55,17850,United Kingdom\n'
                      "536366,71053,WHITE METAL LANTERN,6,13/12/2010 08:26,3.39,17850,United Kingdom\n")
    assert retail_dates.file_is_day_first(retail) is True
    events, rejected = load_sorted(retail, "online-retail")
    assert [(e["item_id"], e["ts"]) for e in events] == [("71053", 1292228760000)] and [r.line for r in rejected] == [2]


def test_a_number_json_cannot_hold_is_rejected_with_its_line_not_sent_as_null(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,type,ts,price\nu,i1,click,1796029000000,nan\nu,i2,click,1796029000001,1e999\n"
                    "u,i3,click,1796029000002,2.5\n")
    events, rejected = load_sorted(path, "csv")
    assert [e["item_id"] for e in events] == ["i3"]
    assert [(r.line, "not a finite number" in r.rejection.detail) for r in rejected] == [(2, True), (3, True)]


def test_evaluate_says_which_lines_of_the_online_retail_log_it_left_out_on_purpose(tmp_path):
    from stream_app.config import Settings
    from stream_app.evaluate.prequential import evaluate_log
    from stream_app.evaluate.tables import table

    path = tmp_path / "online_retail.csv"
    path.write_text(ONLINE_RETAIL)
    result = evaluate_log(path, "online-retail", Settings(), light=True)
    assert result["skipped_lines"] | {"lines": 0} == {"lines": 0, "events": 3, "guest": 1, "cancelled": 2,
                                                      "not_product": 1, "rejected": 2, "skipped": 4}
    said = table(result)
    assert "skipped 4 lines as the log's README asks: 1 without a customer, 2 cancellations" in said


def test_evaluate_and_replay_show_the_first_rejection_and_name_the_command_that_lists_them(tmp_path):
    from stream_app.config import Settings
    from stream_app.evaluate.prequential import evaluate_log
    from stream_app.evaluate.tables import table
    from stream_app.tools.replay import ReplaySummary

    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(orjson.dumps({"event_id": f"e{i}", "user_id": "u", "item_id": f"i{i % 2}",
                                           "type": "click", "ts": 1700000000000 + i, "schema_version": 1}) + b"\n"
                             for i in range(4)) + b'{"event_id": "x"}\n{not json\n')
    said = table(evaluate_log(log, "jsonl", Settings(), light=True))
    assert ("rejected: 2 lines of the log that cannot be read as events (not evaluated), the first as "
            "schema_violation (line 5: data must contain") in said
    assert "`stream-app dead-letters` shows them with their reasons" in said
    summary = ReplaySummary(str(log), {"events.click": 4}, rejected=2,
                            first_rejection="schema_violation (line 5: data must contain ...)")
    line = next(line for line in summary.lines() if "rejected" in line)
    assert "-> dead-letter topic, the first as schema_violation (line 5: data must contain ...)" in line
    assert "`stream-app dead-letters` shows the last 20 with their reasons, `--last N` more" in line


def test_an_archive_another_separator_or_a_timestamp_that_is_not_whole_is_named_as_such(tmp_path):
    archive = tmp_path / "otto.zip"
    archive.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(InputFileError, match="a zip archive .*unpack it"):
        load_sorted(archive, "otto")
    dat = tmp_path / "ratings.dat"
    dat.write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    with pytest.raises(InputFileError, match=r"separated by '::'.*without a header line: `\(echo userId,movieId,rating,"
                                             r"timestamp; sed 's/::/,/g' ratings.dat\) > ratings.csv`"):
        load_sorted(dat, "movielens")
    semicolons = tmp_path / "export.csv"
    semicolons.write_text("timestamp;visitorid;event;itemid;price\n1433221332117;257597;view;355908;2,55\n")
    with pytest.raises(InputFileError, match="separated by ';'.*export it again.*breaks decimal commas"):
        load_sorted(semicolons, "retailrocket")
    blank = tmp_path / "blank.csv"
    blank.write_text("\n\n\n")
    with pytest.raises(InputFileError, match=r"the file is empty \(only blank lines\)"):
        load_sorted(blank, "retailrocket")
    rr = tmp_path / "events.csv"
    # a whole-valued float is the same instant (as JSON reads 1.0 as 1); a fraction of a ms is no timestamp
    rr.write_text("timestamp,visitorid,event,itemid,transactionid\n1433221955914.0,1,view,2,\n1433221955915,1,view,3,\n"
                  "1433221955916.5,1,view,4,\n")
    events, rejected = load_sorted(rr, "retailrocket")
    assert [(e["ts"], e["item_id"]) for e in events] == [(1433221955914, "2"), (1433221955915, "3")]
    assert len(rejected) == 1 and "timestamp '1433221955916.5' is not a whole number of ms" in rejected[0].rejection.detail
    ml = tmp_path / "ratings.csv"
    ml.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144.0\n")
    assert [e["ts"] for e in load_sorted(ml, "movielens")[0]] == [1260759144000]
    # the same event written either way keeps its id: a replay of both copies applies it once
    for fmt, header, row, as_float in (("retailrocket", "timestamp,visitorid,event,itemid,transactionid",
                                        "{},1,view,2,", "1433221955914"),
                                       ("movielens", "userId,movieId,rating,timestamp", "1,31,2.5,{}", "1260759144")):
        ids = []
        for written in (as_float, as_float + ".0"):
            copy = tmp_path / f"{fmt}-{written}.csv"
            copy.write_text(f"{header}\n{row.format(written)}\n")
            ids += [e["event_id"] for e in load_sorted(copy, fmt)[0]]
        assert len(ids) == 2 and ids[0] == ids[1], (fmt, ids)
    # a data frame writes RetailRocket's transactionid, empty on most rows, as a float: the published id still
    import hashlib

    published = "rr-" + hashlib.blake2b(b"1433221955914,1,transaction,2,4000", digest_size=10).hexdigest()
    for written in ("4000", "4000.0"):
        copy = tmp_path / f"transaction-{written}.csv"
        copy.write_text(f"timestamp,visitorid,event,itemid,transactionid\n1433221955914.0,1,transaction,2,{written}\n")
        assert [e["event_id"] for e in load_sorted(copy, "retailrocket")[0]] == [published], written


def test_a_log_read_as_another_format_stops_after_its_first_thousand_lines_rejected_and_names_its_format(tmp_path):
    from stream_app.tools.sorted_log import load_accepted

    retail = tmp_path / "online_retail.csv.gz"
    rows = ["InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country",
            *(f"{n},71053,WHITE METAL LANTERN,6,2010-12-01 08:26,3.39,17850,UK" for n in range(5000))]
    retail.write_bytes(gzip.compress("\n".join(rows).encode()))
    reads = []
    with pytest.raises(InputFileError) as stopped:
        for read in read_log(retail, "jsonl"):  # evaluate's and train's default
            reads.append(read)
    assert len(reads) == 1000 and all(isinstance(read, LineRejection) for read in reads)  # not the whole file
    assert (f"{retail}: no events read as jsonl: its first 1,000 lines all rejected (not read further), the first as "
            "invalid_json (line 1: ") in str(stopped.value)
    assert str(stopped.value).endswith("its first line is a header of --format online-retail: give --format "
                                       "online-retail")
    with pytest.raises(InputFileError, match="first 1,000 lines all rejected"):
        load_accepted(retail, "jsonl", lambda event: None, limit=10)
    events = tmp_path / "events.csv"  # a csv of events read as jsonl: its format named, and all lines said
    events.write_text("user_id,item_id,type,ts\nu1,i1,click,1700000000000\n")
    with pytest.raises(InputFileError, match="all 2 lines rejected, .*its first line is a header of --format csv: "
                                             "give --format csv$"):
        load_sorted(events, "jsonl")
    late = tmp_path / "late.jsonl"  # a log whose first events come after 1,000 bad lines is read, not given up on
    late.write_text("not json\n" * 999 + orjson.dumps({"event_id": "e", "user_id": "u", "item_id": "i", "type": "click",
                                                       "ts": 1700000000000, "schema_version": 1}).decode() + "\n"
                    + "not json\n" * 2000)
    found, rejected = load_sorted(late, "jsonl")
    assert len(found) == 1 and len(rejected) == 2999


def test_evaluate_and_train_warn_as_replay_does_when_every_ts_looks_like_seconds(tmp_path, capsys):
    from stream_app.config import Settings
    from stream_app.evaluate.prequential import evaluate_log
    from stream_app_train.train import read_events

    warning = ("warning: every ts of this log is below 100,000,000,000 (before 1973 in milliseconds): if they are "
               "seconds, multiply them by 1000 (ts is milliseconds since 1970)")
    seconds = tmp_path / "seconds.jsonl"
    seconds.write_bytes(b"".join(orjson.dumps({"event_id": f"e{i}", "user_id": f"u{i % 3}", "item_id": f"i{i % 5}",
                                               "type": "click", "ts": 1700000000 + i, "schema_version": 1}) + b"\n"
                                 for i in range(30)))
    evaluate_log(seconds, "jsonl", Settings(), light=True)
    assert capsys.readouterr().err.count(warning) == 1
    read_events(seconds, "jsonl", None, lambda said: None)
    assert capsys.readouterr().err.count(warning) == 1
    ms = tmp_path / "ms.jsonl"
    ms.write_bytes(seconds.read_bytes().replace(b'"ts":17000000', b'"ts":17000000000'))
    evaluate_log(ms, "jsonl", Settings(), light=True)
    assert "warning: every ts" not in capsys.readouterr().err
    # RetailRocket's events.csv is in ms as published: one in seconds was read as January 1970 without a word, and a
    # row in seconds among rows in ms sorted first, unsaid; such a row is refused, saying why
    retailrocket = tmp_path / "events.csv"
    retailrocket.write_text("timestamp,visitorid,event,itemid,transactionid\n" + "".join(
        f"{1433221332 + i},{i % 3},view,{i % 5},\n" for i in range(30)))
    with pytest.raises(InputFileError, match=r"timestamp 1433221332 looks like seconds: .* \(multiply by 1000\)"):
        evaluate_log(retailrocket, "retailrocket", Settings(), light=True)
    retailrocket.write_text("timestamp,visitorid,event,itemid,transactionid\n1433221332117,1,view,10,\n"
                            "1433221340,1,view,11,\n1433221399000,1,view,12,\n")
    events, rejected = load_sorted(retailrocket, "retailrocket")
    assert [e["item_id"] for e in events] == ["10", "12"] and "looks like seconds" in rejected[0].rejection.detail


def test_an_excel_workbook_or_a_utf16_file_is_told_to_be_saved_as_csv_utf8(tmp_path):
    import io
    import zipfile

    workbook = io.BytesIO()
    with zipfile.ZipFile(workbook, "w") as xlsx:  # what Excel writes: Office Open XML in a zip
        xlsx.writestr("[Content_Types].xml", "<Types/>")
        xlsx.writestr("xl/workbook.xml", "<workbook/>")
    for name in ("Online Retail.xlsx", "online_retail.csv"):  # by its name, or by what the zip holds
        path = tmp_path / name
        path.write_bytes(workbook.getvalue())
        with pytest.raises(InputFileError, match=r"an Excel workbook: save it as CSV \(CSV UTF-8\) and give that "
                                                 "file"):
            load_sorted(path, "online-retail")
    from stream_app.tools.catalogue import load_catalogue

    with pytest.raises(InputFileError, match="an Excel workbook"):
        load_catalogue(tmp_path / "Online Retail.xlsx", "online-retail")
    for encoding in ("utf-16", "utf-16-be"):  # Excel's "Unicode Text" (with its byte-order mark)
        text = tmp_path / f"{encoding}.csv"
        text.write_bytes(("\ufeff" + ONLINE_RETAIL).encode(encoding.replace("utf-16", "utf-16-le")
                                                          if encoding == "utf-16" else encoding))
        with pytest.raises(InputFileError, match="a UTF-16 text file .*: save it as CSV UTF-8"):
            load_sorted(text, "online-retail")
    other = tmp_path / "otto.zip"  # a zip of something else is still an archive to unpack
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("otto.jsonl", "{}")
    with pytest.raises(InputFileError, match="a zip archive .*unpack it"):
        load_sorted(other, "otto")
    for name in ("train.parquet", "test.bin"):  # OTTO on Kaggle: by its magic, or by its name
        parquet = tmp_path / name
        parquet.write_bytes(b"PAR1\x15\x04\x15\xa0\x01" if name.endswith(".bin") else b"not even its magic")
        with pytest.raises(InputFileError, match="a Parquet file .*write it out as JSON lines or CSV"):
            load_sorted(parquet, "otto")


def test_a_csv_header_with_spaces_after_its_commas_names_its_columns(tmp_path):
    spaced = tmp_path / "events.csv"
    spaced.write_text("user_id, item_id, type, ts, price\nu1, i1, click, 1700000000000, 2.5\n"
                      "u1, i2, purchase, 1700000001000,\n")
    events, rejected = load_sorted(spaced, "csv")
    assert not rejected
    assert [(e["user_id"], e["item_id"], e["type"], e["ts"], e.get("price")) for e in events] == [
        ("u1", "i1", "click", 1700000000000, 2.5), ("u1", "i2", "purchase", 1700000001000, None)]
    retail = tmp_path / "retail.csv"
    retail.write_text(ONLINE_RETAIL.replace(",", ", ", 7))  # the header's seven commas
    plain = tmp_path / "plain.csv"
    plain.write_text(ONLINE_RETAIL)
    assert load_sorted(retail, "online-retail")[0] == load_sorted(plain, "online-retail")[0]


def test_a_number_that_cannot_be_read_names_its_column_and_a_whole_valued_float_is_a_whole_number(tmp_path):
    retail = tmp_path / "online_retail.csv"
    retail.write_text("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
                      "1,71053,WHITE METAL LANTERN,6.0,2010-12-01 08:26,3.39,17850.0,UK\n"
                      "2,71053,WHITE METAL LANTERN,six,2010-12-01 08:26,3.39,17850,UK\n"
                      "3,71053,WHITE METAL LANTERN,6,2010-12-01 08:26,abc,17850,UK\n"
                      "4,71053,WHITE METAL LANTERN,-2.0,2010-12-01 08:26,3.39,17850,UK\n")
    stats = OnlineRetailStats()
    events, rejected = load_sorted(retail, "online-retail", stats)
    assert [(e["quantity"], e["price"]) for e in events] == [(6, 3.39)] and stats.cancelled == 1
    assert [r.rejection.detail for r in rejected] == [
        "line 3: cannot read the row (Quantity 'six' is not a whole number)",
        "line 4: cannot read the row (UnitPrice 'abc' is not a number)"]
    log = tmp_path / "events.csv"
    log.write_text("user_id,item_id,type,ts,quantity,dwell_ms,price\nu,i,click,1700000000000,6.0,1200.0,2\n"
                   "u,i,click,1700000000001,6.5,,\nu,i,click,1700000000002,,x,\nu,i,click,1700000000003,,,p\n")
    events, rejected = load_sorted(log, "csv")
    assert [(e["quantity"], e["dwell_ms"], e["price"]) for e in events] == [(6, 1200, 2.0)]
    assert [r.rejection.detail.split(" (", 1)[1] for r in rejected] == [
        "quantity '6.5' is not a whole number)", "dwell_ms 'x' is not a whole number)", "price 'p' is not a number)"]


def test_an_online_retail_log_of_which_every_line_is_skipped_says_what_was_skipped_not_to_check_the_format(tmp_path):
    from stream_app.tools.sorted_log import SortedLog, load_accepted

    retail = tmp_path / "online_retail.csv"
    retail.write_text("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
                      "1,71053,WHITE METAL LANTERN,6,2010-12-01 08:26,3.39,,UK\n"
                      "C2,71053,WHITE METAL LANTERN,-6,2010-12-01 08:26,3.39,17850,UK\n"
                      "3,POST,POSTAGE,1,2010-12-01 08:26,18,17850,UK\n"
                      "4,71053,WHITE METAL LANTERN,six,2010-12-01 08:26,3.39,17850,UK\n")
    said = (f"{retail}: no events left once lines were skipped: skipped 3 lines as the log's README asks: 1 without a "
            "customer, 1 cancellations or returns, 1 codes that are not products; 1 rejected, the first as "
            "schema_violation (line 5: cannot read the row (Quantity 'six' is not a whole number))")
    for read in (lambda: load_sorted(retail, "online-retail"),
                 lambda: load_accepted(retail, "online-retail", lambda event: None, limit=10),
                 lambda: SortedLog.read(retail, "online-retail", lambda event: None)):
        with pytest.raises(InputFileError) as nothing:
            read()
        assert str(nothing.value) == said and "--format" not in said


def test_a_csv_line_of_empty_fields_only_is_a_blank_line_in_every_csv_format(tmp_path):
    """Excel writes an empty row as ",,,,,,,": Online Retail counted it as a guest line, the other formats
    dead-lettered it, where jsonl skips a blank line."""
    from stream_app.tools.recorded import OnlineRetailStats

    retail = tmp_path / "retail.csv"
    retail.write_text("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
                      "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom\n"
                      ",,,,,,,\n , ,\t,,,,,\n")
    stats = OnlineRetailStats()
    events, rejected = load_sorted(retail, "online-retail", stats)
    assert len(events) == 1 and not rejected and (stats.lines, stats.guest) == (1, 0)
    rr = tmp_path / "events.csv"
    rr.write_text("timestamp,visitorid,event,itemid,transactionid\n1433221332117,257597,view,355908,\n,,,,\n")
    assert [len(found) for found in load_sorted(rr, "retailrocket")] == [1, 0]


def test_a_json_log_line_that_is_not_utf8_is_rejected_naming_the_byte(tmp_path):
    """orjson's "str is not valid UTF-8: surrogates not allowed" named no byte and no way out."""
    good = b'{"event_id":"e2","user_id":"u1","item_id":"i2","type":"browse","ts":1700000001000,"schema_version":1}\n'
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"event_id":"e1","user_id":"u1","item_id":"caf\xe9","type":"browse","ts":1700000000000,'
                     b'"schema_version":1}\n' + good)
    events, rejected = load_sorted(path, "jsonl")
    assert [e["event_id"] for e in events] == ["e2"]
    [(line, rejection)] = [(r.line, r.rejection) for r in rejected]
    assert line == 1 and rejection.reason == "not_utf8"
    assert "byte 0xe9 at column 47 is not UTF-8" in rejection.detail and "save the log as UTF-8" in rejection.detail
    otto = tmp_path / "latin-otto.jsonl"
    otto.write_bytes(b'{"session": "caf\xe9", "events": []}\n')
    [read] = list(read_log(otto, "otto"))
    assert read.rejection.reason == "not_utf8"


def test_a_json_array_and_a_header_in_another_case_are_told_apart_from_a_wrong_format(tmp_path):
    """A JSON array given as jsonl and RetailRocket's header written in another case were refused with the generic
    hints (the schema, the format), not with what differs."""
    array = tmp_path / "events.json"
    array.write_text('[{"event_id": "a", "user_id": "u", "item_id": "i", "type": "click", "ts": 1700000000000, '
                     '"schema_version": 1}]\n')
    with pytest.raises(InputFileError, match=r"its one line rejected, .*the file is one JSON array, not JSON lines"):
        load_sorted(array, "jsonl")
    cased = tmp_path / "events.csv"
    cased.write_text("Timestamp,VisitorId,Event,ItemId,TransactionId\n1433221332117,1,view,2,\n")
    with pytest.raises(InputFileError, match=r"its names differ in case only: Timestamp, VisitorId, Event, ItemId must "
                                             r"be written timestamp, visitorid, event, itemid"):
        load_sorted(cased, "retailrocket")
    retail = tmp_path / "retail.csv"  # read as OTTO: the generic "is --format right?"
    retail.write_text("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
                      "536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850,UK\n")
    with pytest.raises(InputFileError, match=r"its first line is a header of --format online-retail: give --format "
                                             r"online-retail"):
        load_sorted(retail, "otto")


def test_a_row_the_event_schema_refuses_names_the_files_column_not_the_events_field(tmp_path):
    """"data.item_id must be shorter than ..." named neither the file's column (RetailRocket's itemid, OTTO's aid)
    nor the file's own field without the schema's "data." before it."""
    long_id = "9" * 201
    rr = tmp_path / "events.csv"
    rr.write_text(f"timestamp,visitorid,event,itemid\n1433221332117,257597,view,{long_id}\n")
    otto = tmp_path / "sessions.jsonl"
    otto.write_text('{"session": 1, "events": [{"aid": "%s", "ts": 1659304800025, "type": "clicks"}]}\n' % long_id)
    own = tmp_path / "log.csv"
    own.write_text("user_id,item_id,type,ts\nu1,i1,view,1433221332117\n")
    said = [read.rejection.detail for path, fmt in ((rr, "retailrocket"), (otto, "otto"), (own, "csv"))
            for read in read_log(path, fmt)]
    assert said == ["line 2: item_id (the file's itemid) must be shorter than or equal to 200 characters",
                    "line 1: event_id (the file's session, ts, aid and type joined) must be shorter than or equal to 200 "
                    "characters",
                    "line 2: type must be one of ['browse', 'click', 'purchase'] (for a view, write browse)"]


BAD_LINES_OF_U7 = {
    "jsonl": ('{"event_id":"e1","user_id":"u1","item_id":"i1","type":"click","ts":1700000000000,"schema_version":1}\n'
              '{"event_id":"e2","user_id":"u7","item_id":"","type":"click","ts":1700000000001,"schema_version":1}\n'
              '{"event_id":"e3","user_id":"u7","item_id":"i1","type":"click","ts":NaN,"schema_version":1}\n'
              '{"event_id":"e4","user_id":"u7","item_id":"i1",\n', 3),
    "csv": ("user_id,item_id,type,ts\nu1,i1,click,1700000000000\nu7,,click,1700000000001\n"
            "u7,i1,click,soon\nu7,i1,click\n", 3),
    "retailrocket": ("timestamp,visitorid,event,itemid,transactionid\n1433221332117,u1,view,i1,\n"
                     "later,u7,view,i1,\n1433221332118,u7,stare,i1,\n1433221332119,u7\n", 3),
    "movielens": ("userId,movieId,rating,timestamp\nu1,m1,4.0,964982703\nu7,m1,good,964982704\n"
                  "u7,m1,4.0,yesterday\nu7,m1\n", 3),
    "online-retail": ("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
                      "536365,85123A,HEART,6,12/1/2010 8:26,2.55,17850,United Kingdom\n"
                      "536366,85123A,HEART,six,12/1/2010 8:28,2.55,u7.0,United Kingdom\n"
                      "536367,,HEART,6,12/1/2010 8:29,2.55,u7,United Kingdom\n"
                      "536368,85123A,WHITE METAL, LANTERN,6,12/1/2010 8:30,3.39,u7,United Kingdom\n", 3),
    "otto": ('{"session":1,"events":[{"aid":5,"ts":1661724000000,"type":"clicks"}]}\n'
             '{"session":"u7","events":[{"aid":5,"ts":1661724000001,"type":"stares"}]}\n'
             '{"session":"u7","events":{"aid":5}}\n', 2),
}


@pytest.mark.parametrize("fmt", sorted(BAD_LINES_OF_U7))
def test_a_rejected_line_is_keyed_by_the_user_it_names_so_the_users_erasure_finds_its_dead_letter(tmp_path, fmt):
    """Unkeyed, the dead letters of a csv, RetailRocket, MovieLens, Online Retail or OTTO line were missed by their
    user's erasure receipt, and a replay after the erasure wrote them to the dead-letter topic again."""
    from stream_app.contracts import dead_letter_users, input_users

    text, expected = BAD_LINES_OF_U7[fmt]
    path = tmp_path / f"log.{fmt}"
    path.write_text(text)
    rejected = [read for read in read_log(path, fmt) if isinstance(read, LineRejection)]
    assert len(rejected) == expected
    if fmt in ("csv", "retailrocket", "movielens", "online-retail"):  # its last line is short of a field
        short = rejected.pop()
        assert short.line == 5 and short.rejection.message_key() is None  # its columns may hold others' values
    for read in rejected:
        assert read.rejection.message_key() == b"u7", (read.line, read.rejection.detail)
        assert input_users(read.rejection.message_key(), read.rejection.payload)[0] == {"u7"}
        letter = orjson.dumps(read.rejection.to_record())  # as the topic holds it, and the erasure receipt reads it
        assert dead_letter_users(read.rejection.message_key(), letter) == {"u7"}


def test_a_file_line_breaking_a_rule_between_two_fields_is_said_plainly_as_a_workers_dead_letter_says_it(tmp_path):
    """A click with a stage read "type must be same as const definition: purchase" from replay, where a worker's
    dead letter said what was wrong."""
    path = tmp_path / "log.jsonl"
    path.write_text('{"event_id":"e1","user_id":"u1","item_id":"i1","type":"click","stage":"cart","ts":1700000000000,'
                    '"schema_version":1}\n{"event_id":"e2","user_id":"u1","item_id":"i1","type":"click",'
                    '"ts":1700000000000,"schema_version":1}\n[1,\n')
    stage, broken = [read.rejection.detail for read in read_log(path, "jsonl") if isinstance(read, LineRejection)]
    assert stage == "line 1: 'stage' is only on purchase events, not on a 'click' event"
    assert broken.startswith("line 3: not JSON: ")


def test_a_csv_events_id_comes_from_the_event_so_a_filtered_or_reordered_copy_applies_each_event_once(tmp_path):
    """A walkthrough: a csv row's id came from its line number and bytes, so replaying the log, then a copy without
    its bad lines, applied every event twice (a profile of 16 events showed 32), unsaid; a row repeated exactly was
    two events. RetailRocket's ids already came from the row's content."""
    published = tmp_path / "log.csv"
    published.write_text("user_id,item_id,type,ts,category\n"
                         "u1,i1,click,2000,shoes\n"
                         "u1,i2,purchase,1000,\n"
                         "u2,i3,teleport,3000,\n"
                         "u2,i3,browse,3000,\n")
    copy = tmp_path / "copy.csv"  # bad line gone, columns reordered and spaced, rows re-sorted, one row twice
    copy.write_text("ts, type, item_id, user_id, category\n"
                    "3000, browse, i3, u2,\n"
                    "1000, purchase, i2, u1,\n"
                    "2000, click, i1, u1, shoes\n"
                    "2000, click, i1, u1, shoes\n")
    ids = {e["event_id"] for e in events_of(published, "csv")}
    copied = [e["event_id"] for e in events_of(copy, "csv")]
    assert len(ids) == 3 and set(copied) == ids and len(copied) == 4  # the repeated row: the same event's id
    other = tmp_path / "other.csv"  # the same click in another category is another event
    other.write_text("user_id,item_id,type,ts,category\nu1,i1,click,2000,boots\n")
    assert not {e["event_id"] for e in events_of(other, "csv")} & ids


def test_a_csv_with_some_ts_in_seconds_among_milliseconds_is_warned_about(tmp_path, capsys):
    """A walkthrough: a csv with every third ts in seconds was evaluated without a word, a third of its events dated
    1970; the seconds warning came only when every ts was below 1e11."""
    from stream_app.config import Settings
    from stream_app.evaluate.prequential import evaluate_log

    mixed = tmp_path / "mixed.csv"
    mixed.write_text("user_id,item_id,type,ts\n" + "".join(
        f"u{i % 3},i{i % 5},click,{1_700_000_000 + i if i % 3 == 0 else 1_700_000_000_000 + i * 1000}\n"
        for i in range(30)))
    evaluate_log(mixed, "csv", Settings(), light=True)
    err = capsys.readouterr().err
    assert "earliest ts, 1,700,000,000, is below 100,000,000,000" in err and "multiply those by 1000" in err


def test_a_type_in_another_logs_words_or_a_time_in_microseconds_is_rejected_saying_what_to_write():
    """A walkthrough: a csv written with RetailRocket's `view` had 1,231 of 1,739 lines rejected as "type must be one of
    ['browse', 'click', 'purchase']", with nothing to say that a view is a browse here."""
    from pathlib import Path

    from stream_app.tools.recorded import _checked

    event = {"event_id": "e1", "user_id": "u", "item_id": "i", "type": "view", "ts": 1_700_000_000_000,
             "schema_version": 1}
    said = _checked(Path("log.csv"), 2, event, b"u,i,view,1700000000000", "csv").rejection.detail
    assert "for a view, write browse" in said
    said = _checked(Path("log.csv"), 2, {**event, "type": "addtocart"}, b"", "csv").rejection.detail
    assert "write purchase with the stage column cart" in said
    said = _checked(Path("log.csv"), 2, {**event, "type": "click", "ts": 1_700_000_000_000_000}, b"", "csv")
    assert "looks like microseconds" in said.rejection.detail and "divide by 1000" in said.rejection.detail
    bare = {key: event[key] for key in ("user_id", "item_id", "type", "ts")}  # a jsonl line without id nor version
    said = _checked(Path("log.jsonl"), 1, bare, b"", "jsonl").rejection.detail
    assert "carries its own unique event_id" in said and "--format csv" in said


def test_movielens_ratings_dat_given_as_csv_is_pointed_to_the_movielens_format(tmp_path):
    """A walkthrough: `ratings.dat` with `--format csv` was told to export it again as CSV with commas, with no word of
    --format movielens, which says how."""
    dat = tmp_path / "ratings.dat"
    dat.write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    with pytest.raises(InputFileError, match=r"MovieLens' ratings\.dat.*--format movielens"):
        events_of(dat, "csv")


def test_movielens_ratings_dat_read_with_the_default_format_is_pointed_to_the_movielens_format(tmp_path, capsys):
    """A walkthrough: `evaluate ratings.dat` (jsonl, the default) was told only "is --format right?"."""
    from stream_app.cli.main import main

    dat = tmp_path / "ratings.dat"
    dat.write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    assert main(["evaluate", str(dat), "--json", str(tmp_path / "r.json")]) == 2
    assert "it looks like MovieLens' ratings.dat (fields separated by '::'): --format movielens" in capsys.readouterr().err


def test_ids_a_data_frame_wrote_as_floats_name_the_same_users_and_items_as_the_published_file(tmp_path):
    """RetailRocket's transactionid is empty on most rows, so a data frame reads every column as float64 and writes
    `111016.0`: the event id was the same as the published row's, the user and item were others, so a replay of both
    copies applied the event twice, to two users, on an item no catalogue knew."""
    rr, rr_floats = tmp_path / "events.csv", tmp_path / "events-floats.csv"
    rr.write_text("timestamp,visitorid,event,itemid,transactionid\n1433221999827,111016,transaction,356475,4000\n"
                  "1433221999828,0077,view,00356475,\n")
    rr_floats.write_text("timestamp,visitorid,event,itemid,transactionid\n"
                         "1433221999827.0,111016.0,transaction,356475.0,4000.0\n1433221999828,0077,view,00356475,\n")
    published, floats = events_of(rr, "retailrocket"), events_of(rr_floats, "retailrocket")
    assert floats == published and [(e["user_id"], e["item_id"]) for e in published] == [
        ("111016", "356475"), ("0077", "00356475")]  # leading zeros are the published id's own
    ml = tmp_path / "ratings.csv"
    ml.write_text("userId,movieId,rating,timestamp\n1.0,50.0,4.0,964982703.0\nx1.0,50,4.0,964982704\n")
    (event, other) = events_of(ml, "movielens")
    assert (event["event_id"], event["user_id"], event["item_id"]) == ("ml-1-50-964982703", "1", "50")
    assert other["user_id"] == "x1.0"  # not a number: an id as it is
    rr.write_text("timestamp,visitorid,event,itemid,transactionid\n-1,257597,view,355909,\n")
    [negative] = read_log(rr, "retailrocket")  # "looks like seconds (multiply by 1000)" mended nothing
    assert "timestamp -1 is before 1970: events.csv has milliseconds since 1970" in negative.rejection.detail


def test_a_json_logs_whole_valued_float_integers_are_sent_as_integers(tmp_path):
    """`"ts": 1700000000000.0` passed the schema (a whole-valued float is an integer to JSON Schema) and went out as
    a float, which replay's check of the topics' latest event times then did not read."""
    from types import SimpleNamespace

    from stream_app.config import Settings
    from stream_app.tools.replay import accepted_time

    log = tmp_path / "events.jsonl"
    log.write_bytes(b'{"event_id":"a","user_id":"u","item_id":"i","type":"purchase","ts":1700000000000.0,'
                    b'"quantity":2.0,"dwell_ms":1500.0,"schema_version":1.0}\n')
    [event] = events_of(log, "jsonl")
    assert {name: type(event[name]) for name in ("ts", "quantity", "dwell_ms", "schema_version")} == dict.fromkeys(
        ("ts", "quantity", "dwell_ms", "schema_version"), int)
    assert event["ts"] == 1700000000000 and orjson.dumps(event).count(b".0") == 0
    record = SimpleNamespace(value=b'{"ts":1700000000000.0}', timestamp=1700000000000)
    assert accepted_time(record, Settings.from_env({})) == 1700000000000  # a worker accepts it: so does the check


def test_online_retail_carriage_and_gift_vouchers_are_not_products(tmp_path):
    """C2 (CARRIAGE) has a digit, so it was read as a product: 133 purchases of the shared log, and an item in the
    catalogue that the hybrid could recommend."""
    retail = tmp_path / "online_retail.csv"
    retail.write_text(OR_HEAD + "536366,C2,CARRIAGE,1,12/1/2010 8:28,50,14911,EIRE\n"
                      "536367,gift_0001_20,Dotcomgiftshop Gift Voucher £20.00,1,12/1/2010 8:29,17.02,14911,EIRE\n"
                      "536368,22633,HAND WARMER UNION JACK,6,12/1/2010 8:30,1.85,14911,EIRE\n")
    stats = OnlineRetailStats()
    events, _ = load_sorted(retail, "online-retail", stats)
    assert [e["item_id"] for e in events] == ["22633"] and stats.not_product == 2
    assert list(load_catalogue(retail, "online-retail")[0]) == ["22633"]


def test_a_file_of_another_format_given_as_online_retail_is_refused_before_its_dates_are_read(tmp_path, monkeypatch):
    """The check of the date order read every line of a file that had no InvoiceDate column before the header was
    looked at: minutes of a large log before the error."""
    rr = tmp_path / "events.csv"
    rr.write_text("timestamp,visitorid,event,itemid,transactionid\n1433221999827,111016,transaction,356475,4000\n")
    read_dates = []
    monkeypatch.setattr(recorded_module, "file_is_day_first", lambda path: read_dates.append(path) or False)
    with pytest.raises(InputFileError, match="retailrocket"):
        load_sorted(rr, "online-retail")
    assert read_dates == []


def test_an_otto_time_with_a_fraction_of_a_millisecond_is_refused_and_seconds_round_to_the_millisecond(tmp_path):
    otto = tmp_path / "otto.jsonl"
    otto.write_text('{"session": 1, "events": [{"aid": 5, "ts": 1659304800025.9, "type": "clicks"}, '
                    '{"aid": 6, "ts": 1659304800.0259, "type": "clicks"}, {"aid": 7, "ts": 1659304801026, '
                    '"type": "clicks"}]}\n')
    read = list(read_log(otto, "otto"))
    assert [r.rejection.detail for r in read if isinstance(r, LineRejection)] == [
        "line 1: event 0 of session 1: ts 1659304800025.9 is not a whole number of milliseconds"]
    assert [e["ts"] for e in read if not isinstance(e, LineRejection)] == [1659304800026, 1659304801026]


def test_a_csv_written_with_a_space_after_each_comma_reads_its_quoted_fields_and_a_blank_first_line_is_passed(
        tmp_path):
    """A review: `u1, "i1"` gave the item '"i1"' (another item, another event id than `u1,i1`), `u1, "a,b"` was
    refused as five fields, and a blank line before the header refused the file as having none."""
    spaced, plain = tmp_path / "spaced.csv", tmp_path / "plain.csv"
    spaced.write_text('\n"user_id", "item_id", type, ts\nu1, "i1", click, 1700000000000\n'
                      'u1, "a,b", click, 1700000000001\n')
    plain.write_text("user_id,item_id,type,ts\nu1,i1,click,1700000000000\n")
    read = list(read_log(spaced, "csv"))
    assert [(e["item_id"], e["ts"]) for e in read] == [("i1", 1700000000000), ("a,b", 1700000000001)]
    assert read[0]["event_id"] == events_of(plain, "csv")[0]["event_id"]  # the same row, the same event


def test_a_jsonl_line_without_an_event_id_is_told_how_a_csv_log_gets_them(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"user_id": "u", "item_id": "i", "type": "click", "ts": 1700000000000}\n')
    (rejected,) = read_log(path, "jsonl")
    assert "--format csv" in rejected.rejection.detail


def test_a_log_this_user_cannot_read_is_said_so_not_a_traceback(tmp_path, monkeypatch):
    from stream_app.tools import log_files
    from stream_app.tools.log_files import check_file, reading_as

    path = tmp_path / "log.jsonl"
    path.write_bytes(b"{}\n")

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(log_files, "open", refused, raising=False)
    with pytest.raises(InputFileError, match="cannot be read \\(Permission denied\\): check its permissions"):
        check_file(path)
    with pytest.raises(InputFileError, match="cannot be read as otto .*Input/output error"):
        with reading_as(path, "otto"):
            raise OSError(5, "Input/output error")  # a read that failed midway (a disk, a network mount)


def test_a_replay_into_a_namespace_no_worker_reads_says_so():
    """Events sent under a namespace no worker reads waited unsaid (a walkthrough, helper-137)."""
    from stream_app.config import Settings
    from stream_app.tools.replay import ReplaySummary, live_workers

    summary = ReplaySummary("log.jsonl", {"events.click": 4}, no_worker="walk.")
    assert summary.lines()[-1] == ("  no worker is live under STREAM_APP_NAMESPACE='walk.': the events wait in its "
                                   "topics until one starts (`stream-app worker` with the same namespace; `stream-app "
                                   "status` lists them)")
    assert not [line for line in ReplaySummary("log.jsonl", {"events.click": 4}).lines() if "no worker" in line]
    assert live_workers(Settings(redis_url="")) is None  # cannot be told: nothing said
    assert live_workers(Settings(redis_url="redis://127.0.0.1:1/0")) is None  # Redis away: the replay needs none
    assert live_workers(Settings(redis_url="localhost:6379")) is None  # no Redis URL: after every event was sent


def test_a_jsonl_line_giving_a_name_twice_is_refused_as_a_worker_refuses_it(tmp_path):
    """`evaluate` and `replay` leave out what the workers would refuse: a line whose object gives user_id twice."""
    good = {"event_id": "a", "user_id": "u", "item_id": "i", "type": "browse", "ts": 5, "schema_version": 1}
    path = tmp_path / "e.jsonl"
    path.write_bytes(orjson.dumps(good) + b'\n{"event_id": "b", "user_id": "v", "user_id": "u", "item_id": "i", '
                     b'"type": "browse", "ts": 6, "schema_version": 1}\n')
    events, rejected = load_sorted(path, "jsonl")
    assert events == [good]
    assert [(r.line, r.rejection.reason) for r in rejected] == [(2, "invalid_json")]
    assert "line 2: the name 'user_id' is given twice in one object" in rejected[0].rejection.detail
