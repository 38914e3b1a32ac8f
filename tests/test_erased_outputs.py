"""What the tools show or write again of an erased user: `replay` dead letters, `recommendations` lists."""

from __future__ import annotations

import time

import orjson
import pytest

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


BAD_LINES_OF_ALICE = {  # a good line of bob's, then lines of alice's no reader can take
    "csv": "user_id,item_id,type,ts\nbob,i1,click,{now}\nalice,,click,{now}\nalice,i1,click,soon\n",
    "retailrocket": "timestamp,visitorid,event,itemid,transactionid\n{now},bob,view,i1,\nlater,alice,view,i1,\n"
                    "{now},alice,stare,i1,\n",
    "movielens": "userId,movieId,rating,timestamp\nbob,m1,4.0,{now_s}\nalice,m1,good,{now_s}\nalice,m1,4.0,then\n",
    "online-retail": "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
                     "5001,85123A,HEART,6,{date},2.55,17850,United Kingdom\n5002,85123A,HEART,six,{date},2.55,"
                     "17851.0,United Kingdom\n5003,85123A,HEART,6,{date},free,17851,United Kingdom\n",
    "otto": '{{"session":1,"events":[{{"aid":5,"ts":{now},"type":"clicks"}}]}}\n'
            '{{"session":"alice","events":[{{"aid":5,"ts":{now},"type":"stares"}}]}}\n'
            '{{"session":"alice","events":{{"aid":5}}}}\n',
}


@pytest.mark.parametrize("fmt", sorted(BAD_LINES_OF_ALICE))
def test_a_replay_leaves_out_an_erased_users_unreadable_lines_in_every_format(make_settings, tmp_path, fmt):
    """Only JSON lines were found to name their user: a csv (RetailRocket, MovieLens, Online Retail) row or an OTTO
    session of an erased user went to the dead-letter topic again, unkeyed."""
    settings = make_settings()
    now = int(time.time() * 1000) - 60_000
    user = "17851" if fmt == "online-retail" else "alice"
    log = tmp_path / f"old.{fmt}"
    log.write_text(BAD_LINES_OF_ALICE[fmt].format(now=now, now_s=now // 1000,
                                                  date=time.strftime("%m/%d/%Y %H:%M", time.gmtime(now / 1000))))
    publish_erasures(settings, [user], requested_at=now + 30_000)

    summary = replay(settings, log, fmt, progress_stream=None)

    assert read_to_end(settings, settings.topics.dlq) == []
    assert summary.rejected == 0 and summary.erased == BAD_LINES_OF_ALICE[fmt].count(user), summary.lines()


def test_recommendations_does_not_show_an_erased_users_lists_of_before_the_erasure(make_settings):
    from kafka import KafkaProducer
    from test_erase import cli

    from stream_app.stream.topics import ensure_topics

    settings = make_settings()
    ensure_topics(settings)
    now = int(time.time() * 1000)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)

    def recommended(event_ts: int, stamp: int, item: str) -> None:
        rec = {"rec_id": item, "user_id": "alice", "trigger_event_id": f"e-{item}", "event_ts": event_ts,
               "profile_version": 1, "model": {"ranking": "prior"},
               "items": [{"item_id": item, "score": 1.0, "reasons": ["viewed before"]}]}
        producer.send(settings.topics.recommendations, key=b"alice", value=orjson.dumps(rec), timestamp_ms=stamp)

    recommended(now - 60_000, now - 60_000, "before-erasure")
    producer.flush()
    publish_erasures(settings, ["alice"], requested_at=now - 30_000)
    erased = cli(settings, "recommendations", "alice")
    assert erased.returncode != 0 and "before-erasure" not in erased.stdout and "was erased" in erased.stderr
    recommended(now, now, "after-erasure")  # the user's new life: shown
    producer.flush()
    producer.close()
    shown = cli(settings, "recommendations", "alice", "--last", "5")
    assert shown.returncode == 0 and "after-erasure" in shown.stdout and "before-erasure" not in shown.stdout


def test_recommendations_shows_a_list_published_again_by_a_redone_batch_once(make_settings):
    """At-least-once: a batch redone after a crash publishes each of its lists again (same rec_id); the tool that
    shows a user's last lists said each twice (helper-143)."""
    from kafka import KafkaProducer
    from test_erase import cli

    from stream_app.stream.topics import ensure_topics

    settings = make_settings()
    ensure_topics(settings)
    now = int(time.time() * 1000)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    for copy in range(2):  # the batch, then the same batch redone
        for version in (1, 2):
            rec = {"rec_id": f"rec-{version}", "user_id": "carol", "trigger_event_id": f"e{version}",
                   "event_ts": now - 1_000 + version, "profile_version": version, "model": {"ranking": "prior"},
                   "items": [{"item_id": f"item-{version}", "score": 1.0, "reasons": ["popular"]}]}
            producer.send(settings.topics.recommendations, key=b"carol", value=orjson.dumps(rec),
                          timestamp_ms=now + copy)
    producer.flush()
    producer.close()

    shown = cli(settings, "recommendations", "carol", "--last", "10")

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("item-1") == 1 and shown.stdout.count("item-2") == 1, shown.stdout
    assert "2 of the lists read were published again" in shown.stderr
