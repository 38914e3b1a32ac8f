"""The deep sequence encoder: training and export (torch), parity with onnxruntime, the registry,
cold start, and a hot swap in a live worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch  # the test command installs the train extra
from conftest import OTTO_SAMPLE, wait_until
from fastjsonschema import JsonSchemaException
from kafka import TopicPartition

from stream_app.config import Settings
from stream_app.contracts import validator
from stream_app.core.events import Event
from stream_app.core.items import InMemoryItemIndex
from stream_app.core.process import new_profile, process
from stream_app.core.sequences import Featurizer
from stream_app.errors import ConfigError
from stream_app.serving import registry
from stream_app.serving.encoder import Encoder, encode_batch
from stream_app.store.redis_store import read_profile, worker_statuses
from stream_app.stream.model_control import publish
from stream_app.tools.consume import committed_offsets
from stream_app.tools.recorded import load_sorted
from stream_app.tools.replay import produce_events
from stream_app_train.export import export_onnx, torch_encode
from stream_app_train.model import SequenceEncoder


def announce(root: Path, role: str, version: str | None, at: int) -> dict:
    """A control record as `stream-app models publish` writes it (with the version's content hash)."""
    digest = registry.open_version(root, version)[1]["content_hash"] if version else None
    return {"role": role, "version": version, "content_hash": digest, "published_at": at}


def otto_sequences(max_len: int = 20) -> list[list[tuple[str, str, int]]]:
    events, _ = load_sorted(OTTO_SAMPLE, "otto")
    history: dict[str, list] = {}
    out = []
    for e in events:
        steps = history.setdefault(e["user_id"], [])
        steps.append((e["item_id"], e["type"], e["ts"]))
        out.append(list(steps[-max_len:]))
    return out[::7]


def test_onnxruntime_matches_torch_on_random_and_real_sequences(tmp_path):
    import onnxruntime as ort

    from stream_app.core.sequences import Featurizer

    torch.manual_seed(3)
    encoder = SequenceEncoder(buckets=1 << 12, dim=16, hidden=32)
    export_onnx(encoder, tmp_path / "encoder.onnx")
    session = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    featurizer = Featurizer(1 << 12, 20)
    rng = np.random.default_rng(0)
    random_sequences = [[(f"i{rng.integers(10_000)}", ["browse", "click", "purchase"][rng.integers(3)],
                          int(t)) for t in np.cumsum(rng.integers(0, 10**7, size=rng.integers(1, 25)))]
                        for _ in range(64)]
    for sequences in (random_sequences, otto_sequences(), [[("only", "click", 0)]]):
        arrays = featurizer.arrays(sequences)
        expected = torch_encode(encoder, arrays).numpy()
        got = session.run(["user"], arrays)[0]
        assert got.shape == (len(sequences), 16)
        assert np.abs(got - expected).max() <= 1e-4


def test_registry_round_trip(trained):
    root, v1, v2 = trained
    listed = registry.versions(root)
    assert [m["version"] for m in listed] == [v1, v2] and registry.latest(root) == v2
    folder, manifest = registry.open_version(root, v1)
    for key in ("version", "content_hash", "dims", "training", "validation", "created_at"):
        assert key in manifest
    assert manifest["training"]["fingerprint"] and len(manifest["training"]["fingerprint"]) == 64
    assert set(manifest["validation"]) >= {"recall@20", "mrr@20"}
    encoder = Encoder.load(root, v1)
    items = np.load(folder / "items.npy")
    assert items.shape == (len(encoder.item_ids), manifest["dims"]["embedding"])
    batch = encoder.encode(otto_sequences()[:5])
    assert batch.user.shape == (5, manifest["dims"]["embedding"]) and np.isfinite(batch.user).all()
    # the graph's own retrieval is the exact top of the item table
    scores = batch.user @ items.T
    k = manifest["retrieve"]
    assert batch.top_items.shape == (5, k)
    for row in range(5):
        assert set(batch.top_items[row]) == set(np.argsort(-scores[row])[:k])
        assert np.allclose(batch.top_scores[row], np.sort(scores[row])[::-1][:k], atol=1e-4)
        assert batch.mean[row] == pytest.approx(scores[row].mean(), abs=1e-4)
    assert 0.0 <= manifest["validation"]["recall@20"] <= 1.0 and manifest["validation"]["examples"] > 0
    # a user's figures do not depend on the batch it came in (a worker's batches are not evaluate's): the graph's
    # mean over the table changed in its last bits with the batch's size, and the shares the ranker reads with it
    sequences = otto_sequences()[:64]
    together = encoder.encode(sequences)
    for row, sequence in enumerate(sequences):
        alone = encoder.encode([sequence])
        assert alone.mean[0] == together.mean[row] and (alone.top_scores[0] == together.top_scores[row]).all()

    tampered = Path(root) / "tampered"
    subprocess.run(["cp", "-r", str(folder), str(tampered)], check=True)
    (tampered / "items.json").write_text(json.dumps(list(reversed(encoder.item_ids))))
    manifest_text = (tampered / "manifest.json").read_text().replace(v1, "tampered")
    (tampered / "manifest.json").write_text(manifest_text)
    with pytest.raises(ConfigError, match="content hash"):
        registry.open_version(root, "tampered")
    with pytest.raises(ConfigError, match="not in the registry"):
        registry.open_version(root, "no-such-version")
    subprocess.run(["rm", "-r", str(tampered)], check=True)


def run_events(events, settings, encoder, profiles=None, index=None):
    """The core as a worker runs it: one encoder call per batch, then every event."""
    profiles = {} if profiles is None else profiles
    index = index or InMemoryItemIndex(settings)
    for user_id in {e.user_id for e in events}:
        profiles.setdefault(user_id, new_profile(user_id, settings))
    encodings = encode_batch(encoder, events, profiles.get, settings.encoder_candidates)
    outcomes = [process(profiles[e.user_id], e, index, settings, 0, encoding=encoding)
                for e, encoding in zip(events, encodings)]
    return profiles, index, outcomes


def test_a_brand_new_user_gets_encoder_recommendations_from_the_first_event(trained):
    root, v1, _ = trained
    encoder = Encoder.load(root, v1)
    settings = Settings()
    profiles, _, outcomes = run_events([Event("e1", "newcomer", encoder.item_ids[0], "click", 1000)], settings,
                                       encoder)
    rec = outcomes[0].recommendation
    assert rec["model"]["encoder"] == v1
    assert any("similar to your recent items" in item["reasons"] for item in rec["items"])
    assert profiles["newcomer"].encoder_version == v1 and len(profiles["newcomer"].embedding) == 16


def test_a_bad_announcement_never_stops_or_changes_what_serves(trained, tmp_path):
    import asyncio

    from stream_app.stream.model_control import ModelWatcher

    root, v1, _ = trained
    watcher = ModelWatcher(Settings(registry_dir=str(root)))

    async def scenario():
        await watcher.apply(announce(root, "live", v1, 1))
        await watcher.apply(announce(root, "canary", v1, 2))  # not a role
        await watcher.apply({"role": "live", "version": "no-such-version", "content_hash": "0" * 64, "published_at": 3})
        await watcher.apply(["not", "an", "object"])

    asyncio.run(scenario())
    assert watcher.live.version == v1 and watcher.swaps == 1
    assert "no-such-version" in watcher.errors["live"] and "control" in watcher.errors
    with pytest.raises(JsonSchemaException):
        validator("model-control")({"role": "live", "version": "", "published_at": 1})


def test_workers_never_import_torch():
    code = ("import sys, stream_app.stream.worker, stream_app.evaluate.prequential, stream_app.evaluate.via_kafka, "
            "stream_app.serving.encoder, stream_app.cli.main; sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_hot_swap_during_a_live_replay_loses_nothing(trained, make_settings, start_worker, redis_client, capsys):
    root, v1, v2 = trained
    settings = make_settings(registry_dir=str(root))
    publish(settings, "live", v1)
    worker = start_worker(settings)
    events, _ = load_sorted(OTTO_SAMPLE, "otto")
    half = len(events) // 2
    produce_events(settings, events[:half], rate=400)
    inputs = [TopicPartition(t, p) for t in settings.topics.inputs for p in range(settings.partitions)]
    wait_until(lambda: sum(committed_offsets(settings, inputs).values()) == half, 60,
               "the worker to commit the first half")

    def status():
        found = [s for s in worker_statuses(redis_client, settings.namespace) if s["pid"] == worker.pid]
        return found[0] if found else None

    publish(settings, "live", v2)  # mid-stream: the worker keeps running and swaps between batches
    publish(settings, "shadow", v1)
    wait_until(lambda: (status() or {}).get("models", {}).get("live") == v2, 30, "the worker to swap models")
    produce_events(settings, events[half:], rate=None)
    wait_until(lambda: sum(committed_offsets(settings, inputs).values()) == len(events), 60,
               "the worker to commit every event")

    from test_pipeline import read_all

    recs = [orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap_servers,
                                                    settings.topics.recommendations, len(events))]
    assert sorted(r["trigger_event_id"] for r in recs) == sorted(e["event_id"] for e in events)
    by_trigger = {r["trigger_event_id"]: r["model"].get("encoder") for r in recs}
    versions = [by_trigger[e["event_id"]] for e in events]
    # the shadow (v1 after the swap) is never what was published
    assert versions == [v1] * half + [v2] * (len(events) - half)
    late_users = {e["user_id"] for e in events[half:]}
    for user_id in late_users:
        assert read_profile(redis_client, user_id, settings.namespace)["profile"]["encoder_version"] == v2

    wait_until(lambda: (status() or {}).get("counters", {}).get("shadow_judged", 0) > 0, 30,
               "the worker to report shadow hits")
    s = status()
    assert s["models"]["live"] == v2 and s["models"]["shadow"] == v1 and s["models"]["swaps"] >= 3
    assert worker.alive()
    # the control topic as the workers read it: every record valid under its schema, in publish order
    control = [orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap_servers,
                                                        settings.topics.model_control, 3)]
    for record in control:
        validator("model-control")(record)
    assert [(r["role"], r["version"]) for r in control] == [("live", v1), ("live", v2), ("shadow", v1)]
    # and what the worker reported doing with each announcement
    reported = [orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap_servers,
                                                         settings.topics.model_status, 3)]
    for record in reported:
        validator("model-status")(record)
    assert [(r["role"], r["version"], r["outcome"]) for r in reported] == [
        ("live", v1, "serving"), ("live", v2, "serving"), ("shadow", v1, "serving")]
    assert {r["worker_id"] for r in reported} == {s["worker_id"]}
    from stream_app.cli.model_commands import print_model_status

    capsys.readouterr()
    assert print_model_status(settings) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and f"live    serving   {v2}" in lines[0] and f"shadow  serving   {v1}" in lines[1]
    # a worker that ran once and is gone (its status key expired): left out unless asked for
    from kafka import KafkaProducer

    gone = {**reported[0], "worker_id": "stream-app:gone-host:1"}
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    producer.send(settings.topics.model_status, key=b"stream-app:gone-host:1/live", value=orjson.dumps(gone)).get(30)
    producer.close()
    assert print_model_status(settings) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "gone-host" not in "".join(lines[:2])
    assert lines[2] == "(1 worker that is no longer running left out; --all shows it)"
    assert print_model_status(settings, show_all=True) == 0
    assert any("gone-host" in line for line in capsys.readouterr().out.splitlines())


