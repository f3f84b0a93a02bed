"""The recipe is chosen from the data: small grayscale images get the small CNN at their own size and
statistics, anything else the pretrained backbone at a size the budget allows; the choice lands in the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from similarity.checkpoint import load_checkpoint
from similarity.data import load_image_folder
from similarity.models import IMAGENET_MEAN, IMAGENET_STD
from similarity.recipe import (MIN_PARTIAL_EPOCHS, SMALL_CNN_WIDTHS, TRAINABLE_CHOICES, DataProfile, MachineSpeed,
                               choose_recipe, inspect_data, measure_images_per_second, measure_machine_speed,
                               measure_small_cnn_speed, native_bf16, recipe_for)
from simsearch.cli import main
from tests.digits import draw_digits


def write_folder(root: Path, *, size: tuple[int, int], mode: str, classes: int = 3, per_class: int = 8,
                 seed: int = 0) -> Path:
    """``classes`` sub-folders of ``per_class`` seeded random PNGs (class c brighter than class c - 1)."""
    rng = np.random.default_rng(seed)
    channels = 1 if mode == "L" else 3
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, size=(size[1], size[0], channels)) + 40 * c
            if mode == "gray-as-rgb":
                pixels = np.repeat(pixels[..., :1], 3, axis=2)
            image = Image.fromarray(pixels.astype(np.uint8).squeeze(), "L" if channels == 1 else "RGB")
            image.save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def gray_folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("gray28"), size=(28, 28), mode="L")


def profile_of(**changes) -> DataProfile:
    base = dict(num_images=2500, num_classes=6, min_per_class=300, median_per_class=400.0, median_width=400,
                median_height=300, grayscale_share=0.0, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                sampled=300, in_memory=False)
    return DataProfile(**{**base, **changes})


def test_small_grayscale_images_get_the_small_cnn_at_their_size_and_statistics(gray_folder):
    data = load_image_folder(gray_folder)
    profile = inspect_data(data)
    assert (profile.median_width, profile.median_height, profile.channels) == (28, 28, 1)
    pixels = np.stack([np.asarray(Image.open(p), dtype=np.float64) / 255 for p in data.paths])
    assert profile.mean[0] == pytest.approx(pixels.mean(), abs=1e-3)
    assert profile.std[0] == pytest.approx(pixels.std(), abs=1e-3)
    recipe = choose_recipe(profile, 15.0)
    spec = recipe.config.preprocess
    assert recipe.config.model.backbone == "smallcnn"
    assert (spec.image_size, spec.channels, spec.mean, spec.std) == (28, 1, profile.mean, profile.std)
    assert spec.flip_tta and recipe.config.budget_minutes == 15.0
    assert any("smallcnn" in reason for reason in recipe.reasons)
    # bf16 where the hardware has it (training the small CNN is ~1.4x faster here), else fp32
    assert recipe.config.precision == ("bf16" if native_bf16() else "fp32")
    assert any(reason.startswith(("bfloat16", "fp32")) for reason in recipe.reasons)


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(False, False, False), (True, False, True),
                                                        (False, True, True)])
def test_bf16_counts_as_native_only_with_bf16_instructions(monkeypatch, avx512_bf16, amx, expected):
    # oneDNN reports bf16 support on any AVX-512 CPU (it emulates it); only AVX512-BF16 or AMX make it pay
    import torch

    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert native_bf16("cpu") is expected


def test_fashion_mnist_gets_the_small_cnn_from_the_data_alone(fmnist_small):
    recipe = choose_recipe(inspect_data(fmnist_small), 15.0)
    assert recipe.config.model.backbone == "smallcnn" and recipe.config.preprocess.image_size == 28
    assert recipe.config.preprocess.mean[0] == pytest.approx(0.286, abs=0.02)


def test_rgb_photos_get_the_pretrained_backbone_with_imagenet_normalisation(tmp_path):
    data = load_image_folder(write_folder(tmp_path / "rgb", size=(300, 300), mode="RGB", per_class=4))
    profile = inspect_data(data)
    assert (profile.median_width, profile.channels, profile.grayscale_share) == (300, 3, 0.0)
    recipe = choose_recipe(profile, 15.0, images_per_second=11.0, cpu_count=2)
    config = recipe.config
    assert config.model.backbone == "efficientnet_lite0" and config.model.pretrained
    assert config.preprocess.channels == 3 and config.precision == "fp32"  # bf16 gains nothing on it
    assert (config.preprocess.mean, config.preprocess.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert 128 <= config.preprocess.image_size <= 224 and not config.preprocess.flip_tta


def test_grey_photos_stored_as_rgb_count_as_grayscale_but_are_not_small(tmp_path):
    data = load_image_folder(write_folder(tmp_path / "grey", size=(300, 200), mode="gray-as-rgb", per_class=3))
    profile = inspect_data(data)
    assert profile.grayscale_share == 1.0 and profile.channels == 1
    assert choose_recipe(profile, 15.0, images_per_second=11.0).config.model.backbone == "efficientnet_lite0"


def test_small_colour_images_are_not_small_grayscale():
    profile = profile_of(median_width=32, median_height=32)
    assert choose_recipe(profile, 15.0, images_per_second=11.0).config.model.backbone == "efficientnet_lite0"


def slow_cpu(factor: float = 1.0) -> MachineSpeed:
    """A CPU's speeds at 224 px, ``factor`` times those of a 2-core CPU with AVX-512."""
    return MachineSpeed(70.0 * factor, {-1: 20.0 * factor, 12: 45.0 * factor, 9: 60.0 * factor, 6: 100.0 * factor},
                        measured=True)


