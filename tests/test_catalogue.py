"""`stream-app items load` as a user runs it on files that are wrong: each says what to do, before any
service is needed, and without a traceback."""

import gzip

import pytest

from stream_app.cli.main import main
from stream_app.errors import InputFileError

RETAIL_ROWS = ["InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country",
               *(f"{n},7105{n % 10},WHITE METAL LANTERN {n % 10},6,2010-12-01 08:26,3.39,17850,UK" for n in range(400))]


@pytest.fixture
def no_services(tmp_path, monkeypatch):
    """No broker, no Redis, no runtime file: a command that needs them fails saying so."""
    monkeypatch.setenv("STREAM_APP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "")
    monkeypatch.setenv("REDIS_URL", "")


def test_a_truncated_gzip_catalogue_is_named_as_unreadable(tmp_path, no_services, capsys):
    broken = tmp_path / "retail.csv.gz"
    broken.write_bytes(gzip.compress("\n".join(RETAIL_ROWS).encode())[:-12])
    assert main(["items", "load", str(broken), "--format", "online-retail"]) == 2
    err = capsys.readouterr().err
    assert f"stream-app items: error: {broken}: cannot be read as online-retail (Compressed file ended" in err


class SentRecords:
    """A producer that keeps what it is given: `items load` without a broker."""

    def __init__(self):
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, key, value))
        return Acknowledged(topic, len(self.sent))

    def flush(self):
        pass

    def close(self):
        pass


class Acknowledged:
    """A send's future, already acknowledged."""

    def __init__(self, topic, offset):
        self.metadata = type("Metadata", (), {"topic": topic, "partition": 0, "offset": offset})()

    def add_callback(self, callback):
        callback(self.metadata)
        return self

    def add_errback(self, errback):
        return self


@pytest.fixture
def producer(monkeypatch):
    from stream_app.stream import topics
    from stream_app.tools import replay

    kept = SentRecords()
    monkeypatch.setattr(replay, "make_producer", lambda settings: kept)
    monkeypatch.setattr(topics, "ensure_topics", lambda settings: None)
    return kept


def test_jsonl_items_as_the_readme_writes_them_load_and_the_first_rejection_is_shown(tmp_path, no_services,
                                                                                    producer, capsys):
    import orjson

    catalogue = tmp_path / "items.jsonl"
    catalogue.write_text('{"item_id": "a", "title": "A"}\n'
                         '{"item_id": "b", "title": "B", "price": 2.5}\n'
                         '{"item_id": "c", "title": "C", "schema_version": 2}\n')
    assert main(["items", "load", str(catalogue)]) == 0
    out = capsys.readouterr().out
    assert f"loaded 2 items from {catalogue}" in out
    assert "1 catalogue record rejected, the first as schema_violation (line 3: schema_version 2 is not one" in out
    items = {key: orjson.loads(value) for topic, key, value in producer.sent if topic == "items"}
    assert items == {b"a": {"item_id": "a", "title": "A", "schema_version": 1},
                     b"b": {"item_id": "b", "title": "B", "price": 2.5, "schema_version": 1}}
    assert [orjson.loads(value)["reason"] for topic, _, value in producer.sent if topic == "events.dlq"] == [
        "schema_violation"]


def test_a_catalogue_without_one_item_fails_saying_what_to_check_and_sends_nothing(tmp_path, no_services,
                                                                                  producer, capsys):
    untitled = tmp_path / "items.jsonl"
    untitled.write_text('{"item_id": "a"}\n{"item_id": "b"}\n')
    assert main(["items", "load", str(untitled)]) == 2
    err = capsys.readouterr().err
    assert (f"stream-app items: error: {untitled}: no items read as jsonl: all 2 lines rejected, the first as "
            "schema_violation (line 1: data must contain ['title'] properties); the lines read as jsonl but not as valid "
            "items (or is --format right? one of jsonl, csv, online-retail, movielens; every record needs an item_id "
            "and a title, schemas/v1/item.schema.json)") in err
    from stream_app.tools.catalogue import load_catalogue

    with pytest.raises(InputFileError, match="is --items-format right"):  # evaluate's and demo's option for it
        load_catalogue(untitled, "jsonl", "--items-format")
    header_only = tmp_path / "items.csv"
    header_only.write_text("item_id,title\n")
    assert main(["items", "load", str(header_only), "--format", "csv"]) == 2
    assert f"{header_only}: only a header line, no items" in capsys.readouterr().err
    assert producer.sent == []


