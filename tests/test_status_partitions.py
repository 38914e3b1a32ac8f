"""`stream-app status` names the input partitions no live worker owns (each worker reports only its own)."""

from __future__ import annotations

from types import SimpleNamespace

import redis

from stream_app.cli import status_command
from stream_app.store import redis_store


def status(worker_id: str, app_id: str, partitions: list[int]) -> dict:
    return {"worker_id": worker_id, "app_id": app_id, "ready": True, "missing": {}, "input_partitions": partitions,
            "counters": {"events": 0, "applied": 0, "duplicates": 0, "rejected": 0, "recommendations": 0}}


def status_output(monkeypatch, capsys, statuses: list[dict], marker: dict[bytes, bytes]) -> str:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never dialled: the client below is a fake
    monkeypatch.setattr(redis.Redis, "from_url", classmethod(lambda cls, url, **kwargs: SimpleNamespace(
        hgetall=lambda key: marker, close=lambda: None)))
    monkeypatch.setattr(redis_store, "worker_statuses", lambda client, namespace, ttl_s=None: statuses)
    assert status_command.cmd_status(None) == 0
    return capsys.readouterr().out


def marker_of(count: int) -> dict[bytes, bytes]:
    """The workers' marker of `count` input partitions, each written back."""
    return {b"token": b"t1", b"partitions": str(count).encode(), **{f"partition:{p}".encode(): b"t1"
                                                                    for p in range(count)}}


def test_status_warns_of_the_partitions_no_live_worker_of_a_group_owns_by_the_workers_partition_count(monkeypatch,
                                                                                                      capsys):
    """A worker stopped without leaving: its partitions' events wait until the broker notices, and every line of
    `status` (each worker's own partitions) looked healthy. The count is the marker's, the topics' (here 6, not
    STREAM_APP_PARTITIONS' 8); each group is judged alone."""
    out = status_output(monkeypatch, capsys, [status("a:1", "a", [0, 1]), status("a:2", "a", [3]),
                                              status("b:1", "b", [0, 1, 2, 3, 4, 5])], marker_of(6))
    assert "warning: input partitions 2, 4, 5 of 6 owned by no live worker of group a (STREAM_APP_APP_ID): their events wait" in out
    assert "group b" not in out and "partitions 6, 7" not in out


def test_status_says_nothing_of_partitions_when_all_are_owned_or_the_count_is_unknown(monkeypatch, capsys):
    statuses = [status("a:1", "a", [0, 2]), status("a:2", "a", [1, 3])]
    assert "owned by no live worker" not in status_output(monkeypatch, capsys, statuses, marker_of(4))
    assert "owned by no live worker" not in status_output(monkeypatch, capsys, statuses, {})  # no marker yet
    assert "input partition 4 of 5 owned by no live worker of group a" in status_output(monkeypatch, capsys, statuses,
                                                                                   marker_of(5))


def test_a_status_whose_partitions_are_not_a_list_leaves_its_group_unjudged_and_status_whole(monkeypatch, capsys):
    """A worker key holding `input_partitions` of another shape (a hand-edited key, another app's) made `status`
    raise after its first lines; what that worker owns is unknown, so its group's partitions are not said unowned."""
    for odd in (3, None, "0,1", {"0": True}):
        statuses = [status("a:1", "a", [0]), {**status("a:2", "a", []), "input_partitions": odd},
                    status("b:1", "b", [0, 1])]
        out = status_output(monkeypatch, capsys, statuses, marker_of(3))
        assert "worker a:2: ready" in out and "profiles in Redis: all 3 input partitions written back" in out
        assert "owned by no live worker of group a" not in out, odd
        assert "warning: input partition 2 of 3 owned by no live worker of group b" in out


def test_a_worker_heard_from_a_refresh_ago_or_more_owns_nothing_and_its_partitions_are_said_with_it(monkeypatch,
                                                                                                     capsys):
    """A worker killed without leaving counted as their owner until its key expired (15 s): the warning came up to
    15 s late. Stale once a refresh is missed (the worker's own period), by Redis's clock or else its stamp."""
    import time

    from stream_app.stream.worker_status import STATUS_STALE_S

    fresh = status("a:1", "a", [0, 1])
    for age in (0.0, STATUS_STALE_S - 0.5):  # a refresh may be a period late: no warning
        out = status_output(monkeypatch, capsys, [fresh, {**status("a:2", "a", [2, 3]), "age_s": age}], marker_of(4))
        assert "owned by no live worker" not in out and "gone or stuck" not in out, age
    out = status_output(monkeypatch, capsys, [fresh, {**status("a:2", "a", [2, 3]), "age_s": STATUS_STALE_S + 1.2}],
                        marker_of(4))
    assert "worker a:2: ready as of 11s ago (gone or stuck?)" in out
    assert ("warning: input partitions 2, 3 of 4 owned by no live worker of group a (STREAM_APP_APP_ID): only a:2 "
            "(last heard 11s ago) lists them (gone or stuck?); their events wait") in out
    # no key age (a key without expiry): the worker's stamp; a stale worker's partitions a live one lists are owned
    stamped = {**status("a:2", "a", [1, 2, 3]), "updated_at": int(time.time() * 1000) - 12_000}
    out = status_output(monkeypatch, capsys, [fresh, stamped, status("a:3", "a", [3])], marker_of(4))
    assert "warning: input partition 2 of 4 owned by no live worker of group a (STREAM_APP_APP_ID): only a:2 (last " \
           "heard 12s ago) lists them" in out
    assert out.count("owned by no live worker") == 1


def test_partitions_a_worker_lists_past_the_markers_count_are_judged_and_the_difference_said(monkeypatch, capsys):
    """A topic grown in place: partitions at or past the marker's count were neither named nor judged, so `status`
    said nothing of them."""
    out = status_output(monkeypatch, capsys, [status("a:1", "a", [0, 1, 2]), status("a:2", "a", [3, 5])],
                        marker_of(4))
    assert "warning: the workers' marker in Redis counts 4 input partitions, but a:2 lists 5: the input topics have " \
           "more" in out and "create the topics anew under another STREAM_APP_NAMESPACE" in out
    assert "warning: input partition 4 of at least 6 owned by no live worker of group a" in out
    owned = status_output(monkeypatch, capsys, [status("a:1", "a", [0, 1, 2]), status("a:2", "a", [3, 4, 5])],
                          marker_of(4))
    assert "but a:2 lists 4, 5" in owned and "owned by no live worker" not in owned
    # a run said as one, not number by number (a hand-edited status may list a partition in the billions)
    assert "input partitions 1 to 6 of 8 owned by no live worker of group a" in status_output(
        monkeypatch, capsys, [status("a:1", "a", [0, 7])], marker_of(8))
    # no marker yet: the partitions below the highest listed are judged all the same
    out = status_output(monkeypatch, capsys, [status("a:1", "a", [0]), status("a:2", "a", [2])], {})
    assert "warning: input partition 1 of at least 3 owned by no live worker of group a" in out
    assert "marker in Redis counts" not in out
