"""Learning-rate schedule shared by every LightningModule: warm-up, a constant phase, cosine decay."""

from __future__ import annotations

import math

from shopformer.data.schema import DataError


def lr_factor(
    step: int,
    total: int,
    warmup_steps: int = 0,
    cosine: bool = False,
    min_lr_ratio: float = 0.0,
    decay_start: float = 0.0,
) -> float:
    """Multiplier of the peak learning rate at optimiser ``step`` of ``total``.

    Linear warm-up over ``warmup_steps``; then, with ``cosine``, a cosine decay to ``min_lr_ratio``
    that starts at the fraction ``decay_start`` of ``total`` (0: right after warm-up; 0.8: the lr
    stays at its peak for 80 % of training and decays over the last 20 % — warmup-stable-decay).
    """
    check_decay_start(decay_start)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine:
        return 1.0
    start = max(warmup_steps, int(decay_start * total))
    if step < start:
        return 1.0
    progress = min(1.0, (step - start) / max(1, total - start))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def check_decay_start(decay_start: float) -> None:
    """Refuse a decay start outside [0, 1) with the setting's name (before any training)."""
    if not 0.0 <= decay_start < 1.0:
        raise DataError(f"module.decay_start must be in [0, 1) (a fraction of training), got {decay_start}")
