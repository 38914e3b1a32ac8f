"""Batched output to Kafka: each worker batch's records go out as one record batch per partition.

Faust's own send path costs about a tenth of a millisecond per message (a future, a buffer queue and
an awaited hand-off each), which capped a worker near 1k events/s here. Building record batches
directly and awaiting their acknowledgements once per batch also gives a stricter guarantee: a
batch's input events are acknowledged only after every record it produced is stored by the broker.
The records of the profiles' changelog go last, once every other is stored (`Outbox.last`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from ..kafka_security import KafkaSecurity, aiokafka_kwargs

MAX_BATCH_BYTES = 1024 * 1024


@dataclass
class Outbox:
    """Records one worker batch produces; partition None means "by key", like any Kafka producer."""

    records: list[tuple[str, bytes | None, bytes | None, int | None]] = field(default_factory=list)
    # Topics whose records are sent once every other record is stored: the profiles' changelog. Stored, it
    # says the batch's events were applied (read again after a crash, they are skipped as duplicates), so it
    # must not be stored without their recommendations, dead letters, snapshots and learners (learner_table).
    # The several produce requests of one delivery (one per partition leader, or a partition's records
    # past one request) are not stored all or nothing; a crash between the two steps re-applies the events.
    last: set[str] = field(default_factory=set)

    def add(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        """`value` None: a tombstone (the key's record is deleted by compaction)."""
        self.records.append((topic, key, value, partition))


class BatchProducer:
    """An aiokafka producer started on first use, partitioning keys as the Java client does (murmur2)."""

    def __init__(self, bootstrap_servers: str, security: KafkaSecurity, linger_ms: int = 0):
        self.bootstrap_servers = bootstrap_servers
        self.security = security
        self.linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._partitioner = DefaultPartitioner()
        self._starting = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers.split(","), acks="all",
                                            linger_ms=self.linger_ms, max_batch_size=MAX_BATCH_BYTES,
                                            max_request_size=4 * MAX_BATCH_BYTES,
                                            **aiokafka_kwargs(self.security))
                await producer.start()
                self._producer = producer
        return self._producer

    async def _partitions_of(self, producer: AIOKafkaProducer, topic: str) -> list[int]:
        known = self._partitions.get(topic)
        if known is None:
            known = self._partitions[topic] = sorted(await producer.partitions_for(topic))
        return known

    async def deliver(self, outbox: Outbox) -> None:
        """Send everything in the outbox and wait until the broker has stored all of it: the records of
        `outbox.last`'s topics once all the others are stored."""
        await self._send([record for record in outbox.records if record[0] not in outbox.last])
        await self._send([record for record in outbox.records if record[0] in outbox.last])

    async def _send(self, records: list[tuple[str, bytes | None, bytes | None, int | None]]) -> None:
        if not records:
            return
        producer = await self._started()
        grouped: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        for topic, key, value, partition in records:
            if partition is None:
                partitions = await self._partitions_of(producer, topic)
                partition = self._partitioner(key, partitions, partitions)
            grouped.setdefault((topic, partition), []).append((key, value))
        acks = []
        for (topic, partition), records in grouped.items():
            batch = producer.create_batch()
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: ship it, start anew
                    acks.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            acks.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*acks)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
