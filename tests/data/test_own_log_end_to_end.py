"""Acceptance: an anonymous-session log with a partly empty user_id and ``;`` trains with one command.

Run as a user would (the installed entry points, in a subprocess); a bad file ends with exit code 2
and one line on stderr that quotes the file's own text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from shopformer.data.synthetic import SyntheticConfig, generate

TINY = [
    "logger=none",
    "export=false",
    "trainer.max_epochs=1",
    "trainer.precision=32-true",
    "model.dim=16",
    "model.n_blocks=1",
    "datamodule.max_len=20",
]


def anonymous_log(tmp_path: Path, blank: float = 0.7) -> tuple[Path, int]:
    """The synthetic shop with most user ids blanked, written as a ``;`` file; its row count."""
    events, _ = generate(SyntheticConfig(n_users=80, n_items=60, seed=7))
    events = events.astype({"user_id": object})
    events.loc[np.random.default_rng(0).random(len(events)) < blank, "user_id"] = None
    path = tmp_path / "events.csv"
    events.rename(columns={"session_id": "visit"}).to_csv(path, sep=";", index=False)
    return path, len(events)


def command(tmp_path: Path, program: str, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(program)
    env = {**os.environ, "SHOPFORMER_CACHE": str(tmp_path / "cache")}
    return subprocess.run(
        [str(exe), *args, f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_anonymous_semicolon_log_trains_with_one_command(tmp_path):
    path, rows = anonymous_log(tmp_path)
    assert path.read_text().splitlines()[1].startswith(";")  # the first user id is blank
    result = command(
        tmp_path,
        "shopformer-train",
        "data=csv",
        f"data.path={path}",
        "data.source.sep=semicolon",
        "data.columns.session_id=visit",
        "data.sequence_key=session",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and summary["test"]["n"] > 0
    assert 0.0 < summary["test"]["hr@10"] <= 1.0
    (meta,) = (tmp_path / "cache").glob("csv-*/meta.json")
    report = json.loads(meta.read_text())["report"]
    dropped = sum(v for k, v in report.items() if k.startswith("dropped"))
    assert report["rows in source"] == rows == report["events kept"] + dropped


def test_bad_log_gives_exit_code_2_and_one_line_with_the_files_text(tmp_path):
    path, _ = anonymous_log(tmp_path)
    lines = path.read_text().splitlines()
    lines[17] = lines[17].replace(lines[17].split(";")[3], "17 Jan, sometime", 1)  # the timestamp cell
    path.write_text("\n".join(lines) + "\n")
    result = command(
        tmp_path, "shopformer-data", "data=csv", f"data.path={path}", "data.columns.session_id=visit"
    )
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in result.stderr, result.stderr
    assert err[0].startswith(f"error: {path}: column 'timestamp' has unparseable timestamps")
    assert "first at line 18: timestamp='17 Jan, sometime'" in err[0]
    # Without the session column mapped, the blank user ids are the problem, quoted as the file has them.
    result = command(
        tmp_path, "shopformer-data", "data=csv", f"data.path={path}", "data.source.sep=semicolon"
    )
    assert result.returncode == 2 and "column 'user_id' has null ids" in result.stderr
    assert "user_id=''" in result.stderr and "np.float64" not in result.stderr
