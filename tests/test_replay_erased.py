"""`stream-app replay` of an old log naming an erased user: its rejected lines are not dead-lettered again."""

from __future__ import annotations

import time

import orjson

from stream_app.tools.consume import read_to_end
from stream_app.tools.erase import publish_erasures
from stream_app.tools.replay import replay


def test_a_replay_does_not_dead_letter_again_the_rejected_lines_of_an_erased_user(make_settings, tmp_path):
    settings = make_settings()
    now = int(time.time() * 1000)
    lines = [{"event_id": f"{user}-{i}", "user_id": user, "item_id": "i1", "type": kind, "ts": now - 60_000 + i,
              "schema_version": 1} for user in ("alice", "bob") for i, kind in enumerate(("click", "add_to_cart"))]
    log = tmp_path / "old.jsonl"
    log.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b'\n{"user_id": "alice", "item_id": "cut sh\n')
    publish_erasures(settings, ["alice"], requested_at=now)  # not applied yet (no worker): a request on the topic

    summary = replay(settings, log, "jsonl", progress_stream=None)

    letters = read_to_end(settings, settings.topics.dlq)
    assert [b"alice" in (r.key or b"") + r.value for r in letters] == [False]  # bob's bad line only
    assert summary.rejected == 1 and summary.erased == 2 and "left out 2" in "\n".join(summary.lines())
