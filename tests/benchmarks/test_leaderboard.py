"""The leaderboard's table: every cell with its state, the checks against the baselines, failures said."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.scripts import load_benchmark

lb = load_benchmark("leaderboard")


def cell(model: str, dataset: str, ndcg: float, other: float = 0.0) -> dict:
    main = lb.MAIN_PROTOCOL[dataset]
    second = "all_items" if main == "exclude_seen" else "exclude_seen"
    return {
        "model": model,
        "dataset": dataset,
        "protocols": {main: {"ndcg@10": ndcg, "hr@10": 2 * ndcg}, second: {"ndcg@10": other, "hr@10": 0.0}},
        "epochs": 7,
        "converged": True,
        "wall_s": 90.0,
        "command": f"shopformer-train {model}",
        "date": "2026-12-06 23:00 UTC",
        "machine": "test CPU",
        "commit": "abc1234",
    }


@pytest.fixture
def table(tmp_path, monkeypatch):
    monkeypatch.setattr(lb, "TABLE", tmp_path / "LEADERBOARD.md")
    return tmp_path / "LEADERBOARD.md"


def test_every_cell_has_a_command_or_says_why_not():
    for model in lb.MODELS:
        for dataset in lb.DATASETS:
            args = lb.train_command(model, dataset)
            if model in lb.BASELINES:
                assert args[:2] == [f"model={model}", f"data={dataset}"]
            elif args is not None:
                assert args[0] == f"experiment={model}_{dataset}"
    assert lb.train_command("sasrec", "ml1m")[0] == "experiment=sasrec_ml1m"


def test_the_table_checks_trained_models_against_the_baselines(table):
    results = {
        "popularity:yoochoose": cell("popularity", "yoochoose", 0.02),
        "transition:yoochoose": cell("transition", "yoochoose", 0.34),
        "sasrec:yoochoose": cell("sasrec", "yoochoose", 0.30),
        "gru4rec:yoochoose": cell("gru4rec", "yoochoose", 0.36),
        "sasrec:ml1m": cell("sasrec", "ml1m", 0.1821 * 1.01, other=0.12),
        "transition:taobao": lb.failure("transition", "taobao", "exited 2: dense table too large"),
        "sasrec:taobao": cell("sasrec", "taobao", 0.05),
    }
    results["popularity:yoochoose"].update(epochs=0, converged=None)
    results["sasrec:yoochoose"]["converged"] = False
    lb.write_table(results)
    rows = {line.split(" | ")[0].strip("| ") + ":" + section: line
            for section, block in _sections(table.read_text()).items() for line in block}  # fmt: skip
    assert (
        "BELOW transition (0.3400)" in rows["sasrec:yoochoose"]
        and "beats popularity" in rows["sasrec:yoochoose"]
    )
    assert "reaches transition" in rows["gru4rec:yoochoose"]
    assert "| 0 | fitted |" in rows["popularity:yoochoose"]  # a count-based baseline: nothing to converge
    assert "| 7 | **no** |" in rows["sasrec:yoochoose"] and "| 7 | yes |" in rows["gru4rec:yoochoose"]
    assert "0.1839 | 0.3678 | 0.1200 / 0.0000" in rows["sasrec:ml1m"] and "101% of it" in rows["sasrec:ml1m"]
    assert "failed: exited 2: dense table too large" in rows["transition:taobao"]
    assert "transition failed (see its row)" in rows["sasrec:taobao"]
    assert "why:" not in rows["sasrec:yoochoose"]  # below, but nothing known to say
    assert "not run yet" in rows["bert4rec:ml1m"] or "no recipe yet" in rows["bert4rec:ml1m"]
    assert "6 of 40 cells done." in table.read_text()
    assert "could not be checked here" in rows["gru4rec:ml1m"]  # an anchor we could not verify says so


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:]
            sections[current] = []
        elif current and line.startswith("| ") and not line.startswith("| model"):
            sections[current].append(line)
    return sections


@pytest.fixture
def queue(tmp_path, monkeypatch, table):
    """results.json and the logs in ``tmp_path``; run_cell records which cells it trained."""
    import argparse

    monkeypatch.setattr(lb, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(lb, "OUTPUTS", tmp_path / "outputs")
    monkeypatch.setattr(lb, "RANKS", tmp_path / "ranks")
    trained: list[tuple[str, str, int]] = []

    def fake_run_cell(model, dataset, log_dir, threads=2, force=False):
        trained.append((model, dataset, threads))
        return cell(model, dataset, 0.1)

    monkeypatch.setattr(lb, "run_cell", fake_run_cell)
    args = argparse.Namespace(logs=str(tmp_path / "logs"), force=False, threads=1)
    return args, trained


def test_a_second_copy_merges_its_cells_into_results_on_disk(queue):
    args, trained = queue
    lb.save_results({"popularity:ml1m": cell("popularity", "ml1m", 0.02)})  # another copy's cell
    lb.run_queued("sasrec", "ml1m", args)
    assert trained == [("sasrec", "ml1m", 1)]
    assert set(lb.load_results()) == {"popularity:ml1m", "sasrec:ml1m"}


def test_a_cell_held_or_finished_by_another_copy_is_not_trained(queue, tmp_path, capsys):
    from pathlib import Path

    args, trained = queue
    with lb.locked(Path(args.logs) / "sasrec_ml1m.lock") as held:
        assert held
        lb.run_queued("sasrec", "ml1m", args)
    assert trained == [] and "being trained by another copy" in capsys.readouterr().out
    lb.save_results({"sasrec:ml1m": cell("sasrec", "ml1m", 0.18)})  # the other copy finished it
    lb.run_queued("sasrec", "ml1m", args)
    assert trained == [] and lb.load_results()["sasrec:ml1m"]["protocols"]["exclude_seen"]["ndcg@10"] == 0.18
    lb.run_queued("gru4rec", "ml1m", args)  # the lock went with its holder
    assert trained == [("gru4rec", "ml1m", 1)]


def test_the_threads_option_reaches_the_command():
    assert "threads=1" in lb.train_command("sasrec", "ml1m", threads=1)
    assert "threads=2" in lb.train_command("popularity", "ml1m")


@pytest.mark.parametrize("code", ["os.kill(os.getpid(), signal.SIGTERM)", "sys.exit(143)"])
def test_a_run_stopped_by_a_signal_is_not_a_result(tmp_path, code):
    import sys

    argv = [sys.executable, "-c", f"import os, signal, sys; print('epoch 1'); {code}"]
    with pytest.raises(lb.Interrupted, match="stopped by a signal"):
        lb.run_logged(argv, tmp_path / "cell.log")
    with pytest.raises(RuntimeError, match="exited 1") as failed:
        lb.run_logged([sys.executable, "-c", "raise SystemExit(1)"], tmp_path / "cell.log")
    assert not isinstance(failed.value, lb.Interrupted)


def test_an_interrupted_cell_stops_the_queue_without_a_record(queue, monkeypatch):
    args, _ = queue

    def interrupted(model, dataset, log_dir, threads=2, force=False):
        raise lb.Interrupted("shopformer-train was stopped by a signal (exit 143; log: x.log)")

    monkeypatch.setattr(lb, "run_cell", interrupted)
    with pytest.raises(SystemExit, match="not recorded: run the command again to resume it"):
        lb.run_queued("sasrec", "ml1m", args)
    assert "sasrec:ml1m" not in lb.load_results()


def test_stopping_the_script_stops_the_cell_it_runs(tmp_path):
    """SIGTERM to the leaderboard ends its training run too (no orphan left to compete with a restart)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    child_pid = tmp_path / "child.pid"
    script = f"""
import signal, sys
from tests.benchmarks.scripts import load_benchmark
lb = load_benchmark("leaderboard")
signal.signal(signal.SIGTERM, lb.stopped_by_sigterm)  # as main() does
child = "import os, time; open({str(child_pid)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
lb.run_logged([sys.executable, "-c", child], __import__("pathlib").Path({str(tmp_path / "cell.log")!r}))
"""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=repo, env=env)
    deadline = time.monotonic() + 30
    while not (child_pid.exists() and child_pid.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = int(child_pid.read_text())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(30) == 143
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # reaped by its parent before that exited; gone within moments
            os.kill(pid, 0)
            time.sleep(0.1)


def test_a_model_below_a_baseline_says_why_when_we_know(table, monkeypatch):
    monkeypatch.setitem(lb.WHY_BELOW, ("gru4rec", "yoochoose"), "validation never rose")
    results = {
        "popularity:yoochoose": cell("popularity", "yoochoose", 0.02),
        "transition:yoochoose": cell("transition", "yoochoose", 0.34),
        "gru4rec:yoochoose": cell("gru4rec", "yoochoose", 0.01),
    }
    assert lb.verdict(results["gru4rec:yoochoose"], results).endswith("why: validation never rose")
    results["gru4rec:yoochoose"] = cell("gru4rec", "yoochoose", 0.40)  # not below: no excuse printed
    assert "why" not in lb.verdict(results["gru4rec:yoochoose"], results)


def test_the_check_gives_the_paired_interval_where_ranks_were_kept(table):
    results = {
        "popularity:yoochoose": cell("popularity", "yoochoose", 0.02),
        "transition:yoochoose": cell("transition", "yoochoose", 0.34),
        "gru4rec:yoochoose": cell("gru4rec", "yoochoose", 0.33),
    }
    results["gru4rec:yoochoose"]["paired"] = {
        "popularity": {"delta": 0.31, "low": 0.29, "high": 0.33, "queries": 900, "resamples": 2000},
        "transition": {"delta": -0.01, "low": -0.03, "high": 0.012, "queries": 900, "resamples": 2000},
    }
    text = lb.verdict(results["gru4rec:yoochoose"], results)
    assert "beats popularity by +0.3100 (95% interval +0.2900 to +0.3300);" in text
    below = "BELOW transition (0.3400) by -0.0100 (95% interval -0.0300 to +0.0120): the interval holds 0"
    assert text.endswith(below)


def _ranks_with_ndcg(path, hits: int, n: int = 100):
    """A per-query ranks file whose NDCG@10 is hits / n (the first ``hits`` queries ranked first)."""
    from shopformer.models.query_ranks import QueryRanks

    rank = [0] * hits + [50] * (n - hits)
    QueryRanks.of(range(n), range(n), [1] * n, rank).write(path)


def test_pairing_adds_each_cells_interval_and_refuses_ranks_that_disagree(queue, capsys):
    args, _ = queue
    results = {
        "popularity:yoochoose": cell("popularity", "yoochoose", 0.02),
        "transition:yoochoose": cell("transition", "yoochoose", 0.34),
        "sasrec:yoochoose": cell("sasrec", "yoochoose", 0.40),
        "gru4rec:yoochoose": cell("gru4rec", "yoochoose", 0.30),
    }
    lb.save_results(results)
    for key, hits in (("popularity", 2), ("transition", 34), ("sasrec", 40), ("gru4rec", 31)):
        path = lb.ranks_path(key, "yoochoose", "all_items")
        path.parent.mkdir(parents=True, exist_ok=True)
        _ranks_with_ndcg(path, hits)  # gru4rec's gives 0.31, not its recorded 0.30
    lb.pair_cells([("sasrec", "yoochoose"), ("gru4rec", "yoochoose")], Path(args.logs), threads=1)
    saved = lb.load_results()
    paired = saved["sasrec:yoochoose"]["paired"]
    transition = paired["transition"]
    assert transition["delta"] == pytest.approx(0.06) and paired["popularity"]["delta"] == pytest.approx(0.38)
    assert transition["low"] <= 0.06 <= transition["high"] and transition["queries"] == 100
    assert "paired" not in saved["gru4rec:yoochoose"]
    out = capsys.readouterr().out
    assert "gru4rec:yoochoose: ranks give NDCG@10 0.310000, recorded 0.3; not used" in out
    assert "reaches transition by +0.0600 (95% interval" in lb.TABLE.read_text()


def _run_dir(outputs: Path, model: str, dataset: str, run_id: str, exclude_seen: bool) -> Path:
    """A finished run as shopformer-train leaves it: summary.json, its config, its checkpoint path."""
    run_dir = outputs / f"leaderboard_{model}_{dataset}" / "2026-12-07_20-00-00"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(
        f"lit_module:\n  exclude_seen: {str(exclude_seen).lower()}\n"
    )
    _ranks_with_ndcg(run_dir / "eval" / "test_ranks.parquet", 25)
    summary = {
        "run_id": run_id,
        "checkpoint": str(run_dir / "checkpoints" / "best.ckpt"),
        "query_ranks": str(run_dir / "eval" / "test_ranks.parquet"),
    }
    (run_dir / "summary.json").write_text(__import__("json").dumps(summary))
    return run_dir


def test_a_cells_ranks_come_from_its_run_or_from_scoring_its_checkpoint_again(queue, monkeypatch):
    args, _ = queue
    record = cell("sasrec", "yoochoose", 0.25) | {"run_id": "abc"}
    _run_dir(lb.OUTPUTS, "sasrec", "yoochoose", "abc", exclude_seen=False)  # the main protocol: kept as is
    path = lb.ensure_ranks(record, Path(args.logs), threads=1)
    assert path == lb.ranks_path("sasrec", "yoochoose", "all_items") and path.is_file()

    scored = []

    def fake_eval(argv, log_path):  # shopformer-eval ... ranks_dir=...: writes <protocol>.parquet
        scored.append(argv)
        ranks_dir = Path(next(a for a in argv if a.startswith("ranks_dir=")).split("=", 1)[1])
        _ranks_with_ndcg(ranks_dir / "all_items.parquet", 25)
        return "{}"

    monkeypatch.setattr(lb, "run_logged", fake_eval)
    other = cell("gru4rec", "yoochoose", 0.25) | {"run_id": "def"}
    _run_dir(lb.OUTPUTS, "gru4rec", "yoochoose", "def", exclude_seen=True)  # tested under the other protocol
    assert lb.ensure_ranks(other, Path(args.logs), threads=1) == lb.ranks_path(
        "gru4rec", "yoochoose", "all_items"
    )
    assert "protocols=[all_items]" in scored[0] and any(a.endswith("best.ckpt") for a in scored[0])
    lost = cell("bert4rec", "yoochoose", 0.25) | {"run_id": "gone"}
    assert lb.ensure_ranks(lost, Path(args.logs), threads=1) is None  # its run is not in outputs/


def test_a_baseline_whose_run_is_gone_is_fitted_again_for_its_ranks(queue, monkeypatch):
    """A fresh checkout has no outputs/: a baseline is counted again with its cell's command (a trained
    model is not retrained), and its new ranks are used only if they give back the recorded figure."""
    args, _ = queue
    commands = []

    def fake_train(argv, log_path):  # shopformer-train model=popularity ...: a run with its ranks
        commands.append(argv)
        run_dir = _run_dir(lb.OUTPUTS, "popularity", "yoochoose", "new-run", exclude_seen=False)
        return (run_dir / "summary.json").read_text()

    monkeypatch.setattr(lb, "run_logged", fake_train)
    record = cell("popularity", "yoochoose", 0.25) | {"run_id": "from-another-checkout"}
    path = lb.ensure_ranks(record, Path(args.logs), threads=1)
    assert path == lb.ranks_path("popularity", "yoochoose", "all_items") and path.is_file()
    assert commands[0][1:] == lb.train_command("popularity", "yoochoose", threads=1)
    path.unlink()
    __import__("shutil").rmtree(lb.OUTPUTS)
    drifted = cell("popularity", "yoochoose", 0.20) | {"run_id": "elsewhere"}  # counts changed: refused
    assert lb.ensure_ranks(drifted, Path(args.logs), threads=1) is None
    assert lb.ensure_ranks(cell("sasrec", "yoochoose", 0.25) | {"run_id": "x"}, Path(args.logs), 1) is None
    assert len(commands) == 2  # the trained model was not retrained


def test_a_finished_run_that_was_never_recorded_is_scored_not_trained_again(queue):
    """The queue stopped while it scored a checkpoint: the next sitting finds the finished run."""
    import json

    args = lb.train_command("sasrec", "toys", threads=1)
    run_dir = lb.OUTPUTS / "leaderboard_sasrec_toys" / "2026-12-07_20-43-39"
    (run_dir / ".hydra").mkdir(parents=True)
    overrides = [a.replace("threads=1", "threads=2") for a in args]  # threads may differ between sittings
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {a}\n" for a in overrides))
    (run_dir / "summary.json").write_text(json.dumps({"test": {"ndcg@10": 0.06}, "checkpoint": "best.ckpt"}))
    summary, seconds = lb.unrecorded_run("sasrec", "toys", args)
    assert summary["test"]["ndcg@10"] == 0.06 and seconds > 0
    assert lb.unrecorded_run("sasrec", "toys", [*args, "model.dropout=0.1"]) is None  # another command
    assert lb.unrecorded_run("gru4rec", "toys", lb.train_command("gru4rec", "toys", threads=1)) is None
