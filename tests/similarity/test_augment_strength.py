"""One augmentation-strength knob scales both augmentation paths; 1.0 is the default, 0 leaves only flips."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from similarity.config import PreprocessSpec
from similarity.transforms import BatchAugment, train_transform

RGB_SPEC = PreprocessSpec(image_size=32, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _steps(transform: v2.Compose, kind: type) -> list:
    return [t for t in transform.transforms if isinstance(t, kind)]


def test_strength_one_is_the_default_batch_augmentation():
    default, scaled = BatchAugment(), BatchAugment.with_strength(1.0)
    assert (scaled.pad, scaled.flip, scaled.erase_p, scaled.erase_area) == (
        default.pad, default.flip, default.erase_p, default.erase_area)
    none = BatchAugment.with_strength(0.0)
    assert (none.pad, none.erase_p, none.flip) == (0, 0.0, True)
    x = torch.rand(6, 1, 28, 28)
    flipped = none(x)
    assert all(torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2)) for i in range(6))


def test_strength_scales_crop_and_colour_of_the_file_path():
    (crop,) = _steps(train_transform(RGB_SPEC), v2.RandomResizedCrop)
    assert crop.scale == (0.5, 1.0)
    (strong_crop,) = _steps(train_transform(RGB_SPEC, strength=1.5), v2.RandomResizedCrop)
    (strong_colour,) = _steps(train_transform(RGB_SPEC, strength=1.5), v2.ColorJitter)
    assert strong_crop.scale == (0.25, 1.0) and strong_colour.brightness == (1 - 0.45, 1 + 0.45)
    flips_only = train_transform(RGB_SPEC, strength=0.0)
    assert not _steps(flips_only, v2.RandomResizedCrop) and not _steps(flips_only, v2.ColorJitter)
    assert _steps(flips_only, v2.RandomHorizontalFlip)
