"""The registry and the model channel as operators meet them: folders other users can read, a broken
version beside good ones, a manifest changed after publishing, a promotion whose files arrive late, a
rollback, a duplicate event in the encoder's input, a text the content model fails on, a failing shadow."""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import numpy as np
import orjson
import pytest
from conftest import OTTO_SAMPLE
from test_batch_handler import make_events, ready
from test_encoder import announce

from stream_app.cli.main import main
from stream_app.config import Settings
from stream_app.core.events import Event
from stream_app.core.items import InMemoryItemIndex
from stream_app.errors import ConfigError
from stream_app.serving import registry
from stream_app.serving.encoder import Encoder
from stream_app.stream.batch import BatchHandler, Counters, PartitionState
from stream_app.stream.catalogue_feed import CatalogueFeed
from stream_app.stream.model_control import ModelWatcher, valid_for_its_key


def copied(source: Path, target: Path, *versions: str) -> Path:
    for version in versions:
        shutil.copytree(source / version, target / version)
    return target


def handler(settings: Settings) -> BatchHandler:
    return BatchHandler(settings, {}, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(), now=0)


def test_a_version_folder_can_be_read_by_workers_running_as_another_user(trained):
    root, v1, _ = trained
    assert stat.S_IMODE((root / v1).stat().st_mode) & 0o005 == 0o005  # compose's workers run as nobody


def test_one_unreadable_manifest_leaves_the_other_versions_usable(trained, tmp_path, capsys):
    root, v1, _ = trained
    registry_dir = copied(root, tmp_path, v1)
    (registry_dir / "half").mkdir()
    (registry_dir / "half" / "manifest.json").write_text('{"version": "half", "crea')
    assert main(["models", "list", "--registry", str(registry_dir)]) == 0
    printed = capsys.readouterr().out
    assert "skipped: the manifest of model version half" in printed and v1 in printed
    assert registry.latest(registry_dir) == v1
    with pytest.raises(ConfigError, match="not in the registry"):
        registry.open_version(registry_dir, "no-such-version")
    with pytest.raises(ConfigError, match="cannot be read"):
        registry.open_version(registry_dir, "half")


