"""`stream-app items load` as a user runs it on files that are wrong: each says what to do, before any
service is needed, and without a traceback."""

import gzip

import pytest

from stream_app.cli.main import main

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
