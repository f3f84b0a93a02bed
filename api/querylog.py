"""The query log: an opt-in, seeded sample of the images searched through the API, kept within a size cap for
shadow evaluation (``simsearch evaluate --from-log DIR`` replays them against an old and a new index).

Each logged query is two files in one folder, named ``<microseconds since the epoch>-<uuid>`` so that the workers
of one server never collide and a listing sorts by time: the uploaded bytes as sent (``.png``, ``.jpg``, ... from
the format Pillow reads in them, :data:`engine.engine.UPLOAD_FORMATS`), then a JSON sidecar (``.json``) naming the
image, the time, ``k``, the label filter, the neighbour ids answered and the model's sha256.  Both are written
with :func:`durablefile.atomic_write` (not fsynced: a sample may lose its last entries in a power cut, a
request never waits for a disk flush); the sidecar is written last, so a sidecar always has its image.

Logging never fails a search and delays it by no more than the write: an ``OSError`` (a full disk, a folder that is
a file, no permission) is logged and the request goes on.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass

from durablefile import atomic_write
from engine.engine import upload_extension

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"
REMEASURE_EVERY = 100  # sampled queries between two measures of the folder (other workers write to it too)


@dataclass(frozen=True)
class LoggedQuery:
    """One logged query: ``image_path`` (the bytes as uploaded) and ``sidecar_path`` (its JSON); ``logged_at`` is
    a Unix time in seconds, ``label`` the label filter of the search (None: none), ``neighbor_ids`` the ids
    answered (best first) by the model whose checkpoint sha256 is ``model_sha256``."""

    image_path: str
    sidecar_path: str
    logged_at: float
    k: int
    label: str | None
    neighbor_ids: list[int]
    model_sha256: str


class QueryLog:
    """Save a ``rate`` share of the searched images (drawn with ``seed``) under ``folder`` while the folder holds
    at most ``max_bytes``.  Thread-safe; one per process, several processes may share the folder."""

    def __init__(self, folder: str | os.PathLike, *, rate: float, max_bytes: int, seed: int | None = None) -> None:
        check_settings(rate, max_bytes)
        self.folder = os.path.abspath(os.fspath(folder))
        self.rate = float(rate)
        self.max_bytes = int(max_bytes)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._used = folder_bytes(self.folder)  # measured once here, then counted, re-measured now and then
        self._since_measure = 0
        self._full = False
        self._failing = False

    def maybe_log(self, image_bytes: bytes, *, k: int, label: str | None, neighbor_ids: list[int],
                  model_sha: str) -> str | None:
        """Log this query if it is drawn and fits under the cap; returns the sidecar's path, or None when it was
        not drawn, the folder is full or the write failed (logged, never raised)."""
        with self._lock:
            if self.rate <= 0.0 or self._random.random() >= self.rate:
                return None
        stem = f"{time.time_ns() // 1000:016d}-{uuid.uuid4().hex}"
        ext = upload_extension(image_bytes)
        sidecar = json.dumps({"image": stem + ext, "logged_at": round(time.time(), 3), "k": int(k), "label": label,
                              "neighbor_ids": [int(i) for i in neighbor_ids],
                              "model_sha256": model_sha}).encode("utf-8")
        size = len(image_bytes) + len(sidecar)
        with self._lock:
            self._since_measure += 1
            if self._since_measure >= REMEASURE_EVERY:
                self._used, self._since_measure = folder_bytes(self.folder), 0
            if self._used + size > self.max_bytes:
                if not self._full:
                    logger.warning("query log %s holds %d bytes, its cap is %d: no more queries are logged until "
                                   "it has room", self.folder, self._used, self.max_bytes)
                self._full = True
                return None
            if self._full:
                logger.info("query log %s has room again (%d of %d bytes): logging resumes", self.folder,
                            self._used, self.max_bytes)
            self._full = False
            self._used += size  # reserved before the write, so that concurrent threads respect the cap too
        image, path = os.path.join(self.folder, stem + ext), os.path.join(self.folder, stem + SIDECAR_SUFFIX)
        try:
            os.makedirs(self.folder, exist_ok=True)
            atomic_write(image, image_bytes, durable=False)
            atomic_write(path, sidecar, durable=False)
        except OSError as exc:
            try:
                os.remove(image)  # an image without its sidecar is no logged query
            except OSError:
                pass
            with self._lock:
                self._used -= size
                first, self._failing = not self._failing, True
            # one warning per run of failures: a search per second must not write a warning per second
            logger.log(logging.WARNING if first else logging.DEBUG, "query log: cannot write in %s: %s",
                       self.folder, exc)
            return None
        with self._lock:
            recovered, self._failing = self._failing, False
        if recovered:
            logger.info("query log: writing in %s works again", self.folder)
        return path


def check_settings(rate: float, max_bytes: int) -> None:
    """Raise ``ValueError`` for a sampling rate outside [0, 1] or a cap that is not a positive integer."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"the query log's rate must be a number in [0, 1], got {rate!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"the query log's max_bytes must be a positive integer, got {max_bytes!r}")


def folder_bytes(folder: str) -> int:
    """Total size of the files directly in ``folder`` (0 when it does not exist or cannot be read)."""
    total = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue  # removed meanwhile
    except OSError:
        return 0
    return total


def read_query_log(folder: str | os.PathLike) -> list[LoggedQuery]:
    """Every complete logged query in ``folder``, oldest first.  A sidecar that cannot be parsed or whose image is
    missing is skipped with a warning.  Raises ``ValueError`` when ``folder`` is not a folder."""
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        raise ValueError(f"query log folder not found: {folder}")
    found = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(SIDECAR_SUFFIX) or name.startswith("."):
            continue
        path = os.path.join(folder, name)
        try:
            with open(path, encoding="utf-8") as handle:
                record = json.load(handle)
            image = os.path.join(folder, os.path.basename(str(record["image"])))
            query = LoggedQuery(image, path, float(record["logged_at"]), int(record["k"]),
                                None if record.get("label") is None else str(record["label"]),
                                [int(i) for i in record["neighbor_ids"]], str(record["model_sha256"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("query log: skipping %s: %s", path, exc)
            continue
        if not os.path.isfile(image):
            logger.warning("query log: skipping %s: its image %s is missing", path, image)
            continue
        found.append(query)
    return found
