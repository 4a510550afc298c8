"""The notebooks of notebooks/: committed without outputs, and executed end to end so they never rot.

One fixture trains a tiny SASRec run and a tiny journey run with ``shopformer-train``, as a user would,
into a temporary MLflow store, outputs folder and dataset cache (the journey run trains while the
notebooks that do not need it run). Each notebook then runs in a Jupyter kernel (nbclient) with its
parameters pointing there (the environment variables its parameter cell reads), and its outputs are
checked in memory: nothing is written back to the .ipynb files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

from mlflow import MlflowClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL = "shopformer-tests"
EXECUTED = (
    "01_explore_data.ipynb",
    "02_compare_runs.ipynb",
    "03_serve_and_inspect.ipynb",
    "04_journey_scores.ipynb",
    "05_off_policy_evaluation.ipynb",
)
DATA = ["data.source.n_users=300", "data.source.n_items=150"]
TINY = [
    *DATA,
    "datamodule.max_len=20",
    "model.dim=16",
    "trainer.precision=32-true",
    "trainer.log_every_n_steps=1",  # a training-loss history in a few steps
    "registry.register=false",
    "threads=1",
]
SASREC = [*TINY, "trainer.max_epochs=3"]
SECOND = [*TINY, "trainer.max_epochs=1", "seed=1"]  # bundle B of notebook 05; paired with SASREC in 02
JOURNEY = [
    "experiment=journey_synthetic",
    *TINY,
    "trainer.max_steps=30",
    "trainer.min_steps=0",
    "task.bootstrap_resamples=0",
    "task.baselines=[markov]",
]


def start(root: Path, env: dict[str, str], name: str, overrides: list[str]) -> subprocess.Popen:
    """``shopformer-train`` in ``root`` (its outputs/ there), printing into ``root/<name>.out|err``."""
    exe = Path(sys.executable).with_name("shopformer-train")
    with open(root / f"{name}.out", "w") as out, open(root / f"{name}.err", "w") as err:
        command = [str(exe), *overrides]
        return subprocess.Popen(command, cwd=root, env={**os.environ, **env}, stdout=out, stderr=err)


def finish(root: Path, name: str, process: subprocess.Popen) -> dict:
    """Wait for the run; its JSON line (the last line that is one: notes may follow it)."""
    code = process.wait(timeout=600)
    assert code == 0, (root / f"{name}.err").read_text()[-3000:]
    lines = (root / f"{name}.out").read_text().splitlines()
    return json.loads(next(line for line in reversed(lines) if line.startswith("{")))


class Runs:
    """The tiny runs, the folder they ran in and the environment the notebooks run in. The journey run
    trains while the notebooks that do not need it run (it waits on first use)."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.sasrec = finish(root, "sasrec", start(root, env, "sasrec", SASREC))  # first: creates the store
        self.training = start(root, env, "journey", JOURNEY)
        self.second_training = start(root, env, "second", SECOND)
        self._journey: dict | None = None
        self._second: dict | None = None

    @property
    def second(self) -> dict:
        if self._second is None:
            self._second = finish(self.root, "second", self.second_training)
        return self._second

    @property
    def journey(self) -> dict:
        if self._journey is None:
            self._journey = finish(self.root, "journey", self.training)
        return self._journey


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebook-runs")
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "SHOPFORMER_MLFLOW_ARTIFACTS": str(root / "artifacts"),
        "SHOPFORMER_CACHE": str(root / "cache"),
    }
    runs = Runs(root, env)
    yield runs
    for process in (runs.training, runs.second_training):
        if process.poll() is None:  # a test failed before it waited for this run
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> str:
    """A Jupyter path whose kernel runs this interpreter, whatever kernels the machine has installed."""
    root = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(root / "kernels" / KERNEL)
    return str(root)


