"""A fetched record whose header key is not UTF-8 is read, not a fetch that fails for ever (stream/record_headers.py)."""

from __future__ import annotations

import gzip
import struct

import pytest
from aiokafka.consumer import fetcher
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from stream_app.stream import record_headers

PLACEHOLDER = b"Zq"  # a two-byte key written, then overwritten with bytes no client of ours can write


def batch_bytes(compressed: bool = False, log_append_time: bool = False) -> bytes:
    """A v2 batch of three records at offsets 40..42, the middle one with a header key of bytes that are not
    UTF-8 (a client such as sarama sends them), its CRC right: what a broker stores and serves."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    builder.append(0, timestamp=1_000, key=b"u1", value=b'{"n": 1}', headers=[("trace", b"a")])
    builder.append(1, timestamp=1_005, key=b"u2", value=b'{"n": 2}', headers=[("Zq", b"x"), ("trace", b"b")])
    builder.append(2, timestamp=1_009, key=None, value=None, headers=[])
    data = bytearray(builder.build())
    at = data.find(PLACEHOLDER, 61)
    data[at:at + 2] = b"\xff\xfe"
    struct.pack_into(">q", data, 0, 40)  # base offset
    header, body = data[:61], bytes(data[61:])
    attributes = struct.unpack_from(">h", header, 21)[0]
    if compressed:
        body, attributes = gzip.compress(body), attributes | 1
    if log_append_time:
        attributes |= 0x08
        struct.pack_into(">q", header, 35, 7_777)  # the max timestamp: the broker's append time
    struct.pack_into(">h", header, 21, attributes)
    struct.pack_into(">i", header, 8, 61 - 12 + len(body))
    out = header + body
    struct.pack_into(">I", out, 17, calc_crc32c(bytes(out[21:])))
    return bytes(out)


def fetched(data: bytes, fetch_offset: int = 40) -> list:
    records = fetcher.MemoryRecords(data)
    partition = fetcher.PartitionRecords(TopicPartition("events.click", 3), records, None, fetch_offset, None, None,
                                         True, 0)
    return list(partition)


@pytest.fixture
def lenient(monkeypatch):
    monkeypatch.setattr(fetcher, "MemoryRecords", record_headers.LenientRecords)


def test_aiokafka_alone_fails_the_whole_fetch_on_such_a_key():
    with pytest.raises(UnicodeDecodeError):
        fetched(batch_bytes())


@pytest.mark.parametrize("compressed", [False, True])
def test_every_record_of_the_batch_is_read_once_in_order_the_bad_key_replaced(lenient, compressed):
    records = fetched(batch_bytes(compressed) + batch_bytes(compressed)[:30])  # and a partial batch, as fetches end
    assert [(r.offset, r.timestamp, r.key, r.value) for r in records] == [
        (40, 1_000, b"u1", b'{"n": 1}'), (41, 1_005, b"u2", b'{"n": 2}'), (42, 1_009, None, None)]
    assert [r.headers for r in records] == [(("trace", b"a"),), (("\ufffd\ufffd", b"x"), ("trace", b"b")), ()]
    assert {(r.topic, r.partition, r.timestamp_type) for r in records} == {("events.click", 3, 0)}


def test_a_fetch_from_past_the_batch_start_skips_the_records_before_it(lenient):
    assert [r.offset for r in fetched(batch_bytes(), fetch_offset=42)] == [42]


def test_a_broker_stamped_batch_gives_its_records_the_append_time(lenient):
    records = fetched(batch_bytes(log_append_time=True))
    assert {(r.timestamp, r.timestamp_type) for r in records} == {(7_777, 1)}


def test_batches_after_a_lenient_one_are_framed_where_they_start(lenient):
    good = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                     producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    good.append(0, timestamp=2_000, key=b"u3", value=b"{}", headers=[])
    after = bytearray(good.build())
    struct.pack_into(">q", after, 0, 43)
    assert [r.offset for r in fetched(batch_bytes() + bytes(after))] == [40, 41, 42, 43]


def test_install_is_what_the_worker_runs():
    before = fetcher.MemoryRecords
    try:
        record_headers.install()
        assert fetcher.MemoryRecords is record_headers.LenientRecords
        assert [r.offset for r in fetched(batch_bytes())] == [40, 41, 42]
    finally:
        fetcher.MemoryRecords = before
