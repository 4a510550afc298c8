"""Next-item losses: every model scores item i as ``h @ items[i]`` and hands these losses the hidden
states at the positions that have a target.

Item id 0 is padding: it is never a class and never a negative. ``targets`` are int64 ids in
``1..n_items-1``. All losses return the mean over positions (0 with a connected graph when N == 0).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shopformer.data.vocab import PAD

assert PAD == 0, "the losses drop row 0 of the item table as padding"


def _check_inputs(hidden: Tensor, targets: Tensor, items: Tensor, min_items: int = 2) -> None:
    if hidden.dim() != 2 or items.dim() != 2 or targets.dim() != 1:
        raise ValueError(
            f"expected hidden [N, D], targets [N], items [n_items, D]; got {tuple(hidden.shape)}, "
            f"{tuple(targets.shape)}, {tuple(items.shape)}"
        )
    if hidden.shape[0] != targets.shape[0] or hidden.shape[1] != items.shape[1]:
        raise ValueError(
            f"shape mismatch: hidden {tuple(hidden.shape)}, targets {tuple(targets.shape)}, "
            f"items {tuple(items.shape)}"
        )
    if items.shape[0] < min_items:
        raise ValueError(f"need at least {min_items} rows in the item table (row 0 is padding)")
    if targets.numel() and (int(targets.min()) < 1 or int(targets.max()) >= items.shape[0]):
        raise ValueError(f"targets must lie in 1..{items.shape[0] - 1} (0 is padding)")


def _zero_loss(hidden: Tensor, items: Tensor) -> Tensor:
    """A float32 zero whose graph still reaches both inputs (for batches without targets)."""
    return (hidden.sum() + items.sum()).float() * 0.0 + 0.0  # + 0.0 turns -0.0 into 0.0


class NextItemLoss(nn.Module):
    """Base: forward(hidden [N, D], targets [N] int64, items [n_items, D]) -> scalar mean loss."""

    def set_item_counts(self, counts: Tensor) -> None:
        """Training frequency per item id (len n_items; counts[0] ignored). Default: unused."""

    def forward(self, hidden: Tensor, targets: Tensor, items: Tensor) -> Tensor:
        raise NotImplementedError


# ----------------------------------------------------------------------------- full softmax


def _compute_dtype(hidden: Tensor, items: Tensor) -> torch.dtype:
    """The matmul dtype: autocast's when it is on (and would cast these inputs), else the inputs'."""
    device_type = hidden.device.type
    dtype = torch.promote_types(hidden.dtype, items.dtype)
    if dtype != torch.float64 and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return dtype


class _Buffers:
    """Per-call scratch for one chunk of logits, reused across chunks (no page faults per chunk)."""

    def __init__(self, rows: int, cols: int, dtype: torch.dtype, acc: torch.dtype, device: torch.device):
        self.acc_buf = torch.empty(rows, cols, dtype=acc, device=device)
        self.low_buf = None if dtype == acc else torch.empty(rows, cols, dtype=dtype, device=device)

    def logits(self, h: Tensor, real: Tensor) -> Tensor:
        """h @ real.T in the matmul dtype, returned in the accumulation dtype."""
        rows = h.shape[0]
        if self.low_buf is None:
            return torch.mm(h, real.T, out=self.acc_buf[:rows])
        return self.acc_buf[:rows].copy_(torch.mm(h, real.T, out=self.low_buf[:rows]))

    def low(self, probs: Tensor) -> Tensor:
        if self.low_buf is None:
            return probs
        return self.low_buf[: probs.shape[0]].copy_(probs)


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross entropy over items 1..n-1, never holding more than one chunk of logits.

    When gradients are needed, each chunk's ``softmax - onehot`` is turned into its share of
    the gradients right away (the loss is a scalar mean, so only ``grad_out / N`` is left for
    backward): one logits product and one exp pass per chunk instead of two of each with
    recomputation in backward. Only [N, D] and [D, n_items] gradients are kept.
    """

    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, items: Tensor, targets: Tensor, chunk_size: int, dtype: torch.dtype
    ) -> Tensor:
        acc = torch.promote_types(dtype, torch.float32)
        n = hidden.shape[0]
        need_h, need_e = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # Autocast is off in here: the dtypes are chosen explicitly (matmul in `dtype`, softmax in `acc`).
        with torch.autocast(hidden.device.type, enabled=False):
            h, real = hidden.to(dtype), items[1:].to(dtype)
            cols = (targets - 1).unsqueeze(1)
            total = torch.zeros((), dtype=acc, device=hidden.device)
            rows = min(chunk_size, n)
            buf = _Buffers(rows, real.shape[0], dtype, acc, hidden.device)
            sums = torch.empty(rows, 1, dtype=acc, device=hidden.device)
            minus_one = torch.full((rows, 1), -1.0, dtype=acc, device=hidden.device)
            grad_h = torch.empty(hidden.shape, dtype=dtype, device=hidden.device) if need_h else None
            # grad of items[1:], transposed: h.T @ probs is much faster than probs.T @ h on CPU.
            grad_e_t = (
                torch.zeros(items.shape[1], real.shape[0], dtype=acc, device=items.device) if need_e else None
            )
            for start in range(0, n, chunk_size):
                stop = min(start + chunk_size, n)
                logits = buf.logits(h[start:stop], real)
                total -= logits.gather(1, cols[start:stop]).sum()
                top = logits.amax(dim=1, keepdim=True)
                chunk_sums = torch.sum(logits.sub_(top).exp_(), dim=1, keepdim=True, out=sums[: stop - start])
                total += (chunk_sums.log() + top).sum()
                if not (need_h or need_e):
                    continue
                probs = logits.div_(chunk_sums)
                probs.scatter_add_(1, cols[start:stop], minus_one[: stop - start])
                probs = buf.low(probs)
                if need_h:
                    torch.mm(probs, real, out=grad_h[start:stop])
                if need_e and dtype == acc:
                    grad_e_t.addmm_(h[start:stop].T, probs)
                elif need_e:
                    grad_e_t += h[start:stop].T @ probs
        ctx.save_for_backward(grad_h, grad_e_t)
        ctx.shapes = (hidden.dtype, items.dtype, items.shape, n)
        return total / max(n, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grad_h, grad_e_t = ctx.saved_tensors
        h_dtype, e_dtype, e_shape, n = ctx.shapes
        acc = torch.promote_types(grad_out.dtype, torch.float32)
        scale = grad_out.to(acc) / max(n, 1)
        grad_hidden = grad_items = None
        if grad_h is not None:
            grad_hidden = (grad_h.to(acc) * scale).to(h_dtype)
        if grad_e_t is not None:
            grad_items = torch.zeros(e_shape, dtype=e_dtype, device=grad_e_t.device)
            grad_items[1:] = (grad_e_t * scale).T
        return grad_hidden, grad_items, None, None, None


class FullCrossEntropy(NextItemLoss):
    """Softmax over the whole catalogue (minus padding id 0), computed in chunks of positions.

    Peak extra memory is one ``[chunk_size, n_items]`` block of logits (plus its bf16 copy under autocast)
    instead of several ``[N, n_items]`` ones; under autocast the matmuls run in the autocast dtype and the
    softmax in float32. On CPU, chunks that stay in cache (a few MB, e.g. 256 rows x 3.4k items) are fastest.
    """

    def __init__(self, chunk_size: int = 512):
        super().__init__()
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size

    def forward(self, hidden: Tensor, targets: Tensor, items: Tensor) -> Tensor:
        _check_inputs(hidden, targets, items)
        dtype = _compute_dtype(hidden, items)
        return _ChunkedCrossEntropy.apply(hidden, items, targets.long(), self.chunk_size, dtype)


# ----------------------------------------------------------------------------- sampled losses


def _pair_logits(hidden: Tensor, candidates: Tensor) -> Tensor:
    """h_n . candidates_n for aligned rows, in float32 (or float64)."""
    acc = torch.promote_types(torch.promote_types(hidden.dtype, candidates.dtype), torch.float32)
    return (hidden.to(acc) * candidates.to(acc)).sum(-1)


def _float_logits(logits: Tensor) -> Tensor:
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def popularity_probs(counts: Tensor) -> Tensor:
    """Sampling distribution over item ids proportional to max(count, 1); id 0 gets 0.

    The floor of 1 keeps log Q finite for items never seen in training (they can still be targets).
    """
    probs = counts.to(torch.float64).clamp_min(1.0)
    probs[PAD] = 0.0
    return probs / probs.sum()


class SampledSoftmax(NextItemLoss):
    """Softmax over the target and K negatives shared by the whole batch (+ in-batch negatives).

    ``sampler``: "uniform" over 1..n_items-1 or "popularity" (proportional to max(count, 1), see
    :func:`popularity_probs`). With ``logq_correction`` every logit has log Q(item) subtracted (Yi et al.
    2019), where Q is the sampler's distribution, or the empirical popularity for in-batch negatives and,
    when ``in_batch`` is on, for the positive. Negatives equal to the row's target are masked.
    ``in_batch``: the other rows' targets are negatives too (an item that is the target of m other rows
    counts m times, as in the usual in-batch softmax). Over every position of a large batch this costs
    about as much as the full softmax.
    """

    def __init__(
        self,
        n_negatives: int = 256,
        sampler: str = "uniform",
        logq_correction: bool = True,
        in_batch: bool = False,
    ):
        super().__init__()
        if sampler not in ("uniform", "popularity"):
            raise ValueError(f"sampler must be 'uniform' or 'popularity', not {sampler!r}")
        if n_negatives < 0 or (n_negatives == 0 and not in_batch):
            raise ValueError("n_negatives must be positive (or 0 with in_batch=True)")
        self.n_negatives, self.sampler = n_negatives, sampler
        self.logq_correction, self.in_batch = logq_correction, in_batch
        self.register_buffer("pop_probs", None, persistent=False)

    def set_item_counts(self, counts: Tensor) -> None:
        self.pop_probs = popularity_probs(torch.as_tensor(counts).detach().flatten()).float()

    def _pop_probs(self, n_items: int, device: torch.device) -> Tensor:
        if self.pop_probs is None:
            raise RuntimeError("SampledSoftmax needs set_item_counts() for popularity sampling / in-batch")
        if self.pop_probs.numel() != n_items:
            raise ValueError(f"item counts cover {self.pop_probs.numel()} ids, the item table {n_items}")
        return self.pop_probs.to(device)

    def sample_negatives(self, n_items: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """K negative ids (torch RNG) and log Q of each under the sampler."""
        k = self.n_negatives
        if self.sampler == "uniform":
            neg = torch.randint(1, n_items, (k,), device=device)
            return neg, torch.full((k,), -math.log(n_items - 1), device=device)
        probs = self._pop_probs(n_items, device)
        neg = torch.multinomial(probs, k, replacement=True)
        return neg, probs[neg].log()

    def forward(self, hidden: Tensor, targets: Tensor, items: Tensor) -> Tensor:
        _check_inputs(hidden, targets, items)
        n_items = items.shape[0]
        if hidden.shape[0] == 0:
            return _zero_loss(hidden, items)
        targets = targets.long()
        # Negative columns: the K sampled ids, then (in-batch) the distinct targets, each with a bias.
        cands, biases = [], []
        if self.n_negatives > 0:
            neg, neg_logq = self.sample_negatives(n_items, hidden.device)
            cands.append(neg)
            biases.append(-neg_logq if self.logq_correction else torch.zeros_like(neg_logq))
        if self.in_batch:
            pop = self._pop_probs(n_items, hidden.device)
            # One column per distinct target with log(multiplicity) added: the same softmax as one column
            # per row of the batch, at [N, distinct] cost.
            uniq, mult = torch.unique(targets, return_counts=True)
            cands.append(uniq)
            biases.append(mult.log() - pop[uniq].log() if self.logq_correction else mult.log())
        cand, bias = torch.cat(cands), torch.cat(biases)
        pos = _pair_logits(hidden, items[targets])
        if self.logq_correction:
            if self.in_batch or self.sampler == "popularity":
                pos = pos - self._pop_probs(n_items, hidden.device)[targets].log()
            else:
                pos = pos + math.log(n_items - 1)
        negatives = torch.add(hidden @ items[cand].T, bias)  # promotes a bf16 matmul result to float32
        negatives.masked_fill_(cand[None, :] == targets[:, None], float("-inf"))  # accidental hits
        logits = torch.cat([pos[:, None], negatives], dim=1)  # the positive is class 0
        return F.cross_entropy(logits, torch.zeros_like(targets))


class BinaryCrossEntropy(NextItemLoss):
    """Original SASRec loss: per position one uniform negative in 1..n_items-1 other than the target.

    loss = -log sigma(s+) - log(1 - sigma(s-)), mean over positions.
    """

    @staticmethod
    def sample_negatives(targets: Tensor, n_items: int) -> Tensor:
        """One negative per target, uniform over the n_items - 2 non-padding, non-target ids."""
        neg = torch.randint(1, n_items - 1, targets.shape, device=targets.device)
        return neg + (neg >= targets).long()

    def forward(self, hidden: Tensor, targets: Tensor, items: Tensor) -> Tensor:
        _check_inputs(hidden, targets, items, min_items=3)
        if hidden.shape[0] == 0:
            return _zero_loss(hidden, items)
        targets = targets.long()
        neg = self.sample_negatives(targets, items.shape[0])
        pos_logit = _pair_logits(hidden, items[targets])
        neg_logit = _pair_logits(hidden, items[neg])
        return -(F.logsigmoid(pos_logit) + F.logsigmoid(-neg_logit)).mean()


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    """gSASRec's beta = alpha (t (1 - 1/alpha) + 1/alpha) with alpha = K / (n_items - 2).

    n_items counts the padding row, so n_items - 2 is the number of non-target items a negative is
    drawn from.
    """
    alpha = n_negatives / (n_items - 2)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


class GeneralisedBCE(NextItemLoss):
    """gBCE (Petrov & Macdonald, RecSys 2023): BCE with the positive probability raised to beta.

    K uniform negatives in 1..n_items-1 shared by the batch (hits on a row's target are masked);
    loss = -beta log sigma(s+) - sum_neg log(1 - sigma(s-)), mean over positions. The paper's transformed
    logit log(sigma(s)^beta / (1 - sigma(s)^beta)) under plain BCE gives the same -beta log sigma(s+),
    which is computed directly as beta * softplus(-s+). t = 0 is plain BCE with K negatives.
    gSASRec-pytorch averages over the K + 1 logits of each position instead, i.e. its loss is this / (K + 1).
    """

    def __init__(self, n_negatives: int = 256, t: float = 0.75):
        super().__init__()
        if n_negatives < 1:
            raise ValueError("n_negatives must be positive")
        if not 0.0 <= t <= 1.0:
            raise ValueError("t must lie in [0, 1]")
        self.n_negatives, self.t = n_negatives, t

    def sample_negatives(self, n_items: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.randint(1, n_items, (self.n_negatives,), device=device)

    def forward(self, hidden: Tensor, targets: Tensor, items: Tensor) -> Tensor:
        _check_inputs(hidden, targets, items, min_items=3)
        if hidden.shape[0] == 0:
            return _zero_loss(hidden, items)
        targets = targets.long()
        beta = gbce_beta(self.n_negatives, items.shape[0], self.t)
        neg = self.sample_negatives(items.shape[0], hidden.device)
        pos_logit = _pair_logits(hidden, items[targets])
        neg_logit = _float_logits(hidden @ items[neg].T)
        neg_loss = F.softplus(neg_logit).masked_fill(neg[None, :] == targets[:, None], 0.0).sum(1)
        return (beta * F.softplus(-pos_logit) + neg_loss).mean()
