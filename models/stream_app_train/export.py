"""Export the encoder to ONNX with dynamic batch and sequence length."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .model import SequenceEncoder

INPUTS = ("item_a", "item_b", "kind", "gap", "length")


def export_onnx(encoder: SequenceEncoder, path: str | Path, opset: int = 17) -> None:
    encoder = encoder.eval()
    # Traced with batch 1 (the exporter's advice for a GRU with a dynamic batch); the parity test
    # runs other batch sizes and lengths.
    example = (torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long),
               torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long),
               torch.tensor([3], dtype=torch.long))
    dynamic = {name: {0: "batch", 1: "steps"} for name in INPUTS[:4]}
    dynamic["length"] = {0: "batch"}
    dynamic["user"] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python-side shape checks inside nn.GRU; the graph it records is
        # correct for every batch size and length (the parity test checks that).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        # dynamo=False on purpose: the TorchScript exporter handles nn.GRU with dynamic axes here
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        torch.onnx.export(encoder, example, str(path), input_names=list(INPUTS), output_names=["user"],
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)


def torch_encode(encoder: SequenceEncoder, arrays: dict) -> torch.Tensor:
    """The encoder in torch on the same featurised arrays the worker feeds onnxruntime."""
    with torch.no_grad():
        return encoder.eval()(*(torch.from_numpy(arrays[name]) for name in INPUTS))
