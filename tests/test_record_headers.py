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


def batch_bytes(compressed: bool = False, log_append_time: bool = False,
                records: list[tuple[bytes | None, bytes | None, int]] | None = None) -> bytes:
    """A v2 batch of three records at offsets 40..42 (or of `records`, (key, value, timestamp)), the middle one with
    a header key of bytes that are not UTF-8 (a client such as sarama sends them), its CRC right: what a broker
    stores and serves."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    records = records or [(b"u1", b'{"n": 1}', 1_000), (b"u2", b'{"n": 2}', 1_005), (None, None, 1_009)]
    headers = [[("trace", b"a")], [("Zq", b"x"), ("trace", b"b")], []]
    for delta, (key, value, timestamp) in enumerate(records):
        builder.append(delta, timestamp=timestamp, key=key, value=value, headers=headers[delta % 3])
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


def test_aiokafka_alone_fails_the_whole_fetch_on_such_a_key(monkeypatch):
    monkeypatch.setattr(fetcher, "MemoryRecords", record_headers.STRICT_RECORDS)  # a worker's test may have installed
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


def produce_as_is(settings, topic: str, partition: int, batch: bytes) -> None:
    """Produce a prepared batch byte for byte: no client of this project writes such a key."""
    import asyncio

    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.produce import ProduceRequest

    async def send() -> None:
        client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await client.bootstrap()
        try:
            await client._wait_on_metadata(topic)
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            response = await client.send(leader, ProduceRequest(None, -1, 30_000, [(topic, [(partition, batch)])]))
            ((_, ((_, error, *_),)),) = response.topics
            assert error == 0, f"the broker refused the batch: error {error}"
        finally:
            await client.close()

    asyncio.run(send())


def test_a_worker_applies_an_event_with_such_a_header_and_every_event_after_it(make_settings, start_worker):
    """Before: each worker's reader failed on the record and started again at it for ever; nothing of any partition
    was applied after it (no recommendation for either event here)."""
    import time

    import orjson
    from test_pipeline import read_all

    from stream_app.partitioning import partition_of

    settings = make_settings()
    start_worker(settings)
    now = int(time.time() * 1000)
    events = [{"event_id": f"h{n}", "user_id": "hdr-user", "item_id": f"i{n}", "type": "click", "ts": now - 3_000 + n,
               "schema_version": 1} for n in range(3)]
    partition = partition_of("hdr-user", settings.partitions)
    produce_as_is(settings, settings.topics.click, partition,
                  batch_bytes(records=[(b"hdr-user", orjson.dumps(event), event["ts"]) for event in events]))
    recs = read_all(settings.kafka_bootstrap_servers, settings.topics.recommendations, 3, timeout=60)
    assert sorted(orjson.loads(r.value)["trigger_event_id"] for r in recs) == ["h0", "h1", "h2"]
