"""``simsearch export --checkpoint model.pt [--int8] [--out model.onnx]``: the checkpoint as an ONNX model for
ONNX Runtime (``--runtime onnx`` of serve, index, query and report).

The model takes the preprocessed batch and returns the final embeddings (flip TTA folded in); its metadata
records the checkpoint's sha256, which every command checks against the checkpoint it runs with.  ``--int8``
quantises it, calibrated on sample images: ``--calibration-data``, by default the checkpoint's training data.
"""

from __future__ import annotations

import argparse
import json

from similarity.onnx_format import DEFAULT_CALIBRATION_SIZE


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    description = "Export a checkpoint as an ONNX model for ONNX Runtime. " + __doc__.split("\n\n")[1]
    p = subparsers.add_parser("export", help="export a checkpoint to ONNX (fp32 or int8) for ONNX Runtime",
                              description=" ".join(description.replace("``", "").split()))
    p.add_argument("--checkpoint", required=True, help="trained model (model.pt)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="output format (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="output file (default: beside the checkpoint, model.onnx, or model.int8.onnx with --int8; "
                        "model.onnx is the file --runtime onnx uses unless given --onnx)")
    p.add_argument("--int8", action="store_true", help="static int8 quantisation (calibrated on sample images)")
    p.add_argument("--calibration-data", default=None, metavar="DATA",
                   help="with --int8: a folder of class folders, a CSV of path,label, or 'fashion-mnist' (default: "
                        "the training data the checkpoint records)")
    p.add_argument("--calibration-size", type=int, default=DEFAULT_CALIBRATION_SIZE, metavar="N",
                   help="with --int8: images drawn for calibration (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration draw")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from engine.export import export_checkpoint  # imports onnxruntime: only when exporting

    summary = export_checkpoint(args.checkpoint, args.out, int8=args.int8, calibration=args.calibration_data,
                                calibration_size=args.calibration_size, seed=args.seed)
    print(json.dumps(summary.to_dict(), indent=2))
    return 0
