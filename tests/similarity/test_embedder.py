"""The one inference path: PNG files and in-memory pixels embed identically; bad files are skipped."""

from __future__ import annotations

import os
import shutil

import numpy as np

from similarity.checkpoint import load_checkpoint
from similarity.data import load_image_folder
from similarity.transforms import eval_transform, pixels_to_tensor


def test_file_path_equals_in_memory_path(checkpoint_path, fmnist_small, fmnist_folder):
    embedder = load_checkpoint(checkpoint_path).embedder()
    spec = embedder.preprocess
    tensor_fast = pixels_to_tensor(fmnist_small.pixels[:50], spec)
    tensor_pil = np.stack([eval_transform(spec)(fmnist_folder.load(i)).numpy() for i in range(50)])
    assert np.array_equal(tensor_fast.numpy(), tensor_pil)
    fast = embedder.embed_data(fmnist_small, progress=False)
    files = embedder.embed_data(fmnist_folder, batch_size=97, progress=False)
    assert np.array_equal(fast.kept, files.kept)
    assert np.allclose(fast.embeddings, files.embeddings, atol=1e-6)


def test_rgb_and_palette_inputs_embed_like_grayscale(checkpoint_path, fmnist_folder):
    embedder = load_checkpoint(checkpoint_path).embedder()
    gray = fmnist_folder.load(3)
    as_rgb = gray.convert("RGB")
    out = embedder.embed_images([gray, as_rgb])
    assert np.allclose(out[0], out[1], atol=1e-5)


def test_unreadable_files_are_skipped_and_reported(checkpoint_path, fmnist_folder, tmp_path):
    root = tmp_path / "imgs"
    for i in range(6):
        target = root / fmnist_folder.class_names[fmnist_folder.labels[i]]
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(fmnist_folder.paths[i], target / f"{i}.png")
    data = load_image_folder(root, verify=False, min_per_class=1)
    broken = data.paths[2]
    with open(broken, "r+b") as handle:
        handle.truncate(os.path.getsize(broken) // 2)  # header intact, pixel data cut
    result = load_checkpoint(checkpoint_path).embedder().embed_data(data, batch_size=4, progress=False)
    assert len(result.embeddings) == 5 and 2 not in result.kept.tolist()
    assert [s.path for s in result.skipped] == [broken]
    assert "truncated" in result.skipped[0].reason or "corrupt" in result.skipped[0].reason
