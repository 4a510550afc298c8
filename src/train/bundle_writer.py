"""Writing a bundle directory safely: refuse to clobber, stage in a sibling, manifest last, rename into place.

A half-written bundle never looks complete: files go to a temporary sibling directory, the manifest
(with the sha256 of every file, :func:`shopformer.serve.bundle.write_manifest`) is written last, and
the directory is renamed to its name only then.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from shopformer.serve.bundle import MANIFEST
from shopformer.train.onnx_export import ExportError


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite`` (before any slow work)."""
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists; choose another directory or pass overwrite=true")


@contextlib.contextmanager
def staged_bundle(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``out`` to write the bundle's files into; renamed to ``out`` when the
    body ends without error (an existing ``out`` is replaced only with ``overwrite``)."""
    out = Path(out)
    check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the bundle is for readers
    try:
        try:
            yield tmp
        except OSError as exc:  # a full disk, a quota, a vanished mount: one line, nothing half-written
            kept = " (the bundle already there is kept)" if out.exists() else ""
            raise ExportError(
                f"{out}: writing the bundle failed: {exc.strerror or exc}"
                f"{f' ({Path(exc.filename).name})' if exc.filename else ''}; no bundle was written{kept}"
            ) from None
        if not (tmp / MANIFEST).is_file():
            raise ExportError(f"{out}: the bundle was staged without a manifest")
        move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished bundle to ``out``; an existing one (``overwrite``) is moved aside first."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}-old-{time.time_ns()}")
    out.rename(old)
    tmp.rename(out)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()
