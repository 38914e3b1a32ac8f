"""The content encoder: all-MiniLM-L6-v2 exported to ONNX (torch, once per module) and served by
onnxruntime with the `tokenizers` package: parity with the torch model, embeddings that mean something,
no torch in a worker, the registry's kinds, batching."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch  # the test command installs the train extra
from conftest import REPO
from torch.nn import functional as F

from stream_app.cli.main import main
from stream_app.errors import ConfigError
from stream_app.serving import registry
from stream_app.serving.encoder import Encoder
from stream_app.serving.text_encoder import TextEncoder, text_hash
from stream_app_train.content_export import export_content, model_folder

# Real product titles: UCI Online Retail dataset (Daqing Chen, Sai Liang Sain, Kun Guo, 2012;
# doi:10.24432/C5BW33), CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/).
TITLES = [
    "WHITE HANGING HEART T-LIGHT HOLDER", "REGENCY CAKESTAND 3 TIER", "JUMBO BAG RED RETROSPOT", "PARTY BUNTING",
    "LUNCH BAG RED RETROSPOT", "ASSORTED COLOUR BIRD ORNAMENT", "SET OF 3 CAKE TINS PANTRY DESIGN",
    "PACK OF 72 RETROSPOT CAKE CASES", "LUNCH BAG  BLACK SKULL.", "NATURAL SLATE HEART CHALKBOARD",
    "JUMBO BAG PINK POLKADOT", "HEART OF WICKER SMALL", "JAM MAKING SET WITH JARS", "PAPER CHAIN KIT 50'S CHRISTMAS",
    "RECIPE BOX PANTRY YELLOW DESIGN", "SPOTTY BUNTING", "ROSES REGENCY TEACUP AND SAUCER",
    "GREEN REGENCY TEACUP AND SAUCER", "WOODEN PICTURE FRAME WHITE FINISH", "SET OF 4 PANTRY JELLY MOULDS",
    "ALARM CLOCK BAKELIKE RED", "ALARM CLOCK BAKELIKE GREEN", "VICTORIAN GLASS HANGING T-LIGHT",
    "RED RETROSPOT CHARLOTTE BAG", "RABBIT NIGHT LIGHT", "SET/20 RED RETROSPOT PAPER NAPKINS",
    "RETROSPOT TEA SET CERAMIC 11 PC", "BAKING SET 9 PIECE RETROSPOT", "REX CASH+CARRY JUMBO SHOPPER",
    "VINTAGE SNAP CARDS", "GARDENERS KNEELING PAD KEEP CALM", "SPACEBOY LUNCH BOX", "CHOCOLATE HOT WATER BOTTLE",
    "PLEASE ONE PERSON METAL SIGN", "RED TOADSTOOL LED NIGHT LIGHT", "RED RETROSPOT CAKE STAND",
    "KNITTED UNION FLAG HOT WATER BOTTLE", "RETROSPOT HEART HOT WATER BOTTLE", "PACK OF 60 DINOSAUR CAKE CASES",
    "SWEETHEART CAKESTAND 3 TIER", "DOORMAT RED RETROSPOT", "PIGGY BANK RETROSPOT",
]
LONG_TEXT = " ".join(TITLES * 2)  # over 256 tokens: truncated alike by both tokenizers


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, dict]:
    """One export of the packaged all-MiniLM-L6-v2 into a registry of its own."""
    root = tmp_path_factory.mktemp("content-registry")
    return root, export_content(None, root, parity_titles=TITLES)


@pytest.fixture(scope="module")
def encoder(exported) -> TextEncoder:
    root, manifest = exported
    return TextEncoder.load(root, manifest["version"])


def sentence_transformers_embed(texts: list[str], max_length: int) -> np.ndarray:
    """The model as sentence-transformers runs it (model card recipe): transformers' tokenizer and
    BertModel, mean of the token states over the attention mask, L2 normalisation. One text at a
    time, so no padding: the served batches' padding must not change a row."""
    from transformers import AutoModel, AutoTokenizer

    with model_folder() as folder:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder).eval()
    rows, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # tiny inputs: more threads only wait on each other (0.5 s a text, not 15 ms)
    try:
        for text in texts:
            batch = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
            with torch.no_grad():
                tokens = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            rows.append(F.normalize((tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9), p=2, dim=1))
    finally:
        torch.set_num_threads(threads)
    return torch.cat(rows).numpy()


