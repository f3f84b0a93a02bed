"""ONNX export and ONNX Runtime: the file's metadata, parity with torch on real images (flip TTA on and off), int8,
bad files, and the runtime choice (the cache beside the checkpoint, refusing another checkpoint's model)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import replace

import numpy as np
import onnx
import pytest

from similarity.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from similarity.embedder import Embedder
from similarity.onnx_export import calibration_inputs, export_onnx
from similarity.onnx_format import FORMAT, OnnxExportError, OnnxModelError
from similarity.onnx_runtime import OnnxEmbedder
from similarity.runtime import EmbedRuntime, load_embedder, onnx_cache_path
from similarity.version import simsearch_version


@pytest.fixture(scope="module")
def checkpoint(checkpoint_path) -> Checkpoint:
    return load_checkpoint(checkpoint_path)


@pytest.fixture(scope="module")
def no_tta(checkpoint, tmp_path_factory) -> tuple[Checkpoint, str]:
    """The same weights with flip TTA off (another file, so another sha256), and its ONNX export."""
    config = replace(checkpoint.config, preprocess=replace(checkpoint.preprocess, flip_tta=False))
    folder = tmp_path_factory.mktemp("no_tta")
    save_checkpoint(folder / "model.pt", checkpoint.model, config, checkpoint.class_names, extra=checkpoint.extra)
    ckpt = load_checkpoint(folder / "model.pt")
    return ckpt, str(export_onnx(ckpt, folder / "model.onnx"))


@pytest.fixture
def private_checkpoint(checkpoint_path, tmp_path) -> Checkpoint:
    """A copy of the trained checkpoint in this test's folder (where its ONNX cache goes)."""
    shutil.copyfile(checkpoint_path, tmp_path / "model.pt")
    return load_checkpoint(tmp_path / "model.pt")


def props_of(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_export_records_the_checkpoint(checkpoint, onnx_model):
    assert checkpoint.preprocess.flip_tta  # the tiny recipe embeds with flip TTA: the folded graph is tested
    props = props_of(onnx_model)
    assert props["format"] == FORMAT and props["format_version"] == "1"
    assert props["checkpoint_sha256"] == checkpoint.sha256
    assert json.loads(props["model_info"]) == checkpoint.model_info()
    assert json.loads(props["preprocess"]) == checkpoint.model_info()["preprocess"]
    assert json.loads(props["class_names"]) == checkpoint.class_names
    assert props["embedding_dim"] == str(checkpoint.config.model.embedding_dim)
    assert (props["flip_tta_folded"], props["int8"]) == ("true", "false")
    assert props["simsearch_version"] == simsearch_version()
    graph = onnx.load(onnx_model).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]  # dynamic batch
    embedder = OnnxEmbedder(onnx_model, threads=1)
    assert (embedder.model_id, embedder.dim, embedder.preprocess) == \
        (checkpoint.sha256, checkpoint.config.model.embedding_dim, checkpoint.preprocess)
    assert embedder.device.type == "cpu" and embedder.info.class_names == checkpoint.class_names


@pytest.mark.parametrize("tta", [True, False], ids=["flip_tta", "no_tta"])
def test_fp32_embeds_like_torch(tta, checkpoint, no_tta, onnx_model, fmnist_folder):
    ckpt, path = (checkpoint, onnx_model) if tta else no_tta
    files = fmnist_folder.paths[:96]
    expected = ckpt.embedder().embed_data(files, batch_size=40, progress=False).embeddings
    embedder = OnnxEmbedder(path, threads=1)
    got = embedder.embed_data(files, batch_size=40, progress=False).embeddings
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4
    one = fmnist_folder.load(5)
    assert np.abs(embedder.embed_images([one]) - ckpt.embedder().embed_images([one])).max() < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_int8_export_stays_close_to_fp32(checkpoint, onnx_model, fmnist_folder, tmp_path):
    path = export_onnx(checkpoint, tmp_path / "q.onnx", int8=True, calibration=fmnist_folder, calibration_size=128)
    embedder = OnnxEmbedder(path, threads=1)
    assert embedder.info.int8 and embedder.model_id == checkpoint.sha256
    assert embedder.info.calibration.startswith("128 images of")
    assert os.path.getsize(path) < os.path.getsize(onnx_model)
    files = fmnist_folder.paths[100:228]
    fp32 = OnnxEmbedder(onnx_model, threads=1).embed_data(files, progress=False).embeddings
    int8 = embedder.embed_data(files, progress=False).embeddings
    assert np.min(np.sum(fp32 * int8, axis=1)) > 0.9


