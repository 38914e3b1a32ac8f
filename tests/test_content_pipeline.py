"""The content model in a real worker: the catalogue on the items topic, embedded by the exported
all-MiniLM-L6-v2 (onnxruntime), announced on the control topic; recommendations bring an item nobody
touched, with the reason in words; the profile says what the user likes."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from conftest import wait_until

from stream_app.contracts import validator
from stream_app.store.redis_store import read_profile, worker_statuses
from stream_app.stream.model_control import publish
from stream_app.tools.catalogue import load_items, wait_indexed
from stream_app.tools.consume import committed_offsets
from stream_app.tools.replay import produce_events

T0 = 1_700_000_000_000


@pytest.fixture(scope="session")
def content_model(tmp_path_factory) -> tuple[Path, str]:
    from stream_app_train.content_export import export_content

    root = tmp_path_factory.mktemp("content-registry")
    return root, export_content(None, root)["version"]


# Product names from the UCI Online Retail dataset (Daqing Chen, 2015; CC BY 4.0).
CATALOGUE = [
    ("71053", "WHITE METAL LANTERN"), ("22464", "HANGING METAL HEART LANTERN"),
    ("22465", "HANGING METAL STAR LANTERN"), ("21733", "RED HANGING HEART T-LIGHT HOLDER"),
    ("22423", "REGENCY CAKESTAND 3 TIER"), ("85099B", "JUMBO BAG RED RETROSPOT"),
    ("20725", "LUNCH BAG RED RETROSPOT"), ("22720", "SET OF 3 CAKE TINS PANTRY DESIGN"),
    ("84879", "ASSORTED COLOUR BIRD ORNAMENT"), ("22086", "PAPER CHAIN KIT 50'S CHRISTMAS"),
]


def test_a_worker_recommends_an_item_nobody_touched_by_its_text(content_model, make_settings, start_worker,
                                                                 redis_client, tmp_path):
    from test_pipeline import read_all

    root, version = content_model
    settings = make_settings(registry_dir=str(root))
    catalogue = tmp_path / "items.jsonl"
    lines = [orjson.dumps({"item_id": i, "title": t, "schema_version": 1}).decode() for i, t in CATALOGUE]
    lines.insert(3, '{"item_id": "no-title", "schema_version": 1}')
    catalogue.write_text("\n".join(lines) + "\n")
    summary = load_items(settings, catalogue, "jsonl")
    assert (summary.sent, summary.rejected) == (len(CATALOGUE), 1)
    (dead,) = [orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap_servers, settings.topics.dlq, 1)]
    validator("dead-letter")(dead)
    assert dead["reason"] == "schema_violation" and dead["source"]["line"] == 4

    publish(settings, "content", version)
    worker = start_worker(settings)
    events = [{"event_id": f"c{n}", "user_id": "lamp-fan", "item_id": item, "type": "purchase", "stage": "order",
               "ts": T0 + n * 60_000, "schema_version": 1} for n, item in enumerate(["71053", "22464"])]
    marks = produce_events(settings, events).marks
    inputs = list(marks)
    wait_until(lambda: all(committed_offsets(settings, inputs).get(tp, 0) >= m for tp, m in marks.items()), 90,
               "the worker to commit both events")

    recs = {orjson.loads(r.value)["trigger_event_id"]: orjson.loads(r.value)
            for r in read_all(settings.kafka_bootstrap_servers, settings.topics.recommendations, 2)}
    last = recs["c1"]
    assert last["model"]["content"] == version
    reasons = {item["item_id"]: item["reasons"] for item in last["items"]}
    # the star lantern: in the catalogue only, never bought by anyone, brought by its text
    assert "similar to HANGING METAL HEART LANTERN" in reasons["22465"]
    stored = read_profile(redis_client, "lamp-fan", settings.namespace)["profile"]
    assert any("lantern" in term for term in stored["likes"][:2]), stored["likes"]
    assert stored["content_interest"]["model"] == version

    def status():
        return [s for s in worker_statuses(redis_client, settings.namespace) if s["pid"] == worker.pid][0]

    wait_until(lambda: status()["catalogue"]["items"] > 0, 30, "the worker's status after indexing")
    assert status()["catalogue"] == {"items": len(CATALOGUE), "withdrawn": 0, "indexed": len(CATALOGUE),
                                     "model": version, "embedded": status()["catalogue"]["embedded"], "shared": 0,
                                     "failed": 0, "invalid": 0, "indexed_through": summary.through}
    assert status()["catalogue"]["embedded"] >= len(CATALOGUE) and status()["models"]["content"] == version

    # a title changed with `items load --wait`: once it returns, the worker's lists name the new title
    renamed = tmp_path / "renamed.jsonl"
    renamed.write_text(orjson.dumps({"item_id": "22464", "title": "HANGING METAL HEART LAMP",
                                     "schema_version": 1}).decode() + "\n")
    again = load_items(settings, renamed, "jsonl")
    assert again.through == summary.through + 1 and wait_indexed(settings, again.through, 60).startswith(
        "every running worker (1) makes its lists with the catalogue through offset")
    produce_events(settings, [{**events[-1], "event_id": "r1", "ts": T0 + 90_000}])
    named = {orjson.loads(r.value)["trigger_event_id"]: orjson.loads(r.value)
             for r in read_all(settings.kafka_bootstrap_servers, settings.topics.recommendations, 3)}["r1"]
    assert "similar to HANGING METAL HEART LAMP" in {item["item_id"]: item["reasons"] for item in named["items"]}["22465"]

    # an item the user bought taken off the catalogue (a tombstone): never shown again, by any source (before,
    # only the content sources knew the catalogue; "viewed before" brought it here)
    from kafka import KafkaProducer

    assert "71053" in reasons
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    producer.send(settings.topics.items, key=b"71053", value=None)
    producer.flush()
    wait_until(lambda: status()["catalogue"]["withdrawn"] == 1, 30, "the worker to read the tombstone")
    produce_events(settings, [{**events[-1], "event_id": "c2", "ts": T0 + 2 * 60_000}])
    after = {orjson.loads(r.value)["trigger_event_id"]: orjson.loads(r.value)
             for r in read_all(settings.kafka_bootstrap_servers, settings.topics.recommendations, 4)}["c2"]
    assert after["items"] and "71053" not in {item["item_id"] for item in after["items"]}


def test_through_kafka_with_content_every_list_equals_the_in_process_pass(content_model, services, capsys):
    """The worker reloads each profile's interest vector between batches and embeds the catalogue
    itself; `evaluate` keeps profiles in memory and embeds in its own process: the lists must agree."""
    from stream_app.evaluate.tables import via_kafka_table
    from stream_app.evaluate.via_kafka import evaluate_via_kafka
    from stream_app.serving.text_encoder import TextEncoder
    from stream_app.stream.catalogue_feed import index_records
    from stream_app.tools.catalogue import load_catalogue
    from stream_app.tools.demo import SAMPLE, SAMPLE_FORMAT

    root, version = content_model
    catalogue, _ = load_catalogue(SAMPLE, SAMPLE_FORMAT)  # with listed_at, as `items load` sends it
    assert all("listed_at" in record for record in catalogue.values())
    index = index_records(TextEncoder.load(root, version), catalogue)
    result = evaluate_via_kafka(SAMPLE, SAMPLE_FORMAT, limit=1200, items=(SAMPLE, SAMPLE_FORMAT), content=index,
                                registry_dir=str(root), timeout=300, baselines=True, light=True, processes=2,
                                progress=True)
    assert result["recommendations_published"] == result["recommendations_in_process"] == 1200
    assert result["in_process_processes"] == 2  # its rows split over two processes, the hybrid's lists in the first
    # the light baselines ran in the same in-process pass, and the published lists are set against the best
    assert set(result["other_rows"]) == {"stream-app, no content", "content only, then popular", "sequential rules only, then popular",
                                         "sequential rules (steps 10), then popular",
                                         "sequential rules (steps 10), session's items out, then popular",
                                         "V-SKNN (k=100, sample 500, idf), session's items out, then popular",
                                         "sequential rules (steps 10), then similar text, then popular"}
    best = max(((name, row) for name, row in result["other_rows"].items() if not name.startswith("stream-app")),
               key=lambda named: named[1]["recall@20"])
    assert result["against_best"]["row"] == best[0]
    assert result["against_best"]["relative_recall"] == pytest.approx(
        result["via_kafka"]["recall@20"] / best[1]["recall@20"] - 1)
    assert f"against the best baseline row, {best[0]}" in via_kafka_table(result)
    assert (result["lists_differ"], result["versions_differ"]) == (0, 0), via_kafka_table(result)
    assert result["via_kafka"]["cold@20"] == result["in_process"]["cold@20"] > 0
    assert result["content"] == version and "cold@20" in via_kafka_table(result)
    said = capsys.readouterr().err  # both passes' progress (the first process's only: one line each at the end)
    assert said.count("evaluate, through Kafka: 1200/1200 (100%)") == 1
    assert said.count("evaluate, in process: 1200/1200 (100%)") == 1