@pytest.fixture
def execute(kernels, monkeypatch):
    """``execute(name, env)``: run the notebook in a fresh kernel (which inherits ``env``) from its own
    folder; the executed copy."""

    def run(name: str, env: dict[str, str]) -> nbformat.NotebookNode:
        monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws the figures
        for key, value in {**env, "JUPYTER_PATH": kernels}.items():
            monkeypatch.setenv(key, value)
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        client = NotebookClient(
            notebook, timeout=300, kernel_name=KERNEL, resources={"metadata": {"path": str(NOTEBOOKS)}}
        )
        client.execute()  # a failing cell raises CellExecutionError with its traceback
        return notebook

    return run


def outputs(notebook: nbformat.NotebookNode, cell_id: str) -> list:
    (cell,) = [c for c in notebook.cells if c.get("id") == cell_id]
    return cell.outputs


def images(notebook: nbformat.NotebookNode, cell_id: str) -> int:
    return sum("image/png" in out.get("data", {}) for out in outputs(notebook, cell_id))


def text(notebook: nbformat.NotebookNode, cell_id: str) -> str:
    """Printed text, markdown and plain-text reprs of the cell's outputs, joined."""
    parts = []
    for out in outputs(notebook, cell_id):
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts += [data.get("text/markdown", ""), data.get("text/plain", "")]
    return "\n".join(parts)


def test_committed_notebooks_carry_no_outputs():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXECUTED)  # each one is run below
    for name in EXECUTED:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        assert notebook.cells[0].cell_type == "markdown" and "**Parameters**" in notebook.cells[0].source
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert code[0].metadata.get("tags") == ["parameters"], name
        for cell in code:
            assert cell.outputs == [] and cell.execution_count is None, f"{name} cell {cell.get('id')}"
        assert "widgets" not in notebook.metadata, name


def test_explore_data(runs, execute):
    env = {
        **runs.env,
        "SHOPFORMER_NB_DATA": "synthetic",
        "SHOPFORMER_NB_DATA_OVERRIDES": " ".join(DATA),
    }
    notebook = execute("01_explore_data.ipynb", env)
    loaded = text(notebook, "load")
    assert re.search(r"users\s+300\n", loaded) and "interactions" in loaded
    assert "read from the cache" in loaded  # composed exactly as training composed it: the same dataset
    for cell in ("lengths", "popularity", "funnel", "sessions", "gaps"):
        assert images(notebook, cell) == 1, cell
    assert re.search(r"purchase: [\d,]+ events in [\d,]+ sessions", text(notebook, "funnel"))
    assert "the top 10% of items take" in text(notebook, "popularity")


def test_serve_and_inspect(runs, execute):
    env = {**runs.env, "SHOPFORMER_NB_BUNDLE": runs.sasrec["bundle"]}
    notebook = execute("03_serve_and_inspect.ipynb", env)
    assert "SASRec" in text(notebook, "load") and "'in_stock': 'flag'" in text(notebook, "load")
    assert "showing 3" in text(notebook, "data")
    answers = text(notebook, "answers")
    assert answers.count("**sequence") == 3 and "session (newest last)" in answers
    rules = text(notebook, "rules")
    for column in ("no rules", "in stock", "price ", "category ", "boost in_stock +0.5", "boost item "):
        assert column in rules, column
    checks = text(notebook, "checks")
    assert "every list passes its filters: True" in checks


