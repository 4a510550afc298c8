"""Self-attention blocks written out (``nn.TransformerEncoderLayer``'s fast path does not export to ONNX)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shopformer.models.dropout import Dropout

NORMS = ("pre", "post", "sasrec")


class SelfAttentionBlock(nn.Module):
    """Multi-head self-attention + position-wise feed-forward.

    ``norm``: "pre" (LayerNorm before each sub-layer), "post" (after each residual sum, BERT), or
    "sasrec" (Kang & McAuley's code: normalised queries attend over the raw states, the attention
    residual starts from the normalised queries, and the feed-forward runs on a normalised sum).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        pre_norm: bool = True,
        activation: str = "gelu",
        attn_dropout: float = 0.0,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.norm = norm or ("pre" if pre_norm else "post")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        # Dropout on the attention weights forces SDPA's slow math path on CPU; off by default.
        self.dim, self.heads, self.attn_dropout = dim, heads, attn_dropout
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

    def _project(self, x: Tensor, part: int) -> Tensor:
        """Query (0), key (1) or value (2) heads [B, H, L, D/H] from row slices of the fused weight.

        With one head the result is contiguous, so SDPA needs no copies.
        """
        d = self.dim
        y = F.linear(x, self.qkv.weight[part * d : (part + 1) * d], self.qkv.bias[part * d : (part + 1) * d])
        return y.view(x.shape[0], x.shape[1], self.heads, d // self.heads).transpose(1, 2)

    def _attend(self, queries: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """Attention of ``queries`` (the last Lq positions) over ``context`` [B, L, D]; additive ``mask``."""
        b, lq, dim = queries.shape
        if lq != context.shape[1]:
            mask = mask[:, :, -lq:]
        y = F.scaled_dot_product_attention(
            self._project(queries, 0),
            self._project(context, 1),
            self._project(context, 2),
            attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        return self.dropout(self.out(y.transpose(1, 2).reshape(b, lq, dim)))

    def forward(self, x: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:
        """[B, L, D] -> [B, L, D], or [B, 1, D] for the last position only (inference)."""

        def last(t: Tensor) -> Tensor:
            return t[:, -1:] if last_only else t

        if self.norm == "pre":
            h = self.norm1(x)
            x = last(x) + self._attend(last(h), h, mask)
            return x + self.dropout(self.ffn(self.norm2(x)))
        if self.norm == "post":
            x = self.norm1(last(x) + self._attend(last(x), x, mask))
            return self.norm2(x + self.dropout(self.ffn(x)))
        q = self.norm1(last(x))
        x = self.norm2(q + self._attend(q, x, mask))
        return x + self.dropout(self.ffn(x))


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
        norm: str | None = None,
    ) -> None:
        super().__init__()
        self.causal, self.norm = causal, norm or ("pre" if pre_norm else "post")
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(dim, heads, ffn_dim, dropout, pre_norm, activation, attn_dropout, self.norm)
            for _ in range(n_blocks)
        )
        self.final_norm = nn.Identity() if self.norm == "post" else nn.LayerNorm(dim)

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
