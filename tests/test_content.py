"""Content: the catalogue's text vectors, the profile's interest vector and likes, content candidates,
and the evaluation rows. A bag-of-words embedder stands in for the sentence encoder here (the real
model's export and parity are tested in test_text_encoder.py; the worker path in test_content_pipeline.py)."""

import gzip
import hashlib

import numpy as np
import orjson
import pytest

from stream_app.config import Settings
from stream_app.contracts import validator
from stream_app.core.content import ContentIndex, build_index, interest_vector, item_text, update_interest
from stream_app.core.events import Event
from stream_app.core.items import InMemoryItemIndex
from stream_app.core.process import new_partition_learners, new_profile, process
from stream_app.core.profile import Profile
from stream_app.evaluate.prequential import evaluate_events
from stream_app.stream.catalogue_feed import CachedEmbedder, CatalogueFeed, index_records
from stream_app.tools.catalogue import load_catalogue

T0 = 1_700_000_000_000
DAY = 24 * 3600 * 1000


def word_vector(word: str, dim: int = 64) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
    v = np.random.default_rng(seed).normal(size=dim)
    return v / np.linalg.norm(v)


class BagOfWords:
    """Text -> normalised sum of fixed random word vectors: texts sharing words are near."""

    def __init__(self, version: str = "bow-1", dim: int = 64):
        self.version, self.dim, self.calls = version, dim, []
        self.vectors_id = version  # no files to hash: its name alone keeps its vectors

    def embed(self, texts):
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            v = sum(word_vector(w, self.dim) for w in text.lower().split())
            out[row] = v / np.linalg.norm(v)
        return out


CATALOGUE = {
    "lantern-1": "WHITE METAL LANTERN", "lantern-2": "SILVER METAL LANTERN", "lantern-3": "ZINC METAL LANTERN",
    "lantern-new": "BLACK METAL LANTERN",
    "mug-1": "RED SPOTTY MUG", "mug-2": "BLUE SPOTTY MUG", "mug-3": "PINK SPOTTY MUG",
    "bag-1": "JUMBO SHOPPER BAG", "bag-2": "JUMBO STORAGE BAG",
}


def content_index(version="bow-1") -> ContentIndex:
    return build_index(version, CATALOGUE, BagOfWords(version).embed,
                       terms=["metal lantern", "spotty mug", "jumbo bag", "lantern", "mug", "bag"])


def test_an_item_is_no_content_candidate_before_it_joined_the_catalogue():
    """A log's catalogue of a whole year would let the content sources show items nobody could buy yet."""
    from stream_app.core.recommend import recommend

    index = build_index("bow-1", CATALOGUE, BagOfWords().embed, terms=[], listed_at={"lantern-new": 5_000})
    assert "lantern-new" not in index.similar("lantern-1", 3, now_ms=4_999)
    assert "lantern-new" in index.similar("lantern-1", 3, now_ms=5_000)  # the cache keeps the two apart
    assert "lantern-new" not in index.similar("lantern-1", 3, now_ms=4_999)
    lantern = index.vector("lantern-new")
    assert "lantern-new" not in index.nearest(lantern, 8, now_ms=1_000) and len(index.nearest(lantern, 8, 1_000)) == 8
    assert len(index.nearest(lantern, 20, now_ms=1_000)) == len(CATALOGUE) - 1  # never a hidden one to fill k

    settings = Settings(ranker=False)
    profile, items = new_profile("u", settings), InMemoryItemIndex(settings)
    for ts in (1_000, 6_000):
        event = Event(f"e{ts}", "u", "lantern-1", "click", ts)
        process(profile, event, items, settings, 0, content=index)
        shown = {i["item_id"] for i in recommend(profile, event, items, settings, content=index).items}
        assert ("lantern-new" in shown) == (ts >= 5_000)

    feed = CatalogueFeed(Settings())  # a worker's: the records' listed_at reach its index
    for offset, (item_id, title) in enumerate(CATALOGUE.items()):
        record = {"item_id": item_id, "title": title, "schema_version": 1,
                  **({"listed_at": 5_000} if item_id == "lantern-new" else {})}
        feed.apply(item_id.encode(), orjson.dumps(record), offset)
    import asyncio

    asyncio.run(feed.rebuild(BagOfWords()))
    assert "lantern-new" not in feed.index.similar("lantern-1", 3, now_ms=4_999)


