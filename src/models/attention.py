"""Self-attention blocks written out (``nn.TransformerEncoderLayer``'s fast path does not export to ONNX)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shopformer.models.dropout import Dropout


class SelfAttentionBlock(nn.Module):
    """Multi-head self-attention + position-wise feed-forward, pre- or post-LayerNorm."""

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        pre_norm: bool,
        activation: str = "gelu",
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        # Dropout on the attention weights forces SDPA's slow math path on CPU; off by default.
        self.heads, self.pre_norm, self.attn_dropout = heads, pre_norm, attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim),
            nn.GELU() if activation == "gelu" else nn.ReLU(),
            Dropout(dropout),
            nn.Linear(ffn_dim, dim),
        )
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = Dropout(dropout)

    def _attend(self, x: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:
        """Self-attention; ``mask`` is additive [B, 1, L, L] (0 or -inf)."""
        b, length, dim = x.shape
        if last_only:  # keys and values from every position, the query from the last one
            mask = mask[:, :, -1:]
        if self.heads == 1:
            # Row slices of the fused weight give contiguous q, k, v: no permute copies for SDPA.
            w, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, -1:] if last_only else x, w[:dim], bias[:dim]).unsqueeze(1)
            k = F.linear(x, w[dim : 2 * dim], bias[dim : 2 * dim]).unsqueeze(1)
            v = F.linear(x, w[2 * dim :], bias[2 * dim :]).unsqueeze(1)
        else:
            q, k, v = self.qkv(x).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
            if last_only:
                q = q[:, :, -1:]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        y = y.squeeze(1) if self.heads == 1 else y.transpose(1, 2).reshape(b, q.shape[2], dim)
        return self.dropout(self.out(y))

    def forward(self, x: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:
        """[B, L, D] -> [B, L, D], or [B, 1, D] for the last position only (inference)."""
        residual = x[:, -1:] if last_only else x
        if self.pre_norm:
            x = residual + self._attend(self.norm1(x), mask, last_only)
            return x + self.dropout(self.ffn(self.norm2(x)))
        x = self.norm1(residual + self._attend(x, mask, last_only))
        return self.norm2(x + self.dropout(self.ffn(x)))


def attention_mask(item_ids: Tensor, causal: bool) -> Tensor:
    """Boolean mask [B, 1, L, L] (True = may attend): real keys only, causal if asked.

    Every position may attend to itself, so rows of padding never become all-masked (NaN).
    """
    length = item_ids.shape[1]
    keys = (item_ids != 0)[:, None, None, :]
    eye = torch.eye(length, dtype=torch.bool, device=item_ids.device)
    mask = keys | eye
    if causal:
        mask = mask & torch.ones(length, length, dtype=torch.bool, device=item_ids.device).tril()
    return mask


def additive_mask(item_ids: Tensor, causal: bool, dtype: torch.dtype) -> Tensor:
    """:func:`attention_mask` as 0 / -inf in ``dtype``, built once and shared by every block.

    SDPA would otherwise convert a boolean mask to floats in each block, forward and backward.
    """
    return torch.zeros((), dtype=dtype, device=item_ids.device).masked_fill(
        ~attention_mask(item_ids, causal), float("-inf")
    )


class TransformerEncoder(nn.Module):
    """A stack of :class:`SelfAttentionBlock`; padding positions come out as zeros."""

    def __init__(
        self,
        dim: int,
        n_blocks: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        causal: bool,
        pre_norm: bool,
        activation: str = "gelu",
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.causal, self.pre_norm = causal, pre_norm
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(dim, heads, ffn_dim, dropout, pre_norm, activation, attn_dropout)
            for _ in range(n_blocks)
        )
        self.final_norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()

    def forward(self, x: Tensor, item_ids: Tensor, last_only: bool = False) -> Tensor:
        """Hidden states [B, L, D]; with ``last_only`` just the last position's, [B, 1, D].

        The last block then computes its attention and feed-forward for one query per row:
        the same numbers as ``forward(...)[:, -1:]`` at a fraction of the cost.
        """
        mask = additive_mask(item_ids, self.causal, x.dtype)
        # Padding never reaches a real position (masked as a key), so it is zeroed once, at the end.
        for i, block in enumerate(self.blocks):
            x = block(x, mask, last_only=last_only and i == len(self.blocks) - 1)
        keep = (item_ids[:, -1:] if last_only else item_ids) != 0
        return self.final_norm(x) * keep.unsqueeze(-1).to(x.dtype)
