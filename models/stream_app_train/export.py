"""Export the encoder to ONNX with dynamic batch and sequence length."""

from __future__ import annotations

from pathlib import Path

import torch

from .model import SequenceEncoder

INPUTS = ("item_a", "item_b", "kind", "gap", "length")


def export_onnx(encoder: SequenceEncoder, path: str | Path, opset: int = 17) -> None:
    encoder = encoder.eval()
    example = (torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long),
               torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long),
               torch.tensor([3, 2], dtype=torch.long))
    dynamic = {name: {0: "batch", 1: "steps"} for name in INPUTS[:4]}
    dynamic["length"] = {0: "batch"}
    dynamic["user"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(encoder, example, str(path), input_names=list(INPUTS), output_names=["user"],
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)


def torch_encode(encoder: SequenceEncoder, arrays: dict) -> torch.Tensor:
    """The encoder in torch on the same featurised arrays the worker feeds onnxruntime."""
    with torch.no_grad():
        return encoder.eval()(*(torch.from_numpy(arrays[name]) for name in INPUTS))