def test_onnxruntime_matches_the_torch_model_on_real_titles(exported, encoder):
    _, manifest = exported
    assert manifest["kind"] == "content" and manifest["dim"] == encoder.dim == 384
    assert manifest["max_length"] == 256 and manifest["pooling"] == "mean" and manifest["normalised"] is True
    assert manifest["parity"]["titles"] == len(TITLES) and manifest["parity"]["max_abs_diff"] < 1e-4
    texts = TITLES + [LONG_TEXT]
    got = encoder.embed(texts, batch_size=16)  # the long text pads only its own batch
    expected = sentence_transformers_embed(texts, manifest["max_length"])
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    assert np.abs(got - expected).max() < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


# Each query's best titles among TITLES, by meaning more than by shared words. (Not asserted: that
# "RED RETROSPOT CAKE STAND" is nearer "REGENCY CAKESTAND 3 TIER" than "JUMBO BAG RED RETROSPOT"; it
# is not, 0.47 against 0.56: the shared rare word "RETROSPOT" outweighs "cake stand" ~ "cakestand".)
QUERIES = [
    ("a clock to wake me up", {"ALARM CLOCK BAKELIKE RED", "ALARM CLOCK BAKELIKE GREEN"}),
    ("a cup and saucer for tea", {"ROSES REGENCY TEACUP AND SAUCER", "GREEN REGENCY TEACUP AND SAUCER"}),
    ("a stand to display cakes", {"RED RETROSPOT CAKE STAND"}),
    ("bunting to decorate a party", {"PARTY BUNTING", "SPOTTY BUNTING"}),
    ("a lamp for a child's bedroom",
     {"RABBIT NIGHT LIGHT", "RED TOADSTOOL LED NIGHT LIGHT", "VICTORIAN GLASS HANGING T-LIGHT"}),
]
NEAREST = [
    ("ALARM CLOCK BAKELIKE RED", "ALARM CLOCK BAKELIKE GREEN"),
    ("ROSES REGENCY TEACUP AND SAUCER", "GREEN REGENCY TEACUP AND SAUCER"),
    ("REGENCY CAKESTAND 3 TIER", "SWEETHEART CAKESTAND 3 TIER"),
    ("RABBIT NIGHT LIGHT", "RED TOADSTOOL LED NIGHT LIGHT"),
    ("CHOCOLATE HOT WATER BOTTLE", "RETROSPOT HEART HOT WATER BOTTLE"),
]


def test_similar_products_are_near_and_queries_find_them(encoder):
    titles = encoder.embed(TITLES)
    queries = encoder.embed([query for query, _ in QUERIES])
    for (query, expected), scores in zip(QUERIES, queries @ titles.T):
        best = {TITLES[i] for i in np.argsort(-scores)[:len(expected)]}
        assert best == expected, query
    for title, nearest in NEAREST:
        scores = titles @ titles[TITLES.index(title)]
        scores[TITLES.index(title)] = -1
        assert TITLES[int(scores.argmax())] == nearest, title


def test_a_worker_embeds_titles_without_torch_or_transformers(exported):
    root, manifest = exported
    code = textwrap.dedent(f"""
        import importlib.abc, sys

        class Blocked(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers"):
                    raise ImportError(f"{{name}} must not be imported by a worker")

        sys.meta_path.insert(0, Blocked())  # importing either raises from here on
        import stream_app.core.process, stream_app.serving.text_encoder, stream_app.stream.worker
        from stream_app.serving.text_encoder import TextEncoder

        vectors = TextEncoder.load({str(root)!r}, {manifest['version']!r}).embed(["JUMBO BAG RED RETROSPOT"])
        assert vectors.shape == (1, {manifest['dim']}), vectors.shape
        assert not {{"torch", "transformers"}} & set(sys.modules)
    """)
    # (A meta-path blocker rather than sys.modules["torch"] = None: scipy, which river imports when
    # scikit-learn is installed, looks torch up in sys.modules and fails on a None there.)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def mixed_registry(exported, tmp_path) -> tuple[Path, str, str]:
    """A registry holding an older sequence version written before kinds (no `kind` in its manifest)
    and a copy of the exported content version."""
    root, manifest = exported
    staged = registry.staging_dir(tmp_path)
    for name in ("encoder.onnx", "items.npy", "items.json"):
        (staged / name).write_bytes(name.encode())
    old = {"version": "enc-old", "created_at": "2020-01-01T00:00:00", "dims": {"embedding": 16, "items": 3},
           "validation": {"recall@20": 0.1, "mrr@20": 0.05}, "training": {"events": 10, "log": "old.jsonl"}}
    sequence = registry.write_version(tmp_path, staged, old)
    assert "kind" not in json.loads((sequence / registry.MANIFEST).read_text())
    shutil.copytree(root / manifest["version"], tmp_path / manifest["version"])
    return tmp_path, "enc-old", manifest["version"]