def test_similar_items_are_the_nearest_texts_without_the_item_itself():
    index = content_index()
    similar = index.similar("lantern-1", 3)
    assert set(similar) == {"lantern-2", "lantern-3", "lantern-new"}
    assert "lantern-1" not in index.similar("lantern-1", 8)
    assert index.similar("no-such-item", 3) == {}
    mug = index.vector("mug-1")
    assert list(index.nearest(mug, 1)) == ["mug-1"]
    assert index.nearest(mug, 3)["mug-2"] == index.cosines(["mug-2"], mug)[0][0]  # the source and the feature agree
    assert index.cosines(["mug-1", "unknown"], index.vector("mug-1"))[0].tolist() == pytest.approx([1.0, 0.0], abs=1e-3)


def test_equal_scores_list_in_item_id_order():
    index = ContentIndex("v", ["b", "a", "c"], ["x", "x", "y"], np.array([[1, 0], [1, 0], [0, 1]], np.float32))
    assert list(index.nearest(np.array([1.0, 0.0]), 2)) == ["a", "b"]


def test_the_interest_vector_follows_recent_items_and_weighs_a_late_event_by_its_age():
    index = content_index()
    lantern, mug = index.vector("lantern-1"), index.vector("mug-1")
    state = update_interest(None, lantern, 1.0, T0, 7 * DAY, "bow-1")
    state = update_interest(state, mug, 1.0, T0 + 70 * DAY, 7 * DAY, "bow-1")  # ten half-lives later
    now = interest_vector(state, "bow-1")
    assert float(now @ mug) > 0.99
    late = update_interest(state, lantern, 1.0, T0 + 1 * DAY, 7 * DAY, "bow-1")  # 69 days old: barely counts
    assert float(interest_vector(late, "bow-1") @ mug) > 0.99 and late["ts"] == state["ts"]
    fresh = update_interest(state, lantern, 1.0, T0 + 70 * DAY, 7 * DAY, "bow-1")  # as recent: half and half
    both = interest_vector(fresh, "bow-1")
    assert float(both @ mug) == pytest.approx(float(both @ lantern), abs=0.01)
    assert interest_vector(state, "bow-2") is None  # another model's space
    assert update_interest(state, lantern, 2.0, T0, 7 * DAY, "bow-2")["mass"] == 2.0  # starts over


def event(i, user, item, kind="purchase", ts=None):
    return Event(event_id=f"e{i}", user_id=user, item_id=item, type=kind, ts=T0 + i * 1000 if ts is None else ts,
                 stage="order" if kind == "purchase" else None)


def test_an_item_nobody_touched_is_recommended_by_its_text_with_the_reason_in_words():
    settings = Settings(ranker=False)
    items = InMemoryItemIndex(settings)
    index = content_index()
    profile = new_profile("u1", settings)
    outcome = None
    for i, item in enumerate(["lantern-1", "lantern-2"]):
        outcome = process(profile, event(i, "u1", item), items, settings, now_ms=0, content=index)
    shown = {r["item_id"]: r["reasons"] for r in outcome.recommendation["items"]}
    assert "lantern-new" in shown  # never bought by anyone: only its text brings it
    assert "similar to SILVER METAL LANTERN" in shown["lantern-new"]
    assert outcome.recommendation["model"]["content"] == "bow-1"
    likes = profile.to_dict()["likes"]  # named when the profile is written
    assert likes[0] in ("metal lantern", "lantern") and profile.likes == likes
    assert "mug" not in " ".join(likes[:2])
    without = process(new_profile("u2", settings), event(9, "u2", "lantern-1"), items, settings, now_ms=0)
    assert "lantern-new" not in {r["item_id"] for r in without.recommendation["items"]}


