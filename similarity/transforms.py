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


def _to_mode(spec: PreprocessSpec):
    mode = "L" if spec.channels == 1 else "RGB"

    def convert(image: Image.Image) -> Image.Image:
        return image if image.mode == mode else image.convert(mode)

    return convert


def _to_normalised_tensor(spec: PreprocessSpec) -> list:
    return [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)]


def eval_transform(spec: PreprocessSpec) -> v2.Compose:
    """PIL image -> (channels, image_size, image_size) float32 tensor."""
    return v2.Compose([
        v2.Lambda(_to_mode(spec)),
        v2.Resize(spec.resize_to, antialias=True),
        v2.CenterCrop(spec.image_size),
        *_to_normalised_tensor(spec),
    ])


def train_transform(spec: PreprocessSpec, augment: bool = True) -> v2.Compose:
    """Random resized crop, horizontal flip and (for colour) jitter; eval transform if not ``augment``."""
    if not augment:
        return eval_transform(spec)
    colour = [v2.ColorJitter(0.3, 0.3, 0.3, 0.02)] if spec.channels == 3 else []
    return v2.Compose([
        v2.Lambda(_to_mode(spec)),
        v2.RandomResizedCrop(spec.image_size, scale=(0.5, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        *colour,
        *_to_normalised_tensor(spec),
    ])


def pixels_to_tensor(pixels: np.ndarray | torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 (N, H, W) grayscale -> normalised (N, 1, H, W) float32, identical to ``eval_transform``
    on the same images when H == W == image_size."""
    x = torch.as_tensor(np.array(pixels, copy=True)) if isinstance(pixels, np.ndarray) and not pixels.flags.writeable \
        else torch.as_tensor(pixels)
    if x.ndim != 3 or spec.channels != 1 or x.shape[1:] != (spec.image_size, spec.image_size):
        raise ValueError(f"in-memory fast path needs (N, {spec.image_size}, {spec.image_size}) grayscale")
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