def test_compare_runs(runs, execute):
    sasrec, journey, second = (r["run_id"] for r in (runs.sasrec, runs.journey, runs.second))
    env = {
        **runs.env,
        "SHOPFORMER_NB_EXPERIMENT": "shopformer",
        "SHOPFORMER_NB_RUN_IDS": f"{sasrec} {journey} {second}",
    }
    notebook = execute("02_compare_runs.ipynb", env)
    overview = text(notebook, "runs")
    assert sasrec[:8] in overview and journey[:8] in overview and "SASRec" in overview
    curves = text(notebook, "curves")
    assert "train/loss: logged by 3 of 3 runs" in curves
    assert "val/ndcg_10: logged by 2 of 3 runs" in curves  # the journey run validates other metrics
    assert images(notebook, "curves") == 1
    table = text(notebook, "test")
    assert "test/ndcg_10" in table and "test/conversion_roc_auc" in table
    assert images(notebook, "test") == 1
    # The popularity-bias plot is shown exactly where the run logged one, and said missing elsewhere.
    client = MlflowClient(tracking_uri=runs.env["MLFLOW_TRACKING_URI"])
    logged = {
        run_id: any(a.path.endswith("popularity_bias.png") for a in client.list_artifacts(run_id, "plots"))
        for run_id in (sasrec, journey, second)
    }
    assert not logged[journey]
    bias = text(notebook, "bias")
    assert bias.count("no `popularity_bias.png` logged") == sum(not v for v in logged.values())
    assert images(notebook, "bias") == sum(logged.values())
    # The two next-item runs on the same data are compared query by query; the journey run has no ranks.
    paired = text(notebook, "paired")
    assert "1 pair(s) of runs on the same data with per-query ranks; 2 of 3 runs logged them" in paired
    worse = second if runs.second["test"]["ndcg@10"] < runs.sasrec["test"]["ndcg@10"] else sasrec
    better = sasrec if worse == second else second
    assert f"{worse[:8]}" in paired and f"{better[:8]}" in paired
    assert "ndcg@10" in paired and "hr@10" in paired and "told apart" in paired
    assert images(notebook, "paired") == 1


def test_journey_scores(runs, execute):
    # No bundle given: the notebook takes the newest journey bundle under OUTPUTS.
    env = {**runs.env, "SHOPFORMER_NB_OUTPUTS": str(runs.root / "outputs")}
    notebook = execute("04_journey_scores.ipynb", env)
    assert runs.journey["bundle"] in text(notebook, "load")
    # Scored through the bundle (ONNX, raw sessions), the test prefixes give the run's own test metrics.
    metrics = text(notebook, "metrics")
    for head in ("conversion", "abandonment"):
        here = float(re.search(rf"{head}: ROC-AUC ([\d.]+) here", metrics).group(1))
        assert here == pytest.approx(runs.journey["test"][f"{head}_roc_auc"], abs=2e-3), head
    for cell in ("calibration", "roc", "lift"):
        assert images(notebook, cell) == 1, cell
    ranking = text(notebook, "crm")
    assert re.search(r"[\d,]+ test sessions opened a cart; the 15 at highest risk", ranking)
    assert "abandoned" in ranking or "purchased" in ranking


def test_off_policy_evaluation(runs, execute):
    env = {
        **runs.env,
        "SHOPFORMER_NB_BUNDLE_A": runs.sasrec["bundle"],
        "SHOPFORMER_NB_BUNDLE_B": runs.second["bundle"],
        "SHOPFORMER_NB_VISITORS": "300",
    }
    notebook = execute("05_off_policy_evaluation.ipynb", env)
    assert "shop: 150 items; 300 visitors" in text(notebook, "load")
    assert re.search(r"300 of 300 visitors answered .* \(0 errors\)", text(notebook, "serve"))
    estimated = text(notebook, "estimate")
    assert re.search(r"300 logged requests, [\d,]+ shown items", estimated)
    for name in ("ipw", "snipw", "dm", "dr", "sndr", "switch-dr"):
        assert re.search(rf"^{name}\b", estimated, re.M), name
    truth = text(notebook, "truth")
    assert "truth: B would" in truth and "B true" in truth and "interval covers B's truth" in truth
    assert images(notebook, "plot") == 1
    ab = text(notebook, "ab")  # the live A/B test of the same two bundles
    assert re.search(r"300 of 300 visitors answered .* \(0 errors\)", ab)
    assert re.search(r"A/B readout of .*: 300 units in 2 arms, control 'A'", ab) and "sample ratio" in ab
    assert "revenue / visitor" in ab
    compared = text(notebook, "ab-vs-truth")
    assert re.search(r"the A/B interval covers the true difference: (True|False)", compared)
    assert "simulator's truth" in compared and "off-policy estimate" in compared
