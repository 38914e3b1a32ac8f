"""`stream-app items load --wait`: what it says when the workers are not there in time (no broker or Redis needed:
the load and the workers' statuses are stood in for)."""

from __future__ import annotations

import time

import pytest

from stream_app.cli import main
from stream_app.config import Settings
from stream_app.errors import ServiceTimeout
from stream_app.tools import catalogue


def test_a_wait_that_times_out_still_says_what_was_loaded_and_rejected(tmp_path, monkeypatch, capsys):
    """The load is done (its items on the topic, its bad lines dead-lettered) before the wait: a wait that fails must
    not swallow that summary (it did: only the timeout was printed)."""
    file = tmp_path / "items.jsonl"
    file.write_text('{"item_id": "a", "title": "RED LAMP", "schema_version": 1}\n{"item_id": "b"}\n')

    def sent(settings, path, items, rejected):
        return catalogue.LoadSummary(path, len(items), len(rejected), 0.1, "1 catalogue record rejected", 7)

    def late(settings, through, timeout_s):
        raise ServiceTimeout(f"after {timeout_s:.0f}s 1 of 1 workers have not indexed the catalogue through {through}")

    monkeypatch.setattr(catalogue, "send_catalogue", sent)
    monkeypatch.setattr(catalogue, "wait_indexed", late)
    assert main.main(["items", "load", str(file), "--wait", "1"]) == 2
    said = capsys.readouterr()
    assert f"loaded 1 item from {file}" in said.out and "1 catalogue record rejected" in said.out
    assert "have not indexed the catalogue through 7" in said.err


def test_a_worker_whose_status_is_no_longer_refreshed_is_said_to_be_stopped_not_embedding(monkeypatch):
    """A worker killed leaves its status in Redis for up to its 15 s TTL: the timeout named it as behind and advised
    waiting longer for its embedding."""
    from stream_app.store import redis_store

    now_ms = int(time.time() * 1000)
    statuses = [{"worker_id": "w:live", "catalogue": {"indexed_through": 3}, "updated_at": now_ms - 1_000},
                {"worker_id": "w:gone", "catalogue": {"indexed_through": 2}, "updated_at": now_ms - 12_000}]
    monkeypatch.setattr(redis_store, "worker_statuses", lambda client, namespace="": statuses)
    monkeypatch.setattr(catalogue, "WAIT_POLL_S", 0.01)
    with pytest.raises(ServiceTimeout) as raised:
        catalogue.wait_indexed(Settings(redis_url="redis://127.0.0.1:1/0"), 3, 0.05)
    said = str(raised.value)
    assert "1 of 2 workers" in said and "w:gone at 2" in said and "w:live" not in said
    assert "its status not refreshed for 12s" in said and "stopped" in said


def test_a_wait_that_ends_says_how_many_workers_serve_no_content_model(monkeypatch):
    """With the content model refused, the wait said every worker made its lists with the catalogue, unsaid that
    no text took part in them (helper-141 #9)."""
    from stream_app.store import redis_store

    statuses = [{"worker_id": "w:1", "catalogue": {"indexed_through": 3}, "models": {"content": None}},
                {"worker_id": "w:2", "catalogue": {"indexed_through": 4}, "models": {"content": "content-1"}}]
    monkeypatch.setattr(redis_store, "worker_statuses", lambda client, namespace="": statuses)
    said = catalogue.wait_indexed(Settings(redis_url="redis://127.0.0.1:1/0"), 3, 1)
    assert said.startswith("every running worker (2) makes its lists with the catalogue through offset 3")
    assert "; 1 of them serves no content model, so the items' text takes no part in their lists" in said
    statuses[0]["models"]["content"] = "content-1"
    assert "no content model" not in catalogue.wait_indexed(Settings(redis_url="redis://127.0.0.1:1/0"), 3, 1)