def test_a_withdrawal_stops_the_role_and_clears_its_error(trained):
    import asyncio

    from stream_app.stream.model_control import ModelWatcher

    root, v1, v2 = trained
    watcher = ModelWatcher(Settings(registry_dir=str(root)))

    async def scenario():
        await watcher.apply(announce(root, "live", v1, 1))
        await watcher.apply(announce(root, "shadow", v2, 2))
        await watcher.apply({"role": "live", "version": "no-such-version", "content_hash": "0" * 64, "published_at": 3})
        await watcher.apply(announce(root, "live", None, 4))  # withdraw

    asyncio.run(scenario())
    assert watcher.live is None and "live" not in watcher.errors and watcher.wanted["live"] is None
    assert watcher.shadow.version == v2  # the other role is untouched
    assert watcher.status() == {"live": None, "shadow": v2, "content": None,
                                "wanted": {"live": None, "shadow": v2, "content": None}, "errors": {}, "swaps": 2}


def test_a_model_that_loads_but_fails_its_trial_run_never_serves(trained, monkeypatch):
    import asyncio

    from stream_app.serving.encoder import Encoder
    from stream_app.stream.model_control import ModelWatcher

    root, v1, v2 = trained
    Encoder.load(root, v1).trial()  # a sound model passes
    real_trial = Encoder.trial

    def trial(self):
        if self.version == v2:
            raise RuntimeError("onnxruntime: a node failed at run time")
        real_trial(self)

    monkeypatch.setattr(Encoder, "trial", trial)
    watcher = ModelWatcher(Settings(registry_dir=str(root)))

    async def scenario():
        await watcher.apply(announce(root, "live", v1, 1))
        await watcher.apply(announce(root, "live", v2, 2))

    asyncio.run(scenario())
    assert watcher.live.version == v1 and watcher.swaps == 1
    assert "failed at run time" in watcher.errors["live"]