def test_an_item_is_embedded_again_only_when_its_text_or_the_model_changes():
    import asyncio

    settings = Settings()
    feed = CatalogueFeed(settings)
    for offset, (item_id, title) in enumerate(CATALOGUE.items()):
        feed.apply(item_id.encode(), orjson.dumps({"item_id": item_id, "title": title, "schema_version": 1}), offset)
    feed.apply(b"bad", b'{"item_id": "bad"}', 99)  # no title: counted, skipped
    # keyed by another id: its tombstone could never remove it, and compaction would keep it beside the item's own
    feed.apply(b"k1", orjson.dumps({"item_id": "i9", "title": "GREEN LAMP", "schema_version": 1}), 98)
    feed.apply(None, orjson.dumps({"item_id": "i8", "title": "BLUE LAMP", "schema_version": 1}), 97)
    assert feed.invalid == 3 and "i9" not in feed.texts and "i8" not in feed.texts
    model = BagOfWords("bow-1")
    asyncio.run(feed.rebuild(model))
    terms = feed.index.terms
    assert "metal lantern" in terms and "spotty mug" in terms  # in two titles or more of a small catalogue
    assert len(feed.index) == len(CATALOGUE) and feed.embedder.embedded == len(CATALOGUE) + len(terms)
    asyncio.run(feed.rebuild(model))  # nothing changed: no rebuild, nothing embedded
    first = feed.embedder.embedded
    assert len(model.calls) == 2  # the items, the terms
    feed.apply(b"mug-1", orjson.dumps({"item_id": "mug-1", "title": "RED SPOTTY JUG", "schema_version": 1}), 100)
    feed.apply(b"mug-2", orjson.dumps({"item_id": "mug-2", "title": "BLUE SPOTTY MUG", "schema_version": 1}), 101)
    asyncio.run(feed.rebuild(model))
    assert model.calls[-1] == ["RED SPOTTY JUG"] and feed.embedder.embedded == first + 1  # the changed text only
    assert feed.index.titles["mug-1"] == "RED SPOTTY JUG"
    other = BagOfWords("bow-2")
    asyncio.run(feed.rebuild(other))
    assert feed.index.version == "bow-2" and len(other.calls[0]) == len(CATALOGUE)  # a new model: all again
    feed.apply(b"bag-1", None, 102)  # a tombstone: the item left the catalogue
    asyncio.run(feed.rebuild(other))
    assert "bag-1" not in feed.index.row_of
    assert feed.withdrawn == {"bag-1"} and feed.status()["withdrawn"] == 1  # never shown (the worker's index)
    feed.apply(b"bag-1", orjson.dumps({"item_id": "bag-1", "title": "JUMBO BAG", "schema_version": 1}), 103)
    assert feed.withdrawn == set()  # listed again
    # the same name published again after a change of its files (its publish refused until then): other vectors
    changed = BagOfWords("bow-2", dim=32)
    changed.vectors_id = "bow-2@another-hash"
    asyncio.run(feed.rebuild(changed))
    assert len(changed.calls[0]) == len(feed.texts) and feed.index.dim == 32  # not the old vectors


def test_cached_embedder_returns_rows_in_the_order_asked():
    model, cache = BagOfWords(), CachedEmbedder()
    texts = ["JUMBO SHOPPER BAG", "RED SPOTTY MUG", "JUMBO SHOPPER BAG"]
    rows = cache.embed(model, texts)
    assert np.allclose(rows, model.embed(texts)) and cache.embedded == 2


