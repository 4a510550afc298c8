"""The Optuna sweeper of Hydra multiruns (``hydra/sweeper=optuna``, ``conf/hydra/sweeper/optuna.yaml``).

Each trial is one job of the pipeline; what the job returns (the task's ``sweep_value``, e.g. validation
NDCG@10 at the best checkpoint) is the objective. Optuna (a seeded TPE sampler by default) asks for
``n_trials`` trials, ``n_jobs`` at a time (handed to Hydra's launcher together). MLflow: one parent run
per sweep, one child run per trial (``train/sweep_runs.py``). A trial that fails (a config error, a
crash, no objective) is told to Optuna as FAIL, said in one line (with the traceback of a bug), and the
sweep goes on; a sweep in which no trial completed exits with code 1. At the end the best trial's
overrides and value are printed, written to ``<sweep dir>/optimization_results.yaml`` and tagged on the
parent run.

Config keys follow hydra-optuna-sweeper's: ``sampler``, ``direction``, ``n_trials``, ``n_jobs``,
``storage``, ``study_name``, ``params`` (``train/search_space.py``: ``choice``, ``interval``,
``tag(log, interval)``, ``range``). Hydra finds sweepers only under ``hydra_plugins``:
``hydra_plugins/shopformer_optuna`` names this class there.
"""

from __future__ import annotations

import math
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from shopformer.errors import ConfigError, UserError
from shopformer.train.search_space import SearchSpace, format_value
from shopformer.train.sweep_runs import SweepRuns

RESULTS_FILE = "optimization_results.yaml"
RUN_ID_ATTR = "mlflow_run_id"


class TrialExited(Exception):
    """A trial that called ``sys.exit`` (a user error, printed above as ``error: ...``)."""


class ExitIsFailure:
    """The task function, with ``sys.exit`` turned into an exception so Hydra records a failed job
    instead of the whole sweep exiting (``exit_on_user_error`` exits with code 2). A class, not a
    closure: process-pool launchers pickle it."""

    def __init__(self, task_function: TaskFunction) -> None:
        self.task_function = task_function

    def __call__(self, cfg: DictConfig) -> Any:
        try:
            return self.task_function(cfg)
        except SystemExit as exc:
            raise TrialExited(f"exited with code {exc.code} (its error line is above)") from None


def batches(n_trials: int, n_jobs: int) -> Iterator[int]:
    """Sizes of the batches handed to the launcher."""
    left = n_trials
    while left > 0:
        yield min(left, max(1, n_jobs))
        left -= max(1, n_jobs)


class OptunaSweeper(Sweeper):
    """Hydra sweeper: Optuna asks, Hydra's launcher runs, Optuna is told; MLflow parent and children."""

    def __init__(
        self,
        sampler: Any = None,
        direction: str = "maximize",
        n_trials: int = 20,
        n_jobs: int = 1,
        params: DictConfig | dict | None = None,
        storage: str | None = None,
        study_name: str | None = None,
    ) -> None:
        self.sampler = sampler
        self.direction = str(direction)
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.params = dict(params or {})
        self.storage = storage
        self.study_name = study_name
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: HydraContext | None = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=ExitIsFailure(task_function)
        )

    def sweep(self, arguments: list[str]) -> dict[str, Any]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial gets our own line instead
        space = SearchSpace.parse([*(f"{key}={value}" for key, value in self.params.items()), *arguments])
        if not space.distributions:
            raise ConfigError(
                "hydra.sweeper.params: nothing to search (e.g. optimizer.lr: 'interval(1e-4, 0.01)')"
            )
        study = optuna.create_study(
            storage=self.storage,
            study_name=self.study_name,
            sampler=self.sampler,
            direction=self.direction,
            load_if_exists=True,
        )
        runs = SweepRuns.start(self.config, self._description(space))
        try:
            self._run_trials(study, space, runs)
        except BaseException:
            runs.close("KILLED")
            raise
        return self._finish(study, runs)

    def _description(self, space: SearchSpace) -> dict[str, Any]:
        """The parent run's parameters: the sweeper's settings and the space as written."""
        sampler = OmegaConf.select(self.config, "hydra.sweeper.sampler", default=None)
        settings = OmegaConf.to_container(sampler, resolve=True) if isinstance(sampler, DictConfig) else {}
        return {
            "sweeper": "optuna",
            **{f"sampler.{key}": value for key, value in (settings or {}).items()},
            "direction": self.direction,
            "n_trials": self.n_trials,
            "n_jobs": self.n_jobs,
            **{f"search.{key}": line.split("=", 1)[-1] for key, line in space.searched.items()},
            **{f"fixed.{key}": line.split("=", 1)[-1] for key, line in space.fixed.items()},
        }

    def _run_trials(self, study: Any, space: SearchSpace, runs: SweepRuns) -> None:
        for size in batches(self.n_trials, self.n_jobs):
            trials = [study.ask(space.distributions) for _ in range(size)]
            children = [runs.child(trial.number) for trial in trials]
            for trial, child in zip(trials, children, strict=True):
                if child:
                    trial.set_user_attr(RUN_ID_ATTR, child)
            outcomes = self._launch(
                [space.overrides(t.params) + runs.overrides(c) for t, c in zip(trials, children, strict=True)]
            )
            for trial, child, outcome in zip(trials, children, outcomes, strict=True):
                value = objective(outcome)
                self._tell(study, trial, value)
                runs.ended(child, ok=not isinstance(value, BaseException))

    def _launch(self, overrides: list[list[str]]) -> list[Any]:
        """What each job returned, or the exception that ended it (a config that does not compose is
        not launched: the launcher would compose it and fail the whole batch)."""
        outcomes = [self._compose_error(job) for job in overrides]
        runnable = [job for job, error in zip(overrides, outcomes, strict=True) if error is None]
        returns = iter(self.launcher.launch(runnable, initial_job_idx=self.job_idx) if runnable else [])
        self.job_idx += len(runnable)
        return [error if error is not None else job_outcome(next(returns)) for error in outcomes]

    def _compose_error(self, overrides: list[str]) -> Exception | None:
        try:
            self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        except Exception as exc:  # an unknown option, a bad override: Hydra's message names it
            return exc
        return None

    def _tell(self, study: Any, trial: Any, value: float | BaseException) -> None:
        from optuna.trial import TrialState

        label = f"optuna: trial {trial.number}"
        if isinstance(value, BaseException):
            study.tell(trial, state=TrialState.FAIL)
            print(f"{label} failed: {reason(value)}; marked FAIL, the sweep goes on", file=sys.stderr)
            if not isinstance(value, TrialExited | UserError | HydraException):
                traceback.print_exception(value)  # a bug keeps its traceback
            return
        study.tell(trial, value)
        print(f"{label}: {self._metric()} {value:.6g} ({' '.join(_assignments(trial.params))})", flush=True)

    def _metric(self) -> str:
        return str(OmegaConf.select(self.config, "task.sweep_metric", default=None) or "objective")

    def _finish(self, study: Any, runs: SweepRuns) -> dict[str, Any]:
        results = sweep_results(study, runs.parent_id, self._metric(), self.direction)
        path = Path(str(self.config.hydra.sweep.dir)) / RESULTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(OmegaConf.to_yaml(OmegaConf.create(results)))
        if results["best_trial"] is None:
            runs.finish(results, status="FAILED")
            print(f"optuna: no trial completed ({results['n_failed']} failed); see {path}", file=sys.stderr)
            sys.exit(1)
        runs.finish(results)
        print(best_lines(results, path), flush=True)
        return results


