"""Journey data: labels per event, the session split, training windows and the journey datamodule.

Torch-free at this level (serving imports the labels). The two re-exports keep the ``_target_`` paths
of checkpoints written before the move (``shopformer.data.journey.JourneyLabelConfig`` / ``JourneySplit``).
"""

from shopformer.data.journey.labels import JourneyLabelConfig
from shopformer.data.journey.split import JourneySplit

__all__ = ["JourneyLabelConfig", "JourneySplit"]
