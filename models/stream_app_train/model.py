"""The sequence encoder (GRU4Rec-style): recent events -> user embedding, scored against item embeddings."""

from __future__ import annotations

import torch
from torch import nn

from stream_app.core.sequences import N_GAPS, N_KINDS


class SequenceEncoder(nn.Module):
    """Each step is the sum of two hashed item-bucket embeddings, an event-kind embedding and a
    time-gap embedding; a GRU reads the steps, and its state after the last real step (`length`)
    goes through a linear layer to the item embedding space."""

    def __init__(self, buckets: int, dim: int, hidden: int):
        super().__init__()
        self.item_a = nn.Embedding(buckets, dim, padding_idx=0)
        self.item_b = nn.Embedding(buckets, dim, padding_idx=0)
        self.kind = nn.Embedding(N_KINDS, dim, padding_idx=0)
        self.gap = nn.Embedding(N_GAPS, dim, padding_idx=0)
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, dim)

    def forward(self, item_a: torch.Tensor, item_b: torch.Tensor, kind: torch.Tensor, gap: torch.Tensor,
                length: torch.Tensor) -> torch.Tensor:
        steps = self.item_a(item_a) + self.item_b(item_b) + self.kind(kind) + self.gap(gap)
        states, _ = self.gru(steps)
        last = (length - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, states.size(2))
        return self.out(states.gather(1, last).squeeze(1))


class NextItemModel(nn.Module):
    """Training wrapper: the encoder plus the item embedding table the worker retrieves from."""

    def __init__(self, buckets: int, dim: int, hidden: int, items: int):
        super().__init__()
        self.encoder = SequenceEncoder(buckets, dim, hidden)
        self.items = nn.Embedding(items, dim)
        nn.init.normal_(self.items.weight, std=0.05)

    def forward(self, item_a, item_b, kind, gap, length) -> torch.Tensor:
        return self.encoder(item_a, item_b, kind, gap, length) @ self.items.weight.T