def test_the_trial_runs_a_batch_of_sequences_of_several_lengths_as_rounds_hand_them(trained):
    """A graph of a fixed batch size, or one giving NaN past one step, passed a trial of one one-step sequence: the
    first failed nearly every round, the second ranked every list with NaN, both reported serving (helper-141)."""
    import numpy as np

    from stream_app.serving.encoder import Encoder

    root, v1, _ = trained
    encoder = Encoder.load(root, v1)
    real = encoder.session

    class FixedBatchOfOne:
        def run(self, names, inputs):
            if any(len(array) > 1 for array in inputs.values()):
                raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got: 4 Expected: 1")
            return real.run(names, inputs)

    class NotFinitePastTheFirst:
        def run(self, names, inputs):
            user, *rest = real.run(names, inputs)
            user = user.copy()
            user[1:] = np.nan
            return [user, *rest]

    for broken, said in ((FixedBatchOfOne(), "Expected: 1"), (NotFinitePastTheFirst(), "non-finite embeddings")):
        encoder.session = broken
        with pytest.raises((RuntimeError, ValueError), match=said):
            encoder.trial()
    encoder.session = real
    encoder.trial()


def test_a_user_whose_encoding_is_not_finite_is_ranked_without_the_encoder_and_counted(trained):
    import numpy as np

    from stream_app.core.items import InMemoryItemIndex
    from stream_app.serving.encoder import Encoder, encode_batch
    from stream_app.stream.batch import BatchHandler, Counters, PartitionState

    root, v1, _ = trained
    encoder = Encoder.load(root, v1)
    real = encoder.session

    class NaNForTheSecond:
        def run(self, names, inputs):
            user, top_items, top_scores, mean = real.run(names, inputs)
            user = user.copy()
            user[1] = np.nan
            return [user, top_items, top_scores, mean]

    encoder.session = NaNForTheSecond()
    events = [Event.from_dict({"event_id": f"e{n}", "user_id": f"u{n}", "item_id": "i1", "type": "click",
                               "ts": 1_700_000_000_000 + n, "schema_version": 1}) for n in range(3)]
    encodings = encode_batch(encoder, events, lambda user: None, 20)
    assert [encoding is None for encoding in encodings] == [False, True, False]
    settings = Settings()
    handler = BatchHandler(settings, {}, PartitionState({}, settings), InMemoryItemIndex(settings), Counters(), now=0)
    assert [e is None for e in handler.encode(encoder, [(None, event) for event in events])] == [False, True, False]
    assert handler.counters.encoder_not_finite == 1 and handler.counters.encoder_failures == 0


