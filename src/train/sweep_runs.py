"""MLflow for a sweep: one parent run, one child run per trial (tag ``mlflow.parentRunId``).

The sweeper makes each trial's run before the trial starts and hands its id to the trial's logger
(``logger.run_id=...``), so it knows which run is which trial's without asking the store. At the
end the parent run gets the tags ``best_value``, ``best_params``, ``best_trial`` and
``best_run_id``. A store that fails is said once (:class:`ResilientMLFlowLogger`) and the sweep goes
on untracked, as a single run would.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "optuna_trial"
RESULTS_ARTIFACT = "optimization_results.json"
BEST_TAGS = ("best_value", "best_params", "best_trial", "best_run_id")
_PARAM_KEY = re.compile(r"[^\w\-. /]")  # characters MLflow refuses in parameter names


class SweepRuns:
    """The parent run of one sweep and the child runs of its trials (all no-ops when untracked)."""

    def __init__(self, logger: Any = None, run_name: str = "sweep") -> None:
        self.logger = logger  # a connected ResilientMLFlowLogger, or None
        self.run_name = run_name
        self.open: set[str] = set()  # trial runs not closed yet

    @classmethod
    def start(cls, config: DictConfig, params: dict[str, Any]) -> SweepRuns:
        """The parent run, in the store and experiment of ``config.logger`` when that is the MLflow
        logger (a logger that takes ``run_id``); untracked otherwise."""
        logger_config = config.get("logger")
        if not logger_config or "run_id" not in logger_config:
            return cls()
        name = str(logger_config.get("run_name") or config.get("task_name") or "sweep")
        logger = instantiate(logger_config, run_name=f"{name}-sweep", run_id=None)
        if getattr(logger, "failed", None) or not hasattr(logger, "guard"):
            return cls()
        runs = cls(logger, name)
        logger.log_hyperparams({_PARAM_KEY.sub("_", key.lstrip("+~")): v for key, v in params.items()})
        return runs

    @property
    def parent_id(self) -> str | None:
        return self.logger.run_id if self.logger else None

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(*args)`` through the logger's guard; None when untracked or failed."""
        if not self.logger or self.logger.failed:
            return None
        client = self.logger.experiment
        return self.logger.guard(what, getattr(client, method), *args, **kwargs)

    def child(self, number: int) -> str | None:
        """A new run for trial ``number``, a child of the parent; its id (None: untracked)."""
        if not self.logger or self.logger.failed:
            return None
        tags = {PARENT_TAG: self.parent_id, TRIAL_TAG: str(number)}
        run = self._call(
            "starting a trial's run",
            "create_run",
            self.logger.experiment_id,
            tags=tags,
            run_name=f"{self.run_name}-trial-{number}",
        )
        if not run:
            return None
        self.open.add(run.info.run_id)
        return run.info.run_id

    @staticmethod
    def overrides(child: str | None) -> list[str]:
        """What makes a trial log into its run."""
        return [f"logger.run_id={child}"] if child else []

    def ended(self, child: str | None, ok: bool) -> None:
        """Close a trial's run (a trial that failed before its logger closed it is FAILED, not RUNNING)."""
        if child:
            self.open.discard(child)
            self._call("closing a trial's run", "set_terminated", child, "FINISHED" if ok else "FAILED")

    def finish(self, results: dict[str, Any], status: str = "FINISHED") -> None:
        """Tag the parent with the best trial, attach the results and close it."""
        best = results.get("best_trial")
        if best is not None:
            values = {
                "best_value": results["best_value"],
                "best_params": json.dumps(results["best_params"], sort_keys=True),
                "best_trial": best,
                "best_run_id": results.get("best_run_id") or "",
            }
            for key in BEST_TAGS:
                self._call("tagging the sweep's run", "set_tag", self.parent_id, key, str(values[key]))
            best_value = results["best_value"]
            self._call("logging the best value", "log_metric", self.parent_id, "best_value", best_value)
        for key in ("n_complete", "n_failed"):
            self._call("tagging the sweep's run", "set_tag", self.parent_id, key, str(results[key]))
        self._call("logging the sweep's results", "log_dict", self.parent_id, results, RESULTS_ARTIFACT)
        self.close(status)

    def close(self, status: str) -> None:
        """End the parent run, and trial runs still open (an interrupted sweep), with ``status``
        (FINISHED, FAILED, KILLED)."""
        for child in sorted(self.open):
            self._call("closing a trial's run", "set_terminated", child, status)
        self.open.clear()
        if self.logger:
            self._call("closing the sweep's run", "set_terminated", self.parent_id, status)
