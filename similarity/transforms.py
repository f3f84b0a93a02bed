"""Image -> tensor transforms built from a :class:`PreprocessSpec`.

``eval_transform`` is the only definition of inference preprocessing; the index builder, the API and
the reports all embed through it. ``train_transform`` adds augmentation for photos, and
:class:`BatchAugment` does the same for small in-memory grayscale batches without leaving torch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from similarity.config import PreprocessSpec


class ConvertMode:
    """PIL image -> the same image in the mode for ``channels`` ("L" for 1, "RGB" for 3).

    A class rather than a closure, like every step here: DataLoader workers started with ``spawn`` (macOS,
    Windows, Python 3.14's default) receive the transform pickled, and a local function cannot be pickled.
    """

    def __init__(self, channels: int) -> None:
        self.mode = "L" if channels == 1 else "RGB"

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


def _to_normalised_tensor(spec: PreprocessSpec) -> list:
    return [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)]


def eval_transform(spec: PreprocessSpec) -> v2.Compose:
    """PIL image -> (channels, image_size, image_size) float32 tensor."""
    return v2.Compose([
        ConvertMode(spec.channels),
        ResizeCenterCrop(spec.resize_to, spec.image_size),
        *_to_normalised_tensor(spec),
    ])


class ResizeCenterCrop:
    """``v2.Resize(resize_to)`` (shorter side, bilinear, antialiased) then ``v2.CenterCrop(crop)`` on a PIL
    image, without building a huge intermediate image for extreme aspect ratios.

    The plain two steps resize a 1 x 10000 image to 256 x 2,560,000 pixels (2 GB in RGB, seconds of CPU)
    only to keep 224 x 224 of them. When the resized image would exceed ``max_resized_pixels``, only the
    centre window of the long side is resampled (``Image.resize(box=...)``: the same filter on the same source
    pixels; Pillow holds the box in float32, so pixels may differ from the plain path by one grey level); the
    short side goes through the usual crop or padding. Below the limit, which covers aspect ratios up to 128:1
    at ``resize_to=256`` (10,700:1 at 28), the plain two steps run unchanged, bit for bit, so existing
    checkpoints embed identically.

    Why not cap the long side (``Resize(max_size=...)``) or refuse such images instead: either would change
    what the documented transform (:class:`~similarity.config.PreprocessSpec`) does, and a strip is still a
    valid image to embed.
    """

    def __init__(self, resize_to: int, crop: int, max_resized_pixels: int = 2**23) -> None:
        self.resize_to, self.crop, self.max_resized_pixels = resize_to, crop, max_resized_pixels

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_long = int(self.resize_to * long / short)  # as torchvision computes it
        if new_long * self.resize_to <= self.max_resized_pixels or new_long <= self.crop:
            resized = v2.functional.resize(image, [self.resize_to], antialias=True)
            return v2.functional.center_crop(resized, [self.crop])
        # the crop's window along the long side, in resized and then in source coordinates
        start = int(round((new_long - self.crop) / 2.0))
        scale = long / new_long
        window = (start * scale, (start + self.crop) * scale)
        if width >= height:
            size, box = (self.crop, self.resize_to), (window[0], 0.0, window[1], float(height))
        else:
            size, box = (self.resize_to, self.crop), (0.0, window[0], float(width), window[1])
        resized = image.resize(size, Image.Resampling.BILINEAR, box=box)
        return v2.functional.center_crop(resized, [self.crop])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(resize_to={self.resize_to}, crop={self.crop})"


def train_transform(spec: PreprocessSpec, augment: bool = True, strength: float = 1.0,
                    flip: bool = True) -> v2.Compose:
    """Random resized crop, horizontal flip (unless not ``flip``) and (for colour) jitter; eval transform if
    not ``augment``.

    ``strength`` scales the crop (the smallest kept area is ``1 - 0.5 * strength``, at least 8%) and the
    colour jitter (``0.3 * strength``); 1.0 is the default recipe, 0 leaves only the flips (as
    :meth:`BatchAugment.with_strength` does).
    """
    if not augment:
        return eval_transform(spec)
    flips = [v2.RandomHorizontalFlip()] if flip else []
    if strength <= 0:
        return v2.Compose([ConvertMode(spec.channels), ResizeCenterCrop(spec.resize_to, spec.image_size),
                           *flips, *_to_normalised_tensor(spec)])
    jitter = 0.3 * strength
    colour = [v2.ColorJitter(jitter, jitter, jitter, min(0.5, 0.02 * strength))] if spec.channels == 3 else []
    return v2.Compose([
        ConvertMode(spec.channels),
        v2.RandomResizedCrop(spec.image_size, scale=(max(0.08, 1.0 - 0.5 * strength), 1.0), antialias=True),
        *flips,
        *colour,
        *_to_normalised_tensor(spec),
    ])


def pixels_to_tensor(pixels: np.ndarray | torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 (N, H, W) grayscale -> normalised (N, 1, H, W) float32, identical to ``eval_transform``
    on the same images when H == W == image_size."""
    x = torch.as_tensor(np.array(pixels, copy=True)) if isinstance(pixels, np.ndarray) and not pixels.flags.writeable \
        else torch.as_tensor(pixels)
    if x.ndim != 3 or spec.channels != 1 or x.shape[1:] != (spec.image_size, spec.image_size):
        raise ValueError(f"in-memory fast path needs (N, {spec.image_size}, {spec.image_size}) grayscale, "
                         f"got {tuple(x.shape)} for {spec.channels} channel(s)")
    if x.dtype != torch.uint8:  # to_dtype(scale=True) would scale any other dtype by its own range
        raise ValueError(f"in-memory fast path needs uint8 pixels, got {x.dtype}")
    # the same torchvision ops as eval_transform, so both paths agree to the bit
    x = v2.functional.to_dtype(x.unsqueeze(1), torch.float32, scale=True)
    return v2.functional.normalize(x, list(spec.mean), list(spec.std))


def supports_fast_path(pixels: np.ndarray | None, spec: PreprocessSpec) -> bool:
    return (pixels is not None and pixels.ndim == 3 and spec.channels == 1
            and pixels.shape[1] == pixels.shape[2] == spec.image_size and spec.resize_to == spec.image_size)


class BatchAugment:
    """Per-sample random shift (pad + crop), horizontal flip and random erasing on a (B, C, H, W)
    batch, all vectorised. Random numbers come from ``generator``, so runs are reproducible."""

    def __init__(self, pad: int = 2, flip: bool = True, erase_p: float = 0.5,
                 erase_area: tuple[float, float] = (0.02, 0.2), generator: torch.Generator | None = None):
        self.pad, self.flip, self.erase_p, self.erase_area = pad, flip, erase_p, erase_area
        self.generator = generator

    @classmethod
    def with_strength(cls, strength: float, generator: torch.Generator | None = None,
                      flip: bool = True) -> BatchAugment:
        """The default augmentation scaled by ``strength`` (1.0: shift 2 px, erase half the images up to 20%
        of their area; 0: flips only), with or without horizontal flips."""
        return cls(pad=round(2 * strength), flip=flip, erase_p=min(1.0, 0.5 * strength),
                   erase_area=(0.02, max(0.02, min(0.5, 0.2 * strength))), generator=generator)

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.pad:
            padded = F.pad(x, (self.pad,) * 4)
            oy = (self._rand(b) * (2 * self.pad + 1)).long()
            ox = (self._rand(b) * (2 * self.pad + 1)).long()
            rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
            x = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
        if self.flip:
            flip = self._rand(b) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if self.erase_p > 0:
            area = (self.erase_area[0] + self._rand(b) * (self.erase_area[1] - self.erase_area[0])) * h * w
            aspect = torch.exp((self._rand(b) - 0.5) * 2 * np.log(3.0))
            eh = (area * aspect).sqrt().clamp(1, h).long()
            ew = (area / aspect).sqrt().clamp(1, w).long()
            y0 = (self._rand(b) * (h - eh + 1).float()).long()
            x0 = (self._rand(b) * (w - ew + 1).float()).long()
            ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
            box = ((ys >= y0[:, None, None]) & (ys < (y0 + eh)[:, None, None])
                   & (xs >= x0[:, None, None]) & (xs < (x0 + ew)[:, None, None]))
            box &= (self._rand(b) < self.erase_p)[:, None, None]
            x = x.masked_fill(box[:, None], 0.0)
        return x.contiguous()
