"""The bundle format: one directory that serving needs and nothing else (no pickles, no torch).

```
manifest.json   what the bundle is (see MANIFEST_KEYS) and the sha256 of every other file
encoder.onnx    item_ids int64 [B, L] (+ event_types / gap_buckets int64 [B, L]) -> query float32 [B, D]
items.npy       item vector table float32 [n_items, D]; row i = internal id i, row 0 = padding
index.faiss     FAISS index over rows 1..n_items-1 of items.npy (FAISS id = internal id - 1)
vocab.parquet   internal id ``item`` <-> raw ``item_id``, plus item attributes for business rules
journey.onnx    optional: journey heads
```

Training writes bundles (``shopformer.train.export``) with :func:`write_manifest`; serving reads
them with :func:`open_bundle`, which refuses a bundle whose files are missing or changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shopformer.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ENCODER = "encoder.onnx"
ITEMS = "items.npy"
INDEX = "index.faiss"
VOCAB = "vocab.parquet"
JOURNEY = "journey.onnx"
REQUIRED_FILES = (ENCODER, ITEMS, INDEX, VOCAB)

# Keys every manifest carries (written by export, read by serving).
MANIFEST_KEYS = (
    "format",  # FORMAT_VERSION
    "name",  # model name (the registered model name when registered)
    "version",  # a string: registry version, or the run id / timestamp
    "created",  # ISO-8601 UTC
    "git_commit",
    "model",  # {"class": "SASRec", "config": {...}}
    "metrics",  # {"test/ndcg_10": ..., ...}
    "n_items",  # rows of items.npy, padding row 0 included
    "dim",
    "max_len",  # longest history the encoder takes; longer ones keep the most recent
    "opset",
    "inputs",  # encoder input names, e.g. ["item_ids"] or ["item_ids", "event_types", "gap_buckets"]
    "event_vocab",  # event type names by internal id ("<pad>" first); [] when unused
    "index",  # {"factory", "metric": "inner_product", "params": {...}, "recall": {"k", "value", "n_queries"}}
    "files",  # {file name: {"sha256": ..., "bytes": ...}} for every file but the manifest
)


class BundleError(UserError):
    """A bundle that cannot be used; the message names the bundle and what is wrong."""


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every file in ``directory`` into ``manifest["files"]`` and write ``manifest.json``."""
    directory = Path(directory)
    files = {
        p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise BundleError(f"bundle {directory}: cannot write a manifest, missing {', '.join(missing)}")
    manifest = {**manifest, "format": FORMAT_VERSION, "files": files}
    absent = [key for key in MANIFEST_KEYS if key not in manifest]
    if absent:
        raise BundleError(f"bundle {directory}: manifest lacks {', '.join(absent)}")
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=_json_default) + "\n")
    tmp.replace(directory / MANIFEST)
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise BundleError(f"bundle {directory}: no {MANIFEST} (not a bundle directory, or incomplete)")
    bundle_file(Path(directory), MANIFEST)  # not a link out of the bundle
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"bundle {directory}: {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BundleError(
            f"bundle {directory}: manifest format {found!r}, this version reads {FORMAT_VERSION}"
        )
    absent = [key for key in MANIFEST_KEYS if key not in manifest]
    if absent:
        raise BundleError(f"bundle {directory}: manifest lacks {', '.join(absent)}")
    return manifest


def verify_bundle(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest, once every file it lists is a plain file of the bundle (no path, no link out of
    the directory) with the recorded size and sha256."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError(f"bundle {directory}: no such directory")
    manifest = read_manifest(directory)
    files = manifest["files"]
    if not isinstance(files, dict):
        raise BundleError(f"bundle {directory}: manifest 'files' must map file names to hashes")
    for name in REQUIRED_FILES:
        if name not in files:
            raise BundleError(f"bundle {directory}: manifest lists no {name}")
    for name, entry in files.items():
        path = bundle_file(directory, name)
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not _is_count(entry.get("bytes"))
        ):
            raise BundleError(
                f"bundle {directory}: manifest entry of {name} needs 'sha256' and 'bytes', got {entry!r}"
            )
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise BundleError(
                f"bundle {directory}: {name} does not match its sha256 in {MANIFEST} "
                "(changed or truncated after export); re-export the bundle"
            )
    for key in ("n_items", "dim", "max_len"):
        if not _is_count(manifest[key]) or manifest[key] < 1:
            raise BundleError(
                f"bundle {directory}: manifest {key} must be a positive integer, got {manifest[key]!r}"
            )
    return manifest


def bundle_file(directory: Path, name: Any) -> Path:
    """``directory / name`` for a plain file name that stays inside the bundle; BundleError for a
    path (``../x``, ``/etc/passwd``, ``sub/x``), a link that leads out of the bundle, or no file."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or Path(name).name != name
        or "\\" in name
        or "\0" in name
    ):
        raise BundleError(f"bundle {directory}: manifest names a file outside the bundle: {name!r}")
    path = directory / name
    if path.is_symlink() and path.resolve().parent != directory.resolve():
        raise BundleError(
            f"bundle {directory}: {name} is a symbolic link out of the bundle (to {path.resolve()}); "
            "a bundle holds its own files"
        )
    if not path.is_file():
        raise BundleError(f"bundle {directory}: {name} is missing (the bundle is incomplete)")
    return path


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class BundleFiles:
    """A verified bundle's contents, loaded without pickle."""

    directory: Path
    manifest: dict[str, Any]
    items: np.ndarray  # float32 [n_items, D]
    vocab: pd.DataFrame  # columns item (internal id), item_id (raw), attributes

    @property
    def encoder_path(self) -> Path:
        return self.directory / ENCODER

    @property
    def journey_path(self) -> Path | None:
        path = self.directory / JOURNEY
        return path if JOURNEY in self.manifest["files"] else None


def open_bundle(directory: str | os.PathLike) -> BundleFiles:
    """Verify ``directory`` and load its item table and vocabulary (never unpickling anything)."""
    directory = Path(directory)
    manifest = verify_bundle(directory)
    items = _load_items(directory)
    n_items, dim = manifest["n_items"], manifest["dim"]
    if items.dtype != np.float32 or items.shape != (n_items, dim):
        raise BundleError(
            f"bundle {directory}: {ITEMS} is {items.dtype} {items.shape}, "
            f"manifest says float32 ({n_items}, {dim})"
        )
    try:
        vocab = pq.read_table(directory / VOCAB).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise BundleError(f"bundle {directory}: {VOCAB} is not a readable Parquet file ({exc})") from None
    if "item" not in vocab or "item_id" not in vocab:
        raise BundleError(f"bundle {directory}: {VOCAB} needs columns 'item' and 'item_id'")
    if len(vocab) != n_items - 1 or not np.array_equal(vocab["item"].to_numpy(), np.arange(1, n_items)):
        raise BundleError(f"bundle {directory}: {VOCAB} must list internal ids 1..{n_items - 1} in order")
    return BundleFiles(directory, manifest, items, vocab)


def _load_items(directory: Path) -> np.ndarray:
    """``items.npy`` as a plain array: a pickle, an object array or an ``.npz`` archive is refused."""
    try:
        items = np.load(directory / ITEMS, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BundleError(
            f"bundle {directory}: {ITEMS} is not a plain .npy array ({exc}); bundles hold no pickles"
        ) from None
    if not isinstance(items, np.ndarray):  # np.load opens a zip archive (.npz) too
        items.close()
        raise BundleError(f"bundle {directory}: {ITEMS} is an archive, not a plain .npy array")
    return items


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
