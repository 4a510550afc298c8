"""Optuna sweeps: the search space, failed trials, MLflow parent and child runs, and the recipe itself
(three real trials on tiny synthetic data, ``hparams_search=sasrec_optuna``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import RandomSampler

from shopformer.errors import ConfigError
from shopformer.train.config import CONF_DIR
from shopformer.train.optuna_sweeper import ExitIsFailure, OptunaSweeper, TrialExited
from shopformer.train.search_space import SearchSpace, format_value
from shopformer.train.sweep_runs import PARENT_TAG, TRIAL_TAG
from tests.train.runs import SMALL

PLUGIN = "hydra_plugins.shopformer_optuna.OptunaSweeper"


def _recipe():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["hparams_search=sasrec_optuna"], return_hydra_config=True)


def test_recipe_searches_lr_dropout_dim_weight_decay_and_loss_with_our_plugin():
    cfg = _recipe()
    assert cfg.hydra.sweeper._target_ == PLUGIN
    assert PLUGIN in Plugins.instance().class_name_to_class  # Hydra found it under hydra_plugins
    space = SearchSpace.parse([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
    lr = space.distributions["optimizer.lr"]
    assert isinstance(lr, FloatDistribution) and lr.log and (lr.low, lr.high) == (1e-4, 1e-2)
    assert isinstance(space.distributions["model.dropout"], FloatDistribution)
    assert space.distributions["model.dim"].choices == (32, 64, 128)
    assert 0.0 in space.distributions["optimizer.weight_decay"].choices
    losses = space.distributions["loss"].choices
    assert set(losses) == {"full_ce", "sampled_softmax", "gbce"}
    assert all((Path(CONF_DIR) / "loss" / f"{name}.yaml").exists() for name in losses)
    assert "dim" in cfg.model and "dropout" in cfg.model and "weight_decay" in cfg.optimizer


def test_later_overrides_win_and_plain_ones_are_fixed():
    space = SearchSpace.parse(["a=interval(0, 1)", "b=choice(1, 2)", "a=0.5", "b=range(1, 7, 2)", "+c=x"])
    assert space.fixed == {"a": "a=0.5", "+c": "+c=x"}
    assert space.distributions == {"b": IntDistribution(1, 5, step=2)}
    assert space.overrides({"b": 3}) == ["a=0.5", "+c=x", "b=3"]
    floats = SearchSpace.parse(["d=range(0.1, 0.4, 0.1)"]).distributions["d"]
    assert isinstance(floats, CategoricalDistribution) and floats.choices == (0.1, 0.2, 0.3)


@pytest.mark.parametrize(
    "override, message",
    [
        ("a=tag(lg, interval(1, 2))", "tag"),
        ("a=tag(log, choice(1, 2))", "tag"),
        ("a=tag(log, interval(0, 1))", "log scale"),
        ("a=interval(2, 1)", "empty"),
        ("a=range(3, 3)", "empty"),
        ("a=glob(*)", "cannot be searched"),
        ("a=choice([1, 2], 3)", "plain values"),
    ],
)
def test_a_space_optuna_cannot_search_is_a_config_error_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=rf"^a: .*{message}"):
        SearchSpace.parse([override])


@pytest.mark.parametrize("value", ["full_ce", "a b", "it's", "x=y", 0.001, 64, True, None, -3])
def test_sampled_values_read_back_the_same(value):
    parsed = OverridesParser.create().parse_override(f"k={format_value(value)}").value()
    assert parsed == value and type(parsed) is type(value)


def test_exit_becomes_a_failed_trial_not_the_end_of_the_sweep():
    assert ExitIsFailure(lambda cfg: cfg + 1)(1) == 2
    with pytest.raises(TrialExited, match="exited with code 2"):
        ExitIsFailure(lambda cfg: sys.exit(2))(None)


# A sweeper wired to stand-ins for Hydra's config loader and launcher: each job's outcome follows its
# sampled `kind` (ok: its `x` is the objective, logged into the trial's run like a real trial does).
class FakeLoader:
    def load_sweep_config(self, master_config, sweep_overrides):
        if "kind=nope" in sweep_overrides:
            raise MissingConfigException(
                "In 'train': Could not find 'kind/nope'", missing_cfg_file="kind/nope"
            )
        return master_config


class FakeLauncher:
    def __init__(self, client):
        self.client = client
        self.launched: list[list[str]] = []

    def run(self, params: dict[str, str]) -> float:
        if params["kind"] == "crash":
            raise RuntimeError("a bug in the trial")
        if params["kind"] == "exit":
            return ExitIsFailure(lambda cfg: sys.exit(2))(None)
        if "logger.run_id" in params:
            self.client.log_metric(params["logger.run_id"], "score", float(params["x"]))
        return float(params["x"])

    def launch(self, job_overrides, initial_job_idx):
        returns = []
        for overrides in job_overrides:
            self.launched.append(list(overrides))
            ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
            try:
                ret.return_value = self.run(dict(o.split("=", 1) for o in overrides))
            except Exception as exc:
                ret.return_value, ret.status = exc, JobStatus.FAILED
            returns.append(ret)
        return returns


def _sweeper(tmp_path, params, n_trials, n_jobs=1, tracked=True):
    from mlflow import MlflowClient

    logger = {
        "_target_": "shopformer.train.tracking.mlflow_logger",
        "experiment_name": f"sweep-{uuid.uuid4().hex[:8]}",
        "run_name": "fake",
        "run_id": None,
    }
    config = OmegaConf.create(
        {
            "task_name": "fake",
            "task": {"sweep_metric": "score"},
            "logger": logger if tracked else None,
            "hydra": {"sweep": {"dir": str(tmp_path / "sweep")}},
        }
    )
    sweeper = OptunaSweeper(RandomSampler(seed=4), n_trials=n_trials, n_jobs=n_jobs, params=params)
    sweeper.config = config
    sweeper.hydra_context = SimpleNamespace(config_loader=FakeLoader())
    sweeper.launcher = FakeLauncher(MlflowClient())
    return sweeper


def _children(parent: str) -> list:
    from mlflow import MlflowClient

    runs = MlflowClient().search_runs(
        [e.experiment_id for e in MlflowClient().search_experiments()],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent}'",
    )
    return sorted(runs, key=lambda r: int(r.data.tags[TRIAL_TAG]))


@pytest.mark.parametrize("n_jobs", [1, 4])
def test_failed_trials_are_marked_failed_and_the_sweep_goes_on(tmp_path, mlflow_store, capsys, n_jobs):
    from mlflow import MlflowClient

    params = {"x": "interval(0, 1)", "kind": "choice(ok, crash, exit, nope)"}
    sweeper = _sweeper(tmp_path, params, n_trials=10, n_jobs=n_jobs)
    results = sweeper.sweep(["fixed=1"])
    err = capsys.readouterr().err
    trials = results["trials"]
    kinds = [t["params"]["kind"] for t in trials]
    assert set(kinds) == {"ok", "crash", "exit", "nope"}  # this seed samples every outcome
    for trial in trials:
        assert trial["state"] == ("COMPLETE" if trial["params"]["kind"] == "ok" else "FAIL")
        if trial["state"] == "FAIL":
            assert f"optuna: trial {trial['number']} failed: " in err
    assert err.count("Traceback") == kinds.count("crash")  # a bug keeps its traceback, a user error not
    assert err.count("exited with code 2") == kinds.count("exit")
    assert err.count("MissingConfigException: In 'train': Could not find 'kind/nope'") == kinds.count("nope")
    assert results["n_failed"] == len(trials) - kinds.count("ok") == len(trials) - results["n_complete"]
    best = max((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    assert (results["best_trial"], results["best_value"]) == (best["number"], best["params"]["x"])
    launched = sweeper.launcher.launched  # a config that does not compose is not launched
    assert len(launched) == len(trials) - kinds.count("nope")
    assert all("fixed=1" in job and any(o.startswith("logger.run_id=") for o in job) for job in launched)

    children = _children(results["parent_run_id"])
    assert [int(r.data.tags[TRIAL_TAG]) for r in children] == [t["number"] for t in trials]
    for run, trial in zip(children, trials, strict=True):
        assert run.info.status == ("FINISHED" if trial["state"] == "COMPLETE" else "FAILED")
        assert run.info.run_id == trial["run_id"]
    parent = MlflowClient().get_run(results["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert float(parent.data.tags["best_value"]) == best["params"]["x"]
    assert parent.data.tags["best_run_id"] == best["run_id"]
    assert MlflowClient().get_run(best["run_id"]).data.metrics["score"] == best["params"]["x"]
    assert json.loads(parent.data.tags["best_params"]) == best["params"]
    assert parent.data.params["search.kind"] == "choice(ok, crash, exit, nope)"
    assert (tmp_path / "sweep" / "optimization_results.yaml").exists()


def test_a_sweep_in_which_no_trial_completed_exits_1(tmp_path, mlflow_store, capsys):
    from mlflow import MlflowClient

    sweeper = _sweeper(tmp_path, {"x": "interval(0, 1)", "kind": "choice(crash, exit)"}, n_trials=2)
    with pytest.raises(SystemExit) as stop:
        sweeper.sweep([])
    assert stop.value.code == 1
    assert "optuna: no trial completed (2 failed)" in capsys.readouterr().err
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    parent = MlflowClient().get_run(results.parent_run_id)
    assert parent.info.status == "FAILED" and "best_value" not in parent.data.tags


def test_untracked_sweep_needs_no_store(tmp_path, capsys):
    sweeper = _sweeper(tmp_path, {"x": "interval(0, 1)", "kind": "choice(ok)"}, n_trials=2, tracked=False)
    results = sweeper.sweep([])
    assert results["parent_run_id"] is None and results["n_complete"] == 2
    assert not any(o.startswith("logger.run_id=") for job in sweeper.launcher.launched for o in job)
    assert f"optuna: best trial {results['best_trial']} of 2 (0 failed): score" in capsys.readouterr().out


TINY = [o for o in SMALL if not o.startswith(("trainer.max_epochs", "data.source.n_users"))] + [
    "trainer.max_epochs=1",
    "data.source.n_users=300",
]
BEST = re.compile(
    r"optuna: best trial (\d+) of 3 \(0 failed\): ndcg@10 ([\d.e-]+), MLflow run (\w+) \(parent (\w+)\)"
)


def test_readme_optuna_command_logs_three_children_under_one_parent(tmp_path, mlflow_store):
    """``shopformer-train hparams_search=sasrec_optuna hydra.sweeper.n_trials=3`` on tiny data."""
    from mlflow import MlflowClient

    command = [
        sys.executable,
        "-m",
        "shopformer.train.train",
        "hparams_search=sasrec_optuna",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *TINY,
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    best_trial, best_value, best_run, parent_id = BEST.search(done.stdout).groups()
    config = re.search(r"optuna: best config: (.*)", done.stdout).group(1).split()

    children = _children(parent_id)
    assert len(children) == 3 and {r.data.tags[TRIAL_TAG] for r in children} == {"0", "1", "2"}
    assert all(r.info.status == "FINISHED" for r in children)
    # The objective is validation NDCG@10 at the best checkpoint (never the test split): the best of
    # each child's logged validation history.
    client = MlflowClient()
    ndcg = {
        r.info.run_id: max(m.value for m in client.get_metric_history(r.info.run_id, "val/ndcg_10"))
        for r in children
    }
    winner = max(children, key=lambda r: ndcg[r.info.run_id])
    assert (winner.info.run_id, winner.data.tags[TRIAL_TAG]) == (best_run, best_trial)
    parent = MlflowClient().get_run(parent_id)
    assert float(parent.data.tags["best_value"]) == pytest.approx(max(ndcg.values()), abs=1e-6)
    assert float(best_value) == pytest.approx(max(ndcg.values()), abs=1e-5)
    assert parent.data.tags["best_run_id"] == best_run and parent.data.tags["best_trial"] == best_trial
    # The printed config is the winner's: its values are the ones its run trained with.
    printed = dict(o.split("=", 1) for o in config)
    assert set(printed) == {"optimizer.lr", "optimizer.weight_decay", "model.dropout", "model.dim", "loss"}
    trained = winner.data.params
    for key in ("optimizer.lr", "optimizer.weight_decay", "model.dropout", "model.dim"):
        assert float(trained[key]) == pytest.approx(float(printed[key]), rel=1e-9), key
    loss_target = OmegaConf.load(Path(CONF_DIR) / "loss" / f"{printed['loss']}.yaml")._target_
    assert trained["loss._target_"] == loss_target
    assert json.loads(parent.data.tags["best_params"])["model.dim"] == int(printed["model.dim"])


APP = """
import hydra
from shopformer.errors import ConfigError, exit_on_user_error