def test_catalogue_files_are_read_as_published_and_bad_records_rejected_with_their_line(tmp_path):
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text('{"item_id": "a", "title": "WHITE METAL LANTERN", "price": 3.75, "schema_version": 1}\n'
                     '{"item_id": "b", "schema_version": 1}\n'
                     '{not json\n'
                     '{"item_id": "c", "title": "TEA CUP", "description": "Bone china.", "schema_version": 1}\n')
    items, rejected = load_catalogue(jsonl, "jsonl")
    assert sorted(items) == ["a", "c"] and item_text(items["c"]) == "TEA CUP. Bone china."
    assert [(r.line, r.rejection.reason) for r in rejected] == [(2, "schema_violation"), (3, "invalid_json")]
    csv_file = tmp_path / "items.csv"
    csv_file.write_text("item_id,title,price,category_path\nx,ZINC LANTERN,2.5,home > lighting\ny,,1,\n")
    items, rejected = load_catalogue(csv_file, "csv")
    assert items["x"]["category_path"] == ["home", "lighting"] and items["x"]["price"] == 2.5
    assert [r.line for r in rejected] == [3]  # an empty title
    retail = tmp_path / "retail.csv.gz"
    rows = ["InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country",
            "1,71053,WHITE METAL LANTERN,6,2010-12-01 08:26,3.39,17850,UK",
            "2,71053,WHITE METAL LANTERN,6,2010-12-01 08:28,3.39,17850,UK",
            "3,71053,damaged,-6,2010-12-01 08:29,0,,UK",
            "4,71053,METAL LANTERN WHITE,1,2010-12-02 08:26,3.75,13047,UK",
            "5,POST,POSTAGE,1,2010-12-02 08:26,18,13047,UK"]
    retail.write_bytes(gzip.compress("\n".join(rows).encode()))
    items, rejected = load_catalogue(retail, "online-retail")
    assert items == {"71053": {"item_id": "71053", "title": "WHITE METAL LANTERN", "price": 3.39, "schema_version": 1,
                               "listed_at": 1291191960001}}  # just after its first line, 2010-12-01 08:26: not
    # beside the lines of its own first basket, which share that minute (it would be the next line's answer)


def family_log():
    """Thirty families of eight items whose titles share the family's word; each user buys three items
    of one family. Early in the log a family's items are new (cold): only their text links them."""
    rng = np.random.default_rng(3)
    catalogue = {f"f{f}-{n}": f"FAMILY{f} MODEL{f}{n}" for f in range(30) for n in range(8)}
    events = []
    for user in range(150):
        family = user % 30
        for n in rng.choice(8, size=3, replace=False):
            events.append({"event_id": f"e{len(events)}", "user_id": f"u{user}", "item_id": f"f{family}-{n}",
                           "type": "purchase", "stage": "order", "ts": T0 + len(events) * 60_000,
                           "schema_version": 1})
    return events, catalogue


def test_evaluation_rows_with_and_without_content_and_cold_start_recall():
    events, catalogue = family_log()
    index = build_index("bow-1", catalogue, BagOfWords("bow-1").embed)
    result = evaluate_events(events, Settings(), k=5, content=index, light=True)
    models = result["models"]
    assert {"stream-app", "stream-app, no content", "content only, then popular"} <= set(models)
    cold = {name: m["cold_start"] for name, m in models.items()}
    assert len({c["judged"] for c in cold.values()}) == 1 and cold["stream-app"]["judged"] > 0
    assert cold["stream-app"]["recall@5"] > 2 * cold["stream-app, no content"]["recall@5"]
    assert models["stream-app"]["recall@5"] > models["stream-app, no content"]["recall@5"]
    assert result["content"] == {"version": "bow-1", "items": len(catalogue), "terms": len(index.terms)}


def test_every_profile_field_survives_the_changelog_round_trip():
    """A worker reloads profiles from their changelog record between batches; `evaluate` keeps them
    in memory: a field lost on the way makes the two disagree."""
    import dataclasses

    from stream_app.core.profile import Profile

    settings = Settings()
    index = content_index()
    profile = new_profile("u1", settings)
    learners = new_partition_learners(settings, 0)
    for i, item in enumerate(["lantern-1", "mug-1", "lantern-2"]):
        process(profile, Event.from_dict({**event(i, "u1", item).to_dict(), "category": "home"}),
                InMemoryItemIndex(settings), settings, now_ms=0, learners=learners, content=index)
    # what these three events leave unset
    profile.shown_strategy, profile.shadow_shown, profile.encoder_version = "new:ranker", ["mug-2"], "enc-1"
    profile.embedding, profile.dedupe_floor = [0.5, -0.25], T0 - 1
    assert profile.shown_rows is not None and profile.shown_features is None  # made, not written yet
    internal, public = profile.snapshots()
    written = orjson.loads(internal)
    assert orjson.loads(Profile.from_json(internal).to_json()) == written
    for f in dataclasses.fields(Profile):
        # the learner objects in use are written as learner_state and stats; rejected_state is reported
        # (dead letters) in the batch that read it, never stored; shown_rows are written as shown_features,
        # likes_from as likes
        if f.name not in ("learners", "rejected_state", "shown_rows", "likes_from"):
            assert f.name in written, f"{f.name} is not written"
            assert written[f.name] not in (None, [], {}, ""), f"{f.name} left empty: the test proves nothing"
    validator("profile")(orjson.loads(public))
    validator("profile")(orjson.loads(internal))