def test_a_catalogue_csv_row_of_the_wrong_width_or_with_an_unclosed_quote_is_that_lines_rejection(
        tmp_path, no_services, producer, capsys):
    import orjson

    catalogue = tmp_path / "items.csv"
    catalogue.write_text('item_id,title\n22633,HAND WARMER, UNION JACK\n1,"Open quote\n2,Two\n3,Three\n')
    assert main(["items", "load", str(catalogue), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert f"loaded 2 items from {catalogue}" in out
    assert ("2 catalogue records rejected, the first as schema_violation (line 2: 3 fields where the header names 2 "
            "(an unquoted comma?))") in out
    items = {key: orjson.loads(value) for topic, key, value in producer.sent if topic == "items"}
    assert items == {b"2": {"item_id": "2", "title": "Two", "schema_version": 1},
                     b"3": {"item_id": "3", "title": "Three", "schema_version": 1}}
    letters = [orjson.loads(value) for topic, _, value in producer.sent if topic == "events.dlq"]
    assert [(letter["source"]["line"], letter["detail"][:8]) for letter in letters] == [(2, "line 2: "),
                                                                                        (3, "line 3: ")]
    assert "a quoted field opens on it and does not close on it" in letters[1]["detail"]
    long_quote = tmp_path / "long.csv"  # a quote left open before a long file: no "field larger than field limit"
    long_quote.write_text('item_id,title\n1,"Open\n' + "".join(f"{n},{'x' * 100}\n" for n in range(2, 2000)))
    from stream_app.tools.catalogue import load_catalogue

    items, rejected = load_catalogue(long_quote, "csv")
    assert len(items) == 1998 and [r.line for r in rejected] == [2]


def test_an_online_retail_line_that_cannot_be_read_is_a_rejection_of_the_catalogue_not_left_out_unsaid(
        tmp_path, no_services, producer, capsys):
    """The event reader rejects such a line with its number; the catalogue read it silently away (a product whose
    only line it was went missing, and nothing said so)."""
    import orjson

    shop = tmp_path / "online_retail.csv"
    shop.write_text("\r\n".join([RETAIL_ROWS[0], RETAIL_ROWS[1],
                                  "536366,22633,HAND WARMER, UNION JACK,6,2010-12-01 08:28,1.85,17850,UK",
                                  '536367,84879,"ASSORTED COLOUR BIRD ORNAMENT,32,2010-12-01 08:34,1.69,13047,UK',
                                  RETAIL_ROWS[2]]) + "\r\n")
    assert main(["items", "load", str(shop), "--format", "online-retail"]) == 0
    out = capsys.readouterr().out
    assert f"loaded 2 items from {shop}" in out
    assert ("2 catalogue records rejected, the first as schema_violation (line 3: 9 fields where the header names 8 "
            "(an unquoted comma?))") in out
    letters = [orjson.loads(value) for topic, _, value in producer.sent if topic == "events.dlq"]
    assert [letter["source"]["line"] for letter in letters] == [3, 4]
    assert "a quoted field opens on it and does not close on it" in letters[1]["detail"]


def test_an_event_log_given_as_a_catalogue_is_named_as_one_not_as_a_format_items_load_has(tmp_path, no_services,
                                                                                           producer, capsys):
    """The hint named the event formats (`--format retailrocket`, which `items load` refuses; `--format csv` to a
    command run with `--format csv`)."""
    log, ratings = tmp_path / "events.csv", tmp_path / "ratings.csv"
    log.write_text("user_id,item_id,type,ts\nu1,i1,click,1700000000000\n")
    ratings.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n")
    for path, fmt, own in ((log, "csv", "csv"), (ratings, "csv", "movielens"), (ratings, "online-retail", "movielens")):
        assert main(["items", "load", str(path), "--format", fmt]) == 2
        err = capsys.readouterr().err
        assert f"its header is that of an event log, `replay`/`evaluate` --format {own}" in err
        assert "its header is that of --format" not in err
    shop = tmp_path / "online_retail.csv"
    shop.write_text("\n".join(RETAIL_ROWS[:3]) + "\n")
    assert main(["items", "load", str(shop), "--format", "csv"]) == 2
    assert "(its header is that of --format online-retail)" in capsys.readouterr().err  # a format items load has
    assert producer.sent == []


def test_a_catalogue_csv_description_may_hold_line_breaks_inside_its_quotes(tmp_path):
    """Exported catalogues put paragraphs in descriptions: read a row a line, such an item was rejected and lost."""
    from stream_app.tools.catalogue import load_catalogue

    catalogue = tmp_path / "items.csv"
    catalogue.write_text('item_id,title,description\ni1,Mug,"Large mug.\nDishwasher safe."\ni2,Plate,Flat\n'
                         'i3,"Bowl,Deep\ni4,Cup,Small\n')
    items, rejected = load_catalogue(catalogue, "csv")
    assert items["i1"]["description"] == "Large mug.\nDishwasher safe." and set(items) == {"i1", "i2", "i4"}
    assert [r.line for r in rejected] == [5]  # a quote that never closes is still that line's rejection


def test_a_json_catalogue_read_as_csv_is_told_jsonl_not_a_format_items_load_lacks(tmp_path):
    """The hint said "--format jsonl, or otto for OTTO sessions": `items load` reads no OTTO sessions."""
    from stream_app.tools.catalogue import load_catalogue

    path = tmp_path / "items.jsonl"
    path.write_text('{"item_id": "i1", "title": "a lamp"}\n')
    with pytest.raises(InputFileError, match=r"it looks like JSON lines: --format jsonl\)") as raised:
        load_catalogue(path, "csv")
    assert "otto" not in str(raised.value)


def test_a_listed_at_years_ahead_or_in_microseconds_is_that_lines_rejection_not_an_item_hidden_for_ever(tmp_path):
    """An item listed in the year 3000, or at a time in µs (read as ms: the year 55,000), was accepted: the content
    sources never proposed it, and nothing said why. A launch some weeks ahead is a listing ahead."""
    import time

    from stream_app.tools.catalogue import load_catalogue

    now_ms, day_ms = int(time.time() * 1000), 86_400_000
    catalogue = tmp_path / "items.jsonl"
    catalogue.write_text(f'{{"item_id": "old", "title": "A", "listed_at": 1291192000000}}\n'
                         f'{{"item_id": "launch", "title": "B", "listed_at": {now_ms + 30 * day_ms}}}\n'
                         f'{{"item_id": "y3000", "title": "C", "listed_at": 32503680000000}}\n'
                         f'{{"item_id": "micro", "title": "D", "listed_at": {now_ms * 1000}}}\n')
    items, rejected = load_catalogue(catalogue, "jsonl")
    assert set(items) == {"old", "launch"}
    assert [(r.line, r.rejection.reason) for r in rejected] == [(3, "timestamp_out_of_range"),
                                                                (4, "timestamp_out_of_range")]
    assert rejected[0].rejection.detail.startswith(
        "line 3: listed_at 32503680000000 (3000-01-01 00:00 UTC) is more than 366 days after now (")
    assert rejected[0].rejection.detail.endswith("listed_at is milliseconds since 1970, at most 366 days ahead")
    assert f"listed_at {now_ms * 1000} (after the year 9999)" in rejected[1].rejection.detail
    assert "it looks like microseconds (divide by 1000)" in rejected[1].rejection.detail
    as_csv = tmp_path / "items.csv"
    as_csv.write_text("item_id,title,listed_at\nold,A,1291192000000\ny3000,C,32503680000000\n")
    items, (refused,) = load_catalogue(as_csv, "csv")
    assert set(items) == {"old"} and refused.line == 3 and refused.rejection.reason == "timestamp_out_of_range"


def test_a_listed_at_past_64_bits_is_named_as_the_line_writes_it(tmp_path):
    """`items load` named a listed_at of 1180000000000000000000 as 1.18e+21 (orjson's float), and a schema_version
    past 64 bits likewise: values not in the file."""
    from stream_app.tools.catalogue import load_catalogue

    big = "1180000000000000000000"
    catalogue = tmp_path / "items.jsonl"
    catalogue.write_text(f'{{"item_id": "a", "title": "A", "listed_at": {big}}}\n{{"item_id": "b", "title": "B"}}\n'
                         f'{{"item_id": "c", "title": "C", "schema_version": {big}}}\n')
    items, (far, version) = load_catalogue(catalogue, "jsonl")
    assert set(items) == {"b"} and far.rejection.reason == "timestamp_out_of_range"
    assert far.rejection.detail.startswith(f"line 1: listed_at {big} (after the year 9999) is more than 366 days")
    assert version.rejection.detail.startswith(f"line 3: schema_version {big} is not one this release reads")


def test_a_csv_time_past_64_bits_is_its_lines_rejection_not_a_crash(tmp_path):
    """helper-153: a csv line's listed_at or updated_at is read as a whole integer, which orjson cannot write:
    `items load` stopped with a TypeError."""
    from stream_app.tools.catalogue import load_catalogue

    big = "1180000000000000000000"
    catalogue = tmp_path / "items.csv"
    catalogue.write_text(f"item_id,title,listed_at,updated_at\na,A,{big},\nb,B,,{big}\nc,C,1700000000000,\n")
    items, rejected = load_catalogue(catalogue, "csv")
    assert list(items) == ["c"]
    assert [(r.line, r.rejection.reason, r.rejection.detail) for r in rejected] == [
        (2, "schema_violation", f"line 2: listed_at {big} is past 64 bits: give a time in milliseconds since 1970"),
        (3, "schema_violation", f"line 3: updated_at {big} is past 64 bits: give a time in milliseconds since 1970")]


def test_a_listed_at_years_after_its_record_was_written_is_refused_by_every_worker_alike():
    """`items load` bounded listed_at, but a record another producer wrote to the items topic was taken as it was: its
    item never proposed, nothing said. A worker bounds it by the record's own time, which every worker reads alike."""
    import orjson

    from stream_app.config import Settings
    from stream_app.contracts import Rejection, Source, check_item
    from stream_app.stream.catalogue_feed import CatalogueFeed

    written_ms, day_ms = 1_700_000_000_000, 86_400_000

    def checked(listed_at, timestamp=written_ms):
        record = orjson.dumps({"item_id": "i1", "title": "a lamp", "schema_version": 1, "listed_at": listed_at})
        return check_item(record, b"i1", Source("items", 0, 7, timestamp))

    assert not isinstance(checked(written_ms + 300 * day_ms), Rejection)  # a launch announced ahead
    refused = checked(written_ms + 400 * day_ms)
    assert isinstance(refused, Rejection) and refused.reason == "timestamp_out_of_range"
    assert refused.detail.startswith(f"listed_at {written_ms + 400 * day_ms} (2024-12-18 22:13 UTC) is more than 366 "
                                     "days after its record was written (2023-11-14 22:13 UTC)")
    assert "microseconds" in checked(written_ms * 1000).detail
    assert not isinstance(checked(written_ms * 1000, timestamp=None), Rejection)  # no time to bound it by
    feed = CatalogueFeed(Settings())
    feed.apply(b"i1", orjson.dumps({"item_id": "i1", "title": "a lamp", "schema_version": 1,
                                    "listed_at": 32503680000000}), 7, written_ms)
    assert feed.invalid == 1 and "i1" not in feed.texts


def test_an_online_retail_line_whose_price_or_date_cannot_be_read_is_counted_and_said_not_passed_over(
        tmp_path, no_services, producer, capsys):
    """Its product still has a record, from its other lines, but the line's price (or its time, the item's listed_at)
    was passed over unsaid: an item whose only price was unreadable had none, and nothing said so."""
    import orjson

    shop = tmp_path / "online_retail.csv"
    shop.write_text("\n".join([RETAIL_ROWS[0], RETAIL_ROWS[1],
                               "536366,71050,WHITE METAL LANTERN 0,6,2010-12-01 08:28,abc,17850,UK",
                               "536366,22633,HAND WARMER UNION JACK,6,,-1.85,,UK",
                               "536366,22633,HAND WARMER UNION JACK,6,2010-13-01 08:28,1.85,17850,UK",
                               "536366,22633,HAND WARMER UNION JACK,6,2010-12-01 08:28,nan,17850,UK",
                               "536366,POST,POSTAGE,1,someday,free,17850,UK",  # not a product: not read as one
                               "536366,22634,damaged,1,2010-12-01 08:28,x,17850,UK"]) + "\n")  # a stock note
    assert main(["items", "load", str(shop), "--format", "online-retail"]) == 0
    out, err = capsys.readouterr()
    assert f"loaded 2 items from {shop}" in out and "rejected" not in out
    assert (f"warning: {shop.name}: 4 lines of products read without their price or date: line 3 (UnitPrice 'abc' is not a number), line 4 (InvoiceDate is empty; "
            "UnitPrice '-1.85' is below 0, a price is at least 0), line 5 (InvoiceDate '2010-13-01 08:28' is no date "
            "read as YYYY-MM-DD: month must be in 1..12) and 1 more; each of their products has its date and price "
            "from its other lines\n") in err
    items = {key: orjson.loads(value) for topic, key, value in producer.sent if topic == "items"}
    assert items[b"22633"] == {"item_id": "22633", "title": "HAND WARMER UNION JACK", "schema_version": 1,
                               "price": 1.85, "listed_at": 1291192080001}
    # a product whose only line has no readable date has no listed_at: it is said, not said to come from other lines
    alone = tmp_path / "alone.csv"
    alone.write_text("\n".join([RETAIL_ROWS[0], "536366,71051,RED LANTERN,6,2010-14-01 08:28,2.0,17850,UK",
                                 "536366,71052,found,1,2010-15-01 08:28,1,17850,UK"]) + "\n")  # a stock note: no record
    assert main(["items", "load", str(alone), "--format", "online-retail"]) == 0
    err = capsys.readouterr().err
    assert ("2 lines of products read without their price or date: line 2 (InvoiceDate '2010-14-01 08:28' is no date "
            "read as YYYY-MM-DD: month must be in 1..12), line 3 (InvoiceDate '2010-15-01 08:28' is no date read as "
            "YYYY-MM-DD: month must be in 1..12); of their products, 1 without listed_at: shown from the start "
            "of an evaluation, before the shop sold them (71051)") in err
    assert "listed_at" not in orjson.loads([v for t, k, v in producer.sent if k == b"71051"][-1])


def test_the_titles_recommendations_shows_skip_a_record_workers_refuse_for_its_listed_at(monkeypatch):
    """`recommendations --titles` read the items topic without the records' times: a record listed in the year 3000,
    which every worker refuses, replaced the item's valid title."""
    from types import SimpleNamespace

    import orjson

    from stream_app.config import Settings
    from stream_app.tools import catalogue, consume

    written_ms = 1_700_000_000_000

    def record(offset, title, listed_at):
        value = orjson.dumps({"item_id": "i1", "title": title, "schema_version": 1, "listed_at": listed_at})
        return SimpleNamespace(key=b"i1", value=value, topic="items", partition=0, offset=offset, timestamp=written_ms)

    monkeypatch.setattr(consume, "read_to_end", lambda settings, topic: [record(0, "A LAMP", written_ms),
                                                                         record(1, "A YEAR 3000 LAMP", 32503680000000)])
    assert catalogue._titles_on_topic(Settings(), ["i1"]) == {"i1": "A LAMP"}


def test_movielens_movies_csv_is_a_catalogue_as_published_whose_ids_are_the_ratings_ids(tmp_path):
    """A data team with MovieLens' ratings.csv (`--format movielens`) had no way to give its movies.csv as the item
    text: `--items-format csv` wanted an item_id column. Its genres are text for the content model, not a path."""
    from stream_app.tools.catalogue import load_catalogue
    from stream_app.tools.recorded import load_sorted

    movies = tmp_path / "movies.csv"
    movies.write_text('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children\n'
                      '11,"American President, The (1995)",Comedy|Drama|Romance\n'
                      '182727,A Christmas Story Live! (2017),(no genres listed)\n')
    items, rejected = load_catalogue(movies, "movielens")
    assert not rejected and items["1"] == {"item_id": "1", "title": "Toy Story (1995)", "schema_version": 1,
                                           "description": "Adventure, Animation, Children"}
    assert items["11"]["title"] == "American President, The (1995)" and "description" not in items["182727"]
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n7,11,4.0,964982703\n")
    events, _ = load_sorted(ratings, "movielens")
    assert events[0]["item_id"] in items
    with pytest.raises(InputFileError, match=r"its header is that of --format movielens"):
        load_catalogue(movies, "csv")
    # a quoted title spanning lines (a spreadsheet cell's line break) is one line, as every title is shown
    movies.write_text('movieId,title,genres\n5,"Multi\r\nline  title (1999)",Drama\n')
    assert load_catalogue(movies, "movielens")[0]["5"]["title"] == "Multi line  title (1999)"
    spanning = tmp_path / "items.csv"
    spanning.write_text('item_id,title\na1,"RED\n LAMP"\n')
    assert load_catalogue(spanning, "csv")[0]["a1"]["title"] == "RED LAMP"


def test_movielens_movies_dat_is_told_the_command_that_writes_the_movies_csv_it_reads(tmp_path):
    """movies.dat (MovieLens 1M and 10M: '::' fields, no header, Latin-1, commas in titles) given as the movielens
    catalogue was told it looked like ratings.dat and to replace the separator, which breaks on its titles' commas.
    The command the error gives must write a movies.csv the format reads, commas in titles and all."""
    import re
    import shlex
    import subprocess
    import sys

    from stream_app.tools.catalogue import load_catalogue

    dat = tmp_path / "movies.dat"
    dat.write_bytes("23::Assassins (1995)::Thriller\n11::American President, The (1995)::Comedy|Drama|Romance\n"
                    "26::Othello (1995)::Drama\n73::Misérables, Les (1995)::Drama\n"
                    .encode("latin-1"))
    with pytest.raises(InputFileError, match="looks like MovieLens' movies.dat") as raised:
        load_catalogue(dat, "movielens")
    assert "ratings.dat" not in str(raised.value)
    command = re.search(r"`(python3 -c .*? > movies.csv)`", str(raised.value))[1]
    argv = shlex.split(command.replace("python3", shlex.quote(sys.executable), 1).split(" > ")[0])
    written = subprocess.run(argv, cwd=tmp_path, capture_output=True, check=True).stdout
    (tmp_path / "movies.csv").write_bytes(written)
    items, rejected = load_catalogue(tmp_path / "movies.csv", "movielens")
    assert not rejected and items["11"]["title"] == "American President, The (1995)"
    assert items["73"]["title"] == "Misérables, Les (1995)" and items["23"]["description"] == "Thriller"
    with pytest.raises(InputFileError, match=r"'::' \(MovieLens' older movies.dat\)"):
        load_catalogue(dat, "csv")


def test_a_price_json_cannot_write_and_a_record_over_kafkas_limit_are_their_lines_rejections(tmp_path):
    """A review: `nan`, `inf` or `1e999` passed as loaded and reached the topic as null, which every worker refused;
    a record of 3 MB failed the whole load at the producer, leaving its rejected lines unsent."""
    from stream_app.tools.catalogue import ITEM_RECORD_BYTES, load_catalogue

    path = tmp_path / "items.csv"
    path.write_text("item_id,title,price\na1,Lamp,nan\na2,Mug,1e999\na3,Cup,2.5\n")
    items, rejected = load_catalogue(path, "csv")
    assert list(items) == ["a3"]
    assert [(r.line, r.rejection.reason, r.rejection.detail) for r in rejected] == [
        (2, "schema_violation", "line 2: price nan is not a finite number"),
        (3, "schema_violation", "line 3: price inf is not a finite number")]
    big = tmp_path / "items.jsonl"
    big.write_text('{"item_id": "b1", "title": "Rug", "attributes": {"notes": "' + "x" * ITEM_RECORD_BYTES + '"}}\n'
                   '{"item_id": " b2 ", "title": " Mat "}\n')
    items, rejected = load_catalogue(big, "jsonl")
    assert items == {"b2": {"item_id": "b2", "title": "Mat", "schema_version": 1}}  # trimmed as the csv reader does
    assert [(r.line, r.rejection.reason) for r in rejected] == [(1, "payload_too_large")]
    assert "over 1,000,000" in rejected[0].rejection.detail


def test_a_catalogue_records_empty_title_or_other_schema_version_is_said_plainly_as_an_events_is(tmp_path):
    """The validator's words ("must be longer than or equal to 1 characters", "must be same as const definition")
    were a catalogue line's rejection as they came; an event's have said what to do since 2026-12-05."""
    from stream_app.tools.catalogue import load_catalogue

    path = tmp_path / "items.jsonl"
    path.write_text('{"item_id": "c1", "title": ""}\n{"item_id": "c2", "title": "Cup", "schema_version": 2}\n'
                    '{"item_id": "c3", "title": "Jug"}\n')
    items, rejected = load_catalogue(path, "jsonl")
    assert list(items) == ["c3"]
    assert [(r.line, r.rejection.detail.split(":")[0:2]) for r in rejected] == [
        (1, ["line 1", " data.title is empty"]), (2, ["line 2", " schema_version 2 is not one this release reads (1)"])]
    assert rejected[1].rejection.detail.endswith("leave schema_version out (`items load` gives the version it reads), "
                                                 "or load it with the release that reads it")


def test_catalogue_csv_columns_it_does_not_read_are_said_with_the_name_it_reads(tmp_path, capsys):
    from stream_app.tools.catalogue import load_catalogue

    path = tmp_path / "items.csv"
    path.write_text("item_id,title,Description,colour,updated_at\na1,Lamp,A lamp,red,1700000000000\n")
    items, _ = load_catalogue(path, "csv")
    assert items["a1"] == {"item_id": "a1", "title": "Lamp", "updated_at": 1700000000000, "schema_version": 1}
    said = capsys.readouterr().err
    assert "the columns 'Description', 'colour' are not read ('Description': did you mean 'description'?)" in said
    path.write_text("item_id,title,colour\na1,Lamp,red\n")
    load_catalogue(path, "csv")
    assert "the column 'colour' is not read; a catalogue csv reads" in capsys.readouterr().err  # one: said as one


def test_online_retail_products_without_a_name_are_said_and_a_rejection_names_the_products_first_line(
        tmp_path, capsys):
    """A review: products whose descriptions were all empty or stock notes went unsaid, and a rejection named the
    product's index among the names, not its line."""
    from stream_app.tools.catalogue import load_catalogue

    header = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    path = tmp_path / "retail.csv"
    path.write_text(header + "536365,85123A,WHITE HEART,6,12/1/2010 8:26,2.55,17850,United Kingdom\n"
                    "536366,22633,damaged,6,12/1/2010 8:28,1.85,17850,United Kingdom\n"
                    "536367,22634,,6,12/1/2010 8:28,1.85,17850,United Kingdom\n"
                    "536368,84029E,RED WOOLLY HOTTIE,6,12/1/2090 8:34,3.39,13047,United Kingdom\n")
    items, rejected = load_catalogue(path, "online-retail")
    assert list(items) == ["85123A"]
    assert [(r.line, r.rejection.reason) for r in rejected] == [(5, "timestamp_out_of_range")]  # its file line
    assert "2 products have no name" in capsys.readouterr().err


def test_a_catalogue_of_another_format_stops_being_read_at_the_ten_thousandth_rejection(tmp_path):
    """A review: the shared Online Retail csv read as jsonl kept all its 541,910 lines as rejections before it said
    the format was wrong."""
    from stream_app.tools.catalogue import REJECTED_BEFORE_AN_ITEM, load_catalogue

    path = tmp_path / "items.jsonl"
    path.write_text("not json\n" * (REJECTED_BEFORE_AN_ITEM + 500) + '{"item_id": "a1", "title": "Lamp"}\n')
    with pytest.raises(InputFileError, match="reading stopped there: 10,000 rejections and no item"):
        load_catalogue(path, "jsonl")
    path.write_text('{"item_id": "a1", "title": "Lamp"}\n' + "not json\n" * (REJECTED_BEFORE_AN_ITEM + 500))
    items, rejected = load_catalogue(path, "jsonl")
    assert list(items) == ["a1"] and len(rejected) == REJECTED_BEFORE_AN_ITEM + 500  # after an item: every line


def test_a_catalogue_line_giving_a_name_twice_is_that_lines_rejection_as_a_worker_refuses_the_record(tmp_path):
    """An item record with `title` twice: `evaluate --items` would take the last title while a worker refuses the
    record (contracts.check_item): the catalogue reader refuses it too."""
    from stream_app.contracts import Source, check_item
    from stream_app.tools.catalogue import load_catalogue

    twice = b'{"item_id": "b", "title": "B", "title": "Bee"}'
    catalogue = tmp_path / "items.jsonl"
    catalogue.write_bytes(b'{"item_id": "a", "title": "A"}\n' + twice + b"\n")
    items, rejected = load_catalogue(catalogue, "jsonl")
    assert list(items) == ["a"]
    assert [(r.line, r.rejection.reason) for r in rejected] == [(2, "invalid_json")]
    assert "line 2: the name 'title' is given twice in one object" in rejected[0].rejection.detail
    assert check_item(twice, b"b", Source("items", 0, 1)).reason == "invalid_json"
