"""Token embedding: item + optional event type + optional time-gap bucket + a learned position."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shopformer.models.dropout import Dropout

POSITIONS = ("end", "start")


class TokenEmbedding(nn.Module):
    """Sums the channel embeddings and a learned position.

    ``positions="end"``: position ``max_len - 1`` is always the most recent token (recency).
    ``positions="start"``: position 0 is the first token of the window (as the SASRec code,
    which right-pads): the position then also says how long the history is. Either way the
    numbering ignores left padding, so trimmed batches give every token the same position.
    """

    def __init__(
        self,
        n_tokens: int,
        dim: int,
        max_len: int,
        n_event_types: int = 0,
        n_gap_buckets: int = 0,
        dropout: float = 0.0,
        scale: bool = False,
        positions: str = "end",
    ) -> None:
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
        self.from_start = positions == "start"
        self.items = nn.Embedding(n_tokens, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        self.events = nn.Embedding(n_event_types, dim, padding_idx=0) if n_event_types else None
        self.gaps = nn.Embedding(n_gap_buckets, dim, padding_idx=0) if n_gap_buckets else None
        self.dropout = Dropout(dropout)
        self.max_len, self.scale = max_len, dim**0.5 if scale else 1.0

    def forward(
        self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None
    ) -> Tensor:
        length = item_ids.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
        x = self.items(item_ids) * self.scale
        if self.from_start:  # the first real token (after the left padding) is position 0
            first = (item_ids == 0).sum(dim=1, keepdim=True)
            x = x + self.positions((torch.arange(length, device=item_ids.device) - first).clamp_min(0))
        else:
            x = x + self.positions(torch.arange(self.max_len - length, self.max_len, device=item_ids.device))
        if self.events is not None and event_types is not None:
            x = x + self.events(event_types)
        if self.gaps is not None and gap_buckets is not None:
            x = x + self.gaps(gap_buckets)
        return self.dropout(x)
