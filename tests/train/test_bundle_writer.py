"""The bundle writer: never clobbers, never leaves a half-written bundle, replaces atomically."""

from __future__ import annotations

import pytest

from shopformer.serve.bundle import ENCODER, INDEX, ITEMS, MANIFEST_KEYS, VOCAB, read_manifest, write_manifest
from shopformer.train.bundle_writer import staged_bundle
from shopformer.train.onnx_export import ExportError


def write(directory, text: str) -> None:
    for name in (ENCODER, ITEMS, INDEX, VOCAB):  # the writer does not read them: any bytes do
        (directory / name).write_text(text)
    (directory / "items.txt").write_text(text)
    write_manifest(directory, {**dict.fromkeys(MANIFEST_KEYS, None), "name": "t", "version": text})


def test_a_finished_bundle_appears_only_at_the_end(tmp_path):
    out = tmp_path / "bundle"
    with staged_bundle(out) as staging:
        write(staging, "1")
        assert not out.exists() and staging.parent == tmp_path
    assert (out / "items.txt").read_text() == "1" and read_manifest(out)["version"] == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # nothing staged is left behind


def test_a_failure_leaves_neither_a_bundle_nor_the_staging_directory(tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(RuntimeError), staged_bundle(out) as staging:
        write(staging, "1")
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []


def test_a_bundle_without_manifest_is_not_moved_into_place(tmp_path):
    with pytest.raises(ExportError, match="without a manifest"), staged_bundle(tmp_path / "b") as staging:
        (staging / "items.txt").write_text("1")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_bundle_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "bundle"
    with staged_bundle(out) as staging:
        write(staging, "1")
    with pytest.raises(ExportError, match="already exists"), staged_bundle(out) as staging:
        write(staging, "2")
    assert read_manifest(out)["version"] == "1"
    with staged_bundle(out, overwrite=True) as staging:
        write(staging, "2")
    assert read_manifest(out)["version"] == "2" and [p.name for p in tmp_path.iterdir()] == ["bundle"]