def test_ties_at_the_kth_place_are_broken_by_item_id():
    """argpartition picks any of the rows tied at the cut: the list must not depend on which."""
    ids = [f"i{n:04d}" for n in range(300)]
    vectors = np.array([[1.0, 0.0] if n % 3 else [0.0, 1.0] for n in range(300)], np.float32)
    index = ContentIndex("v", ids, ["t"] * 300, vectors)
    found = index.nearest(np.array([1.0, 0.0]), 20)
    assert list(found) == [i for n, i in enumerate(ids) if n % 3][:20]


def test_the_float32_scan_lists_exactly_the_items_a_float64_scan_lists():
    """The catalogue is scanned in float32 and a shortlist rescored in float64: the shortlist must be wide enough
    for float32's error, or an item at the k-th place could be lost. Near-duplicate vectors (cosines apart by less
    than float32 resolves) and items hidden by listing time are the hard cases."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal((10, 64))
    # clusters of 30 rows whose cosines with their centre differ by about float32's resolution, or a little more
    rows = np.concatenate([np.repeat(base, 30, axis=0) + rng.standard_normal((300, 64)) * scale
                           for scale in (3e-7, 3e-6)] + [rng.standard_normal((200, 64))])
    vectors = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"i{n:03d}" for n in range(len(rows))]
    listed_at = [None if n % 5 else n * 10 for n in range(len(rows))]
    index = ContentIndex("v", ids, ids, vectors, listed_at=listed_at)
    exact64 = vectors.astype(np.float64)

    def brute(vector, k, now_ms, exclude=None):
        scores = np.round(np.sum(exact64 * vector, axis=1), 9)  # as the index rescores: the test is of the shortlist
        ranked = sorted((n for n in range(len(ids)) if n != exclude and (listed_at[n] is None or listed_at[n] <= now_ms)),
                        key=lambda n: (-scores[n], ids[n]))[:k]
        return {ids[n]: float(scores[n]) for n in ranked}

    for trial in range(60):
        target = base[trial % 10] + rng.standard_normal(64) * 1e-3 if trial < 40 else rng.standard_normal(64)
        vector = target / np.linalg.norm(target)
        k, now_ms = int(rng.integers(1, 60)), float(rng.choice([np.inf, 2_000.0, 0.0]))
        assert index.nearest(vector, k, now_ms) == pytest.approx(brute(vector, k, now_ms), abs=2e-9)
        assert list(index.nearest(vector, k, now_ms)) == list(brute(vector, k, now_ms))
        row = trial * 7 % len(ids)
        assert list(index.similar(ids[row], k, now_ms)) == list(brute(exact64[row], k, now_ms, exclude=row))


def test_an_item_whose_text_got_no_vector_is_not_in_the_index_nor_similar_to_anything():
    """A zero row (the model failed on the text, or the tokenizer knows no word of it: emoji, another script) is at
    cosine 0 with every item: kept in the index, the first items by id were "similar to" it, with that reason."""

    class NoWordsFor(BagOfWords):
        def embed(self, texts):
            out = super().embed([t if "🎁" not in t else "placeholder" for t in texts])
            out[["🎁" in t for t in texts]] = 0.0  # as TextEncoder gives a text of [UNK] only
            return out

    catalogue = {**CATALOGUE, "gift": "🎁🎄"}
    index = build_index("bow-1", catalogue, NoWordsFor().embed, terms=[])
    assert index.vector("gift") is None and "gift" not in index.row_of and len(index) == len(CATALOGUE)
    assert index.similar("gift", 3) == {}
    assert "gift" not in index.similar("mug-1", 20)
    settings = Settings(ranker=False)
    profile, items = new_profile("u", settings), InMemoryItemIndex(settings)
    outcome = process(profile, event(1, "u", "gift", "click"), items, settings, 0, content=index)
    reasons = [r for item in outcome.recommendation["items"] for r in item["reasons"]]
    assert not any(r.startswith("similar to") for r in reasons), reasons
    assert profile.content_interest is None  # no interest state made of a zero vector


def test_an_item_whose_vector_is_not_finite_is_not_in_the_index_and_its_users_records_read_back():
    """A NaN row was kept: a user's interest took it in with a NaN mass, the profile's JSON wrote it as null, and
    every later event of the user failed on the record read back (a worker that kept the profile as an object,
    profile_cache.py, went on with the NaN instead)."""

    class NanFor(BagOfWords):
        def embed(self, texts):
            out = super().embed(texts)
            out[["broken" in t for t in texts]] = np.nan
            return out

    catalogue = {**CATALOGUE, "odd": "broken lantern"}
    index = build_index("bow-1", catalogue, NanFor().embed, terms=[])
    assert index.vector("odd") is None and len(index) == len(CATALOGUE)
    settings = Settings(ranker=False)
    profile, items = new_profile("u", settings), InMemoryItemIndex(settings)
    for n, item in enumerate(["mug-1", "odd", "lantern-1"]):
        profile = Profile.from_json(profile.to_json())  # as a worker reads it each batch
        outcome = process(profile, event(n + 1, "u", item, "click"), items, settings, 0, content=index)
        assert outcome.applied
    assert np.isfinite(interest_vector(profile.content_interest, index.version)).all()


def test_the_similar_to_reason_names_the_item_by_its_title_not_its_description():
    """The text embedded is the title and the description; the reason names the item just seen by its title."""
    import asyncio

    records = {item_id: {"item_id": item_id, "title": title, "schema_version": 1} for item_id, title in CATALOGUE.items()}
    records["lantern-2"]["description"] = "A tall  lantern in brushed silver.\nHolds one candle."
    feed = CatalogueFeed(Settings())
    for offset, record in enumerate(records.values()):
        feed.apply(record["item_id"].encode(), orjson.dumps(record), offset)
    asyncio.run(feed.rebuild(BagOfWords()))
    indexes = {"worker": feed.index, "evaluate": index_records(BagOfWords(), records)}
    settings = Settings(ranker=False)
    for where, index in indexes.items():
        assert index.titles["lantern-2"] == "SILVER METAL LANTERN", where
        profile, items = new_profile("u", settings), InMemoryItemIndex(settings)
        outcome = process(profile, event(1, "u", "lantern-2", "click"), items, settings, 0, content=index)
        reasons = {r for item in outcome.recommendation["items"] for r in item["reasons"] if r.startswith("similar")}
        assert reasons == {"similar to SILVER METAL LANTERN"}, (where, reasons)
    # the title alone changing (the text embedded the same) renames the item
    moved = {**records["lantern-2"], "title": "SILVER METAL LANTERN. A tall lantern in brushed silver",
             "description": "Holds one candle."}
    text = feed.texts["lantern-2"]
    feed.apply(b"lantern-2", orjson.dumps(moved), 99)
    assert feed.texts["lantern-2"] == text  # the same text: only the title tells the record changed
    asyncio.run(feed.rebuild(BagOfWords()))
    assert feed.index.titles["lantern-2"] == "SILVER METAL LANTERN. A tall lantern in brushed silver"


def test_a_rebuild_after_one_changed_title_reads_no_other_title_and_keeps_the_terms_evaluate_finds(monkeypatch):
    """A title changing must not cost a pass over the catalogue in Python (hashing every text, counting the terms
    of every title) while the batch loop waits for the GIL; the terms kept up to date are those of all the texts."""
    import asyncio

    from stream_app.core import content
    from stream_app.stream import catalogue_feed

    feed = CatalogueFeed(Settings())
    titles = {f"i{n:03d}": f"{colour} {thing} {n}" for n, (colour, thing) in
              enumerate((c, t) for c in ("CREAM", "IVORY", "SILVER") for t in ("LANTERN", "CANDLE HOLDER", "TEA CUP"))}
    for offset, (item_id, title) in enumerate(titles.items()):
        feed.apply(item_id.encode(), orjson.dumps({"item_id": item_id, "title": title, "schema_version": 1}), offset)
    model = BagOfWords()
    asyncio.run(feed.rebuild(model))
    hashed = []
    monkeypatch.setattr(catalogue_feed, "text_hash", lambda text, version: hashed.append(text) or f"{version}:{text}")

    def whole_catalogue(*args, **kwargs):
        raise AssertionError("the terms were counted over the whole catalogue again")

    monkeypatch.setattr(content, "catalogue_terms", whole_catalogue)
    feed.apply(b"i000", orjson.dumps({"item_id": "i000", "title": "IVORY TEA CUP 0", "schema_version": 1}), 50)
    feed.apply(b"i004", None, 51)  # a tombstone
    feed.apply(b"i009", orjson.dumps({"item_id": "i009", "title": "GOLD LANTERN", "schema_version": 1}), 52)
    asyncio.run(feed.rebuild(model))
    unchanged = {title for item_id, title in titles.items() if item_id not in ("i000", "i004", "i009")}
    assert {"GOLD LANTERN", "IVORY TEA CUP 0"} <= set(hashed) and not unchanged & set(hashed)
    assert set(hashed) - {"GOLD LANTERN", "IVORY TEA CUP 0"} <= set(feed.index.terms)  # terms new to the catalogue
    monkeypatch.undo()
    texts = [feed.texts[i] for i in sorted(feed.texts)]
    assert feed.index.terms == content.catalogue_terms(texts, min_items=content.term_floor(len(texts)))
    assert "tea cup" in feed.index.terms and "gold" not in feed.index.terms  # in one title only
    assert feed.index.similar("i009", 1)  # the new title's vector is there


def test_no_similar_to_reason_for_a_candidate_whose_text_is_unrelated():
    """The nearest texts of a niche item may all be below the similarity floor (content_last 0 for them): they are
    candidates, but a "similar to" reason would be false."""
    index = ContentIndex("v", ["a", "b", "c"], ["CANDLE", "MUG", "LAMP"],
                         np.array([[1.0, 0.0, 0.0], [0.2, 0.98, 0.0], [0.8, 0.0, 0.6]], np.float32))
    settings = Settings(ranker=False)
    profile, items = new_profile("u", settings), InMemoryItemIndex(settings)
    outcome = process(profile, event(1, "u", "a", "click"), items, settings, 0, content=index)
    reasons = {item["item_id"]: item["reasons"] for item in outcome.recommendation["items"]}
    assert "similar to CANDLE" in reasons["c"] and "like what you look at" in reasons["c"]  # cosine 0.8
    assert reasons["b"] == ["text loosely related to CANDLE"]  # cosine 0.2: said as it is, not left without a reason


def test_the_scan_timing_command_reports_both_scans_and_float32_vectors():
    """`stream-app content bench --scan-items N`: docs/item-text.md's cost per event at a catalogue's size comes from it."""
    from stream_app.tools.content_scan import time_scans

    times = time_scans(4_000, 32, repeats=3)
    assert times.interest_ms > 0 and times.similar_ms > 0
    assert times.vector_mib == pytest.approx(4_000 * 32 * 4 / 2**20)  # float32: half of what float64 held
    assert "4,000 items of 32 dimensions" in times.line()


def test_a_round_told_ahead_scans_the_catalogue_once_per_chunk_and_lists_the_same():
    """A worker tells the index its round's scans (`expected_scans`): one matrix product reads the catalogue for
    up to EXPECT_CHUNK of them. The lists must be those of scanning each vector alone."""
    from stream_app.core.content import EXPECT_CHUNK, quantised
    from stream_app.core.process import expected_scans

    rng = np.random.default_rng(3)
    ids = [f"i{n:03d}" for n in range(500)]
    vectors = quantised(rng.standard_normal((500, 16)))
    kinds = ["browse", "click", "purchase"]
    events = [Event(f"e{n}", f"u{n % 7}", ids[int(rng.integers(0, 500))], kinds[n % 3], 60_000 * n)
              for n in range(150)]
    events.insert(40, events[30])  # a duplicate: its guess misses, nothing else may

    def run(told: bool) -> tuple[list, int]:
        index = ContentIndex("v", ids, ids, vectors, listed_at=[None if n % 4 else 3_000_000 for n in range(500)])
        settings = Settings(ranker=False)
        items, profiles, lists = InMemoryItemIndex(settings), {}, []
        if told:
            index.expect(expected_scans(events, profiles.get, index, settings))
        for event in events:
            profile = profiles.setdefault(event.user_id, new_profile(event.user_id, settings))
            outcome = process(profile, event, items, settings, 0, content=index)
            lists.append(outcome.recommendation["items"] if outcome.recommendation else None)
        return lists, index.scans

    alone, scans_alone = run(told=False)
    told, scans_told = run(told=True)
    assert told == alone and sum(1 for found in alone if found) > 100
    assert scans_alone > 200
    assert scans_told <= -(-2 * len(events) // EXPECT_CHUNK) + 2, scans_told


def test_the_status_says_through_which_items_record_the_lists_see_the_catalogue():
    """`items load --wait` waits for `indexed_through` in every worker: the offset of the last record whose text
    is in the index the lists are made with, not merely read (a worker read a changed title seconds before
    its rebuild swapped it in)."""
    import asyncio

    feed = CatalogueFeed(Settings())
    for offset, (item_id, title) in enumerate(CATALOGUE.items()):
        feed.apply(item_id.encode(), orjson.dumps({"item_id": item_id, "title": title, "schema_version": 1}), offset)
    last = len(CATALOGUE) - 1
    assert feed.status()["indexed_through"] == -1  # read, not embedded
    model = BagOfWords("bow-1")
    asyncio.run(feed.rebuild(model))
    assert feed.status()["indexed_through"] == last
    feed.apply(b"mug-1", orjson.dumps({"item_id": "mug-1", "title": "RED SPOTTY JUG", "schema_version": 1}), last + 1)
    assert feed.status()["indexed_through"] == last and feed.index.titles["mug-1"] != "RED SPOTTY JUG"
    asyncio.run(feed.rebuild(model))
    assert feed.status()["indexed_through"] == last + 1 and feed.index.titles["mug-1"] == "RED SPOTTY JUG"
    feed.apply(b"bad", b'{"item_id": "bad"}', last + 2)  # changes no text: seen once the feed has caught up
    asyncio.run(feed.rebuild(model))
    assert feed.status()["indexed_through"] == last + 2
    feed.apply(b"mug-2", None, last + 3)
    asyncio.run(feed.rebuild(None))  # no content model: a record counts once read
    assert feed.status()["indexed_through"] == last + 3


def test_a_scan_bench_larger_than_the_memory_available_is_refused_with_what_it_needs(monkeypatch):
    """A review: `content bench --scan-items 1000000` ended in numpy's MemoryError traceback under a 3 GB limit."""
    import pytest

    from stream_app.errors import StreamAppError
    from stream_app.tools import content_scan

    monkeypatch.setattr(content_scan, "available_bytes", lambda: 2**30)
    with pytest.raises(StreamAppError, match=r"--scan-items 1,000,000 needs about 4\.5 GiB at 384 dimensions and "
                                             r"1\.0 GiB is available"):
        content_scan.time_scans(1_000_000, 384)
    assert content_scan.time_scans(1_000, 384, repeats=2).items == 1_000  # what fits runs
