"""Old home of :class:`~shopformer.data.journey.datamodule.JourneyDataModule`.

Kept so that the ``_target_`` of checkpoints written before the journey code moved into
``data/journey/`` still resolves; new code imports ``shopformer.data.journey.datamodule``.
"""

from shopformer.data.journey.datamodule import JourneyDataModule

__all__ = ["JourneyDataModule"]
