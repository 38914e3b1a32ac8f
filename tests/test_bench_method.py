"""How `stream-app bench` measures, without services: the workload, when a run's output is read in full, the order
of its rounds (helper-145's review of the methodology)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from stream_app.errors import ServiceTimeout
from stream_app.stream.stage_latency import LATENCY_BUCKETS
from stream_app.tools.bench import plain_app_first, read_each_trigger, synthetic_events
from stream_app.tools.scrape import quantile


def test_the_workload_is_a_zipf_law_cut_at_the_catalogue_not_one_hot_last_item():
    events = synthetic_events(20_000, users=200, items=200)
    counts = np.bincount([int(e["item_id"][1:]) for e in events], minlength=200)
    assert len(counts) == 200  # no item beyond the catalogue
    # clipped, the tail went to i199: 3,503 of 20,000 events, the second hottest item
    assert counts[199] < 100 and counts[0] == counts.max()


def test_the_warm_up_has_users_and_items_of_its_own():
    warm = synthetic_events(200, 50, 100, seed=1, prefix="warmup", id_prefix="warmup-")
    measured = synthetic_events(1_000, 50, 100)
    assert not {e["user_id"] for e in warm} & {e["user_id"] for e in measured}
    assert not {e["item_id"] for e in warm} & {e["item_id"] for e in measured}


class _Reader:
    """Records come `per_poll` at a time (a TopicReader's shape: `records`, `poll`, `read_until`)."""

    def __init__(self, triggers: list[str], per_poll: int):
        self.topic = "recs"
        self.pending = [SimpleNamespace(value=orjson.dumps({"trigger_event_id": t}), timestamp=n)
                        for n, t in enumerate(triggers)]
        self.per_poll, self.records = per_poll, []

    def poll(self):
        new, self.pending = self.pending[: self.per_poll], self.pending[self.per_poll:]
        self.records += new
        return new

    def read_until(self, count, timeout):
        while len(self.records) < count and self.pending:
            self.poll()
        return self.records


def test_a_run_is_read_until_every_event_sent_has_its_output_not_until_a_count_of_records():
    """A recommendation published twice (at-least-once) ended the read a record early: the last event's output was
    left out of the rate and the percentiles."""
    sent = {f"e{i}": 0.0 for i in range(4)}
    reader = _Reader(["w1", "e0", "e1", "e1", "e2", "e3"], per_poll=5)
    found = read_each_trigger(reader, sent, at_least=5, timeout=5)
    assert [orjson.loads(r.value)["trigger_event_id"] for r in found] == ["e0", "e1", "e2", "e3"]
    assert [r.timestamp for r in found] == [1, 2, 4, 5]  # the first copy of e1
    with pytest.raises(ServiceTimeout, match="outputs of 3 of the 4 events"):
        read_each_trigger(_Reader(["e0", "e1", "e2"], per_poll=5), sent, at_least=3, timeout=0.01)


def test_rounds_run_abba_so_an_even_count_favours_neither_order():
    assert [plain_app_first(n) for n in range(8)] == [True, False, False, True] * 2


def test_a_stage_quantile_within_the_buckets_is_near_the_exact_one_past_a_second():
    """Buckets of 1, 2.5 and 5 s made a delivered stage's exact p99 of 3.1 s print as 4.9 s."""
    seconds = np.random.default_rng(3).uniform(1.0, 3.2, size=3_000)

    def p99(buckets: tuple[float, ...]) -> float:
        cumulative = np.cumsum(np.bincount(np.searchsorted(buckets, seconds, side="left"), minlength=len(buckets) + 1))
        samples = {("h_bucket", (("le", str(bound)),)): float(n) for bound, n in zip(buckets, cumulative)}
        samples[("h_bucket", (("le", "+Inf"),))] = float(cumulative[-1])
        return quantile(samples, "h", 0.99)

    exact = np.percentile(seconds, 99)
    assert p99((0.5, 0.75, 1.0, 2.5, 5.0, 10.0)) > 1.4 * exact  # the buckets before
    assert p99(LATENCY_BUCKETS) == pytest.approx(exact, rel=0.1)
