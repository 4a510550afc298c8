"""Library noise, filtered in this one place: what our entry points print is ours.

Lightning's start-up notes (accelerators found, install tips, "Experiment ... not found. Creating it."),
MLflow's database-migration lines, deprecation notes from inside the libraries and hints about
logging intervals say nothing to a person training a model; our own lines (epoch summaries,
precision, resume, tracking) say what matters. ``verbose=true`` on any entry point's command line
shows everything.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Sequence

QUIET_LOGGERS = {
    "lightning.pytorch.utilities.rank_zero": logging.WARNING,
    "lightning.fabric.utilities.rank_zero": logging.WARNING,
    "lightning.pytorch.loggers.mlflow": logging.ERROR,  # "Experiment with name ... not found. Creating it."
    "mlflow.store.db.utils": logging.WARNING,  # "Creating initial MLflow database tables..."
    "alembic": logging.WARNING,  # the migrations MLflow runs on a new or older database
}
QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",  # torch's pytree API change, inside Lightning
    r"The number of training batches \(\d+\) is smaller than the logging interval.*",
    r".*does not have many workers which may be a bottleneck.*",  # we choose num_workers on purpose
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided.*",
    r"The ``noload`` loader strategy is deprecated.*",  # SQLAlchemy, inside MLflow's sqlite store
    r"Checkpoint directory .* exists and is not empty.*",  # a resumed run: our "resuming ..." line says so
)
VERBOSE = ("verbose=true", "verbose=1", "verbose=yes")


def quiet_libraries(argv: Sequence[str] | None = None) -> bool:
    """Lower the libraries' chatter and drop the warnings listed above, unless the command line
    (``argv``, default ``sys.argv``) says ``verbose=true``; whether it did."""
    args = sys.argv[1:] if argv is None else argv
    if any(arg.lower() in VERBOSE for arg in args):
        return False
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    return True
