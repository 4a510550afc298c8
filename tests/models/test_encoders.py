"""The dot-product contract for every encoder: shapes, padding, causality, encode == score order."""

from __future__ import annotations

import pytest
import torch

from shopformer.models.attention import attention_mask
from shopformer.models.bert4rec import BERT4Rec
from shopformer.models.gru4rec import GRU4Rec
from shopformer.models.sasrec import SASRec

N_ITEMS, MAX_LEN = 30, 12
ENCODERS = [SASRec, BERT4Rec, GRU4Rec]


def histories() -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randint(1, N_ITEMS, (4, 8))
    x[0, :5] = 0  # a short, left-padded history
    return x


@pytest.mark.parametrize("cls", ENCODERS)
def test_contract_shapes_and_scores(cls):
    model = cls(N_ITEMS, dim=16, max_len=MAX_LEN, n_event_types=4, n_gap_buckets=5).eval()
    x = histories()
    events = torch.randint(1, 4, x.shape) * (x > 0)
    hidden = model(x, event_types=events)
    q = model.encode(x, event_types=events)
    assert hidden.shape == (4, 8, 16) and q.shape == (4, 16)
    assert model.item_vectors().shape == (N_ITEMS, 16)
    assert torch.isfinite(hidden).all()
    torch.testing.assert_close(model.score(x, event_types=events), q @ model.item_vectors().T)
    # The event channel is used: changing it changes the query.
    assert not torch.allclose(model.encode(x, event_types=(events % 3) + 1), q)


