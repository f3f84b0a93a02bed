"""``--runtime`` and ``--onnx``: the options of every command that embeds images (serve, index build/add, query,
report), defined once."""

from __future__ import annotations

import argparse
import os

from similarity.runtime import CLI_DEFAULT_RUNTIME, RUNTIMES, EmbedRuntime


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runtime", choices=RUNTIMES, default=CLI_DEFAULT_RUNTIME,
                        help="what runs the model: torch, onnx (ONNX Runtime; exports the checkpoint to model.onnx "
                             "beside it unless --onnx) or auto (ONNX Runtime fp32 when installed, else torch) "
                             "(default: %(default)s)")
    parser.add_argument("--onnx", default=None, metavar="PATH",
                        help="with --runtime onnx/auto: the ONNX model to run (from `simsearch export`; it must "
                             "be this checkpoint's)")


def runtime_from_args(args: argparse.Namespace, threads: int | None = None) -> EmbedRuntime:
    """The :class:`EmbedRuntime` the options ask for (``ValueError`` for --onnx with --runtime torch)."""
    return EmbedRuntime(args.runtime, os.path.abspath(args.onnx) if args.onnx else None, threads)