def job_outcome(ret: JobReturn) -> Any:
    """A finished job's return value, or the exception that ended it."""
    if ret.status is JobStatus.COMPLETED:
        return ret.return_value
    # The field itself: reading ``return_value`` of a failed job prints a line of Hydra's and raises.
    return ret._return_value if isinstance(ret._return_value, BaseException) else RuntimeError(ret.status)


def objective(outcome: Any) -> float | BaseException:
    """A job's return value as the objective; what makes it a failure as an exception."""
    if isinstance(outcome, BaseException):
        return outcome
    try:
        value = float(outcome)
    except (TypeError, ValueError):
        return ValueError(f"returned {outcome!r}, not a number (is the task's sweep_metric tested?)")
    return value if math.isfinite(value) else ValueError(f"returned {value}")


def reason(exc: BaseException) -> str:
    """One line on why a trial failed (the first line of the message)."""
    lines = str(exc).strip().splitlines()
    text = lines[0][:300] if lines else ""
    return text if isinstance(exc, TrialExited) else f"{type(exc).__name__}: {text}".rstrip(": ")


def _assignments(params: dict[str, Any]) -> list[str]:
    return [f"{key}={format_value(value)}" for key, value in params.items()]


def sweep_results(study: Any, parent_id: str | None, metric: str, direction: str) -> dict[str, Any]:
    """The study as plain data: the best trial (None when none completed) and every trial."""
    from optuna.trial import TrialState

    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": dict(t.params),
            "run_id": t.user_attrs.get(RUN_ID_ATTR),
        }
        for t in study.trials
    ]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    return {
        "name": "optuna",
        "metric": metric,
        "direction": direction,
        "parent_run_id": parent_id,
        "best_trial": best.number if best else None,
        "best_value": best.value if best else None,
        "best_params": dict(best.params) if best else {},
        "best_overrides": _assignments(best.params) if best else [],
        "best_run_id": best.user_attrs.get(RUN_ID_ATTR) if best else None,
        "n_complete": len(complete),
        "n_failed": sum(t.state == TrialState.FAIL for t in study.trials),
        "trials": trials,
    }


def best_lines(results: dict[str, Any], path: Path) -> str:
    """What the sweep prints at the end."""
    tracked = (
        f", MLflow run {results['best_run_id']} (parent {results['parent_run_id']})"
        if results["best_run_id"]
        else ""
    )
    return "\n".join(
        [
            f"optuna: best trial {results['best_trial']} of {len(results['trials'])} "
            f"({results['n_failed']} failed): {results['metric']} {results['best_value']:.6g}{tracked}",
            f"optuna: best config: {' '.join(results['best_overrides'])}",
            f"optuna: results in {path}",
        ]
    )
