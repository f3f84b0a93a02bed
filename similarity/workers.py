"""Where DataLoader worker processes come from.

torch forks its workers from the calling process by default. A fork copies only the calling thread, so a
lock that another thread held at that moment stays locked in the child for ever. A process that serves or
talks to a database has such threads (gRPC's client, ONNX Runtime's pool, an HTTP server's request
threads), and a worker forked from it can hang before its first batch while the loader waits on it
without a timeout. That is how the test suite, which runs the CLI in process after the Milvus and ONNX
tests, hung.

Workers therefore start from a fork server: one small single-threaded process, started once per process
that needs workers, that has already imported torch, the decoding and augmentation code and Pillow's
plugins, and forks each worker. Nothing of the caller's threads is copied, and a worker starts as fast as a
forked one (``python -m bench.worker_start``); starting the server costs about 4 s once. Python 3.14 made
this start method the default on Linux for the same reason.

As with ``spawn``, a script that starts workers must guard its entry point with
``if __name__ == "__main__":``, because a worker imports the main module.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext

PRELOAD = ("similarity.worker_preload",)  # imported once by the fork server: torch, our datasets, Pillow's plugins


def worker_context(num_workers: int) -> BaseContext | None:
    """The multiprocessing context for a DataLoader with ``num_workers`` workers: the fork server where
    there are workers, None (load in the calling process) where there are none."""
    if num_workers < 0:
        raise ValueError(f"the number of workers must be 0 or more, got {num_workers}")
    if num_workers == 0:
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))  # takes effect when this process first starts the server
    return context


__all__ = ["worker_context"]
