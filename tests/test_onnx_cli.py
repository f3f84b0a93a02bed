"""ONNX Runtime through the engine and the command line: ``simsearch export``, ``--runtime``/``--onnx`` on index
build and query, and the index refusing an ONNX model of another checkpoint."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pytest

from engine.build import index_home
from engine.engine import Engine
from similarity.checkpoint import load_checkpoint
from similarity.onnx_export import export_onnx
from similarity.onnx_format import OnnxModelError
from similarity.runtime import EmbedRuntime
from simsearch.cli import main


@pytest.fixture
def other_checkpoint(checkpoint_path, tmp_path) -> str:
    """The same weights in a file with other bytes: another checkpoint as far as an index knows."""
    other = tmp_path / "other" / "model.pt"
    other.parent.mkdir()
    shutil.copyfile(checkpoint_path, other)
    with open(other, "ab") as handle:
        handle.write(b"\0")
    return str(other)


def test_export_command(checkpoint_path, tmp_path, capsys):
    shutil.copyfile(checkpoint_path, tmp_path / "model.pt")
    assert main(["export", "--checkpoint", str(tmp_path / "model.pt"), "--format", "onnx"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"] == str(tmp_path / "model.onnx") and not summary["int8"] and summary["flip_tta_folded"]
    assert summary["checkpoint_sha256"] == load_checkpoint(checkpoint_path).sha256
    out = tmp_path / "q" / "small.onnx"
    assert main(["export", "--checkpoint", str(tmp_path / "model.pt"), "--int8", "--calibration-data", "fashion-mnist",
                 "--calibration-size", "64", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"] == str(out) and summary["int8"] and summary["calibration"].startswith("64 images of")
    assert summary["min_cosine_to_torch"] > 0.9
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["int8"] == "true"


def test_int8_export_calibrates_on_the_recorded_training_data_by_default(checkpoint_path, tmp_path, capsys):
    assert load_checkpoint(checkpoint_path).extra["data_source"] == "fashion-mnist:train"
    assert main(["export", "--checkpoint", checkpoint_path, "--int8", "--calibration-size", "32",
                 "--out", str(tmp_path / "q.onnx")]) == 0
    assert "32 images of fashion-mnist:train" in json.loads(capsys.readouterr().out)["calibration"]


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "{tmp}/nope.pt"], "checkpoint not found"),
    (["--checkpoint", "{ckpt}", "--calibration-data", "{tmp}"], "int8 exports only"),
    (["--checkpoint", "{ckpt}", "--int8", "--calibration-data", "{tmp}/none"], "not found"),
    (["--checkpoint", "{ckpt}", "--int8", "--calibration-size", "0"], "calibration size must be >= 1"),
    (["--checkpoint", "{ckpt}", "--out", "{tmp}/model.txt"], "must end in .onnx"),
])
def test_export_errors_are_one_line(argv, message, checkpoint_path, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, ckpt=checkpoint_path) for a in argv]
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("simsearch export: error:") and message in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_int8_without_usable_training_data_asks_for_calibration_data(checkpoint_path, tmp_path, capsys):
    from similarity.checkpoint import save_checkpoint

    ckpt = load_checkpoint(checkpoint_path)
    moved = tmp_path / "model.pt"
    save_checkpoint(moved, ckpt.model, ckpt.config, ckpt.class_names, extra={"data_source": str(tmp_path / "gone")})
    assert main(["export", "--checkpoint", str(moved), "--int8"]) == 2
    err = capsys.readouterr().err
    assert "cannot be loaded" in err and "--calibration-data" in err


def test_index_refuses_an_onnx_model_of_another_checkpoint(built_index, onnx_model, other_checkpoint, tmp_path,
                                                           capsys):
    wrong = export_onnx(other_checkpoint, tmp_path / "wrong.onnx")
    with pytest.raises(OnnxModelError) as caught:
        Engine.open(built_index, runtime=EmbedRuntime("onnx", onnx_path=str(wrong)))
    assert load_checkpoint(other_checkpoint).sha256 in str(caught.value)
    engine = Engine.open(built_index, runtime=EmbedRuntime("onnx", onnx_path=onnx_model))
    try:
        assert engine.embedder.model_id == engine.checkpoint.sha256
    finally:
        engine.close()
    query = os.path.join(index_home(built_index), "model.pt")  # not an image: never reached
    assert main(["query", query, "--index", built_index, "--runtime", "onnx", "--onnx", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "sha256" in err and "Traceback" not in err
    assert main(["query", query, "--index", built_index, "--runtime", "torch", "--onnx", onnx_model]) == 2
    assert "not torch" in capsys.readouterr().err


def test_build_and_query_with_onnx_runtime(checkpoint_path, onnx_model, fmnist_folder, built_index, tmp_path, capsys):
    subset = tmp_path / "data"
    for i in range(0, 600, 10):
        target = subset / fmnist_folder.class_names[fmnist_folder.labels[i]].replace("/", "-")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(fmnist_folder.paths[i], target / f"{i}.png")
    out = tmp_path / "idx"
    assert main(["index", "build", "--checkpoint", checkpoint_path, "--data", str(subset), "--out", str(out),
                 "--runtime", "onnx", "--onnx", onnx_model, "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 60
    query = fmnist_folder.paths[10]
    answers = {}
    for runtime in ("torch", "onnx"):
        assert main(["query", query, "--index", str(out), "-k", "5", "--json", "--runtime", runtime]) == 0
        answers[runtime] = json.loads(capsys.readouterr().out)[0]["neighbors"]
    assert [n["id"] for n in answers["onnx"]] == [n["id"] for n in answers["torch"]]
    assert np.allclose([n["similarity"] for n in answers["onnx"]], [n["similarity"] for n in answers["torch"]],
                       atol=1e-4)
    assert answers["onnx"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert (out / "model.onnx").is_file()  # --runtime onnx without --onnx: exported beside the index's model.pt
