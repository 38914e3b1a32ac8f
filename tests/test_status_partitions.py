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
