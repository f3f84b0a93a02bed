"""Milvus servers on loopback for tests and benchmarks: Milvus Lite's gRPC server and the real Milvus 2.3.5
standalone server (the PyPI package ``milvus==2.3.5``, which bundles the binary with an embedded etcd).

Both run as subprocesses in their own process group (session), write their output to a log file, and are
stopped with a signal, then SIGKILL of the whole group after a timeout; servers still running when the
interpreter exits are killed (``atexit``).  Clients reach them at ``http://127.0.0.1:<port>`` only.

    with milvus_lite_server(tmp_path / "milvus") as server:        # a free port unless port= is given
        client = MilvusClient(uri=server.uri)
        ...
        server.kill()            # crash (SIGKILL)
        server.start()           # back on the same data dir and port

    if standalone_available():
        with milvus_standalone_server(tmp_path / "standalone") as server:
            client = MilvusClient(uri=server.uri)

Loopback and Milvus 2.3.5 standalone: every component is told to advertise 127.0.0.1 (``<component>.ip``),
so the components, the client and the embedded etcd (here given an explicit config with 127.0.0.1 listen
URLs) only ever talk over 127.0.0.1.  The 2.3.5 binary nevertheless *binds* its gRPC ports and the
metrics/health port on the wildcard address (``*:port``); no setting changes that.  No traffic is sent
anywhere else, but while it runs those ports accept connections from other hosts.  To rule that out, run
the whole test session in a network namespace that has only loopback (as root:
``unshare -n sh -c 'ip link set lo up && .venv/bin/python -m pytest ...'``); both servers work there.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator

from bench.reliability.server import signal_group

HOST = "127.0.0.1"

# Milvus 2.3.5 standalone components, each pinned to advertise (and dial each other on) 127.0.0.1
STANDALONE_COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")

# milvus.yaml values set unless ``extra_config`` overrides them.  With the defaults (1800 s, 30 s) a SIGTERM
# with a collection loaded hangs for the full 1800 s (the query node waits to hand its segments to another
# query node, which a standalone server never has), and after a SIGKILL the collections come back loaded
# only once the dead process's etcd sessions expire (~36 s after start instead of ~17 s).
STANDALONE_DEFAULT_CONFIG = {
    "common.gracefulStopTimeout": 10,  # seconds: a graceful stop then takes ~10 s
    "common.session.ttl": 10,  # seconds
}

_RUNNING: "set[_ServerProcess]" = set()  # started and not yet killed: killed at exit


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on at the moment (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = HOST) -> bool:
    """Whether something accepts connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _client_ready(uri: str, timeout: float = 5.0) -> bool:
    """Whether a pymilvus ``MilvusClient`` on ``uri`` can ``list_collections()`` (a dedicated connection,
    closed again, so pymilvus' shared connection registry is left alone)."""
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=uri, timeout=timeout, dedicated=True)
    except Exception:  # noqa: BLE001 - not up yet
        return False
    try:
        client.list_collections(timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - not ready yet
        return False
    finally:
        with contextlib.suppress(Exception):
            client.close()


def _tail(path: str, chars: int = 4000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - chars))
            return handle.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log: {exc})"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return True
        time.sleep(0.05)
    return not _group_alive(pgid)