def test_models_list_says_which_versions_workers_would_refuse_and_names_a_folder_without_a_manifest(trained, tmp_path,
                                                                                                    capsys):
    """A truncated graph or a manifest edited after the fact was listed like a sound version, and a folder whose
    manifest was deleted was left out unsaid (helper-141 #8)."""
    root, v1, v2 = trained
    registry_dir = copied(root, tmp_path, v1)
    shutil.copytree(root / v2, registry_dir / v2)
    (registry_dir / v2 / "encoder.onnx").write_bytes((registry_dir / v2 / "encoder.onnx").read_bytes()[:100])
    (registry_dir / "lost").mkdir()
    (registry_dir / "lost" / "encoder.onnx").write_bytes(b"a graph whose manifest was deleted")
    assert main(["models", "list", "--registry", str(registry_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"skipped: the folder lost in {registry_dir} holds no manifest.json" in printed
    lines = [*printed.splitlines(), ""]
    sound, broken = (next(i for i, line in enumerate(lines) if line.startswith(v)) for v in (v1, v2))
    assert not lines[sound + 1].startswith("  DAMAGED") and lines[broken + 1].startswith("  DAMAGED, workers refuse it:")


def test_a_version_missing_a_file_is_a_config_error_that_says_what_to_do(trained, tmp_path):
    root, v1, _ = trained
    registry_dir = copied(root, tmp_path, v1)
    (registry_dir / v1 / "items.json").unlink()
    with pytest.raises(ConfigError, match="cannot read its items.json.*again"):
        registry.open_version(registry_dir, v1)


def test_a_manifest_changed_after_publishing_is_refused(trained, tmp_path):
    """The manifest says how inputs are prepared (sequence length, hash buckets): it is in the hash."""
    root, v1, _ = trained
    registry_dir = copied(root, tmp_path, v1)
    published = announce(registry_dir, "live", v1, 1)
    manifest = json.loads((registry_dir / v1 / "manifest.json").read_text())
    manifest["dims"].update(max_len=1, buckets=7)
    (registry_dir / v1 / "manifest.json").write_text(json.dumps(manifest))
    watcher = ModelWatcher(Settings(registry_dir=str(registry_dir)))
    asyncio.run(watcher.apply(published))
    assert watcher.live is None and "content hash" in watcher.errors["live"]
    del manifest["hash_scheme"]  # posing as a version from before the manifest was hashed: still not it
    (registry_dir / v1 / "manifest.json").write_text(json.dumps(manifest))
    asyncio.run(watcher.apply(published))
    assert watcher.live is None


def test_a_promotion_whose_files_arrive_late_serves_once_they_are_there(trained, tmp_path, monkeypatch):
    """Two workers must not serve different versions for good because one host got the files later."""
    root, v1, v2 = trained
    registry_dir = copied(root, tmp_path, v1)
    reports: list[dict] = []

    async def report(record: dict) -> None:
        reports.append(record)

    watcher = ModelWatcher(Settings(registry_dir=str(registry_dir)), report, "w")
    monkeypatch.setattr("stream_app.stream.model_control.RETRY_S", 1.0)

    async def scenario() -> None:
        await watcher.apply(announce(registry_dir, "live", v1, 1))
        await watcher.apply(announce(root, "live", v2, 2))  # v2 not on this host yet
        assert watcher.live.version == v1 and "live" in watcher.refused
        record, _, first_wait = watcher.refused["live"]
        await watcher.apply(record, retry=True)  # still missing: said once, and tried again later
        assert watcher.refused["live"][2] == 2 * first_wait
        copied(root, registry_dir, v2)
        await watcher.apply(record, retry=True)

    asyncio.run(scenario())
    assert watcher.live.version == v2 and "live" not in watcher.errors and not watcher.refused
    assert [r["outcome"] for r in reports] == ["serving", "refused", "serving"]


def watched(root, *records: dict) -> tuple[ModelWatcher, list[dict]]:
    """A watcher of `root` after applying `records` in turn, and the status records it reported."""
    reports: list[dict] = []

    async def report(record: dict) -> None:
        reports.append(record)

    watcher = ModelWatcher(Settings(registry_dir=str(root)), report, "w")

    async def scenario() -> None:
        for record in records:
            await watcher.apply(record)

    asyncio.run(scenario())
    return watcher, reports


def test_publishing_the_serving_version_again_clears_a_refusal(trained):
    root, v1, v2 = trained
    watcher, reports = watched(root, announce(root, "live", v1, 1),
                               {**announce(root, "live", v2, 2), "content_hash": "0" * 64},  # refused
                               announce(root, "live", v1, 3))  # the rollback
    assert watcher.live.version == v1 and "live" not in watcher.errors and not watcher.refused
    assert [r["outcome"] for r in reports] == ["serving", "refused", "serving"]


def test_a_control_record_with_or_without_schema_version_is_read_and_the_status_records_carry_it(trained):
    """An older CLI's announcement (no schema_version, as `models publish` wrote until 2026-12-06, and as the compacted
    topic may keep it for good) is read as version 1 beside this release's; the status records the worker writes
    carry schema_version 1 (they carried none until 2026-12-06)."""
    from fastjsonschema import JsonSchemaException

    from stream_app.contracts import load_schema, validator

    root, v1, v2 = trained
    older = announce(root, "live", v1, 1)  # as an older CLI wrote it
    assert "schema_version" not in older
    watcher, reports = watched(root, older, {**announce(root, "live", v2, 2), "schema_version": 1})
    assert watcher.live.version == v2 and [r["outcome"] for r in reports] == ["serving", "serving"]
    status_schema = {**load_schema("model-status"), "required": [*load_schema("model-status")["required"],
                                                                 "schema_version"]}
    for record in reports:
        assert record["schema_version"] == 1
        validator("model-status")(record)
        jsonschema.validate(record, status_schema)
    with pytest.raises(JsonSchemaException):  # a later version of the contract is not read as this one
        validator("model-control")({**older, "schema_version": 2})


def test_models_publish_writes_schema_version_and_its_record_follows_the_schema(monkeypatch):
    """`models publish` (and `withdraw`, `train --publish`, demo, bench) wrote control records without schema_version
    until 2026-12-06; workers since 2026-11-30 read it."""
    from stream_app.contracts import load_schema, validator
    from stream_app.stream import model_control, topics

    sent: list[tuple[str, bytes, bytes]] = []

    class Producer:
        def __init__(self, **_: object) -> None:
            pass

        def send(self, topic: str, key: bytes, value: bytes):
            sent.append((topic, key, value))
            return SimpleNamespace(get=lambda timeout: None)

        def close(self) -> None:
            pass

    monkeypatch.setattr("kafka.KafkaProducer", Producer)
    monkeypatch.setattr(topics, "ensure_topics", lambda settings: None)
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9092")
    returned = model_control.publish(settings, "shadow", None)
    [(topic, key, value)] = sent
    record = orjson.loads(value)
    assert topic == settings.topics.model_control and key == b"shadow" and record == returned
    assert record["schema_version"] == 1
    validator("model-control")(record)
    control_schema = {**load_schema("model-control"), "required": [*load_schema("model-control")["required"],
                                                                   "schema_version"]}
    jsonschema.validate(record, control_schema)
    assert model_control.valid_for_its_key(SimpleNamespace(key=key, value=value))


def test_a_control_record_of_another_schema_version_is_refused_with_where_it_was_read(trained, caplog):
    """A record of a later contract (its fields may mean other things) is ignored, not acted on or crashed on: the
    log line names the version and where it was read (topic, partition, offset), the role's status says refused, the
    worker keeps what serves; a record without schema_version is still read as version 1."""
    root, v1, v2 = trained
    reports: list[dict] = []

    async def report(record: dict) -> None:
        reports.append(record)

    watcher = ModelWatcher(Settings(registry_dir=str(root)), report, "w")
    later = {**announce(root, "live", v2, 2), "schema_version": 2}
    reshaped = {"role": "live", "model": {"name": v2}, "schema_version": "2.0"}  # a later shape breaks v1's fields too
    messages = [SimpleNamespace(topic="models.control", partition=0, offset=offset, key=b"live", value=orjson.dumps(r))
                for offset, r in enumerate([announce(root, "live", v1, 1), later, reshaped])]

    async def scenario() -> None:
        for message in messages:
            await watcher.receive(message)

    with caplog.at_level("ERROR", logger="stream_app.models"):
        asyncio.run(scenario())
    assert watcher.live.version == v1 and watcher.swaps == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    advice = ("this worker keeps the models it serves (publish with `stream-app models publish` of this release, or "
              "upgrade the workers to the release that writes it)")
    assert [r.getMessage() for r in errors] == [
        f"ignoring a control record at models.control[0]@1 keyed b'live': schema_version 2 is not one this release "
        f"reads (1); {advice}",
        f"ignoring a control record at models.control[0]@2 keyed b'live': schema_version '2.0' is not one this "
        f"release reads (1); {advice}"]
    assert [(r.topic, r.partition, r.offset) for r in errors] == [("models.control", 0, 1), ("models.control", 0, 2)]
    assert [(r["outcome"], r["version"]) for r in reports] == [("serving", v1), ("refused", None), ("refused", None)]
    assert "schema_version 2 is not one this release reads" in reports[1]["reason"]
    assert "keeps " + v1 in reports[1]["reason"] and "models.control[0]@2" in watcher.status()["errors"]["control"]
    # nor is it the role's latest valid record when a starting worker catches up with the topic
    assert [valid_for_its_key(message) for message in messages] == [True, False, False]


def test_models_status_sets_aside_a_status_record_it_cannot_read_and_says_where(monkeypatch, capsys):
    """A status record of a later schema_version (or not JSON, or without what the command prints) was a KeyError
    or JSONDecodeError traceback that hid every worker's outcome; one without schema_version (a worker before
    2026-12-06) is read as version 1."""
    from stream_app.cli.model_commands import print_model_status
    from stream_app.tools import consume

    def status(worker: str, **more: object) -> dict:
        return {"worker_id": worker, "role": "live", "version": "enc-1", "content_hash": None, "outcome": "serving",
                "reason": None, "at": 0, **more}

    values = [orjson.dumps(status("w-old")), orjson.dumps(status("w-new", schema_version=1)),
              orjson.dumps(status("w-later", schema_version=2)), b"{not json", orjson.dumps({"worker_id": "w-x"})]
    records = [SimpleNamespace(topic="models.status", partition=0, offset=offset, key=f"k{offset}".encode(), value=v)
               for offset, v in enumerate(values)]
    monkeypatch.setattr(consume, "read_to_end", lambda settings, topic: records)
    assert print_model_status(Settings(), show_all=True) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("(3 records of models.status set aside, the last at models.status[0]@4 (it lacks at, outcome, "
                        "reason, role, version); one of another schema_version is read by `stream-app models status` "
                        "of the release that wrote it)")
    assert [line.split()[0] for line in lines[1:]] == ["w-new", "w-old"]
    from stream_app.cli.model_commands import status_records

    _, set_aside = status_records(Settings())
    assert set_aside[:2] == ["models.status[0]@2 (schema_version 2 is not one this release reads (1))",
                             "models.status[0]@3 (not a JSON object)"]
    # a set-aside record's key: its earlier record is not its latest outcome; a reason said only where it is one
    records[2:] = [SimpleNamespace(topic="models.status", partition=0, offset=2, key=b"k1", value=b"{not json")]
    assert print_model_status(Settings(), show_all=True) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "(1 record of models.status set aside, the last at models.status[0]@2 (not a JSON object))"
    assert [line.split()[0] for line in lines[1:]] == ["w-old"]


def test_withdrawing_a_refused_first_version_is_reported_as_withdrawn_not_as_serving_nothing(trained):
    root, _, v2 = trained
    watcher, reports = watched(root, {**announce(root, "live", v2, 1), "content_hash": "0" * 64},  # nothing serves
                               announce(root, "live", None, 2))
    assert watcher.live is None and "live" not in watcher.errors and not watcher.refused
    assert [(r["outcome"], r["version"]) for r in reports] == [("refused", v2), ("withdrawn", None)]


def test_a_control_record_keyed_by_another_role_or_a_tombstone_is_ignored_and_the_watcher_goes_on(trained):
    from types import SimpleNamespace

    root, v1, v2 = trained
    watcher = ModelWatcher(Settings(registry_dir=str(root)), lambda record: asyncio.sleep(0), "w")

    async def scenario() -> None:
        for offset, (key, record) in enumerate([(b"live", announce(root, "live", v1, 1)),
                                                (b"live", announce(root, "shadow", v2, 2)),  # hides live's own
                                                (b"shadow", None)]):
            value = orjson.dumps(record) if record is not None else None
            await watcher.receive(SimpleNamespace(key=key, value=value, offset=offset))

    asyncio.run(scenario())
    assert watcher.live.version == v1 and watcher.shadow is None


def test_a_duplicate_event_adds_no_step_to_the_encoders_input_whatever_the_rounds(trained):
    """The profile skips a duplicate; the sequence the encoder sees must skip it too, or the embedding
    depends on whether the duplicate fell into the same round as the next event."""
    root, v1, _ = trained
    settings, encoder = Settings(ranker_warm_up=2), Encoder.load(root, v1)

    def event(i: int, item: str, ts: int) -> Event:
        return Event.from_dict({"event_id": f"e{i}", "user_id": "u1", "item_id": encoder.item_ids[int(item)],
                                "type": "click", "ts": ts, "schema_version": 1})

    first, second = event(0, "0", 1_700_000_000_000), event(1, "1", 1_700_000_010_000)

    def embedding(rounds: list[list[Event]]) -> np.ndarray:
        batch, offset = handler(settings), 0
        for events in rounds:
            batch.process_round([ready(e, offset + i) for i, e in enumerate(events)], encoder, None)
            offset += len(events)
        assert batch.counters.duplicates == 1
        return np.array(batch.profile("u1").embedding)

    together = embedding([[first, first, second]])
    assert np.allclose(together, embedding([[first, first], [second]]), atol=1e-5)
    assert np.allclose(together, embedding([[first], [first, second]]), atol=1e-5)


class TextModel:
    """A content model that fails on texts holding `fails_on`."""

    dim = 4

    def __init__(self, version: str, fails_on: str | None = None):
        self.version, self.fails_on, self.calls = version, fails_on, 0
        self.vectors_id = version  # no files to hash

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        self.calls += 1
        if self.fails_on and any(self.fails_on in text for text in texts):
            raise RuntimeError("onnxruntime failed")
        return np.full((len(texts), 4), 0.5, np.float32)


def test_a_text_the_content_model_fails_on_leaves_the_rest_of_the_catalogue_indexed():
    feed = CatalogueFeed(Settings())
    for offset, (item_id, title) in enumerate([("i0", "RED LANTERN"), ("i1", "BLUE MUG"), ("i2", "GREEN CANDLE"),
                                                ("i9", "NEW ITEM")]):
        feed.apply(item_id.encode(), orjson.dumps({"item_id": item_id, "title": title, "schema_version": 1}), offset)
    model = TextModel("content-b", fails_on="CANDLE")
    asyncio.run(feed.rebuild(model))
    assert {"i0", "i1", "i9"} <= set(feed.index.row_of) and feed.embedder.failed == 1
    assert feed.index.vector("i2") is None and feed.index.vector("i9").any()  # no vector: out of the index
    calls = model.calls
    feed.apply(b"i3", orjson.dumps({"item_id": "i3", "title": "YELLOW CUP", "schema_version": 1}), 4)
    asyncio.run(feed.rebuild(model))  # the failing text is not embedded again
    assert "i3" in feed.index.row_of and model.calls == calls + 1 and feed.status()["failed"] == 1


def test_a_failing_shadow_encoder_is_not_counted_as_a_live_failure(trained):
    root, v1, _ = trained

    class Broken:
        version = "enc-broken"

        def __getattr__(self, name: str):
            raise RuntimeError("onnxruntime: invalid input")

    batch = handler(Settings(ranker_warm_up=2))
    batch.process_round([ready(e, i) for i, e in enumerate(make_events())], Encoder.load(root, v1), Broken())
    assert batch.counters.encoder_failures == 0 and batch.counters.shadow_encoder_failures == 1


def test_a_newer_announcement_replaces_a_refused_one_so_no_retry_brings_the_superseded_version_back(trained):
    """A refused announcement is tried again later; once a newer one (or a withdrawal) came, that retry
    would swap in a version nobody serves any more."""
    root, v1, v2 = trained
    for later in (announce(root, "live", v2, 3), announce(root, "live", None, 3)):
        watcher, reports = watched(root, announce(root, "live", v1, 1),
                                   {**announce(root, "live", v2, 2), "content_hash": "0" * 64},  # refused
                                   later)
        assert not watcher.refused and "live" not in watcher.errors
        assert watcher.wanted["live"] == later["version"]
        assert (watcher.live.version if watcher.live else None) == later["version"]
        assert [r["outcome"] for r in reports][-1] == ("serving" if later["version"] else "withdrawn")


def short_items_version(trained, tmp_path) -> tuple[Path, str]:
    """A registry holding a copy of a trained version whose items.json lost its last rows: its files hash as
    written, it loads, and its item table names rows items.json does not have."""
    root, v1, _ = trained
    staged = tmp_path / "staged"
    shutil.copytree(root / v1, staged)
    manifest = json.loads((staged / registry.MANIFEST).read_text())
    items = json.loads((staged / "items.json").read_text())
    (staged / "items.json").write_text(json.dumps(items[:3]))
    manifest = {key: value for key, value in manifest.items() if key != "content_hash"}
    manifest["version"] = "short-items"
    registry.write_version(tmp_path / "registry", staged, manifest)
    return tmp_path / "registry", "short-items"


def test_a_version_whose_item_table_outgrows_its_items_json_fails_its_trial_and_is_not_published(trained, tmp_path,
                                                                                                   capsys):
    """It would serve as "serving" and fail on every batch (IndexError), the batches ranking without it."""
    registry_dir, version = short_items_version(trained, tmp_path)
    with pytest.raises(ValueError, match="items.json holds 3"):
        Encoder.load(registry_dir, version).trial()
    watcher, reports = watched(registry_dir, announce(registry_dir, "live", version, 1))
    assert watcher.live is None and [r["outcome"] for r in reports] == ["refused"]
    code = main(["models", "publish", version, "--registry", str(registry_dir)])  # refused before a broker is asked
    assert code != 0 and "cannot serve as live, not published" in capsys.readouterr().err


def test_publishing_again_after_a_bad_control_record_reports_the_role_serving_again(trained):
    """A tombstone or a record breaking the schema is reported `refused` saying to publish the version again: once
    that is done, models.status must say the worker serves it (it went on saying `refused`)."""
    from types import SimpleNamespace

    root, v1, _ = trained
    reports: list[dict] = []

    async def report(record: dict) -> None:
        reports.append(record)

    watcher = ModelWatcher(Settings(registry_dir=str(root)), report, "w")

    async def scenario() -> None:
        for offset, (key, value) in enumerate([(b"live", orjson.dumps(announce(root, "live", v1, 1))),
                                               (b"live", None),  # a tombstone
                                               (b"live", orjson.dumps(announce(root, "live", v1, 2))),
                                               (b"live", orjson.dumps({"role": "live"})),  # breaks the schema
                                               (b"live", orjson.dumps(announce(root, "live", v1, 3)))]):
            await watcher.receive(SimpleNamespace(key=key, value=value, offset=offset))

    asyncio.run(scenario())
    assert [(r["outcome"], r["version"]) for r in reports] == [("serving", v1), ("refused", None), ("serving", v1),
                                                                ("refused", None), ("serving", v1)]
    assert watcher.live.version == v1 and not watcher.errors


def test_a_version_folder_renamed_or_copied_by_hand_is_named_and_not_served_under_another_name(trained, tmp_path,
                                                                                                  capsys):
    """The worker said it served the folder's name (models.status) and the manifest's (its status, metrics and
    recommendations); `models list` showed the manifest's name, which `models publish` then did not find."""
    root, v1, v2 = trained
    registry_dir = copied(root, tmp_path, v1)
    shutil.copytree(root / v2, registry_dir / "prod")  # an operator's alias of v2
    assert main(["models", "list", "--registry", str(registry_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"skipped: the folder prod in {registry_dir} holds model version {v2!r}" in printed
    assert not any(line.startswith(v2) for line in printed.splitlines())  # listed as a version publish cannot find
    assert registry.latest(registry_dir) == v1
    with pytest.raises(ConfigError, match=f"rename it back to {v2}"):
        Encoder.load(registry_dir, "prod")
    watcher, reports = watched(registry_dir, announce(root, "live", v2, 1) | {"version": "prod"})
    assert watcher.live is None and [r["outcome"] for r in reports] == ["refused"]


def test_publishing_a_version_in_the_other_kinds_role_says_which_option_publishes_it(trained, tmp_path, capsys):
    """It said to train or export another model, when the option was what was wrong."""
    root, v1, _ = trained
    registry_dir = copied(root, tmp_path / "registry", v1)
    staged = registry.staging_dir(registry_dir)
    for name in registry.files_of("content"):
        (staged / name).write_bytes(b"not read before the kind is")
    registry.write_version(registry_dir, staged, {"kind": "content", "version": "content-x",
                                                   "created_at": "2026-12-01T00:00:00"})
    assert main(["models", "publish", "content-x", "--registry", str(registry_dir)]) != 0
    assert "stream-app models publish content-x --content" in capsys.readouterr().err
    assert main(["models", "publish", v1, "--content", "--registry", str(registry_dir)]) != 0
    assert "publish it without --content" in capsys.readouterr().err


def test_publishing_from_a_registry_the_workers_do_not_read_is_refused_before_announcing(trained, tmp_path,
                                                                                       monkeypatch, capsys):
    """`models publish V --registry DIR` announced a version the workers then could not find; a worker started
    later took the announcement and served no encoder (helper-141 #6)."""
    root, v1, _ = trained
    other = copied(root, tmp_path / "other", v1)
    monkeypatch.setenv("STREAM_APP_REGISTRY_DIR", str(tmp_path / "workers"))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")

    def announced(*args, **kwargs):
        raise AssertionError("announced")

    monkeypatch.setattr("stream_app.stream.topics.ensure_topics", announced)
    assert main(["models", "publish", v1, "--registry", str(other)]) == 2
    said = capsys.readouterr().err
    assert f"the workers load models from {tmp_path / 'workers'} (STREAM_APP_REGISTRY_DIR), not {other}" in said
    assert "Copy the version's folder into theirs" in said


def test_publishing_an_encoder_that_knows_few_of_the_streams_recent_items_warns_of_another_catalogue(trained,
                                                                                                     monkeypatch):
    """An encoder trained on another shop's log was published without a word and recommended items this stream
    never had (helper-141 #2)."""
    from types import SimpleNamespace

    from stream_app.cli import model_commands
    from stream_app.tools import replay

    root, v1, _ = trained
    known = json.loads((root / v1 / "items.json").read_text())[:3]
    settings = Settings(registry_dir=str(root), kafka_bootstrap_servers="127.0.0.1:9")

    def tails(items):
        return lambda settings, records=200: iter([SimpleNamespace(value=orjson.dumps({"item_id": item}))
                                                   for item in items] + [SimpleNamespace(value=b"not json")])

    monkeypatch.setattr(replay, "input_tails", tails(["85123A", "71053", "22633", known[0]]))
    said = model_commands.other_catalogue(settings, v1)
    assert said.startswith(f"warning: {v1} knows the items of only 25% of the input topics' last 4 events")
    monkeypatch.setattr(replay, "input_tails", tails([*known, "new-item"]))
    assert model_commands.other_catalogue(settings, v1) is None  # a new item or two: its own stream
    monkeypatch.setattr(replay, "input_tails", tails([]))
    assert model_commands.other_catalogue(settings, v1) is None  # nothing to tell by


def test_a_starting_worker_acts_only_on_each_roles_latest_record_of_the_control_topic(trained, monkeypatch):
    """Every earlier announcement was loaded in turn at start (twelve loads of the content model where the topic
    was not compacted yet), and one of a version since deleted was logged and reported refused."""
    from contextlib import asynccontextmanager
    from types import SimpleNamespace

    from stream_app.stream import model_control

    root, v1, v2 = trained
    log = [(b"live", {**announce(root, "live", v2, 1), "content_hash": "0" * 64}),  # its files since changed
           (b"shadow", announce(root, "shadow", v2, 2)), (b"live", announce(root, "live", v1, 3)),
           (b"shadow", announce(root, "shadow", None, 4)), (b"content", None)]  # a tombstone: still said
    messages = [SimpleNamespace(key=key, value=orjson.dumps(record) if record else None, offset=offset)
                for offset, (key, record) in enumerate(log)]

    class Consumer:
        read = 0

        async def getmany(self, tp, timeout_ms):
            await asyncio.sleep(0.01)
            batch, self.read = messages[self.read:self.read + 2], min(self.read + 2, len(messages))
            return {tp: batch}

        async def position(self, tp):
            return self.read

    @asynccontextmanager
    async def topic(settings, name):
        yield Consumer(), "tp", len(messages)

    monkeypatch.setattr(model_control, "from_the_beginning", topic)
    reports: list[dict] = []

    async def report(record: dict) -> None:
        reports.append(record)

    watcher = ModelWatcher(Settings(registry_dir=str(root)), report, "w")

    async def scenario() -> None:
        ready = asyncio.Event()
        task = asyncio.ensure_future(watcher.run(ready))
        await asyncio.wait_for(ready.wait(), 30)
        task.cancel()

    asyncio.run(scenario())
    assert watcher.live.version == v1 and watcher.shadow is None and watcher.swaps == 1
    assert [(r["role"], r["outcome"], r["version"]) for r in reports] == [("live", "serving", v1),
                                                                          ("content", "refused", None)]


def test_a_version_registered_twice_says_whether_the_one_there_has_the_same_files(tmp_path):
    """Two exports of one content model at once: the second said only 'already holds version X'."""
    def stage(payload: bytes):
        staged = registry.staging_dir(tmp_path)
        for name in registry.files_of("content"):
            (staged / name).write_bytes(payload)
        return staged

    manifest = {"kind": "content", "version": "content-x", "created_at": "2026-12-01T00:00:00"}
    registry.write_version(tmp_path, stage(b"a"), manifest)
    with pytest.raises(ValueError, match="same files.*stream-app models publish content-x --content"):
        registry.write_version(tmp_path, stage(b"a"), manifest)
    with pytest.raises(ValueError, match="other files: delete that folder"):
        registry.write_version(tmp_path, stage(b"b"), manifest)


def test_a_version_whose_files_hash_right_but_are_no_model_is_one_line_and_never_served(trained, tmp_path, capsys):
    """A truncated graph, a manifest lacking its dims or with a max_len of 0, written with a matching hash: `models
    publish` and `evaluate --encoder` were onnxruntime's or a KeyError's traceback; the workers refused it already (a
    max_len of 0 they served, reading each profile's whole history)."""
    root, v1, _ = trained
    for name, spoil in (("cut-graph", lambda d, m: (d / "encoder.onnx").write_bytes(b"not an onnx graph")),
                        ("no-dims", lambda d, m: m.pop("dims")),
                        ("zero-max-len", lambda d, m: m["dims"].update(max_len=0))):
        staged = tmp_path / name
        shutil.copytree(root / v1, staged)
        manifest = {key: value for key, value in json.loads((staged / registry.MANIFEST).read_text()).items()
                    if key != "content_hash"}
        spoil(staged, manifest)
        registry.write_version(tmp_path / "registry", staged, dict(manifest, version=name))
        assert main(["models", "publish", name, "--registry", str(tmp_path / "registry")]) == 2
        assert f"model version {name} in {tmp_path / 'registry'} cannot be loaded" in capsys.readouterr().err
        assert main(["evaluate", str(OTTO_SAMPLE), "--format", "otto", "--light", "--encoder", name, "--registry",
                     str(tmp_path / "registry"), "--json", str(tmp_path / "e.json"), "--html",
                     str(tmp_path / "e.html")]) == 2
        assert "cannot be loaded" in capsys.readouterr().err and not (tmp_path / "e.json").exists()
        watcher, reports = watched(tmp_path / "registry", announce(tmp_path / "registry", "live", name, 1))
        assert watcher.live is None and [r["outcome"] for r in reports] == ["refused"]


def test_a_version_missing_from_a_relative_registry_names_the_folder_it_was_looked_for_in(tmp_path, monkeypatch):
    """An operator's trial: a worker started in /tmp read `models/registry` under /tmp and refused a version the
    operator's registry (under the clone) had, saying "not in the registry models/registry": a contradiction."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        registry.open_version("models/registry", "enc-20261201-000000-abcdef12")
    said = str(refused.value)
    assert f"models/registry ({tmp_path / 'models' / 'registry'}: a relative folder is read from where" in said
    assert "STREAM_APP_REGISTRY_DIR" in said


def test_withdrawing_with_nothing_published_announces_nothing_and_status_with_no_outcome_is_no_failure(
        make_settings, monkeypatch, capsys):
    """An operator's trial: `models withdraw` announced a withdrawal with nothing published, and `models status`
    then exited 1 for having nothing to report."""
    from stream_app.tools.consume import read_to_end

    settings = make_settings()
    for name, value in (("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers),
                        ("REDIS_URL", settings.redis_url), ("STREAM_APP_NAMESPACE", settings.namespace)):
        monkeypatch.setenv(name, value)
    assert main(["models", "withdraw", "--shadow"]) == 0
    assert "shadow: nothing is published as shadow, so nothing was withdrawn" in capsys.readouterr().out
    assert read_to_end(settings, settings.topics.model_control) == []
    assert main(["models", "status"]) == 0
    assert "no model outcome on" in capsys.readouterr().out


def test_withdrawing_a_named_version_withdraws_it_only_if_it_is_the_published_one(make_settings, trained, monkeypatch,
                                                                                capsys):
    """`models withdraw v1` withdrew whatever served in the role, v2 included, without a word about v1; `models list
    v1` and `--all` outside `status` were taken silently too."""
    from stream_app.tools.consume import read_to_end

    root, v1, v2 = trained
    settings = make_settings()
    for name, value in (("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers),
                        ("REDIS_URL", settings.redis_url), ("STREAM_APP_NAMESPACE", settings.namespace),
                        ("STREAM_APP_REGISTRY_DIR", str(root))):
        monkeypatch.setenv(name, value)
    assert main(["models", "publish", v2]) == 0
    capsys.readouterr()
    assert main(["models", "withdraw", v1]) == 2
    assert f"{v1} is not what is published as live ({v2} is): nothing was withdrawn" in capsys.readouterr().err
    assert [json.loads(r.value)["version"] for r in read_to_end(settings, settings.topics.model_control)] == [v2]
    assert main(["models", "withdraw", v2]) == 0
    assert [json.loads(r.value)["version"] for r in read_to_end(settings, settings.topics.model_control)] == [v2, None]
    capsys.readouterr()
    assert main(["models", "list", v1]) == 2 and "takes no VERSION" in capsys.readouterr().err
    assert main(["models", "list", "--all"]) == 2 and "--all is for `models status`" in capsys.readouterr().err
