"""shopformer's Optuna sweeper, where Hydra looks for plugins (``hydra_plugins``, a namespace package).

Hydra registers a plugin class under the module that defines it and instantiates only classes
under ``hydra_plugins``: hence this subclass; everything is in ``shopformer.train.optuna_sweeper``.
Chosen by ``hydra/sweeper=optuna`` (``conf/hydra/sweeper/optuna.yaml``).
"""

import shopformer.train.optuna_sweeper as implementation


class OptunaSweeper(implementation.OptunaSweeper):
    """See :class:`shopformer.train.optuna_sweeper.OptunaSweeper`."""