class _ServerProcess:
    """A server subprocess in its own session (process group = its pid).  Subclasses set ``port``,
    ``log_path``, ``stop_signal`` and implement ``_command``, ``_env`` and ``_ready``."""

    stop_signal = signal.SIGTERM
    name = "server"

    def __init__(self, *, ready_timeout: float, stop_timeout: float) -> None:
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.port = 0
        self.log_path = ""
        self.cwd: str | None = None
        self.proc: subprocess.Popen | None = None
        self.start_seconds = 0.0  # how long the last start() waited for the server to answer
        self.stop_seconds = 0.0  # how long the last stop() took
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ subclass hooks
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict:
        return dict(os.environ)

    def _prepare(self) -> None:
        """Called before each start (config files, port checks)."""

    def _ready(self) -> bool:
        return _client_ready(self.uri)

    # ------------------------------------------------------------------ public API
    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def start(self, timeout: float | None = None):
        """Start the server (again, on the same data and port after ``stop()``/``kill()``) and wait until a
        ``MilvusClient`` can list collections.  ``RuntimeError`` (with the log's tail) if it exits or does not
        answer within ``timeout`` (default ``ready_timeout``) seconds; the process is then killed."""
        timeout = self.ready_timeout if timeout is None else timeout
        with self._lock:
            if self.alive():
                raise RuntimeError(f"{self.name} is already running (pid {self.proc.pid})")
            if self.proc is not None:
                self._kill_group()  # reap anything the previous run left behind
            self._prepare()
            if port_in_use(self.port):
                raise RuntimeError(f"{self.name}: port {self.port} on {HOST} is already in use")
            os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
            started = time.monotonic()
            with open(self.log_path, "ab") as log:
                log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {self._command()}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=self._env(), cwd=self.cwd,
                                             start_new_session=True)
            _RUNNING.add(self)
            deadline = started + timeout
            while True:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    self._kill_group()
                    raise RuntimeError(f"{self.name} exited with {code} during start-up; "
                                       f"log {self.log_path}:\n{_tail(self.log_path)}")
                if port_in_use(self.port) and self._ready():
                    self.start_seconds = time.monotonic() - started
                    return self
                if time.monotonic() > deadline:
                    self._kill_group()
                    raise RuntimeError(f"{self.name} did not answer on {self.uri} within {timeout:.0f} s; "
                                       f"log {self.log_path}:\n{_tail(self.log_path)}")
                time.sleep(0.1)

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop: ``stop_signal`` to the process group, then SIGKILL of the group after ``timeout``
        (default ``stop_timeout``) seconds.  Returns once no process of the group is left."""
        timeout = self.stop_timeout if timeout is None else timeout
        with self._lock:
            if self.proc is None:
                return
            started = time.monotonic()
            if self.proc.poll() is None:
                signal_group(self.proc, self.stop_signal)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
            self._kill_group()
            self.stop_seconds = time.monotonic() - started

    def wait_loaded(self, timeout: float = 120.0) -> dict:
        """Wait until no collection is still loading and return ``{collection: load state name}``.

        After a restart Milvus 2.3.5 reloads the collections that were loaded, in the background, several
        seconds after it answers (until then search/query fail with code 101 "collection not loaded");
        Milvus Lite reloads nothing (its collections come back ``NotLoad``: call ``load_collection``)."""
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.uri, timeout=10, dedicated=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                states = {}
                for name in client.list_collections(timeout=10):
                    state = client.get_load_state(name, timeout=10)["state"]
                    states[name] = getattr(state, "name", str(state))
                if not any(s == "Loading" for s in states.values()):
                    return states
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: collections still loading after {timeout:.0f} s: {states}")
                time.sleep(0.2)
        finally:
            client.close()

    def kill(self) -> None:
        """Crash the server: SIGKILL to the whole process group, no shutdown of any kind."""
        with self._lock:
            if self.proc is not None:
                self._kill_group()

    def _kill_group(self) -> None:
        """SIGKILL the group, reap, and forget the process (``proc`` None: a later stop or kill must not signal
        its pid, which the system may give to another process)."""
        proc, pgid = self.proc, self.proc.pid
        signalled = signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        if signalled and not _wait_group_gone(pgid, 30):
            raise RuntimeError(f"{self.name}: processes of group {pgid} survived SIGKILL")
        self.proc = None
        _RUNNING.discard(self)
        self._after_exit(pgid)

    def _after_exit(self, pid: int) -> None:
        """Called once the process (group) ``pid`` is gone."""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.alive() else "stopped"
        return f"<{type(self).__name__} {self.uri} {state}>"


# ============================================================================================ Milvus Lite
class MilvusLiteServer(_ServerProcess):
    """``milvus-lite server --data-dir DATA_DIR --host 127.0.0.1 --port PORT`` (the console script next to
    ``sys.executable``).  ``stop()`` sends SIGINT, the server's graceful path (it drains requests for up to
    5 s and closes the database); SIGTERM would end it at once without closing the database."""

    stop_signal = signal.SIGINT
    name = "milvus-lite server"

    def __init__(self, data_dir, port: int | None = None, *, log_path=None, max_workers: int | None = None,
                 ready_timeout: float = 60.0, stop_timeout: float = 20.0) -> None:
        super().__init__(ready_timeout=ready_timeout, stop_timeout=stop_timeout)
        self.data_dir = os.path.abspath(os.fspath(data_dir))
        self.port = int(port) if port else free_port()
        self.log_path = os.fspath(log_path) if log_path else self.data_dir.rstrip(os.sep) + ".server.log"
        self.max_workers = max_workers

    def _command(self) -> list[str]:
        script = os.path.join(os.path.dirname(sys.executable), "milvus-lite")
        cmd = [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "milvus_lite"]
        cmd += ["server", "--data-dir", self.data_dir, "--host", HOST, "--port", str(self.port)]
        if self.max_workers:
            cmd += ["--max-workers", str(self.max_workers)]
        return cmd

    def _env(self) -> dict:
        return {**os.environ, "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def milvus_lite_server(data_dir, port: int | None = None, **kwargs) -> Iterator[MilvusLiteServer]:
    """A started :class:`MilvusLiteServer` (``.uri``, ``.port``, ``.pid``, ``.stop()``, ``.kill()``,
    ``.start()``), stopped on exit."""
    server = MilvusLiteServer(data_dir, port, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ================================================================================ Milvus 2.3.5 standalone
def standalone_available() -> bool:
    """Whether the ``milvus`` PyPI package (2.3.x, with its bundled Linux x86-64 server binary) is here."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import milvus
    except Exception:  # noqa: BLE001
        return False
    binary = os.path.join(os.path.dirname(os.path.abspath(milvus.__file__)), "data", "bin", "milvus.lzma")
    return hasattr(milvus, "MilvusServerConfig") and os.path.isfile(binary)