@hydra.main(config_path=".", config_name="app", version_base="1.3")
def main(cfg):
    with exit_on_user_error():
        if cfg.kind == "bad":
            raise ConfigError("kind: bad is not a kind")
    if cfg.kind == "crash":
        raise RuntimeError("a bug")
    return cfg.x

main()
"""
APP_CONFIG = """
defaults:
  - opt: a
  - override hydra/sweeper: optuna
seed: 2
x: 0.5
kind: ok
hydra:
  sweeper:
    n_trials: 9
    params:
      x: interval(0, 1)
      kind: choice(ok, bad, crash)
      opt: choice(a, nope)
"""


def test_hydra_runs_our_sweeper_and_a_failed_trial_does_not_end_the_sweep(tmp_path):
    """A real Hydra multirun (plugin discovery, conf/hydra/sweeper/optuna.yaml, Hydra's launcher) of a
    task that needs no training: a user error (exit 2), a bug and an option that does not exist fail
    their trials only."""
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "app.yaml").write_text(APP_CONFIG)
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt" / "a.yaml").write_text("{}\n")
    command = [
        sys.executable,
        "app.py",
        "-m",
        f"hydra.searchpath=[file://{CONF_DIR}]",
        "hydra.sweep.dir=sweep",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = OmegaConf.to_container(OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml"))
    trials = results["trials"]
    fine = [t for t in trials if t["params"]["kind"] == "ok" and t["params"]["opt"] == "a"]
    assert 0 < len(fine) < len(trials) == 9
    assert {t["params"]["kind"] for t in trials} == {"ok", "bad", "crash"}
    assert {t["params"]["opt"] for t in trials} == {"a", "nope"}
    assert all((t["state"] == "COMPLETE") == (t in fine) for t in trials)
    best = max(fine, key=lambda t: t["value"])
    assert results["best_trial"] == best["number"] and results["best_value"] == best["params"]["x"]
    err = done.stderr
    failed = {int(n) for n in re.findall(r"optuna: trial (\d+) failed: ", err)}
    assert failed == {t["number"] for t in trials if t not in fine}
    assert "error: kind: bad is not a kind" in err and "exited with code 2" in err
    assert "RuntimeError: a bug" in err and "Traceback" in err
    assert "Could not find 'opt/nope'" in err
    assert (
        f"optuna: best trial {best['number']} of 9 ({len(trials) - len(fine)} failed): objective"
        in done.stdout
    )
