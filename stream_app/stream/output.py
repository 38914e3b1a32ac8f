"""Batched output to Kafka: each worker batch's records go out as one record batch per partition.

Faust's own send path costs about a tenth of a millisecond per message (a future, a buffer queue and
an awaited hand-off each), which capped a worker near 1k events/s here. Building record batches
directly and awaiting their acknowledgements once per batch also gives a stricter guarantee: a
batch's input events are acknowledged only after every record it produced is stored by the broker.
The records go in steps, each once the ones before are stored (`Outbox.later`): the profiles' changelog after the
rest, the recommendations after the changelog.

A batch that outlived the revoke of its partitions (retries.batch_finished_or_late: an outage held its delivery)
drops its records of those partitions' state and its recommendations of them before each send (`Outbox.fence`): the
tables' changelogs and the compacted profiles topic keep only each key's last record once compacted, and a late record
of an earlier owner left as the last would roll the user back at the next restore; a late recommendation could differ
from the one the new owner publishes for the same event. The batch's input offsets count for nothing
(commits.py), so the new owner applies its events again. A send handed to the producer before the revoke is not
fenced: without transactions nothing withdraws it, and aiokafka retries it until its request timeout (40 s; a batch
queued behind one in flight may wait about twice that, plus reconnects), so it can land after the next owner's
records. A shorter timeout would not bound that (a timed-out request is not withdrawn either) and would fail every
other request of the client on a slow broker: the default stays.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import AbstractSet, Awaitable, Callable

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from ..kafka_security import KafkaSecurity, aiokafka_kwargs

log = logging.getLogger("stream_app.output")

MAX_BATCH_BYTES = 1024 * 1024
Record = tuple[str, bytes | None, bytes | None, int | None]


@dataclass
class Outbox:
    """Records one worker batch produces; partition None means "by key", like any Kafka producer."""

    records: list[Record] = field(default_factory=list)
    # Topics whose records wait, step by step, until every record of the steps before is stored (the others go
    # first): the profiles' changelog, then the recommendations. The changelog stored says the batch's events were
    # applied (read again after a crash, they are skipped as duplicates), so it must not be stored without their
    # dead letters, snapshots and learners (learner_table); the recommendations are kept in its records until they
    # are published, and published again from there for a redelivered event (batch_recommendations.py).
    # The several produce requests of one step (one per partition leader, or a partition's records past one
    # request) are not stored all or nothing; a crash before the changelog's step ends re-applies the events.
    later: list[set[str]] = field(default_factory=list)
    # Per record, the table partition it is state of (None: not state), for the fence
    owners: list[int | None] = field(default_factory=list)
    # Asked before each send: the partitions whose state the batch may still write (None: all of them)
    fence: Callable[[], Awaitable[AbstractSet[int] | None]] | None = None

    def add(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
            owner: int | None = None) -> None:
        """`value` None: a tombstone (the key's record is deleted by compaction). `owner`: the table partition
        whose state the record is (a changelog record, a profile snapshot), dropped if the batch no longer holds it."""
        self.records.append((topic, key, value, partition))
        self.owners.append(owner)

    async def sendable(self, step: int) -> list[Record]:
        """The records of the step (0: those sent first, k: those of `later[k - 1]`), but the state of partitions
        the batch no longer holds."""
        step_of = {topic: k for k, topics in enumerate(self.later, 1) for topic in topics}
        chosen = [i for i, record in enumerate(self.records) if step_of.get(record[0], 0) == step]
        held = await self.fence() if self.fence is not None else None
        if held is not None:
            kept = [i for i in chosen if self.owners[i] is None or self.owners[i] in held]
            if len(kept) < len(chosen):
                log.warning("this batch outlived the revoke of partitions %s: dropped its %d records of their state "
                            "(their new owner applies the batch's events again)", sorted(
                                {self.owners[i] for i in chosen} - set(held) - {None}), len(chosen) - len(kept))
            chosen = kept
        return [self.records[i] for i in chosen]


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
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()  # its connections and sender task, else left to leak at each retry
                    raise
                self._producer = producer
        return self._producer

    async def _partitions_of(self, producer: AIOKafkaProducer, topic: str) -> list[int]:
        known = self._partitions.get(topic)
        if known is None:
            known = self._partitions[topic] = sorted(await producer.partitions_for(topic))
        return known

    async def deliver(self, outbox: Outbox) -> None:
        """Send everything in the outbox and wait until the broker has stored all of it, step by step
        (`outbox.later`)."""
        for step in range(len(outbox.later) + 1):
            await self._send(await outbox.sendable(step))

    async def _send(self, records: list[Record]) -> None:
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
