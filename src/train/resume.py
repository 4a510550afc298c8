"""Resuming an interrupted run in its own directory (``resume=auto|last|<checkpoint>|null``).

A run writes ``checkpoints/last.ckpt`` at every validation and ``summary.json`` when it ends; a run
directory with the first and without the second was interrupted. ``resume``:

- ``auto`` (the default): the same command started again continues the newest interrupted run of
  this ``task_name`` that was started with the same overrides, in that run's directory;
- ``last``: the newest interrupted run of this ``task_name``, whatever its overrides;
- a checkpoint path: that checkpoint (in its own run directory when it lies in ``<run>/checkpoints/``);
- ``null`` / ``false``: always a fresh run.

The run directory is chosen by the ``resume_run_dir`` resolver in ``conf/hydra/default.yaml``, so that
the checkpoint callback's state (best score, best path) comes back whole: Lightning reloads it only
into the directory it was saved from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

FINISHED = "summary.json"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
AUTO, LATEST = "auto", "last"
# Keys that may differ between an interrupted run and the command that resumes it: how to resume, and
# how the machine runs it (CPU threads, log verbosity), not what is trained.
VOLATILE_KEYS = ("resume", "threads", "verbose")


def mode(resume: Any) -> str | None:
    """``auto``, ``last``, a checkpoint path, or None (fresh)."""
    if resume is None or resume is False or str(resume).lower() in ("", "null", "none", "false", "off"):
        return None
    return str(resume)


def interrupted(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that saved a checkpoint and did not finish."""
    return (run_dir / CHECKPOINTS / LAST).is_file() and not (run_dir / FINISHED).exists()


def run_overrides(run_dir: Path) -> list[str] | None:
    """The command-line overrides Hydra recorded for the run in ``run_dir`` (None: none recorded)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    return _stable(yaml.safe_load(path.read_text()) or [])


def _stable(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in VOLATILE_KEYS)


def newest_interrupted(root: Path, overrides: list[str] | None) -> Path | None:
    """The newest interrupted run under ``root`` (``outputs/<task_name>``), with these overrides if given."""
    if not root.is_dir():
        return None
    runs = sorted(
        (d for d in root.iterdir() if d.is_dir() and interrupted(d)), key=lambda d: d.name, reverse=True
    )
    wanted = None if overrides is None else _stable(overrides)
    return next((d for d in runs if wanted is None or run_overrides(d) == wanted), None)


def current_overrides() -> list[str]:
    """The task overrides of the Hydra job being set up (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # no Hydra job (tests that compose a config)
        return []


def resume_run_dir(new_dir: str, resume: Any = None) -> str:
    """Hydra's run directory: ``new_dir`` (``outputs/<task_name>/<time>``), or the directory of the
    run that ``resume`` continues."""
    chosen = mode(resume)
    if chosen is None:
        return new_dir
    root = Path(new_dir).parent
    if chosen in (AUTO, LATEST):
        found = newest_interrupted(root, current_overrides() if chosen == AUTO else None)
        return str(found) if found else new_dir
    ckpt = Path(chosen)
    return str(ckpt.parent.parent) if ckpt.parent.name == CHECKPOINTS else new_dir


def checkpoint_to_resume(cfg: DictConfig) -> Path | None:
    """The checkpoint this run continues from, or None for a fresh start."""
    chosen = mode(cfg.get("resume"))
    if chosen is None:
        return None
    if chosen not in (AUTO, LATEST):
        return Path(chosen)
    run_dir = Path(cfg.trainer.default_root_dir)
    last = Path(cfg.callbacks.model_checkpoint.dirpath) / LAST if cfg.get("callbacks") else None
    if last is None or not last.is_file() or (run_dir / FINISHED).exists():
        return None
    return last


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved run config without the keys that may change on resume."""
    return {k: v for k, v in config.items() if k not in VOLATILE_KEYS}


def differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs."""
    keys = sorted(set(saved) | set(current))
    out: list[str] = []
    for key in keys:
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out