def test_an_announcement_with_a_path_a_wrong_hash_or_no_hash_is_refused_while_the_old_model_serves(trained, tmp_path):
    import asyncio
    import shutil

    from stream_app.stream.model_control import ModelWatcher

    source, v1, v2 = trained
    root = tmp_path / "registry"
    for version in (v1, v2):
        shutil.copytree(Path(source) / version, root / version)
    published_v2 = announce(root, "live", v2, 2)
    # Someone who can write to the registry changes v2's files after it was published and rewrites its
    # manifest to match: the registry's own check passes, the announced hash does not.
    (root / v2 / "items.json").write_text(json.dumps(["planted"] * len(json.loads((root / v2 / "items.json").read_text()))))
    manifest = json.loads((root / v2 / "manifest.json").read_text())
    manifest["content_hash"] = registry.content_hash(root / v2, manifest=manifest)
    (root / v2 / "manifest.json").write_text(json.dumps(manifest))
    registry.open_version(root, v2)  # verifies against its (rewritten) manifest
    reports: list[dict] = []

    async def report(record):
        reports.append(record)

    watcher = ModelWatcher(Settings(registry_dir=str(root)), report, "worker-a")

    async def scenario():
        await watcher.apply(announce(root, "live", v1, 1))
        await watcher.apply(published_v2)
        await watcher.apply({**published_v2, "version": f"../{root.name}/{v2}"})
        await watcher.apply({**published_v2, "content_hash": None})

    asyncio.run(scenario())
    assert watcher.live.version == v1 and watcher.swaps == 1
    for record in reports:
        validator("model-status")(record)
    assert [(r["outcome"], r["version"]) for r in reports] == [
        ("serving", v1), ("refused", v2), ("refused", f"../{root.name}/{v2}"), ("refused", v2)]
    changed, escaping, unhashed = (r["reason"] for r in reports[1:])
    assert "does not match the content hash it was announced with" in changed
    assert "not a model version name" in escaping
    assert "no content hash" in unhashed
    assert all(reason.endswith(f"still serving {v1}") for reason in (changed, escaping, unhashed))


