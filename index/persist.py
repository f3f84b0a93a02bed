"""On-disk layout of an index directory, crash-safe saves, and the model-compatibility check.

Layout of a directory at generation ``g``::

    manifest.json        the commit point: names the generation's files, their sha256, model info, config
    index.<g>.faiss      faiss.write_index of the index (absent while an "auto" index is still empty)
    meta.<g>.sqlite      item metadata, id counter, tombstones

A save writes ``index.<g+1>.faiss`` and ``meta.<g+1>.sqlite`` (each to a ``.tmp`` file, fsync, rename), then
replaces ``manifest.json`` the same way, then deletes older generations.  A crash at any point leaves a
manifest naming a complete, matching pair of files: the old one before the rename of the manifest, the new
one after.  One process writes a directory at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable

from index.errors import IndexMismatchError, IndexStoreError

logger = logging.getLogger(__name__)

FORMAT = "simsearch-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FIELDS = ("checkpoint_sha256", "embedding_dim", "metric", "preprocess")
GENERATION_FILE = re.compile(r"^(index|meta)\.(\d+)\.(faiss|sqlite)(\.tmp)?$")


def index_file(generation: int) -> str:
    return f"index.{generation}.faiss"


def meta_file(generation: int) -> str:
    return f"meta.{generation}.sqlite"


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync the result, and rename it over ``path``."""
    tmp = path + ".tmp"
    write(tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_manifest(directory: str, manifest: dict) -> None:
    """Atomically replace ``directory/manifest.json`` (the commit point of a save)."""
    text = json.dumps(manifest, indent=2, sort_keys=True)

    def write(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write(text + "\n")

    write_file_atomic(os.path.join(directory, MANIFEST), write)
    fsync_dir(directory)


def read_manifest(directory: str) -> dict:
    """Parse and sanity-check ``directory/manifest.json``; raise ``IndexStoreError`` with the reason."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isdir(directory):
        raise IndexStoreError(f"index directory {directory} does not exist")
    try:
        with open(path) as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        raise IndexStoreError(f"{directory} is not an index directory: {MANIFEST} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexStoreError(f"index manifest {path} is unreadable or corrupt: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexStoreError(f"{path} is not a simsearch index manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexStoreError(f"{path} has format version {manifest.get('format_version')!r}; "
                              f"this code reads version {FORMAT_VERSION}")
    for key in ("generation", "dim", "model", "config", "files", "checksums"):
        if key not in manifest:
            raise IndexStoreError(f"index manifest {path} lacks the field {key!r}")
    return manifest


def verify_file(directory: str, name: str, expected_sha256: str | None) -> str:
    """Full path of a generation file, after checking it exists and matches its recorded sha256."""
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise IndexStoreError(f"index file {path} named by the manifest is missing")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise IndexStoreError(f"index file {path} is corrupt (sha256 does not match the manifest)")
    return path


def remove_stale_generations(directory: str, keep: int) -> None:
    """Delete generation files (and leftover ``.tmp`` files) other than generation ``keep``."""
    for name in os.listdir(directory):
        match = GENERATION_FILE.match(name)
        if match and (int(match.group(2)) != keep or match.group(4)):
            try:
                os.remove(os.path.join(directory, name))
            except OSError as exc:  # a leftover is harmless; the next save retries
                logger.warning("could not remove stale index file %s: %s", name, exc)


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def validate_model_info(model_info: dict, dim: int) -> dict:
    """Check ``model_info`` names the identity fields and matches ``dim``; return a JSON-safe copy."""
    if not isinstance(model_info, dict):
        raise ValueError(f"model_info must be a dict, got {type(model_info).__name__}")
    missing = [f for f in MODEL_FIELDS if f not in model_info]
    if missing:
        raise ValueError(f"model_info lacks the field(s) {missing}; required: {list(MODEL_FIELDS)}")
    if model_info["embedding_dim"] != dim:
        raise ValueError(f"model_info embedding_dim={model_info['embedding_dim']!r} does not match dim={dim}")
    if not isinstance(model_info["preprocess"], dict):
        raise ValueError("model_info['preprocess'] must be a dict")
    try:
        return json.loads(json.dumps(model_info))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model_info must be JSON-serialisable: {exc}") from None


def check_model(stored: dict, expected: dict) -> None:
    """Raise ``IndexMismatchError`` naming the first identity field (``MODEL_FIELDS``) that differs."""
    for field in MODEL_FIELDS:
        if field not in expected:
            raise ValueError(f"expect_model lacks the field {field!r}; required: {list(MODEL_FIELDS)}")
        mine, theirs = stored.get(field), expected[field]
        if _canonical(mine) != _canonical(theirs):
            raise IndexMismatchError(field, mine, theirs)
