"""``simsearch serve``: the web API and page over an index (a directory, or a Milvus collection).

Production: gunicorn, started programmatically (``gunicorn.app.base.BaseApplication``) with
``preload_app=False`` so each worker process loads the model and the index itself after the fork (no torch
or OpenMP state crosses a fork).  ``--dev``: Flask's single-process development server.

Metrics: each gunicorn worker is a separate process, so ``PROMETHEUS_MULTIPROC_DIR`` is pointed at a fresh
directory before the workers start (prometheus_client's multiprocess mode): ``/metrics`` then reports the
sum over all workers, and the ``child_exit`` hook marks a dead worker's files.

Wired by the top-level CLI: ``add_parser(subparsers)`` registers the command, ``run(args)`` executes it;
``python -m simsearch.cmd_serve serve ...`` works on its own too.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile

from engine.layout import MODEL_FILE
from similarity.runtime import EmbedRuntime
from simsearch.runtime_args import add_runtime_arguments, runtime_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("serve", help="serve the web API and page over an index",
                                   description=__doc__.split("\n\n")[1])
    parser.add_argument("--index", required=True,
                        help=f"index directory (holds {MODEL_FILE} and the store), milvus://HOST:PORT/COLLECTION "
                             "(token in $SIMSEARCH_MILVUS_TOKEN; several servers may share it), or a Milvus Lite "
                             "PATH.db (one process)")
    parser.add_argument("--checkpoint", default=None,
                        help=f"checkpoint to use instead of {MODEL_FILE} in the index's home")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="intra-op threads of the model runtime (torch or ONNX Runtime) per worker (default: "
                             "cores / workers, at least 1)")
    add_runtime_arguments(parser)
    # unset limits and --token-env fall back to ApiConfig's defaults and TOKEN_ENV, read in run() and not
    # here: importing api imports prometheus_client, which must wait until PROMETHEUS_MULTIPROC_DIR is set
    parser.add_argument("--max-k", type=int, default=None,
                        help="most neighbours one request may ask for (default: ApiConfig.max_k)")
    parser.add_argument("--max-upload-mb", type=float, default=None,
                        help="largest accepted upload in MiB (default: ApiConfig.max_upload_bytes)")
    parser.add_argument("--unknown-below", type=float, default=None,
                        help="flag a prediction as unknown when its best cosine is below this "
                             "(default: ApiConfig.unknown_below, never)")
    parser.add_argument("--log-queries", default=None, metavar="DIR",
                        help="keep a sample of the searched images in DIR, for `simsearch evaluate --from-log DIR` "
                             "(default: none are kept)")
    parser.add_argument("--log-queries-rate", type=float, default=None, metavar="F",
                        help="with --log-queries: share of the searched images kept, in [0, 1] "
                             "(default: ApiConfig.query_log_rate, 0.1)")
    parser.add_argument("--log-queries-max-mb", type=float, default=None, metavar="N",
                        help="with --log-queries: stop keeping images while DIR holds more than N MiB "
                             "(default: ApiConfig.query_log_max_bytes, 100 MiB)")
    parser.add_argument("--timeout", type=int, default=60, help="gunicorn worker timeout in seconds")
    parser.add_argument("--dev", action="store_true", help="Flask's development server (one process)")
    parser.add_argument("--token-env", default=None,
                        help="environment variable holding the write token (default: api.config.TOKEN_ENV); "
                             "unset or empty: writes are disabled")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name, value in (("--workers", args.workers), ("--threads", args.threads), ("--port", args.port + 1)):
        if value < 1:
            print(f"simsearch serve: {name} must be positive", file=sys.stderr)
            return 2
    workers = 1 if args.dev else args.workers
    from index.location import is_milvus_lite

    if is_milvus_lite(args.index) and workers > 1:
        print("simsearch serve: a Milvus Lite data directory opens in one process only: serving with 1 worker "
              f"(for more, run `milvus-lite server --data-dir {args.index} --host 127.0.0.1 --port 19530` and "
              "serve milvus://127.0.0.1:19530/simsearch)", file=sys.stderr)
        workers = 1
    torch_threads = args.torch_threads or max(1, (os.cpu_count() or 1) // workers)
    metrics_dir = None
    if not args.dev and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # before anything imports prometheus_client: it picks its storage mode at import time
        metrics_dir = tempfile.mkdtemp(prefix="simsearch-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from api.auth import RedactCredentials  # imports prometheus_client: only after the line above
    from api.config import TOKEN_ENV

    token_env = args.token_env or TOKEN_ENV
    for handler in logging.getLogger().handlers:  # werkzeug's request lines and ours propagate to these
        handler.addFilter(RedactCredentials())
    try:
        config = _config(args, torch_threads, token_env)
        if config is None:
            return 2
        url = f"http://{_url_host(args.host)}:{args.port}/"
        writes = "enabled" if config.writes_enabled else f"disabled (set ${token_env} to enable)"
        print(f"simsearch: serving {config.index} at {url}  (writes {writes})", flush=True)
        if args.dev:
            from api import create_app

            create_app(config).run(host=args.host, port=args.port, threaded=True, use_reloader=False)
            return 0
        options = {"bind": f"{_url_host(args.host)}:{args.port}", "workers": workers, "threads": args.threads,
                   "worker_class": "gthread", "preload_app": False, "timeout": args.timeout,
                   "graceful_timeout": 10, "loglevel": args.log_level, "proc_name": "simsearch",
                   "child_exit": _child_exit, "worker_exit": _worker_exit, "accesslog": None}
        GunicornApp(config, options).run()
        return 0
    finally:
        if metrics_dir:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _config(args: argparse.Namespace, torch_threads: int, token_env: str):
    """Build the ApiConfig and check, before any worker starts, that the index and model load and match."""
    from api.config import ApiConfig
    from engine.build import check_index
    from engine.engine import Engine, set_torch_threads
    from index import IndexStoreError
    from index.location import is_milvus
    from similarity.checkpoint import CheckpointError
    from similarity.onnx_format import OnnxExportError

    milvus = is_milvus(args.index)
    index = args.index if milvus else os.path.abspath(args.index)
    if not milvus and not os.path.isdir(index):
        print(f"simsearch serve: index directory {index} does not exist", file=sys.stderr)
        return None
    checkpoint = os.path.abspath(args.checkpoint) if args.checkpoint else None
    try:
        runtime = runtime_from_args(args, threads=1)  # one thread in the master process, see below
    except ValueError as exc:
        print(f"simsearch serve: {exc}", file=sys.stderr)
        return None
    from index.alias import resolve

    try:
        resolved = resolve(index)  # an alias: the checks below are of the index it names now
    except IndexStoreError as exc:
        print(f"simsearch serve: cannot serve {index}: {exc}", file=sys.stderr)
        return None
    if checkpoint is not None and resolved != index:
        print("simsearch serve: each index an alias names has its own model.pt: --checkpoint does not apply to an "
              "alias", file=sys.stderr)
        return None
    if not milvus and checkpoint is None and not os.path.isfile(os.path.join(resolved, MODEL_FILE)):
        try:
            check_index(resolved)  # not an index at all, or an old layout: say that first
        except IndexStoreError as exc:
            print(f"simsearch serve: cannot serve {index}: {exc}", file=sys.stderr)
            return None
        print(f"simsearch serve: {resolved} has no {MODEL_FILE}; pass --checkpoint", file=sys.stderr)
        return None
    if not args.log_queries and (args.log_queries_rate is not None or args.log_queries_max_mb is not None):
        print("simsearch serve: --log-queries-rate and --log-queries-max-mb need --log-queries DIR", file=sys.stderr)
        return None
    try:
        limits = {"max_k": args.max_k, "unknown_below": args.unknown_below,
                  "max_upload_bytes": None if args.max_upload_mb is None else int(args.max_upload_mb * 2**20),
                  "query_log": os.path.abspath(args.log_queries) if args.log_queries else None,
                  "query_log_rate": args.log_queries_rate,
                  "query_log_max_bytes": (None if args.log_queries_max_mb is None
                                          else int(args.log_queries_max_mb * 2**20))}
        config = ApiConfig.from_env(index, token_env=token_env, checkpoint=checkpoint, torch_threads=torch_threads,
                                    runtime=runtime.name, onnx_path=runtime.onnx_path,
                                    **{name: value for name, value in limits.items() if value is not None})
    except ValueError as exc:
        print(f"simsearch serve: {exc}", file=sys.stderr)
        return None
    try:
        set_torch_threads(1)  # no thread pool in the master process before gunicorn forks
        # with runtime onnx/auto this also exports model.onnx once, before the workers look for it
        if milvus:  # a gRPC client must not live in a process that forks: check from a child process
            _check_in_child(index, checkpoint, runtime)
        else:
            Engine.open(index, checkpoint, runtime=runtime).close()
    except (CheckpointError, IndexStoreError, OnnxExportError, OSError) as exc:
        print(f"simsearch serve: cannot serve {index}: {exc}", file=sys.stderr)
        return None
    return config


def _check_in_child(index: str, checkpoint: str | None, runtime: EmbedRuntime) -> None:
    """Open the engine in a child process (gRPC, which Milvus uses, does not survive a fork of a process that
    used it); raises ``IndexStoreError`` with the child's message when it fails."""
    import subprocess

    from index import IndexStoreError

    code = ("import sys\nfrom engine.engine import Engine\nfrom similarity.runtime import EmbedRuntime\ntry:\n"
            "    runtime = EmbedRuntime(sys.argv[3], sys.argv[4] or None, 1)\n"
            "    Engine.open(sys.argv[1], sys.argv[2] or None, runtime=runtime).close()\n"
            "except Exception as exc:\n    print(exc, file=sys.stderr); sys.exit(3)\n")
    argv = [index, checkpoint or "", runtime.name, runtime.onnx_path or ""]
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if done.returncode:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise IndexStoreError(lines[-1] if lines else f"checking {index} failed (exit {done.returncode})")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _worker_exit(server, worker) -> None:
    """In a worker that is leaving: end the process here, with the exit status gunicorn gave it, without
    running native destructors. The start-up check loads the model in the master (ONNX Runtime creates its
    process-wide environment there) and the workers are forked from it; destroying that environment in a
    forked child aborts (``std::system_error``, then SIGABRT and a 10 s wait). Nothing is lost: every write is
    durable before it is acknowledged, and the log handlers are flushed first. gunicorn also calls this hook
    in the master (for a worker already gone): there it does nothing."""
    if os.getpid() != worker.pid:
        return
    exc = sys.exc_info()[1]
    code = exc.code if isinstance(exc, SystemExit) else (1 if exc is not None else 0)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)


def _child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)


try:
    from gunicorn.app.base import BaseApplication
except ImportError:  # pragma: no cover - gunicorn is a runtime dependency; --dev works without it
    BaseApplication = object  # type: ignore[assignment,misc]


class GunicornApp(BaseApplication):  # type: ignore[misc,valid-type]
    """gunicorn with our settings; each worker builds the Flask app (model + index) in :meth:`load`."""

    def __init__(self, config, options: dict) -> None:
        self.api_config = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self):
        from api import create_app

        return create_app(self.api_config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simsearch")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
