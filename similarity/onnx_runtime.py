"""``OnnxEmbedder``: a simsearch ONNX model (see :mod:`similarity.onnx_export`) run by ONNX Runtime on the CPU.

It has :class:`similarity.embedder.Embedder`'s interface (the decoding, preprocessing and batching are the same
code, :class:`~similarity.embedder.ImageEmbedder`), so the engine, the API and the CLI use either.  Its
``model_id`` is the checkpoint sha256 the file records, which the index's model check compares.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from similarity.embedder import ImageEmbedder
from similarity.onnx_format import INPUT_NAME, OUTPUT_NAME, OnnxModelError, OnnxModelInfo

log = logging.getLogger(__name__)


def session_options(threads: int | None) -> ort.SessionOptions:
    """Deliberate settings: ``threads`` intra-op threads (None: ONNX Runtime's default, one per physical core; a
    server gives each worker its share, as ``simsearch serve`` does for torch), no inter-op parallelism
    (sequential execution of one chain of convolutions), every graph optimisation, and only errors logged."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


class OnnxEmbedder(ImageEmbedder):
    """Embeds with ONNX Runtime.  ``path``: a file written by :func:`similarity.onnx_export.export_onnx`;
    raises :class:`OnnxModelError` for a missing file, one that is not ONNX, or one without simsearch metadata."""

    runtime = "onnx"

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxModelError(f"ONNX model not found: {self.path}")
        options = session_options(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for a bad file
            raise OnnxModelError(f"{self.path} is not a readable ONNX model: {exc}") from None
        self.info = OnnxModelInfo.from_props(self.session.get_modelmeta().custom_metadata_map, str(self.path))
        _check_signature(self.session, self.path)
        super().__init__(self.info.preprocess)
        self.dim = self.info.embedding_dim
        self.model_id = self.info.checkpoint_sha256
        self.device = torch.device("cpu")
        self.threads = threads

    def embed_tensor(self, x: torch.Tensor) -> np.ndarray:
        """x: (B, C, H, W) preprocessed float32 -> (B, dim) float32, L2-normalised."""
        xs = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: xs})[0]

    def describe(self) -> str:
        """One line for logs: the file, its precision, TTA and threads."""
        return (f"ONNX Runtime {ort.__version__} on {self.path} ({'int8' if self.info.int8 else 'fp32'}"
                f"{', flip TTA folded' if self.info.flip_tta_folded else ''}, "
                f"{self.threads or 'default'} intra-op threads)")


def _check_signature(session: ort.InferenceSession, path: Path) -> None:
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise OnnxModelError(f"{path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, the graph has "
                             f"inputs {inputs} and outputs {outputs}")
