"""The README's five-minute tour, timed on a fresh clone: what a newcomer does, and how long it takes.

    .venv/bin/python benchmarks/readme_tour.py [--workdir DIR] [--keep]

Clones this repository (its committed HEAD) into a new folder with ``shared/`` beside it, then runs the
commands of README.md's "A five-minute tour" block in order, as written there. Only what a person
would fill in by hand is filled in: the two run ids of ``shopformer-compare RUN_A RUN_B``, the bundle
of ``shopformer-serve`` (from the second run's JSON line) and free ports for the two servers, which run
until they answer and are then stopped (``mlflow ui`` until its page loads; ``shopformer-serve`` until
the README's ``curl`` is answered). It also checks what the issue promises of the runs: the comparison
shows both runs and the config key that differs, and each run has its learning-curve and
popularity-bias PNGs as MLflow artifacts. Prints one table (step, seconds, result) and the total
against the 10-minute budget. A tour command this script does not know fails it: README and script
stay in step (``tests/benchmarks/test_readme_tour.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTION = "## A five-minute tour"
BUDGET_S = 600.0
PLOTS = ("learning_curves.png", "popularity_bias.png")


def tour_commands(readme: str) -> list[str]:
    """The commands of the first ``bash`` block under the tour heading, continuations joined,
    comments dropped."""
    start = readme.index(SECTION)
    block = re.search(r"```bash\n(.*?)```", readme[start:], re.S)
    if block is None:
        raise SystemExit(f"README.md: no bash block under {SECTION!r}")
    commands, pending = [], ""
    for raw in block.group(1).splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = (pending + line.strip()).strip()
        pending = ""
        words = shlex.split(line, comments=True)
        if words:
            commands.append(shlex.join(words))
    return commands


# What each tour command is, by its first words: the step name the table shows.
KINDS = {
    "make demo": "demo",
    ".venv/bin/shopformer-train": "second run",
    ".venv/bin/shopformer-compare RUN_A RUN_B": "compare two",
    ".venv/bin/shopformer-compare": "compare",
    ".venv/bin/mlflow ui": "mlflow ui",
    ".venv/bin/shopformer-serve": "serve",
    "curl": "query",
}


def kind(command: str) -> str:
    """The step a tour command is (the longest matching prefix of ``KINDS``)."""
    for prefix in sorted(KINDS, key=len, reverse=True):
        if command == prefix or command.startswith(prefix + " "):
            return KINDS[prefix]
    raise SystemExit(f"README tour: this script does not know the command {command!r} (add it to KINDS)")


@dataclass
class Tour:
    """The fresh clone and what the tour has learnt so far (run ids, bundle, a running server)."""

    repo: Path
    run_ids: list[str] = field(default_factory=list)
    bundle: str | None = None
    serve_port: int | None = None
    server: subprocess.Popen | None = None
    rows: list[tuple[str, float, str]] = field(default_factory=list)

    def run(self, command: str | list[str], timeout: float = 1200) -> str:
        """Run in the clone; its output, or SystemExit with the output's end when it fails."""
        shell = isinstance(command, str)
        done = subprocess.run(
            command, shell=shell, cwd=self.repo, capture_output=True, text=True, timeout=timeout
        )
        out = done.stdout + done.stderr
        if done.returncode != 0:
            raise SystemExit(f"`{command}` exited {done.returncode}:\n{out[-3000:]}")
        return out


