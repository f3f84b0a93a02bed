"""Backups of an index directory, taken while servers write, and their restore to a new folder.

A backup is a folder::

    <backup>/store.sqlite        the database at one log position (SQLite's online backup)
    <backup>/snapshots/...       the FAISS snapshot files that database names
    <backup>/model.pt            the checkpoint of the index
    <backup>/uploads/...         the uploaded images its items reference
    <backup>/backup.json         the manifest: format, source, log position, counts, sha256 of every file

Items whose files live outside the index (the images it was built from) keep their paths: those files are
the user's, not the index's.  Uploads are referenced by absolute paths inside the index folder, so a restore
rewrites them to the restored folder.  A Milvus collection is backed up with Milvus's own tool.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from durablefile import atomic_write, file_sha256, fsync_dir, fsync_file
from engine.build import check_index
from engine.layout import COPY_MODEL_FILE, MODEL_FILE, UPLOADS_DIR
from index.backup import copy_store, paths_under, relocate_paths
from index.db import DB_FILE
from index.location import is_milvus
from similarity.version import simsearch_version

logger = logging.getLogger(__name__)

MANIFEST_FILE = "backup.json"
BACKUP_FORMAT = "simsearch-backup"
BACKUP_FORMAT_VERSION = 1
MILVUS_BACKUP_TOOL = "https://github.com/zilliztech/milvus-backup"


class BackupError(Exception):
    """A backup cannot be taken or restored: a Milvus location, a target that exists, a damaged backup."""


@dataclass(frozen=True)
class BackupManifest:
    """``backup.json``: ``log_head`` is the log seq captured (every write with seq <= log_head is in the
    backup, none after); ``upload_folders`` the source's uploads folder (as stored in item paths);
    ``files``: relative path -> sha256 of every other file of the backup; ``missing_uploads``: uploads of
    items in the backup whose file was deleted (with its item, after the log position) before it was copied."""

    source: str
    log_head: int
    items: int
    uploads: int
    upload_folders: list[str]
    files: dict[str, str]
    missing_uploads: list[str] = field(default_factory=list)
    created_at: float = 0.0
    seconds: float = 0.0
    simsearch_version: str = ""
    format: str = BACKUP_FORMAT
    format_version: int = BACKUP_FORMAT_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls, backup: str | os.PathLike) -> "BackupManifest":
        path = Path(backup) / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BackupError(f"{backup} is not a simsearch backup (no {MANIFEST_FILE})") from None
        except ValueError as exc:
            raise BackupError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != BACKUP_FORMAT:
            raise BackupError(f"{path} is not a simsearch backup manifest")
        if data.get("format_version") != BACKUP_FORMAT_VERSION:
            raise BackupError(f"{path} has backup format version {data.get('format_version')!r}; this simsearch "
                              f"reads version {BACKUP_FORMAT_VERSION}")
        return cls(**data)


@dataclass(frozen=True)
class RestoreSummary:
    index: str
    log_head: int
    items: int
    uploads: int
    paths_rewritten: int

    def to_dict(self) -> dict:
        return asdict(self)


def backup_index(index: str | os.PathLike, dest: str | os.PathLike) -> BackupManifest:
    """Back up the index directory ``index`` into the new folder ``dest`` while servers may write to it.

    The folder appears complete or not at all (written beside it under a temporary name, then renamed)."""
    source = os.fspath(index)
    if is_milvus(source):
        raise BackupError(f"{source} is a Milvus collection: back it up with Milvus's own tool, milvus-backup "
                          f"({MILVUS_BACKUP_TOOL}); simsearch backs up index directories")
    source = os.path.abspath(source)
    if not os.path.isfile(os.path.join(source, DB_FILE)):
        raise BackupError(f"{source} is not an index directory (no {DB_FILE})")
    model = os.path.join(source, MODEL_FILE)
    if not os.path.isfile(model):
        raise BackupError(f"{source} has no {MODEL_FILE}")
    started = time.perf_counter()
    models = [name for name in (MODEL_FILE, COPY_MODEL_FILE) if os.path.isfile(os.path.join(source, name))]
    with _new_folder(dest) as folder:
        store = copy_store(source, folder)
        for name in models:  # the copy descriptor's model too, for an index that keeps one
            shutil.copyfile(os.path.join(source, name), os.path.join(folder, name))
        upload_folders = _upload_folders(source)
        copied, missing = _copy_uploads(os.path.join(folder, DB_FILE), upload_folders, folder)
        files = {name: file_sha256(os.path.join(folder, name)) for name in (*store.files, *models, *copied)}
        for name in files:
            fsync_file(os.path.join(folder, name))
        manifest = BackupManifest(source=source, log_head=store.head, items=store.items, uploads=len(copied),
                                  upload_folders=upload_folders, files=files, missing_uploads=missing,
                                  created_at=time.time(), seconds=round(time.perf_counter() - started, 3),
                                  simsearch_version=simsearch_version())
        atomic_write(os.path.join(folder, MANIFEST_FILE),
                     (json.dumps(manifest.to_dict(), indent=2) + "\n").encode("utf-8"))
    logger.info("backed up %s at log seq %d into %s: %d items, %d uploads", source, store.head, dest, store.items,
                len(copied))
    return manifest


def restore_index(backup: str | os.PathLike, target: str | os.PathLike) -> RestoreSummary:
    """Restore ``backup`` as the new index directory ``target``, which must not exist (or be an empty folder):
    a live index is never overwritten.  Every file is checked against its sha256 as it is copied; upload
    paths are rewritten to ``target/uploads``; the restored index is opened once to check it."""
    manifest = BackupManifest.read(backup)
    target = os.path.abspath(os.fspath(target))
    if is_milvus(target):
        raise BackupError(f"{target} is a Milvus location: restore a Milvus collection with milvus-backup "
                          f"({MILVUS_BACKUP_TOOL})")
    with _new_folder(target) as folder:
        for name, sha256 in manifest.files.items():
            _copy_checked(Path(backup) / name, Path(folder) / name, sha256)
        rewritten = relocate_paths(os.path.join(folder, DB_FILE), manifest.upload_folders,
                                   os.path.join(target, UPLOADS_DIR))
        fsync_file(os.path.join(folder, DB_FILE))
    check_index(target)
    logger.info("restored %s (log seq %d) into %s", backup, manifest.log_head, target)
    return RestoreSummary(target, manifest.log_head, manifest.items, manifest.uploads, rewritten)


def _upload_folders(home: str) -> list[str]:
    """The uploads folder of ``home`` as item paths may spell it (absolute, and with symlinks resolved)."""
    folder = os.path.join(home, UPLOADS_DIR)
    return sorted({folder, os.path.realpath(folder)})


def _copy_uploads(db_file: str, folders: list[str], dest: str) -> tuple[list[str], list[str]]:
    """Copy the uploads the items of ``db_file`` reference into ``dest/uploads``; returns the copied files
    (relative to ``dest``) and the referenced files that no longer exist."""
    copied, missing = [], []
    for _item_id, path in paths_under(db_file, folders):
        relative = os.path.join(UPLOADS_DIR, os.path.basename(path))
        if not copied:
            os.makedirs(os.path.join(dest, UPLOADS_DIR), exist_ok=True)
        try:
            shutil.copyfile(path, os.path.join(dest, relative))
        except FileNotFoundError:
            missing.append(relative)
            continue
        copied.append(relative)
    if missing:
        logger.warning("%d upload(s) were deleted before they were copied (their items were deleted after the "
                       "backup's log position)", len(missing))
    return copied, missing


def _copy_checked(source: Path, target: Path, sha256: str) -> None:
    """Copy ``source`` to ``target`` (fsynced) and check the copy's sha256; ``BackupError`` on a mismatch."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(source, target)
    except FileNotFoundError:
        raise BackupError(f"the backup lacks {source} ({MANIFEST_FILE} lists it): it is incomplete") from None
    if file_sha256(target) != sha256:
        raise BackupError(f"{source} does not match its sha256 in {MANIFEST_FILE}: the backup is damaged")
    fsync_file(target)


@contextmanager
def _new_folder(path: str | os.PathLike) -> Iterator[str]:
    """A temporary folder beside ``path`` to fill; renamed to ``path`` when the block ends (removed if it
    raises).  ``path`` must not exist, or be an empty folder (a live index is never replaced)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and not (os.path.isdir(path) and not os.listdir(path)):
        raise FileExistsError(f"{path} exists and is not an empty folder; refusing to overwrite it")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    temp = os.path.join(parent, f".{os.path.basename(path)}.{secrets.token_hex(8)}.partial")
    os.mkdir(temp)
    try:
        yield temp
        for root, _dirs, _files in os.walk(temp):
            fsync_dir(root)
        if os.path.isdir(path):
            os.rmdir(path)  # empty (checked above); fails if something was written there meanwhile
        os.rename(temp, path)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
