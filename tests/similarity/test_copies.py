"""The copy objective: unlabelled folders, copy augmentations, KoLeo, GeM, copy metrics, score normalisation, and a
real one-epoch run on 40 TrashNet photos (small, flat folder)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from similarity.checkpoint import load_checkpoint
from similarity.config import ModelConfig, PreprocessSpec, TrainConfig
from similarity.copies import (CopyObjective, background_offsets, copy_retrieval_metrics, koleo,
                               normalise_scores)
from similarity.copy_augment import collate_pairs, make_copy, two_views
from similarity.copy_recipe import measure_copy_speed, with_copy_speed
from similarity.copy_train import BACKGROUND_ARRAY
from similarity.data import UNLABELLED, DatasetError, load_images, load_labelled_images
from similarity.models import AvgPool, GeMPool
from similarity.recipe import MIN_WIDE_EPOCHS, SMALL_CNN_WIDTHS, recipe_for
from similarity.train import train
from simsearch.cli import main

SPEC = PreprocessSpec(image_size=64, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def photo(flat_folder) -> Image.Image:
    with Image.open(flat_folder / "00.jpg") as image:
        return image.convert("RGB")


def test_a_flat_folder_loads_unlabelled(flat_folder):
    data = load_images(flat_folder)
    assert not data.labelled and data.class_names == [] and len(data) == 40
    assert np.all(data.labels == UNLABELLED) and data.class_counts() == {}
    assert "40 unlabelled images" in data.summary()
    assert data.subset(np.arange(5)).load(0).size == (96, 72)
    with pytest.raises(DatasetError, match="--objective copies"):
        load_labelled_images(flat_folder)


def test_a_class_objective_on_a_flat_folder_fails_clearly(flat_folder, tmp_path, capsys):
    data = load_images(flat_folder)
    with pytest.raises(DatasetError, match="has no labels.*--objective copies"):
        recipe_for(data, 0, objective="classes")
    with pytest.raises(DatasetError, match="has no labels"):
        train(data, TrainConfig(), tmp_path / "run", progress=False)
    assert main(["train", "--data", str(flat_folder), "--objective", "classes", "--out", str(tmp_path / "cli"),
                 "--budget-minutes", "0", "--quiet"]) == 2
    assert "has no labels" in capsys.readouterr().err
    assert recipe_for(data, 0).config.objective == "copies"  # a flat folder chooses the copy objective


def test_copies_are_seeded_and_the_two_views_differ(photo):
    first = two_views(photo, np.random.default_rng(7), SPEC)
    again = two_views(photo, np.random.default_rng(7), SPEC)
    assert first[0].shape == (3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])
    copies = [np.asarray(make_copy(photo, np.random.default_rng(seed), 2.0)) for seed in range(3)]
    assert any(c.shape != copies[0].shape or not np.array_equal(c, copies[0]) for c in copies[1:])
    assert np.array_equal(np.asarray(make_copy(photo, np.random.default_rng(0), 0.0)), np.asarray(photo))
    with pytest.raises(ValueError, match="strength"):
        make_copy(photo, np.random.default_rng(0), 4.0)


def test_koleo_is_finite_and_larger_for_collapsed_embeddings():
    g = torch.Generator().manual_seed(0)
    spread = torch.nn.functional.normalize(torch.randn(32, 16, generator=g), dim=1)
    collapsed = torch.nn.functional.normalize(torch.ones(32, 16) + 1e-3 * torch.randn(32, 16, generator=g), dim=1)
    assert torch.isfinite(koleo(spread)) and torch.isfinite(koleo(collapsed))
    assert koleo(collapsed) > koleo(spread) + 1.0
    with pytest.raises(ValueError):
        koleo(spread[:1])


def test_the_copy_objective_takes_the_pair_layout():
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(3, 8, 8, generator=g), torch.randn(3, 8, 8, generator=g)) for _ in range(4)]
    x, labels = collate_pairs(pairs)
    assert x.shape == (8, 3, 8, 8) and labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    embeddings = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1).requires_grad_()
    objective = CopyObjective(temperature=0.05, entropy_weight=30.0)
    loss = objective(embeddings, labels)
    loss.backward()
    assert torch.isfinite(loss) and embeddings.grad is not None
    assert set(objective.epoch_terms()) == {"train_info_nce_loss", "train_koleo_loss"} and objective.epoch_terms() == {}
    with pytest.raises(ValueError, match="two views"):
        objective(embeddings.detach(), torch.arange(8))


def test_gem_pooling_at_p1_is_average_pooling():
    x = torch.rand(2, 5, 7, 7, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(GeMPool(p=1.0)(x), AvgPool()(x), atol=1e-6)
    assert torch.all(GeMPool(p=3.0)(x) >= AvgPool()(x) - 1e-6)  # the power mean is above the mean
    assert isinstance(GeMPool(learnable=True).p, torch.nn.Parameter)
    with pytest.raises(ValueError, match="pooling"):
        ModelConfig(pooling="max")


def test_copy_metrics_and_score_normalisation():
    eye = np.eye(4, dtype=np.float32)
    perfect = copy_retrieval_metrics(eye, np.arange(4), eye, k=2)
    assert perfect["recall_at_1"] == 1.0 and perfect["micro_ap"] == 1.0 and perfect["recall_at_p90"] == 1.0
    swapped = copy_retrieval_metrics(eye, np.array([1, 0, 2, 3]), eye, k=1)
    assert swapped["recall_at_1"] == 0.5 and swapped["micro_ap"] < 1.0
    background = np.array([[1, 0, 0, 0], [0.8, 0.6, 0, 0]], dtype=np.float32)
    assert np.allclose(background_offsets(eye[:2], background, k=1), [1.0, 0.6])
    offsets = background_offsets(eye[:2], background, k=2)  # the mean of the 2 nearest
    assert np.allclose(offsets, [0.9, 0.3])
    assert np.allclose(normalise_scores(np.array([[0.9], [0.5]]), offsets), [[0.0], [0.2]])
    with pytest.raises(ValueError):
        normalise_scores(np.ones((2, 1)), np.ones(3))


def test_an_old_config_reads_as_the_class_objective():
    data = TrainConfig().to_dict()
    del data["objective"], data["copies"]
    assert TrainConfig.from_dict(data).objective == "classes"
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(objective="pixels")


def test_train_copies_on_a_flat_folder(flat_folder, tmp_path, capsys):
    out = tmp_path / "copies"
    assert main(["train", "--data", str(flat_folder), "--objective", "copies", "--out", str(out), "--epochs", "1",
                 "--image-size", "64", "--budget-minutes", "0", "--workers", "0", "--threads", "2",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "40 unlabelled images" in printed and '"objective": "copies"' in printed
    checkpoint = load_checkpoint(out / "model.pt")
    assert checkpoint.objective == "copies" and checkpoint.model_info()["objective"] == "copies"
    assert checkpoint.config.model.pooling == "gem" and checkpoint.class_names == []
    assert checkpoint.history[-1]["epoch"] == 1 and "val_micro_ap" in checkpoint.history[-1]
    assert 0.0 <= checkpoint.metrics["val"]["recall_at_1"] <= 1.0
    background = checkpoint.arrays[BACKGROUND_ARRAY]
    assert background.shape[1] == checkpoint.config.model.embedding_dim and len(background) > 0
    embedded = checkpoint.embedder().embed_data(load_images(flat_folder), progress=False).embeddings
    assert embedded.shape == (40, checkpoint.config.model.embedding_dim)
    assert np.allclose(np.linalg.norm(embedded, axis=1), 1.0, atol=1e-4)
    assert (out / "curves.png").is_file() and (out / "history.json").is_file()


def test_copies_on_labelled_data_keep_the_labels_for_scoring(fmnist_small, tmp_path):
    """Fashion-MNIST (small grey images: the small CNN, GeM-pooled) trained as copies: the labels are not trained
    on, the held-out images' class kNN is reported beside the copy scores."""
    data = fmnist_small.subset(np.arange(0, 600, 6))
    recipe = recipe_for(data, 0, objective="copies")
    assert recipe.config.model.backbone == "smallcnn" and recipe.config.model.pooling == "gem"
    config = replace(recipe.config, epochs=1, threads=2, num_workers=0, precision="fp32")
    result = train(data, config, tmp_path / "run", progress=False)
    assert result.history[-1]["epoch"] == 1 and np.isfinite(result.history[-1]["train_koleo_loss"])
    assert {"recall_at_1", "micro_ap", "micro_ap_normalised", "classes_precision_at_1"} <= set(result.val_metrics)
    checkpoint = load_checkpoint(result.checkpoint_path)
    assert checkpoint.objective == "copies" and checkpoint.class_names == data.class_names
    # flip test-time augmentation (cheap on the small CNN): an image and its mirror image get one descriptor
    assert checkpoint.preprocess.flip_tta
    image = data.load(0)
    plain, mirrored = checkpoint.embedder().embed_images([image, ImageOps.mirror(image)])
    assert float(plain @ mirrored) > 0.9999


