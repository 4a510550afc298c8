"""The journey model: encoder, heads, multi-task loss, classification metrics and baselines.

The re-export keeps the ``_target_`` of checkpoints written before the move
(``shopformer.models.journey.JourneyModel``).
"""

from shopformer.models.journey.model import JourneyModel

__all__ = ["JourneyModel"]
