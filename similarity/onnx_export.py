"""Exporting a checkpoint to ONNX, for :class:`similarity.onnx_runtime.OnnxEmbedder`: fp32, or int8 by static
quantisation calibrated on sample images.

The graph takes the preprocessed ``(B, C, H, W)`` float32 batch (``eval_transform`` of the checkpoint's spec) and
returns exactly what :meth:`similarity.embedder.Embedder.embed_tensor` returns: the ``(B, dim)`` L2-normalised
embeddings, flip TTA included.  The batch dimension is dynamic.

Flip TTA is folded in as one batch of ``2B`` (the images, then their mirror images) whose two halves are summed
and normalised.  Measured on the 28x28 smallcnn (ONNX Runtime 1.32, fp32, 2 cores under load): one batch of 2B
took 0.52 ms for one image and 33.9 ms for 64 with 1 thread (0.33 / 17.7 ms with 2), the same as feeding a
batch of 2B from Python (0.51 / 33.2 ms; 0.33 / 18.2 ms), while two separate passes through the network in the
graph took 0.68 / 33.5 ms (1.06 / 30.7 ms with 2 threads): ONNX Runtime parallelises one larger batch better.

int8: ``quant_pre_process`` (ONNX shape inference and optimisation; the symbolic shape inference, meant for
transformers, cannot follow the TTA's dynamic slices and is skipped), then ``quantize_static`` in the QOperator
format (QLinearConv) with per-channel int8 weights, uint8 activations and min/max calibration.  On the
smallcnn that ran 2.2x faster than fp32 for one image and 2.3x for batches of 64 (1 thread), slightly ahead of
QDQ, with a mean cosine to fp32 of 0.9999 (worst 0.9998) on 512 test images.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from durablefile import atomic_write
from similarity.checkpoint import Checkpoint, load_checkpoint
from similarity.config import PreprocessSpec
from similarity.data import LabelledImages
from similarity.embedder import preprocessed_batches
from similarity.models import EmbeddingNet
from similarity.onnx_format import (DEFAULT_CALIBRATION_SIZE, INPUT_NAME, OUTPUT_NAME, OnnxExportError,
                                    OnnxModelInfo)

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 32
EXPORTER_LOGGERS = ("onnx_ir", "onnxscript")


class ExportGraph(nn.Module):
    """What the ONNX graph computes: ``model(x)``, or with flip TTA ``normalize(model(x) + model(flip(x)))``
    evaluated as one batch of ``2B``."""

    def __init__(self, model: EmbeddingNet, flip_tta: bool) -> None:
        super().__init__()
        self.model, self.flip_tta = model, flip_tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.flip_tta:
            return self.model(x)
        n = x.shape[0]
        both = self.model(torch.cat([x, x.flip(3)]))
        return F.normalize(both[:n] + both[n:], dim=1)


def export_onnx(checkpoint: Checkpoint | str | os.PathLike, out_path: str | os.PathLike, *, int8: bool = False,
                calibration: LabelledImages | np.ndarray | None = None,
                calibration_size: int = DEFAULT_CALIBRATION_SIZE, seed: int = 0) -> Path:
    """Write the checkpoint's embedding graph to ``out_path`` (atomically) and return the path.

    ``int8``: quantise, setting activation ranges on ``calibration``: labelled images (``calibration_size`` of
    them drawn with ``seed``, decoded and preprocessed with the checkpoint's eval transform) or an already
    preprocessed ``(N, C, H, W)`` float32 array (used whole).  The file's metadata records the checkpoint's
    sha256 and model info (see :class:`similarity.onnx_format.OnnxModelInfo`)."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    if not ckpt.sha256:
        raise ValueError("the checkpoint has no sha256: load it from its file with load_checkpoint")
    if int8 and calibration is None:
        raise ValueError("int8 quantisation needs calibration images (a LabelledImages or an (N, C, H, W) array)")
    if not int8 and calibration is not None:
        raise ValueError("calibration images are for int8 only")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = ckpt.preprocess
    inputs, described = (calibration_inputs(calibration, spec, size=calibration_size, seed=seed)
                         if int8 else (None, ""))
    info = OnnxModelInfo.for_checkpoint(ckpt, int8=int8, calibration=described)
    with tempfile.TemporaryDirectory(prefix="simsearch-onnx-") as work:
        graph = Path(work) / "fp32.onnx"
        _export_graph(ckpt.model, spec, graph)
        if inputs is not None:
            graph = _quantize(graph, Path(work), inputs)
        _write_with_metadata(graph, out, info.to_props())
    log.info("exported %s to %s (%s%s, %d bytes)", ckpt.path or "checkpoint", out, "int8" if int8 else "fp32",
             ", flip TTA folded" if spec.flip_tta else "", out.stat().st_size)
    return out


def calibration_inputs(data: LabelledImages | np.ndarray, spec: PreprocessSpec, *, size: int = DEFAULT_CALIBRATION_SIZE,
                       seed: int = 0) -> tuple[np.ndarray, str]:
    """``(inputs, description)``: ``(N, C, H, W)`` float32 model inputs for calibration, and a line saying where
    they came from.  ``data``: labelled images, of which ``size`` are drawn with ``seed`` and preprocessed with
    ``eval_transform(spec)`` (unreadable files skipped), or an already preprocessed array, used whole."""
    expected = (spec.channels, spec.image_size, spec.image_size)
    if isinstance(data, np.ndarray):
        if data.ndim != 4 or data.shape[1:] != expected or len(data) == 0:
            raise ValueError(f"calibration array must be (N, {', '.join(map(str, expected))}) preprocessed inputs "
                             f"with N >= 1, got shape {data.shape}")
        return np.ascontiguousarray(data, dtype=np.float32), f"{len(data)} preprocessed inputs"
    if size < 1:
        raise ValueError(f"calibration size must be >= 1, got {size}")
    if len(data) == 0:
        raise ValueError("no calibration images")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(data), min(size, len(data)), replace=False))
    batches = [xs.numpy() for _, xs, _ in preprocessed_batches(data.subset(pick), spec, batch_size=64)
               if xs is not None]
    if not batches:
        raise ValueError(f"none of the {len(pick)} calibration images drawn from {data.source or 'the data'} decoded")
    inputs = np.concatenate(batches)
    return inputs, f"{len(inputs)} images of {data.source or 'the given data'} (seed {seed})"


