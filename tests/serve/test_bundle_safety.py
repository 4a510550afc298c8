"""Bundles load without pickle and only from their own directory: every other file is refused clearly."""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile

import numpy as np
import pytest

from shopformer.serve.bundle import BundleError, open_bundle, sha256_file, verify_bundle
from shopformer.serve.recommender import Recommender


@pytest.fixture
def copy(bundle, tmp_path):
    """A private copy of the plain test bundle, free to break."""
    out = tmp_path / "bundle"
    shutil.copytree(bundle.path, out)
    return out


def edit_manifest(directory, change) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    change(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def rehash(directory, name: str) -> None:
    """Record ``name``'s current hash and size, as an attacker who can write the manifest would."""

    def change(manifest):
        path = directory / name
        manifest["files"][name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}

    edit_manifest(directory, change)


class Payload:
    """Unpickling this would create a file: the test checks that it never happens."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_intact_copy_loads(copy):
    assert open_bundle(copy).items.dtype == np.float32


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda path, obj: np.save(path, np.array([obj, 1], dtype=object)), id="object-array"),
        pytest.param(lambda path, obj: path.write_bytes(pickle.dumps(obj)), id="plain-pickle"),
        pytest.param(
            lambda path, obj: zipfile.ZipFile(path, "w").writestr("a.npy", pickle.dumps(obj)),
            id="npz-archive",
        ),
    ],
)
def test_items_npy_with_a_pickle_payload_is_refused_unopened(copy, tmp_path, write):
    marker = tmp_path / "unpickled"
    write(copy / "items.npy", Payload(marker))
    rehash(copy, "items.npy")
    with pytest.raises(BundleError, match=r"items\.npy is (not a plain \.npy array|an archive)") as info:
        Recommender.load(copy)
    assert str(copy) in str(info.value)
    assert not marker.exists()  # nothing was unpickled


def test_a_manifest_that_is_really_a_pickle_is_refused(copy, tmp_path):
    marker = tmp_path / "unpickled"
    (copy / "manifest.json").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(BundleError, match=r"manifest\.json is not valid JSON"):
        Recommender.load(copy)
    assert not marker.exists()


def test_a_vocab_that_is_not_parquet_is_refused(copy):
    (copy / "vocab.parquet").write_bytes(pickle.dumps({"item": [1]}))
    rehash(copy, "vocab.parquet")
    with pytest.raises(BundleError, match=r"vocab\.parquet is not a readable Parquet file"):
        Recommender.load(copy)


@pytest.mark.parametrize("name", ["../outside.npy", "/etc/hostname", "sub/items.npy", "..", "", "a\\b"])
def test_a_manifest_naming_files_outside_the_bundle_is_refused(copy, name):
    (copy.parent / "outside.npy").write_bytes((copy / "items.npy").read_bytes())
    edit_manifest(copy, lambda m: m["files"].update({name: {"sha256": "0" * 64, "bytes": 1}}))
    with pytest.raises(BundleError, match="manifest names a file outside the bundle") as info:
        verify_bundle(copy)
    assert repr(name) in str(info.value)


def test_a_symlink_out_of_the_bundle_is_refused(copy, tmp_path):
    outside = tmp_path / "elsewhere.npy"
    shutil.move(copy / "items.npy", outside)
    (copy / "items.npy").symlink_to(outside)  # same bytes, so the sha256 still matches
    with pytest.raises(BundleError, match=r"items\.npy is a symbolic link out of the bundle"):
        Recommender.load(copy)


def test_a_manifest_symlinked_from_elsewhere_is_refused(copy, tmp_path):
    outside = tmp_path / "manifest.json"
    shutil.move(copy / "manifest.json", outside)
    (copy / "manifest.json").symlink_to(outside)
    with pytest.raises(BundleError, match=r"manifest\.json is a symbolic link out of the bundle"):
        verify_bundle(copy)


def test_a_symlink_within_the_bundle_and_a_symlinked_bundle_directory_load(copy, tmp_path):
    (copy / "items.npy").rename(copy / "items-v1.npy")
    (copy / "items.npy").symlink_to("items-v1.npy")
    (tmp_path / "current").symlink_to(copy, target_is_directory=True)
    assert open_bundle(tmp_path / "current").items.shape[0] > 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(files=["items.npy"]), "'files' must map file names"),
        (lambda m: m["files"].update({"items.npy": "abc"}), "entry of items.npy needs 'sha256' and 'bytes'"),
        (lambda m: m["files"]["items.npy"].update(bytes="12"), "entry of items.npy needs"),
        (lambda m: m.update(n_items="many"), "n_items must be a positive integer, got 'many'"),
        (lambda m: m.update(dim=0), "dim must be a positive integer, got 0"),
    ],
)
def test_malformed_manifest_fields_are_named(copy, change, message):
    edit_manifest(copy, change)
    with pytest.raises(BundleError, match=message):
        verify_bundle(copy)
