"""The CUDA code paths, against the CPU result (skipped without a GPU; run by benchmarks/gpu/check.py).

The fused chunked cross-entropy and the chunked full-ranking evaluation in fp32 and bf16, every batch
channel on the device, ``trainer=gpu`` end to end, and Lightning's DDP with NCCL on one device.
"""

from __future__ import annotations

import pytest
import torch

from shopformer.models.losses import FullCrossEntropy
from shopformer.models.ranking_metrics import FullRankingMetrics

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

N_ITEMS, DIM, N = 3001, 32, 700


def _inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, DIM, generator=gen)
    items = torch.randn(N_ITEMS, DIM, generator=gen) * 0.5
    targets = torch.randint(1, N_ITEMS, (N,), generator=gen)
    return hidden, items, targets


def _loss_and_grads(device: str, dtype: torch.dtype):
    hidden, items, targets = (t.to(device) for t in _inputs())
    hidden, items = hidden.requires_grad_(), items.requires_grad_()
    with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
        loss = FullCrossEntropy(chunk_size=256)(hidden, targets, items)
    loss.backward()
    return loss.detach().float().cpu(), hidden.grad.float().cpu(), items.grad.float().cpu()


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_fused_chunked_cross_entropy_on_cuda_matches_cpu(dtype, tol):
    want = _loss_and_grads("cpu", torch.float32)
    got = _loss_and_grads("cuda", dtype)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_evaluation_on_cuda_matches_cpu(dtype):
    hidden, items, targets = _inputs(1)
    queries = hidden.to(dtype).float()  # the same (rounded) queries on both devices
    cpu, gpu = (FullRankingMetrics(N_ITEMS, ks=(10, 100), chunk_size=999) for _ in range(2))
    want = cpu.update(queries, items, targets)
    got = gpu.update(queries.cuda().to(dtype), items.cuda(), targets.cuda())
    assert got.device.type == "cuda"
    if dtype == torch.float32:
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0)
    c, g = cpu.compute(), gpu.compute()
    for key in ("hr@10", "ndcg@10", "hr@100"):
        assert g[key] == pytest.approx(c[key], abs=0 if dtype == torch.float32 else 0.02), key


def test_every_batch_channel_is_moved_to_the_device(tmp_path):
    from shopformer.train.config import build_datamodule, build_model
    from shopformer.train.module import RecommenderModule
    from tests.train.runs import compose_train

    cfg = compose_train(tmp_path, "features.event_types=true", "features.gap_buckets=true")
    dm = build_datamodule(cfg)
    dm.setup()
    module = RecommenderModule(build_model(cfg, dm), FullCrossEntropy()).cuda()
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = module.transfer_batch_to_device(next(iter(loader)), torch.device("cuda", 0), 0)
        assert {"event_types", "gap_buckets"} <= set(batch)
        assert all(t.device.type == "cuda" for t in batch.values()), {k: t.device for k, t in batch.items()}
        module.model(batch["item_ids"], **module.channels(batch))  # the model runs on them


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_training_end_to_end_on_the_gpu(trainer, tmp_path):
    from shopformer.train.train import run
    from tests.train.runs import compose_train

    extra = ["trainer.devices=1", "trainer.accelerator=gpu"] if trainer == "ddp" else []
    cfg = compose_train(tmp_path, f"trainer={trainer}", *extra, "trainer.max_epochs=2", "logger=none")
    summary = run(cfg)
    assert summary["epochs"] == 2 and 0 < summary["test"]["ndcg@10"] <= 1
    assert summary["test"]["n"] > 0
