"""Reading topics back for the CLI (`tools/consume.py`): a search that runs out of time says so."""

from __future__ import annotations

import time
from collections import namedtuple

import pytest

from stream_app.config import Settings
from stream_app.errors import ServiceTimeout
from stream_app.tools import consume

Record = namedtuple("Record", "topic partition offset timestamp key value")
RECORDS = 200_000


class SlowPartition:
    """One partition of RECORDS records whose only record of user u1 is its first, served 5,000 per 20 ms poll."""

    def __init__(self, **kwargs):
        self.positions = {}

    def partitions_for_topic(self, topic):
        return {0}

    def end_offsets(self, tps):
        return {tp: RECORDS for tp in tps}

    def beginning_offsets(self, tps):
        return {tp: 0 for tp in tps}

    def assign(self, tps):
        pass

    def seek(self, tp, offset):
        self.positions[tp] = offset

    def position(self, tp):
        return self.positions[tp]

    def poll(self, timeout_ms, max_records):
        time.sleep(0.02)
        out = {}
        for tp, start in self.positions.items():
            end = min(start + max_records, RECORDS)
            out[tp] = [Record(tp.topic, 0, n, n, b"u1" if n == 0 else b"other", b"{}") for n in range(start, end)]
            self.positions[tp] = end
        return out

    def close(self):
        pass


def test_a_search_back_that_runs_out_of_time_says_so_instead_of_finding_nothing(monkeypatch):
    """A review: `recommendations USER` said "no recommendation for user" when the 60 s search stopped short of the
    user's only list on a long partition."""
    async def reported(servers, ends, security):
        return ends

    monkeypatch.setattr(consume, "KafkaConsumer", SlowPartition)
    monkeypatch.setattr(consume, "true_end_offsets", reported)
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1")
    with pytest.raises(ServiceTimeout, match="stopped before the start of 1 of its partitions, with 0 of the 1"):
        consume.latest_records(settings, "recommendations", 1, 0, lambda record: record.key == b"u1", timeout_s=0.2)
    found = consume.latest_records(settings, "recommendations", 1, 0, lambda record: record.key == b"u1", timeout_s=60)
    assert [(record.offset, record.key) for record in found] == [(0, b"u1")]
    assert len(consume.latest_records(settings, "recommendations", 3, 0, timeout_s=0.2)) == 3  # found in time: no error
