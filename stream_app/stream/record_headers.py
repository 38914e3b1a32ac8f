"""Fetched records whose header keys are not UTF-8, read all the same.

Kafka's protocol calls a header key a string, but clients such as librdkafka and sarama send whatever bytes they
are given, and aiokafka decodes each key strictly: one such record failed every fetch of its partition. Every
worker's input reader started again at it for ever (and the owner's Faust consumer failed on it too), so no event
of any partition was applied after it. `install` wraps the batches aiokafka's fetcher reads: a batch is read as
before, and one that fails on a header key is read again from its bytes (Kafka's v2 record format), the records
before the failure passed over, each key decoded with its undecodable bytes replaced. The record is then an input
like any other: no header this project reads has such a key.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Iterator

from aiokafka import codec
from aiokafka.consumer import fetcher
from aiokafka.record.util import decode_varint

log = logging.getLogger("stream_app.record_headers")

#: What frames every batch of a fetch: its base offset and the length of the rest.
_FRAME = struct.Struct(">qi")
#: A v2 batch's header: base offset, length, leader epoch, magic, CRC, attributes, last offset delta, first and max
#: timestamps, producer id and epoch, base sequence, record count (61 bytes); the records follow.
_V2_HEADER = struct.Struct(">qiibIhiqqqhii")
_DECOMPRESS = {1: codec.gzip_decode, 2: codec.snappy_decode, 3: codec.lz4_decode, 4: codec.zstd_decode}
_LOG_APPEND_TIME = 0x08


class Record:
    """A record read from a batch's bytes, with what aiokafka's fetcher takes of one."""

    __slots__ = ("offset", "timestamp", "timestamp_type", "key", "value", "headers", "checksum")

    def __init__(self, offset: int, timestamp: int, timestamp_type: int, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes | None]]):
        self.offset, self.timestamp, self.timestamp_type = offset, timestamp, timestamp_type
        self.key, self.value, self.headers, self.checksum = key, value, headers, None


def _nullable(buffer: bytes, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(buffer, pos)
    return (None, pos) if length < 0 else (bytes(buffer[pos:pos + length]), pos + length)


def records_of(batch: bytes) -> Iterator[Record]:
    """The records of one v2 batch (`batch`: its bytes, frame included), header keys decoded leniently."""
    (base_offset, _length, _epoch, _magic, _crc, attributes, _last_delta, first_ts, max_ts, _producer, _producer_epoch,
     _sequence, count) = _V2_HEADER.unpack_from(batch, 0)
    body = bytes(batch[_V2_HEADER.size:])
    codec_id = attributes & 0x07
    if codec_id:
        body = _DECOMPRESS[codec_id](body)
    timestamp_type = 1 if attributes & _LOG_APPEND_TIME else 0
    pos = 0
    for _ in range(count):
        _size, pos = decode_varint(body, pos)
        pos += 1  # the record's attributes: unused
        ts_delta, pos = decode_varint(body, pos)
        offset_delta, pos = decode_varint(body, pos)
        key, pos = _nullable(body, pos)
        value, pos = _nullable(body, pos)
        header_count, pos = decode_varint(body, pos)
        headers = []
        for _ in range(header_count):
            name, pos = _nullable(body, pos)
            data, pos = _nullable(body, pos)
            headers.append(((name or b"").decode("utf-8", "replace"), data))
        yield Record(base_offset + offset_delta, max_ts if timestamp_type else first_ts + ts_delta, timestamp_type,
                     key, value, headers)


class LenientBatch:
    """One batch of a fetch: aiokafka's, but for the records past a header key it could not decode."""

    __slots__ = ("batch", "data")

    def __init__(self, batch: Any, data: memoryview):
        self.batch, self.data = batch, data

    def __getattr__(self, name: str) -> Any:  # offsets, CRC, transaction marks: the batch's header, as read
        return getattr(self.batch, name)

    def __next__(self) -> Any:  # a control batch's marker (aiokafka reads it with next())
        return next(self.batch)

    def __iter__(self) -> Iterator[Any]:
        read = 0
        try:
            for record in self.batch:
                yield record
                read += 1
        except UnicodeDecodeError as exc:
            log.warning("a record at or after offset %d has a header key that is not UTF-8 (%s): read with its "
                        "undecodable bytes replaced", self.batch.base_offset + read, exc)
            for index, record in enumerate(records_of(self.data)):
                if index >= read:
                    yield record


class LenientRecords:
    """The records of one partition's fetch (aiokafka's MemoryRecords), each batch a `LenientBatch`."""

    __slots__ = ("records", "data", "pos")

    def __init__(self, data: bytes):
        self.records, self.data, self.pos = STRICT_RECORDS(data), memoryview(data), 0

    def size_in_bytes(self) -> int:
        return self.records.size_in_bytes()

    def has_next(self) -> bool:
        return self.records.has_next()

    def next_batch(self) -> Any:
        batch = self.records.next_batch()
        if batch is None:
            return None
        start = self.pos
        self.pos = start + _FRAME.size + _FRAME.unpack_from(self.data, start)[1]
        return LenientBatch(batch, self.data[start:self.pos])


STRICT_RECORDS = fetcher.MemoryRecords


def install() -> None:
    """Every aiokafka consumer of this process reads its fetches through `LenientRecords`."""
    fetcher.MemoryRecords = LenientRecords
