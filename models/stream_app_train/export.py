"""Export the encoder to ONNX with dynamic batch and sequence length, retrieval included."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .model import SequenceEncoder

INPUTS = ("item_a", "item_b", "kind", "gap", "length")
OUTPUTS = ("user", "top_items", "top_scores", "mean_score")


class EncoderWithRetrieval(nn.Module):
    """The exported graph: the user embedding, and the `k` best rows of the item table for it (with
    their scores and the mean score over the table), so the worker's one onnxruntime call per batch
    also does the catalog scan in optimised code instead of numpy per user."""

    def __init__(self, encoder: SequenceEncoder, items: torch.Tensor | None, k: int):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("items", items if items is not None else torch.zeros(1, encoder.out.out_features))
        self.k = min(k, self.items.size(0))

    def forward(self, item_a, item_b, kind, gap, length):
        user = self.encoder(item_a, item_b, kind, gap, length)
        scores = user @ self.items.T
        top_scores, top_items = torch.topk(scores, self.k, dim=1)
        return user, top_items, top_scores, scores.mean(dim=1)


def export_onnx(encoder: SequenceEncoder, path: str | Path, items: torch.Tensor | None = None, k: int = 100,
                opset: int = 17) -> None:
    module = EncoderWithRetrieval(encoder.eval(), None if items is None else items.detach().clone(), k).eval()
    # Traced with batch 1 (the exporter's advice for a GRU with a dynamic batch); the parity test
    # runs other batch sizes and lengths.
    example = (torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long),
               torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long),
               torch.tensor([3], dtype=torch.long))
    dynamic = {name: {0: "batch", 1: "steps"} for name in INPUTS[:4]}
    dynamic.update({name: {0: "batch"} for name in ("length", *OUTPUTS)})
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python-side shape checks inside nn.GRU; the graph it records is
        # correct for every batch size and length (the parity test checks that).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        # dynamo=False on purpose: the TorchScript exporter handles nn.GRU with dynamic axes here
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        torch.onnx.export(module, example, str(path), input_names=list(INPUTS), output_names=list(OUTPUTS),
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)


def torch_encode(encoder: SequenceEncoder, arrays: dict) -> torch.Tensor:
    """The encoder in torch on the same featurised arrays the worker feeds onnxruntime."""
    with torch.no_grad():
        return encoder.eval()(*(torch.from_numpy(arrays[name]) for name in INPUTS))
