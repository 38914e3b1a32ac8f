"""How a worker meets failures of its outputs: retry what an outage explains, stop with a reason on what
no retry changes, and never hold a rebalance hostage to a batch that is retrying."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from typing import Any, AsyncIterator, Awaitable, Callable

from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)
from redis import exceptions as redis_errors
from redis.exceptions import RedisError

from ..errors import described

log = logging.getLogger("stream_app.worker")

RETRYABLE = (KafkaError, RedisError, OSError, asyncio.TimeoutError)
# Refusals no retry can change: the record is too large, or the client may not write there.
PERMANENT = (MessageSizeTooLargeError, RecordTooLargeError, TopicAuthorizationFailedError,
             ClusterAuthorizationFailedError, InvalidTopicError, redis_errors.AuthenticationError,
             redis_errors.AuthorizationError, redis_errors.NoPermissionError)
#: The worker's exit status when the output refuses a batch for good (the orchestrator sees it).
EXIT_OUTPUT_REFUSED = 70
#: How long a rebalance step waits for a batch in flight (the group's rebalance timeout is 6 s).
REBALANCE_WAIT_S = 3.0
#: The worker's exit status when a batch fails outside the per-event guard (a bug: nothing is acknowledged).
EXIT_BATCH_FAILED = 71
#: The worker's exit status when its HTTP port is taken (the command line's usage-error status).
EXIT_PORT_TAKEN = 2
#: The worker's exit status when its erasure key is not the one past erasures were recorded with.
EXIT_ERASURE_KEY = 78


#: The worker's exit status when a stop did not end within STOP_DEADLINE_S.
EXIT_STOP_TIMEOUT = 75
#: How long a stop may take (an orchestrator's grace is often 30 s): with the broker gone, Faust's consumer
#: waited 65 s for it.
STOP_DEADLINE_S = 25.0


_stop_deadline: threading.Timer | None = None


def exit_if_stop_hangs(deadline_s: float = STOP_DEADLINE_S) -> threading.Timer:
    """From now (from the first call: a signal, or the app's stop without one), exit after `deadline_s` if the
    process is still stopping. Nothing is lost: what was not committed is applied again by the next owner, as
    after a SIGKILL."""
    global _stop_deadline
    if _stop_deadline is not None:
        return _stop_deadline

    def give_up() -> None:
        log.error("stopping has taken %.0fs (does the broker or Redis answer?): exiting without the rest of the "
                  "clean stop; nothing is lost, the next owner applies what was not committed", deadline_s)
        stop_worker(EXIT_STOP_TIMEOUT)

    _stop_deadline = threading.Timer(deadline_s, give_up)
    _stop_deadline.daemon = True  # a stop that ends in time exits without waiting for it
    _stop_deadline.start()
    return _stop_deadline


def stop_worker(status: int) -> None:
    """Exit now, without acknowledging: the batch's input is read again by the next worker."""
    logging.shutdown()
    os._exit(status)


@contextlib.asynccontextmanager
async def batch_finished_or_late(lock: asyncio.Lock, what: str,
                                 wait_s: float = REBALANCE_WAIT_S) -> AsyncIterator[bool]:
    """Hold the batch lock for a rebalance step, or go on without it after `wait_s`: a batch only
    holds it that long while its output retries an outage, and a rebalance that waited for that
    would outlast the group's rebalance timeout and start a storm. The late batch touches no input
    state any more; it drops its records of the state and its recommendations of partitions that moved
    (output.Outbox.fence), and the rest, if delivered after the partitions moved, repeats records that ids and
    profile versions make harmless (Redis's guard and erasure markers; the tables restore each key's
    newest value, table_stores). Yields whether the lock is held."""
    try:
        await asyncio.wait_for(lock.acquire(), timeout=wait_s)
    except asyncio.TimeoutError:
        log.warning("%s: a batch has been delivering for over %.0fs (an outage?); going on without it", what, wait_s)
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


async def until_done(what: str, action: Callable[..., Awaitable[Any]], *args: Any,
                     max_backoff_s: float = 10.0, on_retry: Callable[[], None] = lambda: None) -> Any:
    """Retry an output step until it succeeds. The batch's events stay unacknowledged meanwhile, so
    an outage of Redis or the broker stalls the worker (backpressure) instead of losing effects.
    A retried Kafka delivery may repeat records: recommendation ids and profile versions make
    repeats harmless downstream. A permanent refusal stops the worker with a reason instead of
    retrying for ever (nothing acknowledged, nothing lost)."""
    backoff = 0.1
    while True:
        try:
            return await action(*args)
        except PERMANENT as exc:
            check = ("REDIS_URL's password or the Redis ACL" if isinstance(exc, RedisError) else
                     "the topic's max.message.bytes, the Kafka ACLs or the credentials")
            log.critical("cannot %s: %s will not change by retrying (check %s); stopping without acknowledging "
                         "the batch", what, described(exc), check)
            stop_worker(EXIT_OUTPUT_REFUSED)
        except RETRYABLE as exc:
            on_retry()
            log.error("cannot %s (%s); retrying in %.1fs", what, described(exc), backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)


async def keep_running(what: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run a follower forever: after a failure, log it and start it again 2s later. A CancelledError that is not
    this task's own cancellation is a failure too: aiokafka's `stop()` with a fetch in flight raises one, which
    had replaced a broker timeout and ended the input reader for good (the worker up, reading nothing)."""
    while True:
        try:
            await run()
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            log.error("cannot %s (%s); retrying in 2s", what, described(exc.__context__ or exc))
            await asyncio.sleep(2)
        except Exception as exc:
            log.error("cannot %s (%s); retrying in 2s", what, described(exc))
            await asyncio.sleep(2)
