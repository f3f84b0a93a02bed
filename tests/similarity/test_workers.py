"""DataLoader workers start clean: they inherit none of the caller's memory, so a lock that another thread of
the caller holds (gRPC, ONNX Runtime, a server thread) cannot hang them, as it hung the test suite once."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from similarity.batches import iterate_batches
from similarity.checkpoint import load_checkpoint
from similarity.embedder import preprocessed_batches
from similarity.transforms import ConvertMode
from similarity.workers import worker_context
from tests.conftest import tiny_config

LOCK = threading.Lock()


class _LockedDataset(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        with LOCK:
            return i


def _load_while_another_thread_holds_the_lock(context, timeout: int) -> list[list[int]]:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with LOCK:
            held.set()
            release.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    try:
        loader = DataLoader(_LockedDataset(), batch_size=2, num_workers=1, multiprocessing_context=context,
                            timeout=timeout)
        return [batch.tolist() for batch in loader]
    finally:
        release.set()
        thread.join()


def test_a_lock_held_by_another_thread_does_not_reach_the_workers():
    assert _load_while_another_thread_holds_the_lock(worker_context(1), timeout=120) == [[0, 1], [2, 3]]
    # what torch's default start method does in the same situation: the forked worker waits for ever
    with pytest.raises(RuntimeError, match="timed out"):
        _load_while_another_thread_holds_the_lock("fork", timeout=3)


def test_no_workers_loads_in_the_calling_process_and_fewer_is_an_error():
    assert worker_context(0) is None
    with pytest.raises(ValueError, match="got -1"):
        worker_context(-1)


def _break_convert_in_this_process(monkeypatch) -> None:
    def broken(self, image):
        raise RuntimeError("the calling process's patched ConvertMode ran in a worker")

    monkeypatch.setattr(ConvertMode, "__call__", broken)


def test_embedding_workers_run_the_code_on_disk_not_the_callers_memory(checkpoint_path, fmnist_folder, monkeypatch):
    spec = load_checkpoint(checkpoint_path).preprocess
    subset = fmnist_folder.subset(np.arange(40))
    expected = torch.cat([xs for _, xs, _ in preprocessed_batches(subset, spec, batch_size=16)])
    _break_convert_in_this_process(monkeypatch)
    batches = list(preprocessed_batches(subset, spec, batch_size=16, num_workers=2))
    assert [bad for _, _, bad in batches] == [[], [], []]
    assert torch.equal(torch.cat([xs for _, xs, _ in batches]), expected)


def test_training_workers_run_the_code_on_disk_not_the_callers_memory(fmnist_folder, monkeypatch):
    subset = fmnist_folder.subset(np.arange(40))
    config = tiny_config(num_workers=2, batch_size=8, augment=False)
    order = [list(range(start, start + 8)) for start in range(0, 40, 8)]
    _break_convert_in_this_process(monkeypatch)
    batches = list(iterate_batches(subset, order, config, torch.Generator().manual_seed(0)))
    assert [labels.tolist() for _, labels in batches] == [subset.labels[b].tolist() for b in order]
    assert all(images.shape[1:] == (1, 28, 28) for images, _ in batches)
