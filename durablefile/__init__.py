"""Durable files: the one atomic file write and the one sha256 of a file that every part of simsearch uses
(the model checkpoint, ONNX exports, FAISS snapshots, the index database, uploads, reports).

A top-level package on the standard library alone, because ``similarity/`` may not import ``index/`` and
``index/`` may not import ``similarity/`` (torch): it sits below every product package and imports none.

:func:`atomic_path` and :func:`atomic_write` write to a fresh temporary name beside the target (128 random
bits, created exclusively: two writers never share one), fsync it, ``os.replace`` it over the target and fsync
the folder.  A reader sees the old file or the whole new one, never a part; concurrent writers of one target
all succeed and the last rename wins; when writing fails the old file is untouched and the temporary (with
any sidecar named after it, such as SQLite's ``-wal``) is removed.
"""

from __future__ import annotations

import glob
import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

__all__ = ["FOLDER_MISSING", "atomic_path", "atomic_write", "bytes_sha256", "file_sha256", "folder_write_problem",
           "free_bytes", "fsync_dir", "fsync_file"]

TEMP_SUFFIX = ".tmp"
CHUNK_BYTES = 1 << 22  # 4 MiB: file_sha256 reads in blocks this size


def fsync_file(path: str | os.PathLike) -> None:
    """Flush ``path``'s content (or a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename, a new file or a removal in ``directory`` durable (the folder itself is synced)."""
    fsync_file(directory)


FOLDER_MISSING = "the folder does not exist"  # what folder_write_problem says of a deleted (or moved) folder


def folder_write_problem(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written in ``folder`` (a read-only file system, or no write permission), or None.
    Cheap (one ``statvfs`` and one ``access``); a full disk is not seen here (see :func:`free_bytes`)."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "the file system is read-only"
    except FileNotFoundError:
        return FOLDER_MISSING
    except OSError:
        return "the folder cannot be read"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "no permission to write in the folder"
    return None


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes that an unprivileged writer may still use on ``folder``'s file system (0 when unknown)."""
    try:
        info = os.statvfs(folder)
    except OSError:
        return 0
    return info.f_bavail * info.f_frsize


def _temp_name(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{secrets.token_hex(16)}{TEMP_SUFFIX}")


def _remove_temp(tmp: str) -> None:
    for leftover in [tmp, *glob.glob(glob.escape(tmp) + "-*")]:  # SQLite's -wal, -shm, -journal
        try:
            os.remove(leftover)
        except FileNotFoundError:
            pass


@contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = True) -> Iterator[str]:
    """Yield a temporary path beside ``path``, not yet existing, for a writer that needs a file name
    (SQLite, ``shutil.copyfile``, ``PIL.Image.save``).  When the block ends normally it is fsynced, renamed
    over ``path`` and the folder fsynced; when it raises, the temporary is removed and the error goes on.
    ``durable=False`` skips both fsyncs (for caches that can be rebuilt): still atomic for readers and
    concurrent writers, not across a power cut."""
    path = os.fspath(path)
    tmp = _temp_name(path)
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove_temp(tmp)
        raise
    if durable:
        fsync_dir(os.path.dirname(path) or ".")


def atomic_write(path: str | os.PathLike, data: bytes | bytearray | memoryview | Callable[[BinaryIO], None], *,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data`` (any bytes-like object, e.g. a ``uint8`` numpy array) or with what
    ``data(handle)`` writes into an open binary file (``torch.save``, ``json.dump`` through a wrapper...);
    see :func:`atomic_path` for the guarantees."""
    with atomic_path(path, durable=durable) as tmp, open(tmp, "xb") as handle:
        if callable(data):
            data(handle)
        else:
            handle.write(memoryview(data).cast("B"))


def file_sha256(file: str | os.PathLike | BinaryIO) -> str:
    """Hex sha256 of a file, given by path or as an open binary file (hashed from its current position to
    its end), read in ``CHUNK_BYTES`` blocks."""
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as handle:
            return file_sha256(handle)
    digest = hashlib.sha256()
    while block := file.read(CHUNK_BYTES):
        digest.update(block)
    return digest.hexdigest()


def bytes_sha256(data: bytes | bytearray | memoryview) -> str:
    """Hex sha256 of a bytes-like object (e.g. a serialised FAISS index, ``uint8`` numpy array): the same as
    :func:`file_sha256` of a file holding exactly these bytes."""
    return hashlib.sha256(memoryview(data).cast("B")).hexdigest()