def _default_bin_root() -> str:
    import milvus

    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "simsearch", f"milvus-{milvus.__version__}")


def _extract_binaries(root: str) -> str:
    """Decompress the package's server binary and libraries into ``root/bin`` once (about 4 s; later calls
    compare checksums only), under a file lock; returns the path of the ``milvus`` executable."""
    import fcntl

    import milvus

    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        milvus._initialize_data_files(root)  # noqa: SLF001 - the package's own extraction
    return os.path.join(root, "bin", "milvus")


class MilvusStandaloneServer(_ServerProcess):
    """The Milvus 2.3.5 standalone server (``milvus run standalone``) with its data, configs and logs under
    ``base_dir``; configs come from the ``milvus`` package's template with every component advertising
    127.0.0.1 and the embedded etcd listening on 127.0.0.1 only.

    Ports: the proxy (the client's port) is 19530 unless taken, then the next free one (``.port``); the
    other components likewise from their defaults (53100, 19529, 19531, 21121-21124, 13333, 9091); the
    embedded etcd on 2379/2380 unless ``etcd_port`` is given (it then uses that and the port after it).
    ``extra_config`` sets further ``section.key`` values of milvus.yaml (only keys the package's template
    has; :data:`STANDALONE_DEFAULT_CONFIG` is applied first).  A restart reuses the config and ports.
    """

    name = "milvus standalone"

    def __init__(self, base_dir, *, port: int | None = None, etcd_port: int | None = None,
                 extra_config: dict | None = None, bin_root: str | None = None,
                 ready_timeout: float = 120.0, stop_timeout: float = 60.0) -> None:
        super().__init__(ready_timeout=ready_timeout, stop_timeout=stop_timeout)
        self.base_dir = os.path.abspath(os.fspath(base_dir))
        self.requested_port = port
        self.etcd_port = etcd_port
        self.extra_config = {**STANDALONE_DEFAULT_CONFIG, **(extra_config or {})}
        self.bin_root = bin_root
        self.log_path = os.path.join(self.base_dir, "logs", "milvus-stdout.log")
        self.cwd = self.base_dir
        self.metrics_port = 0
        self.ports: dict[str, int] = {}
        self._exe = ""
        self._resolved = False

    def _prepare(self) -> None:
        if not standalone_available():
            raise RuntimeError("the `milvus` package (pip install milvus==2.3.5) is not installed")
        self._exe = _extract_binaries(self.bin_root or _default_bin_root())
        if self._resolved:
            # a restart: same ports as before (``start`` checks the proxy port is free)
            return
        from milvus import MilvusServerConfig

        config = MilvusServerConfig(data_dir=self.base_dir)
        unknown = sorted(set(self.extra_config) - set(config.configurable_items) - _yaml_keys(config.template_file))
        if unknown:  # the package would silently leave them out of milvus.yaml
            raise ValueError(f"{self.name}: not in the milvus package's config template: {unknown}")
        if self.requested_port:
            config.update(proxy_port=int(self.requested_port))
        etcd_client = int(self.etcd_port) if self.etcd_port else 2379
        for port in (etcd_client, etcd_client + 1):
            if port_in_use(port):
                raise RuntimeError(f"{self.name}: the embedded etcd's port {port} is already in use "
                                   "(another standalone server?); pass etcd_port= for another pair")
        for component in STANDALONE_COMPONENTS:
            config.set(f"{component}.ip", HOST)
        config.set("etcd.endpoints", f"{HOST}:{etcd_client}")
        for key, value in self.extra_config.items():
            config.set(key, value)
        # binds each port on 127.0.0.1 to find free ones from the defaults up, writes configs/milvus.yaml
        config.resolve()
        self.ports = {key: int(config.get(key)) for key in config.configurable_items if key.endswith("_port")}
        self.ports["etcd_port"] = etcd_client  # (the resolver's pick is unused: etcd.endpoints is set above)
        self.ports.pop("index_coord_port", None)  # no index coordinator of its own in 2.3 standalone
        self.port = self.ports["proxy_port"]
        used = set(self.ports.values())
        self.metrics_port = next(p for p in range(9091, 10091) if p not in used and not port_in_use(p))
        config_dir = os.path.join(self.base_dir, "configs")
        etcd_yaml = os.path.join(config_dir, "etcd.yaml")
        with open(etcd_yaml, "w", encoding="utf-8") as handle:
            peer = etcd_client + 1
            handle.write(f"name: default\n"
                         f"listen-client-urls: http://{HOST}:{etcd_client}\n"
                         f"advertise-client-urls: http://{HOST}:{etcd_client}\n"
                         f"listen-peer-urls: http://{HOST}:{peer}\n"
                         f"initial-advertise-peer-urls: http://{HOST}:{peer}\n"
                         f"initial-cluster: default=http://{HOST}:{peer}\n")
        _insert_yaml_key(os.path.join(config_dir, "milvus.yaml"), "etcd", "config", {"path": etcd_yaml})
        os.makedirs(os.path.join(self.base_dir, "run"), exist_ok=True)
        self._resolved = True

    def _command(self) -> list[str]:
        return [self._exe, "run", "standalone"]

    def _env(self) -> dict:
        env = dict(os.environ)
        bin_dir = os.path.dirname(self._exe)
        env.update({
            "DEPLOY_MODE": "STANDALONE",
            "METRICS_PORT": str(self.metrics_port),
            "MILVUS_RUN_DIR": os.path.join(self.base_dir, "run"),
            "MILVUSCONF": os.path.join(self.base_dir, "configs"),
            "LD_LIBRARY_PATH": bin_dir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else ""),
        })
        return env

    def _after_exit(self, pid: int) -> None:
        # the 2.3.5 binary writes /tmp/milvus/server_id_<pid> whatever its configured paths
        with contextlib.suppress(OSError):
            os.remove(os.path.join("/tmp/milvus", f"server_id_{pid}"))
        with contextlib.suppress(OSError):
            os.rmdir("/tmp/milvus")  # only if empty

    def _ready(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}/healthz", timeout=2) as resp:
                if b"OK" not in resp.read():
                    return False
        except OSError:
            return False
        return _client_ready(self.uri)


