"""Where and from what a figure came: the processor's name and the git commit of the working tree.

Torch-free and dependency-free, so training, serving-side tools and benchmarks all stamp their output
the same way.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def processor() -> str:
    """The CPU model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(short: bool = False, dirty_mark: str = "-dirty") -> str:
    """The commit of the working tree (``dirty_mark`` appended when tracked files changed), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", *(["--short"] if short else []), "HEAD"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}{dirty_mark}" if dirty else sha


def short_commit() -> str:
    """The short commit, ``+dirty`` appended when tracked files changed (as benchmarks print it)."""
    return git_commit(short=True, dirty_mark="+dirty")
