"""Loaders: image folders, CSVs, IDX files, corrupt files, and stratified splits."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from PIL import Image

from similarity.data import (DatasetError, export_to_folder, load_csv, load_image_folder, load_labelled_images,
                             read_idx, stratified_split)


def _write_images(folder, n, colour):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (12, 10), colour).save(folder / f"img{i}.png")


def test_folder_loader_skips_and_reports_corrupt_files(tmp_path):
    _write_images(tmp_path / "red", 3, (255, 0, 0))
    _write_images(tmp_path / "blue", 2, (0, 0, 255))
    (tmp_path / "red" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    (tmp_path / "blue" / "notes.png").write_text("this is not a picture")
    (tmp_path / "blue" / "readme.txt").write_text("ignored: not an image extension")
    data = load_image_folder(tmp_path)
    assert data.class_names == ["blue", "red"]
    assert data.class_counts() == {"blue": 2, "red": 3}
    skipped = sorted(s.path for s in data.skipped)
    assert skipped == [str(tmp_path / "blue" / "notes.png"), str(tmp_path / "red" / "truncated.jpg")]
    assert "skipped 2" in data.summary()
    assert data.load(0).mode == "RGB"


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        load_image_folder(tmp_path)
    _write_images(tmp_path / "a", 3, (1, 2, 3))
    _write_images(tmp_path / "b", 1, (4, 5, 6))
    with pytest.raises(DatasetError, match=r"at least 2 images.*'b' \(1\)"):
        load_image_folder(tmp_path)


def test_csv_resolves_relative_paths_and_reports_missing(tmp_path):
    _write_images(tmp_path / "imgs", 4, (9, 9, 9))
    (tmp_path / "list.csv").write_text("path,label\nimgs/img0.png,cat\nimgs/img1.png,cat\n"
                                       "imgs/img2.png,dog\nimgs/img3.png,dog\n")
    data = load_labelled_images(tmp_path / "list.csv")
    assert data.class_names == ["cat", "dog"] and len(data) == 4
    assert data.paths[0] == str(tmp_path / "imgs" / "img0.png")
    (tmp_path / "bad.csv").write_text("imgs/img0.png,cat\nimgs/nope.png,cat\n")
    with pytest.raises(DatasetError, match="1 listed file.*nope.png"):
        load_csv(tmp_path / "bad.csv")
    (tmp_path / "short.csv").write_text("imgs/img0.png\n")
    with pytest.raises(DatasetError, match="expected 'path,label'"):
        load_csv(tmp_path / "short.csv")


def test_idx_reader_roundtrip_and_truncation(tmp_path):
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + b"".join(int(s).to_bytes(4, "big") for s in pixels.shape)
    with gzip.open(tmp_path / "x.gz", "wb") as handle:
        handle.write(header + pixels.tobytes())
    assert (read_idx(tmp_path / "x.gz") == pixels).all()
    with gzip.open(tmp_path / "short.gz", "wb") as handle:
        handle.write(header + pixels.tobytes()[:-5])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DatasetError, match="magic"):
        read_idx(tmp_path / "junk")


def test_fashion_mnist_is_real(fmnist_train):
    assert fmnist_train.pixels.shape == (60000, 28, 28)
    assert np.bincount(fmnist_train.labels).tolist() == [6000] * 10
    assert fmnist_train.class_names[9] == "Ankle boot"


def test_export_is_lossless(fmnist_small, fmnist_folder):
    for i in (0, 137, 599):
        assert np.array_equal(np.asarray(fmnist_folder.load(i)), fmnist_small.pixels[i])
    assert fmnist_folder.labels.tolist() == fmnist_small.labels.tolist()


def test_stratified_split_is_seeded_disjoint_and_stratified():
    labels = np.repeat(np.arange(4), [50, 30, 20, 100])
    a = stratified_split(labels, val_fraction=0.1, test_fraction=0.2, seed=3)
    b = stratified_split(labels, val_fraction=0.1, test_fraction=0.2, seed=3)
    c = stratified_split(labels, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])
    together = np.concatenate([a["train"], a["val"], a["test"]])
    assert len(together) == len(labels) == len(set(together.tolist()))
    assert np.bincount(labels[a["test"]]).tolist() == [10, 6, 4, 20]
