"""Item text (product titles) to embeddings at serving time: onnxruntime and the `tokenizers` package.
No torch, no transformers.

`TextEncoder` loads one registry version of kind "content": a pre-trained sentence encoder (by default
all-MiniLM-L6-v2) exported by `stream-app content export` with mean pooling and L2 normalisation
inside the ONNX graph, and its tokenizer. `embed` tokenizes titles in batches of similar length (less
padding, so less work) and returns one unit-norm row per title, in input order. `text_hash` keys a
stored embedding by the text and the model version, so a title is embedded again only when either
changes.
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .registry import open_version

KIND = "content"
OUTPUT = "embedding"


def normalise_text(text: str) -> str:
    """The text as the hash sees it: Unicode NFC, runs of whitespace as one space, no ends. The
    tokenizers split on whitespace, so texts differing only there embed alike."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def text_hash(text: str, version: str) -> str:
    """A stable key for a text's embedding by one model version (hex, 32 characters)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(version.encode())
    digest.update(b"\x1f")
    digest.update(normalise_text(text).encode())
    return digest.hexdigest()


class TextEncoder:
    def __init__(self, folder: Path, manifest: dict[str, Any], threads: int = 1):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = folder
        self.manifest = manifest
        self.version: str = manifest["version"]
        self.dim: int = manifest["dim"]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(manifest["max_length"])
        self.tokenizer.enable_padding(pad_id=manifest["pad_id"], pad_token=manifest["pad_token"])  # to the longest
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # workers are one process per core
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / "text_encoder.onnx"), options,
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
        folder, manifest = open_version(registry, version, kind=KIND, expected_hash=expected_hash)
        return cls(folder, manifest, threads)

    def trial(self) -> None:
        """Embed one text once (raises if the model cannot serve)."""
        vector = self.embed(["a trial title"])
        if vector.shape != (1, self.dim) or not np.all(np.isfinite(vector)):
            raise ValueError(f"content model {self.manifest['version']} gave non-finite or misshaped output "
                             f"{vector.shape} on a trial text")

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """float32 [len(texts), dim], each row of unit norm, in the order of `texts`."""
        out = np.zeros((len(texts), self.dim), np.float32)
        by_length = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(texts), batch_size):
            rows = by_length[start:start + batch_size]
            found = self._run([texts[i] for i in rows])
            if found.shape != (len(rows), self.dim):
                raise ValueError(f"content model {self.version} gave output of shape {found.shape} for {len(rows)} "
                                 f"texts, its manifest says dim {self.dim}")
            out[rows] = found
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch_fast(texts)
        arrays = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
                  "token_type_ids": [e.type_ids for e in encodings]}
        found = self.session.run([OUTPUT], {name: np.array(arrays[name], np.int64) for name in self.inputs})[0]
        if found.ndim == 2 and found.shape[0] == len(texts):
            # A text the tokenizer knows no word of ([UNK] only, or nothing: emoji, a script outside its
            # vocabulary; or punctuation only: "-", "?", "...") would get a vector near every other such text's
            # and be their nearest item
            found[[not self._has_words(e) for e in encodings]] = 0.0  # 0: no text signal (as an unembeddable one)
        return found

    def _has_words(self, encoding: Any) -> bool:
        return any(mask and not special and token not in self.wordless for token, mask, special in
                   zip(encoding.ids, encoding.attention_mask, encoding.special_tokens_mask))