@pytest.mark.parametrize("version", ["../outside", "/etc", "a/b", "..", ".hidden", ""])
def test_a_version_name_cannot_reach_outside_the_registry(trained, tmp_path, version):
    from stream_app.errors import ConfigError
    from stream_app.serving.registry import open_version

    root, v1, _ = trained
    outside = Path(root).parent / "outside"  # a model folder beside the registry, with a manifest
    outside.mkdir(exist_ok=True)
    (outside / "manifest.json").write_text((Path(root) / v1 / "manifest.json").read_text())
    with pytest.raises(ConfigError, match="not a model version name"):
        open_version(root, version)


def test_validation_counts_a_held_out_event_on_an_item_training_never_saw_as_a_miss(trained):
    from stream_app_train.train import build_examples

    def event(n: int, user: str, item: str) -> dict:
        return {"event_id": f"e{n}", "user_id": user, "item_id": item, "type": "click", "ts": n}

    events = [event(1, "a", "x"), event(2, "a", "y"), event(3, "b", "x"), event(4, "b", "y"),  # training part
              event(5, "a", "x"), event(6, "a", "new"), event(7, "c", "x")]  # held out: c has no history
    train_set, valid_set, unknown = build_examples(events, 5, {"x": 0, "y": 1}, Featurizer(64, 5))
    assert (len(train_set.targets), len(valid_set.targets), unknown) == (2, 1, 1)
    root, v1, _ = trained
    manifest = registry.open_version(root, v1)[1]
    validation = manifest["validation"]  # OTTO: most held-out events are on items the training part lacks
    assert validation["examples"] > validation["on_known_items"] > 0
    assert manifest["parity"]["max_abs_diff"] <= manifest["parity"]["tolerance"]