def test_the_small_cnn_copy_width_comes_from_the_copy_step(fmnist_small):
    """The copy recipe's width follows the measured speed of its own step (edits, two views): the widest where
    MIN_WIDE_EPOCHS epochs fit the budget, else the narrower, with the reason; photos keep their recipe."""
    data = fmnist_small.subset(np.arange(0, 600, 6))
    recipe = recipe_for(data, 0, objective="copies")
    recipe = replace(recipe, config=replace(recipe.config, budget_minutes=1.0))
    speed = measure_copy_speed(data, replace(recipe.config, batch_size=16), steps=1)
    assert np.isfinite(speed) and speed > 0
    n_train = 100 - round(recipe.config.val_fraction * 100)
    fast = with_copy_speed(recipe, images_per_second=MIN_WIDE_EPOCHS * n_train / 60)
    slow = with_copy_speed(recipe, images_per_second=0.9 * MIN_WIDE_EPOCHS * n_train / 60)
    assert (fast.config.model.width, slow.config.model.width) == (SMALL_CNN_WIDTHS[0], SMALL_CNN_WIDTHS[-1])
    widths = [r for r in slow.reasons if r.startswith("width ")]
    assert len(widths) == 1 and "copy step" in widths[0] and "3.6 epochs" in widths[0]


