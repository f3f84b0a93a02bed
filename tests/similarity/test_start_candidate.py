"""The starting point is a candidate: pretrained features with a fitted head are scored as epoch 0, kept when
training makes validation worse, and compared with the trained model; the last blocks train on cached
activations of the frozen ones."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from similarity.cached import build_activation_cache, embed_cached
from similarity.checkpoint import load_checkpoint
from similarity.config import ModelConfig, SamplerConfig
from similarity.gain import compare_to_start
from similarity.models import EmbeddingNet, default_preprocess
from similarity.train import train
from tests.conftest import tiny_config

SIZE = 64  # px: EfficientNet-Lite0 at a small input keeps these tests to seconds


def photo_config(**changes):
    """Pretrained EfficientNet-Lite0, its last 2 blocks trainable, on the PNG files as colour input."""
    model = ModelConfig(backbone="efficientnet_lite0", embedding_dim=32, pretrained=True, trainable_blocks=2)
    config = replace(tiny_config(epochs=2, batch_size=32, num_workers=0, cache_views=1, lr=1e-3,
                                 backbone_lr_multiplier=0.3, weight_decay=1e-4),
                     model=model, preprocess=default_preprocess(model, SIZE), sampler=SamplerConfig(kind="random"))
    return replace(config, **changes)


def test_staged_forward_equals_the_whole_network():
    config = ModelConfig(backbone="efficientnet_lite0", pretrained=True, trainable_blocks=6)
    net = EmbeddingNet(config, default_preprocess(config, SIZE)).eval()
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(net(x), net.forward_from(net.activations(x)), atol=1e-6)
    assert net.frozen_stages == 18 - 6
    full = EmbeddingNet(replace(config, trainable_blocks=-1), default_preprocess(config, SIZE)).eval()
    assert full.frozen_stages == 0  # every block trains: the "activations" are the input itself
    with torch.no_grad():
        assert torch.equal(full.activations(x), x) and torch.allclose(full(x), full.forward_from(x), atol=1e-6)
    cnn = EmbeddingNet(ModelConfig(backbone="smallcnn"), default_preprocess(ModelConfig(backbone="smallcnn")))
    assert cnn.frozen_stages is None
    with pytest.raises(ValueError, match="does not run in stages"):
        cnn.activations(torch.zeros(1, 1, 28, 28))


def test_a_model_made_worse_by_training_is_not_saved(fmnist_folder, tmp_path):
    """A learning rate that wrecks the weights: every trained epoch scores below the start, so epoch 0 (the
    pretrained features with the fitted head) is what the checkpoint holds."""
    result = train(fmnist_folder, photo_config(lr=5.0, backbone_lr_multiplier=1.0), tmp_path / "worse",
                   progress=False)
    assert result.history[0]["epoch"] == 0 and result.history[0]["train_loss"] is None
    start_val = result.history[0]["val_knn_accuracy"]
    assert all(row["val_knn_accuracy"] < start_val for row in result.history[1:])
    assert result.best_epoch == 0
    assert result.start is not None and result.start.best_epoch == 0
    assert "did not beat the starting point" in result.start.verdict
    ckpt = load_checkpoint(result.checkpoint_path)
    assert ckpt.metrics["best_epoch"] == 0 and ckpt.metrics["start"]["best_epoch"] == 0
    # the saved backbone is the pretrained one: its frozen and its (wrecked, then discarded) trained blocks alike
    pretrained = EmbeddingNet(photo_config().model, photo_config().preprocess).state_dict()
    saved = ckpt.model.state_dict()
    backbone = [k for k in pretrained if k.startswith("backbone.") and "running" not in k and "num_batches" not in k]
    assert all(torch.equal(saved[k], pretrained[k]) for k in backbone)
    # its validation score is the start's, re-measured on the saved model
    assert result.val_metrics["knn_accuracy@10"] == pytest.approx(start_val, abs=0.02)


def test_the_start_is_scored_and_the_gain_reported(fmnist_folder, tmp_path):
    result = train(fmnist_folder, photo_config(), tmp_path / "ok", progress=False)
    assert [row["epoch"] for row in result.history] == [0, 1, 2]
    ckpt = load_checkpoint(result.checkpoint_path)
    start = ckpt.metrics["start"]
    assert start["start_val"] == pytest.approx(result.history[0]["val_knn_accuracy"])
    assert start["trained_val"] == pytest.approx(result.history[result.best_epoch]["val_knn_accuracy"])
    assert start["gain"] == pytest.approx(start["trained_val"] - start["start_val"])
    assert 0.0 <= start["p_value"] <= 1.0 and start["verdict"]
    head = ckpt.extra["activation_cache"]["head_fit"]
    assert head["probe"]["loss"] > 0 and ckpt.extra["activation_cache"]["views"] == 1
    # the start is the better of the two heads, as validation scored them
    assert head["chosen"] in ("pca", "probe")
    assert start["start_val"] == pytest.approx(max(head["pca_val_knn"], head["probe_val_knn"]), abs=0.02)


def test_epochs_from_cached_views_learn(fmnist_folder, tmp_path):
    """Three cached views: the epochs step only the last blocks, from the cache, and validation improves on
    what a random head over the same features gives."""
    config = photo_config(cache_views=3, epochs=3, lr=3e-3)
    result = train(fmnist_folder, config, tmp_path / "views", progress=False)
    ckpt = load_checkpoint(result.checkpoint_path)
    assert ckpt.extra["activation_cache"]["views"] == 3
    assert result.history[-1]["train_loss"] < result.history[1]["train_loss"]
    # 10 classes: chance is 0.1
    assert max(row["val_knn_accuracy"] for row in result.history) > 0.4


def test_the_cache_embeds_as_the_model_does(fmnist_folder):
    config = photo_config(cache_views=2)
    net = EmbeddingNet(config.model, config.preprocess).eval()
    val = fmnist_folder.subset(np.arange(20))
    cache = build_activation_cache(net, fmnist_folder.subset(np.arange(20, 60)), val, config)
    assert cache.views == 2 and cache.train.shape[:2] == (2, 40)
    from similarity.embedder import Embedder

    direct = Embedder(net, config.preprocess).embed_data(val, progress=False).embeddings
    # fp16 activations: the same neighbours, embeddings equal to about 3 digits
    assert np.abs(embed_cached(net, cache.val) - direct).max() < 2e-2


def test_the_paired_test_says_when_a_gain_is_not_significant():
    start = np.array([True] * 80 + [False] * 20)
    same_but_noisy = start.copy()
    same_but_noisy[[0, 1, 85, 86, 87]] = ~same_but_noisy[[0, 1, 85, 86, 87]]
    small = compare_to_start(start, same_but_noisy, best_epoch=3)
    assert small.only_trained == 3 and small.only_start == 2
    assert not small.significant and "NOT significant" in small.verdict
    large = compare_to_start(start, np.ones(100, dtype=bool), best_epoch=3)
    assert large.gain == pytest.approx(0.2) and large.significant and "NOT" not in large.verdict
    with pytest.raises(ValueError, match="different queries"):
        compare_to_start(start, start[:50], best_epoch=1)