def json_line(output: str) -> dict:
    """The last JSON line that ``shopformer-train`` printed."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"no JSON line in the training output:\n{output[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {seconds:.0f} s")


def stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def step_demo(tour: Tour, command: str) -> str:
    out = tour.run(command)
    tour.run_ids.append(json_line((tour.repo / ".cache" / "demo-train.out").read_text())["run_id"])
    answer = [line for line in out.splitlines() if "category" in line or "price" in line]
    noise = library_noise(out)
    return (
        f"run {tour.run_ids[-1][:8]}; answer printed with item attributes: {'yes' if answer else 'NO'}; "
        f"warning or tip lines after the install: {len(noise)}"
        + (f" (first: {noise[0][:120]!r})" if noise else "")
    )


def library_noise(make_output: str) -> list[str]:
    """Lines of ``make demo``'s output, after the install step (pip's own lines are this machine's
    pip configuration), that look like a library warning or tip."""
    lines = make_output.splitlines()
    first = next((i for i, line in enumerate(lines) if "shopformer-data" in line), 0)
    return [line for line in lines[first:] if re.search(r"warn|\btip\b|deprecat", line, re.I)]


def step_train(tour: Tour, command: str) -> str:
    line = json_line(tour.run(command))
    tour.run_ids.append(line["run_id"])
    tour.bundle = line.get("bundle")
    return f"run {line['run_id'][:8]}, test NDCG@10 {line['test'].get('ndcg@10', float('nan')):.4f}"


def step_compare(tour: Tour, command: str) -> str:
    out = tour.run(command)
    shown = [run[:8] for run in tour.run_ids if run[:8] in out]
    return f"runs shown: {len(shown)} of {len(tour.run_ids)}; differing key 'loss' shown: {'loss' in out}"


def step_compare_two(tour: Tour, command: str) -> str:
    a, b = tour.run_ids[-2:]
    out = tour.run(command.replace("RUN_A", a).replace("RUN_B", b))
    return f"config diff names the loss: {'loss' in out}; metric deltas: {'ndcg' in out.lower()}"


def step_mlflow_ui(tour: Tour, command: str) -> str:
    port = free_port()
    ui = subprocess.Popen(
        [*shlex.split(command), "--port", str(port)],
        cwd=tour.repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/")
    finally:
        stop(ui)
    return "page answered (HTTP 200)"


def step_serve(tour: Tour, command: str) -> str:
    if not tour.bundle:
        raise SystemExit("the second run's JSON line names no bundle")
    tour.serve_port = free_port()
    filled = {"bundle": f"bundle={tour.bundle}", "port": f"port={tour.serve_port}"}
    words = [filled.get(w.split("=", 1)[0], w) for w in shlex.split(command)]
    tour.server = subprocess.Popen(words, cwd=tour.repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{tour.serve_port}/health")
    return f"serving on port {tour.serve_port}"


def step_query(tour: Tour, command: str) -> str:
    try:
        answer = json.loads(tour.run(command.replace("localhost:8000", f"127.0.0.1:{tour.serve_port}")))
    finally:
        stop(tour.server)
    items, unknown = answer.get("items", []), answer.get("unknown_items", [])
    return f"{len(items)} items recommended; the README's session items unknown to the model: {len(unknown)}"


STEPS: dict[str, Callable[[Tour, str], str]] = {
    "demo": step_demo,
    "second run": step_train,
    "compare": step_compare,
    "compare two": step_compare_two,
    "mlflow ui": step_mlflow_ui,
    "serve": step_serve,
    "query": step_query,
}


def artifacts_row(tour: Tour) -> tuple[str, float, str]:
    """Whether every tour run has both plots as MLflow artifacts (read with the clone's MLflow)."""
    code = (
        "import json, sys; from mlflow import MlflowClient; "
        "c = MlflowClient(tracking_uri='sqlite:///mlflow/mlflow.db'); "
        "print(json.dumps({r: [a.path for a in c.list_artifacts(r, 'plots')] for r in sys.argv[1:]}))"
    )
    started = time.perf_counter()
    listed = json.loads(tour.run([".venv/bin/python", "-c", code, *tour.run_ids]).splitlines()[-1])
    have = sum(all(f"plots/{p}" in paths for p in PLOTS) for paths in listed.values())
    return (
        "plots as MLflow artifacts",
        time.perf_counter() - started,
        f"{have} of {len(listed)} runs have both",
    )


def clone(workdir: Path) -> Path:
    repo = workdir / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(repo)], check=True)
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (workdir / "shared").symlink_to(shared)
    return repo


def machine() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    return f"{os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where to clone (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the clone afterwards")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="readme_tour_"))
    workdir.mkdir(parents=True, exist_ok=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    print(f"README tour on {machine()}, commit {head.stdout.strip()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    tour = Tour(clone(workdir))
    try:
        for command in tour_commands((tour.repo / "README.md").read_text()):
            step = kind(command)
            print(f"{step}: {command}", flush=True)
            started = time.perf_counter()
            result = STEPS[step](tour, command)
            tour.rows.append((step, time.perf_counter() - started, result))
        tour.rows.append(artifacts_row(tour))
    finally:
        stop(tour.server)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    total = sum(seconds for _, seconds, _ in tour.rows)
    print("\n| step | seconds | result |\n|---|---|---|")
    for step, seconds, result in tour.rows:
        print(f"| {step} | {seconds:.1f} | {result} |")
    verdict = "met" if total <= BUDGET_S else "NOT met"
    print(f"| **total** | **{total:.0f}** | 10-minute budget {verdict} (install included: fresh clone) |")


if __name__ == "__main__":
    sys.exit(main())
