"""Shared fixtures: tiny real data (Fashion-MNIST subsets, written as real PNG files), a really
trained small model and a real index built from it. Session-scoped: built once per run.

``--backend milvus`` builds that index in a real Milvus (``milvus-lite server`` started on 127.0.0.1 for the
session) instead of the embedded FAISS + SQLite store: the API, bad-input and writer suites run on both
(``scripts/test.sh`` runs them twice).  Tests of one store's internals carry ``@pytest.mark.embedded_only``."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
# every test embeds afresh unless it turns the embedding cache on itself (tests/similarity/test_embedding_cache.py)
os.environ.setdefault("SIMSEARCH_EMBEDDING_CACHE", "off")

from similarity.config import TrainConfig  # noqa: E402
from similarity.data import LabelledImages, export_to_folder, load_fashion_mnist  # noqa: E402
from similarity.presets import fashion_mnist_full  # noqa: E402
from tests import errorscan  # noqa: E402
from tests.errorscan import error_body_scan  # noqa: E402,F401  (autouse: every test's error bodies)


def pytest_configure(config) -> None:
    errorscan.configure(config)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    errorscan.summary(terminalreporter, config)


def pytest_addoption(parser) -> None:
    parser.addoption("--backend", choices=("embedded", "milvus", "milvus-standalone"), default="embedded",
                     help="the store behind built_index/index_copy: embedded (FAISS + SQLite), milvus (a "
                          "milvus-lite server started on 127.0.0.1) or milvus-standalone (the real Milvus 2.3.5 "
                          "server of the `milvus` package, started on 127.0.0.1; slow tier)")


def pytest_collection_modifyitems(config, items) -> None:
    if config.getoption("--backend") == "embedded":
        return
    skip = pytest.mark.skip(reason="tests the embedded store's files (--backend milvus)")
    for item in items:
        if "embedded_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def backend(request) -> str:
    return request.config.getoption("--backend")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory, request):
    """A Milvus server on 127.0.0.1 for the whole session (stopped at the end): ``milvus-lite server``, or
    the real Milvus 2.3.5 standalone server with ``--backend milvus-standalone``."""
    from bench.milvus_servers import MilvusLiteServer, MilvusStandaloneServer, standalone_available

    root = tmp_path_factory.mktemp("milvus")
    if request.config.getoption("--backend") == "milvus-standalone":
        if not standalone_available():
            pytest.skip("the `milvus` package (Milvus 2.3.5 standalone) is not installed")
        server = MilvusStandaloneServer(root / "standalone").start()
    else:
        server = MilvusLiteServer(root / "data", log_path=root / "server.log").start()
    yield server
    server.stop(timeout=2)  # the data dies with the session: no need to wait for a graceful flush


_COLLECTIONS = iter(range(10**9))


def milvus_index(server, tmp_path: Path, name: str) -> tuple[str, Path]:
    """A fresh collection location on ``server`` and a home folder for it."""
    location = f"milvus://127.0.0.1:{server.port}/{name}_{next(_COLLECTIONS)}"
    return location, tmp_path / f"home-{name}"


@pytest.fixture
def new_milvus_index(milvus_server, tmp_path):
    """``new(name)`` -> ``(location, home)``: a fresh collection on the session's Milvus server."""
    return lambda name: milvus_index(milvus_server, tmp_path, name)


def tiny_config(**changes) -> TrainConfig:
    base = replace(fashion_mnist_full(), epochs=2, batch_size=64, val_fraction=0.2, max_minutes=0.0,
                   patience=0, threads=2, compile=False)
    return replace(base, **changes)


@pytest.fixture(scope="session")
def fmnist_train() -> LabelledImages:
    return load_fashion_mnist(None, "train")


@pytest.fixture(scope="session")
def fmnist_small(fmnist_train) -> LabelledImages:
    """600 training images, 60 per class, seeded."""
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(np.flatnonzero(fmnist_train.labels == c), 60, replace=False)
                          for c in range(10)])
    return fmnist_train.subset(np.sort(idx))


@pytest.fixture(scope="session")
def fmnist_folder(fmnist_small, tmp_path_factory) -> LabelledImages:
    """The same 600 images as real PNG files in one folder per class."""
    return export_to_folder(fmnist_small, tmp_path_factory.mktemp("fmnist_png"))


@pytest.fixture(scope="session")
def trained(fmnist_small, tmp_path_factory):
    """A small CNN really trained for 2 epochs on 480 images (a few seconds on 2 cores)."""
    from similarity.train import train

    out = tmp_path_factory.mktemp("run")
    return train(fmnist_small, tiny_config(), out, progress=False)


