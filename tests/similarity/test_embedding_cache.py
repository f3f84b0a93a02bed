"""The embedding cache: a collection embedded once by a model is read back (after a spot check) by the next
command that embeds it with the same model; changed images are embedded again."""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import numpy as np
import pytest

from similarity.checkpoint import load_checkpoint
from similarity.embedding_cache import ENV_VAR, VERIFY_SAMPLE, EmbeddingCache, collection_key


def _counting(embedder):
    """``embedder`` with its model calls counted (images per call)."""
    calls: list[int] = []
    real = embedder.embed_tensor

    def counted(x):
        calls.append(len(x))
        return real(x)

    embedder.embed_tensor = counted
    return calls


def test_a_second_embedding_reads_the_cache(checkpoint_path, fmnist_folder, tmp_path):
    embedder = load_checkpoint(checkpoint_path).embedder()
    cache = EmbeddingCache(tmp_path)
    calls = _counting(embedder)
    first = embedder.embed_data(fmnist_folder, progress=False, cache=cache)
    assert sum(calls) == len(fmnist_folder)
    assert (tmp_path / embedder.model_id / f"{collection_key(fmnist_folder)}.npz").is_file()
    calls.clear()
    second = embedder.embed_data(fmnist_folder, progress=False, cache=cache)
    assert sum(calls) == VERIFY_SAMPLE  # only the spot check ran the model
    np.testing.assert_array_equal(second.kept, first.kept)
    np.testing.assert_array_equal(second.embeddings, first.embeddings)


def test_changed_images_under_the_same_names_are_embedded_again(checkpoint_path, fmnist_small, tmp_path):
    embedder = load_checkpoint(checkpoint_path).embedder()
    cache = EmbeddingCache(tmp_path)
    embedder.embed_data(fmnist_small, progress=False, cache=cache)
    changed = replace(fmnist_small, pixels=255 - fmnist_small.pixels)  # same ids, labels and classes
    assert collection_key(changed) == collection_key(fmnist_small)
    calls = _counting(embedder)
    result = embedder.embed_data(changed, progress=False, cache=cache)
    assert sum(calls) == VERIFY_SAMPLE + len(changed)  # the spot check failed, so everything was embedded
    fresh = embedder.embed_data(changed, progress=False)
    np.testing.assert_allclose(result.embeddings, fresh.embeddings, atol=1e-6)
    # and the cache now holds the new result
    np.testing.assert_allclose(cache.load(embedder.model_id, changed).embeddings, fresh.embeddings, atol=1e-6)


def test_another_model_or_collection_misses(checkpoint_path, fmnist_small, tmp_path):
    embedder = load_checkpoint(checkpoint_path).embedder()
    cache = EmbeddingCache(tmp_path)
    embedder.embed_data(fmnist_small, progress=False, cache=cache)
    assert cache.load("0" * 64, fmnist_small) is None
    assert cache.load(embedder.model_id, fmnist_small.subset(np.arange(10))) is None
    (tmp_path / embedder.model_id / f"{collection_key(fmnist_small)}.npz").write_bytes(b"not an npz")
    assert cache.load(embedder.model_id, fmnist_small) is None  # unreadable: a miss, not an error


def test_only_the_newest_models_are_kept(fmnist_small, tmp_path):
    cache = EmbeddingCache(tmp_path, keep_models=2)
    vectors = np.ones((len(fmnist_small), 4), np.float32)
    for i, model in enumerate(["a" * 64, "b" * 64, "c" * 64]):
        cache.save(model, fmnist_small, vectors, np.arange(len(fmnist_small)))
        path = tmp_path / model
        ns = 1_000_000_000 * (i + 1)
        os.utime(path, ns=(ns, ns))
    cache.prune()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b" * 64, "c" * 64]


def test_the_environment_chooses_the_folder_or_turns_it_off(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, "off")
    assert EmbeddingCache.from_environment() is None
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "c"))
    assert EmbeddingCache.from_environment().root == tmp_path / "c"
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert EmbeddingCache.from_environment().root == tmp_path / "xdg" / "simsearch" / "embeddings"


@pytest.mark.embedded_only
def test_training_leaves_what_index_build_and_report_read(fmnist_small, fmnist_folder, tmp_path, monkeypatch, caplog):
    """The main job's chain: train embeds its data and test set once; building the index from the same images
    as files, and the report's queries, read those embeddings back instead of embedding again."""
    from tests.conftest import tiny_config
    from engine.build import build_index
    from similarity.train import train

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "cache"))
    train_part = fmnist_small.subset(np.arange(0, len(fmnist_small), 2))
    test_part = fmnist_small.subset(np.arange(1, len(fmnist_small), 2))
    result = train(train_part, tiny_config(epochs=1), tmp_path / "run", test_data=test_part, progress=False)
    stored = sorted(p.name for p in (tmp_path / "cache" / result.checkpoint_sha256).iterdir())
    assert stored == sorted([f"{collection_key(train_part)}.npz", f"{collection_key(test_part)}.npz"])

    folder = fmnist_folder.subset(np.arange(0, len(fmnist_folder), 2))  # the same images, as PNG files
    caplog.set_level(logging.INFO, logger="similarity.embedder")
    build_index(result.checkpoint_path, folder, tmp_path / "index", progress=False, duplicates="keep")
    assert any("read from the cache" in r.getMessage() for r in caplog.records)
    fresh = load_checkpoint(result.checkpoint_path).embedder().embed_data(folder, progress=False)
    cached = EmbeddingCache(tmp_path / "cache").load(result.checkpoint_sha256, folder)
    np.testing.assert_allclose(cached.embeddings, fresh.embeddings, atol=1e-5)


def test_a_cache_that_cannot_be_written_costs_time_not_the_result(checkpoint_path, fmnist_small, tmp_path, caplog):
    """The cache folder is a file (or a full or read-only disk): the embeddings are returned all the same."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"x")
    embedder = load_checkpoint(checkpoint_path).embedder()
    caplog.set_level(logging.WARNING, logger="similarity.embedding_cache")
    result = embedder.embed_data(fmnist_small, progress=False, cache=EmbeddingCache(blocker))
    fresh = embedder.embed_data(fmnist_small, progress=False)
    np.testing.assert_array_equal(result.embeddings, fresh.embeddings)
    assert any("could not store" in r.getMessage() for r in caplog.records)


def test_an_unlabelled_collection_is_cached_and_indexed(copies_model, photos, tmp_path, monkeypatch):
    """A flat folder (no labels) builds an index with the cache on, as users run it, and is read back."""
    from simsearch.cli import main

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "cache"))
    for n in (1, 2):
        assert main(["index", "build", "--checkpoint", str(copies_model), "--data", str(photos),
                     "--out", str(tmp_path / f"index{n}"), "--workers", "0", "--quiet"]) == 0
    cached = list((tmp_path / "cache").glob("*/*.npz"))
    assert len(cached) == 1  # the second build read what the first wrote