def test_an_export_that_differs_from_the_trained_model_is_not_registered(tmp_path, monkeypatch):
    import stream_app_train.train as training

    monkeypatch.setattr(training, "torch_encode", lambda encoder, arrays: torch_encode(encoder, arrays) + 0.5)
    small = training.TrainConfig(dim=8, hidden=8, epochs=1, buckets=1 << 10)
    with pytest.raises(ValueError, match="differs from the trained model by 5.00e-01"):
        training.train(OTTO_SAMPLE, "otto", tmp_path, small)
    assert registry.versions(tmp_path) == [] and not any(tmp_path.iterdir())  # no version, no staging left


def test_training_reads_the_log_as_the_workers_do_and_checks_its_registry_first(tmp_path):
    from stream_app_train.train import read_events, train

    log = tmp_path / "log.jsonl"
    events = [{"event_id": f"e{n}", "user_id": "u", "item_id": f"i{n % 3}", "type": "click", "ts": 1_000 + n,
               "schema_version": 1} for n in range(6)]
    far = {**events[0], "event_id": "far", "ts": 2_000_000_000_000}  # a clock in 2033 would stretch the split
    log.write_bytes(b"\n".join(orjson.dumps(e) for e in [*events, events[2], far]) + b"\n{broken\n")
    said: list[str] = []
    kept = read_events(log, "jsonl", lambda e: ("timestamp_out_of_range", "x") if e["ts"] > 10**12 else None,
                       said.append)
    assert [e["event_id"] for e in kept] == [e["event_id"] for e in events]
    # the count is of rejections (an OTTO line may hold several unreadable events), the first one said
    [line] = said
    assert line.startswith("train: left out 1 lines or events it cannot read (invalid_json (line 9: ")
    assert line.endswith("), ...), 1 events the workers would refuse (timestamp_out_of_range, ...), 1 repeated event ids")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file, not a folder"):  # at once, not after the training
        train(log, "jsonl", tmp_path / "file")


def test_evaluate_warns_of_an_encoder_trained_on_another_catalogue(trained):
    from stream_app.evaluate.prequential import evaluate_log
    from stream_app.evaluate.tables import table

    root, v1, _ = trained
    encoder = Encoder.load(root, v1)  # trained on the OTTO sample
    shop = Path(__file__).parents[1] / "stream_app" / "data" / "online-retail-sample.csv"
    foreign = evaluate_log(shop, "online-retail", Settings(), encoder=encoder, light=True, limit=300)
    assert foreign["encoder_log_events_known"] == 0.0
    assert "warning: it knows the item of only 0% of this log's events" in table(foreign)
    own = evaluate_log(OTTO_SAMPLE, "otto", Settings(), encoder=encoder, light=True, limit=200)  # its own log, cut
    assert own["encoder_log_events_known"] > 0.9 and "warning" not in table(own)
    assert own["judged_from_because"] == ["the encoder trained on the earlier part of this log"]


def test_evaluate_names_the_training_log_of_an_encoder_whose_time_span_overlaps_another_log(trained, tmp_path):
    """An encoder trained on another log of the same weeks cut the judged events to those after its training and
    said it had trained "on the earlier part of this log"."""
    from stream_app.evaluate.prequential import evaluate_log

    root, v1, _ = trained
    encoder = Encoder.load(root, v1)  # trained on the OTTO sample
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"".join(orjson.dumps({**event, "user_id": f"x{event['user_id']}"}) + b"\n"
                               for event in load_sorted(OTTO_SAMPLE, "otto")[0][:300]))
    result = evaluate_log(other, "jsonl", Settings(), encoder=encoder, light=True)
    training = encoder.manifest["training"]
    assert result["judged_from_because"] == [
        f"the encoder trained on {training['log']} ({training['format']}) up to then, in this log's time span: what it "
        "may hold of this log is not judged"]


