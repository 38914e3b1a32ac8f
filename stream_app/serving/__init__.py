"""Models at serving time: the model registry, the sequence encoder and the item-text encoder (onnxruntime)."""
