"""Edited copies of an image, seeded: what the copy objective trains on and what copy benches test with.

:func:`make_copy` applies the edits a copy of a photo goes through, after SSCD's strong augmentations (Pizzi et
al., 2022): a random crop, a resize, a mirror image, colour and brightness changes, grayscale, blur, an overlay
(text in Pillow's default font, or a filled box standing for a logo) and a JPEG re-encode at a random quality.
Every random choice comes from the ``numpy.random.Generator`` it is given, so a seed fixes the copy exactly.
:func:`two_views` makes the two views of one image that training pulls together; :class:`CopyPairs` serves them
to a DataLoader, seeded by (seed, epoch, index) so that workers and their number change nothing.
"""

from __future__ import annotations

import io
import string

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont
from torch.utils.data import Dataset

from similarity.config import PreprocessSpec
from similarity.data import LabelledImages
from similarity.transforms import eval_transform

MIN_CROP_AREA = 0.1  # the smallest share of the image a crop keeps (at strength 1 or more)
OVERLAY_TEXT = string.ascii_letters + string.digits + " "


def make_copy(image: Image.Image, rng: np.random.Generator, strength: float = 1.0, *,
              flip: bool = True) -> Image.Image:
    """An edited copy of ``image`` (any mode; returned as RGB); ``strength`` in [0, 3] scales how likely and how
    strong each edit is (0: the image unchanged, 1: the training default). ``flip``: mirror images allowed."""
    if not 0.0 <= strength <= 3.0:
        raise ValueError(f"strength must be in [0, 3], got {strength}")
    out = image.convert("RGB")
    if strength == 0:
        return out
    s = min(strength, 1.0)
    if rng.random() < 0.9 * s:
        out = _random_crop(out, rng, max(MIN_CROP_AREA, 1.0 - 0.9 * strength))
    if rng.random() < 0.3 * s:  # a smaller copy (what sharing sites do), not smaller than a third
        factor = rng.uniform(max(1 / 3, 1.0 - 0.6 * strength), 1.0)
        out = out.resize((max(8, round(out.width * factor)), max(8, round(out.height * factor))),
                         Image.Resampling.BILINEAR)
    if flip and rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.8 * s:
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            out = enhance(out).enhance(float(rng.uniform(max(0.1, 1.0 - 0.4 * strength), 1.0 + 0.4 * strength)))
    if rng.random() < 0.2 * s:
        out = out.convert("L").convert("RGB")
    if rng.random() < 0.3 * s:
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.1, 2.0 * strength)) * max(out.size) / 224))
    if rng.random() < 0.3 * s:
        out = overlay(out, rng)
    if rng.random() < 0.5 * s:
        out = _jpeg(out, int(rng.integers(max(10, round(90 - 70 * strength)), 96)))
    return out


def two_views(image: Image.Image, rng: np.random.Generator, spec: PreprocessSpec, strength: float = 1.0, *,
              flip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent copies of ``image`` (:func:`make_copy`), each through the eval transform of ``spec``:
    two (channels, image_size, image_size) float32 tensors, the positive pair of the copy objective."""
    transform = eval_transform(spec)
    return (transform(make_copy(image, rng, strength, flip=flip)),
            transform(make_copy(image, rng, strength, flip=flip)))


class CopyPairs(Dataset):
    """Item ``i``: :func:`two_views` of ``data`` image ``i``, seeded by ``(seed, epoch, i)``; set ``epoch`` before
    each epoch's DataLoader is made (fresh copies every epoch, the same ones for the same seed)."""

    def __init__(self, data: LabelledImages, spec: PreprocessSpec, strength: float, *, flip: bool = True,
                 seed: int = 0) -> None:
        self.data, self.spec, self.strength, self.flip, self.seed = data, spec, strength, flip, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, int(i)))
        return two_views(self.data.load(int(i)), rng, self.spec, self.strength, flip=self.flip)


def collate_pairs(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """B pairs -> (inputs (2B, C, H, W): every first view, then every second view; labels (2B,): the pair
    index, so the two views of an image share a label and every other image of the batch is a negative)."""
    first = torch.stack([a for a, _ in items])
    second = torch.stack([b for _, b in items])
    labels = torch.arange(len(items))
    return torch.cat([first, second]), torch.cat([labels, labels])


def _random_crop(image: Image.Image, rng: np.random.Generator, min_area: float) -> Image.Image:
    """A crop of ``min_area``..1 of the image's area, aspect ratio 3:4..4:3 (log-uniform), anywhere in it."""
    width, height = image.size
    area = rng.uniform(min_area, 1.0) * width * height
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    w = int(np.clip(round(np.sqrt(area * aspect)), 1, width))
    h = int(np.clip(round(np.sqrt(area / aspect)), 1, height))
    x = int(rng.integers(0, width - w + 1))
    y = int(rng.integers(0, height - h + 1))
    return image.crop((x, y, x + w, y + h))


def overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Random text in Pillow's default font, or a filled box or ellipse (a "logo"), in a random colour."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width, height = out.size
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    if rng.random() < 0.5:
        size = max(8, int(rng.uniform(0.08, 0.2) * height))
        text = "".join(rng.choice(list(OVERLAY_TEXT), int(rng.integers(3, 12))))
        font = ImageFont.load_default(size=size)
        draw.text((int(rng.integers(0, max(1, width // 2))), int(rng.integers(0, max(1, height - size)))), text,
                  fill=colour, font=font)
        return out
    w, h = (max(2, int(rng.uniform(0.05, 0.25) * side)) for side in (width, height))
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x, y, x + w, y + h), fill=colour)
    return out


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    """``image`` saved as a JPEG at ``quality`` and decoded again."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


__all__ = ["CopyPairs", "collate_pairs", "make_copy", "overlay", "two_views"]