def _export_graph(model: EmbeddingNet, spec: PreprocessSpec, path: Path) -> None:
    """torch.export-based ONNX export (the TorchScript exporter is deprecated) with a dynamic batch."""
    graph = ExportGraph(model, spec.flip_tta).eval()
    example = torch.zeros(2, spec.channels, spec.image_size, spec.image_size)
    try:
        with _quiet_loggers(EXPORTER_LOGGERS):
            program = torch.onnx.export(graph, (example,), dynamo=True, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], verbose=False,
                                        dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
            program.save(str(path), external_data=False)
    except ImportError as exc:
        raise OnnxExportError(f"exporting to ONNX needs the packages of requirements.txt ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - torch.export and the ONNX translation raise many types
        raise OnnxExportError(f"exporting the {model.config.backbone} model to ONNX failed: "
                              f"{type(exc).__name__}: {exc}") from exc


class _CalibrationBatches(CalibrationDataReader):
    """The calibration inputs, in batches, as the quantiser reads them."""

    def __init__(self, inputs: np.ndarray) -> None:
        self._batches = iter([inputs[i:i + CALIBRATION_BATCH] for i in range(0, len(inputs), CALIBRATION_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def _quantize(fp32: Path, work: Path, inputs: np.ndarray) -> Path:
    prepared, quantized = work / "prepared.onnx", work / "int8.onnx"
    reader = _CalibrationBatches(inputs)
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        with _quiet_quantizer():
            quantize_static(str(prepared), str(quantized), reader, quant_format=QuantFormat.QOperator,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
    except Exception as exc:  # noqa: BLE001 - the quantisation tool raises many types
        raise OnnxExportError(f"int8 quantisation failed: {type(exc).__name__}: {exc}") from exc
    return quantized


class _DropShapeTensorNotes(logging.Filter):
    """The quantiser logs a warning for each integer tensor it leaves alone (here: the shape arithmetic of the
    flip-TTA slices), on the root logger; they are expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Inference failed or unsupported type to quantize for tensor")


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    root, note = logging.getLogger(), _DropShapeTensorNotes()
    root.addFilter(note)
    try:
        yield
    finally:
        root.removeFilter(note)


@contextmanager
def _quiet_loggers(names: tuple[str, ...]) -> Iterator[None]:
    """Raise these loggers to WARNING for the duration (the exporter's graph passes log each step at INFO)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _write_with_metadata(graph: Path, out: Path, props: dict[str, str]) -> None:
    """Copy the graph to ``out`` with ``props`` as its metadata, atomically (:func:`durablefile.atomic_write`)."""
    model = onnx.load(str(graph))
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    atomic_write(out, model.SerializeToString())
