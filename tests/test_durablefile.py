"""durablefile: the one atomic write and sha256 of a file (concurrent writers, failures mid-write, hashing)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from durablefile import CHUNK_BYTES, atomic_path, atomic_write, bytes_sha256, file_sha256


def _contents(seed: int, size: int = 3 * CHUNK_BYTES // 2) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _write_slowly(path: str, data: bytes, barrier) -> None:
    def write(handle):
        half = len(data) // 2
        handle.write(data[:half])
        barrier.wait(timeout=30)  # both writers hold a half-written temporary at once
        handle.write(data[half:])

    atomic_write(path, write)


def _write_in_process(path: str, seed: int, barrier) -> None:
    _write_slowly(path, _contents(seed), barrier)


def test_writes_bytes_and_callables(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write(target, lambda handle: handle.write(b"second"))
    assert target.read_bytes() == b"second"
    atomic_write(target, np.arange(4, dtype=np.uint8))  # a bytes-like array, e.g. faiss.serialize_index
    assert target.read_bytes() == bytes([0, 1, 2, 3])
    assert os.listdir(tmp_path) == ["a.bin"]


def test_two_threads_writing_one_target_both_succeed_with_one_whole_content(tmp_path):
    target = str(tmp_path / "model.pt")
    atomic_write(target, b"old")
    contents = [_contents(1), _contents(2)]
    barrier = threading.Barrier(2)
    errors = []

    def run(data):
        try:
            _write_slowly(target, data, barrier)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(data,)) for data in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert Path(target).read_bytes() in contents
    assert os.listdir(tmp_path) == ["model.pt"]


def test_two_processes_writing_one_target_both_succeed_with_one_whole_content(tmp_path):
    target = str(tmp_path / "view.faiss")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_write_in_process, args=(target, seed, barrier)) for seed in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert Path(target).read_bytes() in (_contents(1), _contents(2))
    assert os.listdir(tmp_path) == ["view.faiss"]


def test_an_error_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    atomic_write(target, b"old")

    def fail(handle):
        handle.write(b"half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["report.json"]


def test_atomic_path_removes_a_failed_sqlite_database_with_its_sidecars(tmp_path):
    target = tmp_path / "index.db"
    with pytest.raises(sqlite3.OperationalError):
        with atomic_path(target) as tmp:
            assert not os.path.exists(tmp) and os.path.dirname(tmp) == str(tmp_path)
            conn = sqlite3.connect(tmp)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE t (x)")
            conn.execute("INSERT INTO nowhere VALUES (1)")  # fails with the connection (and its -wal) open
    conn.close()
    assert os.listdir(tmp_path) == []


def test_atomic_path_gives_each_writer_its_own_temporary(tmp_path):
    with atomic_path(tmp_path / "x") as first, atomic_path(tmp_path / "x") as second:
        assert first != second
        for tmp in (first, second):
            open(tmp, "wb").close()
    assert os.listdir(tmp_path) == ["x"]


def test_file_sha256_matches_hashlib_on_a_multi_chunk_file(tmp_path):
    data = _contents(3, size=2 * CHUNK_BYTES + 12345)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert file_sha256(path) == file_sha256(str(path)) == bytes_sha256(data) == expected
    with open(path, "rb") as handle:  # an open file: hashed from its position to its end
        handle.seek(100)
        assert file_sha256(handle) == hashlib.sha256(data[100:]).hexdigest()
