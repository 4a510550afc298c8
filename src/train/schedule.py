"""Learning-rate schedule shared by every LightningModule: warm-up, a constant phase, cosine decay."""

from __future__ import annotations

import math
from dataclasses import dataclass

from shopformer.errors import ConfigError


@dataclass(frozen=True)
class LRSchedule:
    """``conf/schedule/``: linear warm-up over ``warmup_steps``; then constant, or with ``cosine`` a
    cosine decay to ``min_lr_ratio`` starting at the fraction ``decay_start`` of training."""

    warmup_steps: int = 0
    cosine: bool = False
    min_lr_ratio: float = 0.0
    decay_start: float = 0.0

    def __post_init__(self) -> None:
        check_decay_start(self.decay_start)

    @property
    def constant(self) -> bool:
        """True when the learning rate never changes (no scheduler needed)."""
        return not self.warmup_steps and not self.cosine

    def factor(self, step: int, total: int) -> float:
        """Multiplier of the peak learning rate at optimiser ``step`` of ``total``."""
        return lr_factor(step, total, self.warmup_steps, self.cosine, self.min_lr_ratio, self.decay_start)


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
        raise ConfigError(
            f"schedule.decay_start must be in [0, 1) (a fraction of training), got {decay_start}"
        )