def test_on_a_cpu_the_depth_comes_first_then_the_input_size():
    profile = profile_of()
    configs = [choose_recipe(profile, minutes, speed=slow_cpu()).config for minutes in (2, 15, 120)]
    sizes = [c.preprocess.image_size for c in configs]
    assert sizes == sorted(sizes) and sizes[0] == 128 and sizes[-1] == 224
    assert configs[-1].model.trainable_blocks == -1  # a long budget fine-tunes every block
    for config in configs:
        assert config.model.pretrained and config.model.trainable_blocks in TRAINABLE_CHOICES
        assert config.cache_views == 1  # the plain view, for the head fit and validation
    # a slower CPU gets a smaller input or fewer blocks, never more

    def rank(config):  # larger is more work: the input size, then the depth
        return config.preprocess.image_size, -TRAINABLE_CHOICES.index(config.model.trainable_blocks)

    slow = choose_recipe(profile, 15, speed=slow_cpu(0.3)).config
    fast = choose_recipe(profile, 15, speed=slow_cpu()).config
    assert rank(slow) < rank(fast)
    reason = next(r for r in choose_recipe(profile, 15, speed=slow_cpu()).reasons if r.startswith("input"))
    assert "measured" in reason and f"{MIN_PARTIAL_EPOCHS} epochs" in reason


def test_on_a_gpu_the_whole_backbone_trains_at_a_size_the_budget_allows():
    profile = profile_of()
    sizes = [choose_recipe(profile, minutes, "cuda", images_per_second=11.0).config.preprocess.image_size
             for minutes in (2, 15, 120)]
    assert sizes == sorted(sizes) and sizes[0] == 128 and sizes[-1] == 224
    fast = choose_recipe(profile, 15.0, "cuda", images_per_second=400.0).config
    assert fast.preprocess.image_size == 224 and fast.batch_size > 32 and fast.model.trainable_blocks == -1
    # never far above the images' own size
    assert choose_recipe(profile_of(median_width=150, median_height=150), 120, "cuda",
                         images_per_second=400.0).config.preprocess.image_size == 160


def test_the_machine_speed_is_measured_on_the_backbone():
    speed = measure_machine_speed(image_size=32, batch_size=2, steps=1)
    assert speed.measured and speed.forward > 0
    assert set(speed.stage_train) == set(TRAINABLE_CHOICES) and min(speed.stage_train.values()) > 0


