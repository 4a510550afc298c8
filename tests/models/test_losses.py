"""Next-item losses against direct formulas: values, gradients, sampling, memory, bf16 autocast."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shopformer.models.losses import (
    BinaryCrossEntropy,
    FullCrossEntropy,
    GeneralisedBCE,
    SampledSoftmax,
    gbce_beta,
    popularity_probs,
)


def _problem(n: int, n_items: int, dim: int, dtype: torch.dtype = torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, dim, generator=gen, dtype=dtype).requires_grad_()
    items = torch.randn(n_items, dim, generator=gen, dtype=dtype).requires_grad_()
    targets = torch.randint(1, n_items, (n,), generator=gen)
    return hidden, items, targets


def _reference_ce(hidden, items, targets):
    logits = hidden @ items.T
    logits = logits.masked_fill(torch.arange(items.shape[0]) == 0, float("-inf"))
    return F.cross_entropy(logits.float() if logits.dtype == torch.bfloat16 else logits, targets)


def _value_and_grads(loss_fn, hidden, items, targets):
    loss = loss_fn(hidden, targets, items)
    grads = torch.autograd.grad(loss, (hidden, items))
    return loss.detach(), grads


# ----------------------------------------------------------------------------- FullCrossEntropy


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("chunk_size", [1, 5, 16, 37, 2048])
def test_full_ce_matches_cross_entropy(dtype, tol, chunk_size):
    hidden, items, targets = _problem(37, 50, 8, dtype)
    value, grads = _value_and_grads(FullCrossEntropy(chunk_size), hidden, items, targets)
    ref_value, ref_grads = _value_and_grads(lambda h, t, e: _reference_ce(h, e, t), hidden, items, targets)
    assert value.dtype == dtype
    torch.testing.assert_close(value, ref_value, rtol=tol, atol=tol)
    for grad, ref, inp in zip(grads, ref_grads, (hidden, items), strict=True):
        assert grad.dtype == inp.dtype
        torch.testing.assert_close(grad, ref, rtol=tol, atol=tol)
    assert torch.all(grads[1][0] == 0), "the padding row gets no gradient"


def test_full_ce_large_logits_stay_finite():
    hidden, items, targets = _problem(20, 30, 4, torch.float32)
    hidden, items = (x.detach().mul(30.0).requires_grad_() for x in (hidden, items))  # logits in the hundreds
    value, grads = _value_and_grads(FullCrossEntropy(8), hidden, items, targets)
    ref_value, ref_grads = _value_and_grads(lambda h, t, e: _reference_ce(h, e, t), hidden, items, targets)
    assert torch.isfinite(value) and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-3)
    for grad, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-3)


def test_full_ce_gradcheck():
    hidden, items, targets = _problem(9, 7, 3)
    assert torch.autograd.gradcheck(lambda h, e: FullCrossEntropy(4)(h, targets, e), (hidden, items))


def test_full_ce_empty_batch_is_connected_zero():
    hidden, items, targets = _problem(0, 20, 4, torch.float32)
    loss = FullCrossEntropy(8)(hidden, targets, items)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert hidden.grad.shape == (0, 4) and torch.all(items.grad == 0)


def test_full_ce_rejects_padding_and_out_of_range_targets():
    hidden, items, targets = _problem(4, 10, 3)
    for bad in (0, 10):
        with pytest.raises(ValueError, match="targets"):
            FullCrossEntropy()(hidden, torch.tensor([1, 2, bad, 3]), items)


def test_full_ce_bf16_autocast_close_to_fp32():
    hidden, items, targets = _problem(300, 500, 32, torch.float32)
    ref_value, ref_grads = _value_and_grads(FullCrossEntropy(), hidden, items, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value, grads = _value_and_grads(FullCrossEntropy(64), hidden, items, targets)
        plain = _reference_ce(hidden, items, targets)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, ref_value, rtol=2e-2, atol=0)
    torch.testing.assert_close(value, plain.detach(), rtol=1e-2, atol=0)
    # The matmuls ran in bf16: the same numbers as bf16 inputs without autocast, not the fp32 ones.
    with torch.no_grad():
        as_bf16 = FullCrossEntropy(64)(hidden.bfloat16(), targets, items.bfloat16())
    torch.testing.assert_close(value, as_bf16, rtol=1e-6, atol=0)
    assert value != ref_value
    for grad, ref, inp in zip(grads, ref_grads, (hidden, items), strict=True):
        assert grad.dtype == inp.dtype == torch.float32
        assert (grad - ref).norm() <= 0.05 * ref.norm()


def test_full_ce_bf16_inputs_give_bf16_grads():
    hidden, items, targets = _problem(40, 60, 16, torch.float32)
    ref_value, ref_grads = _value_and_grads(FullCrossEntropy(), hidden, items, targets)
    h16, e16 = (x.detach().bfloat16().requires_grad_() for x in (hidden, items))
    value, grads = _value_and_grads(FullCrossEntropy(16), h16, e16, targets)
    torch.testing.assert_close(value, ref_value, rtol=2e-2, atol=0)
    for grad, ref in zip(grads, ref_grads, strict=True):
        assert grad.dtype == torch.bfloat16
        assert (grad.float() - ref).norm() <= 0.05 * ref.norm()


class _SavedNumel:
    """Total numel of the tensors autograd saves for backward."""

    def __init__(self):
        self.numel = 0

    def pack(self, tensor):
        self.numel += tensor.numel()
        return tensor


def test_saved_tensor_hook_sees_materialised_logits():
    hidden, items, targets = _problem(64, 300, 4, torch.float32)
    saved = _SavedNumel()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        _reference_ce(hidden, items, targets)
    assert saved.numel >= 64 * 300


@pytest.mark.parametrize("autocast", [False, True])
def test_full_ce_never_saves_full_logits(autocast):
    n, n_items, dim = 4096, 20000, 64
    hidden, items, targets = _problem(n, n_items, dim, torch.float32)
    saved = _SavedNumel()
    hooks = torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t)
    with hooks, torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = FullCrossEntropy()(hidden, targets, items)
    assert torch.isfinite(loss)
    assert saved.numel <= n * dim + n_items * dim + 2 * n
    assert saved.numel < n * n_items / 50


# ----------------------------------------------------------------------------- SampledSoftmax


def _sampled_reference(hidden, items, targets, neg, neg_logq, pos_logq):
    """log-softmax by hand: column 0 the positive, then the negatives with accidental hits dropped."""
    losses = []
    for row in range(len(targets)):
        h = hidden[row]
        pos = h @ items[targets[row]] - pos_logq[row]
        keep = neg != targets[row]
        negs = items[neg[keep]] @ h - neg_logq[keep]
        logits = torch.cat([pos[None], negs])
        losses.append(torch.logsumexp(logits, 0) - pos)
    return torch.stack(losses).mean()


def test_sampled_softmax_uniform_by_hand():
    n_items, k = 30, 12
    hidden, items, targets = _problem(10, n_items, 5)
    torch.manual_seed(3)
    value = SampledSoftmax(k)(hidden, targets, items)
    torch.manual_seed(3)
    neg = torch.randint(1, n_items, (k,))
    logq = torch.full((k,), -math.log(n_items - 1), dtype=torch.float64)
    pos_logq = torch.full((10,), -math.log(n_items - 1), dtype=torch.float64)
    torch.testing.assert_close(value, _sampled_reference(hidden, items, targets, neg, logq, pos_logq))
    torch.manual_seed(3)
    torch.testing.assert_close(SampledSoftmax(k, logq_correction=False)(hidden, targets, items), value)


def test_sampled_softmax_popularity_by_hand_and_logq_matters():
    n_items, k = 30, 12
    hidden, items, targets = _problem(10, n_items, 5)
    counts = torch.arange(n_items) ** 2
    counts[5] = 0  # never seen: still a finite log Q
    probs = popularity_probs(counts).float()
    assert probs[0] == 0 and probs[5] > 0 and torch.isclose(probs.sum(), torch.tensor(1.0))
    loss = SampledSoftmax(k, sampler="popularity")
    loss.set_item_counts(counts)
    torch.manual_seed(4)
    value = loss(hidden, targets, items)
    torch.manual_seed(4)
    neg = torch.multinomial(probs, k, replacement=True)
    ref = _sampled_reference(hidden, items, targets, neg, probs[neg].log(), probs[targets].log())
    torch.testing.assert_close(value, ref)
    assert torch.isfinite(value)
    plain = SampledSoftmax(k, sampler="popularity", logq_correction=False)
    plain.set_item_counts(counts)
    torch.manual_seed(4)
    no_logq = plain(hidden, targets, items)
    zeros = torch.zeros(max(k, 10), dtype=torch.float64)
    torch.testing.assert_close(
        no_logq, _sampled_reference(hidden, items, targets, neg, zeros[:k], zeros[:10])
    )
    assert abs(no_logq.item() - value.item()) > 1e-3


def test_popularity_sampler_follows_counts_and_skips_padding():
    counts = torch.tensor([1000, 0, 1, 2, 7])
    loss = SampledSoftmax(20000, sampler="popularity")
    loss.set_item_counts(counts)
    neg, _ = loss.sample_negatives(5)
    freq = torch.bincount(neg, minlength=5).double() / len(neg)
    assert freq[0] == 0
    torch.testing.assert_close(
        freq, torch.tensor([0, 1, 1, 2, 7]) / 11.0, atol=0.02, rtol=0, check_dtype=False
    )


def test_sampled_softmax_masks_accidental_hits():
    # Three ids (1, 2 real): with 8 negatives almost surely some hit each row's target.
    hidden, items, targets = _problem(6, 3, 4)
    torch.manual_seed(5)
    value = SampledSoftmax(8)(hidden, targets, items)
    torch.manual_seed(5)
    neg = torch.randint(1, 3, (8,))
    assert (neg == 1).any() and (neg == 2).any()
    zeros = torch.zeros(8, dtype=torch.float64)
    torch.testing.assert_close(value, _sampled_reference(hidden, items, targets, neg, zeros, zeros[:6]))
    # Unmasked, the hits would add exp(s+) terms to the denominator.
    unmasked = torch.logsumexp(
        torch.cat([(hidden * items[targets]).sum(1, keepdim=True), hidden @ items[neg].T], 1), 1
    )
    assert value < (unmasked - (hidden * items[targets]).sum(1)).mean() - 1e-3


def _in_batch_reference(hidden, items, targets, probs, neg=None, neg_logq=None):
    """One negative column per other row of the batch (hits on the row's own target dropped)."""
    losses = []
    for row in range(len(targets)):
        h = hidden[row]
        pos = h @ items[targets[row]] - probs[targets[row]].log()
        others = targets[torch.arange(len(targets)) != row]
        others = others[others != targets[row]]
        parts = [pos[None], items[others] @ h - probs[others].log()]
        if neg is not None:
            keep = neg != targets[row]
            parts.append(items[neg[keep]] @ h - neg_logq[keep])
        losses.append(torch.logsumexp(torch.cat(parts), 0) - pos)
    return torch.stack(losses).mean()


@pytest.mark.parametrize("k", [0, 6])
def test_sampled_softmax_in_batch_by_hand(k):
    n_items = 12
    hidden, items, targets = _problem(15, n_items, 4)  # 15 targets over 11 ids: repeats for sure
    counts = torch.randint(0, 50, (n_items,), generator=torch.Generator().manual_seed(1))
    probs = popularity_probs(counts).float()
    loss = SampledSoftmax(k, in_batch=True)
    loss.set_item_counts(counts)
    torch.manual_seed(6)
    value = loss(hidden, targets, items)
    neg = logq = None
    if k:
        torch.manual_seed(6)
        neg = torch.randint(1, n_items, (k,))
        logq = torch.full((k,), -math.log(n_items - 1))
    torch.testing.assert_close(value, _in_batch_reference(hidden, items, targets, probs, neg, logq))


def test_sampled_softmax_needs_counts():
    hidden, items, targets = _problem(4, 10, 3)
    with pytest.raises(RuntimeError, match="set_item_counts"):
        SampledSoftmax(4, sampler="popularity")(hidden, targets, items)
    with pytest.raises(RuntimeError, match="set_item_counts"):
        SampledSoftmax(0, in_batch=True)(hidden, targets, items)


# ----------------------------------------------------------------------------- BCE and gBCE


def test_bce_by_hand():
    n_items = 20
    hidden, items, targets = _problem(25, n_items, 6)
    torch.manual_seed(7)
    value = BinaryCrossEntropy()(hidden, targets, items)
    torch.manual_seed(7)
    neg = BinaryCrossEntropy.sample_negatives(targets, n_items)
    s_pos, s_neg = (hidden * items[targets]).sum(1), (hidden * items[neg]).sum(1)
    ref = -(torch.log(torch.sigmoid(s_pos)) + torch.log(1 - torch.sigmoid(s_neg))).mean()
    torch.testing.assert_close(value, ref)


def test_bce_negatives_are_uniform_over_valid_ids():
    targets = torch.randint(1, 5, (40000,))
    neg = BinaryCrossEntropy.sample_negatives(targets, 5)
    assert neg.min() >= 1 and neg.max() <= 4 and not (neg == targets).any()
    # Given target 1, the negatives spread evenly over 2, 3, 4.
    freq = torch.bincount(neg[targets == 1], minlength=5)[2:].double()
    torch.testing.assert_close(
        freq / freq.sum(), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02, rtol=0
    )


def test_gbce_beta():
    # alpha = 25 / 100 = 0.25: beta = 0.25 * (0.75 * (1 - 4) + 4) = 0.4375.
    assert gbce_beta(25, 102, 0.75) == pytest.approx(0.4375)
    assert gbce_beta(25, 102, 0.0) == pytest.approx(1.0)
    assert gbce_beta(25, 102, 1.0) == pytest.approx(0.25)


def test_gbce_t0_is_bce_with_k_negatives():
    n_items, k = 9, 7
    hidden, items, targets = _problem(12, n_items, 5)
    torch.manual_seed(8)
    value = GeneralisedBCE(k, t=0.0)(hidden, targets, items)
    torch.manual_seed(8)
    neg = torch.randint(1, n_items, (k,))
    hit = neg[None, :] == targets[:, None]
    assert hit.any()
    s_pos, s_neg = (hidden * items[targets]).sum(1), hidden @ items[neg].T
    neg_terms = torch.where(hit, 0.0, -torch.log(1 - torch.sigmoid(s_neg)))
    ref = (-torch.log(torch.sigmoid(s_pos)) + neg_terms.sum(1)).mean()
    torch.testing.assert_close(value, ref)


def test_gbce_hand_example():
    # One position, D = 1: s+ = 2 for target 3, s- = -1 for every other item.
    n_items, k = 10, 4
    hidden = torch.tensor([[1.0]], dtype=torch.float64)
    items = torch.full((n_items, 1), -1.0, dtype=torch.float64)
    items[3] = 2.0
    targets = torch.tensor([3])
    torch.manual_seed(9)
    value = GeneralisedBCE(k, t=0.75)(hidden, targets, items)
    torch.manual_seed(9)
    m = int((torch.randint(1, n_items, (k,)) != 3).sum())
    beta = 0.5 * (0.75 * (1 - 2) + 2)  # alpha = 4 / 8
    expected = beta * math.log(1 + math.exp(-2)) + m * math.log(1 + math.exp(-1))
    assert value.item() == pytest.approx(expected, rel=1e-12)
    # Same as the paper's transformed positive logit under plain BCE.
    sig_b = torch.sigmoid(torch.tensor(2.0, dtype=torch.float64)) ** beta
    transformed = torch.log(sig_b / (1 - sig_b))
    pos_term = F.binary_cross_entropy_with_logits(transformed, torch.tensor(1.0, dtype=torch.float64))
    assert pos_term.item() == pytest.approx(beta * math.log(1 + math.exp(-2)), rel=1e-12)


# ----------------------------------------------------------------------------- all losses


def _all_losses():
    return [
        FullCrossEntropy(16),
        SampledSoftmax(8),
        SampledSoftmax(8, sampler="popularity"),
        SampledSoftmax(0, in_batch=True),
        SampledSoftmax(4, sampler="popularity", in_batch=True),
        BinaryCrossEntropy(),
        GeneralisedBCE(8),
        GeneralisedBCE(8, t=0.0),
    ]


@pytest.mark.parametrize("loss_fn", _all_losses(), ids=lambda m: type(m).__name__)
def test_losses_decrease_on_toy_problem(loss_fn):
    n_items = 40
    hidden, items, targets = _problem(64, n_items, 16, torch.float32, seed=11)
    loss_fn.set_item_counts(torch.bincount(targets, minlength=n_items))
    opt = torch.optim.Adam([hidden, items], lr=0.05)

    def evaluate() -> float:
        torch.manual_seed(0)
        with torch.no_grad():
            return loss_fn(hidden, targets, items).item()

    before = evaluate()
    for step in range(20):
        torch.manual_seed(100 + step)
        loss = loss_fn(hidden, targets, items)
        assert torch.isfinite(loss) and loss.dtype == torch.float32
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert evaluate() < 0.8 * before


@pytest.mark.parametrize("loss_fn", _all_losses(), ids=lambda m: type(m).__name__)
def test_losses_empty_batch(loss_fn):
    hidden, items, targets = _problem(0, 20, 4, torch.float32)
    loss_fn.set_item_counts(torch.ones(20))
    loss = loss_fn(hidden, targets, items)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(items.grad == 0)


@pytest.mark.parametrize("loss_fn", _all_losses(), ids=lambda m: type(m).__name__)
def test_losses_under_bf16_autocast(loss_fn):
    hidden, items, targets = _problem(50, 40, 16, torch.float32)
    loss_fn.set_item_counts(torch.bincount(targets, minlength=40))
    torch.manual_seed(0)
    ref = loss_fn(hidden, targets, items)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(hidden, targets, items)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, ref, rtol=3e-2, atol=0)
    loss.backward()
    assert hidden.grad.dtype == items.grad.dtype == torch.float32