def test_registry_kinds_and_their_content_hashes(mixed_registry):
    root, sequence, content = mixed_registry
    assert [m["version"] for m in registry.versions(root)] == [sequence, content]
    assert registry.latest(root, kind="sequence") == sequence and registry.latest(root, kind="content") == content
    folder, manifest = registry.open_version(root, sequence)  # no kind: a sequence encoder, as before
    assert registry.kind_of(manifest) == "sequence"
    with pytest.raises(ConfigError, match="is a sequence model, not a content model"):
        TextEncoder.load(root, sequence)
    with pytest.raises(ConfigError, match="is a content model, not a sequence model"):
        Encoder.load(root, content)

    tokenizer = root / content / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace('"[UNK]"', '"[UNKNOWN]"'))
    with pytest.raises(ConfigError, match="content hash"):
        TextEncoder.load(root, content)


def test_a_title_gets_the_same_bits_whatever_it_is_embedded_with(encoder):
    """A worker embeds the catalogue at start and an item added later alone; `evaluate` embeds its own catalogue:
    one title's vector must not differ in a last bit between them (padding and a batch of one changed those bits,
    and so a list's order at a tie), and the rows keep the input order."""
    texts = [TITLES[i] if i % 5 else f"{TITLES[i]} {LONG_TEXT[:40 * i]}" for i in range(len(TITLES))]
    batched = encoder.embed(texts, batch_size=64)
    one_at_a_time = np.concatenate([encoder.embed([text]) for text in texts])
    assert np.array_equal(batched, one_at_a_time)
    assert np.array_equal(encoder.embed(texts[::-1], batch_size=7)[::-1], batched)
    assert np.array_equal(encoder.embed(texts[3:5] + ["RED RETROSPOT", "PINK RETROSPOT"])[:2], batched[3:5])
    assert encoder.embed([]).shape == (0, encoder.dim)


def test_text_hash_changes_with_the_text_or_the_model():
    assert text_hash("JUMBO BAG  RED RETROSPOT ", "v1") == text_hash("JUMBO BAG RED RETROSPOT", "v1")
    assert text_hash("JUMBO BAG RED RETROSPOT", "v1") != text_hash("JUMBO BAG PINK POLKADOT", "v1")
    assert text_hash("JUMBO BAG RED RETROSPOT", "v1") != text_hash("JUMBO BAG RED RETROSPOT", "v2")
    assert len(text_hash("", "v1")) == 32