def test_calibration_arguments_are_checked(checkpoint, fmnist_small, tmp_path):
    with pytest.raises(ValueError, match="calibration images"):
        export_onnx(checkpoint, tmp_path / "q.onnx", int8=True)
    with pytest.raises(ValueError, match="int8 only"):
        export_onnx(checkpoint, tmp_path / "q.onnx", calibration=fmnist_small)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\).*\(4, 3, 28, 28\)"):
        calibration_inputs(np.zeros((4, 3, 28, 28), np.float32), checkpoint.preprocess)
    inputs, described = calibration_inputs(fmnist_small, checkpoint.preprocess, size=10, seed=3)
    assert inputs.shape == (10, 1, 28, 28) and "10 images of fashion-mnist:train" in described
    again, _ = calibration_inputs(fmnist_small, checkpoint.preprocess, size=10, seed=3)
    assert np.array_equal(inputs, again)
    assert not (tmp_path / "q.onnx").exists()


def test_unusable_files_are_refused(onnx_model, tmp_path):
    with pytest.raises(OnnxModelError, match="not found"):
        OnnxEmbedder(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(OnnxModelError, match="not a readable ONNX model"):
        OnnxEmbedder(garbage)
    model = onnx.load(onnx_model)
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(OnnxModelError, match="without simsearch metadata"):
        OnnxEmbedder(tmp_path / "bare.onnx")
    model = onnx.load(onnx_model)
    next(p for p in model.metadata_props if p.key == "format_version").value = "99"
    onnx.save(model, str(tmp_path / "future.onnx"))
    with pytest.raises(OnnxModelError, match="format version '99'"):
        OnnxEmbedder(tmp_path / "future.onnx")


def test_runtime_settings_are_checked():
    with pytest.raises(ValueError, match="unknown runtime 'tpu'"):
        EmbedRuntime("tpu")
    with pytest.raises(ValueError, match="not torch"):
        EmbedRuntime("torch", onnx_path="m.onnx")
    with pytest.raises(ValueError, match="threads"):
        EmbedRuntime("onnx", threads=0)


def test_load_embedder_refuses_another_checkpoints_model(checkpoint, no_tta):
    other_ckpt, other_onnx = no_tta
    assert isinstance(load_embedder(checkpoint), Embedder)  # torch unless asked
    for name in ("onnx", "auto"):  # auto does not fall back to torch over a wrong file
        with pytest.raises(OnnxModelError) as caught:
            load_embedder(checkpoint, EmbedRuntime(name, onnx_path=other_onnx))
        assert other_ckpt.sha256 in str(caught.value) and checkpoint.sha256 in str(caught.value)


def test_onnx_cache_beside_the_checkpoint(private_checkpoint, no_tta, caplog):
    cache = onnx_cache_path(private_checkpoint)
    assert str(cache) == os.path.join(os.path.dirname(private_checkpoint.path), "model.onnx") and not cache.exists()
    with caplog.at_level(logging.INFO, logger="similarity.runtime"):
        embedder = load_embedder(private_checkpoint, EmbedRuntime("auto", threads=1))
    assert isinstance(embedder, OnnxEmbedder) and embedder.path == cache and embedder.threads == 1
    assert "runtime auto chose onnx" in caplog.text
    exported = cache.stat().st_mtime_ns
    assert load_embedder(private_checkpoint, EmbedRuntime("onnx")).model_id == private_checkpoint.sha256
    assert cache.stat().st_mtime_ns == exported  # reused
    shutil.copyfile(no_tta[1], cache)  # another checkpoint's model: exported again
    assert load_embedder(private_checkpoint, EmbedRuntime("onnx")).model_id == private_checkpoint.sha256
    cache.write_bytes(b"garbage")  # unreadable: exported again
    assert load_embedder(private_checkpoint, EmbedRuntime("onnx")).model_id == private_checkpoint.sha256
    assert [p.name for p in cache.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_auto_falls_back_to_torch_when_the_export_fails(private_checkpoint, monkeypatch, caplog):
    import similarity.onnx_export

    def fail(*args, **kwargs):
        raise OnnxExportError("exporting the smallcnn model to ONNX failed: test")

    monkeypatch.setattr(similarity.onnx_export, "export_onnx", fail)
    with caplog.at_level(logging.INFO, logger="similarity.runtime"):
        assert isinstance(load_embedder(private_checkpoint, EmbedRuntime("auto")), Embedder)
    assert "embedding with torch" in caplog.text
    with pytest.raises(OnnxExportError):
        load_embedder(private_checkpoint, EmbedRuntime("onnx"))