def test_a_copy_descriptor_is_compared_with_its_pretrained_start(flat_folder, tmp_path):
    """Labelled photos trained as copies from ImageNet features: the checkpoint holds the start's copy and class
    scores beside the kept model's, measured on the same validation images (the start's µAP is epoch 0's)."""
    unlabelled = load_images(flat_folder)
    labels = np.arange(len(unlabelled)) % 4  # four made-up classes: scoring needs labels, training ignores them
    data = replace(unlabelled, labels=labels.astype(np.int64), class_names=["a", "b", "c", "d"])
    recipe = recipe_for(data, 0, objective="copies")
    config = replace(recipe.config, epochs=1, threads=2, num_workers=0, precision="fp32", val_fraction=0.25,
                     preprocess=replace(recipe.config.preprocess, image_size=64, resize=None))
    result = train(data, config, tmp_path / "run", progress=False)
    assert not recipe.config.preprocess.flip_tta  # it would double the ImageNet backbone's cost
    comparison = load_checkpoint(result.checkpoint_path).metrics["start"]
    start, trained = comparison["start"], comparison["trained"]
    assert comparison["best_epoch"] == result.best_epoch
    assert {"micro_ap", "recall_at_1", "classes_precision_at_1"} <= set(start) == set(trained)
    assert start["micro_ap"] == pytest.approx(result.history[0]["val_micro_ap"], abs=1e-6)
    assert trained["micro_ap"] == pytest.approx(result.val_metrics["micro_ap"], abs=1e-6)
