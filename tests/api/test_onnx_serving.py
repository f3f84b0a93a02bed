"""Serving with ONNX Runtime: the same neighbours as torch over the same index, and a wrong model refused."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from api import ApiConfig, SearchService, create_app
from engine.build import index_home
from similarity.onnx_format import OnnxModelError
from similarity.onnx_runtime import OnnxEmbedder
from simsearch import cmd_serve


@pytest.fixture(scope="module")
def onnx_client(built_index, onnx_model):
    service = SearchService.from_config(ApiConfig(index=built_index, random_seed=0, runtime="onnx",
                                                  onnx_path=onnx_model, torch_threads=1))
    yield create_app(service=service).test_client()
    service.close()


def search(client, path: str) -> list[dict]:
    with open(path, "rb") as handle:
        r = client.post("/api/search?k=8", data={"image": (io.BytesIO(handle.read()), "q.png")},
                        content_type="multipart/form-data")
    assert r.status_code == 200, r.get_json()
    return r.get_json()["neighbors"]


def test_onnx_service_answers_like_torch(client, onnx_client, fmnist_folder):
    assert isinstance(onnx_client.application.extensions["simsearch"].engine.embedder, OnnxEmbedder)
    assert onnx_client.get("/api/health").get_json()["runtime"] == "onnx"
    assert client.get("/api/health").get_json()["runtime"] == "torch"
    for i in (0, 77, 231, 404, 599):
        torch_hits, onnx_hits = search(client, fmnist_folder.paths[i]), search(onnx_client, fmnist_folder.paths[i])
        assert [n["id"] for n in onnx_hits] == [n["id"] for n in torch_hits]
        assert np.allclose([n["similarity"] for n in onnx_hits], [n["similarity"] for n in torch_hits], atol=1e-4)


def test_runtime_settings_are_checked(built_index, tmp_path):
    with pytest.raises(ValueError, match="unknown runtime"):
        ApiConfig(index=built_index, runtime="tpu")
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not onnx")
    with pytest.raises(OnnxModelError, match="not a readable ONNX model"):
        SearchService.from_config(ApiConfig(index=built_index, runtime="onnx", onnx_path=str(bogus)))


def test_serve_refuses_a_wrong_onnx_model(index_copy, tmp_path, capsys):
    args = ["serve", "--index", index_copy, "--runtime", "onnx", "--onnx", str(tmp_path / "missing.onnx")]
    assert cmd_serve.main(args) == 2
    assert "cannot serve" in capsys.readouterr().err
    assert cmd_serve.main(["serve", "--index", index_copy, "--runtime", "torch", "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "not torch" in capsys.readouterr().err


def test_serve_check_exports_the_model_for_the_workers(index_copy, monkeypatch):
    """The check before gunicorn forks opens the engine: with runtime onnx it leaves model.onnx for the workers."""
    monkeypatch.setattr(cmd_serve, "GunicornApp", _NoServer)
    assert cmd_serve.main(["serve", "--index", index_copy, "--runtime", "onnx", "--workers", "1"]) == 0
    assert os.path.isfile(os.path.join(index_home(index_copy), "model.onnx"))
    assert _NoServer.config.runtime == "onnx" and _NoServer.config.onnx_path is None


class _NoServer:
    config: ApiConfig | None = None

    def __init__(self, config: ApiConfig, options: dict) -> None:
        type(self).config = config

    def run(self) -> None:
        pass
