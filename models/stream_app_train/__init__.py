"""Training and export of the deep sequence encoder (PyTorch: the `train` extra). Never imported by workers."""
