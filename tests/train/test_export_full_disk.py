"""A full disk during export leaves no half-written bundle, keeps the bundle already there, and says
so in one line."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import torch

from shopformer.models.sasrec import SASRec
from shopformer.serve.bundle import verify_bundle
from shopformer.train.bundle_export import export_bundle
from shopformer.train.bundle_writer import staged_bundle
from shopformer.train.config import build_datamodule
from shopformer.train.onnx_export import ExportError
from tests.train.runs import compose_train


@pytest.fixture(scope="module")
def dm(tmp_path_factory):
    datamodule = build_datamodule(compose_train(tmp_path_factory.mktemp("data")))
    datamodule.setup()
    return datamodule


def _export(dm, out: Path, overwrite: bool = False) -> Path:
    torch.manual_seed(0)
    model = SASRec(dm.n_items, dim=64, max_len=20)
    return export_bundle(model, dm.data.item_vocab, out, name="t", version="1", overwrite=overwrite)


@pytest.fixture
def small_disk(tmp_path):
    """A 700 kB tmpfs: room for one bundle, not for a second one staged beside it."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip()[:80]})")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_keeps_the_old_bundle_and_leaves_nothing_staged(dm, small_disk):
    out = small_disk / "bundle"
    _export(dm, out)
    before = sorted(p.name for p in small_disk.iterdir())
    with pytest.raises(ExportError) as err:
        _export(dm, out, overwrite=True)
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message and "no bundle was written" in message
    assert "already there is kept" in message
    assert sorted(p.name for p in small_disk.iterdir()) == before == ["bundle"]  # no staging directory left
    verify_bundle(out)  # the old bundle is whole


def test_a_write_error_in_staging_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "bundle"
    with (
        pytest.raises(ExportError, match="No space left on device; no bundle was written$"),
        staged_bundle(out) as s,
    ):
        (s / "items.npy").write_bytes(b"x")
        with open("/dev/full", "wb") as full:  # the kernel's always-full device: a real ENOSPC
            full.write(b"x" * 100_000)
    assert list(tmp_path.iterdir()) == []