def test_train_limit_takes_the_logs_first_events_in_time_as_evaluate_limit_does(tmp_path):
    """A data-team walkthrough: `train` had no --limit, so training on the events `evaluate --limit 20000` judged
    meant cutting the file by hand (and applying the Online Retail reader's rules)."""
    from stream_app.tools.sorted_log import load_accepted
    from stream_app_train.train import TrainConfig, read_events, train

    said: list[str] = []
    manifest = train(OTTO_SAMPLE, "otto", tmp_path, TrainConfig(dim=8, hidden=8, epochs=1, buckets=1 << 10, limit=300),
                     progress=said.append)
    assert any(line.startswith("train: 300 events, ") for line in said), said
    assert manifest["training"]["config"]["limit"] == 300
    first, _, _ = load_accepted(OTTO_SAMPLE, "otto", lambda event: None, 300)  # evaluate --limit's events
    assert read_events(OTTO_SAMPLE, "otto", None, said.append, 300) == first


def test_training_on_a_log_too_small_to_mean_anything_says_so_before_its_figures(tmp_path):
    """Three events trained a model on one example and reported Recall@20 1.0000 with no word of doubt."""
    from stream_app_train.train import TrainConfig, train

    log = tmp_path / "log.jsonl"
    rows = [{"event_id": f"e{n}", "user_id": "u", "item_id": f"i{n % 2}", "type": "click", "ts": 1_000 + 100 * n,
             "schema_version": 1} for n in range(3)]
    log.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    said: list[str] = []
    manifest = train(log, "jsonl", tmp_path / "registry", TrainConfig(dim=8, hidden=8, epochs=1, buckets=1 << 10),
                     progress=said.append)
    warnings = [line for line in said if line.startswith("train: warning: ")]
    assert manifest["validation"]["recall@20"] == 1.0 and len(warnings) == 2
    assert "only 1 training examples (under 1,000)" in warnings[0] and "train on a longer log" in warnings[0]
    assert "has 2 items, no more than the 20" in warnings[1]


def test_an_encoder_reading_more_steps_than_the_profiles_keep_is_refused_where_they_are_kept(trained, monkeypatch,
                                                                                              capsys):
    """With STREAM_APP_RECENT_MAX under the model's max_len a batch's sequences grew past the profile's and the next
    batch's started short again: a user's embedding depended on how the events fell into batches. `train` refuses
    such a --max-len; a worker with a smaller setting served the model anyway."""
    import asyncio

    from stream_app.cli.main import main
    from stream_app.stream.model_control import ModelWatcher

    root, v1, _ = trained  # max_len 20
    watcher = ModelWatcher(Settings(registry_dir=str(root), recent_max=5))
    asyncio.run(watcher.apply(announce(root, "live", v1, 1)))
    assert watcher.live is None and "STREAM_APP_RECENT_MAX" in watcher.errors["live"]
    monkeypatch.setenv("STREAM_APP_RECENT_MAX", "5")
    assert main(["models", "publish", v1, "--registry", str(root)]) == 2  # before a broker is asked
    assert "reads a user's last 20 events, and a profile here keeps 5" in capsys.readouterr().err
    assert main(["evaluate", str(OTTO_SAMPLE), "--format", "otto", "--light", "--encoder", v1, "--registry",
                 str(root)]) == 2
    assert "set STREAM_APP_RECENT_MAX to 20 or more" in capsys.readouterr().err
    watcher = ModelWatcher(Settings(registry_dir=str(root), recent_max=20))
    asyncio.run(watcher.apply(announce(root, "live", v1, 1)))
    assert watcher.live.version == v1