@pytest.fixture(scope="session")
def checkpoint_path(trained) -> str:
    return trained.checkpoint_path


@pytest.fixture(scope="session")
def onnx_model(checkpoint_path, tmp_path_factory) -> str:
    """The trained checkpoint exported to fp32 ONNX (flip TTA folded in: the tiny config embeds with it)."""
    from similarity.onnx_export import export_onnx

    return str(export_onnx(checkpoint_path, tmp_path_factory.mktemp("onnx") / "model.onnx"))


@pytest.fixture(scope="session")
def built_index(checkpoint_path, fmnist_folder, tmp_path_factory, request) -> str:
    """A Flat index of the 600 PNGs built with the trained checkpoint (read-only: copy before writing): a
    directory, or with ``--backend milvus`` a collection location."""
    from engine.build import build_index

    root = tmp_path_factory.mktemp("idx")
    if request.config.getoption("--backend") != "embedded":
        location, home = milvus_index(request.getfixturevalue("milvus_server"), root, "built")
        build_index(checkpoint_path, fmnist_folder, location, progress=False, home=home)
        return location
    out = root / "index"
    build_index(checkpoint_path, fmnist_folder, out, progress=False)
    return str(out)


@pytest.fixture(scope="session")
def ids(built_index, fmnist_folder) -> list[int]:
    """``ids[i]``: the id of ``fmnist_folder``'s i-th image in ``built_index`` (and in every ``index_copy``):
    ``i`` itself in an index directory, a random 53-bit id in Milvus."""
    from index.location import open_store

    store = open_store(built_index)
    try:
        by_path = {item.path: item.id for item in store.iter_items()}
    finally:
        store.close()
    return [by_path[os.path.abspath(path)] for path in fmnist_folder.paths]


@pytest.fixture
def index_copy(built_index, tmp_path, request) -> str:
    """A private, writable copy of ``built_index`` (a copied directory, or a new collection)."""
    import shutil

    if request.config.getoption("--backend") != "embedded":
        from engine.build import copy_index

        location, home = milvus_index(request.getfixturevalue("milvus_server"), tmp_path, "copy")
        copy_index(built_index, location, home=home, progress=False)
        return location
    target = tmp_path / "index"
    shutil.copytree(built_index, target)
    return str(target)


TRASHNET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "trashnet-150"


@pytest.fixture(scope="session")
def flat_folder(tmp_path_factory) -> Path:
    """40 TrashNet photos (a few of each class, seeded), 96 px on the long side, in one flat folder (no labels)."""
    from PIL import Image

    if not TRASHNET.is_dir():
        pytest.skip(f"TrashNet not found at {TRASHNET}")
    rng = np.random.default_rng(0)
    files = sorted(TRASHNET.glob("*/*.jpg"))
    out = tmp_path_factory.mktemp("flat")
    for n, i in enumerate(np.sort(rng.choice(len(files), 40, replace=False))):
        with Image.open(files[i]) as image:
            image.convert("RGB").resize((96, 72)).save(out / f"{n:02d}.jpg", quality=95)
    return out


@pytest.fixture(scope="session")
def photos(flat_folder, tmp_path_factory) -> Path:
    """The 40 photos and a byte-for-byte copy of the first (a duplicate group for the report)."""
    import shutil

    out = tmp_path_factory.mktemp("photos")
    for path in sorted(flat_folder.glob("*.jpg")):
        shutil.copyfile(path, out / path.name)
    shutil.copyfile(flat_folder / "00.jpg", out / "copy-of-00.jpg")
    return out


@pytest.fixture(scope="session")
def copies_model(photos, tmp_path_factory) -> Path:
    """A copy descriptor trained on ``photos`` through the command line: 1 epoch at 64 px."""
    from simsearch.cli import main

    out = tmp_path_factory.mktemp("copies") / "run"
    assert main(["train", "--data", str(photos), "--out", str(out), "--epochs", "1", "--image-size", "64",
                 "--budget-minutes", "0", "--workers", "0", "--threads", "2", "--quiet"]) == 0
    return out / "model.pt"


@pytest.fixture(scope="session")
def unlabelled_index(copies_model, photos, tmp_path_factory) -> str:
    """An index of ``photos`` (no labels) built with ``copies_model`` through the command line (read-only)."""
    from simsearch.cli import main

    out = tmp_path_factory.mktemp("unlabelled") / "index"
    assert main(["index", "build", "--checkpoint", str(copies_model), "--data", str(photos), "--out", str(out),
                 "--workers", "0", "--quiet"]) == 0
    return str(out)


@pytest.fixture
def sample_png(fmnist_folder) -> Path:
    return Path(fmnist_folder.paths[0])
