"""Bad records of the `items` topic to the dead-letter topic, once across the workers.

Every worker reads the whole items topic for its catalogue (catalogue_feed) and skips what breaks the item
schema; if each dead-lettered what it skipped, N workers would write N letters per record. So the check is a
consumer group of its own: the one worker holding the topic's partition writes the letters and commits past
them once the broker has them (at least once: a check cut short between the two writes a letter again).

A letter of an item record has no message key: an item id is not a user, and `stream-app erase` finds a user's
letters by key. The record's key stays in the letter's `key_text`, which `redrive` sends it with.
"""

from __future__ import annotations

import logging

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from ..config import Settings
from ..contracts import Rejection, Source, check_item
from ..kafka_security import consumer_kwargs
from .counters import Counters
from .output import BatchProducer, Outbox
from .ready import headers_of, redrive_of

log = logging.getLogger("stream_app.catalogue")


class ItemsCheck:
    """The worker's member of the items topic's check group (`run` until cancelled)."""

    def __init__(self, settings: Settings, output: BatchProducer, counters: Counters):
        self.settings = settings
        self.output = output
        self.counters = counters  # the worker's: its dead-letter metrics count these letters too

    def consumer(self) -> AIOKafkaConsumer:
        settings = self.settings
        return AIOKafkaConsumer(settings.topics.items, bootstrap_servers=settings.require_kafka().split(","),
                                group_id=f"{settings.group_id}.items-check", enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=max(settings.fetch_max_wait_ms, 500),
                                **consumer_kwargs(settings.kafka_security))

    async def run(self) -> None:
        consumer = self.consumer()
        try:  # a cancel while it joins its group (a worker stopped as it starts) stops it too
            await consumer.start()
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                if not batches:
                    continue
                outbox = Outbox()
                for tp, messages in batches.items():
                    for message in messages:
                        if message.value is not None:
                            self.check(message, outbox)
                await self.output.deliver(outbox)  # the letters stored before the check moves past them
                await consumer.commit()
        finally:
            await consumer.stop()

    def check(self, message: ConsumerRecord, outbox: Outbox) -> None:
        source = Source(message.topic, message.partition, message.offset, message.timestamp,
                        redrive_of=redrive_of(message), headers=headers_of(message))
        checked = check_item(message.value, message.key, source)
        if not isinstance(checked, Rejection):
            return
        log.warning("dead-lettered the items record at %s: %s (%s)", source, checked.reason, checked.detail[:200],
                    extra={"topic": source.topic, "partition": source.partition, "offset": source.offset})
        outbox.add(self.settings.topics.dlq, None, orjson.dumps(checked.to_record()))
        self.counters.count_dead_letter(checked.reason)
