"""Dropout with a cheaper mask on CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU mask comes from random bytes (p rounded to 1/256).

    On this project's CPUs ``F.dropout`` spends most of a SASRec training step drawing
    Bernoulli samples one float at a time; one random byte per element is ~4x cheaper.
    On GPU it is plain ``F.dropout``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        threshold = round(self.p * 256)
        keep = torch.empty(x.shape, dtype=torch.uint8).random_() >= threshold
        return x * keep * (256.0 / (256 - threshold))
