"""Item text (product titles) to embeddings at serving time: onnxruntime and the `tokenizers` package.
No torch, no transformers.

`TextEncoder` loads one registry version of kind "content": a pre-trained sentence encoder (by default
all-MiniLM-L6-v2) exported by `stream-app content export` with mean pooling and L2 normalisation
inside the ONNX graph, and its tokenizer. `embed` runs titles in batches of equal token length and returns
one unit-norm row per title, in input order. No padding, and never a batch of one: onnxruntime's arithmetic
differs in the last bits with the padded shape and for a single row, and a title must get the same vector
whether a worker embeds it with the whole catalogue at start or alone when it is added later (and `evaluate`
with its own catalogue), or lists would differ between them. `text_hash` keys a
stored embedding by the text and the model version, so a title is embedded again only when either
changes.
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .registry import loaded, read_version

KIND = "content"
OUTPUT = "embedding"


def normalise_text(text: str) -> str:
    """The text as the hash sees it: Unicode NFC, runs of whitespace as one space, no ends. The
    tokenizers split on whitespace, so texts differing only there embed alike."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def vectors_id(manifest: dict[str, Any]) -> str:
    """What a content version's vectors are kept under: its name and its files' hash (`TextEncoder.vectors_id`)."""
    return f"{manifest['version']}@{str(manifest.get('content_hash', ''))[:16]}"


def text_hash(text: str, version: str) -> str:
    """A stable key for a text's embedding by one model version (hex, 32 characters)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(version.encode())
    digest.update(b"\x1f")
    digest.update(normalise_text(text).encode())
    return digest.hexdigest()


class TextEncoder:
    def __init__(self, folder: Path, manifest: dict[str, Any], files: dict[str, bytes], threads: int = 1):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = folder
        self.manifest = manifest
        self.version: str = manifest["version"]
        # what its vectors are kept under (the workers' caches and shared store): the version's name and its files'
        # hash, since a version published again after a change of its files (its publish refused until then) gives
        # other vectors under the same name
        self.vectors_id: str = vectors_id(manifest)
        self.dim: int = manifest["dim"]
        self.tokenizer = Tokenizer.from_str(files["tokenizer.json"].decode())
        self.tokenizer.enable_truncation(manifest["max_length"])
        self.tokenizer.no_padding()  # batches are of equal length (tokenizer.json may ask for padding)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # workers are one process per core
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(files["text_encoder.onnx"], options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        unk = getattr(self.tokenizer.model, "unk_token", None)
        self.unk_id = self.tokenizer.token_to_id(unk) if unk else None
        # the tokens that are no word: [UNK], and those without a letter or digit (punctuation, symbols)
        self.wordless = frozenset({self.unk_id} | {token_id for piece, token_id in self.tokenizer.get_vocab().items()
                                                   if not any(c.isalnum() for c in piece)})

    @classmethod
    def load(cls, registry: str | Path, version: str, threads: int = 1, expected_hash: str | None = None) -> "TextEncoder":
        """A content version of the registry (ConfigError, naming its kind, for any other model)."""
        folder, manifest, files = read_version(registry, version, kind=KIND, expected_hash=expected_hash)
        return loaded(cls, folder, manifest, files, threads)

    def trial(self) -> None:
        """Embed one text once (raises if the model cannot serve)."""
        vector = self.embed(["a trial title"])
        if vector.shape != (1, self.dim) or not np.all(np.isfinite(vector)):
            raise ValueError(f"content model {self.manifest['version']} gave non-finite or misshaped output "
                             f"{vector.shape} on a trial text")

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """float32 [len(texts), dim], in the order of `texts`: each row of unit norm, or zeros for a text of no word
        (below). Each text is embedded as its key sees it (`normalise_text`): two spellings with one key (NFC and
        NFD, other whitespace) got the vector of whichever was embedded first, with a model that tells them apart."""
        out = np.zeros((len(texts), self.dim), np.float32)
        encodings = self.tokenizer.encode_batch_fast([normalise_text(text) for text in texts]) if texts else []
        by_length: dict[int, list[int]] = {}
        for row, encoding in enumerate(encodings):
            by_length.setdefault(len(encoding.ids), []).append(row)
        for length in sorted(by_length):
            same = by_length[length]
            for start in range(0, len(same), batch_size):
                rows = same[start:start + batch_size]
                out[rows] = self._run([encodings[row] for row in rows])
        return out

    def _run(self, encodings: list[Any]) -> np.ndarray:
        """One model call on encodings of equal length; a lone one is run twice over (see the module's doc)."""
        batch = encodings if len(encodings) > 1 else encodings * 2
        arrays = {"input_ids": [e.ids for e in batch], "attention_mask": [e.attention_mask for e in batch],
                  "token_type_ids": [e.type_ids for e in batch]}
        found = self.session.run([OUTPUT], {name: np.array(arrays[name], np.int64) for name in self.inputs})[0]
        if found.shape != (len(batch), self.dim):
            raise ValueError(f"content model {self.version} gave output of shape {found.shape} for {len(batch)} "
                             f"texts, its manifest says dim {self.dim}")
        found = found[: len(encodings)]
        # A text the tokenizer knows no word of ([UNK] only, or nothing: emoji, a script outside its
        # vocabulary; or punctuation only: "-", "?", "...") would get a vector near every other such text's
        # and be their nearest item
        found[[not self._has_words(e) for e in encodings]] = 0.0  # 0: no text signal (as an unembeddable one)
        return found

    def _has_words(self, encoding: Any) -> bool:
        return any(mask and not special and token not in self.wordless for token, mask, special in
                   zip(encoding.ids, encoding.attention_mask, encoding.special_tokens_mask))
