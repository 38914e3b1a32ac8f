"""A worker stopped while one of its own Kafka consumers starts (joins its group, finds the broker) stops
that consumer too: it was started before the `try` whose `finally` stops it, so a cancel (SIGTERM in the
worker's first seconds) or a failing start left it open, and aiokafka logged `[ERROR] asyncio: Unclosed
AIOKafkaConsumer` as the worker exited."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from stream_app.config import Settings
from stream_app.stream import erasures, items_check, transport
from stream_app.stream.batch import Counters


class StartsForEver:
    """An AIOKafkaConsumer whose start never ends (a group join that waits), as far as the code uses it."""
    made: list[StartsForEver] = []

    def __init__(self, *args, **kwargs) -> None:
        self.stopped = False
        StartsForEver.made.append(self)

    async def start(self) -> None:
        await asyncio.sleep(3600)

    async def stop(self) -> None:
        self.stopped = True


SETTINGS = Settings(kafka_bootstrap_servers="127.0.0.1:9", partitions=4)
TP = TopicPartition("events.dlq", 0)


def items_check_run():
    return items_check.ItemsCheck(SETTINGS, None, Counters()).run()


def erasures_run():
    return erasures.ErasureFeed(SETTINGS, 4, lambda: None, "w", None).run()


def dead_letters():
    return erasures.ErasureFeed(SETTINGS, 4, lambda: None, "w", None).dead_letters({"u1"})


def started_reader():
    return transport.started_reader(SETTINGS, {TP: None})


def true_end_offsets():
    return transport.true_end_offsets(["127.0.0.1:9"], {TP: 5})


async def from_the_beginning():
    async with transport.from_the_beginning(SETTINGS, "items"):
        pass


@pytest.mark.parametrize("starting", [items_check_run, erasures_run, dead_letters, started_reader, true_end_offsets,
                                      from_the_beginning])
def test_a_consumer_cancelled_while_it_starts_is_stopped(monkeypatch, starting):
    for module in (erasures, items_check, transport):
        monkeypatch.setattr(module, "AIOKafkaConsumer", StartsForEver)
    StartsForEver.made.clear()

    async def cancel_while_starting() -> None:
        task = asyncio.ensure_future(starting())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_starting())
    assert len(StartsForEver.made) == 1 and StartsForEver.made[0].stopped
