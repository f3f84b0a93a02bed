"""Digits drawn with Pillow's fonts: a real digit set, made offline and seeded, where a mirror image is another
class (tests of the flip check and of the recipe that uses it)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from similarity.data import LabelledImages

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")


def _fonts(size: int) -> list[ImageFont.FreeTypeFont | ImageFont.ImageFont]:
    files = sorted(FONT_DIR.glob("DejaVuSans*.ttf")) if FONT_DIR.is_dir() else []
    return [ImageFont.truetype(str(f), size) for f in files] or [ImageFont.load_default(size=size)]


def draw_digits(per_class: int = 60, *, seed: int = 0) -> LabelledImages:
    """Digits 0-9 drawn as 28x28 grayscale (white on black) at random sizes, positions, small rotations and
    stroke widths, with noise: in-memory uint8 (10 * per_class, 28, 28)."""
    rng = np.random.default_rng(seed)
    fonts = {size: _fonts(size) for size in range(30, 47, 4)}
    images, labels = [], []
    for digit in range(10):
        for _ in range(per_class):
            size = int(rng.choice(list(fonts)))
            font = fonts[size][rng.integers(len(fonts[size]))]
            canvas = Image.new("L", (56, 56), 0)
            x, y = 28 + rng.integers(-5, 6), 28 + rng.integers(-5, 6)
            ImageDraw.Draw(canvas).text((x, y), str(digit), fill=255, font=font, anchor="mm",
                                        stroke_width=int(rng.integers(0, 3)), stroke_fill=255)
            canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
            pixels = np.asarray(canvas.resize((28, 28), Image.Resampling.LANCZOS), dtype=np.float32)
            pixels += rng.normal(0, 20, pixels.shape)
            images.append(np.clip(pixels, 0, 255).astype(np.uint8))
            labels.append(digit)
    return LabelledImages(labels=np.array(labels), class_names=[str(d) for d in range(10)],
                          ids=[f"drawn/{i:04d}" for i in range(len(labels))], pixels=np.stack(images),
                          source="drawn-digits")


def photo_digits(per_class: int = 60, *, seed: int = 0) -> LabelledImages:
    """Digits 0-9 as 32x32 colour crops in the style of house-number photos (SVHN): a random background
    colour with a lighting gradient, a contrasting digit colour (light on dark or dark on light), random
    font, size, position, slant and rotation, often part of a neighbouring digit at the left or right edge,
    then blur, noise and sometimes JPEG compression. In-memory uint8 (10 * per_class, 32, 32, 3)."""
    rng = np.random.default_rng(seed)
    canvas_side = 64  # drawn at twice the size, then scaled down, as a camera would
    fonts = {size: _fonts(size) for size in range(34, 51, 4)}
    yy, xx = np.mgrid[0:canvas_side, 0:canvas_side] / (canvas_side - 1) - 0.5
    images, labels = [], []
    for digit in range(10):
        for _ in range(per_class):
            size = int(rng.choice(list(fonts)))
            font = fonts[size][rng.integers(len(fonts[size]))]
            mask = Image.new("L", (canvas_side, canvas_side), 0)
            draw = ImageDraw.Draw(mask)
            centre = (canvas_side // 2 + int(rng.integers(-4, 5)), canvas_side // 2 + int(rng.integers(-4, 5)))
            draw.text(centre, str(digit), fill=255, font=font, anchor="mm",
                      stroke_width=int(rng.integers(0, 3)), stroke_fill=255)
            if rng.random() < 0.6:  # the next or previous digit of the house number, cut by the crop
                side = 1 if rng.random() < 0.5 else -1
                neighbour = (centre[0] + side * int(rng.integers(30, 38)), centre[1] + int(rng.integers(-3, 4)))
                draw.text(neighbour, str(int(rng.integers(10))), fill=255, font=font, anchor="mm")
            slant = float(rng.uniform(-0.15, 0.15))
            mask = mask.transform(mask.size, Image.Transform.AFFINE,
                                  (1, slant, -slant * canvas_side / 2, 0, 1, 0),
                                  resample=Image.Resampling.BILINEAR)
            mask = mask.rotate(float(rng.uniform(-10, 10)), resample=Image.Resampling.BILINEAR)
            alpha = np.asarray(mask, dtype=np.float32)[:, :, None] / 255

            background, foreground = _contrasting_colours(rng)
            angle = rng.uniform(0, 2 * np.pi)
            lighting = 1 + rng.uniform(0.1, 0.6) * (np.cos(angle) * xx + np.sin(angle) * yy)  # light from a side
            image = (background * (1 - alpha) + foreground * alpha) * lighting[:, :, None]
            picture = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="RGB")
            picture = picture.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.8))))
            picture = picture.resize((32, 32), Image.Resampling.BILINEAR)
            pixels = np.asarray(picture, dtype=np.float32) + rng.normal(0, rng.uniform(2, 10), (32, 32, 3))
            picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
            if rng.random() < 0.5:
                buffer = io.BytesIO()
                picture.save(buffer, format="JPEG", quality=int(rng.integers(30, 80)))
                picture = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
            images.append(np.asarray(picture, dtype=np.uint8))
            labels.append(digit)
    return LabelledImages(labels=np.array(labels), class_names=[str(d) for d in range(10)],
                          ids=[f"photo/{i:04d}" for i in range(len(labels))], pixels=np.stack(images),
                          source="photo-digits")


def _contrasting_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background and a digit colour, RGB float (3,), whose luminances differ by at least 70 of 255."""
    weights = np.array([0.299, 0.587, 0.114])
    while True:
        background, foreground = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        if abs((background - foreground) @ weights) >= 70:
            return background, foreground
