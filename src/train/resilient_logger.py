"""MLflow tracking that never stops a run: a store that is down, locked or read-only is said once.

Training on a shared machine against a tracking server that is sometimes away must still end with
its checkpoint, test metrics, bundle and JSON line. :class:`ResilientMLFlowLogger` is Lightning's
``MLFlowLogger``; the first call that fails prints one line naming the store and the error, and from
then on the logger does nothing (``failed`` holds the reason). Calls made outside the logger (tags,
artifacts, the registry) go through :func:`guarded`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from lightning.pytorch.loggers import MLFlowLogger

T = TypeVar("T")

# Fail fast when a tracking server does not answer (MLflow's defaults retry for minutes); a value the
# user set wins.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def fail_fast_http() -> None:
    """Short MLflow HTTP retries and timeout unless the environment says otherwise."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def say_failed(uri: str, what: str, exc: BaseException) -> str:
    """Print the one line that says tracking failed; the reason."""
    reason = first_line(exc)
    print(
        f"tracking failed while {what}: MLflow store {uri} ({reason}); "
        "the run goes on untracked (its metrics: the JSON line and summary.json in the run directory)",
        file=sys.stderr,
        flush=True,
    )
    return reason


class TrackingOff:
    """What the logger config gives when the store failed before a logger could be made."""

    def __init__(self, failed: str) -> None:
        self.failed = failed


class ResilientMLFlowLogger(MLFlowLogger):
    """``MLFlowLogger`` whose failures end tracking for the run, not the run."""

    failed: str | None = None

    def fail(self, what: str, exc: BaseException) -> None:
        """Record the first failure and say it once."""
        if not self.failed:
            self.failed = say_failed(self._tracking_uri, what, exc)

    def guard(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``call(*args, **kwargs)``, or None once tracking has failed (now or before)."""
        if self.failed:
            return None
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # any failure of the store: network, sqlite lock, permissions, server errors
            self.fail(what, exc)
            return None

    def connect(self) -> ResilientMLFlowLogger:
        """Create the experiment and the run now, so that a store that is down is known before training."""
        self.guard("starting the run", lambda: self.run_id)
        return self

    @property
    def run_id(self) -> str | None:
        if self.failed:
            return None
        return super().run_id

    def log_hyperparams(self, params: Any) -> None:
        self.guard("logging the parameters", super().log_hyperparams, params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.guard("logging metrics", super().log_metrics, metrics, step)

    def finalize(self, status: str = "success") -> None:
        self.guard("closing the run", super().finalize, status)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self.guard("logging a checkpoint", super().after_save_checkpoint, checkpoint_callback)


def active(logger: Any) -> Any:
    """``logger`` while it tracks; False when there is none or its store failed."""
    if not logger or getattr(logger, "failed", None):
        return False
    return logger


def guarded(logger: Any, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``call`` through ``logger``'s guard (a plain call for other loggers); None without tracking."""
    if not active(logger):
        return None
    guard = getattr(logger, "guard", None)
    return guard(what, call, *args, **kwargs) if guard else call(*args, **kwargs)