def _yaml_keys(path: str) -> set[str]:
    """The dotted keys (``section.sub.key``) of a YAML file, parsed as the ``milvus`` package does when it
    applies extra config values (a value can only replace a key that is already there)."""
    keys: set[str] = set()
    current: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip().startswith("#"):
                continue
            match = re.match(r"^( *[a-zA-Z0-9_]+):([^#]*)(#.*)?$", line.rstrip())
            if match:
                prefixed = match.group(1).rstrip()
                key = prefixed.strip()
                current = current[:(len(prefixed) - len(key)) // 2] + [key]
                keys.add(".".join(current))
    return keys


def _insert_yaml_key(path: str, section: str, key: str, values: dict) -> None:
    """Add ``section.key.<name>: value`` lines right under the top-level ``section:`` of a YAML file (the
    package's template has no ``etcd.config`` block to fill in)."""
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    index = lines.index(f"{section}:")
    block = [f"  {key}:"] + [f"    {name}: {value}" for name, value in values.items()]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines[:index + 1] + block + lines[index + 1:]) + "\n")


@contextlib.contextmanager
def milvus_standalone_server(base_dir, **kwargs) -> Iterator[MilvusStandaloneServer]:
    """A started :class:`MilvusStandaloneServer` (``.uri``, ``.port``, ``.pid``, ``.stop()``, ``.kill()``,
    ``.start()``), stopped on exit."""
    server = MilvusStandaloneServer(base_dir, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.kill()
