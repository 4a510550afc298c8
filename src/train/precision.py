"""``trainer.precision=auto``: time a few training steps in fp32 and in bf16 autocast, train in the faster.

Which is faster depends on the processor: on one CPU of the kind CI uses an ML-1M SASRec epoch took
9.6 s in fp32 and 15.5 s in bf16, on another (AMD EPYC with ``avx512_bf16``) 17.9 s and 10.1 s. The
probe runs on real training batches and leaves no trace: weights, gradients and every random
generator are as they were, so a run that picks fp32 is the same run as ``precision=32-true``. When
one precision is ``CLEAR`` (3) times faster after the first warm step, the probe stops there: on a
processor without bf16 instructions a bf16 step can take 10-13 times an fp32 one (17 s against 1.3 s
for a Taobao GRU4Rec batch), and six of them cost minutes at the start of every run.
"""

from __future__ import annotations

import random
import statistics
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from itertools import islice

import numpy as np
import torch
from torch import Tensor

AUTO = "auto"
FP32, BF16 = "32-true", "bf16-mixed"
MIN_GAIN = 1.1  # bf16 must be this many times faster: on a tie, fp32 is the exact one
CLEAR = 3.0  # one side this many times faster after a warm step: the rest of the probe is not needed


@dataclass(frozen=True)
class PrecisionChoice:
    chosen: str
    fp32_ms: float | None = None
    bf16_ms: float | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def resolve_precision(
    precision: str, accelerator: str, module, batches: Iterable[dict[str, Tensor]], processes: int = 1
) -> PrecisionChoice:
    """``precision`` itself unless it is ``auto``; then the probe's choice (CPU) or bf16 (CUDA)."""
    if str(precision) != AUTO:
        return PrecisionChoice(str(precision), reason="as configured")
    if processes > 1:  # each process would time its own steps and could choose differently
        return PrecisionChoice(FP32, reason=f"{processes} processes: fp32 for all")
    if accelerator not in ("cpu", "auto") or torch.cuda.is_available():
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return PrecisionChoice(BF16, reason="CUDA with bf16")
        return PrecisionChoice("16-mixed", reason="CUDA without bf16")
    return probe(module, batches)


def probe(module, batches: Iterable[dict[str, Tensor]], steps: int = 5) -> PrecisionChoice:
    """Median milliseconds per forward + backward of ``module.training_step`` in each precision."""
    state = _random_state()  # before the loader draws its shuffle
    batches = list(islice(iter(batches), steps + 1))
    if not batches:
        _restore_random_state(state)
        return PrecisionChoice(FP32, reason="no training batch to time")
    was_training = module.training
    module.train()
    try:
        times = {FP32: [], BF16: []}
        for batch in batches:
            for precision in (FP32, BF16):  # interleaved: a noisy neighbour hits both alike
                times[precision].append(_timed_step(module, batch, precision == BF16))
            if _clear_winner(times):  # a 10x slower bf16 step would otherwise cost minutes
                break
    finally:
        for p in module.parameters():
            p.grad = None
        module.train(was_training)
        _restore_random_state(state)
    # The first step of each warms caches and kernels up: left out when there are more.
    fp32, bf16 = (statistics.median(times[p][1:] or times[p]) * 1e3 for p in (FP32, BF16))
    chosen = BF16 if fp32 > MIN_GAIN * bf16 else FP32
    reason = f"fp32 {fp32:.1f} ms / bf16 {bf16:.1f} ms per step (bf16 needs {MIN_GAIN}x to win)"
    return PrecisionChoice(chosen, round(fp32, 2), round(bf16, 2), reason)


def _clear_winner(times: dict[str, list[float]]) -> bool:
    """Whether the warm steps so far (all but the first of each) already differ ``CLEAR`` times."""
    if len(times[FP32]) < 2:
        return False
    fp32, bf16 = (statistics.median(times[p][1:]) for p in (FP32, BF16))
    return max(fp32, bf16) > CLEAR * min(fp32, bf16)


def _timed_step(module, batch: dict[str, Tensor], bf16: bool) -> float:
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log() outside a Trainer warns that nothing is logged
        loss = module.training_step(batch, 0)
    loss.backward()
    elapsed = time.perf_counter() - started
    for p in module.parameters():
        p.grad = None
    return elapsed


def _random_state() -> tuple:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _restore_random_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])