def test_digits_turn_flips_off_by_themselves():
    """Drawn digits: the recipe measures that a mirrored digit is not its own class, and turns off both flip
    augmentation and flip test-time augmentation; garments keep them."""
    recipe = recipe_for(draw_digits(40), 15.0)
    assert recipe.config.model.backbone == "smallcnn"
    assert not recipe.config.augment_flip and not recipe.config.preprocess.flip_tta
    assert any(r.startswith("horizontal flips off") for r in recipe.reasons)


def test_garments_keep_flips(fmnist_small):
    recipe = recipe_for(fmnist_small, 15.0)
    assert recipe.config.augment_flip and recipe.config.preprocess.flip_tta
    assert any(r.startswith("horizontal flips on") for r in recipe.reasons)


@pytest.mark.parametrize("images, classes, smallest_class, expected_val", [
    (60000, 10, 6000, 2000), (2500, 6, 300, 500), (30, 6, 3, 0), (18, 3, 6, 0), (1000, 100, 10, 200)])
def test_the_validation_split_is_large_enough_to_be_stable(images, classes, smallest_class, expected_val):
    profile = profile_of(num_images=images, num_classes=classes, min_per_class=smallest_class)
    config = choose_recipe(profile, 15.0, images_per_second=11.0).config
    assert round(config.val_fraction * images) == expected_val
    assert config.patience == (3 if expected_val >= 500 else 0)


def test_the_small_cnn_narrows_where_the_budget_holds_few_of_its_epochs():
    """Fashion-MNIST-like data: at 800 images/s a 15-minute budget holds 12 epochs of the full width, a 1.5-minute
    one barely 1, so the short budget (or a 10x slower CPU) gets the narrow CNN."""
    profile = profile_of(num_images=60000, num_classes=10, min_per_class=6000, median_per_class=6000.0,
                         median_width=28, median_height=28, grayscale_share=1.0, channels=1, mean=(0.29,),
                         std=(0.35,), in_memory=True)
    wide = SMALL_CNN_WIDTHS[0]
    assert choose_recipe(profile, 15.0, small_cnn_speed=800.0).config.model.width == wide
    assert choose_recipe(profile, 1.5, small_cnn_speed=800.0).config.model.width == SMALL_CNN_WIDTHS[-1]
    assert choose_recipe(profile, 15.0, small_cnn_speed=80.0).config.model.width == SMALL_CNN_WIDTHS[-1]
    assert choose_recipe(profile, 1.5).config.model.width == wide  # unmeasured: the full width
    assert any(f"width {SMALL_CNN_WIDTHS[-1]}" in r for r in choose_recipe(profile, 1.5, small_cnn_speed=800.0).reasons)
    assert measure_small_cnn_speed(28, batch_size=8, steps=1) > 0


def test_the_speed_is_measured_on_the_backbone():
    assert measure_images_per_second("cpu", image_size=32, batch_size=2, steps=1) > 0


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="budget_minutes"):
        choose_recipe(profile_of(), -1.0)
    with pytest.raises(ValueError, match="device"):
        choose_recipe(profile_of(), 5.0, "tpu")


def test_train_with_only_data_prints_the_recipe_and_saves_it_in_the_checkpoint(gray_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(gray_folder), "--out", str(out), "--epochs", "1", "--workers", "0",
                 "--threads", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    recipe_line = next(line for line in printed.splitlines() if line.startswith("recipe: "))
    shown = json.loads(recipe_line[len("recipe: "):])
    assert (shown["backbone"], shown["image_size"], shown["channels"], shown["source"]) == ("smallcnn", 28, 1, "data")
    assert "  - set by a flag: epochs 1 (the recipe chose 30)" in printed.splitlines()
    checkpoint = load_checkpoint(out / "model.pt")
    saved = checkpoint.extra["recipe"]
    assert saved["source"] == "data" and saved["profile"]["channels"] == 1 and saved["reasons"]
    assert checkpoint.config.preprocess.mean == tuple(shown["mean"])
    assert checkpoint.config.budget_minutes == 15.0 and "budget" in checkpoint.extra