def test_training_again_on_the_same_log_and_seed_gives_the_version_the_registry_holds(tmp_path, capsys):
    """The same log, settings and seed train the same files: each run registered another version of them, and
    `models list` filled with copies no one could tell apart."""
    from stream_app_train.train import TrainConfig, train

    small = TrainConfig(dim=8, hidden=8, epochs=1, buckets=1 << 10)
    first = train(OTTO_SAMPLE, "otto", tmp_path, small)
    said: list[str] = []
    again = train(OTTO_SAMPLE, "otto", tmp_path, small, progress=said.append)
    assert again["version"] == first["version"] and again["already_registered"]
    assert [m["version"] for m in registry.versions(tmp_path)] == [first["version"]]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    assert f"train: the registry already holds these files as {first['version']}" in said[-1]
    from stream_app.cli import main

    command = ["train", str(OTTO_SAMPLE), "--format", "otto", "--registry", str(tmp_path / "cli"), "--dim", "8",
               "--hidden", "8", "--epochs", "1"]
    assert main.main(command) == 0 and capsys.readouterr().out.startswith("trained enc-")
    [version] = [m["version"] for m in registry.versions(tmp_path / "cli")]
    assert main.main(command) == 0
    assert capsys.readouterr().out.startswith(f"trained the model {version} holds (registered 20")
    other = train(OTTO_SAMPLE, "otto", tmp_path, TrainConfig(dim=8, hidden=8, epochs=1, buckets=1 << 10, seed=8))
    assert other["version"] != first["version"] and not other.get("already_registered")
    assert other["version"] in {m["version"] for m in registry.versions(tmp_path)}
    # inputs longer than every user's history train the same files, but workers build a user's input as long as
    # the manifest's max_len says: another version, not the first one's manifest
    longer = [train(OTTO_SAMPLE, "otto", tmp_path / "long", TrainConfig(dim=8, hidden=8, epochs=1, buckets=1 << 10,
                                                                          max_len=n)) for n in (400, 500)]
    assert [m["dims"]["max_len"] for m in longer] == [400, 500] and not longer[1].get("already_registered")
    assert len(registry.versions(tmp_path / "long")) == 2


def test_a_file_swapped_after_the_hash_check_is_not_what_serves(trained, monkeypatch):
    """A security review: the registry hashed a version's files, then the runtime opened them again by path, so a file
    replaced in between served under the checked hash. The loader now serves the bytes it hashed."""
    root, v1, _ = trained
    folder = Path(root) / v1
    original = (folder / "items.json").read_bytes()
    checked = json.loads(original)
    hashed = registry.content_hash

    def hash_then_swap(*args, **kwargs):
        digest = hashed(*args, **kwargs)
        (folder / "items.json").write_text(json.dumps(list(reversed(checked))))
        return digest

    monkeypatch.setattr(registry, "content_hash", hash_then_swap)
    try:
        assert Encoder.load(root, v1).item_ids == checked
    finally:
        (folder / "items.json").write_bytes(original)


def test_a_model_trained_on_another_featurisation_is_refused_at_load(trained, monkeypatch):
    """The hash salts, event kinds and gap buckets live in code: a release that changed them fed every registered
    model other inputs than it learned from, and its trial run did not notice."""
    from stream_app.core import sequences

    root, v1, _ = trained
    assert registry.open_version(root, v1)[1]["featurizer"] == sequences.featurizer_id(1 << 12)
    Encoder.load(root, v1)
    monkeypatch.setattr(sequences, "KIND_IDS", {"browse": 2, "click": 1, "purchase": 3})
    with pytest.raises(ConfigError, match="trained on another featurisation .* retrain it"):
        Encoder.load(root, v1)


def test_evaluate_serves_an_encoder_only_from_its_training_cutoff_on(trained):
    """Before its cutoff a version's outputs are in-sample fits of the events it trained on: the ranker of the
    `evaluate --encoder` rows learned the encoder feature from them, which no deployed model ever shows it."""
    from stream_app.core.ordering import rounds
    from stream_app.evaluate.models import StreamAppModel
    from stream_app.partitioning import partition_of
    from stream_app.tools.recorded import load_sorted

    root, v1, _ = trained
    encoder = Encoder.load(root, v1)
    cutoff = encoder.manifest["training"]["train_until_ts"]
    settings = Settings().replace(rec_policy="every")
    model = StreamAppModel(settings, encoder=encoder)
    served = {True: 0, False: 0}
    for epoch, released in rounds(load_sorted(OTTO_SAMPLE, "otto")[0], settings, partition_of):
        events = [Event.from_dict(r.item) for r in released]
        model.begin_batch(events, epoch)
        for event in events:
            model.learn(event)
            assert (model.last_encoding is not None) == (event.ts >= cutoff), event.ts
            served[event.ts >= cutoff] += 1
    assert served[True] and served[False]
