"""Library noise, filtered in this one place: what our entry points print is ours.

Lightning's start-up notes (accelerators found, install tips), deprecation notes from inside the
libraries and hints about logging intervals say nothing to a person training a model; our own lines
(epoch summaries, precision, resume, tracking) say what matters.
"""

from __future__ import annotations

import logging
import warnings

QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",  # torch's pytree API change, inside Lightning
    r"The number of training batches \(\d+\) is smaller than the logging interval.*",
    r".*does not have many workers which may be a bottleneck.*",  # we choose num_workers on purpose
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided.*",
)


def quiet_libraries() -> None:
    """Lower Lightning's info chatter to warnings and drop the warnings listed above."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