@pytest.mark.parametrize("cls", ENCODERS)
def test_padding_does_not_change_the_query(cls):
    model = cls(N_ITEMS, dim=16, max_len=MAX_LEN).eval()
    x = histories()[1:2]
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], dim=1)
    torch.testing.assert_close(model.encode(x), model.encode(padded), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", [SASRec, GRU4Rec])
def test_causal_models_never_look_ahead(cls):
    model = cls(N_ITEMS, dim=16, max_len=MAX_LEN).eval()
    x = histories()
    changed = x.clone()
    changed[:, -1] = (changed[:, -1] % (N_ITEMS - 1)) + 1
    torch.testing.assert_close(model(x)[:, :-1], model(changed)[:, :-1])
    assert not torch.allclose(model(x)[:, -1], model(changed)[:, -1])


def test_bert4rec_is_bidirectional_and_encodes_with_a_mask_token():
    model = BERT4Rec(N_ITEMS, dim=16, max_len=MAX_LEN).eval()
    x = histories()
    changed = x.clone()
    changed[:, -1] = (changed[:, -1] % (N_ITEMS - 1)) + 1
    assert not torch.allclose(model(x)[:, 0], model(changed)[:, 0])
    with_mask = torch.cat([x, torch.full((4, 1), model.mask_id)], dim=1)
    torch.testing.assert_close(model.encode(x), model(with_mask)[:, -1])
    long = torch.randint(1, N_ITEMS, (2, MAX_LEN))
    assert model.encode(long).shape == (2, 16)  # the oldest token makes room for the mask


def test_attention_mask_rows_never_empty():
    x = torch.tensor([[0, 0, 3, 4]])
    mask = attention_mask(x, causal=True)[0, 0]
    assert mask.any(dim=1).all()
    assert mask[3].tolist() == [False, False, True, True]
    assert mask[2].tolist() == [False, False, True, False]


def test_too_long_history_is_refused():
    with pytest.raises(ValueError, match="max_len"):
        SASRec(N_ITEMS, dim=8, max_len=4)(torch.ones(1, 5, dtype=torch.long))


def test_cheap_dropout_rate_and_scale():
    from shopformer.models.dropout import Dropout

    torch.manual_seed(0)
    y = Dropout(0.2).train()(torch.ones(200_000))
    assert abs(float((y == 0).float().mean()) - 0.2) < 0.01
    assert abs(float(y.mean()) - 1.0) < 0.01
    assert torch.equal(Dropout(0.2).eval()(torch.ones(5)), torch.ones(5))


def test_cheap_dropout_gradient_uses_the_forward_mask():
    from shopformer.models.dropout import Dropout, random_bytes

    torch.manual_seed(1)
    x = torch.randn(3, 7, 5, requires_grad=True)
    y = Dropout(0.3).train()(x)
    y.backward(torch.ones_like(y))
    kept = y != 0
    torch.testing.assert_close(x.grad[kept], torch.full_like(x.grad[kept], 256 / (256 - 77)))
    assert not x.grad[~kept].any()
    counts = torch.bincount(random_bytes(torch.Size([64_000])).long(), minlength=256)
    assert counts.min() > 150 and counts.max() < 360  # every byte value, roughly uniform (mean 250)


def test_untied_output_table():
    tied = SASRec(N_ITEMS, dim=8, max_len=MAX_LEN)
    untied = SASRec(N_ITEMS, dim=8, max_len=MAX_LEN, tied_embeddings=False)
    assert tied.item_vectors().data_ptr() == tied.embed.items.weight.data_ptr()
    assert untied.item_vectors().data_ptr() != untied.embed.items.weight.data_ptr()
    assert untied.item_vectors().shape == (N_ITEMS, 8) and (untied.item_vectors()[0] == 0).all()


@pytest.mark.parametrize("cls", [SASRec, BERT4Rec])
@pytest.mark.parametrize("norm", ["pre", "post", "sasrec"])
def test_encode_last_position_only_equals_full_forward(cls, norm):
    torch.manual_seed(0)
    model = cls(n_items=50, dim=16, max_len=12, n_blocks=2, heads=2, norm=norm).eval()
    items = torch.randint(1, 50, (5, 9))
    items[0, :4] = 0  # left padding
    with torch.no_grad():
        fast = model.encode(items)
        if cls is BERT4Rec:
            items = torch.cat([items, torch.full((5, 1), model.mask_id)], dim=1)
        full = model(items)[:, -1]
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


def test_sasrec_block_normalises_queries_but_attends_over_raw_states():
    from shopformer.models.attention import SelfAttentionBlock, additive_mask

    torch.manual_seed(0)
    block = SelfAttentionBlock(8, 1, 8, 0.0, norm="sasrec", activation="relu").eval()
    x = torch.randn(2, 5, 8) * 3
    ids = torch.ones(2, 5, dtype=torch.long)
    mask = additive_mask(ids, True, x.dtype)
    w, b = block.qkv.weight, block.qkv.bias
    q_in = block.norm1(x)
    q, k, v = q_in @ w[:8].T + b[:8], x @ w[8:16].T + b[8:16], x @ w[16:].T + b[16:]
    attn = torch.softmax(q @ k.transpose(1, 2) / 8**0.5 + mask[:, 0], dim=-1) @ v
    h = block.norm2(q_in + block.out(attn))
    torch.testing.assert_close(block(x, mask), h + block.ffn(h), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="norm must be one of"):
        SelfAttentionBlock(8, 1, 8, 0.0, norm="sideways")


def test_positions_from_the_window_start_ignore_left_padding():
    from shopformer.models.embedding import TokenEmbedding

    torch.manual_seed(0)
    emb = TokenEmbedding(20, 4, max_len=6, positions="start").eval()
    ids = torch.tensor([[0, 0, 0, 5, 6, 7], [1, 2, 3, 4, 5, 6]])
    out = emb(ids)
    torch.testing.assert_close(out[0, 3:], emb.items(ids[0, 3:]) + emb.positions.weight[:3])
    torch.testing.assert_close(out[1], emb.items(ids[1]) + emb.positions.weight[:6])
    model = SASRec(N_ITEMS, dim=8, max_len=MAX_LEN, positions="start").eval()
    x = torch.randint(1, N_ITEMS, (2, 5))
    padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), x], dim=1)
    torch.testing.assert_close(model.encode(x), model.encode(padded), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="positions must be one of"):
        TokenEmbedding(20, 4, max_len=6, positions="middle")
