"""Library noise is filtered in one place, and verbose=true on the command line shows it."""

from __future__ import annotations

import logging
import warnings

import pytest

from shopformer.train.quiet import QUIET_LOGGERS, quiet_libraries


@pytest.fixture
def restored():
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    with warnings.catch_warnings():
        yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_library_loggers_are_lowered_and_known_warnings_dropped(restored):
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    assert quiet_libraries(["trainer.max_epochs=1"]) is True
    assert not logging.getLogger("mlflow.store.db.utils").isEnabledFor(logging.INFO)
    assert not logging.getLogger("lightning.pytorch.loggers.mlflow").isEnabledFor(logging.WARNING)
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn("The ``noload`` loader strategy is deprecated", DeprecationWarning, stacklevel=1)
        warnings.warn("something of our own", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something of our own"]


@pytest.mark.parametrize("flag", ["verbose=true", "verbose=True", "verbose=1"])
def test_verbose_on_the_command_line_leaves_everything_on(restored, flag):
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    assert quiet_libraries(["data=ml1m", flag]) is False
    assert all(logging.getLogger(name).level == logging.NOTSET for name in QUIET_LOGGERS)
