"""The replay tool's own checks, without a broker: a producer that fails, and what it says."""

import pytest

from stream_app.config import Settings
from stream_app.tools.replay import ReplayIncomplete, produce_events


class FailingProducer:
    """Acknowledges every other event, fails the rest, as a broker going away would."""

    def __init__(self):
        self.n = 0

    def send(self, topic, key, value):
        self.n += 1
        return Sent(self.n)

    def flush(self):
        pass


class Sent:
    def __init__(self, n):
        self.n = n

    def add_callback(self, callback):
        if self.n % 2:
            callback(type("Metadata", (), {"topic": "t", "partition": 0, "offset": self.n})())
        return self

    def add_errback(self, errback):
        if not self.n % 2:
            errback(TimeoutError("delivery timed out"))
        return self


def test_a_replay_whose_events_the_broker_did_not_acknowledge_says_so_and_that_running_it_again_is_safe():
    events = [{"event_id": f"e{i}", "user_id": "u", "item_id": "i", "type": "click", "ts": i, "schema_version": 1}
              for i in range(10)]
    with pytest.raises(ReplayIncomplete) as failed:
        produce_events(Settings(), events, producer=FailingProducer())
    said = str(failed.value)
    assert "acknowledged 5 of 10 events" in said and "delivery timed out" in said
    assert "running the same command again is safe" in said