def test_cli_embeds_texts_and_lists_content_versions(mixed_registry, capsys):
    root, _, content = mixed_registry
    assert main(["content", "embed", "ALARM CLOCK BAKELIKE RED", "PARTY BUNTING", "ALARM CLOCK BAKELIKE GREEN",
                     "--registry", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(content)
    assert lines[1].startswith("'ALARM CLOCK BAKELIKE RED' (norm 1.0000): 'ALARM CLOCK BAKELIKE GREEN'")
    assert main(["models", "list", "--registry", str(root)]) == 0
    assert f"{content}  " in capsys.readouterr().out
    # a registry that is not there is said so, not "holds no content model"
    assert main(["content", "embed", "PARTY BUNTING", "--registry", str(root / "nope")]) == 2
    assert f"the registry {root / 'nope'} does not exist; name the registry with --registry" in capsys.readouterr().err


def test_the_served_content_model_passes_its_trial_run(encoder):
    encoder.trial()  # the model watcher runs it before a swap


def test_texts_the_tokenizer_knows_no_word_of_get_no_vector_not_one_shared_with_each_other(encoder):
    """Emoji, a script outside the vocabulary, one 100-character word or blank text tokenize to [UNK] or
    nothing: one and the same vector for all of them, which would make them each other's nearest items."""
    unknown = ["\U0001F381\U0001F56F\ufe0f", "\u0e40\u0e17\u0e35\u0e22\u0e19\u0e2b\u0e2d\u0e21", "x" * 101, " "]
    vectors = encoder.embed(["JUMBO BAG RED RETROSPOT", *unknown, "PARTY BUNTING \U0001F381"])
    norms = np.linalg.norm(vectors, axis=1)
    assert norms[1:-1].tolist() == [0.0] * len(unknown)
    assert abs(norms[0] - 1.0) < 1e-4 and abs(norms[-1] - 1.0) < 1e-4  # a known word is enough


def test_titles_of_punctuation_only_get_no_vector_rather_than_one_near_each_others(encoder):
    """"-", "?", "..." are known tokens, but no word: their vectors are at cosine 0.3 to 0.8 with each other (the
    nearest items of one another, as the texts of [UNK] only would be), against 0.1 to 0.2 with real titles."""
    vectors = encoder.embed(["-", "?", "...", "***", "WHITE METAL LANTERN", "A4 - 50 SHEETS", "3"])
    norms = np.linalg.norm(vectors, axis=1)
    assert norms[:4].tolist() == [0.0] * 4
    assert np.allclose(norms[4:], 1.0, atol=1e-4)  # letters or digits among the tokens: a vector


def test_two_spellings_one_key_embed_alike_even_with_a_tokenizer_that_tells_them_apart(exported):
    """The cache key reads a text NFC-normalised with its whitespace collapsed; the model was given the raw text, so
    with a tokenizer that tells two such spellings apart they shared a key but not a vector, and which one a worker
    kept depended on which it met first."""
    from tokenizers import normalizers

    root, manifest = exported
    encoder = TextEncoder.load(root, manifest["version"])
    encoder.tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace("  ", " and ")])
    spaced, single = "red  retrospot cake stand", "red retrospot cake stand"
    assert text_hash(spaced, "v") == text_hash(single, "v")
    assert encoder.tokenizer.encode(spaced).ids != encoder.tokenizer.encode(single).ids
    vectors = encoder.embed([spaced, single])
    assert np.linalg.norm(vectors[0]) > 0.99 and (vectors[0] == vectors[1]).all()


def test_content_export_of_a_folder_without_weights_says_what_is_missing(tmp_path, capsys):
    """It ended in a 7-frame traceback (transformers' OSError), where every other refusal is one line."""
    folder = tmp_path / "no-weights"
    with model_folder(None) as packaged:
        shutil.copytree(packaged, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    assert main(["content", "export", "--model-dir", str(folder), "--registry", str(tmp_path / "registry")]) == 2
    said = capsys.readouterr().err
    assert "cannot load the model in" in said and "with its weights and tokenizer files" in said
    assert "Traceback" not in said


def test_content_export_refuses_a_model_whose_modules_it_would_leave_out(tmp_path):
    """Only 1_Pooling's mean flag was read: a Dense layer after pooling (distiluse-base-multilingual-cased) was
    dropped from the export, which still passed its parity check (against the exporter's own pooling)."""
    folder = tmp_path / "with-dense"
    with model_folder(None) as packaged:
        shutil.copytree(packaged, folder)
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps(
        modules[:2] + [{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(ValueError, match="modules this exporter leaves out .*models.Dense"):
        export_content(folder, tmp_path / "registry", parity_titles=TITLES)
    (folder / "modules.json").write_text(json.dumps(modules))
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "pooling_mode_cls_token": True}))
    with pytest.raises(ValueError, match="pools by .*pooling_mode_cls_token"):
        export_content(folder, tmp_path / "registry", parity_titles=TITLES)


def test_content_export_bounds_max_length_by_the_models_positions_not_a_tokenizer_placeholder(tmp_path):
    folder = tmp_path / "no-limit"
    with model_folder(None) as packaged:
        shutil.copytree(packaged, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_max_length"] = int(1e30)  # what a folder that sets none says
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="--max-length 4096 is outside what .* reads \\(1 to 512 tokens\\)"):
        export_content(folder, tmp_path / "registry", max_length=4096, parity_titles=TITLES)
