"""``ServerProcess``: a real ``simsearch serve`` (gunicorn, or Flask's server with ``dev=True``) on a free
loopback port, started in its own process group so that a kill reaches the master and every worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

from api.config import TOKEN_ENV
from bench import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``simsearch serve --index index_dir`` with the write token ``token`` (None: writes disabled).

    Output (stdout and stderr) goes to ``log_path`` (a temporary file by default), so the logs can be read
    after the server is gone.  Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, index_dir: str, *, token: str | None = None, workers: int = 2, threads: int = 4,
                 dev: bool = False, log_level: str = "warning", log_path: str | None = None,
                 extra_args: tuple[str, ...] = (), env: dict | None = None, cwd: str = REPO) -> None:
        self.index_dir = str(index_dir)
        self.token = token
        self.workers, self.threads, self.dev = workers, threads, dev
        self.log_level = log_level
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.cwd = cwd  # the code that runs: `python -m` imports from here first (benches run older code)
        if log_path is None:
            handle, log_path = tempfile.mkstemp(prefix="simsearch-server-", suffix=".log")
            os.close(handle)
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> "ServerProcess":
        """Start the server and wait until ``/api/health`` answers 200; raise ``RuntimeError`` if it exits
        or does not answer within ``timeout`` seconds."""
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": self.cwd, "OMP_NUM_THREADS": "1", **self.env}
        env.pop(TOKEN_ENV, None)
        if self.token:
            env[TOKEN_ENV] = self.token
        cmd = [sys.executable, "-m", "simsearch.cmd_serve", "serve", "--index", self.index_dir,
               "--port", str(self.port), "--workers", str(self.workers), "--threads", str(self.threads),
               "--log-level", self.log_level, *self.extra_args]
        if self.dev:
            cmd.append("--dev")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=self.cwd, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if requests.get(self.url + "/api/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server did not answer within {timeout:.0f} s:\n{self.log()[-4000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group (master and workers) and reap the master."""
        if self.proc is None:
            return
        signal_group(self.proc, sig)
        if sig == signal.SIGKILL:
            self.proc.wait()
            _wait_group_gone(self.proc.pid)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (graceful), then SIGKILL after ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.kill()  # reap any worker left behind by a dead master
            return
        self.kill(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def log(self) -> str:
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def signal_group(proc: subprocess.Popen, sig: int) -> bool:
    """Send ``sig`` to the process group that ``proc`` leads (started with ``start_new_session``), and never
    to a stranger: once ``proc`` is reaped its pid may be reused (pid_max is 32768 here, and a test run starts
    thousands of processes), and if it is, our group is gone (a pid is not reused while a group of that id
    lives), so there is nothing left to signal.  Seen: a stale ``killpg`` killed a later server.
    Returns whether the group was signalled."""
    if proc.poll() is not None:
        try:
            os.kill(proc.pid, 0)
            return False  # the pid belongs to another process now
        except ProcessLookupError:
            pass  # free: the group, if any is left, is our orphaned children
    try:
        os.killpg(proc.pid, sig)
        return True
    except ProcessLookupError:
        return False


def _wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    """Wait until no process of group ``pgid`` is left (workers die a moment after the master)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        time.sleep(0.02)
