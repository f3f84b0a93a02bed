"""The simsearch ONNX file: the graph's input and output names and what its ``metadata_props`` record.

:mod:`similarity.onnx_export` writes it and :mod:`similarity.onnx_runtime` reads it; both go through
:class:`OnnxModelInfo`, so the keys are spelled once.  Every value is a string (ONNX metadata is a string
map); structured ones are JSON.  ``model_info`` is the checkpoint's :meth:`Checkpoint.model_info`, the
truth an index checks; the other keys repeat parts of it for people reading the file with other tools.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from similarity.checkpoint import Checkpoint, CheckpointError
from similarity.config import PreprocessSpec, from_dict
from similarity.version import simsearch_version as installed_version

FORMAT = "simsearch-onnx"
FORMAT_VERSION = 1
INPUT_NAME = "input"  # (B, C, H, W) float32, preprocessed by the checkpoint's eval transform
OUTPUT_NAME = "embedding"  # (B, dim) float32, L2-normalised
ONNX_SUFFIX = ".onnx"
DEFAULT_CALIBRATION_SIZE = 256  # images an int8 export calibrates on


class OnnxModelError(CheckpointError):
    """The file is not a readable simsearch ONNX model, or not the one a checkpoint needs."""


class OnnxExportError(ValueError):
    """A checkpoint could not be exported to ONNX (or quantised)."""


@dataclass(frozen=True)
class OnnxModelInfo:
    """What a simsearch ONNX file says about itself."""

    checkpoint_sha256: str
    model_info: dict[str, Any]
    flip_tta_folded: bool
    int8: bool
    simsearch_version: str = ""
    torch_version: str = ""
    calibration: str = ""  # int8 only: which images set the activation ranges

    @classmethod
    def for_checkpoint(cls, checkpoint: Checkpoint, *, int8: bool, calibration: str = "") -> OnnxModelInfo:
        return cls(checkpoint_sha256=checkpoint.sha256, model_info=checkpoint.model_info(),
                   flip_tta_folded=checkpoint.preprocess.flip_tta, int8=int8,
                   simsearch_version=installed_version(), torch_version=str(torch.__version__), calibration=calibration)

    @property
    def preprocess(self) -> PreprocessSpec:
        return from_dict(PreprocessSpec, self.model_info["preprocess"])

    @property
    def embedding_dim(self) -> int:
        return int(self.model_info["embedding_dim"])

    @property
    def class_names(self) -> list[str]:
        return list(self.model_info["class_names"])

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` of the file (all strings)."""
        props = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "checkpoint_sha256": self.checkpoint_sha256,
            "model_info": json.dumps(self.model_info, sort_keys=True),
            "preprocess": json.dumps(self.model_info["preprocess"], sort_keys=True),
            "class_names": json.dumps(self.class_names),
            "embedding_dim": str(self.embedding_dim),
            "flip_tta_folded": _flag(self.flip_tta_folded),
            "int8": _flag(self.int8),
            "simsearch_version": self.simsearch_version,
            "torch_version": self.torch_version,
        }
        if self.calibration:
            props["calibration"] = self.calibration
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str) -> OnnxModelInfo:
        """Parse ``metadata_props``; raises :class:`OnnxModelError` naming ``source`` for a file that is not a
        simsearch ONNX model of a version this code reads."""
        if props.get("format") != FORMAT:
            raise OnnxModelError(f"{source} is an ONNX model without simsearch metadata (format "
                                 f"{props.get('format')!r}); export one with `simsearch export`")
        if props.get("format_version") != str(FORMAT_VERSION):
            raise OnnxModelError(f"{source} has simsearch-onnx format version {props.get('format_version')!r}, this "
                                 f"simsearch reads version {FORMAT_VERSION}; export it again")
        try:
            info = cls(checkpoint_sha256=props["checkpoint_sha256"], model_info=json.loads(props["model_info"]),
                       flip_tta_folded=_parse_flag(props["flip_tta_folded"]), int8=_parse_flag(props["int8"]),
                       simsearch_version=props.get("simsearch_version", ""),
                       torch_version=props.get("torch_version", ""), calibration=props.get("calibration", ""))
            preprocess = info.preprocess
            if info.embedding_dim < 1 or not info.checkpoint_sha256:
                raise ValueError("no embedding dimension or checkpoint sha256")
        except (KeyError, TypeError, ValueError) as exc:
            raise OnnxModelError(f"{source}: damaged simsearch metadata ({type(exc).__name__}: {exc})") from None
        if preprocess.flip_tta != info.flip_tta_folded:
            raise OnnxModelError(f"{source}: the checkpoint embeds with flip_tta={preprocess.flip_tta} but the graph "
                                 f"has it {'folded in' if info.flip_tta_folded else 'left out'}; export it again")
        return info


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _parse_flag(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError(f"expected 'true' or 'false', got {text!r}")
    return text == "true"
